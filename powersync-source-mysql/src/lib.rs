//! MySQL and MariaDB connector for powersync-source: the row-based binlog with GTIDs.
//!
//! ```no_run
//! # async fn run() -> Result<(), powersync_source_core::SourceError> {
//! use powersync_source_core::{ChangeSource, StartFrom, StreamOptions, TableName};
//! use powersync_source_mysql::{MySqlConfig, MySqlSource};
//!
//! let config = MySqlConfig::parse("mariadb://replicator:secret@db:3306/app?server_id=4242")?;
//! let source = MySqlSource::new(config).with_stream_options(
//!     StreamOptions::default().with_tables(vec![TableName::new("", "orders")]),
//! );
//! source.check().await?.into_result()?; // every missing prerequisite, each with its fix
//! // start() runs the same check and fails with a `Prerequisite` error if the server is not ready.
//! let stream = source.start(StartFrom::Beginning).await?;
//! # Ok(()) }
//! ```
//!
//! # Several databases
//! One source may read tables of several databases (schemas): `database.table` names
//! (`TableName::new("billing", "invoices")`), or whole databases with
//! `mysql://host/?databases=shop,billing`. The server writes one binlog for all of them, so
//! one stream, one snapshot transaction and one checkpoint cover them, and a transaction that
//! spans databases arrives as one `Begin`/`Commit`. The checkpoint table lives in one database
//! (`checkpoint_table=db.table`, else the URL's, else the first of `databases=`, else the
//! database of the first named table).
//! [`check`](powersync_source_core::ChangeSource::check) asks for SELECT on every database read
//! and reports binlog filters (`binlog-do-db`, `binlog-ignore-db`) that hide any of them.
//!
//! # Consistency model
//!
//! **Exact first snapshot.** `start(Beginning)` opens one `START TRANSACTION WITH CONSISTENT
//! SNAPSHOT` transaction before it returns and learns the binlog position `P` that transaction
//! sees. On MariaDB the server reports it atomically with the read view
//! (`Binlog_snapshot_file` / `Binlog_snapshot_position`, turned into a GTID position with
//! `BINLOG_GTID_POS`); on MySQL a `FLUSH TABLES WITH READ LOCK` held for the few milliseconds
//! between the transaction start and `SHOW MASTER STATUS` (file, offset, `Executed_Gtid_Set`)
//! makes them one instant. Every transaction committed before `P` is in the snapshot, every one
//! after `P` is in the binlog after `P`, and streaming starts at `P`: nothing is missed or seen
//! twice. The snapshot is read in primary-key order in chunks of `chunk_rows` by that one
//! transaction (a MySQL/MariaDB read view cannot be shared by several connections, so there is
//! one reader); tables without a primary key are read in one pass. That reader's connection
//! is the crate's own minimal protocol client (binary result sets decoded from the socket
//! buffer straight into values; TLS and authentication as on the driver's connections), the
//! rest goes through mysql_async: the snapshot is where the connector spends most of its CPU.
//!
//! **Resumed (fuzzy) snapshot.** Each finished chunk emits a
//! [`SnapshotProgress::ChunkDone`](powersync_source_core::SnapshotProgress::ChunkDone) with a
//! [`SnapshotResume`](powersync_source_core::SnapshotResume) holding `P` and the last key per
//! table. Resuming opens a new snapshot at a later point `P'`, reads only the remaining key
//! ranges, and then streams from the original `P`. Changes between `P` and `P'` may already be
//! in the rows read at `P'`; they are replayed from the binlog in commit order with *full* row
//! images (`binlog_row_image=FULL`), so a host that applies inserts as upserts and deletes
//! idempotently converges once the stream passes `P'`.
//!
//! **Streaming and positions.** Events pass through in binlog (commit) order; a transaction
//! is framed by `Begin`/`Commit` only when it touches a selected table, and only committed
//! transactions are in the binlog. Every commit's checkpoint is the end offset of its last
//! event plus the GTID state *including* that transaction (MariaDB: the `domain-server-seq`
//! position; MySQL: the executed GTID set). Resuming uses the GTID state (MariaDB:
//! `@slave_connect_state` and a dump from an empty file name; MySQL: `COM_BINLOG_DUMP_GTID`),
//! so the server sends exactly the transactions after it, also on another server after a
//! failover; the file/offset orders checkpoints and is used only when the server has no GTIDs.
//! Transactions of unselected tables and heartbeats on an idle server (period `heartbeat`)
//! produce keepalives that advance the position.
//!
//! **Reconnects.** A dropped, killed or silent (no event or heartbeat for `silence_timeout`)
//! binlog connection is reopened with backoff from the last emitted boundary. The retry budget
//! ([`RetryPolicy`](powersync_source_core::RetryPolicy)) is per outage: the first event read
//! after a reconnect resets it, so a stream healthy for days survives a server restart like a
//! new one. If it dropped
//! inside a transaction the stream emits
//! [`ChangeEvent::Abort`](powersync_source_core::ChangeEvent::Abort) and the server resends
//! the transaction from its GTID.
//!
//! **History.** MySQL/MariaDB keep binlogs by age (`binlog_expire_logs_seconds`), not by
//! what a client acknowledged: acknowledgements are used for the byte lag only. A resume whose
//! GTID state or file the server no longer has (purged) is
//! [`ErrorKind::HistoryLost`](powersync_source_core::ErrorKind::HistoryLost).
//!
//! **DDL.** Query events are classified: `TRUNCATE` emits a truncate; `DROP TABLE` of a
//! selected table emits a truncate and leaves the scope; `ALTER` re-reads the table's columns
//! and emits a schema event; a table that enters the scope (`CREATE TABLE`, also `… SELECT`,
//! or `RENAME` into a selected database) gets a schema event and its rows are read by a
//! backfill (see Backfills below) while every other table keeps streaming. The schema is read from
//! `information_schema` when the DDL is seen, i.e. *now*, not as of the event: a table altered
//! twice while the stream lags behind is decoded with its latest shape, and a column-count
//! mismatch with the table map is a [`Schema`](powersync_source_core::ErrorKind::Schema) error.
//!
//! **Write checkpoints.** [`ChangeSource::write_checkpoint`](powersync_source_core::ChangeSource::write_checkpoint)
//! writes the binlog head into row 1 of a small table (`_powersync_checkpoints`); the stream
//! reports the row event as `CheckpointObserved`, within one heartbeat on an idle server.
//!
//! # Backfills
//!
//! A running stream re-reads chosen tables while every table keeps streaming
//! ([`ChangeStream::request_backfill`](powersync_source_core::ChangeStream::request_backfill),
//! or a row inserted into `_powersync_signals`: `id`, `kind` = `'backfill'`, `tables` =
//! comma-separated `database.table` names, a name without a database being in the URL's);
//! the method, events and resume rules are the core's
//! ([`powersync_source_core::backfill`]). Here:
//! - **Watermarks** are updates of row 2 of the checkpoint table whose `checkpoint` column
//!   holds `backfill:` and the watermark, each in its own transaction; the stream hands them
//!   to the backfill machinery where it passes them (never as rows or `CheckpointObserved`),
//!   and every transaction that held one ends with a keepalive. Older versions of this crate
//!   ignore such rows (they are not checkpoints).
//! - **Signals**: `_powersync_signals` lives next to the checkpoint table (same database).
//!   Its row events are decoded whatever the table selection says; only inserts count, and
//!   neither it nor the checkpoint table is ever a replicated table. `setup` creates it;
//!   [`check`](powersync_source_core::ChangeSource::check) warns when it is missing; a host's
//!   request creates it when the user may.
//! - **Chunks** are read on an ordinary SQL connection of the stream's own, one autocommit
//!   `SELECT … WHERE key > after ORDER BY key LIMIT n` per chunk (a statement's read view
//!   starts after the low watermark committed), with the snapshot's statements, key encoding
//!   (JSON of the wire values, so they bind back exactly) and value conversion; the chunk's
//!   schema comes from the same catalog read as the stream's `Schema` events (a chunk read
//!   before an `ALTER` the stream passes before the chunk goes out carries the older shape:
//!   the stream then sends the table's current schema again right after the chunk, so the
//!   last schema a host sees is always the stream's). Tables without
//!   a primary key, and tables outside the stream's selection, cannot be backfilled
//!   (`BackfillFailed`).
//! - A backfill resumed from a checkpoint continues at the stream's first boundary (a
//!   commit, or a heartbeat keepalive on an idle server).
//!
//! # Known limits
//!
//! - One snapshot reader: a consistent read view cannot be shared between connections, so a
//!   large table is read by one connection in key order (`chunk_rows` per query).
//! - MySQL's exact snapshot start needs `FLUSH TABLES WITH READ LOCK` (RELOAD privilege);
//!   services that forbid it (some managed MySQL offerings) fail the snapshot with a
//!   `Prerequisite` error; resuming from a checkpoint does not need it.
//! - Schemas are read from `information_schema` when a DDL event is seen (see DDL above).
//! - Event framing uses `mysql_common`. Row images are framed by this crate, which checks the
//!   table map metadata before any value decoder indexes into it; the common column types are
//!   read straight from the event bytes by this crate, the rest by `mysql_common`'s decoder
//!   (unit tests check that the two agree). Compressed MySQL transactions are decompressed
//!   and checked here before their events are used. A malformed event that still makes the
//!   driver panic ends the stream with an
//!   [`Internal`](powersync_source_core::ErrorKind::Internal) error (the core runtime catches
//!   the stream task's panic and reports it), never silently; the driver sizes its buffer for
//!   a compressed transaction from the event header before this crate sees it.
//!
//! # Values
//!
//! Values follow the core's SQLite model and are identical whether the snapshot or the binlog
//! delivered them (the golden type test in `tests/types.rs` checks every row of this table on
//! both paths):
//!
//! | MySQL type | value |
//! |---|---|
//! | TINYINT…BIGINT (signed/unsigned) | `Integer`; BIGINT UNSIGNED above i64::MAX → `Text` base 10 |
//! | DECIMAL/NUMERIC | `Text`, exact, scale kept |
//! | FLOAT / DOUBLE | `Real` |
//! | BIT(n) | `Integer` (the bits as an unsigned number; above i64::MAX → `Text`) |
//! | YEAR | `Integer` (`0000` → 0) |
//! | DATE | `Text` `YYYY-MM-DD` |
//! | TIME(p) | `Text` `[-]HH:MM:SS[.p digits]` (hours up to 838) |
//! | DATETIME(p) | `Text` `YYYY-MM-DDTHH:MM:SS[.p digits]` |
//! | TIMESTAMP(p) | `Text` UTC `YYYY-MM-DDTHH:MM:SS[.p digits]Z` |
//! | zero dates (`0000-00-00`, `0000-00-00 00:00:00`) and dates with a zero month or day | `Null` |
//! | CHAR/VARCHAR/TEXT (any charset) | `Text` (UTF-8) |
//! | BINARY(n) | `Blob` of n bytes (zero padded, as stored) |
//! | VARBINARY/BLOB | `Blob` |
//! | ENUM | `Text` (the member; the invalid-value index 0 → `""`) |
//! | SET | `Text`, JSON array of members in definition order, `[]` when empty |
//! | JSON | `Text`: MariaDB as stored; MySQL in the server's own text rendering (binary JSON from the binlog is rendered the same way) |
//! | spatial | `Text`, GeoJSON |
//! | anything else | `Text` as the server renders it |

mod backfill_reader;
mod binlog_replay;
mod binlog_values;
mod catalog;
mod charset;
mod check;
mod chunk_query;
mod client;
mod config;
mod connection;
mod ddl;
mod decimal_binary;
mod gtid;
mod json_binary;
mod mariadb_events;
mod markers;
mod payload;
#[cfg(feature = "provision")]
pub mod provision;
mod replicator;
mod result_rows;
mod retention;
mod row_image;
mod server;
mod snapshot;
mod source;
mod values;

pub use config::{MySqlConfig, SslMode};
/// The driver this crate uses, for the connection [`connect_sql`] returns.
pub use mysql_async;

/// An ordinary SQL connection with the connector's own settings (TLS per `ssl-mode`, the URL's
/// database, a UTC / utf8mb4 session, the connect timeout), for administrative tools built on
/// this crate (e.g. a setup command). Errors are mapped like the connector's (`Auth`,
/// `Connection`, …).
pub async fn connect_sql(
    config: &MySqlConfig,
) -> Result<mysql_async::Conn, powersync_source_core::SourceError> {
    connection::connect(config).await
}
/// The core crate.
pub use powersync_source_core as core;
pub use source::MySqlSource;

/// Decoders of untrusted bytes, exposed for fuzzing and property tests (not a stable API).
#[doc(hidden)]
pub mod decoders {
    /// MariaDB GTID event payload.
    pub fn mariadb_gtid(b: &[u8]) -> Result<(u64, u32, u8), String> {
        crate::mariadb_events::gtid(b).map(|g| (g.seq, g.domain, g.flags))
    }
    /// MariaDB GTID list payload.
    pub fn mariadb_gtid_list(b: &[u8]) -> Result<Vec<(u32, u32, u64)>, String> {
        crate::mariadb_events::gtid_list(b)
    }
    /// MariaDB binlog checkpoint payload.
    pub fn mariadb_binlog_checkpoint(b: &[u8]) -> Result<String, String> {
        crate::mariadb_events::binlog_checkpoint(b)
    }
    /// MariaDB annotate rows payload.
    pub fn mariadb_annotate_rows(b: &[u8]) -> String {
        crate::mariadb_events::annotate_rows(b)
    }
    /// MySQL binary JSON → text.
    pub fn mysql_binary_json(b: &[u8]) -> Result<String, String> {
        crate::json_binary::to_text(b)
    }
    /// Events inside a decompressed transaction payload.
    pub fn transaction_payload_events(b: &[u8]) -> Result<usize, String> {
        crate::payload::inner_events(b)
    }
    /// A column charset conversion.
    pub fn charset(name: &str, b: &[u8]) -> Result<String, String> {
        crate::charset::Charset::from_name(name).decode(b)
    }
    /// MariaDB GTID position text.
    pub fn mariadb_gtid_pos(s: &str) -> Result<String, String> {
        crate::gtid::MariaPos::parse(s).map(|p| p.to_string())
    }
    /// MySQL GTID set text.
    pub fn mysql_gtid_set(s: &str) -> Result<String, String> {
        crate::gtid::MySqlGtidSet::parse(s).map(|p| p.to_string())
    }
    /// DDL classification (never fails).
    pub fn ddl(s: &str) -> String {
        format!("{:?}", crate::ddl::classify(s))
    }
    /// Row images of a rows event over a fixed mixed-type table (BIGINT, VARCHAR(100) utf8mb4,
    /// DECIMAL(10,2), DATETIME(6), BLOB, JSON, ENUM, TIMESTAMP(3)) with every column present.
    pub fn row_images(data: &[u8], update: bool) -> Result<usize, String> {
        use crate::catalog::{ColumnInfo, Kind, TableInfo};
        use crate::row_image::ColumnFormat;
        use mysql_common::constants::ColumnType as T;
        use std::sync::Arc;
        let cols = [
            (
                T::MYSQL_TYPE_LONGLONG,
                vec![],
                Kind::Int {
                    unsigned: false,
                    bits: 64,
                },
            ),
            (
                T::MYSQL_TYPE_VARCHAR,
                vec![144, 1],
                Kind::Text {
                    charset: crate::charset::Charset::Utf8,
                },
            ),
            (T::MYSQL_TYPE_NEWDECIMAL, vec![10, 2], Kind::Decimal),
            (T::MYSQL_TYPE_DATETIME2, vec![6], Kind::DateTime { frac: 6 }),
            (T::MYSQL_TYPE_BLOB, vec![2], Kind::Binary),
            (T::MYSQL_TYPE_JSON, vec![4], Kind::Json),
            (
                T::MYSQL_TYPE_ENUM,
                vec![247, 1],
                Kind::Enum(Arc::from(vec!["a".to_owned()])),
            ),
            (
                T::MYSQL_TYPE_TIMESTAMP2,
                vec![3],
                Kind::Timestamp { frac: 3 },
            ),
        ];
        let formats: Vec<ColumnFormat> = cols
            .iter()
            .map(|(t, m, _)| ColumnFormat::new(*t, m))
            .collect::<Result<_, _>>()?;
        let infos: Vec<ColumnInfo> = cols
            .iter()
            .enumerate()
            .map(|(i, (_, _, k))| ColumnInfo {
                name: format!("c{i}"),
                kind: k.clone(),
            })
            .collect();
        let table = TableInfo {
            schema: Arc::new(powersync_source_core::TableSchema {
                name: powersync_source_core::TableName::new("db", "t"),
                source_id: None,
                columns: infos
                    .iter()
                    .map(|c| powersync_source_core::Column::new(c.name.clone(), "x"))
                    .collect(),
                identity: powersync_source_core::RowIdentity::Full,
            }),
            columns: infos.into(),
            key: Vec::new(),
        };
        let all = vec![true; cols.len()];
        crate::row_image::decode(
            data,
            &formats,
            update.then_some(&all[..]),
            Some(&all[..]),
            &table,
        )
        .map(|rows| rows.len())
        .map_err(|e| e.to_string())
    }
    pub use crate::binlog_replay::{BinlogRows, ColumnSpec};
    /// Snapshot resume key.
    pub fn snapshot_key(s: &str) -> Result<usize, String> {
        crate::chunk_query::decode_key(s)
            .map(|k| k.len())
            .map_err(|e| e.to_string())
    }
}
