//! `Checkpoint`: the string form of a position that hosts store and hand back.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::backfill::BackfillState;
use crate::error::SourceError;

/// Between a position and the backfill cursor a checkpoint carries; no position body holds it.
const BACKFILL_SEPARATOR: &str = "|backfill=";

/// A resumable position as a versioned, self-describing string:
/// `<source>:v<version>:<body>`, e.g. `postgres:v1:00000000/016B3748`.
///
/// Within one source and version, two checkpoints compare as strings exactly as their positions
/// compare (every body is fixed-width and zero-padded), so a host that stores checkpoints in a
/// database column gets the right order for free. Comparing checkpoints of different sources
/// is meaningless.
///
/// A checkpoint is emitted only at a transaction boundary (a commit or a keepalive between
/// transactions). Starting from one yields every change after it exactly once.
///
/// While a backfill runs (see [`crate::backfill`]), the checkpoint also carries its cursor
/// after the position: `<source>:v<version>:<body>|backfill=<json>`. The position part still
/// orders as above ([`Checkpoint::position_part`]); starting from such a checkpoint resumes the
/// stream at the position and the backfill after its last emitted chunk.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checkpoint(Arc<str>);

/// Source tags and the checkpoint versions this build understands.
const KNOWN: &[(&str, u32)] = &[
    ("postgres", 1),
    ("mysql", 1),
    ("mongodb", 1),
    ("mssql", 1),
    ("convex", 2),
];

impl Checkpoint {
    /// Builds a checkpoint from its parts; `source` must be one of the known tags.
    pub(crate) fn from_parts(source: &str, version: u32, body: &str) -> Checkpoint {
        Checkpoint(format!("{source}:v{version}:{body}").into())
    }

    /// Parses a stored checkpoint, checking its source tag and version (not its body: the
    /// connector's position type checks that with [`crate::Position::from_checkpoint`]).
    pub fn parse(s: &str) -> Result<Checkpoint, SourceError> {
        let s = s.trim();
        let shown = shorten(s);
        let mut parts = s.splitn(3, ':');
        let (Some(source), Some(version), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SourceError::config(format!(
                "`{shown}` is not a checkpoint: expected `<source>:v<version>:<position>`, e.g. `postgres:v1:00000000/016B3748`"
            )));
        };
        let version: u32 = version
            .strip_prefix('v')
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                SourceError::config(format!("checkpoint `{shown}` has no valid version (`v1`)"))
            })?;
        match KNOWN.iter().find(|(tag, _)| *tag == source) {
            None => Err(SourceError::config(format!(
                "checkpoint `{shown}` names unknown source `{source}`; known sources: postgres, mysql, mongodb, mssql, convex"
            ))),
            Some((_, max)) if version == 0 || version > *max => Err(SourceError::config(format!(
                "checkpoint `{shown}` has version v{version}, this build reads {source} checkpoints up to v{max}; upgrade powersync-source"
            ))),
            Some(_) if body.is_empty() || body.starts_with(BACKFILL_SEPARATOR) => {
                Err(SourceError::config(format!("checkpoint `{shown}` has an empty position")))
            }
            Some(_) => {
                let checkpoint = Checkpoint(s.into());
                checkpoint.backfill()?;
                Ok(checkpoint)
            }
        }
    }

    /// The source tag (`postgres`, `mysql`, `mongodb`, `mssql`, `convex`).
    pub fn source(&self) -> &str {
        self.0.split(':').next().unwrap_or_default()
    }

    /// The encoding version.
    pub fn version(&self) -> u32 {
        self.0
            .split(':')
            .nth(1)
            .and_then(|v| v.strip_prefix('v'))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The position part, after `<source>:v<version>:` (without a backfill cursor).
    pub fn body(&self) -> &str {
        let body = self
            .position_part()
            .splitn(3, ':')
            .nth(2)
            .unwrap_or_default();
        body
    }

    /// `<source>:v<version>:<body>` without the backfill cursor: what orders as the position.
    pub fn position_part(&self) -> &str {
        match self.0.find(BACKFILL_SEPARATOR) {
            Some(at) => &self.0[..at],
            None => &self.0,
        }
    }

    /// The backfill cursor this checkpoint carries (`None` when no backfill was running).
    /// A cursor that does not parse is a [`crate::ErrorKind::Config`] error.
    pub fn backfill(&self) -> Result<Option<BackfillState>, SourceError> {
        match self.0.find(BACKFILL_SEPARATOR) {
            None => Ok(None),
            Some(at) => BackfillState::decode(&self.0[at + BACKFILL_SEPARATOR.len()..])
                .map(Some)
                .map_err(|e| {
                    SourceError::config(format!(
                        "checkpoint `{}` carries a corrupt backfill cursor: {e}",
                        shorten(&self.0)
                    ))
                }),
        }
    }

    /// This checkpoint's position with `state` as its backfill cursor (none when `state` is
    /// empty).
    pub fn with_backfill(&self, state: &BackfillState) -> Checkpoint {
        let position = self.position_part();
        if state.is_empty() {
            if position.len() == self.0.len() {
                return self.clone();
            }
            return Checkpoint(position.into());
        }
        Checkpoint(format!("{position}{BACKFILL_SEPARATOR}{}", state.encode()).into())
    }

    /// The whole string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_string()
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checkpoint({})", self.0)
    }
}

impl FromStr for Checkpoint {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Checkpoint::parse(s)
    }
}

impl Serialize for Checkpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Checkpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Checkpoint::parse(&s).map_err(serde::de::Error::custom)
    }
}
