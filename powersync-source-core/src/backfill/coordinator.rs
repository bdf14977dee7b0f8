//! The stream task's side of a backfill: requests, the watermark window of the chunk in
//! flight, and the chunk transaction emitted at its high watermark. The
//! [`crate::runtime::Emitter`] owns it and feeds it every event it pushes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::key::{change_keys, row_key};
use super::reader::{self, high_mark, low_mark, Chunk, ChunkReader, HostRequest, Order, Outcome};
use super::state::{BackfillState, BackfillTask};
use super::{new_request_id, qualified, SIGNAL_KIND_BACKFILL};
use crate::checkpoint::Checkpoint;
use crate::error::{Result, SourceError};
use crate::event::{Begin, ChangeEvent, Commit, OldImage, Op, RowChange, SnapshotProgress};
use crate::options::StreamOptions;
use crate::schema::{TableName, TableSchema};

/// Where the chunk in flight is, as the stream has passed its watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Ordered; the stream has not passed the low watermark yet. Changed keys are recorded
    /// already (see [`Coordinator::observe`]).
    Requested,
    /// Between the watermarks: changed keys are recorded.
    Open,
    /// The stream passed the high watermark; the chunk goes out at that transaction's end.
    Closed,
}

#[derive(Debug)]
struct Window {
    mark: String,
    id: String,
    table: TableName,
    phase: Phase,
    changed: HashSet<String>,
    /// The table was truncated or changed shape between the watermarks: the chunk may hold
    /// rows or columns the stream has since dropped, so it is read again.
    stale: bool,
    chunk: Option<Result<Chunk>>,
}

/// Backfill bookkeeping of one stream.
#[derive(Debug)]
pub(crate) struct Coordinator {
    /// Tables left to read, as the next checkpoint carries them.
    state: BackfillState,
    /// Requests made inside the transaction the stream is in: they join `state` at its end,
    /// and vanish with it if it is aborted (the source sends it again).
    pending: Vec<BackfillTask>,
    window: Option<Window>,
    orders: mpsc::Sender<Order>,
    outcomes: mpsc::Receiver<Outcome>,
    chunk_rows: usize,
    default_schema: String,
    /// The last schema the stream emitted per table.
    schemas: HashMap<TableName, Arc<TableSchema>>,
}

/// What to emit after a boundary event, decided by [`Coordinator::after_boundary`].
pub(crate) type Emission = Vec<ChangeEvent>;

impl Coordinator {
    /// Starts the reader task and resumes the backfill `resume` carries (if any).
    pub(crate) fn start(
        reader: Box<dyn ChunkReader>,
        resume: Option<&Checkpoint>,
        requests: Option<mpsc::UnboundedReceiver<HostRequest>>,
        default_schema: String,
        options: &StreamOptions,
    ) -> Result<Coordinator> {
        let state = match resume {
            Some(c) => c.backfill()?.unwrap_or_default(),
            None => BackfillState::default(),
        };
        let (orders, order_rx) = mpsc::channel(4);
        let (outcome_tx, outcomes) = mpsc::channel(4);
        tokio::spawn(reader::run(
            reader,
            order_rx,
            requests,
            outcome_tx,
            options.retry.clone(),
            default_schema.clone(),
        ));
        if !state.is_empty() {
            tracing::info!(
                "backfill resumes: {}",
                state
                    .tasks
                    .iter()
                    .map(|t| format!("{} (request {}, {} rows so far)", t.table, t.id, t.rows))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut coordinator = Coordinator {
            state,
            pending: Vec::new(),
            window: None,
            orders,
            outcomes,
            chunk_rows: options.backfill_chunk_rows.max(1),
            default_schema,
            schemas: HashMap::new(),
        };
        // A resumed backfill starts now, not at the stream's first boundary.
        coordinator.order_next()?;
        Ok(coordinator)
    }

    /// A streamed row change: between the watermarks of the chunk in flight, its keys are
    /// dropped from the chunk.
    pub(crate) fn observe(&mut self, change: &RowChange) {
        if let Some(w) = &mut self.window {
            // From the order on, not only from the low watermark: a transaction that commits
            // just before the low watermark in the log can still be invisible to the read
            // (PostgreSQL and InnoDB make a commit visible a moment after logging it), and
            // every change the stream passes after the order is one the host receives anyway.
            if w.phase != Phase::Closed && change.table.name == w.table {
                w.changed.extend(change_keys(change));
            }
        }
    }

    /// A streamed schema event: when it changes the shape of the table being read, a chunk
    /// read around it is stale.
    pub(crate) fn schema(&mut self, schema: &Arc<TableSchema>) {
        let changed = match self.schemas.insert(schema.name.clone(), schema.clone()) {
            Some(prev) => !same_shape(&prev, schema),
            None => false,
        };
        if changed {
            self.table_changed(&schema.name);
        }
    }

    /// A streamed truncate (or shape change) of `table`: a chunk read around it is stale.
    pub(crate) fn table_changed(&mut self, table: &TableName) {
        if let Some(w) = &mut self.window {
            if w.phase != Phase::Closed && w.table == *table {
                w.stale = true;
            }
        }
    }

    /// The stream passed a watermark written by a reader (of this process or an earlier one).
    pub(crate) fn watermark(&mut self, text: &str) {
        let Some(w) = &mut self.window else {
            return;
        };
        if text == low_mark(&w.mark) {
            if w.phase == Phase::Requested {
                w.phase = Phase::Open;
            }
        } else if text == high_mark(&w.mark) && w.phase == Phase::Open {
            w.phase = Phase::Closed;
        }
    }

    /// A signal row committed in the transaction the stream is in.
    pub(crate) fn signal(&mut self, id: &str, kind: &str, tables: &str) {
        if kind != SIGNAL_KIND_BACKFILL {
            tracing::warn!("ignoring signal `{id}` of unknown kind `{kind}` (known: `backfill`)");
            return;
        }
        let names: Vec<TableName> = tables
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| qualified(TableName::parse(t, ""), &self.default_schema))
            .collect();
        if names.is_empty() {
            tracing::warn!("ignoring backfill signal `{id}`: it names no table");
            return;
        }
        self.request(id, names);
    }

    /// A table to read (a request, or a table that entered the selection), from the end of
    /// the transaction the stream is in.
    pub(crate) fn request(&mut self, id: &str, tables: Vec<TableName>) {
        for table in tables {
            let table = qualified(table, &self.default_schema);
            tracing::info!("backfill of {table} requested (request {id})");
            self.pending.push(BackfillTask {
                id: id.to_string(),
                table,
                after: None,
                rows: 0,
            });
        }
    }

    /// A table that entered the selection while streaming.
    pub(crate) fn added_table(&mut self, table: TableName) {
        let id = format!("added-{}", new_request_id());
        self.request(&id, vec![table]);
    }

    /// The host was told to discard the open transaction: the source sends it again, with its
    /// signals and watermarks.
    pub(crate) fn abort(&mut self) {
        self.pending.clear();
        if let Some(w) = &mut self.window {
            if w.phase == Phase::Closed {
                w.phase = Phase::Open;
            }
        }
    }

    /// The checkpoint a boundary event carries: the position with the cursor as of this
    /// transaction's end (requests made in it included).
    pub(crate) fn boundary_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<Checkpoint> {
        self.drain_outcomes()?;
        for task in self.pending.drain(..) {
            self.state.push(task);
        }
        Ok(checkpoint.with_backfill(&self.state))
    }

    /// After a boundary event at `checkpoint` was pushed: the chunk transaction when the
    /// stream just passed the high watermark, and the next chunk's order.
    pub(crate) async fn after_boundary(&mut self, checkpoint: &Checkpoint) -> Result<Emission> {
        let mut events = Vec::new();
        if self
            .window
            .as_ref()
            .is_some_and(|w| w.phase == Phase::Closed)
        {
            if let Some(window) = self.window.take() {
                events = self.emit_chunk(window, checkpoint).await?;
            }
        }
        self.order_next()?;
        Ok(events)
    }

    /// Reader reports that arrived since the last look.
    fn drain_outcomes(&mut self) -> Result<()> {
        while let Ok(outcome) = self.outcomes.try_recv() {
            self.take_outcome(outcome)?;
        }
        Ok(())
    }

    fn take_outcome(&mut self, outcome: Outcome) -> Result<()> {
        match outcome {
            Outcome::Chunk { mark, result } => {
                if let Some(w) = &mut self.window {
                    if w.mark == mark {
                        w.chunk = Some(result);
                    }
                }
            }
            Outcome::SignalFailed { id, tables, error } => {
                tracing::warn!(
                    "could not write backfill request {id} into the signal table ({error}); it is kept in memory until the next checkpoint carries it"
                );
                self.request(&id, tables);
            }
            Outcome::Fatal(e) => return Err(e),
        }
        Ok(())
    }

    /// Sends the order for the next chunk when none is in flight and a table is left.
    fn order_next(&mut self) -> Result<()> {
        if self.window.is_some() {
            return Ok(());
        }
        let Some(task) = self.state.tasks.first() else {
            return Ok(());
        };
        let mark = new_request_id();
        let order = Order::Chunk {
            mark: mark.clone(),
            table: task.table.clone(),
            after: task.after.clone(),
            limit: self.chunk_rows,
        };
        self.window = Some(Window {
            mark,
            id: task.id.clone(),
            table: task.table.clone(),
            phase: Phase::Requested,
            changed: HashSet::new(),
            stale: false,
            chunk: None,
        });
        // At most one chunk order is ever in the channel: this never finds it full.
        self.orders
            .try_send(order)
            .map_err(|_| SourceError::internal("the backfill reader task ended"))
    }

    /// The chunk of a closed window, minus the rows the stream changed between its
    /// watermarks, as one transaction at `checkpoint`'s position.
    async fn emit_chunk(&mut self, mut w: Window, checkpoint: &Checkpoint) -> Result<Emission> {
        // The reader hands the chunk over before it writes the high watermark, so it is here
        // (or on its way through the channel) once the stream passed that watermark.
        while w.chunk.is_none() {
            match self.outcomes.recv().await {
                Some(Outcome::Chunk { mark, result }) if mark == w.mark => w.chunk = Some(result),
                Some(other) => self.take_outcome(other)?,
                None => return Err(SourceError::internal("the backfill reader task ended")),
            }
        }
        let Some(pos) = self
            .state
            .tasks
            .iter()
            .position(|t| t.id == w.id && t.table == w.table)
        else {
            return Ok(Vec::new());
        };
        let chunk = match w.chunk.take() {
            Some(Ok(_)) if w.stale => {
                tracing::debug!("backfill of {}: the table was truncated or altered during the chunk's read; reading it again", w.table);
                return Ok(Vec::new());
            }
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) if e.is_retryable() => {
                // The retry budget ran out; the next order tries again with new watermarks.
                tracing::warn!("backfill of {}: {e}; reading the chunk again", w.table);
                return Ok(Vec::new());
            }
            Some(Err(e)) => {
                tracing::error!("backfill of {} (request {}) failed: {e}", w.table, w.id);
                self.state.tasks.remove(pos);
                let cp = checkpoint.with_backfill(&self.state);
                return Ok(vec![
                    ChangeEvent::Keepalive(cp),
                    ChangeEvent::Snapshot(SnapshotProgress::BackfillFailed {
                        table: w.table,
                        id: w.id,
                        error: e.to_string(),
                    }),
                ]);
            }
            None => return Ok(Vec::new()),
        };
        if let Some(streamed) = self.schemas.get(&w.table) {
            if !same_shape(streamed, &chunk.schema) {
                tracing::warn!(
                    "backfill of {}: the chunk reader's schema differs from the stream's ({:?} vs {:?})",
                    w.table,
                    chunk.schema.columns,
                    streamed.columns
                );
            }
        }
        let exhausted = chunk.rows.len() < self.chunk_rows;
        let task = &mut self.state.tasks[pos];
        let first = task.after.is_none() && task.rows == 0;
        let mut events = Vec::with_capacity(chunk.rows.len() + 6);
        events.push(ChangeEvent::Begin(Begin {
            xid: None,
            commit_time: None,
        }));
        events.push(ChangeEvent::Schema(chunk.schema.clone()));
        self.schemas.insert(w.table.clone(), chunk.schema.clone());
        if first {
            events.push(ChangeEvent::Snapshot(SnapshotProgress::BackfillStarted {
                table: w.table.clone(),
                id: w.id.clone(),
            }));
        }
        let mut emitted = 0u64;
        for row in chunk.rows {
            if let Some(key) = row_key(&chunk.schema, &row) {
                if w.changed.contains(&key) {
                    continue;
                }
            }
            emitted += 1;
            events.push(ChangeEvent::Row(RowChange {
                op: Op::Insert,
                table: chunk.schema.clone(),
                old: None,
                old_image: OldImage::None,
                new: Some(row),
                snapshot: true,
            }));
        }
        task.rows += emitted;
        if chunk.last_key.is_some() {
            task.after = chunk.last_key;
        }
        let rows = task.rows;
        if exhausted {
            self.state.tasks.remove(pos);
        }
        events.push(ChangeEvent::Commit(Commit {
            checkpoint: checkpoint.with_backfill(&self.state),
            commit_time: None,
        }));
        events.push(ChangeEvent::Snapshot(SnapshotProgress::BackfillChunk {
            table: w.table.clone(),
            id: w.id.clone(),
            rows_done: rows,
        }));
        if exhausted {
            tracing::info!(
                "backfill of {} (request {}) done: {rows} rows",
                w.table,
                w.id
            );
            events.push(ChangeEvent::Snapshot(SnapshotProgress::BackfillDone {
                table: w.table,
                id: w.id,
                rows,
            }));
        }
        Ok(events)
    }
}

/// Same columns (names, types, key flags) and identity: what a consumer's table follows.
fn same_shape(a: &TableSchema, b: &TableSchema) -> bool {
    a.identity == b.identity
        && a.columns.len() == b.columns.len()
        && a.columns
            .iter()
            .zip(&b.columns)
            .all(|(x, y)| x.name == y.name && x.type_name == y.type_name && x.is_key == y.is_key)
}
