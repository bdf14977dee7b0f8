//! Applies a change stream to a SQLite file, transactionally with the stream position.
//!
//! # Layout of the SQLite file
//! - One table per source table, named by the source table's name (`items`), or
//!   `schema.name` (`sales.items`) when two selected tables share a name. Same column names as
//!   the source, in the source's order (columns added later go last).
//! - Columns are declared **without a type**. SQLite then stores every value exactly as the
//!   connector produced it (INTEGER, REAL, TEXT or BLOB; see the normalization table in the
//!   core crate's docs): a declared type would give the column an affinity that converts
//!   values (`numeric` text such as `12.50` into a REAL, a 20-digit unsigned integer into a
//!   lossy REAL). Readers use `typeof()`, or the source types kept in the state table.
//! - Primary key: the source's row identity (primary key, replica identity index, or every
//!   column for PostgreSQL `REPLICA IDENTITY FULL` without a primary key, so exact duplicate
//!   rows of such a table are stored once). A table without any identity gets no primary key,
//!   and its updates and deletes match one row by every column of the old image.
//! - `_powersync_mirror_state(key TEXT PRIMARY KEY, value TEXT)`:
//!   - `checkpoint`: where to resume: a checkpoint, or a snapshot resume token while the
//!     initial snapshot runs;
//!   - `table:<schema>.<name>`: `{"sqlite_name": …, "schema": <TableSchema JSON>}` for every
//!     mirrored table (source column types included).
//!
//! # Consistency
//! Each source transaction is applied inside a `SAVEPOINT`; consecutive transactions are
//! grouped into one SQLite transaction, which also writes `checkpoint`. An
//! [`ChangeEvent::Abort`] rolls back to the savepoint. A crash at any point leaves the file at
//! the end of some committed group, with the matching position: restarting from it loses
//! nothing and applies nothing twice. The host acknowledges the source only after the SQLite
//! commit. Snapshot rows are committed at each chunk end (with the resume token), table end
//! and snapshot end (with the checkpoint).
//!
//! Row application: inserts are upserts (`INSERT OR REPLACE`: the replay window after a
//! resumed snapshot may resend a row); updates find the row by the old key (the key may
//! change), set only the columns the source sent (unchanged TOAST columns keep their stored
//! value) and insert the row if it is missing (unsent columns NULL); deletes by key are no-ops
//! when the row is missing. Schema changes add and drop columns; a changed key recreates the
//! table and copies its rows; a truncate empties the table.
//!
//! `synchronous=NORMAL` (the default) survives a crash of the process at any point; after a
//! power loss the last groups may be lost although acknowledged. Use
//! [`MirrorOptions::durable`] (`mirror --durable`) for `synchronous=FULL`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use powersync_source_core::{
    ChangeEvent, Checkpoint, Op, RowChange, SnapshotProgress, SnapshotResume, StartFrom, TableName,
    TableProgress, TableSchema, Value,
};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql};
use serde::{Deserialize, Serialize};

use crate::cli::AppError;

/// Name of the state table.
pub const STATE_TABLE: &str = "_powersync_mirror_state";
/// State key of the stored position.
pub const POSITION_KEY: &str = "checkpoint";
/// Prefix of the state keys holding table schemas.
pub const TABLE_KEY_PREFIX: &str = "table:";

/// Options of a [`Mirror`].
#[derive(Debug, Clone, Default)]
pub struct MirrorOptions {
    /// `synchronous=FULL` instead of `NORMAL`: acknowledged changes survive a power loss too.
    pub durable: bool,
}

/// What the caller should do after [`Mirror::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Nothing special.
    Continue,
    /// Commit now (a snapshot chunk, table or the snapshot ended).
    CommitNow,
}

/// A table's entry in the state table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredTable {
    /// The SQLite table's name.
    pub sqlite_name: String,
    /// The source schema it mirrors.
    pub schema: TableSchema,
}

/// A SQLite table's columns and primary key columns (in key order).
type ActualTable = (Vec<String>, Vec<String>);

#[derive(Debug)]
struct MirrorTable {
    sqlite_name: String,
    schema: Arc<TableSchema>,
    /// Unique per table shape; keys the statement cache.
    generation: u64,
}

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

/// A SQLite file kept equal to a source.
#[derive(Debug)]
pub struct Mirror {
    conn: Connection,
    tables: HashMap<TableName, MirrorTable>,
    colliding: HashSet<String>,
    sql: HashMap<SqlKey, String>,
    next_generation: u64,
    group_open: bool,
    group_started: Option<Instant>,
    group_rows: u64,
    tx_rows: u64,
    in_source_tx: bool,
    tx_schema_changes: Vec<TableName>,
    pending_position: Option<String>,
    pending_checkpoint: Option<Checkpoint>,
    snapshot_phase: bool,
    last_resume: Option<SnapshotResume>,
    stored_position: Option<String>,
    warned_keyless: HashSet<TableName>,
}

impl Mirror {
    /// Opens (or creates) the SQLite file and reads the stored position and tables.
    pub fn open(path: &Path, options: &MirrorOptions) -> Result<Mirror, AppError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!("SQLite journal mode is {mode}, not WAL");
        }
        conn.execute_batch(if options.durable {
            "PRAGMA synchronous=FULL"
        } else {
            "PRAGMA synchronous=NORMAL"
        })?;
        conn.execute_batch("PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY")?;
        conn.set_prepared_statement_cache_capacity(256);
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {STATE_TABLE} (key TEXT PRIMARY KEY, value TEXT)"
        ))?;
        let stored_position: Option<String> = conn
            .query_row(
                &format!("SELECT value FROM {STATE_TABLE} WHERE key = ?1"),
                [POSITION_KEY],
                |r| r.get(0),
            )
            .optional()?
            .filter(|s: &String| !s.trim().is_empty());
        let mut mirror = Mirror {
            conn,
            tables: HashMap::new(),
            colliding: HashSet::new(),
            sql: HashMap::new(),
            next_generation: 1,
            group_open: false,
            group_started: None,
            group_rows: 0,
            tx_rows: 0,
            in_source_tx: false,
            tx_schema_changes: Vec::new(),
            pending_position: None,
            pending_checkpoint: None,
            snapshot_phase: false,
            last_resume: None,
            stored_position,
            warned_keyless: HashSet::new(),
        };
        for stored in mirror.stored_tables()? {
            let generation = mirror.bump_generation();
            mirror.tables.insert(
                stored.schema.name.clone(),
                MirrorTable {
                    sqlite_name: stored.sqlite_name,
                    schema: Arc::new(stored.schema),
                    generation,
                },
            );
        }
        Ok(mirror)
    }

    /// The SQLite connection (for reading).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The stored position (checkpoint or snapshot token), if any.
    pub fn stored_position(&self) -> Option<&str> {
        self.stored_position.as_deref()
    }

    /// Where to start: the stored position, else from the beginning.
    pub fn start_from(&self) -> Result<StartFrom, AppError> {
        match &self.stored_position {
            Some(s) => Ok(StartFrom::parse(s)?),
            None => Ok(StartFrom::Beginning),
        }
    }

    /// The mirrored tables: source name and SQLite name.
    pub fn tables(&self) -> Vec<(TableName, String)> {
        let mut v: Vec<_> = self
            .tables
            .iter()
            .map(|(n, t)| (n.clone(), t.sqlite_name.clone()))
            .collect();
        v.sort();
        v
    }

    /// The tables stored in the state table.
    pub fn stored_tables(&self) -> Result<Vec<StoredTable>, AppError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT key, value FROM {STATE_TABLE} WHERE key LIKE '{TABLE_KEY_PREFIX}%' ORDER BY key"
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (key, value) = row?;
            let stored: StoredTable = serde_json::from_str(&value).map_err(|e| {
                AppError::Other(format!(
                    "{STATE_TABLE} entry `{key}` is corrupt ({e}); delete the SQLite file to start over"
                ))
            })?;
            out.push(stored);
        }
        Ok(out)
    }

    /// Tells which tables the source selected, so that tables sharing a name get
    /// schema-qualified SQLite names.
    pub fn plan_names(&mut self, selected: &[TableSchema]) {
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

    /// Prepares a run starting from `from`: from the beginning, every mirrored table is
    /// dropped first (the snapshot recreates them).
    pub fn begin_run(&mut self, from: &StartFrom) -> Result<(), AppError> {
        match from {
            StartFrom::Beginning => {
                self.reset()?;
                self.snapshot_phase = true;
                self.last_resume = None;
            }
            StartFrom::Snapshot(resume) => {
                self.snapshot_phase = true;
                self.last_resume = Some(resume.clone());
            }
            StartFrom::Checkpoint(_) => {
                self.snapshot_phase = false;
                self.last_resume = None;
            }
        }
        Ok(())
    }

    /// Drops every mirrored table and forgets the position.
    pub fn reset(&mut self) -> Result<(), AppError> {
        let mut names: Vec<String> = self
            .stored_tables()?
            .into_iter()
            .map(|t| t.sqlite_name)
            .collect();
        names.extend(self.tables.values().map(|t| t.sqlite_name.clone()));
        names.sort();
        names.dedup();
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| -> Result<(), AppError> {
            for name in &names {
                self.conn
                    .execute_batch(&format!("DROP TABLE IF EXISTS {}", quote(name)))?;
            }
            self.conn.execute(
                &format!(
                    "DELETE FROM {STATE_TABLE} WHERE key = ?1 OR key LIKE '{TABLE_KEY_PREFIX}%'"
                ),
                [POSITION_KEY],
            )?;
            Ok(())
        })();
        match result {
            Ok(()) => self.conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        self.tables.clear();
        self.sql.clear();
        self.stored_position = None;
        Ok(())
    }

    /// Whether no source transaction is half-applied (a commit is possible).
    pub fn at_boundary(&self) -> bool {
        !self.in_source_tx
    }

    /// Whether the initial snapshot is running.
    pub fn in_snapshot_phase(&self) -> bool {
        self.snapshot_phase
    }

    /// Whether there is something to commit.
    pub fn has_pending(&self) -> bool {
        self.group_open || self.pending_position.is_some()
    }

    /// Rows applied in the open group.
    pub fn group_rows(&self) -> u64 {
        self.group_rows
    }

    /// When the open group (or the pending position) started.
    pub fn group_started(&self) -> Option<Instant> {
        self.group_started
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &ChangeEvent) -> Result<After, AppError> {
        match event {
            ChangeEvent::Begin(_) => {
                self.open_group()?;
                if self.in_source_tx {
                    tracing::warn!("begin inside an open transaction; keeping its changes");
                    self.exec_cached("RELEASE src")?;
                }
                self.exec_cached("SAVEPOINT src")?;
                self.in_source_tx = true;
                self.tx_rows = 0;
                self.tx_schema_changes.clear();
            }
            ChangeEvent::Row(change) => {
                self.open_group()?;
                self.apply_row(change)?;
                self.group_rows += 1;
                self.tx_rows += 1;
            }
            ChangeEvent::Truncate(t) => {
                self.open_group()?;
                for name in &t.tables {
                    if let Some(table) = self.tables.get(name) {
                        self.conn
                            .execute_batch(&format!("DELETE FROM {}", quote(&table.sqlite_name)))?;
                    }
                }
            }
            ChangeEvent::Schema(schema) => {
                self.open_group()?;
                self.sync_table(schema, false)?;
            }
            ChangeEvent::Commit(commit) => {
                if self.in_source_tx {
                    self.exec_cached("RELEASE src")?;
                    self.in_source_tx = false;
                }
                self.tx_schema_changes.clear();
                self.set_pending(
                    Some(commit.checkpoint.clone()),
                    commit.checkpoint.to_string(),
                );
            }
            ChangeEvent::Abort => self.abort_transaction()?,
            ChangeEvent::Keepalive(checkpoint) => {
                if !self.in_source_tx && !self.snapshot_phase {
                    self.set_pending(Some(checkpoint.clone()), checkpoint.to_string());
                }
            }
            ChangeEvent::CheckpointObserved(_) => {}
            ChangeEvent::Snapshot(p) => return self.on_snapshot(p),
        }
        Ok(After::Continue)
    }

    fn on_snapshot(&mut self, p: &SnapshotProgress) -> Result<After, AppError> {
        if !self.snapshot_phase || self.in_source_tx {
            // A table first seen while streaming: its rows belong to the transaction.
            return Ok(After::Continue);
        }
        match p {
            SnapshotProgress::TableStarted { .. } => Ok(After::Continue),
            SnapshotProgress::ChunkDone { resume, .. } => {
                self.set_pending(None, resume.to_token());
                self.last_resume = Some((**resume).clone());
                Ok(After::CommitNow)
            }
            SnapshotProgress::TableDone { table, rows } => {
                if let Some(resume) = self.last_resume.as_mut() {
                    resume
                        .tables
                        .insert(table.to_string(), TableProgress::Done { rows: *rows });
                    let token = resume.to_token();
                    self.set_pending(None, token);
                }
                Ok(After::CommitNow)
            }
            SnapshotProgress::Done { checkpoint } => {
                self.set_pending(Some(checkpoint.clone()), checkpoint.to_string());
                self.snapshot_phase = false;
                self.last_resume = None;
                Ok(After::CommitNow)
            }
        }
    }

    fn set_pending(&mut self, checkpoint: Option<Checkpoint>, position: String) {
        self.group_started.get_or_insert_with(Instant::now);
        self.pending_position = Some(position);
        // A token after a checkpoint never happens; keep the latest checkpoint to ack.
        if checkpoint.is_some() {
            self.pending_checkpoint = checkpoint;
        }
    }

    /// Commits the open group with the latest position; returns the checkpoint to
    /// acknowledge, if any. Does nothing in the middle of a source transaction.
    pub fn commit(&mut self) -> Result<Option<Checkpoint>, AppError> {
        if self.in_source_tx || !self.has_pending() {
            return Ok(None);
        }
        self.open_group()?;
        if let Some(position) = &self.pending_position {
            self.conn
                .prepare_cached(&format!(
                    "INSERT OR REPLACE INTO {STATE_TABLE} (key, value) VALUES (?1, ?2)"
                ))?
                .execute([POSITION_KEY, position.as_str()])?;
        }
        self.exec_cached("COMMIT")?;
        self.group_open = false;
        self.group_started = None;
        self.group_rows = 0;
        if let Some(p) = self.pending_position.take() {
            self.stored_position = Some(p);
        }
        Ok(self.pending_checkpoint.take())
    }

    /// Writes `key = value` into the state table inside the open group (opening one if
    /// needed), so it becomes durable atomically with the rows of the next [`Mirror::commit`].
    /// Hosts use it for positions of their own (e.g. a JetStream stream sequence); the keys
    /// [`POSITION_KEY`] and `table:…` belong to the mirror.
    pub fn stage_state(&mut self, key: &str, value: &str) -> Result<(), AppError> {
        self.open_group()?;
        self.conn
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO {STATE_TABLE} (key, value) VALUES (?1, ?2)"
            ))?
            .execute([key, value])?;
        Ok(())
    }

    /// Reads a state value written by [`Mirror::stage_state`] (committed or staged).
    pub fn state(&self, key: &str) -> Result<Option<String>, AppError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT value FROM {STATE_TABLE} WHERE key = ?1"),
                [key],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Discards a half-applied source transaction (the stream failed in its middle).
    pub fn abort_transaction(&mut self) -> Result<(), AppError> {
        if !self.in_source_tx {
            return Ok(());
        }
        self.conn.execute_batch("ROLLBACK TO src; RELEASE src")?;
        self.in_source_tx = false;
        self.group_rows = self.group_rows.saturating_sub(self.tx_rows);
        self.tx_rows = 0;
        // The rollback also undid schema changes the stream will not repeat: redo them.
        let changed = std::mem::take(&mut self.tx_schema_changes);
        for name in changed {
            if let Some(schema) = self.tables.get(&name).map(|t| t.schema.clone()) {
                self.sync_table(&schema, true)?;
            }
        }
        self.tx_schema_changes.clear();
        Ok(())
    }

    fn open_group(&mut self) -> Result<(), AppError> {
        if !self.group_open {
            self.exec_cached("BEGIN IMMEDIATE")?;
            self.group_open = true;
            self.group_started.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    /// Runs a parameterless statement through the statement cache (no parsing per call).
    fn exec_cached(&self, sql: &str) -> Result<(), AppError> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    fn bump_generation(&mut self) -> u64 {
        let g = self.next_generation;
        self.next_generation += 1;
        g
    }

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

    /// Columns and primary key of a SQLite table, or `None` if it does not exist.
    fn actual_table(&self, sqlite_name: &str) -> Result<Option<ActualTable>, AppError> {
        let mut stmt = self
            .conn
            .prepare(&format!("PRAGMA table_info({})", quote(sqlite_name)))?;
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

    /// Makes the SQLite table match `schema` (creating, altering or recreating it) and
    /// stores the schema. With `force`, checks SQLite even when the schema is already known.
    fn sync_table(&mut self, schema: &Arc<TableSchema>, force: bool) -> Result<(), AppError> {
        if let Some(t) = self.tables.get_mut(&schema.name) {
            if !force && *t.schema == **schema {
                // Same shape (e.g. announced again after a restart): share the Arc so rows
                // take the fast path.
                t.schema = schema.clone();
                return Ok(());
            }
        }
        let sqlite_name = match self.tables.get(&schema.name) {
            Some(t) => t.sqlite_name.clone(),
            None => self.pick_name(&schema.name),
        };
        let want: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
        let want_pk = schema.key_names();
        match self.actual_table(&sqlite_name)? {
            None => self.create_table(&sqlite_name, schema)?,
            Some((columns, pk)) => {
                let same_pk = pk.len() == want_pk.len()
                    && pk
                        .iter()
                        .zip(&want_pk)
                        .all(|(a, b)| a.eq_ignore_ascii_case(b));
                if !same_pk {
                    tracing::info!(table = %schema.name, "row identity changed: recreating {sqlite_name}");
                    self.recreate_table(&sqlite_name, schema, &columns)?;
                } else {
                    let has =
                        |list: &[String], c: &str| list.iter().any(|x| x.eq_ignore_ascii_case(c));
                    for c in &want {
                        if !has(&columns, c) {
                            tracing::info!(table = %schema.name, "adding column {c}");
                            self.conn.execute_batch(&format!(
                                "ALTER TABLE {} ADD COLUMN {}",
                                quote(&sqlite_name),
                                quote(c)
                            ))?;
                        }
                    }
                    let mut recreate = false;
                    for c in &columns {
                        if !want.iter().any(|w| w.eq_ignore_ascii_case(c)) {
                            tracing::info!(table = %schema.name, "dropping column {c}");
                            if let Err(e) = self.conn.execute_batch(&format!(
                                "ALTER TABLE {} DROP COLUMN {}",
                                quote(&sqlite_name),
                                quote(c)
                            )) {
                                tracing::debug!("DROP COLUMN failed ({e}); recreating the table");
                                recreate = true;
                                break;
                            }
                        }
                    }
                    if recreate {
                        let (columns, _) = self.actual_table(&sqlite_name)?.unwrap_or_default();
                        self.recreate_table(&sqlite_name, schema, &columns)?;
                    }
                }
            }
        }
        let stored = StoredTable {
            sqlite_name: sqlite_name.clone(),
            schema: (**schema).clone(),
        };
        let json = serde_json::to_string(&stored)
            .map_err(|e| AppError::Other(format!("serializing a table schema: {e}")))?;
        self.conn.execute(
            &format!("INSERT OR REPLACE INTO {STATE_TABLE} (key, value) VALUES (?1, ?2)"),
            [format!("{TABLE_KEY_PREFIX}{}", schema.name), json],
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
        if self.in_source_tx && !self.tx_schema_changes.contains(&schema.name) {
            self.tx_schema_changes.push(schema.name.clone());
        }
        Ok(())
    }

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

    fn create_table(&mut self, sqlite_name: &str, schema: &TableSchema) -> Result<(), AppError> {
        if schema.columns.is_empty() {
            return Err(AppError::Other(format!(
                "table {} has no columns; SQLite cannot mirror it (leave it out with --table)",
                schema.name
            )));
        }
        tracing::debug!(table = %schema.name, "creating SQLite table {sqlite_name}");
        self.conn.execute_batch(&format!(
            "DROP TABLE IF EXISTS {0}; {1}",
            quote(sqlite_name),
            Self::create_sql(sqlite_name, schema)
        ))?;
        Ok(())
    }

    fn recreate_table(
        &mut self,
        sqlite_name: &str,
        schema: &TableSchema,
        old_columns: &[String],
    ) -> Result<(), AppError> {
        let tmp = format!("_powersync_tmp_{sqlite_name}");
        let common: Vec<String> = schema
            .columns
            .iter()
            .filter(|c| old_columns.iter().any(|o| o.eq_ignore_ascii_case(&c.name)))
            .map(|c| quote(&c.name))
            .collect();
        self.conn.execute_batch(&format!(
            "DROP TABLE IF EXISTS {tmp_q}; {create};",
            tmp_q = quote(&tmp),
            create = Self::create_sql(&tmp, schema)
        ))?;
        if !common.is_empty() {
            let cols = common.join(", ");
            self.conn.execute_batch(&format!(
                "INSERT OR REPLACE INTO {} ({cols}) SELECT {cols} FROM {}",
                quote(&tmp),
                quote(sqlite_name)
            ))?;
        }
        self.conn.execute_batch(&format!(
            "DROP TABLE {0}; ALTER TABLE {1} RENAME TO {0}",
            quote(sqlite_name),
            quote(&tmp)
        ))?;
        Ok(())
    }

    fn apply_row(&mut self, change: &RowChange) -> Result<(), AppError> {
        let known = match self.tables.get(&change.table.name) {
            Some(t) => Arc::ptr_eq(&t.schema, &change.table) || *t.schema == *change.table,
            None => false,
        };
        if !known {
            self.sync_table(&change.table, false)?;
        }
        let Some(table) = self.tables.get(&change.table.name) else {
            return Ok(());
        };
        let schema = &change.table;
        let keyed = schema.columns.iter().any(|c| c.is_key);
        let mut unmatched = false;
        match change.op {
            Op::Insert => {
                let Some(new) = &change.new else {
                    return Ok(());
                };
                insert_row(
                    &self.conn,
                    &mut self.sql,
                    table,
                    schema,
                    new.values(),
                    keyed,
                )?;
            }
            Op::Update => {
                let Some(new) = &change.new else {
                    return Ok(());
                };
                let values = new.values();
                let set = present_mask(values);
                let changed = if keyed {
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
                    if set.as_ref().is_some_and(|s| s.is_empty()) {
                        // Nothing sent: nothing to write.
                        return Ok(());
                    }
                    let mut changed = update_at_key(&self.conn, sql, values, &key)?;
                    // The consumer rule for `Unchanged`: keep the value held under the old key;
                    // when no row is held there (a key change replayed after a resumed
                    // snapshot already stored the row under its new key), keep the value held
                    // under the new key instead of writing NULL over it.
                    if changed == 0 && set.is_some() {
                        let new_key: Vec<&Value> =
                            schema.key_indexes().filter_map(|i| values.get(i)).collect();
                        if new_key != key && !new_key.iter().any(|v| v.is_unchanged()) {
                            changed = update_at_key(&self.conn, sql, values, &new_key)?;
                        }
                    }
                    changed
                } else {
                    match change.old.as_ref() {
                        Some(old) => update_keyless(
                            &self.conn,
                            &mut self.sql,
                            table,
                            schema,
                            old.values(),
                            values,
                            set,
                        )?,
                        None => {
                            unmatched = true;
                            0
                        }
                    }
                };
                if changed == 0 {
                    insert_row(&self.conn, &mut self.sql, table, schema, values, keyed)?;
                }
            }
            Op::Delete => {
                if keyed {
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
                    let mut stmt = self.conn.prepare_cached(sql)?;
                    for (i, (_, v)) in key.iter().enumerate() {
                        stmt.raw_bind_parameter(i + 1, Bind(v))?;
                    }
                    stmt.raw_execute()?;
                } else if let Some(old) = &change.old {
                    delete_keyless(&self.conn, &mut self.sql, table, schema, old.values())?;
                } else {
                    unmatched = true;
                }
            }
        }
        if unmatched {
            self.warn_keyless(&change.table.name);
        }
        Ok(())
    }

    fn warn_keyless(&mut self, name: &TableName) {
        if self.warned_keyless.insert(name.clone()) {
            tracing::warn!(
                table = %name,
                "the table has no row identity and the source sent no old row: updates and \
                 deletes cannot be matched (set REPLICA IDENTITY FULL or add a primary key)"
            );
        }
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
) -> Result<usize, AppError> {
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
    Some(
        values
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_unchanged())
            .map(|(i, _)| i as u32)
            .collect(),
    )
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

fn insert_row(
    conn: &Connection,
    cache: &mut HashMap<SqlKey, String>,
    table: &MirrorTable,
    schema: &TableSchema,
    values: &[Value],
    keyed: bool,
) -> Result<(), AppError> {
    let key = SqlKey {
        generation: table.generation,
        kind: SqlKind::Insert,
        set: None,
        matched: None,
    };
    let sql = cache.entry(key).or_insert_with(|| {
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

/// `rowid = (SELECT rowid FROM t WHERE a IS ?n AND … LIMIT 1)` over the old image's present
/// columns, numbering parameters from `first`.
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

fn all_present(values: &[Value]) -> Vec<u32> {
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_unchanged())
        .map(|(i, _)| i as u32)
        .collect()
}

fn update_keyless(
    conn: &Connection,
    cache: &mut HashMap<SqlKey, String>,
    table: &MirrorTable,
    schema: &TableSchema,
    old: &[Value],
    new: &[Value],
    set: Option<Vec<u32>>,
) -> Result<usize, AppError> {
    let matched = all_present(old);
    let key = SqlKey {
        generation: table.generation,
        kind: SqlKind::Update,
        set: set.clone(),
        matched: Some(matched.clone()),
    };
    let sql = cache.entry(key).or_insert_with(|| {
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
    conn: &Connection,
    cache: &mut HashMap<SqlKey, String>,
    table: &MirrorTable,
    schema: &TableSchema,
    old: &[Value],
) -> Result<(), AppError> {
    let matched = all_present(old);
    let key = SqlKey {
        generation: table.generation,
        kind: SqlKind::Delete,
        set: None,
        matched: Some(matched.clone()),
    };
    let sql = cache.entry(key).or_insert_with(|| {
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

/// A SQLite identifier in double quotes.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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

#[cfg(test)]
mod tests {
    use powersync_source_core::{Begin, Column, Commit, OldImage, Row, RowIdentity, Truncate};

    use super::*;

    fn schema(cols: &[(&str, bool)]) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            name: TableName::new("public", "t"),
            source_id: Some(1),
            columns: cols
                .iter()
                .map(|(n, k)| {
                    let c = Column::new(*n, "text");
                    if *k {
                        c.key()
                    } else {
                        c
                    }
                })
                .collect(),
            identity: RowIdentity::PrimaryKey,
        })
    }

    fn row(
        op: Op,
        s: &Arc<TableSchema>,
        old: Option<Vec<Value>>,
        new: Option<Vec<Value>>,
    ) -> ChangeEvent {
        ChangeEvent::Row(RowChange {
            op,
            table: s.clone(),
            old_image: if old.is_some() {
                OldImage::Key
            } else {
                OldImage::None
            },
            old: old.map(Row::new),
            new: new.map(Row::new),
            snapshot: false,
        })
    }

    fn cp(n: u32) -> Checkpoint {
        Checkpoint::parse(&format!("postgres:v1:00000000/{n:08X}")).unwrap()
    }

    fn dump(m: &Mirror, sql: &str) -> Vec<String> {
        let mut stmt = m.connection().prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            let mut parts = Vec::new();
            for i in 0..n {
                let v: rusqlite::types::Value = r.get(i)?;
                parts.push(format!("{v:?}"));
            }
            Ok(parts.join("|"))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
    }

    #[test]
    fn transactions_savepoints_and_abort() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut m = Mirror::open(&path, &MirrorOptions::default()).unwrap();
        m.begin_run(&StartFrom::Checkpoint(cp(1))).unwrap();
        let s = schema(&[("id", true), ("a", false), ("b", false)]);
        let begin = ChangeEvent::Begin(Begin {
            xid: None,
            commit_time: None,
        });
        m.apply(&begin).unwrap();
        m.apply(&ChangeEvent::Schema(s.clone())).unwrap();
        m.apply(&row(
            Op::Insert,
            &s,
            None,
            Some(vec![1.into(), "x".into(), "y".into()]),
        ))
        .unwrap();
        m.apply(&ChangeEvent::Commit(Commit {
            checkpoint: cp(2),
            commit_time: None,
        }))
        .unwrap();
        m.apply(&begin).unwrap();
        m.apply(&row(
            Op::Insert,
            &s,
            None,
            Some(vec![2.into(), "x".into(), "y".into()]),
        ))
        .unwrap();
        m.apply(&ChangeEvent::Abort).unwrap();
        assert!(m.at_boundary());
        // Unchanged keeps the stored value; the key changes.
        m.apply(&begin).unwrap();
        m.apply(&row(
            Op::Update,
            &s,
            Some(vec![1.into(), Value::Unchanged, Value::Unchanged]),
            Some(vec![3.into(), "z".into(), Value::Unchanged]),
        ))
        .unwrap();
        // Update of a missing row inserts it.
        m.apply(&row(
            Op::Update,
            &s,
            None,
            Some(vec![4.into(), "q".into(), Value::Unchanged]),
        ))
        .unwrap();
        m.apply(&row(
            Op::Delete,
            &s,
            Some(vec![9.into(), Value::Unchanged, Value::Unchanged]),
            None,
        ))
        .unwrap();
        m.apply(&ChangeEvent::Commit(Commit {
            checkpoint: cp(3),
            commit_time: None,
        }))
        .unwrap();
        assert_eq!(m.commit().unwrap(), Some(cp(3)));
        assert_eq!(
            dump(&m, "SELECT * FROM t ORDER BY id"),
            vec![
                "Integer(3)|Text(\"z\")|Text(\"y\")",
                "Integer(4)|Text(\"q\")|Null"
            ]
        );
        drop(m);
        let m = Mirror::open(&path, &MirrorOptions::default()).unwrap();
        assert_eq!(m.stored_position(), Some(cp(3).as_str()));
        assert_eq!(
            m.tables(),
            vec![(TableName::new("public", "t"), "t".to_string())]
        );
    }

    /// The demo's lost values: a resumed snapshot already stored the row under its new key,
    /// then the replay window resends the key-changing update whose TOASTed column is
    /// `Unchanged`. The mirror holds no row under the old key, so the value held under the new
    /// key must be kept, not overwritten with NULL.
    #[test]
    fn unchanged_after_a_replayed_key_change_keeps_the_value_under_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mirror::open(&dir.path().join("m.db"), &MirrorOptions::default()).unwrap();
        m.begin_run(&StartFrom::Checkpoint(cp(1))).unwrap();
        let s = schema(&[("id", true), ("n", false), ("doc", false)]);
        let begin = ChangeEvent::Begin(Begin {
            xid: None,
            commit_time: None,
        });
        m.apply(&begin).unwrap();
        m.apply(&ChangeEvent::Schema(s.clone())).unwrap();
        // What the resumed snapshot copied: the row under its new id 20, and row 30.
        m.apply(&row(
            Op::Insert,
            &s,
            None,
            Some(vec![20.into(), 1.into(), "big document".into()]),
        ))
        .unwrap();
        m.apply(&row(
            Op::Insert,
            &s,
            None,
            Some(vec![30.into(), 1.into(), "other".into()]),
        ))
        .unwrap();
        // Replayed: UPDATE items SET id = 20 WHERE id = 10 (doc not sent).
        m.apply(&row(
            Op::Update,
            &s,
            Some(vec![10.into(), Value::Unchanged, Value::Unchanged]),
            Some(vec![20.into(), 2.into(), Value::Unchanged]),
        ))
        .unwrap();
        // A key change whose old row is held: the held row's value moves to the new key, and
        // replaces what the new key held.
        m.apply(&row(
            Op::Update,
            &s,
            Some(vec![20.into(), Value::Unchanged, Value::Unchanged]),
            Some(vec![30.into(), 3.into(), Value::Unchanged]),
        ))
        .unwrap();
        // Neither key held: inserted, the unsent value unknown (NULL).
        m.apply(&row(
            Op::Update,
            &s,
            Some(vec![40.into(), Value::Unchanged, Value::Unchanged]),
            Some(vec![50.into(), 4.into(), Value::Unchanged]),
        ))
        .unwrap();
        m.apply(&ChangeEvent::Commit(Commit {
            checkpoint: cp(2),
            commit_time: None,
        }))
        .unwrap();
        m.commit().unwrap();
        assert_eq!(
            dump(&m, "SELECT * FROM t ORDER BY id"),
            vec![
                "Integer(30)|Integer(3)|Text(\"big document\")",
                "Integer(50)|Integer(4)|Null",
            ]
        );
    }

    #[test]
    fn schema_changes_and_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mirror::open(&dir.path().join("m.db"), &MirrorOptions::default()).unwrap();
        m.begin_run(&StartFrom::Checkpoint(cp(1))).unwrap();
        let s1 = schema(&[("id", true), ("a", false)]);
        m.apply(&ChangeEvent::Schema(s1.clone())).unwrap();
        m.apply(&row(
            Op::Insert,
            &s1,
            None,
            Some(vec![1.into(), "x".into()]),
        ))
        .unwrap();
        let s2 = schema(&[("id", true), ("b", false)]);
        m.apply(&ChangeEvent::Schema(s2.clone())).unwrap();
        m.apply(&row(
            Op::Insert,
            &s2,
            None,
            Some(vec![2.into(), "y".into()]),
        ))
        .unwrap();
        assert_eq!(
            dump(&m, "SELECT * FROM t ORDER BY id"),
            vec!["Integer(1)|Null", "Integer(2)|Text(\"y\")"]
        );
        // New key: recreated, rows kept.
        let s3 = schema(&[("id", false), ("b", true)]);
        m.apply(&ChangeEvent::Schema(s3.clone())).unwrap();
        assert_eq!(dump(&m, "SELECT count(*) FROM t"), vec!["Integer(2)"]);
        m.apply(&ChangeEvent::Truncate(Truncate {
            tables: vec![s3.name.clone()],
        }))
        .unwrap();
        m.apply(&ChangeEvent::Keepalive(cp(5))).unwrap();
        assert_eq!(m.commit().unwrap(), Some(cp(5)));
        assert_eq!(dump(&m, "SELECT count(*) FROM t"), vec!["Integer(0)"]);
    }

    #[test]
    fn abort_keeps_a_schema_change_the_stream_will_not_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mirror::open(&dir.path().join("m.db"), &MirrorOptions::default()).unwrap();
        m.begin_run(&StartFrom::Checkpoint(cp(1))).unwrap();
        let s1 = schema(&[("id", true), ("a", false)]);
        m.apply(&ChangeEvent::Schema(s1.clone())).unwrap();
        m.apply(&row(
            Op::Insert,
            &s1,
            None,
            Some(vec![1.into(), "x".into()]),
        ))
        .unwrap();
        m.apply(&ChangeEvent::Keepalive(cp(2))).unwrap();
        m.commit().unwrap();
        let begin = ChangeEvent::Begin(Begin {
            xid: None,
            commit_time: None,
        });
        m.apply(&begin).unwrap();
        let s2 = schema(&[("id", true), ("a", false), ("b", false)]);
        m.apply(&ChangeEvent::Schema(s2.clone())).unwrap();
        m.apply(&row(
            Op::Insert,
            &s2,
            None,
            Some(vec![2.into(), "y".into(), "z".into()]),
        ))
        .unwrap();
        m.apply(&ChangeEvent::Abort).unwrap();
        // The transaction is resent without its schema event.
        m.apply(&begin).unwrap();
        m.apply(&row(
            Op::Insert,
            &s2,
            None,
            Some(vec![3.into(), "y".into(), "z".into()]),
        ))
        .unwrap();
        m.apply(&ChangeEvent::Commit(Commit {
            checkpoint: cp(3),
            commit_time: None,
        }))
        .unwrap();
        assert_eq!(m.commit().unwrap(), Some(cp(3)));
        assert_eq!(
            dump(&m, "SELECT * FROM t ORDER BY id"),
            vec![
                "Integer(1)|Text(\"x\")|Null",
                "Integer(3)|Text(\"y\")|Text(\"z\")"
            ]
        );
        let stored = m.stored_tables().unwrap();
        assert_eq!(stored[0].schema.columns.len(), 3);
    }

    #[test]
    fn snapshot_positions_and_keyless_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut m = Mirror::open(&path, &MirrorOptions::default()).unwrap();
        m.begin_run(&StartFrom::Beginning).unwrap();
        assert!(m.in_snapshot_phase());
        let keyless = Arc::new(TableSchema {
            name: TableName::new("public", "k"),
            source_id: None,
            columns: vec![Column::new("a", "int"), Column::new("b", "text")],
            identity: RowIdentity::Full,
        });
        m.apply(&ChangeEvent::Schema(keyless.clone())).unwrap();
        for (a, b) in [(1, "x"), (1, "x"), (2, "y")] {
            let mut ev = row(Op::Insert, &keyless, None, Some(vec![a.into(), b.into()]));
            if let ChangeEvent::Row(r) = &mut ev {
                r.snapshot = true;
            }
            m.apply(&ev).unwrap();
        }
        let mut resume = SnapshotResume {
            stream_from: cp(9),
            tables: Default::default(),
            source_state: None,
        };
        resume.tables.insert(
            "public.k".into(),
            TableProgress::Partial {
                after_key: "[\"2\"]".into(),
                rows: 3,
            },
        );
        let after = m
            .apply(&ChangeEvent::Snapshot(SnapshotProgress::ChunkDone {
                table: keyless.name.clone(),
                rows_done: 3,
                estimated_rows: None,
                resume: Box::new(resume),
            }))
            .unwrap();
        assert_eq!(after, After::CommitNow);
        assert_eq!(m.commit().unwrap(), None);
        assert!(m.stored_position().unwrap().starts_with("snapshot:v1:"));
        m.apply(&ChangeEvent::Snapshot(SnapshotProgress::TableDone {
            table: keyless.name.clone(),
            rows: 3,
        }))
        .unwrap();
        m.commit().unwrap();
        let token = m.stored_position().unwrap().to_string();
        match StartFrom::parse(&token).unwrap() {
            StartFrom::Snapshot(r) => {
                assert_eq!(r.tables["public.k"], TableProgress::Done { rows: 3 })
            }
            other => panic!("{other:?}"),
        }
        m.apply(&ChangeEvent::Snapshot(SnapshotProgress::Done {
            checkpoint: cp(9),
        }))
        .unwrap();
        assert_eq!(m.commit().unwrap(), Some(cp(9)));
        assert!(!m.in_snapshot_phase());
        // Keyless: matched by the old image, one row at a time.
        let full = |v: Vec<Value>| Some(v);
        let mut ev = row(Op::Delete, &keyless, full(vec![1.into(), "x".into()]), None);
        if let ChangeEvent::Row(r) = &mut ev {
            r.old_image = OldImage::Full;
        }
        m.apply(&ev).unwrap();
        let mut ev = row(
            Op::Update,
            &keyless,
            full(vec![2.into(), "y".into()]),
            Some(vec![2.into(), "w".into()]),
        );
        if let ChangeEvent::Row(r) = &mut ev {
            r.old_image = OldImage::Full;
        }
        m.apply(&ev).unwrap();
        m.apply(&ChangeEvent::Keepalive(cp(10))).unwrap();
        m.commit().unwrap();
        assert_eq!(
            dump(&m, "SELECT a, b FROM k ORDER BY a"),
            vec!["Integer(1)|Text(\"x\")", "Integer(2)|Text(\"w\")"]
        );
        // Starting over drops the mirrored tables.
        drop(m);
        let mut m = Mirror::open(&path, &MirrorOptions::default()).unwrap();
        assert_eq!(m.start_from().unwrap(), StartFrom::Checkpoint(cp(10)));
        m.begin_run(&StartFrom::Beginning).unwrap();
        assert!(m.tables().is_empty());
        assert!(m.stored_position().is_none());
        assert_eq!(
            dump(&m, "SELECT count(*) FROM sqlite_master WHERE name = 'k'"),
            vec!["Integer(0)"]
        );
    }
}
