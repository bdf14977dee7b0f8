//! The state a host stores to resume an interrupted snapshot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::SourceError;

const PREFIX: &str = "snapshot:v1:";

/// Where an interrupted snapshot resumes: the stream position the snapshot is consistent with
/// (streaming replays from there), and per table whether it is done or how far it got.
///
/// Stored as a token string (`snapshot:v1:<json>`) next to, or instead of, a [`Checkpoint`];
/// [`crate::StartFrom::parse`] tells the two apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotResume {
    /// The stream position streaming starts from once the snapshot is complete.
    pub stream_from: Checkpoint,
    /// Per table (`schema.name`): its progress.
    pub tables: BTreeMap<String, TableProgress>,
    /// Connector-specific state (e.g. a pinned Convex snapshot), opaque to hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_state: Option<String>,
}

/// How far the snapshot of one table got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TableProgress {
    /// Every row was emitted.
    Done {
        /// Rows emitted.
        rows: u64,
    },
    /// Rows with a key up to and including `after_key` were emitted (a connector-specific
    /// encoding of the last key, e.g. a JSON array of key values).
    Partial {
        /// Last emitted key.
        after_key: String,
        /// Rows emitted.
        rows: u64,
    },
}

impl SnapshotResume {
    /// The token string to store.
    pub fn to_token(&self) -> String {
        // Serializing plain strings and maps cannot fail.
        format!(
            "{PREFIX}{}",
            serde_json::to_string(self).unwrap_or_default()
        )
    }

    /// Parses a token made by [`SnapshotResume::to_token`].
    pub fn parse_token(s: &str) -> Result<Self, SourceError> {
        let json = s.trim().strip_prefix(PREFIX).ok_or_else(|| {
            SourceError::config("not a snapshot resume token (expected `snapshot:v1:{…}`)")
        })?;
        serde_json::from_str(json)
            .map_err(|e| SourceError::config(format!("snapshot resume token is corrupt: {e}")))
    }

    /// Whether `s` looks like a snapshot token.
    pub fn is_token(s: &str) -> bool {
        s.trim_start().starts_with("snapshot:")
    }
}
