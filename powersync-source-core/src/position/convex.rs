use std::fmt::Write;
use std::sync::Arc;

use super::{parse_dec_fixed, Position};
use crate::checkpoint::Checkpoint;
use crate::error::SourceError;

/// The longest Data Sync token a checkpoint may carry. Convex's cursors are a few hundred
/// bytes; the bound keeps a corrupt or hostile checkpoint from being taken as a position.
const MAX_TOKEN_LEN: usize = 8192;

/// A Convex position, in one of two forms.
///
/// - **Streaming export** (`convex:v1:<ts>`): a `document_deltas` cursor, nanoseconds,
///   non-negative `i64`, as 19 zero-padded decimal digits.
/// - **Data Sync** (`convex:v2:<ts>:<token>`): the opaque cursor of `POST /api/v1/data/sync`
///   (`token`), preceded by the commit timestamp the position stands at (`ts`, 19 digits),
///   so that checkpoints of one stream still order as strings the way the stream produced
///   them: `ts` never decreases along a stream, and the token, which Convex encrypts and
///   which carries no order, only breaks ties. The token is printable ASCII without spaces,
///   at most 8192 bytes.
///
/// Within one form, string order equals [`Ord`] (timestamp, then token). Across forms it does
/// not (every `v1` checkpoint sorts before every `v2` one as a string, while [`Ord`] compares
/// timestamps first); like checkpoints of different sources, checkpoints of different
/// versions are not meant to be compared. Both forms parse strictly; `v1` checkpoints written
/// by earlier builds keep parsing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConvexCursor {
    ts: i64,
    token: Option<Arc<str>>,
}

fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_TOKEN_LEN && token.bytes().all(|b| b.is_ascii_graphic())
}

impl ConvexCursor {
    /// A streaming export cursor; `None` for negative values, which Convex never issues.
    pub fn new(nanos: i64) -> Option<Self> {
        (nanos >= 0).then_some(ConvexCursor {
            ts: nanos,
            token: None,
        })
    }

    /// A Data Sync position: the opaque `token` to resume from, standing at commit timestamp
    /// `ts`. `None` for a negative `ts` or a token that is empty, longer than 8192 bytes, or
    /// holds anything but printable ASCII.
    pub fn data_sync(ts: i64, token: &str) -> Option<Self> {
        (ts >= 0 && valid_token(token)).then(|| ConvexCursor {
            ts,
            token: Some(token.into()),
        })
    }

    /// The timestamp: the `document_deltas` cursor, or the commit timestamp a Data Sync
    /// position stands at.
    pub fn get(&self) -> i64 {
        self.ts
    }

    /// The Data Sync token; `None` for a streaming export cursor.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn decode_v1(body: &str) -> Result<Self, String> {
        let v = parse_dec_fixed(body, 19, "Convex cursor")?;
        i64::try_from(v)
            .map(|ts| ConvexCursor { ts, token: None })
            .map_err(|_| format!("Convex cursor {v} exceeds i64"))
    }

    fn decode_v2(body: &str) -> Result<Self, String> {
        let (ts, token) = body.split_once(':').ok_or_else(|| {
            format!("a Convex Data Sync position is `<19 digits>:<token>`, got `{body}`")
        })?;
        let ts = Self::decode_v1(ts)?.ts;
        if !valid_token(token) {
            return Err(format!(
                "the Convex Data Sync token must be 1 to {MAX_TOKEN_LEN} printable ASCII characters"
            ));
        }
        Ok(ConvexCursor {
            ts,
            token: Some(token.into()),
        })
    }
}

impl Position for ConvexCursor {
    const SOURCE: &'static str = "convex";
    /// The newest form; a streaming export cursor is still written as `v1`.
    const VERSION: u32 = 2;

    fn encode_body(&self, out: &mut String) {
        let _ = write!(out, "{:019}", self.ts);
        if let Some(token) = &self.token {
            out.push(':');
            out.push_str(token);
        }
    }

    /// Parses either form by its shape (a `:` only in Data Sync bodies);
    /// [`Position::from_checkpoint`] also holds the shape to the checkpoint's version.
    fn decode_body(body: &str) -> Result<Self, String> {
        if body.contains(':') {
            Self::decode_v2(body)
        } else {
            Self::decode_v1(body)
        }
    }

    fn to_checkpoint(&self) -> Checkpoint {
        let mut body = String::with_capacity(20 + self.token.as_ref().map_or(0, |t| t.len()));
        self.encode_body(&mut body);
        let version = if self.token.is_some() { 2 } else { 1 };
        Checkpoint::from_parts(Self::SOURCE, version, &body)
    }

    fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self, SourceError> {
        if checkpoint.source() != Self::SOURCE {
            return Err(SourceError::config(format!(
                "checkpoint `{checkpoint}` belongs to a {} source, not {}",
                checkpoint.source(),
                Self::SOURCE
            )));
        }
        let decoded = match checkpoint.version() {
            1 => Self::decode_v1(checkpoint.body()),
            2 => Self::decode_v2(checkpoint.body()),
            v => Err(format!("unknown Convex checkpoint version v{v}")),
        };
        decoded.map_err(|why| {
            SourceError::config(format!("checkpoint `{checkpoint}` is corrupt: {why}"))
        })
    }
}
