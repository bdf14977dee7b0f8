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
//! form a chain a consumer can verify; `messages` counts the unit's data items (rows and
//! truncates, whether one per message or packed; schema messages are not counted).
//!
//! **Batches.** While a marker waits for its ack, the units completed meanwhile are closed
//! together by the next marker message, a batch of their markers in order (chained as
//! above):
//!
//! ```text
//! {"kind":"batch","markers":[{"kind":"commit",…},{"kind":"commit",…}]}
//! ```
//!
//! A consumer applies each unit of a batch at the batch, in order, as if each marker had its
//! own message. So one marker round trip closes any number of transactions.

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

    /// Parses a payload of a single marker (not a batch, see [`parse_markers`]).
    pub fn parse(payload: &[u8]) -> Result<Marker, String> {
        serde_json::from_slice(payload).map_err(|e| format!("not a commit marker: {e}"))
    }
}

/// First bytes of a batch payload (`kind` is always the first key).
const BATCH_PREFIX: &[u8] = b"{\"kind\":\"batch\"";

#[derive(Serialize, Deserialize)]
struct Batch<M> {
    kind: String,
    markers: Vec<M>,
}

/// The payload closing `markers` (in order; never empty): a single marker's JSON when there
/// is one, else a batch.
pub fn payload(markers: &[&Marker]) -> Vec<u8> {
    match markers {
        [one] => one.to_json(),
        _ => serde_json::to_vec(&Batch {
            kind: "batch".into(),
            markers: markers.to_vec(),
        })
        // Strings and numbers always serialize.
        .unwrap_or_default(),
    }
}

/// Parses a commit-marker message: one marker or a batch, in order (never empty).
pub fn parse_markers(payload: &[u8]) -> Result<Vec<Marker>, String> {
    if !payload.starts_with(BATCH_PREFIX) {
        return Marker::parse(payload).map(|m| vec![m]);
    }
    let batch: Batch<Marker> =
        serde_json::from_slice(payload).map_err(|e| format!("not a marker batch: {e}"))?;
    if batch.markers.is_empty() {
        return Err("an empty marker batch".into());
    }
    Ok(batch.markers)
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
        assert_eq!(parse_markers(&payload(&[&m])).unwrap(), vec![m.clone()]);
    }

    #[test]
    fn batches_keep_their_order() {
        let m = |n: u32, base: &str| Marker {
            kind: MarkerKind::Commit,
            checkpoint: Some(format!("postgres:v1:00000000/{n:08X}")),
            commit_time: None,
            position: format!("postgres:v1:00000000/{n:08X}"),
            base: base.into(),
            messages: 1,
        };
        let a = m(1, "start:0");
        let b = m(2, "postgres:v1:00000000/00000001");
        let json = payload(&[&a, &b]);
        assert!(json.starts_with(br#"{"kind":"batch","markers":[{"kind":"commit""#));
        assert_eq!(parse_markers(&json).unwrap(), vec![a, b]);
        assert!(parse_markers(br#"{"kind":"batch","markers":[]}"#).is_err());
        assert!(parse_markers(br#"{"kind":"batch"}"#).is_err());
    }
}
