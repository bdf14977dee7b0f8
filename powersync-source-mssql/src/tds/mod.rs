//! The SQL Server implementation of the `CdcBackend` seam on tiberius: the only code that
//! talks to a server. Each method is one query (the snapshot start is one fixed sequence);
//! rows are decoded by the `values` module.

mod client;
mod error;
#[cfg(test)]
mod responder;
mod select;
#[cfg(test)]
mod wire_tests;

use async_trait::async_trait;
use powersync_source_core::position::MssqlLsn;
use powersync_source_core::{Result, SourceError, TableName, UnixMicros, Value};
pub(crate) use tiberius::Row;

use crate::backend::{
    CaptureInstance, CaptureJob, CapturedColumn, CatalogStamp, CdcBackend, CdcConnector, ChangeKey,
    ChangeRow, CheckpointShape, LsnTime, Marker, Permissions, ServerInfo, SqlType, RECOMMENDED_JOB,
};
use crate::config::MssqlConfig;
use crate::tables::{key_positions, quote_ident, quote_table};
use crate::values::column_value;
pub(crate) use client::{Param, TdsClient};

/// Opens tiberius connections for a [`MssqlConfig`].
#[derive(Debug, Clone)]
pub(crate) struct TdsConnector {
    config: MssqlConfig,
}

impl TdsConnector {
    /// A connector for `config`.
    pub fn new(config: MssqlConfig) -> Self {
        TdsConnector { config }
    }
}

#[async_trait]
impl CdcConnector for TdsConnector {
    async fn connect(&self) -> Result<Box<dyn CdcBackend>> {
        let client = TdsClient::connect(&self.config).await?;
        Ok(Box::new(TdsBackend {
            client,
            config: self.config.clone(),
        }))
    }
}

struct TdsBackend {
    client: TdsClient,
    config: MssqlConfig,
}

fn lsn_param(l: MssqlLsn) -> Param {
    Param::Bytes(l.0.to_vec())
}

fn value_param(v: &Value) -> Param {
    match v {
        Value::Integer(i) => Param::I64(*i),
        Value::Real(f) => Param::F64(*f),
        Value::Text(s) => Param::Str(s.clone()),
        Value::Blob(b) => Param::Bytes(b.clone()),
        Value::Null | Value::Unchanged => Param::Null,
    }
}

fn bad_column(what: &str, i: usize) -> SourceError {
    SourceError::decode(format!(
        "{what}: column {i} has an unexpected type or is NULL"
    ))
}

fn get_str(row: &Row, i: usize, what: &str) -> Result<String> {
    row.try_get::<&str, _>(i)
        .map_err(|_| bad_column(what, i))?
        .map(str::to_string)
        .ok_or_else(|| bad_column(what, i))
}

fn get_opt_str(row: &Row, i: usize, what: &str) -> Result<Option<String>> {
    row.try_get::<&str, _>(i)
        .map(|v| v.map(str::to_string))
        .map_err(|_| bad_column(what, i))
}

fn get_i64(row: &Row, i: usize, what: &str) -> Result<Option<i64>> {
    if let Ok(v) = row.try_get::<i64, _>(i) {
        return Ok(v);
    }
    row.try_get::<i32, _>(i)
        .map(|v| v.map(i64::from))
        .map_err(|_| bad_column(what, i))
}

fn get_lsn(row: &Row, i: usize, what: &str) -> Result<Option<MssqlLsn>> {
    match row
        .try_get::<&[u8], _>(i)
        .map_err(|_| bad_column(what, i))?
    {
        None => Ok(None),
        Some(b) => MssqlLsn::from_slice(b)
            .map(Some)
            .ok_or_else(|| SourceError::decode(format!("{what}: an LSN of {} bytes", b.len()))),
    }
}

/// `None` for the all-zero LSN SQL Server answers for unknown instances and empty CDC.
fn nonzero(l: Option<MssqlLsn>) -> Option<MssqlLsn> {
    l.filter(|l| l.0 != [0; 10])
}

fn decode_values(
    row: Row,
    skip: usize,
    table: &TableName,
    columns: &[CapturedColumn],
) -> Result<(Vec<tiberius::ColumnData<'static>>, Vec<Value>)> {
    let mut cells = row.into_iter();
    let head: Vec<_> = cells.by_ref().take(skip).collect();
    let mut values = Vec::with_capacity(columns.len());
    for col in columns {
        let data = cells.next().ok_or_else(|| {
            SourceError::decode(format!("a row of {table} ends before column {}", col.name))
        })?;
        values.push(column_value(data, &col.sql_type).map_err(|e| {
            SourceError::decode_value(&table.to_string(), &col.name, &col.sql_type.display(), e)
        })?);
    }
    Ok((head, values))
}

fn head_lsn(d: Option<&tiberius::ColumnData<'static>>, what: &str) -> Result<MssqlLsn> {
    match d {
        Some(tiberius::ColumnData::Binary(Some(b))) => MssqlLsn::from_slice(b)
            .ok_or_else(|| SourceError::decode(format!("{what}: not a 10-byte LSN"))),
        _ => Err(SourceError::decode(format!("{what}: not a binary LSN"))),
    }
}

/// Inserts a marker row on `client` and says how to find it.
async fn insert_marker(
    client: &TdsClient,
    shape: CheckpointShape,
    token: &str,
    what: &str,
) -> Result<Marker> {
    match shape {
        CheckpointShape::Token => {
            client
                .execute(
                    "INSERT INTO dbo._powersync_checkpoints (token) VALUES (@P1)".into(),
                    vec![Param::Str(token.to_string())],
                    what,
                )
                .await?;
            Ok(Marker::Token(token.to_string()))
        }
        CheckpointShape::Service => {
            let rows = client
                .query(
                    "INSERT INTO dbo._powersync_checkpoints (last_updated) \
                     OUTPUT CAST(INSERTED.id AS bigint) VALUES (GETDATE())"
                        .into(),
                    vec![],
                    what,
                )
                .await?;
            rows.first()
                .map(|r| get_i64(r, 0, what))
                .transpose()?
                .flatten()
                .map(Marker::Id)
                .ok_or_else(|| SourceError::decode(format!("{what}: no id returned")))
        }
    }
}

#[async_trait]
impl CdcBackend for TdsBackend {
    async fn server_info(&mut self) -> Result<ServerInfo> {
        let what = "reading the server version and database settings";
        let rows = self
            .client
            .query(
                "SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)), \
                 CAST(SERVERPROPERTY('EngineEdition') AS int), CAST(d.is_cdc_enabled AS int), \
                 CAST(d.snapshot_isolation_state AS int), CAST(DB_NAME() AS nvarchar(128)), \
                 CAST(d.is_published AS int) \
                 FROM sys.databases d WHERE d.database_id = DB_ID()"
                    .into(),
                vec![],
                what,
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| SourceError::decode(format!("{what}: no row")))?;
        Ok(ServerInfo {
            product_version: get_str(row, 0, what)?,
            engine_edition: get_i64(row, 1, what)?.unwrap_or_default() as i32,
            cdc_enabled: get_i64(row, 2, what)? == Some(1),
            snapshot_isolation: get_i64(row, 3, what)? == Some(1),
            database: get_str(row, 4, what)?,
            published: get_i64(row, 5, what)? == Some(1),
        })
    }

    async fn max_lsn(&mut self) -> Result<Option<MssqlLsn>> {
        let what = "sys.fn_cdc_get_max_lsn()";
        let rows = self
            .client
            .query("SELECT sys.fn_cdc_get_max_lsn()".into(), vec![], what)
            .await?;
        match rows.first() {
            Some(r) => Ok(nonzero(get_lsn(r, 0, what)?)),
            None => Ok(None),
        }
    }

    async fn min_lsn(&mut self, instance: &str) -> Result<Option<MssqlLsn>> {
        let what = "sys.fn_cdc_get_min_lsn()";
        let rows = self
            .client
            .query(
                "SELECT sys.fn_cdc_get_min_lsn(@P1)".into(),
                vec![Param::Str(instance.to_string())],
                what,
            )
            .await?;
        match rows.first() {
            Some(r) => Ok(nonzero(get_lsn(r, 0, what)?)),
            None => Ok(None),
        }
    }

    async fn increment_lsn(&mut self, lsn: MssqlLsn) -> Result<MssqlLsn> {
        let what = "sys.fn_cdc_increment_lsn()";
        let rows = self
            .client
            .query(
                "SELECT sys.fn_cdc_increment_lsn(@P1)".into(),
                vec![lsn_param(lsn)],
                what,
            )
            .await?;
        rows.first()
            .map(|r| get_lsn(r, 0, what))
            .transpose()?
            .flatten()
            .ok_or_else(|| SourceError::decode(format!("{what}: no value")))
    }

    async fn lsn_window(
        &mut self,
        from: MssqlLsn,
        to: MssqlLsn,
        limit: u32,
    ) -> Result<Vec<LsnTime>> {
        let what = "reading cdc.lsn_time_mapping";
        // tran_end_time is server-local time: shift it by the server's current UTC offset.
        let rows = self
            .client
            .query(
                "SELECT TOP (@P3) start_lsn, DATEDIFF_BIG(microsecond, '19700101', \
                 DATEADD(minute, DATEDIFF(minute, GETDATE(), GETUTCDATE()), tran_end_time)) \
                 FROM cdc.lsn_time_mapping WHERE start_lsn >= @P1 AND start_lsn <= @P2 \
                 ORDER BY start_lsn"
                    .into(),
                vec![lsn_param(from), lsn_param(to), Param::I64(limit.into())],
                what,
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LsnTime {
                    lsn: get_lsn(r, 0, what)?
                        .ok_or_else(|| SourceError::decode(format!("{what}: NULL LSN")))?,
                    commit_time: get_i64(r, 1, what)?.map(UnixMicros),
                })
            })
            .collect()
    }

    async fn catalog_stamp(&mut self) -> Result<CatalogStamp> {
        let what = "reading the CDC catalog's fingerprint";
        let rows = self
            .client
            .query(
                "SELECT COUNT_BIG(*), CAST(ISNULL(CHECKSUM_AGG(CHECKSUM(object_id, create_date, \
                 start_lsn)), 0) AS bigint) FROM cdc.change_tables"
                    .into(),
                vec![],
                what,
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| SourceError::decode(format!("{what}: no row")))?;
        Ok(CatalogStamp {
            instances: get_i64(row, 0, what)?.unwrap_or_default(),
            checksum: get_i64(row, 1, what)?.unwrap_or_default(),
        })
    }

    async fn capture_instances(&mut self) -> Result<Vec<CaptureInstance>> {
        let what = "listing CDC capture instances";
        let rows = self
            .client
            .query(
                // Nullability, existence and collation come from the source table's columns
                // (`sc`): the change table's columns are all nullable and outlive dropped
                // source columns. Lengths and the CLR flag come from the change table (`c`).
                // An alias type (CREATE TYPE … FROM varchar(20)) is named by its system type,
                // so it is selected and decoded as that type; CLR types keep their own name.
                "SELECT CAST(OBJECT_SCHEMA_NAME(ct.source_object_id) AS nvarchar(128)), \
                 CAST(OBJECT_NAME(ct.source_object_id) AS nvarchar(128)), \
                 CAST(ct.capture_instance AS nvarchar(128)), ct.start_lsn, \
                 CAST(ct.source_object_id AS bigint), CAST(cc.column_name AS nvarchar(128)), \
                 CAST(cc.column_ordinal AS int), CAST(CASE WHEN ISNULL(ty.is_assembly_type, 0) = 0 \
                 AND c.system_type_id IS NOT NULL THEN TYPE_NAME(c.system_type_id) ELSE cc.column_type END \
                 AS nvarchar(128)), \
                 CAST(c.max_length AS int), CAST(c.precision AS int), CAST(c.scale AS int), \
                 CAST(sc.is_nullable AS int), CAST(ic.key_ordinal AS int), \
                 CAST(cc.is_computed AS int), CASE WHEN sc.column_id IS NULL THEN 0 ELSE 1 END, \
                 CAST(sc.collation_name AS nvarchar(128)), CAST(ISNULL(ty.is_assembly_type, 0) AS int), \
                 DATEDIFF_BIG(microsecond, '19700101', ct.create_date), \
                 CAST(ct.role_name AS nvarchar(128)) \
                 FROM cdc.change_tables ct \
                 JOIN cdc.captured_columns cc ON cc.object_id = ct.object_id \
                 LEFT JOIN sys.columns c ON c.object_id = ct.object_id AND c.name = cc.column_name \
                 LEFT JOIN sys.types ty ON ty.user_type_id = c.user_type_id \
                 LEFT JOIN sys.columns sc ON sc.object_id = ct.source_object_id AND sc.name = cc.column_name \
                 LEFT JOIN sys.indexes i ON i.object_id = ct.source_object_id AND i.is_primary_key = 1 \
                 LEFT JOIN sys.index_columns ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id \
                   AND ic.column_id = sc.column_id \
                 WHERE OBJECT_NAME(ct.source_object_id) IS NOT NULL \
                 ORDER BY ct.capture_instance, cc.column_ordinal"
                    .into(),
                vec![],
                what,
            )
            .await?;
        let mut out: Vec<CaptureInstance> = Vec::new();
        for r in &rows {
            // An instance whose low endpoint is not established yet (`start_lsn` NULL,
            // cdc.change_tables) holds nothing readable: it is left out until it is.
            let Some(start_lsn) = nonzero(get_lsn(r, 3, what)?) else {
                continue;
            };
            let name = get_str(r, 2, what)?;
            let type_name = get_str(r, 7, what)?.to_ascii_lowercase();
            let assembly = get_i64(r, 16, what)? == Some(1);
            let column = CapturedColumn {
                name: get_str(r, 5, what)?,
                clr_type: assembly
                    && !matches!(type_name.as_str(), "geometry" | "geography" | "hierarchyid"),
                sql_type: SqlType {
                    name: type_name,
                    max_length: get_i64(r, 8, what)?.unwrap_or_default() as i32,
                    precision: get_i64(r, 9, what)?.unwrap_or_default().clamp(0, 255) as u8,
                    scale: get_i64(r, 10, what)?.unwrap_or_default().clamp(0, 255) as u8,
                },
                ordinal: get_i64(r, 6, what)?.unwrap_or_default().max(0) as u32,
                key_ordinal: get_i64(r, 12, what)?.map(|k| k.max(0) as u32),
                nullable: get_i64(r, 11, what)? != Some(0),
                computed: get_i64(r, 13, what)? == Some(1),
                in_source: get_i64(r, 14, what)? == Some(1),
                collation: get_opt_str(r, 15, what)?,
            };
            match out.last_mut() {
                Some(i) if i.name == name => i.columns.push(column),
                _ => out.push(CaptureInstance {
                    table: TableName::new(get_str(r, 0, what)?, get_str(r, 1, what)?),
                    source_object_id: get_i64(r, 4, what)?.unwrap_or_default(),
                    start_lsn,
                    create_date: get_i64(r, 17, what)?.unwrap_or_default(),
                    role_name: get_opt_str(r, 18, what)?,
                    name,
                    columns: vec![column],
                }),
            }
        }
        Ok(out)
    }

    async fn changes(
        &mut self,
        instance: &CaptureInstance,
        from: MssqlLsn,
        to: MssqlLsn,
        after: Option<ChangeKey>,
        limit: u32,
    ) -> Result<Vec<ChangeRow>> {
        let what = format!("reading changes of capture instance {}", instance.name);
        let function = quote_ident(&format!("fn_cdc_get_all_changes_{}", instance.name));
        let list = select::select_list(&instance.columns, select::From::ChangeTable);
        let mut params = vec![lsn_param(from), lsn_param(to), Param::I64(limit.into())];
        let filter = match after {
            None => String::new(),
            Some(k) => {
                params.push(lsn_param(k.start_lsn));
                params.push(lsn_param(k.seqval));
                params.push(Param::I64(k.operation.into()));
                "WHERE c.__$start_lsn > @P4 OR (c.__$start_lsn = @P4 AND (c.__$seqval > @P5 \
                 OR (c.__$seqval = @P5 AND c.__$operation > @P6)))"
                    .to_string()
            }
        };
        let sql = format!(
            "SELECT TOP (@P3) c.__$start_lsn, c.__$seqval, CAST(c.__$operation AS int), \
             c.__$update_mask{}{list} FROM cdc.{function}(@P1, @P2, N'all update old') AS c \
             {filter} ORDER BY c.__$start_lsn, c.__$seqval, c.__$operation",
            if list.is_empty() { "" } else { ", " }
        );
        let rows = self.client.query(sql, params, &what).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (head, values) = decode_values(row, 4, &instance.table, &instance.columns)?;
            let operation = match head.get(2) {
                Some(tiberius::ColumnData::I32(Some(o))) => u8::try_from(*o).unwrap_or(0),
                _ => 0,
            };
            out.push(ChangeRow {
                start_lsn: head_lsn(head.first(), &what)?,
                seqval: head_lsn(head.get(1), &what)?,
                operation,
                update_mask: match head.get(3) {
                    Some(tiberius::ColumnData::Binary(Some(b))) => b.to_vec(),
                    _ => Vec::new(),
                },
                values,
            });
        }
        Ok(out)
    }

    async fn table_exists(&mut self, table: &TableName) -> Result<bool> {
        let what = "looking up a table";
        let rows = self
            .client
            .query(
                "SELECT CASE WHEN OBJECT_ID(@P1, N'U') IS NULL THEN 0 ELSE 1 END".into(),
                vec![Param::Str(quote_table(table))],
                what,
            )
            .await?;
        Ok(rows
            .first()
            .map(|r| get_i64(r, 0, what))
            .transpose()?
            .flatten()
            == Some(1))
    }

    async fn estimated_rows(&mut self, table: &TableName) -> Result<Option<u64>> {
        let what = "estimating a table's rows";
        let rows = self
            .client
            .query(
                "SELECT CAST(SUM(row_count) AS bigint) FROM sys.dm_db_partition_stats \
                 WHERE object_id = OBJECT_ID(@P1) AND index_id IN (0, 1)"
                    .into(),
                vec![Param::Str(quote_table(table))],
                what,
            )
            .await?;
        Ok(rows
            .first()
            .map(|r| get_i64(r, 0, what))
            .transpose()?
            .flatten()
            .and_then(|n| u64::try_from(n).ok()))
    }

    async fn begin_snapshot(
        &mut self,
        tables: &[TableName],
        marker: Option<(CheckpointShape, &str)>,
    ) -> Result<Option<Marker>> {
        let what = "starting the snapshot transaction";
        let begin = "SET TRANSACTION ISOLATION LEVEL SNAPSHOT; BEGIN TRANSACTION;";
        // The first read fixes the snapshot's version.
        let fix = "SELECT COUNT_BIG(*) FROM dbo._powersync_checkpoints";
        let Some((shape, token)) = marker else {
            self.client.batch(begin.into(), what).await?;
            self.client.query(fix.into(), vec![], what).await?;
            return Ok(None);
        };
        let lock = TdsClient::connect(&self.config).await?;
        let lock_what = "locking the replicated tables for the snapshot start";
        // Tables are locked one at a time, so a writer holding one and wanting another can
        // deadlock with this transaction: it must be the victim (a retried 1205 for the
        // snapshot start), never the application's writer. Writers queue behind a waiting
        // lock request, so it waits at most 5 s (a 1222, retried by the caller).
        lock.batch(
            "SET LOCK_TIMEOUT 5000; SET DEADLOCK_PRIORITY LOW; BEGIN TRANSACTION;".into(),
            lock_what,
        )
        .await?;
        for t in tables {
            // A shared table lock held to the end of the transaction: writers of the table wait
            // (and writers already in flight commit before we get it).
            lock.query(
                format!(
                    "SELECT TOP (1) 1 FROM {} WITH (TABLOCK, HOLDLOCK)",
                    quote_table(t)
                ),
                vec![],
                lock_what,
            )
            .await?;
        }
        let marker = insert_marker(&lock, shape, token, lock_what).await?;
        self.client.batch(begin.into(), what).await?;
        self.client.query(fix.into(), vec![], what).await?;
        lock.batch("COMMIT TRANSACTION;".into(), lock_what).await?;
        Ok(Some(marker))
    }

    async fn snapshot_chunk(
        &mut self,
        instance: &CaptureInstance,
        after: Option<&[Value]>,
        limit: u32,
    ) -> Result<Vec<Vec<Value>>> {
        let what = format!("reading a snapshot chunk of {}", instance.table);
        let keys: Vec<&CapturedColumn> = key_positions(instance)
            .into_iter()
            .map(|i| &instance.columns[i])
            .collect();
        let mut params = vec![Param::I64(limit.into())];
        let mut filter = String::new();
        if let Some(after) = after {
            filter = format!(
                "WHERE {}",
                select::after_key_predicate(&keys[..after.len().min(keys.len())], 2)
            );
            params.extend(after.iter().map(value_param));
        }
        let order: Vec<String> = keys
            .iter()
            .map(|k| format!("c.{}", quote_ident(&k.name)))
            .collect();
        let sql = format!(
            "SELECT TOP (@P1) {} FROM {} AS c {filter} ORDER BY {}",
            select::select_list(&instance.columns, select::From::SourceTable),
            quote_table(&instance.table),
            order.join(", ")
        );
        let rows = self.client.query(sql, params, &what).await?;
        rows.into_iter()
            .map(|r| decode_values(r, 0, &instance.table, &instance.columns).map(|(_, v)| v))
            .collect()
    }

    async fn end_snapshot(&mut self) -> Result<()> {
        self.client
            .batch(
                "COMMIT TRANSACTION;".into(),
                "ending the snapshot transaction",
            )
            .await
    }

    async fn insert_marker(&mut self, shape: CheckpointShape, token: &str) -> Result<Marker> {
        insert_marker(&self.client, shape, token, "inserting a checkpoint row").await
    }

    async fn marker_lsn(
        &mut self,
        instance: &CaptureInstance,
        marker: &Marker,
    ) -> Result<Option<MssqlLsn>> {
        let what = "looking up a checkpoint row in its change table";
        // The token parameter is converted to the column's type, so the column is compared
        // as it is (no implicit conversion of every row). The change table is read WITH
        // (NOLOCK), as the change functions read it, so the lookup never waits on the capture
        // job's open batch.
        let (predicate, param) = match marker {
            Marker::Token(t) => ("token = CAST(@P1 AS varchar(64))", Param::Str(t.clone())),
            Marker::Id(id) => ("id = @P1", Param::I64(*id)),
        };
        let rows = self
            .client
            .query(
                format!(
                    "SELECT TOP (1) __$start_lsn FROM cdc.{} WITH (NOLOCK) WHERE {predicate} AND __$operation = 2",
                    quote_ident(&format!("{}_CT", instance.name))
                ),
                vec![param],
                what,
            )
            .await?;
        Ok(rows
            .first()
            .map(|r| get_lsn(r, 0, what))
            .transpose()?
            .flatten())
    }

    async fn delete_old_markers(&mut self, shape: CheckpointShape) -> Result<()> {
        let sql = match shape {
            CheckpointShape::Token => {
                "DELETE FROM dbo._powersync_checkpoints WHERE created_at < DATEADD(hour, -1, SYSUTCDATETIME())"
            }
            // The service upserts its own row (the oldest): keep it.
            CheckpointShape::Service => {
                "DELETE FROM dbo._powersync_checkpoints WHERE last_updated < DATEADD(hour, -1, GETDATE()) \
                 AND id > (SELECT MIN(id) FROM dbo._powersync_checkpoints)"
            }
        };
        self.client
            .execute(sql.into(), vec![], "deleting old checkpoint rows")
            .await
            .map(|_| ())
    }

    async fn permissions(
        &mut self,
        tables: &[TableName],
        roles: &[String],
        azure: bool,
    ) -> Result<Permissions> {
        let what = "checking permissions";
        let mut perms = Permissions::default();
        for role in roles {
            // IS_MEMBER: 1 member, 0 not, NULL no such role (not a member either). db_owner
            // (sysadmin maps to dbo) reads every instance: "Requires membership in the sysadmin
            // fixed server role or db_owner fixed database role" (cdc.fn_cdc_get_all_changes).
            let rows = self
                .client
                .query(
                    "SELECT CASE WHEN IS_MEMBER(@P1) = 1 OR IS_MEMBER(N'db_owner') = 1 THEN 1 ELSE 0 END"
                        .into(),
                    vec![Param::Str(role.clone())],
                    what,
                )
                .await?;
            let member = rows
                .first()
                .map(|r| get_i64(r, 0, what))
                .transpose()?
                .flatten()
                == Some(1);
            perms.gating_roles.push((role.clone(), member));
        }
        for t in tables {
            let rows = self
                .client
                .query(
                    "SELECT HAS_PERMS_BY_NAME(@P1, 'OBJECT', 'SELECT')".into(),
                    vec![Param::Str(quote_table(t))],
                    what,
                )
                .await?;
            let ok = rows
                .first()
                .map(|r| get_i64(r, 0, what))
                .transpose()?
                .flatten()
                == Some(1);
            perms.select_tables.push((t.clone(), ok));
        }
        let server = if azure {
            "NULL"
        } else {
            "COALESCE(HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW SERVER PERFORMANCE STATE'), \
             HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW SERVER STATE'))"
        };
        let ck = "'dbo._powersync_checkpoints', 'OBJECT'";
        let rows = self
            .client
            .query(
                format!(
                    "SELECT HAS_PERMS_BY_NAME('cdc', 'SCHEMA', 'SELECT'), \
                     CASE WHEN HAS_PERMS_BY_NAME({ck}, 'SELECT') = 1 AND HAS_PERMS_BY_NAME({ck}, 'INSERT') = 1 \
                     AND HAS_PERMS_BY_NAME({ck}, 'DELETE') = 1 THEN 1 ELSE 0 END, \
                     COALESCE(HAS_PERMS_BY_NAME(NULL, 'DATABASE', 'VIEW DATABASE PERFORMANCE STATE'), \
                     HAS_PERMS_BY_NAME(NULL, 'DATABASE', 'VIEW DATABASE STATE')), {server}"
                ),
                vec![],
                what,
            )
            .await?;
        if let Some(r) = rows.first() {
            perms.select_cdc = get_i64(r, 0, what)? == Some(1);
            perms.checkpoint_rw = get_i64(r, 1, what)? == Some(1);
            perms.view_database_state = get_i64(r, 2, what)? == Some(1);
            perms.view_server_state = if azure {
                None
            } else {
                Some(get_i64(r, 3, what)? == Some(1))
            };
        }
        Ok(perms)
    }

    async fn capture_job(&mut self) -> Result<Option<CaptureJob>> {
        let what = "reading the CDC capture job";
        let result = self
            .client
            .query(
                "SELECT CAST(j.pollinginterval AS bigint), CAST(j.maxtrans AS bigint), \
                 CAST(j.maxscans AS bigint), (SELECT TOP (1) CASE WHEN a.start_execution_date IS NOT NULL \
                 AND a.stop_execution_date IS NULL THEN 1 ELSE 0 END FROM msdb.dbo.sysjobactivity a \
                 WHERE a.job_id = j.job_id ORDER BY a.session_id DESC) \
                 FROM msdb.dbo.cdc_jobs j WHERE j.database_id = DB_ID() AND j.job_type = N'capture'"
                    .into(),
                vec![],
                what,
            )
            .await;
        let rows = match result {
            Ok(rows) => rows,
            // Without access to msdb the job cannot be inspected: report it as unknown.
            Err(e) if e.kind() == powersync_source_core::ErrorKind::Prerequisite => {
                tracing::debug!(error = %e, "cannot read msdb.dbo.cdc_jobs");
                return Ok(Some(CaptureJob {
                    running: None,
                    polling_interval_secs: RECOMMENDED_JOB.0,
                    maxtrans: RECOMMENDED_JOB.1,
                    maxscans: RECOMMENDED_JOB.2,
                }));
            }
            Err(e) => return Err(e),
        };
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(CaptureJob {
            polling_interval_secs: get_i64(r, 0, what)?.unwrap_or(5),
            maxtrans: get_i64(r, 1, what)?.unwrap_or(500),
            maxscans: get_i64(r, 2, what)?.unwrap_or(10),
            running: get_i64(r, 3, what)?.map(|v| v == 1),
        }))
    }
}
