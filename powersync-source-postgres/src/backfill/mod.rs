//! Backfills (see [`powersync_source_core::backfill`]) on PostgreSQL.
//!
//! - Watermarks are transactional logical messages
//!   (`pg_logical_emit_message(true, 'powersync_backfill', …)`) written in autocommit on the
//!   reader's own connection; the stream (which asks pgoutput for `messages`, 14+) hands them
//!   to the emitter where they lie in the WAL.
//! - Chunks are `COPY (SELECT <published columns> … WHERE <row filter> AND (key) > (after)
//!   ORDER BY key LIMIT n)` on a session like the snapshot's, decoded by the snapshot's code:
//!   the rows are exactly the published ones, normalized as the snapshot does. The cursor is
//!   the JSON array of the key columns' text renderings (as the snapshot's resume keys).
//! - Signals are rows inserted into `public._powersync_signals`; the stream reads that
//!   table's inserts whatever the table selection and never emits them as rows.
//!
//! A chunk's read snapshot is taken after its low watermark committed, so it sees every
//! transaction whose commit the stream passes before that watermark. (PostgreSQL makes a
//! commit visible a moment after it writes its commit record; a transaction whose record
//! precedes the low watermark's but which is still not visible when the read starts, one
//! round trip later, would be missed by the read and not dropped from the chunk. That needs
//! its backend to stall between the two steps for longer than the round trip.)

mod reader;
mod schemas;

pub(crate) use reader::PgChunkReader;
pub(crate) use schemas::{same_shape, StreamSchemas};

/// Whether `name` is the signal table, whose rows are requests to the stream, not data.
pub(crate) fn is_signal_table(name: &powersync_source_core::TableName) -> bool {
    name.schema == "public" && name.name == powersync_source_core::backfill::SIGNAL_TABLE
}
