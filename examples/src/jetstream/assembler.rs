//! The consumer's side of the contract: collects the messages after the last applied commit
//! marker and, when the next marker arrives, hands over its unit — de-duplicated by message
//! id, stale leftovers dropped, in the order to apply.
//!
//! - Messages whose `Powersync-Base` is not the marker's `base` are leftovers of a publisher
//!   attempt that never reached a marker; they are dropped. (The first units' base is
//!   `start:<nonce>`, unique per attempt: see [`ids::start_base`].)
//! - A message id seen twice in a unit is applied once: JetStream drops such republished
//!   messages inside its duplicate window, this catches those republished after it expired.
//! - Transactions are ordered by `Powersync-Index`, schema messages before the data message
//!   of the same index, ties in stream order. A restarted publisher announces schemas again
//!   (a new connection re-sends them) and its announcement of the schema in force at index
//!   *i* may land after an earlier attempt's messages of higher indexes; sorting puts every
//!   announcement back where that schema was in force, so the table never goes back to an
//!   older shape. Snapshot chunks keep stream order: a re-read chunk holds newer versions of
//!   its rows, which must come last.
//! - The marker's `base` must be the position of the previous marker: a gap means messages
//!   were lost (retention, purge, two publishers on one stream) and is an error.

use std::collections::HashSet;

use super::ids;
use super::marker::{Marker, MarkerKind};

/// A received data or schema message.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Stream sequence.
    pub sequence: u64,
    /// `Nats-Msg-Id`.
    pub id: String,
    /// `Powersync-Base`.
    pub base: String,
    /// `Powersync-Index`.
    pub index: u64,
    /// Whether it is a schema message (sorted before data of the same index).
    pub schema: bool,
    /// The JSON payload.
    pub payload: Vec<u8>,
}

/// A complete unit: its marker and its messages in apply order.
#[derive(Debug)]
pub struct Unit {
    /// The closing marker.
    pub marker: Marker,
    /// Messages to apply, in order.
    pub messages: Vec<Incoming>,
    /// Leftover messages dropped (other bases).
    pub stale: usize,
    /// Repeated messages dropped.
    pub repeated: usize,
}

/// Collects messages between markers.
#[derive(Debug)]
pub struct Assembler {
    expected_base: String,
    pending: Vec<Incoming>,
    seen: HashSet<String>,
    repeated: usize,
}

impl Assembler {
    /// Starts after the marker whose position is `position` ([`ids::START`] for none).
    pub fn new(position: &str) -> Assembler {
        Assembler {
            expected_base: ids::position_id(position),
            pending: Vec::new(),
            seen: HashSet::new(),
            repeated: 0,
        }
    }

    /// Messages waiting for their marker.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds a data or schema message.
    pub fn push(&mut self, msg: Incoming) {
        if !self.seen.insert(msg.id.clone()) {
            self.repeated += 1;
            return;
        }
        self.pending.push(msg);
    }

    /// Closes the unit `marker` ends.
    pub fn close(&mut self, marker: Marker) -> Result<Unit, String> {
        let first = self.expected_base == ids::START && ids::is_start_base(&marker.base);
        if marker.base != self.expected_base && !first {
            return Err(format!(
                "commit marker for {} follows position `{}`, but the last applied position is \
                 `{}`: messages are missing from the stream (removed by its limits or a purge, \
                 or two publishers write to it)",
                marker.position, marker.base, self.expected_base
            ));
        }
        let all = std::mem::take(&mut self.pending);
        let total = all.len();
        let mut messages: Vec<Incoming> =
            all.into_iter().filter(|m| m.base == marker.base).collect();
        let stale = total - messages.len();
        if matches!(marker.kind, MarkerKind::Commit | MarkerKind::Keepalive) {
            messages.sort_by_key(|m| (m.index, !m.schema));
        }
        let data = messages.iter().filter(|m| !m.schema).count() as u64;
        if data < marker.messages {
            return Err(format!(
                "the unit ending at {} has {data} of its {} messages: the stream lost some",
                marker.position, marker.messages
            ));
        }
        self.expected_base = ids::position_id(&marker.position);
        self.seen.clear();
        let repeated = std::mem::take(&mut self.repeated);
        Ok(Unit {
            marker,
            messages,
            stale,
            repeated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, base: &str, index: u64, schema: bool, tag: &str) -> Incoming {
        let id = if schema {
            format!("{base}#{index}s{tag}")
        } else {
            format!("{base}#{index}")
        };
        Incoming {
            sequence: seq,
            id,
            base: base.into(),
            index,
            schema,
            payload: tag.as_bytes().to_vec(),
        }
    }

    fn marker(base: &str, position: &str, messages: u64, kind: MarkerKind) -> Marker {
        Marker {
            kind,
            checkpoint: None,
            commit_time: None,
            position: position.into(),
            base: base.into(),
            messages,
        }
    }

    fn tags(u: &Unit) -> Vec<String> {
        u.messages
            .iter()
            .map(|m| String::from_utf8(m.payload.clone()).unwrap())
            .collect()
    }

    #[test]
    fn a_crashed_attempt_and_its_retry_make_one_transaction() {
        let mut a = Assembler::new("p1");
        // Attempt 1 (schema v1 known already): row 0, new schema v2, row 1; then a crash.
        a.push(msg(1, "p1", 0, false, "r0"));
        a.push(msg(2, "p1", 1, true, "v2"));
        a.push(msg(3, "p1", 1, false, "r1"));
        // Attempt 2 after the duplicate window: everything again, with v1 re-announced.
        a.push(msg(4, "p1", 0, true, "v1"));
        a.push(msg(5, "p1", 0, false, "r0"));
        a.push(msg(6, "p1", 1, true, "v2"));
        a.push(msg(7, "p1", 1, false, "r1"));
        a.push(msg(8, "p1", 2, false, "r2"));
        let u = a.close(marker("p1", "p2", 3, MarkerKind::Commit)).unwrap();
        assert_eq!(tags(&u), vec!["v1", "r0", "v2", "r1", "r2"]);
        assert_eq!(u.repeated, 3);
        // Leftovers of another base are dropped; a gap is an error.
        a.push(msg(9, "zz", 0, false, "x"));
        let u = a
            .close(marker("p2", "p3", 0, MarkerKind::Keepalive))
            .unwrap();
        assert_eq!(u.stale, 1);
        assert!(u.messages.is_empty());
        assert!(a.close(marker("p9", "p10", 0, MarkerKind::Commit)).is_err());
    }

    #[test]
    fn snapshot_chunks_keep_stream_order_and_missing_messages_fail() {
        let mut a = Assembler::new(ids::START);
        // A killed attempt from the beginning, then the attempt that reached a marker.
        let killed = ids::start_base(1);
        let base = ids::start_base(2);
        a.push(msg(1, &killed, 0, false, "gone"));
        let mut first = msg(2, &base, 1, false, "old");
        first.id = format!("{base}#1#aa");
        let mut second = msg(3, &base, 0, false, "new");
        second.id = format!("{base}#0#bb");
        a.push(first);
        a.push(second);
        let u = a
            .close(marker(
                &base,
                "snapshot:v1:{}",
                2,
                MarkerKind::SnapshotChunk,
            ))
            .unwrap();
        assert_eq!(tags(&u), vec!["old", "new"]);
        assert_eq!(u.stale, 1);
        let mut a = Assembler::new("p1");
        a.push(msg(1, "p1", 0, false, "r0"));
        assert!(a.close(marker("p1", "p2", 2, MarkerKind::Commit)).is_err());
    }
}
