//! Backfills: re-reading chosen tables while every table keeps streaming, with DBLog-style
//! watermarks, resumable from the host's stored checkpoint.
//!
//! # Consistency model
//! A backfill reads a table in key order, one chunk at a time, on a connection of its own. For
//! each chunk the reader writes a *low* watermark into the source's change log, reads the next
//! rows after the cursor, hands them to the stream task, and then writes a *high* watermark
//! (PostgreSQL: `pg_logical_emit_message`, MySQL/MariaDB: a row in `_powersync_checkpoints`,
//! MongoDB: a document in `_powersync_checkpoints`). The stream passes both watermarks in
//! commit order. The chunk's read saw every change committed before the low watermark and
//! none committed after the high one; a change committed between the two may or may not be in
//! it. So the stream task records the keys the stream changes between the two watermarks
//! (from the moment it ordered the chunk, in fact: a transaction logged just before the low
//! watermark can still be invisible to the read for a moment on PostgreSQL and InnoDB),
//! drops those rows from the chunk (the stream already carried an image at least as new), and
//! emits the rest as one transaction right at the high watermark: every emitted chunk row is
//! the row's image at that point of the stream, so a chunk row never overwrites a newer
//! streamed image, and the transactions of every other table keep flowing between chunks
//! (the stream task never waits for a read).
//!
//! # Resuming
//! The backfill cursor (per requested table: request id, last emitted key, rows so far) rides
//! on every checkpoint the stream emits while a backfill runs (see
//! [`crate::Checkpoint::backfill`]). A host that stores checkpoints as usual therefore stores
//! the cursor with the changes it covers: after a crash the stream resumes at the checkpoint
//! and the backfill after its last stored chunk, so at most the chunk in flight is read again.
//! Watermarks written by an earlier process carry other ids and are ignored.
//!
//! # Requests
//! A backfill is asked for with [`crate::ChangeStream::request_backfill`], or by inserting a
//! row into `_powersync_signals` in the source (`id` text, `kind` = `'backfill'`, `tables` =
//! comma-separated `schema.table` names); the request takes effect at that row's commit, so it
//! is as durable as the source's log. Tables that enter the selection while streaming are read
//! the same way. PostgreSQL, MySQL/MariaDB and MongoDB support backfills; SQL Server and Convex
//! streams answer a request with an error.
//!
//! # Events
//! Each chunk is `Begin`, the table's `Schema`, [`crate::SnapshotProgress::BackfillStarted`]
//! (first chunk only), the rows (`RowChange` with `snapshot: true`, op insert), `Commit`
//! (checkpoint with the advanced cursor), then [`crate::SnapshotProgress::BackfillChunk`] and,
//! after the last chunk, [`crate::SnapshotProgress::BackfillDone`].

mod coordinator;
mod key;
mod reader;
mod state;

pub(crate) use coordinator::Coordinator;
pub(crate) use reader::HostRequest;
pub use reader::{Chunk, ChunkReader};
pub use state::{BackfillState, BackfillTask};

use crate::schema::TableName;

/// Name of the signal table (PostgreSQL/MySQL) or collection (MongoDB) in the source.
pub const SIGNAL_TABLE: &str = "_powersync_signals";

/// The `kind` of a backfill signal row.
pub const SIGNAL_KIND_BACKFILL: &str = "backfill";

/// The PostgreSQL logical-message prefix of watermarks (`pg_logical_emit_message`).
pub const WATERMARK_PREFIX: &str = "powersync_backfill";

/// How many rows a chunk holds unless [`crate::StreamOptions::backfill_chunk_rows`] says
/// otherwise.
pub const DEFAULT_CHUNK_ROWS: usize = 4096;

/// A new request id: unique across processes (time, process id and randomness).
pub fn new_request_id() -> String {
    let micros = crate::UnixMicros::now().0;
    format!(
        "{micros:x}-{:x}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// `table` with `default_schema` when it names none (`big`, `.big`, or a host's
/// `TableName::new("", "big")`).
pub(crate) fn qualified(table: TableName, default_schema: &str) -> TableName {
    if table.schema.is_empty() {
        TableName::new(default_schema, table.name)
    } else {
        table
    }
}
