//! Turns a change stream into JetStream messages: which subject, which id, where the unit
//! (transaction or snapshot chunk) ends, what each commit marker says, and which rows share a
//! message ([`PackLimits`], [`super::pack`]).
//!
//! Pure (no I/O) so that the id rules — the heart of the delivery contract in
//! [`crate::jetstream`] — are unit-tested.

use std::time::{Duration, Instant};

use powersync_source_core::{
    ChangeEvent, Checkpoint, SnapshotProgress, SnapshotResume, StartFrom, TableName, TableProgress,
    TableSchema, Truncate,
};

use super::ids;
use super::marker::{Marker, MarkerKind};
use super::pack::{self, PackHeader};
use crate::json_lines;

/// Which rows share a message. A message holds rows of one unit (transaction or snapshot
/// chunk) and one table only, in order, up to `rows` rows and — unless one row alone is
/// larger — `bytes` bytes of lines. With `rows` = 1 every row is its own message in line
/// format version 1 (no header line), as before packing existed.
///
/// Packing depends only on the unit's rows and these limits, never on how the source
/// batched them, so a restarted publisher with the same limits builds the same messages with
/// the same ids (and JetStream drops the ones already stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackLimits {
    /// Most rows (and truncates) in one message; 1 = line format version 1.
    pub rows: u64,
    /// Most bytes of lines in one message (a larger single row gets a message of its own).
    pub bytes: usize,
}

impl PackLimits {
    /// One row per message, line format version 1.
    pub const ONE_ROW: PackLimits = PackLimits {
        rows: 1,
        bytes: usize::MAX,
    };
}

impl Default for PackLimits {
    /// Packs of up to 64 KiB of lines: large enough that a message's fixed cost is shared by
    /// hundreds of typical rows, small enough to stay far below NATS's default 1 MiB
    /// `max_payload`.
    fn default() -> Self {
        PackLimits {
            rows: 100_000,
            bytes: 64 * 1024,
        }
    }
}

/// The rows of the message being packed.
#[derive(Debug)]
struct OpenPack {
    table: TableName,
    snapshot: bool,
    first: u64,
    count: u64,
    lines: Vec<u8>,
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Subject.
    pub subject: String,
    /// `Nats-Msg-Id`.
    pub id: String,
    /// [`ids::HEADER_BASE`].
    pub base: String,
    /// [`ids::HEADER_INDEX`].
    pub index: u64,
    /// Payload (empty for a commit marker: see `marker`).
    pub payload: Vec<u8>,
    /// Set on commit markers.
    pub marker: Option<Marker>,
    /// Data items in a packed message (line format version 2); `None` for version 1.
    pub packed: Option<u64>,
}

/// The publisher's position in the stream of units.
#[derive(Debug)]
pub struct Framer {
    prefix: String,
    /// The position the current unit starts at (the last marker's position, or [`ids::START`]).
    base_position: String,
    base_id: String,
    /// Data messages in the current unit so far.
    index: u64,
    in_tx: bool,
    snapshot_running: bool,
    last_resume: Option<SnapshotResume>,
    keepalive_interval: Duration,
    last_marker_at: Instant,
    pending_keepalive: Option<Checkpoint>,
    limits: PackLimits,
    pack: Option<OpenPack>,
}

impl Framer {
    /// Starts after the marker at `base_position` (or [`ids::START`]), streaming from `from`.
    pub fn new(
        prefix: &str,
        base_position: &str,
        from: &StartFrom,
        keepalive_interval: Duration,
    ) -> Framer {
        Framer {
            prefix: prefix.to_owned(),
            base_position: base_position.to_owned(),
            base_id: if base_position == ids::START {
                ids::start_base(rand::random())
            } else {
                ids::position_id(base_position)
            },
            index: 0,
            in_tx: false,
            snapshot_running: !matches!(from, StartFrom::Checkpoint(_)),
            last_resume: match from {
                StartFrom::Snapshot(r) => Some(r.clone()),
                _ => None,
            },
            keepalive_interval,
            last_marker_at: Instant::now(),
            pending_keepalive: None,
            limits: PackLimits::ONE_ROW,
            pack: None,
        }
    }

    /// Packs rows as `limits` say (the default of [`Framer::new`] is
    /// [`PackLimits::ONE_ROW`]).
    pub fn with_packing(mut self, limits: PackLimits) -> Framer {
        self.limits = limits;
        self
    }

    /// Whether the initial snapshot is still running.
    pub fn snapshot_running(&self) -> bool {
        self.snapshot_running
    }

    /// The position the current unit starts at.
    pub fn base_position(&self) -> &str {
        &self.base_position
    }

    /// Appends the messages for `event` to `out`.
    pub fn on_event(&mut self, event: &ChangeEvent, out: &mut Vec<Outgoing>) {
        match event {
            ChangeEvent::Begin(_) => {
                self.in_tx = true;
            }
            ChangeEvent::Row(change) if self.limits.rows > 1 => {
                self.pack_line(&change.table.name, change.snapshot, event, out);
            }
            ChangeEvent::Row(change) => {
                let Some(line) = json_lines::event_line(event) else {
                    return;
                };
                let payload = line.into_bytes();
                // Snapshot rows re-read after a restart may differ at the same index.
                let hash = change.snapshot.then(|| ids::fnv1a_128(&payload));
                let subject = ids::table_subject(&self.prefix, &change.table.name);
                self.push_data(subject, payload, hash, out);
            }
            ChangeEvent::Truncate(t) => {
                // One message per table, on the table's subject, so that a consumer of one
                // table's subject sees its truncates.
                for table in &t.tables {
                    let single = ChangeEvent::Truncate(Truncate {
                        tables: vec![table.clone()],
                    });
                    if self.limits.rows > 1 {
                        self.pack_line(table, false, &single, out);
                        continue;
                    }
                    let Some(line) = json_lines::event_line(&single) else {
                        continue;
                    };
                    let subject = ids::table_subject(&self.prefix, table);
                    self.push_data(subject, line.into_bytes(), None, out);
                }
            }
            ChangeEvent::Schema(schema) => {
                // The rows before it go first: a pack's rows all precede the schema's index.
                self.flush_pack(out);
                let payload = schema_payload(event, schema);
                out.push(Outgoing {
                    subject: ids::table_subject(&self.prefix, &schema.name),
                    id: ids::schema_id(&self.base_id, self.index, &payload),
                    base: self.base_id.clone(),
                    index: self.index,
                    payload,
                    marker: None,
                    packed: None,
                });
            }
            ChangeEvent::Commit(c) => {
                self.in_tx = false;
                let position = c.checkpoint.to_string();
                self.close(
                    Marker {
                        kind: MarkerKind::Commit,
                        checkpoint: Some(position.clone()),
                        commit_time: c.commit_time.map(|t| t.to_rfc3339()),
                        position,
                        base: self.base_id.clone(),
                        messages: self.index,
                    },
                    out,
                );
            }
            ChangeEvent::Abort => {
                // The source resends the transaction from its begin: the same ids again, which
                // JetStream drops (and consumers skip) as duplicates.
                self.in_tx = false;
                self.index = 0;
                self.pack = None;
            }
            ChangeEvent::Keepalive(c) => {
                if !self.in_tx && !self.snapshot_running {
                    self.pending_keepalive = Some(c.clone());
                    if let Some(m) = self.due_keepalive() {
                        out.push(m);
                    }
                }
            }
            ChangeEvent::CheckpointObserved(_) => {}
            ChangeEvent::Snapshot(p) => {
                if self.in_tx {
                    // A table first read inside a transaction: its rows belong to it.
                    return;
                }
                self.on_snapshot(p, out);
            }
        }
    }

    fn on_snapshot(&mut self, p: &SnapshotProgress, out: &mut Vec<Outgoing>) {
        match p {
            // Backfill chunks are transactions: their commits make the markers.
            SnapshotProgress::TableStarted { .. }
            | SnapshotProgress::BackfillStarted { .. }
            | SnapshotProgress::BackfillChunk { .. }
            | SnapshotProgress::BackfillDone { .. }
            | SnapshotProgress::BackfillFailed { .. } => {}
            SnapshotProgress::ChunkDone { resume, .. } => {
                self.last_resume = Some((**resume).clone());
                self.close_chunk(resume.to_token(), out);
            }
            SnapshotProgress::TableDone { table, rows } => {
                // Without a resume token yet the rows stay in the unit the next marker closes.
                let Some(resume) = self.last_resume.as_mut() else {
                    return;
                };
                resume
                    .tables
                    .insert(table.to_string(), TableProgress::Done { rows: *rows });
                let token = resume.to_token();
                self.close_chunk(token, out);
            }
            SnapshotProgress::Done { checkpoint } => {
                self.snapshot_running = false;
                self.last_resume = None;
                let position = checkpoint.to_string();
                self.close(
                    Marker {
                        kind: MarkerKind::SnapshotDone,
                        checkpoint: Some(position.clone()),
                        commit_time: None,
                        position,
                        base: self.base_id.clone(),
                        messages: self.index,
                    },
                    out,
                );
            }
        }
    }

    /// A keepalive marker, if the source advanced without data and the last marker is older
    /// than the keepalive interval (so the source can release its history while idle).
    pub fn due_keepalive(&mut self) -> Option<Outgoing> {
        if self.in_tx
            || self.snapshot_running
            || self.index > 0
            || self.last_marker_at.elapsed() < self.keepalive_interval
        {
            return None;
        }
        let checkpoint = self.pending_keepalive.take()?;
        let position = checkpoint.to_string();
        if position == self.base_position {
            return None;
        }
        let mut out = Vec::with_capacity(1);
        self.close(
            Marker {
                kind: MarkerKind::Keepalive,
                checkpoint: Some(position.clone()),
                commit_time: None,
                position,
                base: self.base_id.clone(),
                messages: 0,
            },
            &mut out,
        );
        out.pop()
    }

    fn close_chunk(&mut self, token: String, out: &mut Vec<Outgoing>) {
        if token == self.base_position {
            return;
        }
        self.close(
            Marker {
                kind: MarkerKind::SnapshotChunk,
                checkpoint: None,
                commit_time: None,
                position: token,
                base: self.base_id.clone(),
                messages: self.index,
            },
            out,
        );
    }

    fn push_data(
        &mut self,
        subject: String,
        payload: Vec<u8>,
        hash: Option<u128>,
        out: &mut Vec<Outgoing>,
    ) {
        out.push(Outgoing {
            subject,
            id: ids::data_id(&self.base_id, self.index, hash),
            base: self.base_id.clone(),
            index: self.index,
            payload,
            marker: None,
            packed: None,
        });
        self.index += 1;
    }

    /// Adds the line of `event` (a row or a one-table truncate) to the open pack, first
    /// sending the pack if the line cannot join it (another table, the other kind of row, or
    /// a limit reached).
    fn pack_line(
        &mut self,
        table: &TableName,
        snapshot: bool,
        event: &ChangeEvent,
        out: &mut Vec<Outgoing>,
    ) {
        let joins = self.pack.as_ref().is_some_and(|p| {
            p.table == *table && p.snapshot == snapshot && p.count < self.limits.rows
        });
        if !joins {
            self.flush_pack(out);
        }
        let index = self.index;
        let p = self.pack.get_or_insert_with(|| OpenPack {
            table: table.clone(),
            snapshot,
            first: index,
            count: 0,
            // Room for a typical row without regrowing.
            lines: Vec::with_capacity(512),
        });
        let start = p.lines.len();
        if !matches!(json_lines::write_event(&mut p.lines, event), Ok(true)) {
            // No line for this event (writing to a Vec cannot fail otherwise).
            p.lines.truncate(start);
            return;
        }
        self.index += 1;
        if p.lines.len() <= self.limits.bytes || p.count == 0 {
            p.count += 1;
            return;
        }
        // Over the byte limit: the pack goes without this line, which starts the next one.
        let line = p.lines.split_off(start);
        self.flush_pack(out);
        self.pack = Some(OpenPack {
            table: table.clone(),
            snapshot,
            first: index,
            count: 1,
            lines: line,
        });
    }

    /// Sends the open pack, if any.
    fn flush_pack(&mut self, out: &mut Vec<Outgoing>) {
        let Some(p) = self.pack.take() else {
            return;
        };
        let table = p.table.to_string();
        let header = PackHeader {
            format: pack::FORMAT,
            version: pack::VERSION,
            table: table.as_str(),
            base: self.base_id.as_str(),
            first: p.first,
            count: p.count,
            snapshot: p.snapshot,
        };
        let payload = pack::encode(&header, &p.lines);
        // Snapshot rows re-read after a restart may differ at the same indexes.
        let hash = p.snapshot.then(|| ids::fnv1a_128(&payload));
        out.push(Outgoing {
            subject: ids::table_subject(&self.prefix, &p.table),
            id: ids::pack_id(&self.base_id, p.first, p.count, hash),
            base: self.base_id.clone(),
            index: p.first,
            payload,
            marker: None,
            packed: Some(p.count),
        });
    }

    fn close(&mut self, marker: Marker, out: &mut Vec<Outgoing>) {
        self.flush_pack(out);
        let id = ids::marker_id(&self.base_id, &marker.position);
        let next_base = ids::position_id(&marker.position);
        self.base_position.clone_from(&marker.position);
        out.push(Outgoing {
            subject: ids::commit_subject(&self.prefix),
            id,
            base: std::mem::replace(&mut self.base_id, next_base),
            index: self.index,
            // The publisher builds marker messages (one marker or a batch) from `marker`.
            payload: Vec::new(),
            marker: Some(marker),
            packed: None,
        });
        self.index = 0;
        self.pending_keepalive = None;
        self.last_marker_at = Instant::now();
    }
}

/// `tail`'s schema line plus `"definition"`: the full [`TableSchema`] (row identity, column
/// flags) a consumer needs to rebuild rows exactly. `"kind"` stays the first key, so readers
/// can tell a schema message by its first bytes.
fn schema_payload(event: &ChangeEvent, schema: &TableSchema) -> Vec<u8> {
    let line = json_lines::event_line(event).unwrap_or_else(|| "{\"kind\":\"schema\"}".into());
    let definition = serde_json::to_string(schema).unwrap_or_else(|_| "null".into());
    let body = line.strip_suffix('}').unwrap_or(&line);
    format!("{body},\"definition\":{definition}}}").into_bytes()
}

/// Whether a payload is a schema message (`{"kind":"schema",…`: `kind` is always first).
pub fn is_schema_payload(payload: &[u8]) -> bool {
    payload.starts_with(b"{\"kind\":\"schema\"")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use powersync_source_core::{
        Begin, Column, Commit, OldImage, Op, Row, RowChange, RowIdentity, TableName, Value,
    };

    use super::*;

    fn schema() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            name: TableName::new("public", "t"),
            source_id: Some(1),
            columns: vec![Column::new("id", "int8").key(), Column::new("v", "text")],
            identity: RowIdentity::PrimaryKey,
        })
    }

    fn insert(s: &Arc<TableSchema>, id: i64, snapshot: bool) -> ChangeEvent {
        ChangeEvent::Row(RowChange {
            op: Op::Insert,
            table: s.clone(),
            old: None,
            old_image: OldImage::None,
            new: Some(Row::new(vec![Value::Integer(id), Value::Text("x".into())])),
            snapshot,
        })
    }

    fn cp(n: u32) -> Checkpoint {
        Checkpoint::parse(&format!("postgres:v1:00000000/{n:08X}")).unwrap()
    }

    fn tx(f: &mut Framer, s: &Arc<TableSchema>, ids: &[i64], end: u32) -> Vec<Outgoing> {
        let mut out = Vec::new();
        f.on_event(
            &ChangeEvent::Begin(Begin {
                xid: None,
                commit_time: None,
            }),
            &mut out,
        );
        for id in ids {
            f.on_event(&insert(s, *id, false), &mut out);
        }
        f.on_event(
            &ChangeEvent::Commit(Commit {
                checkpoint: cp(end),
                commit_time: None,
            }),
            &mut out,
        );
        out
    }

    #[test]
    fn a_replayed_transaction_gets_the_same_ids() {
        let s = schema();
        let from = StartFrom::Checkpoint(cp(1));
        let mut first = Framer::new("cdc", cp(1).as_str(), &from, Duration::from_secs(10));
        let mut out = Vec::new();
        first.on_event(&ChangeEvent::Schema(s.clone()), &mut out);
        out.extend(tx(&mut first, &s, &[1, 2], 2));
        out.extend(tx(&mut first, &s, &[3], 3));
        let ids: Vec<&str> = out.iter().map(|o| o.id.as_str()).collect();
        assert!(ids[0].starts_with("postgres:v1:00000000/00000001#0s"));
        assert!(is_schema_payload(&out[0].payload));
        let json: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(json["table"], "public.t");
        assert_eq!(json["definition"]["identity"], "PrimaryKey");
        assert_eq!(
            &ids[1..],
            &[
                "postgres:v1:00000000/00000001#0",
                "postgres:v1:00000000/00000001#1",
                "postgres:v1:00000000/00000001>postgres:v1:00000000/00000002",
                "postgres:v1:00000000/00000002#0",
                "postgres:v1:00000000/00000002>postgres:v1:00000000/00000003",
            ]
        );
        assert_eq!(out[1].subject, "cdc.public.t");
        assert_eq!(out[3].subject, "cdc._commit");
        assert_eq!(out[3].marker.as_ref().unwrap().messages, 2);
        // Restarted from the marker after the first transaction: the second gets the same ids,
        // its schema announcement sits at the same index.
        let from = StartFrom::Checkpoint(cp(2));
        let mut again = Framer::new("cdc", cp(2).as_str(), &from, Duration::from_secs(10));
        let mut out2 = Vec::new();
        again.on_event(&ChangeEvent::Schema(s.clone()), &mut out2);
        out2.extend(tx(&mut again, &s, &[3], 3));
        assert_eq!(out2[1].id, out[4].id);
        assert_eq!(out2[2].id, out[5].id);
        assert_eq!(out2[0].index, 0);
    }

    #[test]
    fn abort_restarts_the_indexes_and_snapshot_rows_hash_their_content() {
        let s = schema();
        let mut f = Framer::new(
            "p",
            ids::START,
            &StartFrom::Beginning,
            Duration::from_secs(10),
        );
        let mut out = Vec::new();
        f.on_event(&insert(&s, 1, true), &mut out);
        f.on_event(&insert(&s, 2, true), &mut out);
        assert!(out[0].id.starts_with("start:"), "{}", out[0].id);
        assert!(ids::is_start_base(&out[0].base));
        assert_ne!(out[0].id, out[1].id);
        let mut resume = SnapshotResume {
            stream_from: cp(9),
            tables: Default::default(),
            source_state: None,
        };
        resume.tables.insert(
            "public.t".into(),
            TableProgress::Partial {
                after_key: "[2]".into(),
                rows: 2,
            },
        );
        f.on_event(
            &ChangeEvent::Snapshot(SnapshotProgress::ChunkDone {
                table: s.name.clone(),
                rows_done: 2,
                estimated_rows: None,
                resume: Box::new(resume),
            }),
            &mut out,
        );
        let chunk = out[2].marker.clone().unwrap();
        assert_eq!(chunk.kind, MarkerKind::SnapshotChunk);
        assert_eq!(chunk.messages, 2);
        assert!(chunk.ack_checkpoint().is_none());
        f.on_event(
            &ChangeEvent::Snapshot(SnapshotProgress::TableDone {
                table: s.name.clone(),
                rows: 2,
            }),
            &mut out,
        );
        let done_table = out[3].marker.clone().unwrap();
        assert!(
            done_table.position.contains("\"done\""),
            "{}",
            done_table.position
        );
        f.on_event(
            &ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint: cp(9) }),
            &mut out,
        );
        assert_eq!(
            out[4].marker.as_ref().unwrap().kind,
            MarkerKind::SnapshotDone
        );
        assert!(!f.snapshot_running());
        // An aborted transaction is resent with the same ids.
        let mut a = Vec::new();
        f.on_event(
            &ChangeEvent::Begin(Begin {
                xid: None,
                commit_time: None,
            }),
            &mut a,
        );
        f.on_event(&insert(&s, 5, false), &mut a);
        f.on_event(&ChangeEvent::Abort, &mut a);
        let again = tx(&mut f, &s, &[5], 10);
        assert_eq!(a[0].id, again[0].id);
    }

    #[test]
    fn keepalives_become_markers_only_when_due() {
        let from = StartFrom::Checkpoint(cp(1));
        let mut f = Framer::new("p", cp(1).as_str(), &from, Duration::ZERO);
        let mut out = Vec::new();
        f.on_event(&ChangeEvent::Keepalive(cp(1)), &mut out);
        assert!(out.is_empty(), "same position: nothing to say");
        f.on_event(&ChangeEvent::Keepalive(cp(4)), &mut out);
        assert_eq!(out.len(), 1);
        let m = out[0].marker.clone().unwrap();
        assert_eq!(m.kind, MarkerKind::Keepalive);
        assert_eq!(m.ack_checkpoint(), Some(cp(4)));
        let mut slow = Framer::new("p", cp(1).as_str(), &from, Duration::from_secs(3600));
        let mut out = Vec::new();
        slow.on_event(&ChangeEvent::Keepalive(cp(4)), &mut out);
        assert!(out.is_empty());
        assert!(slow.due_keepalive().is_none());
    }

    #[test]
    fn rows_are_packed_per_table_and_unit_within_the_limits() {
        let s = schema();
        let other = Arc::new(TableSchema {
            name: TableName::new("public", "u"),
            ..(*s).clone()
        });
        let from = StartFrom::Checkpoint(cp(1));
        let limits = PackLimits {
            rows: 3,
            bytes: 10_000,
        };
        let mut f =
            Framer::new("cdc", cp(1).as_str(), &from, Duration::from_secs(10)).with_packing(limits);
        let mut out = Vec::new();
        f.on_event(
            &ChangeEvent::Begin(Begin {
                xid: None,
                commit_time: None,
            }),
            &mut out,
        );
        // 4 rows of t (3 + 1 by the row limit), 1 of u, a new schema of t, 1 row of t.
        for id in 1..=4 {
            f.on_event(&insert(&s, id, false), &mut out);
        }
        f.on_event(&insert(&other, 5, false), &mut out);
        f.on_event(&ChangeEvent::Schema(s.clone()), &mut out);
        f.on_event(&insert(&s, 6, false), &mut out);
        f.on_event(
            &ChangeEvent::Commit(Commit {
                checkpoint: cp(2),
                commit_time: None,
            }),
            &mut out,
        );
        let base = "postgres:v1:00000000/00000001";
        let shape: Vec<(&str, Option<u64>, u64, &str)> = out
            .iter()
            .map(|o| (o.id.as_str(), o.packed, o.index, o.subject.as_str()))
            .collect();
        assert_eq!(
            shape[0],
            (&*format!("{base}#0+3"), Some(3), 0, "cdc.public.t")
        );
        assert_eq!(
            shape[1],
            (&*format!("{base}#3+1"), Some(1), 3, "cdc.public.t")
        );
        assert_eq!(
            shape[2],
            (&*format!("{base}#4+1"), Some(1), 4, "cdc.public.u")
        );
        assert!(is_schema_payload(&out[3].payload));
        assert_eq!(out[3].index, 5, "the schema precedes the row of index 5");
        assert_eq!(
            shape[4],
            (&*format!("{base}#5+1"), Some(1), 5, "cdc.public.t")
        );
        assert_eq!(out[5].marker.as_ref().unwrap().messages, 6);
        let p = pack::decode(&out[0].payload).unwrap();
        assert_eq!((p.header.first, p.header.count, p.lines.len()), (0, 3, 3));
        assert_eq!(p.header.base, base);
        assert!(!p.header.snapshot);
        let row: serde_json::Value = serde_json::from_slice(p.lines[2]).unwrap();
        assert_eq!(row["new"]["id"], 3);

        // The byte limit: every row alone (a row is larger than 1 byte), indexes unchanged.
        let tiny = PackLimits {
            rows: 100,
            bytes: 1,
        };
        let mut f =
            Framer::new("cdc", cp(2).as_str(), &from, Duration::from_secs(10)).with_packing(tiny);
        let out = tx(&mut f, &s, &[1, 2, 3], 3);
        let firsts: Vec<(u64, Option<u64>)> = out.iter().map(|o| (o.index, o.packed)).collect();
        assert_eq!(firsts[..3], [(0, Some(1)), (1, Some(1)), (2, Some(1))]);

        // An aborted transaction's open pack is discarded; the resent one has the same ids.
        let mut f =
            Framer::new("cdc", cp(2).as_str(), &from, Duration::from_secs(10)).with_packing(limits);
        let mut a = Vec::new();
        f.on_event(
            &ChangeEvent::Begin(Begin {
                xid: None,
                commit_time: None,
            }),
            &mut a,
        );
        f.on_event(&insert(&s, 1, false), &mut a);
        f.on_event(&ChangeEvent::Abort, &mut a);
        assert!(a.is_empty(), "nothing sent before the pack is full");
        let again = tx(&mut f, &s, &[1, 2], 3);
        assert_eq!(again[0].id, "postgres:v1:00000000/00000002#0+2");

        // Snapshot packs hash their payload; never mixed with streamed rows.
        let mut f = Framer::new("cdc", ids::START, &StartFrom::Beginning, Duration::ZERO)
            .with_packing(limits);
        let mut out = Vec::new();
        f.on_event(&insert(&s, 1, true), &mut out);
        f.on_event(&insert(&s, 2, true), &mut out);
        f.on_event(
            &ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint: cp(9) }),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        let hash = ids::fnv1a_128(&out[0].payload);
        assert!(
            out[0].id.ends_with(&format!("#0+2#{hash:032x}")),
            "{}",
            out[0].id
        );
        assert!(pack::decode(&out[0].payload).unwrap().header.snapshot);
    }
}
