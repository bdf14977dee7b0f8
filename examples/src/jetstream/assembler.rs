//! The consumer's side of the contract: collects the messages of the units not yet closed
//! and, when a unit's commit marker arrives, hands over the unit — de-duplicated, stale
//! leftovers dropped, in the order to apply.
//!
//! - Messages are kept per `Powersync-Base`: the publisher sends later units' messages while
//!   an earlier unit's marker waits for its ack, so the stream interleaves them. A marker
//!   takes the messages of its base.
//! - Packed messages (line format version 2, [`super::pack`]) are split into their rows by
//!   [`unpack`]; each row gets the index and the id it would have in version 1
//!   (`<base>#<index>`, plus `#<hash of the line>` for snapshot rows), so de-duplication works
//!   whatever the packing, also across a publisher restarted with other limits.
//! - A row id seen twice in a unit is applied once: JetStream drops republished messages
//!   inside its duplicate window, this catches those republished after it expired.
//! - Leftovers of a publisher attempt that never reached a marker are dropped: those of a
//!   snapshot attempt from the beginning (base `start:<nonce>`, see [`ids::start_base`]) as
//!   soon as another attempt's first marker arrives, any other base after
//!   [`STALE_AFTER_UNITS`] units closed without it. (A publisher never gets that far ahead:
//!   at most its window of messages and queued markers is published before a unit's marker,
//!   see `publish --max-in-flight`. Were a live unit dropped, its marker would fail the
//!   count check below, never apply it partially.)
//! - Transactions are ordered by index, schema messages before the row of the same index,
//!   ties in stream order. A restarted publisher announces schemas again (a new connection
//!   re-sends them) and its announcement of the schema in force at index *i* may land after
//!   an earlier attempt's messages of higher indexes; sorting puts every announcement back
//!   where that schema was in force, so the table never goes back to an older shape.
//!   Snapshot chunks keep stream order: a re-read chunk holds newer versions of its rows,
//!   which must come last.
//! - The marker's `base` must be the position of the previous marker: a gap means messages
//!   were lost (retention, purge, two publishers on one stream) and is an error, as is a
//!   unit with fewer rows than its marker counts.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::ids;
use super::marker::{Marker, MarkerKind};
use super::pack;

/// Units closed after which a base still waiting for its marker is a stale leftover.
pub const STALE_AFTER_UNITS: u64 = 100_000;

/// A received data item (row or truncate) or schema message.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Stream sequence of the message that carried it.
    pub sequence: u64,
    /// Its id: the `Nats-Msg-Id` of a version 1 message, the row's own id inside a pack.
    pub id: String,
    /// `Powersync-Base`.
    pub base: String,
    /// Index among the unit's data items (for a schema message: of the item it precedes).
    pub index: u64,
    /// Whether it is a schema message (sorted before data of the same index).
    pub schema: bool,
    /// The JSON line.
    pub payload: Vec<u8>,
}

/// A data or schema message as read from the stream (headers already extracted).
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// Stream sequence.
    pub sequence: u64,
    /// `Nats-Msg-Id`.
    pub id: &'a str,
    /// `Powersync-Base`.
    pub base: &'a str,
    /// `Powersync-Index`.
    pub index: u64,
    /// Whether `Powersync-Format` is `2` (a packed message).
    pub packed: bool,
    /// The payload.
    pub payload: &'a [u8],
}

/// The items of a message: itself (version 1), or its rows (a pack, checked against its
/// headers).
pub fn unpack(msg: Received<'_>) -> Result<Vec<Incoming>, String> {
    if !msg.packed {
        return Ok(vec![Incoming {
            sequence: msg.sequence,
            id: msg.id.to_owned(),
            base: msg.base.to_owned(),
            index: msg.index,
            schema: super::framing::is_schema_payload(msg.payload),
            payload: msg.payload.to_vec(),
        }]);
    }
    let p = pack::decode(msg.payload)?;
    if p.header.base != msg.base || p.header.first != msg.index {
        return Err(format!(
            "packed message header (base `{}`, first {}) disagrees with its headers (base \
             `{}`, index {})",
            p.header.base, p.header.first, msg.base, msg.index
        ));
    }
    Ok(p.lines
        .iter()
        .enumerate()
        .map(|(k, line)| {
            let index = p.header.first + k as u64;
            let hash = p.header.snapshot.then(|| ids::fnv1a_128(line));
            Incoming {
                sequence: msg.sequence,
                id: ids::data_id(msg.base, index, hash),
                base: msg.base.to_owned(),
                index,
                schema: false,
                payload: line.to_vec(),
            }
        })
        .collect())
}

/// A complete unit: its marker and its messages in apply order.
#[derive(Debug)]
pub struct Unit {
    /// The closing marker.
    pub marker: Marker,
    /// Messages to apply, in order.
    pub messages: Vec<Incoming>,
    /// Leftover messages dropped since the previous unit (other attempts' bases).
    pub stale: usize,
    /// Repeated messages dropped.
    pub repeated: usize,
}

/// The messages of one base waiting for their marker.
#[derive(Debug)]
struct Waiting {
    items: Vec<Incoming>,
    seen: HashSet<String>,
    repeated: usize,
    first_sequence: u64,
    /// Units closed when the first item arrived.
    since: u64,
}

/// Collects messages until their markers.
#[derive(Debug)]
pub struct Assembler {
    expected_base: String,
    waiting: HashMap<String, Waiting>,
    /// Waiting bases by the stream sequence of their first message (the oldest first).
    by_sequence: BTreeMap<u64, String>,
    closed: u64,
    stale: usize,
    items: usize,
}

impl Assembler {
    /// Starts after the marker whose position is `position` ([`ids::START`] for none).
    pub fn new(position: &str) -> Assembler {
        Assembler {
            expected_base: ids::position_id(position),
            waiting: HashMap::new(),
            by_sequence: BTreeMap::new(),
            closed: 0,
            stale: 0,
            items: 0,
        }
    }

    /// Items waiting for their commit marker.
    pub fn pending(&self) -> usize {
        self.items
    }

    /// The stream sequence of the oldest message still waiting for its marker: where a
    /// consumer that stops now must start reading again (`None`: right after the last
    /// marker).
    pub fn resume_sequence(&self) -> Option<u64> {
        self.by_sequence.keys().next().copied()
    }

    /// Adds a data item or schema message.
    pub fn push(&mut self, msg: Incoming) {
        if ids::is_start_base(&msg.base) && self.expected_base != ids::START {
            // A snapshot attempt from the beginning that another attempt's marker replaced.
            self.stale += 1;
            return;
        }
        let closed = self.closed;
        let by_sequence = &mut self.by_sequence;
        let w = self.waiting.entry(msg.base.clone()).or_insert_with(|| {
            by_sequence.insert(msg.sequence, msg.base.clone());
            Waiting {
                items: Vec::new(),
                seen: HashSet::new(),
                repeated: 0,
                first_sequence: msg.sequence,
                since: closed,
            }
        });
        if !w.seen.insert(msg.id.clone()) {
            w.repeated += 1;
            return;
        }
        w.items.push(msg);
        self.items += 1;
    }

    /// Drops what waits for the unit `marker` closes without applying it: a consumer that
    /// restarted before its last applied marker reads that unit again.
    pub fn forget(&mut self, marker: &Marker) {
        self.take(&marker.base);
    }

    fn take(&mut self, base: &str) -> Option<Waiting> {
        let w = self.waiting.remove(base)?;
        self.by_sequence.remove(&w.first_sequence);
        self.items -= w.items.len();
        Some(w)
    }

    /// Closes the unit `marker` ends.
    pub fn close(&mut self, marker: Marker) -> Result<Unit, String> {
        let from_start = self.expected_base == ids::START;
        let first = from_start && ids::is_start_base(&marker.base);
        if marker.base != self.expected_base && !first {
            return Err(format!(
                "commit marker for {} follows position `{}`, but the last applied position is \
                 `{}`: messages are missing from the stream (removed by its limits or a purge, \
                 or two publishers write to it)",
                marker.position, marker.base, self.expected_base
            ));
        }
        let (mut messages, repeated) = match self.take(&marker.base) {
            Some(w) => (w.items, w.repeated),
            None => (Vec::new(), 0),
        };
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
        self.closed += 1;
        if from_start {
            // Other snapshot attempts from the beginning will never get a marker.
            let starts: Vec<String> = self
                .waiting
                .keys()
                .filter(|b| ids::is_start_base(b))
                .cloned()
                .collect();
            for b in starts {
                self.stale += self.take(&b).map_or(0, |w| w.items.len());
            }
        }
        while let Some(base) = self.by_sequence.values().next().cloned() {
            let old = self
                .waiting
                .get(&base)
                .is_some_and(|w| w.since + STALE_AFTER_UNITS < self.closed);
            if !old {
                break;
            }
            self.stale += self.take(&base).map_or(0, |w| w.items.len());
        }
        Ok(Unit {
            marker,
            messages,
            stale: std::mem::take(&mut self.stale),
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
        // Another base waits (a later unit, or a leftover); a gap is an error.
        a.push(msg(9, "zz", 0, false, "x"));
        let u = a
            .close(marker("p2", "p3", 0, MarkerKind::Keepalive))
            .unwrap();
        assert_eq!(u.stale, 0);
        assert!(u.messages.is_empty());
        assert_eq!(a.pending(), 1);
        assert_eq!(a.resume_sequence(), Some(9));
        assert!(a.close(marker("p9", "p10", 0, MarkerKind::Commit)).is_err());
    }

    #[test]
    fn interleaved_units_packs_and_stale_leftovers() {
        let mut a = Assembler::new("p1");
        let pack = |seq: u64, base: &str, first: u64, lines: &[&str], snapshot: bool| {
            let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let payload = pack::encode(
                &pack::PackHeader::<String> {
                    format: pack::FORMAT.into(),
                    version: pack::VERSION,
                    table: "public.t".into(),
                    base: base.into(),
                    first,
                    count: lines.len() as u64,
                    snapshot,
                },
                body.as_bytes(),
            );
            unpack(Received {
                sequence: seq,
                id: "ignored",
                base,
                index: first,
                packed: true,
                payload: &payload,
            })
            .unwrap()
        };
        // Unit p1 → p2 (3 rows in two packs), unit p2 → p3 starts before p1's marker.
        for item in pack(1, "p1", 0, &["a", "b"], false) {
            a.push(item);
        }
        for item in pack(2, "p2", 0, &["x"], false) {
            a.push(item);
        }
        for item in pack(3, "p1", 2, &["c"], false) {
            a.push(item);
        }
        // The same rows again, packed differently (a publisher restarted with other limits).
        for item in pack(4, "p1", 1, &["b", "c"], false) {
            a.push(item);
        }
        assert_eq!(a.resume_sequence(), Some(1));
        let u = a.close(marker("p1", "p2", 3, MarkerKind::Commit)).unwrap();
        assert_eq!(tags(&u), vec!["a", "b", "c"]);
        assert_eq!(u.repeated, 2);
        assert_eq!(u.messages[1].id, "p1#1");
        assert_eq!(a.resume_sequence(), Some(2));
        let u = a.close(marker("p2", "p3", 1, MarkerKind::Commit)).unwrap();
        assert_eq!(tags(&u), vec!["x"]);
        assert_eq!(a.resume_sequence(), None);
        // Snapshot rows get the version 1 id: the base, the index and the line's hash.
        let rows = pack(5, "p3", 0, &["s"], true);
        assert_eq!(
            rows[0].id,
            ids::data_id("p3", 0, Some(ids::fnv1a_128(b"s")))
        );
        // A pack whose header disagrees with its message headers is rejected.
        let payload = pack::encode(
            &pack::PackHeader::<String> {
                format: pack::FORMAT.into(),
                version: pack::VERSION,
                table: "public.t".into(),
                base: "p3".into(),
                first: 0,
                count: 0,
                snapshot: false,
            },
            b"",
        );
        assert!(unpack(Received {
            sequence: 6,
            id: "x",
            base: "p4",
            index: 0,
            packed: true,
            payload: &payload,
        })
        .is_err());
        // A leftover base never closed is dropped after STALE_AFTER_UNITS units.
        a.push(msg(7, "never", 0, false, "z"));
        let mut position = "p3".to_string();
        for n in 0..=STALE_AFTER_UNITS {
            let next = format!("q{n}");
            let u = a
                .close(marker(&position, &next, 0, MarkerKind::Keepalive))
                .unwrap();
            position = next;
            if n == STALE_AFTER_UNITS {
                assert_eq!(u.stale, 1);
            } else {
                assert_eq!(u.stale, 0, "unit {n}");
            }
        }
        assert_eq!(a.pending(), 0);
        // forget(): a unit applied before a restart is read again and dropped.
        a.push(msg(8, &position, 0, false, "again"));
        a.forget(&marker(&position, "r", 1, MarkerKind::Commit));
        assert_eq!(a.pending(), 0);
        assert_eq!(a.resume_sequence(), None);
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
