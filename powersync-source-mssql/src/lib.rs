//! SQL Server connector for powersync-source: CDC change-table polling with exact LSN
//! ordering, for SQL Server 2019+ and Azure SQL Database / Managed Instance.
//!
//! # Consistency: why a resumed stream neither loses nor repeats
//!
//! SQL Server's capture job copies every committed change of a CDC-enabled table from the
//! transaction log into that table's change table, tagged with the transaction's commit LSN
//! (`__$start_lsn`) and the change's place in the transaction (`__$seqval`), and records each
//! transaction in `cdc.lsn_time_mapping`. Commit LSNs are totally ordered, so the union of all
//! change tables ordered by (`__$start_lsn`, `__$seqval`, `__$operation`) is the database's
//! commit order restricted to the captured tables. The stream reads exactly that union, window
//! by window, and emits one transaction per commit LSN.
//!
//! A position is "every transaction with commit LSN ≤ L has been emitted". A commit event
//! carries L = its own commit LSN; a keepalive carries the upper bound of the window it
//! closed. The next window starts at `sys.fn_cdc_increment_lsn(L)`: the CDC functions take
//! inclusive bounds, so starting at L + 1 reads nothing twice, and since every change with a
//! commit LSN above L is still in the change tables (the retention check below makes sure) and
//! the capture job only appends changes with LSNs above the current `sys.fn_cdc_get_max_lsn()`
//! (it records whole transactions, in commit order), nothing is skipped either. Resuming from
//! a checkpoint is the same step: a checkpoint is L plus the capture instance of each table.
//!
//! **Retention.** The cleanup job deletes change rows older than its retention (3 days by
//! default) and moves `sys.fn_cdc_get_min_lsn(instance)` forward. If that is above where the
//! stream must continue, changes were purged unread: the stream fails with
//! [`ErrorKind::HistoryLost`](powersync_source_core::ErrorKind::HistoryLost) and the host
//! must resnapshot. It never skips silently.
//!
//! **Snapshot.** The initial snapshot is exact. A second connection opens a transaction, takes
//! a shared table lock on every replicated table (`WITH (TABLOCK, HOLDLOCK)`; writers already
//! running finish first, new ones wait) and inserts a marker row into
//! `dbo._powersync_checkpoints`. While those locks are held, the snapshot connection starts a
//! `SNAPSHOT` isolation transaction and reads once, which fixes its version; then the locking
//! transaction commits at LSN M. Every transaction that wrote a replicated table committed
//! either before the locks (below M, and visible to the snapshot) or after the commit (above M,
//! and invisible to it): none can commit in between. M is read from the change table once the
//! capture job has recorded the marker, and streaming starts after M. The tables are then read
//! in primary-key chunks inside that one transaction. Writers wait only for the few round trips
//! of the lock window, not for the snapshot.
//!
//! A snapshot interrupted by a crash resumes from its last finished chunk
//! ([`SnapshotResume`](powersync_source_core::SnapshotResume)) in a new snapshot transaction,
//! still streaming from M: rows read later may already contain changes above M, which the
//! stream then replays. Each replayed change brings its row to the same state as when it was
//! committed, and the last change of each key wins, so the replica converges (hosts upsert
//! snapshot rows). A reconnect in the middle of a snapshot does the same.
//!
//! **Transactions.** All changes of one commit LSN are emitted between one begin and one
//! commit, including a transaction that touched several tables (their rows interleave by
//! `__$seqval`). Update-before and update-after images (operations 3 and 4, captured with
//! `N'all update old'`) are paired into one update event with the full old row. Memory is
//! bounded: change tables are read in pages of `page_rows` and merged, so a million-row
//! transaction streams through in batches.
//!
//! **Capture instances.** A table has at most two capture instances. After a schema change
//! the DBA creates a second instance with the new column list; the stream keeps reading the
//! old one below the new one's `start_lsn` and switches there, sending the new schema before
//! the first row that has it. Checkpoints record each table's instance, so a resumed stream
//! continues on the right one. The old instance may be dropped once the stream passed the new
//! one's start. A table that is dropped, or an instance dropped before the stream read all of
//! its changes, ends the stream with [`ErrorKind::Schema`](powersync_source_core::ErrorKind::Schema).
//! Tables created or CDC-enabled after the stream started are not picked up until it restarts.
//!
//! **Write checkpoints.** [`ChangeSource::write_checkpoint`](powersync_source_core::ChangeSource::write_checkpoint)
//! inserts a row into `dbo._powersync_checkpoints`, waits until the capture job has recorded it
//! (bounded: 60 s by default, see [`MssqlSource::with_marker_timeout`]) and returns the position
//! after that row's transaction. A running stream reports it with
//! [`ChangeEvent::CheckpointObserved`](powersync_source_core::ChangeEvent::CheckpointObserved)
//! when it passes the row; checkpoint rows are never emitted as row changes.
//!
//! **What CDC does not record.** Real change tables leave some values out, and the stream
//! says so instead of inventing NULLs:
//! - an update that does not change a `varchar(max)`, `nvarchar(max)`, `varbinary(max)`,
//!   `xml`, `text`, `ntext` or `image` column may leave it NULL in both images (Microsoft's
//!   `cdc.fn_cdc_get_all_changes` page; Debezium PR 7452 and PR 8078): a NULL whose
//!   `__$update_mask` bit is clear is emitted as
//!   [`Value::Unchanged`](powersync_source_core::Value::Unchanged) (the host keeps the value
//!   it has); `text`/`ntext`/`image` have no before image and no value in delete rows either;
//! - computed columns are always NULL in change tables, so they are left out of the schema,
//!   the snapshot and the stream (compute them on the replica if needed);
//! - a column dropped or renamed without a new capture instance stays in the schema as NULL
//!   (snapshot and stream), until a new instance with the new column list takes over;
//! - a primary-key update arrives as a delete and an insert.
//!
//! Non-Unicode strings (`char`, `varchar`, `text`) are converted to `nvarchar` by the server
//! (also under `_UTF8` collations and code pages the TDS client does not know), and snapshot
//! chunks compare `varchar` keys under the column's own collation, the order of the primary
//! key index.
//!
//! **Acknowledgements.** CDC retention is time based, so acknowledgements release nothing on
//! the server; they are accepted for the common contract.
//!
//! # Latency
//!
//! A change reaches the stream after the capture job has scanned the log (its
//! `pollinginterval`: 5 s by default, 1 s recommended, about 20 s on Azure SQL Database where
//! the service schedules it) plus at most one `polling_interval_ms` of this connector. The
//! stream's lag ([`StreamStats`](powersync_source_core::StreamStats)) is measured from each
//! transaction's `tran_end_time` in `cdc.lsn_time_mapping`, so it includes the capture delay.
//!
//! # Setting up the database
//!
//! Run as a member of `sysadmin` (SQL Server) or as the database owner (Azure SQL Database),
//! in the replicated database:
//!
//! ```sql
//! -- 1. CDC on the database, and snapshot isolation for the initial snapshot.
//! EXEC sys.sp_cdc_enable_db;
//! ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON;
//!
//! -- 2. CDC on every replicated table (each needs a primary key).
//! EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'orders',
//!      @role_name = NULL, @supports_net_changes = 0;
//!
//! -- 3. The checkpoint table, with CDC (this shape is what `setup` creates).
//! CREATE TABLE dbo._powersync_checkpoints (
//!     id bigint IDENTITY PRIMARY KEY,
//!     token varchar(64) NOT NULL,
//!     created_at datetime2 NOT NULL DEFAULT SYSUTCDATETIME());
//! EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'_powersync_checkpoints',
//!      @role_name = NULL, @supports_net_changes = 0;
//!
//! -- 4. The replication user. SQL Server: a login in master, then a user in the database.
//! --    Azure SQL Database: a contained user instead (CREATE USER powersync WITH PASSWORD = '…').
//! CREATE LOGIN powersync WITH PASSWORD = '<password>';            -- in master (SQL Server)
//! CREATE USER powersync FOR LOGIN powersync;                       -- in the database
//! CREATE ROLE cdc_reader;
//! GRANT SELECT ON SCHEMA::cdc TO cdc_reader;                       -- change tables and functions
//! ALTER ROLE cdc_reader ADD MEMBER powersync;
//! GRANT SELECT ON dbo.orders TO powersync;                         -- each replicated table
//! GRANT SELECT, INSERT, DELETE ON dbo._powersync_checkpoints TO powersync;
//! GRANT VIEW DATABASE PERFORMANCE STATE TO powersync;              -- VIEW DATABASE STATE before 2022
//! -- SQL Server only (not on Azure SQL Database), in master:
//! GRANT VIEW SERVER PERFORMANCE STATE TO powersync;                -- VIEW SERVER STATE before 2022
//! -- SQL Server only, to let check() see the capture job in msdb:
//! USE msdb; CREATE USER powersync FOR LOGIN powersync; ALTER ROLE SQLAgentReaderRole ADD MEMBER powersync;
//!
//! -- 5. The capture job (SQL Server; SQL Server Agent must run; the first sp_cdc_enable_table
//! --    created it). Recommended settings, applied at its next start:
//! EXEC sys.sp_cdc_change_job @job_type = N'capture', @pollinginterval = 1, @maxtrans = 5000, @maxscans = 10;
//! EXEC sys.sp_cdc_stop_job @job_type = N'capture';   -- returns before the job stopped
//! -- (wait until it has stopped, then)
//! EXEC sys.sp_cdc_start_job @job_type = N'capture';
//! ```
//!
//! `VIEW SERVER PERFORMANCE STATE` and msdb access are optional (`check()` only warns or
//! reports the job as unknown without them). A database published for transactional
//! replication needs no capture job: the log reader captures.
//!
//! **A database prepared for the PowerSync service works as it is.** Its checkpoint table,
//! `_powersync_checkpoints (id INT IDENTITY PRIMARY KEY, last_updated DATETIME)`, is detected
//! and used (a marker row is found by the `id` its insert returns; the service's own row is
//! never deleted). If its capture instances have a gating role (`@role_name = N'cdc_reader'`),
//! the replication user must be a member (`ALTER ROLE cdc_reader ADD MEMBER powersync`):
//! SQL Server hides gated changes from others, and `check()` says so.
//!
//! On Azure SQL Database there is no SQL Server Agent: the service runs capture and cleanup
//! itself, so step 5 does not apply. After a schema change of a replicated table, create a
//! second capture instance with `sp_cdc_enable_table … @capture_instance = N'dbo_orders_v2'`
//! and drop the first one (`sp_cdc_disable_table … @capture_instance = N'dbo_orders'`) once
//! every stream has passed the new one's start (a stream reports its LSN in every checkpoint).
//! `TRUNCATE TABLE` is refused by SQL Server on CDC tables; use `DELETE`.
//!
//! [`MssqlSource::check`](powersync_source_core::ChangeSource::check) reports every missing
//! piece above with the statement that fixes it.
//!
//! # Opening a source
//!
//! ```no_run
//! # fn main() -> Result<(), powersync_source_core::SourceError> {
//! use powersync_source_core::{StreamOptions, TableName};
//! use powersync_source_mssql::{MssqlConfig, MssqlSource};
//!
//! let config = MssqlConfig::parse(
//!     "sqlserver://powersync:secret@db.example:1433/shop?encrypt=true&polling_interval_ms=1000&polling_batch_size=10",
//! )?;
//! let source = MssqlSource::new(config).with_stream_options(
//!     StreamOptions::default().with_tables(vec![TableName::new("dbo", "orders")]),
//! );
//! # let _ = source; Ok(()) }
//! ```
//!
//! # Testing
//!
//! Every SQL call goes through one thin seam, a `CdcBackend` trait with one method per query.
//! Everything above it (polling, windows, retention, merge, pairing, instance switches,
//! checkpoints, snapshot, checks) runs in the tests against an in-memory model of SQL Server
//! CDC, plugged in through the `testing` feature (`testing::CdcBackend`,
//! `MssqlSource::with_connector`). The tiberius backend runs in unit tests against a scripted
//! TDS responder (hand-built token streams per MS-TDS behind the real client), and with the
//! real capture job against a server named by `MSSQL_TEST_URL`.
//!
//! # Backfills
//! Not supported yet: `ChangeStream::request_backfill` answers `ErrorKind::Unsupported` and rows
//! inserted into a `_powersync_signals` table are streamed as ordinary rows. Re-read a table
//! with a new snapshot (`StartFrom::Beginning`). CDC's change tables would serve as the
//! watermark log (a watermark row in a CDC-enabled table) when this is added.

mod backend;
mod check;
mod checkpoint;
mod config;
mod poller;
#[cfg(feature = "provision")]
pub mod provision;
mod snapshot;
mod source;
mod spatial;
mod tables;
mod tds;
#[cfg(feature = "testing")]
pub mod testing;
mod values;

pub use config::{Encrypt, MssqlConfig, DEFAULT_PORT};
/// The core crate this connector implements.
pub use powersync_source_core as core;
pub use source::MssqlSource;
