//! The state table `_powersync_mirror_state`: the stored position, the mirrored tables'
//! schemas, and keys hosts stage for themselves. Every write here happens inside the open
//! group, so it becomes durable atomically with the rows it describes.

use powersync_source_core::TableSchema;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::SinkError;

/// Name of the state table.
pub const STATE_TABLE: &str = "_powersync_mirror_state";
/// State key of the stored position (a checkpoint, or a snapshot resume token while the
/// initial snapshot runs).
pub const POSITION_KEY: &str = "checkpoint";
/// Prefix of the state keys holding table schemas (`table:<schema>.<name>`).
pub const TABLE_KEY_PREFIX: &str = "table:";

/// A table's entry in the state table: `{"sqlite_name": …, "schema": <TableSchema JSON>}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredTable {
    /// The SQLite table's name.
    pub sqlite_name: String,
    /// The source schema it mirrors (source column types included).
    pub schema: TableSchema,
}

/// Creates the state table if it is missing.
pub(crate) fn create(conn: &Connection) -> Result<(), SinkError> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {STATE_TABLE} (key TEXT PRIMARY KEY, value TEXT)"
    ))?;
    Ok(())
}

/// The value stored under `key`, committed or staged in the open transaction.
pub(crate) fn read(conn: &Connection, key: &str) -> Result<Option<String>, SinkError> {
    Ok(conn
        .query_row(
            &format!("SELECT value FROM {STATE_TABLE} WHERE key = ?1"),
            [key],
            |r| r.get(0),
        )
        .optional()?)
}

/// The stored position, if any (a blank value counts as none).
pub(crate) fn read_position(conn: &Connection) -> Result<Option<String>, SinkError> {
    Ok(read(conn, POSITION_KEY)?.filter(|s| !s.trim().is_empty()))
}

/// Writes `key = value` (through the statement cache: it runs at every commit).
pub(crate) fn write(conn: &Connection, key: &str, value: &str) -> Result<(), SinkError> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {STATE_TABLE} (key, value) VALUES (?1, ?2)"
    ))?
    .execute([key, value])?;
    Ok(())
}

/// Stores a mirrored table's entry.
pub(crate) fn write_table(conn: &Connection, stored: &StoredTable) -> Result<(), SinkError> {
    let key = format!("{TABLE_KEY_PREFIX}{}", stored.schema.name);
    let json = serde_json::to_string(stored).map_err(|cause| SinkError::CorruptState {
        key: key.clone(),
        cause,
    })?;
    write(conn, &key, &json)
}

/// Every table entry, ordered by key.
pub(crate) fn tables(conn: &Connection) -> Result<Vec<StoredTable>, SinkError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT key, value FROM {STATE_TABLE} WHERE key LIKE '{TABLE_KEY_PREFIX}%' ORDER BY key"
    ))?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (key, value) = row?;
        let stored: StoredTable =
            serde_json::from_str(&value).map_err(|cause| SinkError::CorruptState { key, cause })?;
        out.push(stored);
    }
    Ok(out)
}

/// Forgets the position and every table entry (keys staged by hosts stay).
pub(crate) fn clear(conn: &Connection) -> Result<(), SinkError> {
    conn.execute(
        &format!("DELETE FROM {STATE_TABLE} WHERE key = ?1 OR key LIKE '{TABLE_KEY_PREFIX}%'"),
        [POSITION_KEY],
    )?;
    Ok(())
}
