//! One key-ordered chunk of a table, read on its own (outside any exported snapshot) for a
//! backfill: the same publication-exact `COPY … (FORMAT binary)` as the snapshot's keyed
//! chunks, so the values are normalized exactly as the snapshot (and the stream) does.

use postgres_protocol::escape::{escape_identifier, escape_literal};
use powersync_source_core::{Row, SourceError};
use tokio::sync::mpsc;

use super::{copy_rows, SnapshotMsg, TableJob, ROWS_PER_MESSAGE};
use crate::connection::copy::CopySession;
use crate::types::TypeRegistry;

/// The rows of a chunk and the key texts of its last row (`None` when it is empty).
pub(crate) type KeyChunk = (Vec<Row>, Option<Vec<String>>);

/// Reads up to `limit` published rows of `job.table` (its column list, row filter and
/// generated columns as [`crate::catalog::published_tables`] describes them) whose key is
/// greater than `after` (the key columns' text renderings), in key order, in a transaction of
/// its own on `session`.
///
/// The caller makes sure the table has key columns.
pub(crate) async fn read_key_chunk(
    session: &mut CopySession,
    registry: &TypeRegistry,
    job: &TableJob,
    after: Option<&[String]>,
    limit: u64,
) -> Result<KeyChunk, SourceError> {
    let table = &job.table;
    let schema = &table.schema;
    let key_indexes: Vec<usize> = schema.key_indexes().collect();
    let binary: Vec<bool> = table
        .column_types
        .iter()
        .map(|t| registry.supports_binary(t.oid))
        .collect();
    let mut select: Vec<String> = schema
        .columns
        .iter()
        .zip(&binary)
        .map(|(c, binary)| {
            if *binary {
                escape_identifier(&c.name)
            } else {
                // As the snapshot: types without a binary decoder come as their text output.
                format!("{}::text", escape_identifier(&c.name))
            }
        })
        .collect();
    let key_cols: Vec<String> = key_indexes
        .iter()
        .map(|&i| escape_identifier(&schema.columns[i].name))
        .collect();
    for (i, k) in key_cols.iter().enumerate() {
        select.push(format!("{k}::text AS \"_powersync_key_{i}\""));
    }
    let mut filter: Vec<String> = table
        .publishing
        .row_filter
        .iter()
        .map(|f| format!("({f})"))
        .collect();
    if let Some(after) = after {
        if after.len() != key_cols.len() {
            return Err(SourceError::schema(format!(
                "the backfill cursor of {} has {} key values, the table's key {} columns",
                schema.name,
                after.len(),
                key_cols.len()
            )));
        }
        let literals: Vec<String> = after
            .iter()
            .zip(&key_indexes)
            .map(|(v, &i)| format!("{}::{}", escape_literal(v), schema.columns[i].type_name))
            .collect();
        filter.push(format!(
            "({}) > ({})",
            key_cols.join(", "),
            literals.join(", ")
        ));
    }
    let mut query = format!(
        "SELECT {} FROM {}",
        select.join(", "),
        crate::catalog::qualified(&schema.name)
    );
    if !filter.is_empty() {
        query.push_str(&format!(" WHERE {}", filter.join(" AND ")));
    }
    query.push_str(&format!(" ORDER BY {} LIMIT {limit}", key_cols.join(", ")));
    // Room for every message of the chunk: `copy_rows` never waits on the channel.
    let capacity = (limit as usize).div_ceil(ROWS_PER_MESSAGE) + 2;
    let (tx, mut rx) = mpsc::channel(capacity);
    let (_, last_key) =
        copy_rows(session, registry, job, &binary, &query, key_cols.len(), &tx).await?;
    drop(tx);
    let mut rows = Vec::new();
    while let Some(msg) = rx.recv().await {
        if let SnapshotMsg::Rows { rows: more, .. } = msg? {
            rows.extend(more);
        }
    }
    Ok((rows, last_key))
}
