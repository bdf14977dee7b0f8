//! The SQLite sink of powersync-source: keeps a SQLite file equal to a source, each source
//! transaction applied atomically with its checkpoint.
//!
//! A host feeds the events of a [`powersync_source_core::ChangeStream`] to a [`Mirror`] and
//! acknowledges what it is told to:
//!
//! ```no_run
//! # async fn run(source: &dyn powersync_source_core::ChangeSource) -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//! use powersync_source_sqlite::{Mirror, MirrorOptions};
//!
//! let mut mirror = Mirror::open("copy.db".as_ref(), &MirrorOptions::default())?;
//! let from = mirror.start_from()?;
//! mirror.plan_names(&source.discover().await?);
//! mirror.begin_run(&from)?;
//! let mut stream = source.start(from).await?;
//! while let Some(batch) = stream.next().await {
//!     for event in &batch?.events {
//!         if let Some(committed) = mirror.feed(event)? {
//!             if let Some(checkpoint) = committed.checkpoint {
//!                 stream.ack(&checkpoint)?;
//!             }
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//! (`futures` is the host's dependency.) A host with a timer also commits a group that
//! became old while the stream was quiet: [`Mirror::commit_deadline`] says when,
//! [`Mirror::commit`] does it.
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
//! - `_powersync_mirror_state(key TEXT PRIMARY KEY, value TEXT)` ([`STATE_TABLE`]):
//!   - `checkpoint` ([`POSITION_KEY`]): where to resume: a checkpoint, or a snapshot resume
//!     token while the initial snapshot runs;
//!   - `table:<schema>.<name>`: `{"sqlite_name": …, "schema": <TableSchema JSON>}`
//!     ([`StoredTable`]) for every mirrored table (source column types included);
//!   - keys a host stages with [`Mirror::stage_state`] (e.g. `consume`'s stream sequence).
//!
//! # Consistency
//! Each source transaction is applied inside a `SAVEPOINT`; consecutive transactions are
//! grouped into one SQLite transaction, which also writes `checkpoint`. A
//! [`ChangeEvent::Abort`] rolls back to the savepoint. A crash at any point leaves the file at
//! the end of some committed group, with the matching position: restarting from it loses
//! nothing and applies nothing twice. The host acknowledges the source only after the SQLite
//! commit (the [`Committed::checkpoint`] a commit returns). Snapshot rows are committed at
//! each chunk end (with the resume token), table end and snapshot end (with the checkpoint).
//! When groups end is the [`GroupPolicy`]'s decision.
//!
//! Row application: inserts are upserts (`INSERT OR REPLACE`: the replay window after a
//! resumed snapshot may resend a row); updates find the row by the old key (the key may
//! change), set only the columns the source sent and insert the row if it is missing and every
//! value was sent (see below for a missing row with unsent values); deletes by key are no-ops when the row is missing. Schema changes add and
//! drop columns; a changed key recreates the table and copies its rows; a truncate empties
//! the table.
//!
//! # `Unchanged` values
//! [`Value::Unchanged`] (a PostgreSQL TOAST column the server did not send) follows the
//! consumer rule: **keep the value you hold for this row: under the old key if the update
//! changed the key and you hold that row, otherwise under the new key.** So an update
//! matched under its old key keeps that row's stored value and moves it to the new key; an
//! update whose old key is not held (a key change replayed after a resumed snapshot already
//! stored the row under its new key) keeps the value held under the new key instead of
//! writing NULL over it. When neither key is held there is no value to keep: the update is
//! skipped rather than inventing NULL for the unsent value. That case only arises in the
//! replay window after a resumed snapshot, where the snapshot already stored the row under
//! the key it has at the end of the window (or a later change deletes it); an invented NULL
//! would be carried by the next key change of a chain (`a → b → c`) over the row held under
//! `c`.
//!
//! # Durability
//! `synchronous=NORMAL` (the default) survives a crash of the process at any point; after a
//! power loss the last groups may be lost although acknowledged. Use
//! [`MirrorOptions::with_durable`] for `synchronous=FULL`.

mod error;
mod group;
mod rows;
mod schema;
mod state;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(doc)]
use powersync_source_core::Value;
use powersync_source_core::{
    ChangeEvent, Checkpoint, SnapshotProgress, SnapshotResume, StartFrom, TableName, TableProgress,
    TableSchema,
};
use rusqlite::Connection;

pub use error::SinkError;
pub use group::GroupPolicy;
pub use schema::quote;
pub use state::{StoredTable, POSITION_KEY, STATE_TABLE, TABLE_KEY_PREFIX};

use group::Group;
use rows::{RowOutcome, Statements};
use schema::Tables;

/// Options of a [`Mirror`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct MirrorOptions {
    /// `synchronous=FULL` instead of `NORMAL`: acknowledged changes survive a power loss too.
    pub durable: bool,
    /// When groups of source transactions are committed.
    pub group: GroupPolicy,
}

impl MirrorOptions {
    /// `synchronous=FULL` (`durable = true`) or `NORMAL`.
    pub fn with_durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }
    /// Commit groups by `policy`.
    pub fn with_group_policy(mut self, policy: GroupPolicy) -> Self {
        self.group = policy;
        self
    }
}

/// A committed group.
#[derive(Debug, Clone, PartialEq)]
#[must_use = "the checkpoint must be acknowledged to the source"]
pub struct Committed {
    /// The checkpoint to acknowledge to the source: everything up to it is now durable in
    /// SQLite. `None` when the group stored no new checkpoint (a snapshot chunk stores a
    /// resume token, which is not acknowledged).
    pub checkpoint: Option<Checkpoint>,
    /// Rows the group applied.
    pub rows: u64,
}

/// A SQLite file kept equal to a source. See the crate docs for the layout and the rules.
#[derive(Debug)]
pub struct Mirror {
    conn: Connection,
    tables: Tables,
    statements: Statements,
    policy: GroupPolicy,
    group: Group,
    in_source_tx: bool,
    /// Tables whose schema changed inside the open source transaction (an abort undoes the
    /// change in SQLite, but the stream will not announce it again).
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
    pub fn open(path: &Path, options: &MirrorOptions) -> Result<Mirror, SinkError> {
        Mirror::open_inner(path, options).map_err(|cause| SinkError::Open {
            path: path.to_path_buf(),
            cause: Box::new(cause),
        })
    }

    fn open_inner(path: &Path, options: &MirrorOptions) -> Result<Mirror, SinkError> {
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
        state::create(&conn)?;
        let stored_position = state::read_position(&conn)?;
        let tables = Tables::load(&conn)?;
        Ok(Mirror {
            conn,
            tables,
            statements: Statements::default(),
            policy: options.group.clone(),
            group: Group::default(),
            in_source_tx: false,
            tx_schema_changes: Vec::new(),
            pending_position: None,
            pending_checkpoint: None,
            snapshot_phase: false,
            last_resume: None,
            stored_position,
            warned_keyless: HashSet::new(),
        })
    }

    /// The SQLite connection (for reading; writing through it breaks the mirror's
    /// bookkeeping).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The stored position (checkpoint or snapshot token), if any.
    pub fn stored_position(&self) -> Option<&str> {
        self.stored_position.as_deref()
    }

    /// Where to start: the stored position, else from the beginning.
    pub fn start_from(&self) -> Result<StartFrom, SinkError> {
        match &self.stored_position {
            Some(s) => StartFrom::parse(s).map_err(SinkError::Position),
            None => Ok(StartFrom::Beginning),
        }
    }

    /// The mirrored tables: source name and SQLite name, sorted.
    pub fn tables(&self) -> Vec<(TableName, String)> {
        self.tables.names()
    }

    /// The tables stored in the state table.
    pub fn stored_tables(&self) -> Result<Vec<StoredTable>, SinkError> {
        state::tables(&self.conn)
    }

    /// The group-commit policy in force.
    pub fn policy(&self) -> &GroupPolicy {
        &self.policy
    }

    /// Tells which tables the source selected, so that tables sharing a name get
    /// schema-qualified SQLite names. Call it before the first event of a run.
    pub fn plan_names(&mut self, selected: &[TableSchema]) {
        self.tables.plan_names(selected);
    }

    /// Prepares a run starting from `from`: from the beginning, every mirrored table is
    /// dropped first (the snapshot recreates them).
    pub fn begin_run(&mut self, from: &StartFrom) -> Result<(), SinkError> {
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

    /// Drops every mirrored table and forgets the position (keys staged by the host stay).
    pub fn reset(&mut self) -> Result<(), SinkError> {
        let mut names: Vec<String> = self
            .stored_tables()?
            .into_iter()
            .map(|t| t.sqlite_name)
            .collect();
        names.extend(self.tables.sqlite_names().map(str::to_owned));
        names.sort();
        names.dedup();
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| -> Result<(), SinkError> {
            for name in &names {
                self.conn
                    .execute_batch(&format!("DROP TABLE IF EXISTS {}", quote(name)))?;
            }
            state::clear(&self.conn)
        })();
        match result {
            Ok(()) => self.conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        self.tables.clear();
        self.statements.clear();
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

    /// Applies one event, then commits the open group if the [`GroupPolicy`] says so.
    /// Returns the commit, whose checkpoint the host acknowledges to the source.
    pub fn feed(&mut self, event: &ChangeEvent) -> Result<Option<Committed>, SinkError> {
        self.apply(event)?;
        self.commit_if_due()
    }

    /// Applies one event without committing. Hosts that write state of their own with
    /// [`Mirror::stage_state`] between the events and the commit use this, then
    /// [`Mirror::commit_if_due`].
    pub fn apply(&mut self, event: &ChangeEvent) -> Result<(), SinkError> {
        match event {
            ChangeEvent::Begin(_) => {
                self.open_group()?;
                if self.in_source_tx {
                    tracing::warn!("begin inside an open transaction; keeping its changes");
                    self.exec_cached("RELEASE src")?;
                }
                self.exec_cached("SAVEPOINT src")?;
                self.in_source_tx = true;
                self.group.begin_transaction();
                self.tx_schema_changes.clear();
            }
            ChangeEvent::Row(change) => {
                self.open_group()?;
                if !self.tables.knows(&change.table) {
                    self.sync_table(&change.table, false)?;
                }
                if let Some(table) = self.tables.get(&change.table.name) {
                    let outcome = self.statements.apply(&self.conn, table, change)?;
                    if outcome == RowOutcome::Unmatched {
                        self.warn_keyless(&change.table.name);
                    }
                }
                self.group.add_row();
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
            ChangeEvent::Snapshot(p) => self.on_snapshot(p),
        }
        Ok(())
    }

    fn on_snapshot(&mut self, p: &SnapshotProgress) {
        match p {
            // Right after a backfill chunk's commit: store its checkpoint (the cursor) now, so
            // a crash re-reads at most the chunk in flight.
            SnapshotProgress::BackfillChunk { .. } | SnapshotProgress::BackfillDone { .. } => {
                if !self.in_source_tx {
                    self.group.request_commit();
                }
                return;
            }
            SnapshotProgress::BackfillStarted { .. } | SnapshotProgress::BackfillFailed { .. } => {
                return
            }
            _ => {}
        }
        if !self.snapshot_phase || self.in_source_tx {
            // A table first seen while streaming: its rows belong to the transaction.
            return;
        }
        match p {
            SnapshotProgress::TableStarted { .. } => {}
            SnapshotProgress::ChunkDone { resume, .. } => {
                self.set_pending(None, resume.to_token());
                self.last_resume = Some((**resume).clone());
                self.group.request_commit();
            }
            SnapshotProgress::TableDone { table, rows } => {
                if let Some(resume) = self.last_resume.as_mut() {
                    resume
                        .tables
                        .insert(table.to_string(), TableProgress::Done { rows: *rows });
                    let token = resume.to_token();
                    self.set_pending(None, token);
                }
                self.group.request_commit();
            }
            SnapshotProgress::Done { checkpoint } => {
                self.set_pending(Some(checkpoint.clone()), checkpoint.to_string());
                self.snapshot_phase = false;
                self.last_resume = None;
                self.group.request_commit();
            }
            SnapshotProgress::BackfillStarted { .. }
            | SnapshotProgress::BackfillChunk { .. }
            | SnapshotProgress::BackfillDone { .. }
            | SnapshotProgress::BackfillFailed { .. } => {}
        }
    }

    fn set_pending(&mut self, checkpoint: Option<Checkpoint>, position: String) {
        self.group.touch();
        self.pending_position = Some(position);
        // A token after a checkpoint never happens; keep the latest checkpoint to ack.
        if checkpoint.is_some() {
            self.pending_checkpoint = checkpoint;
        }
    }

    fn has_pending(&self) -> bool {
        self.group.open || self.pending_position.is_some()
    }

    /// Commits the open group if the [`GroupPolicy`] says so (and no source transaction is
    /// half-applied).
    pub fn commit_if_due(&mut self) -> Result<Option<Committed>, SinkError> {
        if self.in_source_tx || !self.has_pending() {
            return Ok(None);
        }
        if !self.group.due(&self.policy, self.snapshot_phase) {
            return Ok(None);
        }
        self.commit()
    }

    /// When the open group becomes old enough to commit, if there is one and no source
    /// transaction is half-applied. A host waiting for the next batch should call
    /// [`Mirror::commit`] at that time.
    pub fn commit_deadline(&self) -> Option<Instant> {
        if self.in_source_tx || !self.has_pending() {
            return None;
        }
        self.group.deadline(&self.policy, self.snapshot_phase)
    }

    /// Commits the open group with the latest position now, whatever the policy. Does
    /// nothing (`None`) in the middle of a source transaction or when nothing is pending.
    pub fn commit(&mut self) -> Result<Option<Committed>, SinkError> {
        if self.in_source_tx || !self.has_pending() {
            return Ok(None);
        }
        self.open_group()?;
        if let Some(position) = &self.pending_position {
            state::write(&self.conn, POSITION_KEY, position)?;
        }
        self.exec_cached("COMMIT")?;
        let rows = self.group.rows();
        self.group.committed();
        if let Some(p) = self.pending_position.take() {
            self.stored_position = Some(p);
        }
        Ok(Some(Committed {
            checkpoint: self.pending_checkpoint.take(),
            rows,
        }))
    }

    /// Writes `key = value` into the state table inside the open group (opening one if
    /// needed), so it becomes durable atomically with the rows of the next commit. Hosts use
    /// it for positions of their own (e.g. a JetStream stream sequence); the keys
    /// [`POSITION_KEY`] and `table:…` belong to the mirror.
    pub fn stage_state(&mut self, key: &str, value: &str) -> Result<(), SinkError> {
        self.open_group()?;
        state::write(&self.conn, key, value)
    }

    /// Reads a state value written by [`Mirror::stage_state`] (committed or staged).
    pub fn state(&self, key: &str) -> Result<Option<String>, SinkError> {
        state::read(&self.conn, key)
    }

    /// Discards a half-applied source transaction (the stream failed in its middle; the
    /// source resends it). A no-op at a boundary.
    pub fn abort_transaction(&mut self) -> Result<(), SinkError> {
        if !self.in_source_tx {
            return Ok(());
        }
        self.conn.execute_batch("ROLLBACK TO src; RELEASE src")?;
        self.in_source_tx = false;
        self.group.abort_transaction();
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

    fn sync_table(&mut self, schema: &Arc<TableSchema>, force: bool) -> Result<(), SinkError> {
        let changed = self.tables.sync(&self.conn, schema, force)?;
        if changed && self.in_source_tx && !self.tx_schema_changes.contains(&schema.name) {
            self.tx_schema_changes.push(schema.name.clone());
        }
        Ok(())
    }

    fn open_group(&mut self) -> Result<(), SinkError> {
        if !self.group.open {
            self.exec_cached("BEGIN IMMEDIATE")?;
            self.group.open = true;
            self.group.touch();
        }
        Ok(())
    }

    /// Runs a parameterless statement through the statement cache (no parsing per call).
    fn exec_cached(&self, sql: &str) -> Result<(), SinkError> {
        self.conn.prepare_cached(sql)?.execute([])?;
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

#[cfg(test)]
mod tests;
