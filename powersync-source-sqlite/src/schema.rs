//! The mirrored tables: SQLite names, creating, altering and recreating tables so they match
//! the source schema, and the table entries of the state table.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use powersync_source_core::{TableName, TableSchema};
use rusqlite::Connection;

use crate::error::SinkError;
use crate::state::{self, StoredTable, STATE_TABLE};

/// A SQLite table's columns and primary key columns (in key order).
type ActualTable = (Vec<String>, Vec<String>);

/// One mirrored table as the row statements need it.
#[derive(Debug)]
pub(crate) struct MirrorTable {
    pub(crate) sqlite_name: String,
    pub(crate) schema: Arc<TableSchema>,
    /// Unique per table shape; keys the statement cache, so a schema change never reuses a
    /// statement built for the old columns.
    pub(crate) generation: u64,
}

/// The mirrored tables by source name.
#[derive(Debug)]
pub(crate) struct Tables {
    tables: HashMap<TableName, MirrorTable>,
    /// Bare table names selected under two or more schemas: they get qualified SQLite names.
    colliding: HashSet<String>,
    next_generation: u64,
}

impl Tables {
    /// The tables recorded in the state table.
    pub(crate) fn load(conn: &Connection) -> Result<Tables, SinkError> {
        let mut tables = Tables {
            tables: HashMap::new(),
            colliding: HashSet::new(),
            next_generation: 1,
        };
        for stored in state::tables(conn)? {
            let generation = tables.bump_generation();
            tables.tables.insert(
                stored.schema.name.clone(),
                MirrorTable {
                    sqlite_name: stored.sqlite_name,
                    schema: Arc::new(stored.schema),
                    generation,
                },
            );
        }
        Ok(tables)
    }

    pub(crate) fn get(&self, name: &TableName) -> Option<&MirrorTable> {
        self.tables.get(name)
    }

    /// Source name and SQLite name of every table, sorted.
    pub(crate) fn names(&self) -> Vec<(TableName, String)> {
        let mut v: Vec<_> = self
            .tables
            .iter()
            .map(|(n, t)| (n.clone(), t.sqlite_name.clone()))
            .collect();
        v.sort();
        v
    }

    pub(crate) fn sqlite_names(&self) -> impl Iterator<Item = &str> {
        self.tables.values().map(|t| t.sqlite_name.as_str())
    }

    pub(crate) fn clear(&mut self) {
        self.tables.clear();
    }

    /// Records which bare names the source selected under several schemas.
    pub(crate) fn plan_names(&mut self, selected: &[TableSchema]) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for t in selected {
            *seen.entry(t.name.name.as_str()).or_default() += 1;
        }
        self.colliding = seen
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(name, _)| name.to_owned())
            .collect();
    }

    /// Whether rows of `schema` can be applied without syncing the table first.
    pub(crate) fn knows(&self, schema: &Arc<TableSchema>) -> bool {
        match self.tables.get(&schema.name) {
            Some(t) => Arc::ptr_eq(&t.schema, schema) || *t.schema == **schema,
            None => false,
        }
    }

    /// Makes the SQLite table match `schema` (creating, altering or recreating it) and stores
    /// the schema in the state table. With `force`, checks SQLite even when the schema is
    /// already known (after a rollback undid a change). Returns whether anything was written.
    pub(crate) fn sync(
        &mut self,
        conn: &Connection,
        schema: &Arc<TableSchema>,
        force: bool,
    ) -> Result<bool, SinkError> {
        if let Some(t) = self.tables.get_mut(&schema.name) {
            if !force && *t.schema == **schema {
                // Same shape (e.g. announced again after a restart): share the Arc so rows
                // take the fast path.
                t.schema = schema.clone();
                return Ok(false);
            }
        }
        let sqlite_name = match self.tables.get(&schema.name) {
            Some(t) => t.sqlite_name.clone(),
            None => self.pick_name(&schema.name),
        };
        let want: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
        let want_pk = schema.key_names();
        match actual_table(conn, &sqlite_name)? {
            None => create_table(conn, &sqlite_name, schema)?,
            Some((columns, pk)) => {
                let same_pk = pk.len() == want_pk.len()
                    && pk
                        .iter()
                        .zip(&want_pk)
                        .all(|(a, b)| a.eq_ignore_ascii_case(b));
                if !same_pk {
                    tracing::info!(table = %schema.name, "row identity changed: recreating {sqlite_name}");
                    recreate_table(conn, &sqlite_name, schema, &columns)?;
                } else {
                    alter_columns(conn, &sqlite_name, schema, &columns, &want)?;
                }
            }
        }
        state::write_table(
            conn,
            &StoredTable {
                sqlite_name: sqlite_name.clone(),
                schema: (**schema).clone(),
            },
        )?;
        let generation = self.bump_generation();
        self.tables.insert(
            schema.name.clone(),
            MirrorTable {
                sqlite_name,
                schema: schema.clone(),
                generation,
            },
        );
        Ok(true)
    }

    fn bump_generation(&mut self) -> u64 {
        let g = self.next_generation;
        self.next_generation += 1;
        g
    }

    /// The SQLite name for a new table: the bare name, else `schema.name` (when the bare
    /// name is selected under several schemas or taken), else `schema.name_2`, ….
    fn pick_name(&self, name: &TableName) -> String {
        let taken = |candidate: &str| {
            candidate.eq_ignore_ascii_case(STATE_TABLE)
                // SQLite reserves these names for itself.
                || candidate
                    .get(..7)
                    .is_some_and(|p| p.eq_ignore_ascii_case("sqlite_"))
                || self
                    .tables
                    .iter()
                    .any(|(n, t)| n != name && t.sqlite_name.eq_ignore_ascii_case(candidate))
        };
        let bare = name.name.clone();
        if !self.colliding.contains(&bare) && !taken(&bare) {
            return bare;
        }
        let qualified = name.to_string();
        if !taken(&qualified) {
            return qualified;
        }
        (2..)
            .map(|i| format!("{qualified}_{i}"))
            .find(|c| !taken(c))
            .unwrap_or(qualified)
    }
}

/// Adds the columns the source added and drops the ones it dropped (recreating the table
/// when SQLite cannot drop a column, e.g. one in an index).
fn alter_columns(
    conn: &Connection,
    sqlite_name: &str,
    schema: &TableSchema,
    columns: &[String],
    want: &[&str],
) -> Result<(), SinkError> {
    let has = |list: &[String], c: &str| list.iter().any(|x| x.eq_ignore_ascii_case(c));
    for c in want {
        if !has(columns, c) {
            tracing::info!(table = %schema.name, "adding column {c}");
            conn.execute_batch(&format!(
                "ALTER TABLE {} ADD COLUMN {}",
                quote(sqlite_name),
                quote(c)
            ))?;
        }
    }
    for c in columns {
        if !want.iter().any(|w| w.eq_ignore_ascii_case(c)) {
            tracing::info!(table = %schema.name, "dropping column {c}");
            if let Err(e) = conn.execute_batch(&format!(
                "ALTER TABLE {} DROP COLUMN {}",
                quote(sqlite_name),
                quote(c)
            )) {
                tracing::debug!("DROP COLUMN failed ({e}); recreating the table");
                let (columns, _) = actual_table(conn, sqlite_name)?.unwrap_or_default();
                return recreate_table(conn, sqlite_name, schema, &columns);
            }
        }
    }
    Ok(())
}

/// Columns and primary key of a SQLite table, or `None` if it does not exist.
fn actual_table(conn: &Connection, sqlite_name: &str) -> Result<Option<ActualTable>, SinkError> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", quote(sqlite_name)))?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(5)?)))?;
    let mut columns = Vec::new();
    let mut pk = Vec::new();
    for row in rows {
        let (name, pk_pos) = row?;
        if pk_pos > 0 {
            pk.push((pk_pos, name.clone()));
        }
        columns.push(name);
    }
    if columns.is_empty() {
        return Ok(None);
    }
    pk.sort();
    Ok(Some((columns, pk.into_iter().map(|(_, n)| n).collect())))
}

/// `CREATE TABLE` with untyped columns (no affinity converts a value) and the source's row
/// identity as primary key.
fn create_sql(sqlite_name: &str, schema: &TableSchema) -> String {
    let mut sql = format!("CREATE TABLE {} (", quote(sqlite_name));
    let cols: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
    sql.push_str(&cols.join(", "));
    let key = schema.key_names();
    if !key.is_empty() {
        let key: Vec<String> = key.iter().map(|k| quote(k)).collect();
        sql.push_str(&format!(", PRIMARY KEY ({})", key.join(", ")));
    }
    sql.push(')');
    sql
}

fn create_table(
    conn: &Connection,
    sqlite_name: &str,
    schema: &TableSchema,
) -> Result<(), SinkError> {
    if schema.columns.is_empty() {
        return Err(SinkError::Unsupported(format!(
            "table {} has no columns; SQLite cannot mirror it (leave it out with --table)",
            schema.name
        )));
    }
    tracing::debug!(table = %schema.name, "creating SQLite table {sqlite_name}");
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS {0}; {1}",
        quote(sqlite_name),
        create_sql(sqlite_name, schema)
    ))?;
    Ok(())
}

/// Rebuilds a table under a new shape (new key, undroppable column), keeping the rows'
/// values of the columns both shapes have.
fn recreate_table(
    conn: &Connection,
    sqlite_name: &str,
    schema: &TableSchema,
    old_columns: &[String],
) -> Result<(), SinkError> {
    let tmp = format!("_powersync_tmp_{sqlite_name}");
    let common: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| old_columns.iter().any(|o| o.eq_ignore_ascii_case(&c.name)))
        .map(|c| quote(&c.name))
        .collect();
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS {tmp_q}; {create};",
        tmp_q = quote(&tmp),
        create = create_sql(&tmp, schema)
    ))?;
    if !common.is_empty() {
        let cols = common.join(", ");
        conn.execute_batch(&format!(
            "INSERT OR REPLACE INTO {} ({cols}) SELECT {cols} FROM {}",
            quote(&tmp),
            quote(sqlite_name)
        ))?;
    }
    conn.execute_batch(&format!(
        "DROP TABLE {0}; ALTER TABLE {1} RENAME TO {0}",
        quote(sqlite_name),
        quote(&tmp)
    ))?;
    Ok(())
}

/// A SQLite identifier in double quotes (embedded quotes doubled), for table and column
/// names taken from the source.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
