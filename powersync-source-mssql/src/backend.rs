//! The server-facing seam: every SQL call the connector makes, as one trait.
//!
//! [`CdcBackend`] is deliberately thin: each method is one query (or one fixed sequence of
//! statements, for the snapshot start) with no decisions in it. Everything that decides —
//! window capping, retention checks, the merge of change tables, update pairing, transaction
//! framing, capture-instance switches, checkpoints, snapshot chunking, the prerequisite rules —
//! lives above it in this crate and runs the same against SQL Server
//! ([`crate::tds::TdsConnector`]) and against the in-memory CDC model of the tests.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use powersync_source_core::position::MssqlLsn;
use powersync_source_core::{Result, SourceError, TableName, UnixMicros, Value};

/// The table `write_checkpoint` inserts into (schema `dbo`); it must have CDC enabled.
pub const CHECKPOINT_TABLE: &str = "_powersync_checkpoints";

/// The schema of [`CHECKPOINT_TABLE`].
pub const CHECKPOINT_SCHEMA: &str = "dbo";

/// The checkpoint table's qualified name.
pub fn checkpoint_table() -> TableName {
    TableName::new(CHECKPOINT_SCHEMA, CHECKPOINT_TABLE)
}

/// The shape of `dbo._powersync_checkpoints`: the connector works with either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointShape {
    /// This crate's (what `setup` creates): `(id bigint IDENTITY PRIMARY KEY, token
    /// varchar(64) NOT NULL, created_at datetime2 NOT NULL DEFAULT SYSUTCDATETIME())`. A marker
    /// row is found by its random token.
    Token,
    /// The PowerSync service's (`module-mssql`, `ci/init-mssql.sql`): `(id INT IDENTITY
    /// PRIMARY KEY, last_updated DATETIME)`. A marker row is found by the id its insert
    /// returned.
    Service,
}

impl CheckpointShape {
    /// The shape of the table a capture instance of it captures (`None`: neither shape).
    pub fn of(instance: &CaptureInstance) -> Option<CheckpointShape> {
        let has = |n: &str| {
            instance
                .columns
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(n))
        };
        if has("token") && has("created_at") {
            Some(CheckpointShape::Token)
        } else if has("id") && has("last_updated") {
            Some(CheckpointShape::Service)
        } else {
            None
        }
    }
}

/// What identifies one marker row in the checkpoint table's change table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// The `token` column ([`CheckpointShape::Token`]).
    Token(String),
    /// The `id` the insert returned ([`CheckpointShape::Service`]).
    Id(i64),
}

/// Recommended capture job settings (seconds between scans, transactions per scan, scans per
/// cycle): what `check()` compares the job with, and what a backend reports for a job it cannot
/// inspect (so an unreadable job raises no false warning).
pub const RECOMMENDED_JOB: (i64, i64, i64) = (1, 5000, 10);

/// Runs one backend call, failing with a retryable [`ErrorKind::Connection`] error after `d`:
/// a query that never answers means a half-open connection, which only a reconnect cures.
///
/// [`ErrorKind::Connection`]: powersync_source_core::ErrorKind::Connection
pub(crate) async fn timed<T>(d: Duration, f: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r,
        Err(_) => Err(SourceError::connection(format!(
            "SQL Server did not answer within {d:?}; treating the connection as dead"
        ))),
    }
}

/// A SQL Server column type as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlType {
    /// Base type name, lower case (`int`, `datetime2`, `geography`, …).
    pub name: String,
    /// `sys.columns.max_length` in bytes (-1 for `max`).
    pub max_length: i32,
    /// Precision (decimal digits; for time types the total digits).
    pub precision: u8,
    /// Scale (decimal places; fraction digits of `time`, `datetime2`, `datetimeoffset`).
    pub scale: u8,
}

impl SqlType {
    /// A type with no length, precision or scale (`int`, `bit`, …).
    #[cfg(any(test, feature = "testing"))]
    pub fn simple(name: &str) -> SqlType {
        SqlType {
            name: name.to_ascii_lowercase(),
            max_length: 0,
            precision: 0,
            scale: 0,
        }
    }

    /// A type with a scale (`datetime2(3)`, `time(7)`).
    #[cfg(any(test, feature = "testing"))]
    pub fn scaled(name: &str, scale: u8) -> SqlType {
        SqlType {
            scale,
            ..SqlType::simple(name)
        }
    }

    /// `decimal(p,s)` / `numeric(p,s)`.
    #[cfg(any(test, feature = "testing"))]
    pub fn decimal(name: &str, precision: u8, scale: u8) -> SqlType {
        SqlType {
            precision,
            scale,
            ..SqlType::simple(name)
        }
    }

    /// The type as SQL Server spells it in DDL (`decimal(10,2)`, `nvarchar(max)`,
    /// `datetime2(7)`), kept in the schema even when the value becomes text.
    pub fn display(&self) -> String {
        let n = self.name.as_str();
        match n {
            "decimal" | "numeric" => format!("{n}({},{})", self.precision, self.scale),
            "datetime2" | "time" | "datetimeoffset" => format!("{n}({})", self.scale),
            "varchar" | "char" | "varbinary" | "binary" => match self.max_length {
                -1 => format!("{n}(max)"),
                l => format!("{n}({l})"),
            },
            "nvarchar" | "nchar" => match self.max_length {
                -1 => format!("{n}(max)"),
                l => format!("{n}({})", l / 2),
            },
            _ => n.to_string(),
        }
    }

    /// Whether the type is one of the legacy large-object types whose before-update image CDC
    /// does not record (`text`, `ntext`, `image`).
    pub fn is_legacy_lob(&self) -> bool {
        matches!(self.name.as_str(), "text" | "ntext" | "image")
    }

    /// Whether CDC may leave the column NULL in both images of an update that did not change
    /// it: the legacy large objects and the large-value types (`varchar(max)`,
    /// `nvarchar(max)`, `varbinary(max)`, `xml`). Microsoft's `cdc.fn_cdc_get_all_changes`
    /// page documents the NULLs; Debezium (PR 7452 for dbz#1164, PR 8078 on SQL Server 2022)
    /// saw them in the after image too.
    pub fn may_be_unsent(&self) -> bool {
        self.is_legacy_lob() || self.max_length == -1 || self.name == "xml"
    }
}

/// One column recorded by a capture instance (`cdc.captured_columns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedColumn {
    /// Column name.
    pub name: String,
    /// Its type.
    pub sql_type: SqlType,
    /// `column_ordinal` in the capture instance: the bit of `__$update_mask` for this column.
    pub ordinal: u32,
    /// Position in the source table's primary key (1-based), if part of it.
    pub key_ordinal: Option<u32>,
    /// Whether the source table's column accepts NULL (`sys.columns` of the source table: the
    /// change table's columns are all nullable, as Debezium's connector notes).
    pub nullable: bool,
    /// `cdc.captured_columns.is_computed`. CDC always records NULL for a computed column
    /// (Microsoft, `cdc.fn_cdc_get_all_changes_<instance>`: "Computed columns that are included
    /// in a capture instance always have a value of NULL"), so the connector replicates neither
    /// its changes nor its snapshot values (the columns are left out of the schema, as Estuary's
    /// `source-sqlserver` does).
    pub computed: bool,
    /// Whether the source table still has a column of this name. A column dropped or renamed
    /// after the instance was created stays captured as NULL ("If a tracked column is dropped,
    /// null values will be supplied", About Change Data Capture); the snapshot selects NULL for
    /// it because the table has no such column (error 207 otherwise).
    pub in_source: bool,
    /// The source column's collation (`sys.columns.collation_name`) for character columns:
    /// snapshot keys are compared under it.
    pub collation: Option<String>,
    /// A user CLR type (`sys.types.is_assembly_type`) other than `geometry`, `geography` and
    /// `hierarchyid`: selected as its serialized bytes, because tiberius cannot decode UDT
    /// metadata (it panics).
    pub clr_type: bool,
}

/// A capture instance (`cdc.change_tables`): the change table of one source table, with the
/// column list it was created with. A table has at most two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureInstance {
    /// The source table.
    pub table: TableName,
    /// Object id of the source table (`source_object_id`).
    pub source_object_id: i64,
    /// Capture instance name (`dbo_orders` by default).
    pub name: String,
    /// `start_lsn`: the instance's current low endpoint. Changes committed at or after it (until
    /// the instance is dropped) are in its change table; the cleanup job moves it forward, so
    /// two instances of a table can have equal start LSNs after a cleanup. A backend leaves out
    /// instances whose low endpoint is not established yet (`start_lsn` NULL,
    /// `cdc.change_tables`).
    pub start_lsn: MssqlLsn,
    /// `cdc.change_tables.create_date` as microseconds (server time; only compared): the newer
    /// of two instances with equal start LSNs is the later created (Debezium DBZ-4273,
    /// Materialize `80-deterministic-capture-instance-selection.td`).
    pub create_date: i64,
    /// `cdc.change_tables.role_name`: the gating role a user must be a member of to read the
    /// instance (`None`: no gating role). For other users `sys.fn_cdc_get_min_lsn` answers zeros
    /// and the change functions fail.
    pub role_name: Option<String>,
    /// Captured columns in `column_ordinal` order.
    pub columns: Vec<CapturedColumn>,
}

/// One row of `cdc.fn_cdc_get_all_changes_<instance>(…, N'all update old')`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    /// `__$start_lsn`: the commit LSN of the row's transaction.
    pub start_lsn: MssqlLsn,
    /// `__$seqval`: orders the row within its transaction.
    pub seqval: MssqlLsn,
    /// `__$operation`: 1 delete, 2 insert, 3 update (before image), 4 update (after image).
    pub operation: u8,
    /// `__$update_mask`: bit `column_ordinal - 1`, counted from the last byte.
    pub update_mask: Vec<u8>,
    /// The captured columns' values, in the instance's column order.
    pub values: Vec<Value>,
}

impl ChangeRow {
    /// The order key of change rows across tables of one window.
    pub fn order_key(&self) -> ChangeKey {
        ChangeKey {
            start_lsn: self.start_lsn,
            seqval: self.seqval,
            operation: self.operation,
        }
    }
}

/// (`__$start_lsn`, `__$seqval`, `__$operation`): the total order of change rows, and where a
/// paged read of one change table continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeKey {
    /// Commit LSN.
    pub start_lsn: MssqlLsn,
    /// Sequence value.
    pub seqval: MssqlLsn,
    /// Operation code.
    pub operation: u8,
}

/// A row of `cdc.lsn_time_mapping`: a committed transaction with changes to CDC tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsnTime {
    /// Commit LSN (`start_lsn`).
    pub lsn: MssqlLsn,
    /// Commit time (`tran_end_time`) converted to UTC.
    pub commit_time: Option<UnixMicros>,
}

/// What the server says about itself and the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `SERVERPROPERTY('ProductVersion')`, e.g. `16.0.4135.4`.
    pub product_version: String,
    /// `SERVERPROPERTY('EngineEdition')`: 5 Azure SQL Database, 8 Azure SQL Managed Instance.
    pub engine_edition: i32,
    /// `sys.databases.is_cdc_enabled` of the current database.
    pub cdc_enabled: bool,
    /// `snapshot_isolation_state = 1` (`ALLOW_SNAPSHOT_ISOLATION ON`).
    pub snapshot_isolation: bool,
    /// The current database.
    pub database: String,
    /// `sys.databases.is_published`: the database is published for transactional
    /// replication, whose log reader does the CDC capture ("a separate capture job is neither
    /// required nor allowed", `sys.sp_cdc_add_job`).
    pub published: bool,
}

impl ServerInfo {
    /// Major version (15 = SQL Server 2019, 16 = 2022).
    pub fn major_version(&self) -> Option<u32> {
        self.product_version.split('.').next()?.parse().ok()
    }
    /// Azure SQL Database (not Managed Instance): no SQL Server Agent, no server-level
    /// permissions; CDC capture runs on the service's scheduler.
    pub fn is_azure_sql_database(&self) -> bool {
        self.engine_edition == 5
    }
    /// Azure SQL Database or Managed Instance (versionless services).
    pub fn is_azure(&self) -> bool {
        matches!(self.engine_edition, 5 | 8)
    }
}

/// The user's effective permissions, from `HAS_PERMS_BY_NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    /// SELECT on each selected table.
    pub select_tables: Vec<(TableName, bool)>,
    /// SELECT on the `cdc` schema (the `cdc_reader`-style grant or the gating role).
    pub select_cdc: bool,
    /// SELECT, INSERT and DELETE on `dbo._powersync_checkpoints`.
    pub checkpoint_rw: bool,
    /// `VIEW DATABASE PERFORMANCE STATE` (or the older `VIEW DATABASE STATE`).
    pub view_database_state: bool,
    /// `VIEW SERVER PERFORMANCE STATE` (or `VIEW SERVER STATE`); `None` where the server has no
    /// such permission (Azure SQL Database).
    pub view_server_state: Option<bool>,
    /// Membership (`IS_MEMBER`) in each gating role asked about.
    pub gating_roles: Vec<(String, bool)>,
}

/// A fingerprint of `cdc.change_tables` (instances, creation dates, start LSNs): while it is
/// unchanged, the capture instances are too, and the poller need not list them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogStamp {
    /// Number of capture instances.
    pub instances: i64,
    /// `CHECKSUM_AGG(CHECKSUM(object_id, create_date, start_lsn))`.
    pub checksum: i64,
}

/// The capture job of the database (`msdb.dbo.cdc_jobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureJob {
    /// Whether SQL Server Agent is running the job now (`None`: cannot tell).
    pub running: Option<bool>,
    /// Seconds between log scan cycles (default 5).
    pub polling_interval_secs: i64,
    /// Transactions per scan (default 500).
    pub maxtrans: i64,
    /// Scans per cycle (default 10).
    pub maxscans: i64,
}

/// One connection's worth of CDC queries. Implementations own their connection; the callers
/// never run two calls at once on one backend.
#[async_trait]
pub trait CdcBackend: Send {
    /// Version, edition and the database's CDC and snapshot-isolation flags.
    async fn server_info(&mut self) -> Result<ServerInfo>;
    /// `SELECT sys.fn_cdc_get_max_lsn()`: the highest commit LSN in `cdc.lsn_time_mapping`
    /// (`None` before the capture job recorded anything).
    async fn max_lsn(&mut self) -> Result<Option<MssqlLsn>>;
    /// `SELECT sys.fn_cdc_get_min_lsn(@instance)`: the lowest LSN still held by the capture
    /// instance (moves forward when the cleanup job purges); `None` when the instance does not
    /// exist (SQL Server answers all zeros).
    async fn min_lsn(&mut self, instance: &str) -> Result<Option<MssqlLsn>>;
    /// `SELECT sys.fn_cdc_increment_lsn(@lsn)`.
    async fn increment_lsn(&mut self, lsn: MssqlLsn) -> Result<MssqlLsn>;
    /// `SELECT TOP (@limit) start_lsn, tran_end_time FROM cdc.lsn_time_mapping WHERE start_lsn
    /// BETWEEN @from AND @to ORDER BY start_lsn`.
    async fn lsn_window(
        &mut self,
        from: MssqlLsn,
        to: MssqlLsn,
        limit: u32,
    ) -> Result<Vec<LsnTime>>;
    /// `SELECT COUNT_BIG(*), CHECKSUM_AGG(…) FROM cdc.change_tables`: one cheap row telling
    /// whether [`CdcBackend::capture_instances`] would answer differently.
    async fn catalog_stamp(&mut self) -> Result<CatalogStamp>;
    /// Every capture instance of the database with its captured columns
    /// (`cdc.change_tables` ⨝ `cdc.captured_columns` ⨝ the primary key).
    async fn capture_instances(&mut self) -> Result<Vec<CaptureInstance>>;
    /// `SELECT TOP (@limit) … FROM cdc.fn_cdc_get_all_changes_<instance>(@from, @to, N'all
    /// update old') WHERE (key) > @after ORDER BY __$start_lsn, __$seqval, __$operation`.
    /// Both bounds are inclusive; `from` must not be below the instance's min LSN nor `to`
    /// above the max LSN.
    async fn changes(
        &mut self,
        instance: &CaptureInstance,
        from: MssqlLsn,
        to: MssqlLsn,
        after: Option<ChangeKey>,
        limit: u32,
    ) -> Result<Vec<ChangeRow>>;
    /// Whether the table exists (`OBJECT_ID(@name, 'U') IS NOT NULL`).
    async fn table_exists(&mut self, table: &TableName) -> Result<bool>;
    /// The row count the storage engine reports for a table (`sys.dm_db_partition_stats`), for
    /// snapshot progress; `None` when unknown.
    async fn estimated_rows(&mut self, table: &TableName) -> Result<Option<u64>>;
    /// Starts the snapshot transaction on this connection (`SET TRANSACTION ISOLATION LEVEL
    /// SNAPSHOT; BEGIN TRANSACTION` and a first read that fixes its version).
    ///
    /// With `marker`, the start is exact: on a second connection, a transaction takes shared
    /// table locks on `tables` (`WITH (TABLOCK, HOLDLOCK)`), inserts `marker` into the
    /// checkpoint table, and commits only after this connection's snapshot is fixed. No
    /// transaction touching `tables` can commit between the lock and that commit, so the
    /// snapshot holds exactly the changes committed below the marker's LSN.
    ///
    /// Returns the marker row's identity (`None` without `marker`).
    async fn begin_snapshot(
        &mut self,
        tables: &[TableName],
        marker: Option<(CheckpointShape, &str)>,
    ) -> Result<Option<Marker>>;
    /// `SELECT TOP (@limit) <columns> FROM <table> WHERE (key) > @after ORDER BY key` inside the
    /// snapshot transaction. `after` holds the key columns' values in key order.
    async fn snapshot_chunk(
        &mut self,
        instance: &CaptureInstance,
        after: Option<&[Value]>,
        limit: u32,
    ) -> Result<Vec<Vec<Value>>>;
    /// Ends the snapshot transaction.
    async fn end_snapshot(&mut self) -> Result<()>;
    /// Inserts a marker row (autocommit): `INSERT INTO dbo._powersync_checkpoints (token)
    /// VALUES (@token)`, or for the service's shape `INSERT … (last_updated) OUTPUT
    /// INSERTED.id VALUES (GETDATE())`.
    async fn insert_marker(&mut self, shape: CheckpointShape, token: &str) -> Result<Marker>;
    /// The commit LSN of the marker row, once the capture job recorded it (`SELECT
    /// __$start_lsn FROM cdc.<instance>_CT WHERE token = @token` or `id = @id`).
    async fn marker_lsn(
        &mut self,
        instance: &CaptureInstance,
        marker: &Marker,
    ) -> Result<Option<MssqlLsn>>;
    /// Deletes checkpoint rows older than an hour (they have been observed long ago); in the
    /// service's shape, never its oldest row (the one the service itself keeps updating).
    async fn delete_old_markers(&mut self, shape: CheckpointShape) -> Result<()>;
    /// The user's permissions on `tables`, the `cdc` schema, the checkpoint table and the
    /// performance-state views, and membership in the gating `roles`.
    async fn permissions(
        &mut self,
        tables: &[TableName],
        roles: &[String],
        azure: bool,
    ) -> Result<Permissions>;
    /// The capture job, where the server has SQL Server Agent (`None`: no capture job row).
    async fn capture_job(&mut self) -> Result<Option<CaptureJob>>;
}

/// Opens backends: one per connection the connector needs (stream, snapshot, check, write
/// checkpoint).
#[async_trait]
pub trait CdcConnector: Send + Sync + fmt::Debug {
    /// A new connection. Failures are `Connection` (retryable), `Auth` or `Config`.
    async fn connect(&self) -> Result<Box<dyn CdcBackend>>;
}
