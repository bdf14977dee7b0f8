//! The events of a change stream and the batches that carry them.

use std::sync::Arc;

use crate::checkpoint::Checkpoint;
use crate::schema::{TableName, TableSchema};
use crate::snapshot::SnapshotResume;
use crate::value::Row;

/// A commit time or other source timestamp: microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMicros(pub i64);

impl UnixMicros {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixMicros(d.as_micros() as i64)
    }
    /// RFC 3339 text in UTC with microseconds, e.g. `2024-05-01T12:00:00.000001Z`.
    pub fn to_rfc3339(self) -> String {
        crate::normalize::time::format_unix_micros_utc(self.0, 6)
    }
}

/// A batch of events, in stream order. A batch is the unit of allocation and backpressure: it
/// may end in the middle of a transaction, and a transaction may span many batches.
#[derive(Debug, Clone, Default)]
pub struct ChangeBatch {
    /// The events, in order.
    pub events: Vec<ChangeEvent>,
}

impl ChangeBatch {
    /// An empty batch with room for `n` events.
    pub fn with_capacity(n: usize) -> Self {
        ChangeBatch {
            events: Vec::with_capacity(n),
        }
    }
    /// Appends an event.
    pub fn push(&mut self, event: ChangeEvent) {
        self.events.push(event);
    }
    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }
    /// Whether the batch holds no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// One event of a change stream.
///
/// Order guarantees: events arrive in the source's commit order; every row change of a
/// streamed transaction sits between that transaction's [`ChangeEvent::Begin`] and
/// [`ChangeEvent::Commit`]; a [`ChangeEvent::Schema`] for a table comes before the first row
/// change that uses that schema. Snapshot rows arrive between
/// [`SnapshotProgress::TableStarted`] and [`SnapshotProgress::TableDone`] of their table, with
/// `snapshot: true` and no begin/commit around them. Backfilled rows (see
/// [`crate::backfill`]) have `snapshot: true` too, inside a begin/commit of their own.
#[derive(Debug, Clone)]
pub enum ChangeEvent {
    /// A source transaction starts.
    Begin(Begin),
    /// A row was inserted, updated or deleted (or read by the snapshot).
    Row(RowChange),
    /// Tables were emptied.
    Truncate(Truncate),
    /// A table's schema, sent before its first row and again whenever it changes.
    Schema(Arc<TableSchema>),
    /// A source transaction ended; everything up to `checkpoint` has been emitted.
    Commit(Commit),
    /// The transaction opened by the last [`ChangeEvent::Begin`] will not be committed in this
    /// form: discard every event since that begin (rows, truncates, schema events and rows of
    /// tables first read inside it: all of them are sent again). Sent when a connection drops in the middle of a
    /// transaction that was passed through without buffering; after the reconnect the source
    /// resends that transaction from its begin (so nothing is lost or applied twice as long as
    /// the host applies a transaction atomically at its commit).
    Abort,
    /// Snapshot progress.
    Snapshot(SnapshotProgress),
    /// The source position advanced without data (idle source, or only unselected tables
    /// changed). Safe to acknowledge once everything before it is stored.
    Keepalive(Checkpoint),
    /// The stream passed a marker made by [`crate::ChangeSource::write_checkpoint`]; the
    /// checkpoint is the one that call returned.
    CheckpointObserved(Checkpoint),
}

/// Start of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Begin {
    /// The source's transaction id, where it has one.
    pub xid: Option<u64>,
    /// Commit time, when the source sends it at the start.
    pub commit_time: Option<UnixMicros>,
}

/// What a row event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// New row (also every snapshot row).
    Insert,
    /// Changed row.
    Update,
    /// Removed row.
    Delete,
}

impl Op {
    /// `insert`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// How much of the old row image the source sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OldImage {
    /// No old image.
    None,
    /// Key columns only; every other column is [`crate::Value::Unchanged`].
    Key,
    /// Every column (PostgreSQL `REPLICA IDENTITY FULL`, MySQL full row image, Mongo
    /// pre-images).
    Full,
}

/// A row change. `old` and `new` have the table's column order.
#[derive(Debug, Clone)]
pub struct RowChange {
    /// Insert, update or delete.
    pub op: Op,
    /// The table and its schema at the time of the change.
    pub table: Arc<TableSchema>,
    /// The old image, as much as the source sent (see `old_image`).
    pub old: Option<Row>,
    /// How much of the old image is present.
    pub old_image: OldImage,
    /// The new image for inserts and updates. Columns the source did not send (TOAST) are
    /// [`crate::Value::Unchanged`].
    pub new: Option<Row>,
    /// Whether the row was read by the snapshot rather than streamed.
    pub snapshot: bool,
}

impl RowChange {
    /// The row identity: the key columns' values from the old image when it has them, else
    /// from the new image.
    pub fn key_values(&self) -> Vec<(&str, &crate::Value)> {
        let image = match (&self.old, self.old_image) {
            (Some(old), OldImage::Key | OldImage::Full) => Some(old),
            _ => self.new.as_ref().or(self.old.as_ref()),
        };
        let Some(image) = image else {
            return Vec::new();
        };
        self.table
            .key_indexes()
            .filter_map(|i| Some((self.table.columns[i].name.as_str(), image.get(i)?)))
            .collect()
    }
}

/// Tables emptied in one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// The tables.
    pub tables: Vec<TableName>,
}

/// End of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// The position after this transaction. Acknowledge it once everything up to here is
    /// stored durably; resuming from it yields the next transaction.
    pub checkpoint: Checkpoint,
    /// When the source committed, if it says.
    pub commit_time: Option<UnixMicros>,
}

/// Snapshot progress.
#[derive(Debug, Clone)]
pub enum SnapshotProgress {
    /// Reading a table starts (or resumes).
    TableStarted {
        /// The table.
        table: TableName,
        /// The source's row estimate, if known.
        estimated_rows: Option<u64>,
    },
    /// A chunk of a table has been emitted. Once the host stores the rows before this event,
    /// it may store `resume` and later restart the snapshot from it with
    /// [`crate::StartFrom::Snapshot`].
    ChunkDone {
        /// The table.
        table: TableName,
        /// Rows emitted for this table so far.
        rows_done: u64,
        /// The source's row estimate, if known.
        estimated_rows: Option<u64>,
        /// Where to resume the whole snapshot.
        resume: Box<SnapshotResume>,
    },
    /// A table has been read completely.
    TableDone {
        /// The table.
        table: TableName,
        /// Rows emitted for this table.
        rows: u64,
    },
    /// The snapshot is complete. Streaming continues from `checkpoint`; acknowledging it is
    /// safe once every snapshot row is stored.
    Done {
        /// Where streaming continues.
        checkpoint: Checkpoint,
    },
    /// A backfill of a table starts (see [`crate::backfill`]): sent inside the transaction of
    /// its first chunk.
    BackfillStarted {
        /// The table.
        table: TableName,
        /// The request id.
        id: String,
    },
    /// A chunk of a backfill was emitted; sent right after that chunk's `Commit`, whose
    /// checkpoint carries the advanced cursor (storing it is what makes the chunk count).
    BackfillChunk {
        /// The table.
        table: TableName,
        /// The request id.
        id: String,
        /// Rows of this backfill emitted so far.
        rows_done: u64,
    },
    /// A backfill of a table is complete; sent after its last chunk's `Commit`.
    BackfillDone {
        /// The table.
        table: TableName,
        /// The request id.
        id: String,
        /// Rows emitted.
        rows: u64,
    },
    /// A backfill of a table was given up (the table was dropped, or has no key to read it
    /// in order); the rest of the stream is not affected.
    BackfillFailed {
        /// The table.
        table: TableName,
        /// The request id.
        id: String,
        /// Why.
        error: String,
    },
}
