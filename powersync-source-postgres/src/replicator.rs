//! The stream task: snapshot (when needed), then pgoutput streaming with reconnects.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use powersync_source_core::position::PgLsn;
use powersync_source_core::{
    AckReceiver, Begin, ChangeBatch, ChangeEvent, Column, Commit, OldImage, Op, Position, Row,
    RowChange, RowIdentity, SnapshotProgress, SnapshotResume, SourceError, StartFrom, StreamStats,
    TableName, TableProgress, TableSchema, Truncate, UnixMicros, Value,
};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::catalog::{self, PublishedTable};
use crate::config::PgConfig;
use crate::connection::replication::{ReplicationConnection, SlotSnapshot};
use crate::connection::{publication_names, sql, sqlstate};
use crate::pgoutput::{ColumnValue, OldTuple, PgOutputMessage, ReplicationMessage, TupleData};
use crate::snapshot_reader::{self, Piece, SnapshotMsg, TableJob};
use crate::source::{PostgresOptions, CHECKPOINT_MESSAGE_PREFIX};
use crate::types::{self, TypeRegistry};

type Sender = mpsc::Sender<Result<ChangeBatch, SourceError>>;

/// How long a partly filled batch waits for more of an open transaction before it is handed
/// over: long enough for the next messages of a transaction already on its way, short enough
/// to add no noticeable latency.
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// Why the streaming loop stopped.
enum Stop {
    /// The host dropped the stream.
    Closed,
    /// A failure; retried when transient.
    Failed(SourceError),
}

impl From<SourceError> for Stop {
    fn from(e: SourceError) -> Self {
        Stop::Failed(e)
    }
}

/// What `prepare` decided: the snapshot to run (if any) and where streaming starts.
pub(crate) struct StartPlan {
    snapshot: Option<SnapshotPlan>,
    stream_from: PgLsn,
    /// The connection that created the slot; streaming reuses it.
    repl: Option<ReplicationConnection>,
}

struct SnapshotPlan {
    tables: Vec<PublishedTable>,
    progress: BTreeMap<String, TableProgress>,
    exported: Option<String>,
}

/// Snapshot bookkeeping of one table.
#[derive(Debug, Default)]
struct TableState {
    started: bool,
    done: bool,
    rows: u64,
    pieces_left: usize,
    blocks_done: Option<Vec<(u32, u32)>>,
}

/// Per relation OID: the schema we emit and how to read its tuples.
struct RelationState {
    schema: Arc<TableSchema>,
    types: Vec<(u32, i32)>,
    selected: bool,
}

pub(crate) struct Replicator {
    config: PgConfig,
    options: PostgresOptions,
    sql: Client,
    registry: Arc<TypeRegistry>,
    acks: AckReceiver,
    stats: StreamStats,
    tx: Sender,
    batch: ChangeBatch,
    relations: HashMap<u32, RelationState>,
    /// Tables (by OID) whose rows the host has: snapshotted or streamed since the start.
    known: HashSet<u32>,
    /// Last transaction boundary handed to the host (resume point after a reconnect).
    last_emitted: PgLsn,
    /// A begin not yet emitted: empty transactions (changes to other tables) become keepalives.
    pending_begin: Option<Begin>,
    in_transaction: bool,
    begin_emitted: bool,
    /// Relations whose schema was emitted, or which were first snapshotted, inside the open
    /// transaction: if it aborts, the host discards those events, so they must be redone.
    txn_relations: Vec<u32>,
    txn_new_tables: Vec<u32>,
    binary: bool,
    server_version: u32,
}

impl Replicator {
    pub(crate) fn new(
        config: PgConfig,
        options: PostgresOptions,
        sql: Client,
        acks: AckReceiver,
        stats: StreamStats,
        tx: Sender,
    ) -> Self {
        let batch = ChangeBatch::with_capacity(options.batch_events);
        Replicator {
            config,
            options,
            sql,
            registry: Arc::new(TypeRegistry::new()),
            acks,
            stats,
            tx,
            batch,
            relations: HashMap::new(),
            known: HashSet::new(),
            last_emitted: PgLsn::ZERO,
            pending_begin: None,
            in_transaction: false,
            begin_emitted: false,
            txn_relations: Vec::new(),
            txn_new_tables: Vec::new(),
            binary: false,
            server_version: 0,
        }
    }

    /// Everything that can fail before the stream exists: slot creation or health, the
    /// published tables and their types.
    pub(crate) async fn prepare(&mut self, from: StartFrom) -> Result<StartPlan, SourceError> {
        let slot = self.config.slot();
        let mut registry = TypeRegistry::new();
        let plan = match from {
            StartFrom::Beginning => {
                crate::slot::drop_slot(&self.sql, &slot).await?;
                let mut repl = ReplicationConnection::connect(&self.config).await?;
                self.server_version = repl.server_version_num();
                let created = repl
                    .create_logical_slot(&slot, false, SlotSnapshot::Export)
                    .await?;
                let tables = self.published(&mut registry).await?;
                StartPlan {
                    stream_from: created.consistent_point,
                    snapshot: Some(SnapshotPlan {
                        tables,
                        progress: BTreeMap::new(),
                        exported: created.snapshot_name,
                    }),
                    repl: Some(repl),
                }
            }
            StartFrom::Snapshot(resume) => {
                let from = PgLsn::from_checkpoint(&resume.stream_from)?;
                crate::slot::check_resumable(&self.sql, &slot, from).await?;
                let tables = self.published(&mut registry).await?;
                StartPlan {
                    stream_from: from,
                    snapshot: Some(SnapshotPlan {
                        tables,
                        progress: resume.tables,
                        exported: None,
                    }),
                    repl: None,
                }
            }
            StartFrom::Checkpoint(checkpoint) => {
                let from = PgLsn::from_checkpoint(&checkpoint)?;
                crate::slot::check_resumable(&self.sql, &slot, from).await?;
                let tables = self.published(&mut registry).await?;
                for t in &tables {
                    self.known.insert(t.oid);
                }
                StartPlan {
                    stream_from: from,
                    snapshot: None,
                    repl: None,
                }
            }
        };
        self.registry = Arc::new(registry);
        self.last_emitted = plan.stream_from;
        Ok(plan)
    }

    async fn published(
        &self,
        registry: &mut TypeRegistry,
    ) -> Result<Vec<PublishedTable>, SourceError> {
        catalog::published_tables(
            &self.sql,
            registry,
            self.config.publication(),
            &self.options.tables,
        )
        .await
    }

    /// Runs until the host drops the stream or a permanent error.
    pub(crate) async fn run(mut self, mut plan: StartPlan) {
        if let Some(snapshot) = plan.snapshot.take() {
            match self.snapshot(snapshot, plan.stream_from).await {
                Ok(()) => {}
                Err(Stop::Closed) => return,
                Err(Stop::Failed(e)) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
            }
        }
        let mut repl = plan.repl.take();
        let mut backoff = self.options.retry.backoff();
        loop {
            let result = self.stream(repl.take()).await;
            let error = match result {
                Stop::Closed => return,
                Stop::Failed(e) => e,
            };
            if self.begin_emitted {
                self.batch.push(ChangeEvent::Abort);
            }
            // Resent with the transaction: schema events again, and the first read of a table.
            for oid in std::mem::take(&mut self.txn_relations) {
                self.relations.remove(&oid);
            }
            for oid in std::mem::take(&mut self.txn_new_tables) {
                self.known.remove(&oid);
            }
            self.in_transaction = false;
            self.begin_emitted = false;
            self.pending_begin = None;
            let Some(delay) = backoff.next_delay(&error) else {
                let _ = self.flush().await;
                let _ = self.tx.send(Err(error)).await;
                return;
            };
            tracing::warn!(
                target: "powersync_source_postgres",
                "replication interrupted ({error}); reconnecting in {delay:?} from {}",
                self.last_emitted
            );
            if self.flush().await.is_err() {
                return;
            }
            self.stats.record_reconnect();
            tokio::time::sleep(delay).await;
            if self.sql.is_closed() {
                let connect =
                    tokio::time::timeout(self.options.silence_timeout, sql::connect(&self.config));
                match connect
                    .await
                    .unwrap_or_else(|_| Err(SourceError::connection("connect timed out")))
                {
                    Ok(client) => self.sql = client,
                    Err(e) => {
                        tracing::warn!(target: "powersync_source_postgres", "reconnect failed: {e}");
                        continue;
                    }
                }
            }
        }
    }

    async fn snapshot(&mut self, plan: SnapshotPlan, stream_from: PgLsn) -> Result<(), Stop> {
        let SnapshotPlan {
            tables,
            mut progress,
            exported,
        } = plan;
        let tables: Vec<Arc<PublishedTable>> = tables.into_iter().map(Arc::new).collect();
        let checkpoint = stream_from.to_checkpoint();
        let layout = self.heap_layout(&tables).await?;
        let parallelism = self.config.snapshot_parallelism().max(1) as u32;
        let chunk_rows = self.config.snapshot_chunk_rows().max(1);
        let mut state: Vec<TableState> = Vec::with_capacity(tables.len());
        let mut jobs = Vec::new();
        for (index, table) in tables.iter().enumerate() {
            self.known.insert(table.oid);
            let name = table.schema.name.to_string();
            let mut st = TableState::default();
            match progress.get(&name) {
                Some(TableProgress::Done { .. }) => st.done = true,
                Some(TableProgress::Partial { after_key, rows }) => {
                    st.rows = *rows;
                    match snapshot_reader::decode_blocks(after_key)? {
                        Some(done) => st.blocks_done = Some(done),
                        None => {
                            let after_key = Some(snapshot_reader::decode_key(after_key)?);
                            jobs.push(TableJob {
                                index,
                                table: table.clone(),
                                piece: Piece::Keyed {
                                    after_key,
                                    rows_done: *rows,
                                },
                            });
                            st.pieces_left = 1;
                        }
                    }
                }
                None => {}
            }
            if !st.done && st.pieces_left == 0 {
                match layout.get(&table.oid) {
                    // Heap tables on 14+: block ranges, shared by the readers.
                    Some(&(nblocks, rows_per_block)) => {
                        let done = st.blocks_done.get_or_insert_with(Vec::new);
                        let per_chunk = (chunk_rows as f64 / rows_per_block.max(1.0)).ceil() as u32;
                        let per_reader = nblocks.div_ceil(parallelism).max(1);
                        let pieces =
                            snapshot_reader::block_pieces(nblocks, done, per_chunk.min(per_reader));
                        st.pieces_left = pieces.len();
                        for (lo, hi) in pieces {
                            jobs.push(TableJob {
                                index,
                                table: table.clone(),
                                piece: Piece::Blocks { lo, hi },
                            });
                        }
                    }
                    None => {
                        jobs.push(TableJob {
                            index,
                            table: table.clone(),
                            piece: Piece::Keyed {
                                after_key: None,
                                rows_done: 0,
                            },
                        });
                        st.pieces_left = 1;
                    }
                }
            }
            state.push(st);
        }
        let (tx, mut rx) = mpsc::channel(8);
        let reader = snapshot_reader::read_tables(
            self.config.clone(),
            self.registry.clone(),
            jobs,
            exported,
            parallelism as usize,
            chunk_rows,
            tx,
        );
        tokio::pin!(reader);
        let mut reader_done = false;
        loop {
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                result = &mut reader, if !reader_done => {
                    reader_done = true;
                    result?;
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            let msg = msg?;
            let index = match &msg {
                SnapshotMsg::TableStarted { table }
                | SnapshotMsg::Rows { table, .. }
                | SnapshotMsg::ChunkDone { table, .. }
                | SnapshotMsg::TableDone { table, .. }
                | SnapshotMsg::BlocksDone { table, .. } => *table,
            };
            let t = tables[index].clone();
            if !state[index].started {
                state[index].started = true;
                self.table_started(&t).await?;
            }
            match msg {
                SnapshotMsg::TableStarted { .. } => {}
                SnapshotMsg::Rows { rows, .. } => {
                    self.stats.add_rows(rows.len() as u64);
                    state[index].rows += rows.len() as u64;
                    for row in rows {
                        self.push(ChangeEvent::Row(RowChange {
                            op: Op::Insert,
                            table: t.schema.clone(),
                            old: None,
                            old_image: OldImage::None,
                            new: Some(row),
                            snapshot: true,
                        }))
                        .await?;
                    }
                }
                SnapshotMsg::ChunkDone {
                    after_key,
                    rows_done,
                    ..
                } => {
                    if let Some(after_key) = after_key {
                        progress.insert(
                            t.schema.name.to_string(),
                            TableProgress::Partial {
                                after_key,
                                rows: rows_done,
                            },
                        );
                    }
                    self.chunk_done(&t, &progress, &checkpoint, rows_done)
                        .await?;
                }
                SnapshotMsg::BlocksDone { lo, hi, .. } => {
                    let st = &mut state[index];
                    st.pieces_left = st.pieces_left.saturating_sub(1);
                    let done = st.blocks_done.get_or_insert_with(Vec::new);
                    snapshot_reader::merge_range(done, lo, hi);
                    let rows = st.rows;
                    if st.pieces_left == 0 {
                        self.table_done(&t, &mut progress, rows).await?;
                    } else {
                        let after_key = snapshot_reader::encode_blocks(done);
                        progress.insert(
                            t.schema.name.to_string(),
                            TableProgress::Partial { after_key, rows },
                        );
                        self.chunk_done(&t, &progress, &checkpoint, rows).await?;
                    }
                }
                SnapshotMsg::TableDone { rows, .. } => {
                    self.table_done(&t, &mut progress, rows).await?;
                }
            }
        }
        if !reader_done {
            reader.await?;
        }
        // Tables with nothing left to read (empty, or done before a resume) still get their
        // schema and their start/done events.
        for (index, t) in tables.iter().enumerate() {
            if !state[index].started {
                self.table_started(t).await?;
                if !state[index].done {
                    let rows = state[index].rows;
                    self.table_done(t, &mut progress, rows).await?;
                }
            }
        }
        for t in &tables {
            self.relations.insert(
                t.oid,
                RelationState {
                    schema: t.schema.clone(),
                    types: t.column_types.clone(),
                    selected: true,
                },
            );
        }
        self.push(ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint }))
            .await?;
        self.flush().await?;
        Ok(())
    }

    async fn table_started(&mut self, t: &PublishedTable) -> Result<(), Stop> {
        self.push(ChangeEvent::Schema(t.schema.clone())).await?;
        self.push(ChangeEvent::Snapshot(SnapshotProgress::TableStarted {
            table: t.schema.name.clone(),
            estimated_rows: t.estimated_rows,
        }))
        .await
    }

    async fn chunk_done(
        &mut self,
        t: &PublishedTable,
        progress: &BTreeMap<String, TableProgress>,
        checkpoint: &powersync_source_core::Checkpoint,
        rows_done: u64,
    ) -> Result<(), Stop> {
        let resume = SnapshotResume {
            stream_from: checkpoint.clone(),
            tables: progress.clone(),
            source_state: None,
        };
        self.push(ChangeEvent::Snapshot(SnapshotProgress::ChunkDone {
            table: t.schema.name.clone(),
            rows_done,
            estimated_rows: t.estimated_rows,
            resume: Box::new(resume),
        }))
        .await
    }

    async fn table_done(
        &mut self,
        t: &PublishedTable,
        progress: &mut BTreeMap<String, TableProgress>,
        rows: u64,
    ) -> Result<(), Stop> {
        progress.insert(t.schema.name.to_string(), TableProgress::Done { rows });
        self.push(ChangeEvent::Snapshot(SnapshotProgress::TableDone {
            table: t.schema.name.clone(),
            rows,
        }))
        .await
    }

    /// Per heap table readable by block ranges (PostgreSQL 14+ TID range scans; not
    /// partitioned tables): its size in blocks and the estimated rows per block.
    async fn heap_layout(
        &self,
        tables: &[Arc<PublishedTable>],
    ) -> Result<HashMap<u32, (u32, f64)>, SourceError> {
        let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
        let rows = self
            .sql
            .query(
                "SELECT c.oid, (pg_catalog.pg_relation_size(c.oid) / current_setting('block_size')::bigint)::bigint,
                        c.relpages, c.reltuples::float8
                 FROM pg_catalog.pg_class c
                 WHERE c.oid = ANY($1) AND c.relkind IN ('r', 'm')
                   AND current_setting('server_version_num')::int >= 140000",
                &[&oids],
            )
            .await
            .map_err(|e| crate::sql_error(e, "measuring tables for the snapshot"))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let nblocks: i64 = r.get(1);
                let relpages: i32 = r.get(2);
                let reltuples: f64 = r.get(3);
                let per_block = if relpages > 0 && reltuples > 0.0 {
                    reltuples / relpages as f64
                } else {
                    60.0
                };
                (
                    r.get::<_, u32>(0),
                    (nblocks.clamp(0, u32::MAX as i64 - 1) as u32, per_block),
                )
            })
            .collect())
    }

    /// One replication session: connect (unless given), start from the last emitted
    /// boundary, pass messages through until something fails.
    async fn stream(&mut self, repl: Option<ReplicationConnection>) -> Stop {
        match self.stream_inner(repl).await {
            Ok(()) => Stop::Closed,
            Err(stop) => stop,
        }
    }

    async fn stream_inner(&mut self, repl: Option<ReplicationConnection>) -> Result<(), Stop> {
        let slot = self.config.slot();
        let repl = match repl {
            Some(r) => r,
            None => {
                // Bounded: a server that stopped answering must not hang the reconnect.
                let reconnect = async {
                    crate::slot::check_resumable(&self.sql, &slot, self.last_emitted).await?;
                    ReplicationConnection::connect(&self.config).await
                };
                tokio::time::timeout(self.options.silence_timeout, reconnect)
                    .await
                    .map_err(|_| {
                        SourceError::connection(format!(
                            "no answer from the server within {:?} while reconnecting",
                            self.options.silence_timeout
                        ))
                    })??
            }
        };
        self.server_version = repl.server_version_num();
        self.binary = self.options.binary
            && self.server_version >= 140_000
            && self.relations.values().all(|r| {
                r.types
                    .iter()
                    .all(|(oid, _)| self.registry.supports_binary(*oid))
            });
        let options = self.start_options();
        let start = tokio::time::timeout(
            self.options.silence_timeout,
            repl.start_replication(&slot, self.last_emitted, &options),
        )
        .await
        .unwrap_or_else(|_| {
            Err(SourceError::connection(format!(
                "no answer to START_REPLICATION within {:?}",
                self.options.silence_timeout
            )))
        });
        let mut stream = match start {
            Ok(s) => s,
            Err(e) if sqlstate(&e) == Some("55006") => {
                // A walsender from a dead connection still holds the slot: end it and retry.
                let terminated = crate::slot::terminate_holder(&self.sql, &slot).await?;
                tracing::warn!(target: "powersync_source_postgres", "slot `{slot}` was held by another walsender (terminated: {terminated})");
                return Err(Stop::Failed(SourceError::connection(format!(
                    "slot `{slot}` was in use by another connection"
                ))));
            }
            Err(e) if sqlstate(&e) == Some("42704") => {
                return Err(Stop::Failed(
                    SourceError::history_lost(format!(
                        "replication slot `{slot}` does not exist any more"
                    ))
                    .with_hint("start from scratch (snapshot)"),
                ));
            }
            Err(e) if sqlstate(&e) == Some("55000") => {
                return Err(Stop::Failed(
                    SourceError::history_lost(e.to_string())
                        .with_hint("the slot was invalidated; start from scratch (snapshot)"),
                ));
            }
            Err(e) => return Err(Stop::Failed(e)),
        };
        tracing::info!(target: "powersync_source_postgres", "streaming from slot `{slot}` at {} (binary: {})", self.last_emitted, self.binary);
        let mut acked = self.acked();
        let mut received = self.last_emitted;
        let mut last_status = Instant::now();
        let mut last_message = Instant::now();
        let mut asked_reply = false;
        let half_silence = self.options.silence_timeout / 2;
        let mut counter = 0u32;
        loop {
            let frame = match stream.recv().now_or_never() {
                Some(frame) => frame?,
                None => {
                    // Nothing buffered. The server writes one message per send, so inside a
                    // transaction more usually follows within microseconds: linger briefly so
                    // batches fill up, then hand over what we have and wait.
                    let lingered = if !self.batch.is_empty()
                        && self.in_transaction
                        && self.batch.len() < self.options.batch_events / 2
                    {
                        tokio::select! {
                            frame = stream.recv() => Some(frame),
                            _ = tokio::time::sleep(LINGER) => None,
                        }
                    } else {
                        None
                    };
                    if let Some(frame) = lingered {
                        frame?
                    } else {
                        self.flush().await?;
                        let wait = if asked_reply {
                            self.options.silence_timeout
                        } else {
                            half_silence
                        };
                        let deadline = last_message + wait;
                        let status_at = last_status + self.options.status_interval;
                        tokio::select! {
                            frame = stream.recv() => frame?,
                            // The host dropped the stream: end the session (and free the slot).
                            _ = self.tx.closed() => {
                                let _ = stream.close().await;
                                return Ok(());
                            }
                            _ = tokio::time::sleep_until(status_at.into()) => {
                                acked = self.acked();
                                stream.send_status(received, acked, acked, !self.in_transaction).await?;
                                last_status = Instant::now();
                                continue;
                            }
                            _ = tokio::time::sleep_until(deadline.into()) => {
                                if asked_reply {
                                    return Err(Stop::Failed(SourceError::connection(format!(
                                        "no message from the server for {:?}: connection presumed dead (half-open)",
                                        self.options.silence_timeout
                                    ))));
                                }
                                stream.send_status(received, acked, acked, true).await?;
                                last_status = Instant::now();
                                asked_reply = true;
                                continue;
                            }
                        }
                    }
                }
            };
            let Some(frame) = frame else {
                return Err(Stop::Failed(SourceError::connection(
                    "the server ended the replication stream",
                )));
            };
            last_message = Instant::now();
            asked_reply = false;
            counter = counter.wrapping_add(1);
            if counter.is_multiple_of(512) && last_status.elapsed() >= self.options.status_interval
            {
                acked = self.acked();
                stream.send_status(received, acked, acked, false).await?;
                last_status = Instant::now();
            }
            match ReplicationMessage::decode(&frame)
                .map_err(|e| SourceError::decode(format!("replication message: {e}")))?
            {
                ReplicationMessage::XLogData(x) => {
                    received = received.max(x.wal_end);
                    let msg = x
                        .pgoutput(false)
                        .map_err(|e| SourceError::decode(format!("pgoutput message: {e}")))?;
                    self.handle(msg, &frame).await?;
                }
                ReplicationMessage::PrimaryKeepalive(k) => {
                    received = received.max(k.wal_end);
                    self.stats
                        .set_lag_bytes(k.wal_end.0.saturating_sub(self.acked().0));
                    if !self.in_transaction && k.wal_end > self.last_emitted {
                        self.last_emitted = k.wal_end;
                        self.stats.record_idle();
                        self.push(ChangeEvent::Keepalive(k.wal_end.to_checkpoint()))
                            .await?;
                    }
                    if k.reply_requested {
                        acked = self.acked();
                        stream.send_status(received, acked, acked, false).await?;
                        last_status = Instant::now();
                    }
                }
            }
            self.stats.add_bytes(frame.len() as u64 + 5);
        }
    }

    fn start_options(&self) -> Vec<(&'static str, String)> {
        let proto = match self.server_version {
            v if v >= 160_000 => 4,
            v if v >= 150_000 => 3,
            v if v >= 140_000 => 2,
            _ => 1,
        };
        let mut options = vec![
            ("proto_version", proto.to_string()),
            (
                "publication_names",
                publication_names(&[self.config.publication()]),
            ),
        ];
        if self.server_version >= 140_000 {
            options.push(("messages", "true".to_string()));
            if self.binary {
                options.push(("binary", "true".to_string()));
            }
        }
        options
    }

    fn acked(&self) -> PgLsn {
        self.acks
            .latest()
            .and_then(|c| PgLsn::from_checkpoint(&c).ok())
            .unwrap_or(PgLsn::ZERO)
    }

    async fn handle(&mut self, msg: PgOutputMessage<'_>, frame: &Bytes) -> Result<(), Stop> {
        let _ = frame;
        match msg {
            PgOutputMessage::Begin(b) => {
                self.in_transaction = true;
                self.begin_emitted = false;
                self.pending_begin = Some(Begin {
                    xid: Some(b.xid as u64),
                    commit_time: Some(UnixMicros(b.commit_time.unix_micros())),
                });
            }
            PgOutputMessage::Commit(c) => {
                self.in_transaction = false;
                let checkpoint = c.end_lsn.to_checkpoint();
                self.last_emitted = c.end_lsn;
                if self.begin_emitted {
                    let commit_time = Some(UnixMicros(c.commit_time.unix_micros()));
                    self.stats.record_commit(commit_time);
                    self.push(ChangeEvent::Commit(Commit {
                        checkpoint,
                        commit_time,
                    }))
                    .await?;
                } else {
                    self.push(ChangeEvent::Keepalive(checkpoint)).await?;
                }
                self.begin_emitted = false;
                self.pending_begin = None;
                self.txn_relations.clear();
                self.txn_new_tables.clear();
            }
            PgOutputMessage::Relation(r) => {
                self.on_relation(r).await?;
            }
            PgOutputMessage::Insert(i) => {
                let Some(rel) = self.relation(i.relation_oid)? else {
                    return Ok(());
                };
                let new = decode_tuple(&self.registry, rel, i.new, false)?;
                let table = rel.schema.clone();
                self.row(RowChange {
                    op: Op::Insert,
                    table,
                    old: None,
                    old_image: OldImage::None,
                    new: Some(new),
                    snapshot: false,
                })
                .await?;
            }
            PgOutputMessage::Update(u) => {
                let Some(rel) = self.relation(u.relation_oid)? else {
                    return Ok(());
                };
                let (old, old_image) = match u.old {
                    Some(OldTuple::Key(t)) => (
                        Some(decode_tuple(&self.registry, rel, t, true)?),
                        OldImage::Key,
                    ),
                    Some(OldTuple::Full(t)) => (
                        Some(decode_tuple(&self.registry, rel, t, false)?),
                        OldImage::Full,
                    ),
                    None => (None, OldImage::None),
                };
                let new = decode_tuple(&self.registry, rel, u.new, false)?;
                let table = rel.schema.clone();
                self.row(RowChange {
                    op: Op::Update,
                    table,
                    old,
                    old_image,
                    new: Some(new),
                    snapshot: false,
                })
                .await?;
            }
            PgOutputMessage::Delete(d) => {
                let Some(rel) = self.relation(d.relation_oid)? else {
                    return Ok(());
                };
                let (old, old_image) = match d.old {
                    OldTuple::Key(t) => {
                        (decode_tuple(&self.registry, rel, t, true)?, OldImage::Key)
                    }
                    OldTuple::Full(t) => {
                        (decode_tuple(&self.registry, rel, t, false)?, OldImage::Full)
                    }
                };
                let table = rel.schema.clone();
                self.row(RowChange {
                    op: Op::Delete,
                    table,
                    old: Some(old),
                    old_image,
                    new: None,
                    snapshot: false,
                })
                .await?;
            }
            PgOutputMessage::Truncate(t) => {
                let tables: Vec<TableName> = t
                    .relation_oids
                    .into_iter()
                    .filter_map(|oid| self.relations.get(&oid))
                    .filter(|r| r.selected)
                    .map(|r| r.schema.name.clone())
                    .collect();
                if !tables.is_empty() {
                    self.emit_begin().await?;
                    self.push(ChangeEvent::Truncate(Truncate { tables }))
                        .await?;
                }
            }
            PgOutputMessage::Message(m) if m.prefix == CHECKPOINT_MESSAGE_PREFIX => {
                if let Some(lsn) = std::str::from_utf8(m.content)
                    .ok()
                    .and_then(|s| s.parse::<PgLsn>().ok())
                {
                    if m.transactional {
                        self.emit_begin().await?;
                    }
                    self.push(ChangeEvent::CheckpointObserved(lsn.to_checkpoint()))
                        .await?;
                }
            }
            // Origins, types (we read types from the catalog), foreign messages; streaming and
            // two-phase messages are not requested.
            _ => {}
        }
        Ok(())
    }

    fn relation(&self, oid: u32) -> Result<Option<&RelationState>, SourceError> {
        match self.relations.get(&oid) {
            Some(r) if r.selected => Ok(Some(r)),
            Some(_) => Ok(None),
            None => Err(SourceError::decode(format!(
                "row for relation {oid} before its Relation message"
            ))),
        }
    }

    async fn on_relation(&mut self, r: crate::pgoutput::Relation<'_>) -> Result<(), Stop> {
        let name = TableName::new(r.namespace, r.name);
        let selected = self.options.tables.is_empty() || self.options.tables.contains(&name);
        let types: Vec<(u32, i32)> = r
            .columns
            .iter()
            .map(|c| (c.type_oid, c.type_modifier))
            .collect();
        if selected {
            let missing: Vec<(u32, i32)> = types
                .iter()
                .copied()
                .filter(|(oid, _)| !self.registry.is_known(*oid))
                .collect();
            if !missing.is_empty() {
                Arc::make_mut(&mut self.registry)
                    .load_columns(&self.sql, &missing)
                    .await
                    .map_err(|e| {
                        SourceError::connection(format!("loading types of {name}: {e}"))
                    })?;
            }
        }
        if selected
            && self.binary
            && types
                .iter()
                .any(|(oid, _)| !self.registry.supports_binary(*oid))
        {
            // pgoutput's binary format is all-or-nothing per connection: restart this session
            // in text format from the last boundary (nothing is lost or repeated).
            self.options.binary = false;
            return Err(Stop::Failed(SourceError::connection(format!(
                "{name} has a column type without a binary decoder; continuing in text format"
            ))));
        }
        let identity = match r.replica_identity.as_byte() {
            b'f' => RowIdentity::Full,
            b'i' => RowIdentity::Index,
            b'n' => RowIdentity::Nothing,
            _ => RowIdentity::PrimaryKey,
        };
        // FULL identity flags every column; key rows by the primary key when there is one.
        let primary: Option<Vec<String>> = if identity == RowIdentity::Full {
            catalog::identity_columns(&self.sql, &[r.oid])
                .await?
                .remove(&r.oid)
                .and_then(|i| i.primary)
        } else {
            None
        };
        let columns: Vec<Column> = r
            .columns
            .iter()
            .map(|c| Column {
                name: c.name.to_string(),
                type_name: self.registry.type_name(c.type_oid, c.type_modifier),
                is_key: match &primary {
                    Some(pk) => pk.iter().any(|k| k == c.name),
                    None => c.is_key(),
                },
                nullable: None,
            })
            .collect();
        let schema = TableSchema {
            name: name.clone(),
            source_id: Some(r.oid as u64),
            columns,
            identity,
        };
        let changed = match self.relations.get(&r.oid) {
            Some(prev) => !same_shape(&prev.schema, &schema),
            None => true,
        };
        if changed {
            let schema = Arc::new(schema);
            self.relations.insert(
                r.oid,
                RelationState {
                    schema: schema.clone(),
                    types,
                    selected,
                },
            );
            if selected {
                self.emit_begin().await?;
                self.push(ChangeEvent::Schema(schema)).await?;
                if self.in_transaction {
                    self.txn_relations.push(r.oid);
                }
            }
        }
        if selected && self.known.insert(r.oid) {
            // A re-created table: the host still holds the rows of the old one.
            let replaced: Vec<u32> = self
                .relations
                .iter()
                .filter(|(oid, rel)| **oid != r.oid && rel.schema.name == name)
                .map(|(oid, _)| *oid)
                .collect();
            if self.in_transaction {
                self.txn_new_tables.push(r.oid);
            }
            if !replaced.is_empty() {
                self.emit_begin().await?;
                self.push(ChangeEvent::Truncate(Truncate {
                    tables: vec![name.clone()],
                }))
                .await?;
            }
            // First sight of this table (added to the publication or re-created while we
            // stream): read its current rows. Changes after this point follow in the stream;
            // ones before it that the read already reflects are re-applied idempotently.
            self.snapshot_new_table(r.oid).await?;
        }
        Ok(())
    }

    async fn snapshot_new_table(&mut self, oid: u32) -> Result<(), Stop> {
        let Some(rel) = self.relations.get(&oid) else {
            return Ok(());
        };
        let schema = rel.schema.clone();
        let table = PublishedTable {
            oid,
            schema: schema.clone(),
            column_types: rel.types.clone(),
            estimated_rows: None,
        };
        tracing::info!(target: "powersync_source_postgres", "snapshotting {} first seen in the stream", schema.name);
        let (tx, mut rx) = mpsc::channel(8);
        let job = TableJob {
            index: 0,
            table: Arc::new(table),
            piece: Piece::Keyed {
                after_key: None,
                rows_done: 0,
            },
        };
        let reader = snapshot_reader::read_tables(
            self.config.clone(),
            self.registry.clone(),
            vec![job],
            None,
            1,
            self.config.snapshot_chunk_rows(),
            tx,
        );
        tokio::pin!(reader);
        let mut reader_done = false;
        self.emit_begin().await?;
        loop {
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                result = &mut reader, if !reader_done => { reader_done = true; result?; continue; }
            };
            let Some(msg) = msg else { break };
            match msg? {
                SnapshotMsg::TableStarted { .. } => {
                    self.push(ChangeEvent::Snapshot(SnapshotProgress::TableStarted {
                        table: schema.name.clone(),
                        estimated_rows: None,
                    }))
                    .await?;
                }
                SnapshotMsg::Rows { rows, .. } => {
                    self.stats.add_rows(rows.len() as u64);
                    for row in rows {
                        self.push(ChangeEvent::Row(RowChange {
                            op: Op::Insert,
                            table: schema.clone(),
                            old: None,
                            old_image: OldImage::None,
                            new: Some(row),
                            snapshot: true,
                        }))
                        .await?;
                    }
                }
                SnapshotMsg::ChunkDone { .. } | SnapshotMsg::BlocksDone { .. } => {}
                SnapshotMsg::TableDone { rows, .. } => {
                    self.push(ChangeEvent::Snapshot(SnapshotProgress::TableDone {
                        table: schema.name.clone(),
                        rows,
                    }))
                    .await?;
                }
            }
        }
        if !reader_done {
            reader.await?;
        }
        Ok(())
    }

    async fn row(&mut self, change: RowChange) -> Result<(), Stop> {
        self.emit_begin().await?;
        self.stats.add_rows(1);
        self.push(ChangeEvent::Row(change)).await
    }

    async fn emit_begin(&mut self) -> Result<(), Stop> {
        if let Some(begin) = self.pending_begin.take() {
            self.begin_emitted = true;
            self.push(ChangeEvent::Begin(begin)).await?;
        }
        Ok(())
    }

    async fn push(&mut self, event: ChangeEvent) -> Result<(), Stop> {
        self.batch.push(event);
        if self.batch.len() >= self.options.batch_events {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.batch.is_empty() {
            return Ok(());
        }
        // Size the next batch like this one: a trickle of small transactions should not
        // allocate room for `batch_events` events every time.
        let next = (self.batch.len() * 2).clamp(16, self.options.batch_events);
        let batch = std::mem::replace(&mut self.batch, ChangeBatch::with_capacity(next));
        self.tx.send(Ok(batch)).await.map_err(|_| Stop::Closed)
    }
}

/// Same table shape as far as consumers care (name, columns, types, key).
fn same_shape(a: &TableSchema, b: &TableSchema) -> bool {
    a.name == b.name
        && a.identity == b.identity
        && a.columns.len() == b.columns.len()
        && a.columns
            .iter()
            .zip(&b.columns)
            .all(|(x, y)| x.name == y.name && x.type_name == y.type_name && x.is_key == y.is_key)
}

/// Decodes a tuple into a row in the relation's column order. In a key-only old image the
/// non-key columns are not sent (null on the wire): they become `Unchanged`.
fn decode_tuple(
    registry: &TypeRegistry,
    rel: &RelationState,
    tuple: TupleData<'_>,
    key_only: bool,
) -> Result<Row, SourceError> {
    if tuple.len() != rel.types.len() {
        return Err(SourceError::schema(format!(
            "tuple of {} has {} columns, its relation has {}",
            rel.schema.name,
            tuple.len(),
            rel.types.len()
        )));
    }
    let mut values = Vec::with_capacity(rel.types.len());
    for (i, value) in tuple.iter().enumerate() {
        let (oid, typmod) = rel.types[i];
        let v = match value {
            ColumnValue::Null if key_only && !rel.schema.columns[i].is_key => Value::Unchanged,
            ColumnValue::Null => Value::Null,
            ColumnValue::UnchangedToast => Value::Unchanged,
            ColumnValue::Text(b) => {
                types::decode_text(registry, oid, typmod, b).map_err(|e| value_error(rel, i, e))?
            }
            ColumnValue::Binary(b) => types::decode_binary(registry, oid, typmod, b)
                .map_err(|e| value_error(rel, i, e))?,
        };
        values.push(v);
    }
    Ok(Row::new(values))
}

fn value_error(rel: &RelationState, i: usize, e: types::ValueError) -> SourceError {
    let c = &rel.schema.columns[i];
    SourceError::decode_value(&rel.schema.name.to_string(), &c.name, &c.type_name, e)
}
