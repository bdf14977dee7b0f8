//! Row changes as SQL: inserts, updates and deletes by key, keyless tables matched by the old
//! image, and the cache of the SQL text per table shape.

use std::collections::HashMap;

use powersync_source_core::{Op, RowChange, TableSchema, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

use crate::error::SinkError;
use crate::schema::{quote, MirrorTable};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SqlKind {
    Insert,
    Update,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SqlKey {
    generation: u64,
    kind: SqlKind,
    /// Columns set (update) or inserted; `None` = all.
    set: Option<Vec<u32>>,
    /// Columns matched in a keyless table; `None` = all (or the key).
    matched: Option<Vec<u32>>,
}

/// How a row change went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowOutcome {
    /// Applied (an update or delete of a missing row counts: it is a no-op or an insert).
    Applied,
    /// An update or delete of a table without row identity, and the source sent no old row:
    /// nothing to match it with.
    Unmatched,
}

/// The SQL text of row statements by table shape. rusqlite's `prepare_cached` then finds the
/// prepared statement by that text, so no statement is parsed twice.
#[derive(Debug, Default)]
pub(crate) struct Statements {
    sql: HashMap<SqlKey, String>,
}

impl Statements {
    pub(crate) fn clear(&mut self) {
        self.sql.clear();
    }

    /// Applies one row change to `table` (already synced to `change.table`'s shape).
    ///
    /// Inserts are upserts (the replay window after a resumed snapshot may resend a row).
    /// Updates find the row by the old key, set only the columns the source sent, and insert
    /// the row if it is missing; `Unchanged` follows the consumer rule in the crate docs.
    /// Deletes of a missing row are no-ops.
    pub(crate) fn apply(
        &mut self,
        conn: &Connection,
        table: &MirrorTable,
        change: &RowChange,
    ) -> Result<RowOutcome, SinkError> {
        let schema = &change.table;
        let keyed = schema.columns.iter().any(|c| c.is_key);
        match change.op {
            Op::Insert => {
                if let Some(new) = &change.new {
                    self.insert(conn, table, schema, new.values(), keyed)?;
                }
                Ok(RowOutcome::Applied)
            }
            Op::Update => {
                let Some(new) = &change.new else {
                    return Ok(RowOutcome::Applied);
                };
                let values = new.values();
                let set = present_mask(values);
                let some_unsent = set.is_some();
                let changed = if keyed {
                    if set.as_ref().is_some_and(|s| s.is_empty()) {
                        // Nothing sent: nothing to write.
                        return Ok(RowOutcome::Applied);
                    }
                    self.update_keyed(conn, table, change, values, set)?
                } else {
                    match change.old.as_ref() {
                        Some(old) => {
                            self.update_keyless(conn, table, schema, old.values(), values, set)?
                        }
                        None => {
                            // Keep the row visible rather than lose it.
                            self.insert(conn, table, schema, values, keyed)?;
                            return Ok(RowOutcome::Unmatched);
                        }
                    }
                };
                if changed == 0 {
                    if some_unsent {
                        // No row held under either key, and some values were not sent: there
                        // is no value to keep, and writing NULL would invent one. This only
                        // happens in the replay window after a resumed snapshot, where the row
                        // is already held under the key it has at the end of the window (the
                        // snapshot read it) or a later change moves or deletes it; an invented
                        // NULL here would be carried along by the next key change of a chain.
                        tracing::debug!(
                            table = %schema.name,
                            "update with unsent values of a row held under neither key: skipped"
                        );
                        return Ok(RowOutcome::Applied);
                    }
                    self.insert(conn, table, schema, values, keyed)?;
                }
                Ok(RowOutcome::Applied)
            }
            Op::Delete => {
                if keyed {
                    self.delete_keyed(conn, table, change)?;
                } else if let Some(old) = &change.old {
                    self.delete_keyless(conn, table, schema, old.values())?;
                } else {
                    return Ok(RowOutcome::Unmatched);
                }
                Ok(RowOutcome::Applied)
            }
        }
    }

    /// `UPDATE OR REPLACE … WHERE key`, under the old key, then (the consumer rule for
    /// `Unchanged`) under the new key when no row is held under the old one. Returns how many
    /// rows changed.
    fn update_keyed(
        &mut self,
        conn: &Connection,
        table: &MirrorTable,
        change: &RowChange,
        values: &[Value],
        set: Option<Vec<u32>>,
    ) -> Result<usize, SinkError> {
        let schema = &change.table;
        let key = change.key_values();
        let sql_key = SqlKey {
            generation: table.generation,
            kind: SqlKind::Update,
            set: set.clone(),
            matched: None,
        };
        let sql = self.sql.entry(sql_key).or_insert_with(|| {
            let sets = set_list(schema, set.as_deref());
            let wheres: Vec<String> = key
                .iter()
                .enumerate()
                .map(|(i, (name, _))| format!("{} IS ?{}", quote(name), sets.1 + i + 1))
                .collect();
            format!(
                "UPDATE OR REPLACE {} SET {} WHERE {}",
                quote(&table.sqlite_name),
                sets.0,
                wheres.join(" AND ")
            )
        });
        let key: Vec<&Value> = key.iter().map(|(_, v)| *v).collect();
        let mut changed = update_at_key(conn, sql, values, &key)?;
        // The consumer rule for `Unchanged`: keep the value held under the old key; when no
        // row is held there (a key change replayed after a resumed snapshot already stored
        // the row under its new key), keep the value held under the new key instead of
        // writing NULL over it.
        if changed == 0 && set.is_some() {
            let new_key: Vec<&Value> = schema.key_indexes().filter_map(|i| values.get(i)).collect();
            if new_key != key && !new_key.iter().any(|v| v.is_unchanged()) {
                changed = update_at_key(conn, sql, values, &new_key)?;
            }
        }
        Ok(changed)
    }

    fn delete_keyed(
        &mut self,
        conn: &Connection,
        table: &MirrorTable,
        change: &RowChange,
    ) -> Result<(), SinkError> {
        let key = change.key_values();
        let sql_key = SqlKey {
            generation: table.generation,
            kind: SqlKind::Delete,
            set: None,
            matched: None,
        };
        let sql = self.sql.entry(sql_key).or_insert_with(|| {
            let wheres: Vec<String> = key
                .iter()
                .enumerate()
                .map(|(i, (name, _))| format!("{} IS ?{}", quote(name), i + 1))
                .collect();
            format!(
                "DELETE FROM {} WHERE {}",
                quote(&table.sqlite_name),
                wheres.join(" AND ")
            )
        });
        let mut stmt = conn.prepare_cached(sql)?;
        for (i, (_, v)) in key.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, Bind(v))?;
        }
        stmt.raw_execute()?;
        Ok(())
    }

    fn insert(
        &mut self,
        conn: &Connection,
        table: &MirrorTable,
        schema: &TableSchema,
        values: &[Value],
        keyed: bool,
    ) -> Result<(), SinkError> {
        let key = SqlKey {
            generation: table.generation,
            kind: SqlKind::Insert,
            set: None,
            matched: None,
        };
        let sql = self.sql.entry(key).or_insert_with(|| {
            let cols: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
            let params: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
            format!(
                "INSERT {}INTO {} ({}) VALUES ({})",
                if keyed { "OR REPLACE " } else { "" },
                quote(&table.sqlite_name),
                cols.join(", "),
                params.join(", ")
            )
        });
        let mut stmt = conn.prepare_cached(sql)?;
        for (i, v) in values.iter().enumerate().take(schema.columns.len()) {
            stmt.raw_bind_parameter(i + 1, Bind(v))?;
        }
        stmt.raw_execute()?;
        Ok(())
    }

    fn update_keyless(
        &mut self,
        conn: &Connection,
        table: &MirrorTable,
        schema: &TableSchema,
        old: &[Value],
        new: &[Value],
        set: Option<Vec<u32>>,
    ) -> Result<usize, SinkError> {
        let matched = all_present(old);
        let key = SqlKey {
            generation: table.generation,
            kind: SqlKind::Update,
            set: set.clone(),
            matched: Some(matched.clone()),
        };
        let sql = self.sql.entry(key).or_insert_with(|| {
            let (sets, n) = set_list(schema, set.as_deref());
            format!(
                "UPDATE {} SET {sets} WHERE {}",
                quote(&table.sqlite_name),
                keyless_match(table, schema, &matched, n + 1)
            )
        });
        let mut stmt = conn.prepare_cached(sql)?;
        let mut idx = 1;
        for v in new.iter().filter(|v| !v.is_unchanged()) {
            stmt.raw_bind_parameter(idx, Bind(v))?;
            idx += 1;
        }
        for v in old.iter().filter(|v| !v.is_unchanged()) {
            stmt.raw_bind_parameter(idx, Bind(v))?;
            idx += 1;
        }
        Ok(stmt.raw_execute()?)
    }

    fn delete_keyless(
        &mut self,
        conn: &Connection,
        table: &MirrorTable,
        schema: &TableSchema,
        old: &[Value],
    ) -> Result<(), SinkError> {
        let matched = all_present(old);
        let key = SqlKey {
            generation: table.generation,
            kind: SqlKind::Delete,
            set: None,
            matched: Some(matched.clone()),
        };
        let sql = self.sql.entry(key).or_insert_with(|| {
            format!(
                "DELETE FROM {} WHERE {}",
                quote(&table.sqlite_name),
                keyless_match(table, schema, &matched, 1)
            )
        });
        let mut stmt = conn.prepare_cached(sql)?;
        for (i, v) in old.iter().filter(|v| !v.is_unchanged()).enumerate() {
            stmt.raw_bind_parameter(i + 1, Bind(v))?;
        }
        stmt.raw_execute()?;
        Ok(())
    }
}

/// Runs a keyed `UPDATE` built by [`set_list`]: binds the present values of `values`, then
/// `key`; returns how many rows changed. An update that sends no value changes nothing but
/// counts as matched only if the row exists.
fn update_at_key(
    conn: &Connection,
    sql: &str,
    values: &[Value],
    key: &[&Value],
) -> Result<usize, SinkError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut idx = 1;
    for v in values.iter().filter(|v| !v.is_unchanged()) {
        stmt.raw_bind_parameter(idx, Bind(v))?;
        idx += 1;
    }
    for v in key {
        stmt.raw_bind_parameter(idx, Bind(v))?;
        idx += 1;
    }
    Ok(stmt.raw_execute()?)
}

/// Indexes of the values that are not `Unchanged`, or `None` when all are present.
fn present_mask(values: &[Value]) -> Option<Vec<u32>> {
    if values.iter().all(|v| !v.is_unchanged()) {
        return None;
    }
    Some(all_present(values))
}

/// Indexes of the values that are not `Unchanged`.
fn all_present(values: &[Value]) -> Vec<u32> {
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_unchanged())
        .filter_map(|(i, _)| u32::try_from(i).ok())
        .collect()
}

/// `"a" = ?1, "b" = ?2` for the columns in `mask`, and how many there are.
fn set_list(schema: &TableSchema, mask: Option<&[u32]>) -> (String, usize) {
    let names: Vec<&str> = match mask {
        None => schema.columns.iter().map(|c| c.name.as_str()).collect(),
        Some(m) => m
            .iter()
            .filter_map(|&i| schema.columns.get(i as usize).map(|c| c.name.as_str()))
            .collect(),
    };
    let sets: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{} = ?{}", quote(n), i + 1))
        .collect();
    (sets.join(", "), names.len())
}

/// `rowid = (SELECT rowid FROM t WHERE a IS ?n AND … LIMIT 1)` over the old image's present
/// columns, numbering parameters from `first`: a keyless table changes one row per change,
/// even when it holds exact duplicates.
fn keyless_match(table: &MirrorTable, schema: &TableSchema, mask: &[u32], first: usize) -> String {
    let wheres: Vec<String> = mask
        .iter()
        .enumerate()
        .filter_map(|(i, &c)| {
            schema
                .columns
                .get(c as usize)
                .map(|col| format!("{} IS ?{}", quote(&col.name), first + i))
        })
        .collect();
    format!(
        "rowid = (SELECT rowid FROM {} WHERE {} LIMIT 1)",
        quote(&table.sqlite_name),
        if wheres.is_empty() {
            "1".to_string()
        } else {
            wheres.join(" AND ")
        }
    )
}

/// Binds a [`Value`] without copying (`Unchanged` binds NULL).
struct Bind<'a>(&'a Value);

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null | Value::Unchanged => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}
