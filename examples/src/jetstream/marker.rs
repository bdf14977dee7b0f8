//! Commit markers: the message that closes a unit (a transaction, a snapshot chunk, or a
//! position advance without data) and says where to resume after it.
//!
//! Payload (JSON, on `<prefix>._commit`), a superset of `tail`'s `commit` / `snapshot_done`
//! lines:
//!
//! ```text
//! {"kind":"commit","checkpoint":"postgres:v1:…","commit_time":"…"|null,
//!  "position":"postgres:v1:…","base":"<position id before>","messages":3}
//! {"kind":"snapshot_chunk","position":"snapshot:v1:{…}","base":"…","messages":500}
//! {"kind":"snapshot_done","checkpoint":"…","position":"…","base":"…","messages":0}
//! {"kind":"keepalive","checkpoint":"…","position":"…","base":"…","messages":0}
//! ```
//!
//! `position` is where the publisher resumes after this marker (a checkpoint, or a snapshot
//! resume token while the snapshot runs); `base` is the [`position_id`](super::ids::position_id)
//! of the previous marker's position ([`START`](super::ids::START) for the first), so markers
//! form a chain a consumer can verify; `messages` counts the unit's data messages (rows and
//! truncates; schema messages are not counted).

use powersync_source_core::{Checkpoint, SourceError, StartFrom};
use serde::{Deserialize, Serialize};

/// What a marker closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerKind {
    /// A source transaction.
    Commit,
    /// Snapshot rows up to a resume token (a chunk or a table end).
    SnapshotChunk,
    /// The end of the snapshot; streaming continues from the checkpoint.
    SnapshotDone,
    /// The source position advanced without data.
    Keepalive,
}

/// A commit marker (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// What it closes.
    pub kind: MarkerKind,
    /// The checkpoint (all kinds but `snapshot_chunk`), as in `tail`'s lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// The source's commit time (RFC 3339), for `commit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_time: Option<String>,
    /// Where to resume after this marker: a checkpoint or a snapshot resume token.
    pub position: String,
    /// Position id of the previous marker's position.
    pub base: String,
    /// Data messages of the unit.
    pub messages: u64,
}

impl Marker {
    /// Where a publisher resumes after this marker.
    pub fn start_from(&self) -> Result<StartFrom, SourceError> {
        StartFrom::parse(&self.position)
    }

    /// The checkpoint to acknowledge to the source once the marker is stored, if any.
    pub fn ack_checkpoint(&self) -> Option<Checkpoint> {
        match self.kind {
            MarkerKind::SnapshotChunk => None,
            _ => Checkpoint::parse(&self.position).ok(),
        }
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a payload.
    pub fn parse(payload: &[u8]) -> Result<Marker, String> {
        serde_json::from_slice(payload).map_err(|e| format!("not a commit marker: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_shape() {
        let m = Marker {
            kind: MarkerKind::Commit,
            checkpoint: Some("postgres:v1:00000000/0000002A".into()),
            commit_time: None,
            position: "postgres:v1:00000000/0000002A".into(),
            base: "start".into(),
            messages: 2,
        };
        let json = String::from_utf8(m.to_json()).unwrap();
        assert!(
            json.starts_with(r#"{"kind":"commit","checkpoint":"postgres:v1:"#),
            "{json}"
        );
        assert_eq!(Marker::parse(json.as_bytes()).unwrap(), m);
        assert!(matches!(m.start_from().unwrap(), StartFrom::Checkpoint(_)));
        assert!(m.ack_checkpoint().is_some());
        assert!(Marker::parse(b"{}").is_err());
        assert!(Marker::parse(b"\xff").is_err());
    }
}
