//! PostgreSQL connector for powersync-source: pgoutput logical replication.
//!
//! ```no_run
//! # async fn run() -> Result<(), powersync_source_core::SourceError> {
//! use powersync_source_core::{ChangeSource, StartFrom, StreamOptions, TableName};
//! use powersync_source_postgres::{PostgresConfig, PostgresSource};
//!
//! let config = PostgresConfig::parse("postgres://replicator:secret@db:5432/app?publication=powersync")?;
//! let source = PostgresSource::new(config).with_stream_options(
//!     StreamOptions::default().with_tables(vec![TableName::new("public", "todos")]),
//! );
//! let report = source.check().await?; // every missing prerequisite, each with its fix
//! let stream = source.start(StartFrom::Beginning).await?; // runs check() first
//! # Ok(()) }
//! ```
//!
//! # Consistency model
//!
//! **Exact first snapshot.** `start(Beginning)` creates the logical replication slot first
//! (`CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT`), before any table is read. The slot's
//! *consistent point* `C` and its exported snapshot describe the same instant: every transaction
//! committed before `C` is visible in the snapshot, every one committed after it is decoded by the
//! slot. All snapshot readers import that snapshot (`SET TRANSACTION SNAPSHOT`), so the rows they
//! emit are exactly the state at `C`, and streaming starts at `C`: nothing is seen twice or
//! missed. The replication connection runs no command until the readers are done, which keeps
//! the exported snapshot valid.
//!
//! **Chunks.** On PostgreSQL 14+ a heap table is read in ranges of heap blocks through TID
//! range scans (`WHERE ctid >= '(lo,0)' AND ctid < '(hi,0)'`), handed to
//! `snapshot_parallelism` readers, so one large table is read by several connections at once at
//! the cost of a sequential scan (no index, no sort). Older servers and partitioned tables are
//! read in primary-key order in chunks of `snapshot_chunk_rows` by one reader per table. After
//! each finished chunk a [`SnapshotProgress::ChunkDone`] carries a [`SnapshotResume`] token
//! (consistent point, finished tables, finished block ranges or the last key per table).
//!
//! **Resumed (fuzzy) snapshot.** After a crash the exported snapshot is gone, so the remaining
//! chunks are read from a fresh snapshot `S'` taken later than `C` (one snapshot, exported
//! for all readers, so a row moving between two unread chunks is seen exactly once). That
//! read may already contain changes committed after `C`. Streaming still starts at `C` (the
//! slot never confirmed past it, as nothing after `C` was acknowledged), so every change after
//! `C` is replayed in commit order on top of the snapshot rows. Replaying an insert of a row
//! already present, an update to the state it already has, or a delete of a row already gone
//! leaves the same final state when the host applies inserts as upserts and deletes
//! idempotently; once the replay passes the time of `S'`, source and host are identical. This
//! replay window is the only place where a host can see a change whose effect it already has.
//!
//! One case needs more than the replay: a row that an update moved, between `C` and `S'`, out
//! of an unread chunk into a finished one (a new heap block in a finished range, or a new key
//! at or below the last finished key). Neither read contains it, and the replayed update
//! cannot restore it alone: a TOASTed column the update left untouched is not in the WAL
//! (`Unchanged`). So a resumed table is also read again in its finished region, from `S'`,
//! restricted to the tuples created after the original snapshot: those whose `xmin` is not
//! older than the original snapshot's `xmin`, which the first run stored in the resume token
//! (compared modulo 2^32, as PostgreSQL does). Every such row is the current state at `S'`,
//! like the rest of the resumed read, so the replay argument holds for it; an old tuple taken
//! by mistake (a frozen one from more than 2^31 transactions ago) is only read again. The
//! new version of every moved row is such a tuple, so after the snapshot the host holds every
//! row of `S'`, and with the consumer rule for [`Value::Unchanged`]
//! the replayed key changes keep their values. Tables finished before the crash need nothing
//! (no unread region existed to move out of). A token without the stored `xmin` (from an older
//! version) re-reads the finished regions whole.
//!
//! **Unchanged values.** pgoutput does not send a TOASTed value an update left untouched
//! ([`Value::Unchanged`]). When the update's old image has it (`REPLICA IDENTITY FULL`: the
//! server sends the old tuple whole, detoasted; key columns of a key-only image), the
//! connector fills the new row from it, so `Unchanged` reaches the host only for values the
//! source sent nowhere.
//!
//! **Streaming.** Transactions reach the host in commit order, each whole between its `Begin`
//! and `Commit`; batches are bounded by `batch_events`. Every commit carries the transaction's
//! end LSN as its checkpoint; restarting from it makes the server skip exactly the
//! transactions committed before it. Keepalives carry the server's sent position between
//! transactions, so an idle or unpublished-only workload still advances the position the host
//! acknowledges.
//!
//! **In-progress transactions** (PostgreSQL 14+, `streaming=on`, the default). Without
//! streaming, the server decodes a transaction only after its commit (spilling large ones to
//! its own disk beyond `logical_decoding_work_mem`), so the time from commit to the last row
//! grows with the transaction. With it, the server sends a transaction that outgrows
//! `logical_decoding_work_mem` while it runs, in blocks that may interleave with other
//! transactions. The connector keeps those messages (all open transactions together at most
//! `streaming_memory_kb` in memory, beyond that the largest in a temporary file in
//! `spill_dir`, unlinked at creation so nothing outlives the stream or the process), drops
//! them at an abort (a rolled-back subtransaction's only its own), and at the commit replays
//! them through the same decoding as a transaction sent whole: the events are the same as
//! with `streaming=off`, and nothing is emitted before the commit. A crash or reconnect loses
//! nothing: the host may acknowledge positions past the start of a transaction still open
//! (keepalives and other commits), but the slot's `restart_lsn` stays at or before the start
//! of the oldest running transaction and the server skips only transactions that *committed*
//! before the confirmed position, so a new session streams the open transaction again from
//! its start (PostgreSQL's own subscriber confirms the same way). A rolled-back
//! subtransaction's records are cut from its first record on, as PostgreSQL's subscriber does.
//! If a spill file cannot be written or read, the stream continues without streaming
//! in-progress transactions (a warning says so). `spill_dir` defaults to the system temporary
//! directory, which on some systems is a RAM-backed tmpfs: point it at a disk when
//! transactions can be larger than memory. Parallel apply (`streaming = parallel`, 16+) is not
//! used.
//!
//! **Acknowledgement.** Standby status updates report as flushed only what the host
//! acknowledged ([`ChangeStream::ack`]). The slot therefore keeps all WAL after the last
//! acknowledged position, and a resume from any checkpoint at or after the slot's
//! `confirmed_flush_lsn` is exact. A checkpoint *older* than `confirmed_flush_lsn` cannot be
//! honoured (the server would silently start later): that, a missing slot or an invalidated
//! slot is [`ErrorKind::HistoryLost`](powersync_source_core::ErrorKind::HistoryLost).
//!
//! **Reconnects.** A dropped connection, a terminated walsender or a server restart is retried
//! with backoff inside the stream and resumed from the last emitted boundary. The retry budget
//! ([`StreamOptions::retry`](powersync_source_core::StreamOptions::retry)) is per outage: it
//! starts at the first failure and is reset by the first message after a reconnect, so a
//! stream that has run for days survives a restart exactly as a new one does. If it dropped in
//! the middle of a transaction, the stream emits [`ChangeEvent::Abort`] first, and the server
//! resends that transaction whole. A silent (half-open) connection is detected after
//! `silence_timeout`: half-way the connector asks the server for a reply, and gives up on the
//! connection if none comes.
//!
//! **Exactly what the publication publishes.** The snapshot reads the rows and columns the
//! stream will carry (`pg_publication_tables`): on PostgreSQL 15+ only the rows of the row
//! filter (`WHERE (<rowfilter>)` added to every chunk's predicate) and only the columns of
//! the column list; generated columns only where the server publishes them (18+, per
//! `publish_generated_columns` or a column list naming them; never before 18). Schema events
//! list the published columns only, as the stream's Relation messages do. A partitioned
//! table published through its root (`publish_via_partition_root`) is read as the root (in
//! key order: it has no heap blocks of its own); otherwise its partitions are the published
//! tables. Older servers have no filters or lists: every row and non-generated column.
//!
//! **Publication changes while streaming.** What the publication publishes of a table (row
//! filter, column list, partitions) is recorded when the table is read. A table published
//! differently is emptied (`Truncate`) and read again: as soon as its Relation message comes
//! back (the server resends it at the table's next change after `ALTER PUBLICATION … SET
//! TABLE`) if the catalog then differs; and, for changes that bring no message (a row filter
//! on a table with no write since, a partition detached from a root-published table), by a
//! comparison every
//! [`publication_check_interval`](PostgresOptions::publication_check_interval) between
//! transactions, acted on once the stream has passed the WAL position of the comparison.
//! A partition attached under `publish_via_partition_root = false` is a table joining the
//! publication (below); one detached from it stops being published, and the host keeps its
//! rows (as for a table dropped from the publication). Changes made while no stream runs
//! are not noticed by a resumed stream; start from the beginning after them. The comparison
//! at a Relation message uses the catalog of that moment: a stream far behind the server
//! that meets an unrelated Relation message before a publication change it has not reached
//! yet reads the table under the new publication early, and replayed changes from before
//! the change may then leave rows the new filter excludes (a restart from the beginning
//! clears them).
//!
//! **Tables that appear later.** A table added to the publication (or re-created) while the
//! stream runs is read, from the end of the transaction that first touched it (its first
//! Relation message), through a backfill (below) under a request id `added-…`: every other
//! table keeps streaming while it is read, and its own changes are reconciled with the read
//! chunk by chunk. A table added that nothing writes to is found by the periodic publication
//! comparison (`publication_check_interval`) and backfilled from there. On servers before 14 (no logical messages, so no watermarks) it is read
//! inline instead, inside that transaction, and the idempotent-replay argument applies.
//! A table published differently (see above) is emptied and read the same way when its
//! Relation message brings the change; the periodic comparison still reads it inline, in a
//! transaction of its own. A table added while no stream runs (or after the checkpoint a stream
//! resumes from) is backfilled when the stream resumes: a checkpoint names no tables, so the
//! stream asks the catalog which published tables may have joined since the slot's restart
//! point (their publication entry or row type written by a transaction no older than the
//! slot's `catalog_xmin`); one that joined a little before the checkpoint may be read again,
//! which costs a read, never a miss.
//!
//! **Backfills** (PostgreSQL 14+; see [`powersync_source_core::backfill`] for the method and
//! the events). A table is read again while streaming when a row is inserted into
//! `public._powersync_signals` (`id`, `kind` = `'backfill'`, `tables` = comma-separated
//! `schema.table`; `setup` creates and publishes it, `check()` warns when it is missing), or
//! through [`ChangeStream::request_backfill`](powersync_source_core::ChangeStream::request_backfill)
//! (which inserts such a row). The signal table's rows are read whatever the stream's table
//! selection and never reach the host. Watermarks are transactional logical messages
//! (`pg_logical_emit_message(true, 'powersync_backfill', …)`) written on a connection of the
//! backfill's own; each chunk is one publication-exact keyed `COPY` like the snapshot's
//! (row filter, column list, generated columns, partition root), so its rows are normalized
//! as the snapshot's and its schema event is the stream's. A table needs a key to be
//! backfilled (primary key or replica identity index; `REPLICA IDENTITY NOTHING` is refused).
//! The cursor rides on the checkpoints, so a stream restarted from a stored checkpoint goes on
//! after the last stored chunk.
//!
//! [`SnapshotProgress::ChunkDone`]: powersync_source_core::SnapshotProgress::ChunkDone
//! [`SnapshotResume`]: powersync_source_core::SnapshotResume
//! [`ChangeStream::ack`]: powersync_source_core::ChangeStream::ack
//! [`ChangeEvent::Abort`]: powersync_source_core::ChangeEvent::Abort
//! [`Value::Unchanged`]: powersync_source_core::Value::Unchanged

mod backfill;
mod catalog;
mod check;
pub mod config;
mod connection;
mod cursor;
mod options;
pub mod pgoutput;
#[cfg(feature = "provision")]
pub mod provision;
mod replicator;
mod slot;
mod snapshot_reader;
mod source;
pub mod types;

pub use config::PgConfig;
pub use config::{PostgresConfig, SslMode};
pub use options::PostgresOptions;
pub use source::PostgresSource;
/// The `tokio-postgres` this crate uses, for the client [`connect_sql`] returns.
pub use tokio_postgres;

pub(crate) use connection::sql_error;

/// An ordinary SQL connection with the same settings as the connector's own (TLS per
/// `sslmode`, authentication, connect timeout, application name), for administrative tools
/// built on this crate (e.g. a setup command). The connection task runs on the current tokio
/// runtime.
pub async fn connect_sql(
    config: &PostgresConfig,
) -> Result<tokio_postgres::Client, powersync_source_core::SourceError> {
    connection::sql::connect(config).await
}
