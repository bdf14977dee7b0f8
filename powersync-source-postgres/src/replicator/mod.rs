//! The stream task: snapshot (when needed), then pgoutput streaming with reconnects.
//!
//! - this module: the state shared by both phases, [`prepare`] (everything that can fail
//!   before the stream exists) and the reconnect loop on [`Reconnect`];
//! - [`snapshot`]: the initial snapshot and the read of a table first seen in the stream;
//! - [`session`]: one replication connection (START_REPLICATION, status updates, silence
//!   detection);
//! - [`apply`]: pgoutput messages to change events;
//! - [`streamed`]: in-progress transactions streamed before their commit, kept (in memory,
//!   then in a spill file) until it; [`replay_ahead`] reads and decodes one ahead of the
//!   session once it commits;
//! - [`publication`]: publication changes that come with no message (read the table again).

mod apply;
mod publication;
mod replay_ahead;
mod retention;
mod session;
mod snapshot;
mod streamed;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use powersync_source_core::position::PgLsn;
use powersync_source_core::runtime::{Emitter, Reconnect, SnapshotBook, Step, Stop};
use powersync_source_core::{
    AckReceiver, Begin, ChangeEvent, Checkpoint, Position, RowChange, SourceError, StartFrom,
    StreamOptions, TableName, TableSchema,
};
use tokio_postgres::Client;

use crate::backfill::{is_signal_table, PgChunkReader, StreamSchemas};
use crate::catalog::{self, PublishedTable, Publishing};
use crate::config::PostgresConfig;
use crate::connection::replication::{ReplicationConnection, SlotSnapshot};
use crate::connection::sql;
use crate::options::PostgresOptions;
use crate::types::{ColumnType, TypeRegistry};

/// The snapshot to run before streaming.
struct SnapshotPlan {
    tables: Vec<PublishedTable>,
    book: SnapshotBook,
    /// The snapshot exported by the slot just created; `None` when resuming.
    exported: Option<String>,
}

/// A stream ready to run: the slot is usable and the published tables are known.
pub(crate) struct Prepared {
    replicator: Replicator,
    snapshot: Option<SnapshotPlan>,
    /// The connection that created the slot; the first session reuses it (running no other
    /// command on it keeps the exported snapshot valid until the readers imported it).
    repl: Option<ReplicationConnection>,
}

/// Per relation OID: the schema we emit and how to read its tuples.
struct RelationState {
    schema: Arc<TableSchema>,
    types: Vec<ColumnType>,
    selected: bool,
    /// The signal table (see [`crate::backfill`]): its inserts are requests, never rows.
    signal: bool,
}

/// Everything that can fail before the stream exists: slot creation or health, the published
/// tables and their types.
pub(crate) async fn prepare(
    config: PostgresConfig,
    options: PostgresOptions,
    stream: StreamOptions,
    sql: Client,
    from: StartFrom,
) -> Result<Prepared, SourceError> {
    let slot = config.slot();
    if config.streaming() && !config.spill_dir().is_dir() {
        return Err(SourceError::config(format!(
            "spill_dir {} is not a directory",
            config.spill_dir().display()
        ))
        .with_hint("give an existing, writable directory, or streaming=off"));
    }
    let streamed =
        streamed::StreamedTransactions::new(config.streaming_memory_bytes(), config.spill_dir());
    let mut replicator = Replicator {
        config,
        options,
        stream,
        sql,
        registry: Arc::new(TypeRegistry::new()),
        relations: HashMap::new(),
        known: HashSet::new(),
        publishing: HashMap::new(),
        publication_check: publication::PublicationCheck::default(),
        last_emitted: PgLsn::ZERO,
        pending_begin: None,
        in_transaction: false,
        txn_relations: Vec::new(),
        txn_new_tables: Vec::new(),
        txn_publishing: Vec::new(),
        binary: false,
        server_version: 0,
        streamed,
        spill_fallback: false,
        schemas: StreamSchemas::default(),
        resume: None,
    };
    let mut registry = TypeRegistry::new();
    let (stream_from, snapshot, repl) = match from {
        StartFrom::Beginning => {
            crate::slot::drop_slot(&replicator.sql, &slot).await?;
            let mut repl = ReplicationConnection::connect(&replicator.config).await?;
            replicator.server_version = repl.server_version_num();
            let created = repl
                .create_logical_slot(&slot, false, SlotSnapshot::Export)
                .await?;
            let tables = replicator.published(&mut registry).await?;
            let from = created.consistent_point;
            let snapshot = SnapshotPlan {
                tables,
                book: SnapshotBook::new(from.to_checkpoint()),
                exported: created.snapshot_name,
            };
            (from, Some(snapshot), Some(repl))
        }
        StartFrom::Snapshot(resume) => {
            let from = PgLsn::from_checkpoint(&resume.stream_from)?;
            crate::slot::check_resumable(&replicator.sql, &slot, from).await?;
            let tables = replicator.published(&mut registry).await?;
            let snapshot = SnapshotPlan {
                tables,
                book: SnapshotBook::resume(&resume),
                exported: None,
            };
            (from, Some(snapshot), None)
        }
        StartFrom::Checkpoint(checkpoint) => {
            let from = PgLsn::from_checkpoint(&checkpoint)?;
            // A corrupt backfill cursor fails here, not once the stream runs.
            let resuming: Vec<TableName> = checkpoint
                .backfill()?
                .map(|state| state.tasks.iter().map(|t| t.table.clone()).collect())
                .unwrap_or_default();
            crate::slot::check_resumable(&replicator.sql, &slot, from).await?;
            let tables = replicator.published(&mut registry).await?;
            // A table that may have joined the publication after the checkpoint (added to it,
            // or created in its scope, while no stream ran) is not held by the host: left
            // unknown, the first publication comparison backfills it (14+), or its first
            // Relation message reads it. One whose backfill the checkpoint carries resumes
            // with that instead.
            let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
            let joined = catalog::joined_since_slot_horizon(
                &replicator.sql,
                replicator.config.publication(),
                &slot,
                &oids,
            )
            .await?;
            for t in &tables {
                let late = joined.contains(&t.oid) && !resuming.contains(&t.schema.name);
                if late {
                    tracing::info!(
                        target: "powersync_source_postgres",
                        "{} may have joined the publication after the checkpoint: reading it",
                        t.schema.name
                    );
                } else {
                    replicator.known.insert(t.oid);
                    replicator.publishing.insert(t.oid, t.publishing.clone());
                }
            }
            // Its backfill cursor (if any) resumes once streaming starts.
            replicator.resume = Some(checkpoint);
            (from, None, None)
        }
    };
    replicator.registry = Arc::new(registry);
    replicator.last_emitted = stream_from;
    if let Some(plan) = &snapshot {
        replicator.note_publishing(&plan.tables);
    }
    Ok(Prepared {
        replicator,
        snapshot,
        repl,
    })
}

impl Prepared {
    /// The stream task: runs until the host drops the stream or a failure is final (the
    /// runtime hands the events before it, then the error, to the host).
    pub(crate) async fn run(self, mut out: Emitter, acks: AckReceiver) -> Step<()> {
        let Prepared {
            mut replicator,
            snapshot,
            repl,
        } = self;
        let interval = replicator.options.slot_check_interval;
        if interval.is_zero() {
            return replicator.run(snapshot, repl, &mut out, &acks).await;
        }
        let mut watch =
            retention::SlotWatch::spawn(replicator.config.clone(), interval, out.stats().clone());
        let lost = {
            let run = replicator.run(snapshot, repl, &mut out, &acks);
            tokio::select! {
                outcome = run => return outcome,
                lost = watch.lost() => lost,
            }
        };
        // The slot was invalidated (during a snapshot, or while streaming): end now, with
        // the reason, instead of when the stream next needs the lost WAL.
        out.abort_open_transaction().await?;
        Err(Stop::Failed(lost))
    }
}

/// The state of one stream across its sessions.
struct Replicator {
    config: PostgresConfig,
    options: PostgresOptions,
    stream: StreamOptions,
    /// Catalog queries; replaced when it closed during an outage.
    sql: Client,
    registry: Arc<TypeRegistry>,
    relations: HashMap<u32, RelationState>,
    /// Tables (by OID) whose rows the host has: snapshotted or streamed since the start.
    known: HashSet<u32>,
    /// What the publication published of each table (by OID) when its rows were read: a
    /// Relation message that finds it changed makes the table be read again.
    publishing: HashMap<u32, Publishing>,
    /// The periodic comparison of the publication with `publishing`.
    publication_check: publication::PublicationCheck,
    /// Last transaction boundary handed to the host (resume point after a reconnect).
    last_emitted: PgLsn,
    /// A begin not yet emitted: empty transactions (changes to other tables) become keepalives.
    pending_begin: Option<Begin>,
    /// Between pgoutput's Begin and Commit (whether or not the Begin was emitted).
    in_transaction: bool,
    /// Relations whose schema was emitted, or which were first snapshotted, inside the open
    /// transaction: if it aborts, the host discards those events, so they must be redone.
    txn_relations: Vec<u32>,
    txn_new_tables: Vec<u32>,
    /// What `publishing` held before a read inside the open transaction replaced it: an
    /// abort restores it, so the resent transaction reads (and truncates) again.
    txn_publishing: Vec<(u32, Option<Publishing>)>,
    /// Whether the current session asked for pgoutput's binary format.
    binary: bool,
    server_version: u32,
    /// In-progress transactions of the current session, kept until their commit.
    streamed: streamed::StreamedTransactions,
    /// Set once a spill file failed: later sessions of this stream ask for no streaming.
    spill_fallback: bool,
    /// The schemas emitted per table, shared with the backfill reader.
    schemas: StreamSchemas,
    /// The checkpoint the stream started from (it may carry a backfill cursor).
    resume: Option<Checkpoint>,
}

impl Replicator {
    async fn published(
        &self,
        registry: &mut TypeRegistry,
    ) -> Result<Vec<PublishedTable>, SourceError> {
        let mut tables = catalog::published_tables(
            &self.sql,
            registry,
            self.config.publication(),
            self.tables(),
        )
        .await?;
        // The signal table is read by the stream, never copied to the host.
        tables.retain(|t| !is_signal_table(&t.schema.name));
        Ok(tables)
    }

    /// Records what the publication publishes of `tables`, as their rows are (or were) read.
    fn note_publishing(&mut self, tables: &[PublishedTable]) {
        for t in tables {
            self.publishing.insert(t.oid, t.publishing.clone());
        }
    }

    /// The selected tables; empty = every table of the publication.
    fn tables(&self) -> &[TableName] {
        self.stream.tables.as_deref().unwrap_or_default()
    }

    fn selects(&self, name: &TableName) -> bool {
        let tables = self.tables();
        !is_signal_table(name) && (tables.is_empty() || tables.contains(name))
    }

    /// Turns on backfills once the stream streams, on servers that pass logical messages
    /// (the watermarks) to the stream: 14+. Idempotent (every session calls it).
    fn enable_backfill(&mut self, out: &mut Emitter) -> Result<(), SourceError> {
        if out.backfill_enabled() || self.server_version < 140_000 {
            return Ok(());
        }
        let reader = PgChunkReader::new(
            self.config.clone(),
            self.tables().to_vec(),
            self.schemas.clone(),
            self.stream.silence_timeout,
        );
        out.enable_backfill(
            Box::new(reader),
            self.resume.as_ref(),
            "public",
            &self.stream,
        )
    }

    /// The snapshot (if any), then sessions until the host leaves or a failure is final.
    /// The retry budget is per outage: a session calls [`Reconnect::healthy`] once the server
    /// delivered its first message.
    async fn run(
        &mut self,
        snapshot: Option<SnapshotPlan>,
        mut repl: Option<ReplicationConnection>,
        out: &mut Emitter,
        acks: &AckReceiver,
    ) -> Step<()> {
        if let Some(plan) = snapshot {
            self.snapshot(plan, out).await?;
        }
        let mut reconnect = Reconnect::new(self.stream.retry.clone());
        loop {
            let error = match self.session(repl.take(), out, acks, &mut reconnect).await {
                Ok(()) => return Ok(()),
                Err(Stop::Closed) => return Err(Stop::Closed),
                Err(Stop::Failed(e)) => e,
            };
            self.forget_open_transaction();
            tracing::debug!(
                target: "powersync_source_postgres",
                "replication interrupted; resuming from {}",
                self.last_emitted
            );
            self.after_failure(&mut reconnect, error, out).await?;
            // The catalog connection is needed before the replication one (slot check); a
            // failure to reopen it counts against the outage's budget like any other.
            while self.sql.is_closed() {
                match self.reconnect_sql().await {
                    Ok(()) => break,
                    Err(e) => self.after_failure(&mut reconnect, e, out).await?,
                }
            }
        }
    }

    /// [`Reconnect::after_failure`], and when the failure is final, an `Abort` first for a
    /// transaction the host holds open (it must not apply half of it).
    async fn after_failure(
        &self,
        reconnect: &mut Reconnect,
        error: SourceError,
        out: &mut Emitter,
    ) -> Step<()> {
        match reconnect.after_failure(error, out).await {
            Err(Stop::Failed(e)) => {
                out.abort_open_transaction().await?;
                Err(Stop::Failed(e))
            }
            other => other,
        }
    }

    /// The open transaction is lost with the connection (the host is told to discard it):
    /// the server resends it whole, with its schema events and the first read of a table.
    fn forget_open_transaction(&mut self) {
        for oid in std::mem::take(&mut self.txn_relations) {
            self.relations.remove(&oid);
        }
        for oid in std::mem::take(&mut self.txn_new_tables) {
            self.known.remove(&oid);
        }
        // Newest first, so the entry from before the transaction is the one that stays.
        for (oid, before) in std::mem::take(&mut self.txn_publishing).into_iter().rev() {
            match before {
                Some(p) => self.publishing.insert(oid, p),
                None => self.publishing.remove(&oid),
            };
        }
        self.in_transaction = false;
        self.pending_begin = None;
        // The server streams every transaction not yet committed again, from its start.
        self.streamed.clear();
    }

    /// Replaces the closed catalog connection, bounded by the silence timeout.
    async fn reconnect_sql(&mut self) -> Result<(), SourceError> {
        let timeout = self.stream.silence_timeout;
        let client = tokio::time::timeout(timeout, sql::connect(&self.config))
            .await
            .map_err(|_| {
                SourceError::connection(format!(
                    "connecting to {}: no answer within {timeout:?}",
                    self.config.endpoint()
                ))
            })??;
        self.sql = client;
        Ok(())
    }

    /// Emits a row change, preceded by its transaction's Begin when that is still pending.
    async fn row(&mut self, change: RowChange, out: &mut Emitter) -> Step<()> {
        self.emit_begin(out).await?;
        out.push(ChangeEvent::Row(change)).await
    }

    /// Emits the pending Begin, if any: the first event of a transaction the host sees.
    async fn emit_begin(&mut self, out: &mut Emitter) -> Step<()> {
        match self.pending_begin.take() {
            Some(begin) => out.push(ChangeEvent::Begin(begin)).await,
            None => Ok(()),
        }
    }
}
