//! Which tables are replicated, from which capture instance, with which schema.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use powersync_source_core::position::MssqlLsn;
use powersync_source_core::{Column, Result, RowIdentity, SourceError, TableName, TableSchema};

use crate::backend::{checkpoint_table, timed, CaptureInstance, CdcBackend};

/// The schema a capture instance's rows have: its captured columns, keyed by the primary key.
pub fn table_schema(instance: &CaptureInstance) -> Arc<TableSchema> {
    let columns: Vec<Column> = instance
        .columns
        .iter()
        .map(|c| Column {
            name: c.name.clone(),
            type_name: c.sql_type.display(),
            is_key: c.key_ordinal.is_some(),
            nullable: Some(c.nullable),
        })
        .collect();
    let identity = if columns.iter().any(|c| c.is_key) {
        RowIdentity::PrimaryKey
    } else {
        RowIdentity::Full
    };
    Arc::new(TableSchema {
        name: instance.table.clone(),
        source_id: u64::try_from(instance.source_object_id).ok(),
        columns,
        identity,
    })
}

/// Indexes of the primary-key columns among a capture instance's columns, in key order
/// (empty when the instance does not capture the whole key).
pub(crate) fn key_positions(instance: &CaptureInstance) -> Vec<usize> {
    let mut keyed: Vec<(u32, usize)> = instance
        .columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.key_ordinal.map(|k| (k, i)))
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// Every capture instance of the database as the connector replicates it: computed columns
/// left out (CDC records them as NULL only; see [`CapturedColumn::computed`]). The column
/// ordinals stay those of the instance (they index `__$update_mask`).
///
/// [`CapturedColumn::computed`]: crate::backend::CapturedColumn::computed
pub(crate) async fn load_instances(
    b: &mut dyn CdcBackend,
    t_out: Duration,
) -> Result<Vec<CaptureInstance>> {
    let mut all = timed(t_out, b.capture_instances()).await?;
    for i in &mut all {
        i.columns.retain(|c| !c.computed);
    }
    Ok(all)
}

/// Capture instances grouped by table, each list ordered from oldest to newest: by start LSN,
/// then (equal start LSNs after a cleanup) by creation date, as Debezium (DBZ-4273), Estuary
/// and Materialize (`80-deterministic-capture-instance-selection.td`) break the tie.
pub fn by_table(all: &[CaptureInstance]) -> BTreeMap<TableName, Vec<CaptureInstance>> {
    let mut map: BTreeMap<TableName, Vec<CaptureInstance>> = BTreeMap::new();
    for i in all {
        map.entry(i.table.clone()).or_default().push(i.clone());
    }
    for list in map.values_mut() {
        list.sort_by(|a, b| {
            (a.start_lsn, a.create_date, &a.name).cmp(&(b.start_lsn, b.create_date, &b.name))
        });
    }
    map
}

/// Whether `a` was created after `b` (creation date, then start LSN, then name: a total
/// order, so two streams pick the same instance).
pub fn newer(a: &CaptureInstance, b: &CaptureInstance) -> bool {
    (a.create_date, a.start_lsn, &a.name) > (b.create_date, b.start_lsn, &b.name)
}

/// The selected tables: `requested` (schema defaulting to `dbo`), or every table with a capture
/// instance except the checkpoint table. A requested table without CDC is a `Prerequisite`
/// error with the fix.
pub fn select(
    all: &BTreeMap<TableName, Vec<CaptureInstance>>,
    requested: &[TableName],
) -> Result<Vec<TableName>> {
    let ckpt = checkpoint_table();
    if requested.is_empty() {
        return Ok(all.keys().filter(|t| **t != ckpt).cloned().collect());
    }
    let mut out = Vec::new();
    for t in requested {
        let t = if t.schema.is_empty() {
            TableName::new("dbo", &t.name)
        } else {
            t.clone()
        };
        if t == ckpt {
            continue;
        }
        if !all.contains_key(&t) {
            return Err(SourceError::prerequisite(format!(
                "table {t} has no CDC capture instance (or does not exist)"
            ))
            .with_hint(enable_table_sql(&t)));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// The instance that holds a table's changes from `lsn` on: the newest one that started at or
/// before it (both instances hold the changes after the newer one's start; the newer one has
/// the current columns).
pub fn instance_for(instances: &[CaptureInstance], lsn: MssqlLsn) -> Option<&CaptureInstance> {
    instances.iter().rev().find(|i| i.start_lsn <= lsn)
}

/// The instance that replaces `current` later (created after it), if any.
pub fn successor<'a>(
    instances: &'a [CaptureInstance],
    current: &CaptureInstance,
) -> Option<&'a CaptureInstance> {
    instances
        .iter()
        .find(|i| i.name != current.name && newer(i, current))
}

/// The SQL that enables CDC on a table.
pub fn enable_table_sql(t: &TableName) -> String {
    format!(
        "EXEC sys.sp_cdc_enable_table @source_schema = N'{}', @source_name = N'{}', @role_name = NULL, @supports_net_changes = 0;",
        t.schema.replace('\'', "''"),
        t.name.replace('\'', "''")
    )
}

/// Quotes an identifier for T-SQL (`[a]]b]`).
pub fn quote_ident(s: &str) -> String {
    format!("[{}]", s.replace(']', "]]"))
}

/// `[schema].[table]`.
pub fn quote_table(t: &TableName) -> String {
    format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name))
}
