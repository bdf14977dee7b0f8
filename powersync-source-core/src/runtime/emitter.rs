//! Batching events into [`ChangeBatch`]es and handing them to the host through a bounded
//! channel (the backpressure).

use tokio::sync::{mpsc, oneshot};

use crate::backfill::{ChunkReader, Coordinator, HostRequest};
use crate::checkpoint::Checkpoint;
use crate::error::{Result, SourceError};
use crate::event::{ChangeBatch, ChangeEvent};
use crate::options::StreamOptions;
use crate::schema::TableName;
use crate::stream::StreamStats;
use crate::telemetry::EventMetrics;

/// Why a stream task stops before its source is exhausted.
#[derive(Debug)]
pub enum Stop {
    /// The host dropped the stream: end quietly.
    Closed,
    /// A failure. Inside a reconnect loop the caller decides whether it is retried
    /// ([`crate::runtime::Reconnect`]); returned from the task it is final and reaches the host.
    Failed(SourceError),
}

impl From<SourceError> for Stop {
    fn from(e: SourceError) -> Self {
        Stop::Failed(e)
    }
}

/// Result of a stream-task step.
pub type Step<T> = std::result::Result<T, Stop>;

/// Collects events into batches of at most `batch_events` and sends them to the host.
///
/// Counts emitted rows and commits in the stream's [`StreamStats`], and tracks whether a
/// transaction is open (a `Begin` pushed without its `Commit`), so a reconnect can tell the
/// host to discard it ([`Emitter::abort_open_transaction`]).
#[derive(Debug)]
pub struct Emitter {
    tx: mpsc::Sender<Result<ChangeBatch>>,
    batch: ChangeBatch,
    batch_events: usize,
    stats: StreamStats,
    /// Rows by table and op, snapshot tables by state (feature `metrics`).
    metrics: EventMetrics,
    in_transaction: bool,
    /// Test fault: panic once this many rows were emitted.
    panic_after_rows: Option<u64>,
    rows: u64,
    /// Where the events still collected go when the emitter is dropped (the task ended or
    /// panicked): `spawn_stream` sends them before the stream's final item.
    leftover: Option<oneshot::Sender<ChangeBatch>>,
    /// The running backfill machinery, once the connector enabled it.
    backfill: Option<Box<Coordinator>>,
    /// Host requests from [`crate::ChangeStream::request_backfill`], until backfills are
    /// enabled.
    requests: Option<mpsc::UnboundedReceiver<HostRequest>>,
}

impl Drop for Emitter {
    fn drop(&mut self) {
        if let Some(leftover) = self.leftover.take() {
            if !self.batch.is_empty() {
                let _ = leftover.send(std::mem::take(&mut self.batch));
            }
        }
    }
}

impl Emitter {
    /// An emitter sending on `tx`. Most connectors get theirs from
    /// [`crate::runtime::spawn_stream`].
    pub fn new(
        tx: mpsc::Sender<Result<ChangeBatch>>,
        batch_events: usize,
        stats: StreamStats,
    ) -> Self {
        let batch_events = batch_events.max(1);
        Emitter {
            tx,
            batch: ChangeBatch::with_capacity(batch_events.min(1024)),
            batch_events,
            metrics: EventMetrics::new(stats.source()),
            stats,
            in_transaction: false,
            panic_after_rows: None,
            rows: 0,
            leftover: None,
            backfill: None,
            requests: None,
        }
    }

    pub(super) fn set_requests(&mut self, requests: mpsc::UnboundedReceiver<HostRequest>) {
        self.requests = Some(requests);
    }

    /// Turns on backfills for this stream (see [`crate::backfill`]): starts the reader task on
    /// `reader` and resumes the backfill that `resume` (the checkpoint the stream started
    /// from) carries. Call once, when the stream starts streaming (after an initial snapshot).
    /// `default_schema` qualifies table names a signal gives without one.
    pub fn enable_backfill(
        &mut self,
        reader: Box<dyn ChunkReader>,
        resume: Option<&Checkpoint>,
        default_schema: &str,
        options: &StreamOptions,
    ) -> Result<()> {
        if self.backfill.is_some() {
            return Ok(());
        }
        let coordinator = Coordinator::start(
            reader,
            resume,
            self.requests.take(),
            default_schema.to_string(),
            options,
        )?;
        self.backfill = Some(Box::new(coordinator));
        Ok(())
    }

    /// The stream passed a backfill watermark (the text a [`ChunkReader`] wrote). Call it
    /// where it lies in the stream: inside its transaction, before that transaction's end.
    pub fn backfill_watermark(&mut self, text: &str) {
        if let Some(b) = &mut self.backfill {
            b.watermark(text);
        }
    }

    /// The stream passed a row inserted into the signal table
    /// ([`crate::backfill::SIGNAL_TABLE`]); it takes effect at its transaction's end. Its
    /// `tables` are comma-separated `schema.table` names.
    pub fn backfill_signal(&mut self, id: &str, kind: &str, tables: &str) {
        match &mut self.backfill {
            Some(b) => b.signal(id, kind, tables),
            None => tracing::warn!("ignoring signal `{id}`: this stream does not backfill"),
        }
    }

    /// A table entered the selection while streaming: it is read through a backfill from the
    /// end of the current transaction.
    pub fn backfill_added_table(&mut self, table: TableName) {
        if let Some(b) = &mut self.backfill {
            b.added_table(table);
        }
    }

    /// Whether backfills are enabled on this stream.
    pub fn backfill_enabled(&self) -> bool {
        self.backfill.is_some()
    }

    pub(super) fn set_failpoint(&mut self, panic_after_rows: Option<u64>) {
        self.panic_after_rows = panic_after_rows;
    }

    pub(super) fn set_leftover(&mut self, leftover: oneshot::Sender<ChangeBatch>) {
        self.leftover = Some(leftover);
    }

    /// Appends an event; sends the batch once it holds `batch_events` events.
    ///
    /// With backfills enabled, every commit and keepalive carries the backfill cursor, and a
    /// chunk whose high watermark the stream passed follows the transaction that held it.
    pub async fn push(&mut self, event: ChangeEvent) -> Step<()> {
        let Some(backfill) = self.backfill.as_deref_mut() else {
            return self.push_plain(event).await;
        };
        let boundary = match event {
            ChangeEvent::Row(ref change) => {
                if !change.snapshot {
                    backfill.observe(change);
                }
                return self.push_plain(event).await;
            }
            ChangeEvent::Abort => {
                backfill.abort();
                return self.push_plain(event).await;
            }
            ChangeEvent::Truncate(ref t) => {
                for table in &t.tables {
                    backfill.table_changed(table);
                }
                return self.push_plain(event).await;
            }
            ChangeEvent::Schema(ref schema) => {
                backfill.schema(schema);
                return self.push_plain(event).await;
            }
            ChangeEvent::Commit(mut commit) => {
                commit.checkpoint = backfill.boundary_checkpoint(&commit.checkpoint)?;
                let at = commit.checkpoint.clone();
                self.push_plain(ChangeEvent::Commit(commit)).await?;
                at
            }
            ChangeEvent::Keepalive(checkpoint) => {
                let at = backfill.boundary_checkpoint(&checkpoint)?;
                self.push_plain(ChangeEvent::Keepalive(at.clone())).await?;
                at
            }
            other => return self.push_plain(other).await,
        };
        let Some(backfill) = self.backfill.as_deref_mut() else {
            return Ok(());
        };
        for event in backfill.after_boundary(&boundary).await? {
            self.push_plain(event).await?;
        }
        Ok(())
    }

    /// Appends `events` in order: the same as [`Emitter::push`] for each, without an await
    /// per event where none is needed (a snapshot hands over rows by the thousand).
    pub async fn push_all(&mut self, events: impl IntoIterator<Item = ChangeEvent>) -> Step<()> {
        if self.backfill.is_some() {
            for event in events {
                self.push(event).await?;
            }
            return Ok(());
        }
        for event in events {
            if self.enqueue(event) {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn push_plain(&mut self, event: ChangeEvent) -> Step<()> {
        if self.enqueue(event) {
            self.flush().await?;
        }
        Ok(())
    }

    /// Counts `event` (rows, commits, open transaction, metrics) and adds it to the batch;
    /// true when the batch is full and should be flushed.
    #[inline]
    fn enqueue(&mut self, event: ChangeEvent) -> bool {
        match &event {
            ChangeEvent::Row(_) => {
                self.stats.add_rows(1);
                self.rows += 1;
                if self.panic_after_rows.is_some_and(|n| self.rows > n) {
                    // Injected through POWERSYNC_FAILPOINTS (see `failpoint`), tests only.
                    panic!("injected failpoint stream_panic_after_rows");
                }
            }
            ChangeEvent::Begin(_) => self.in_transaction = true,
            ChangeEvent::Commit(c) => {
                self.in_transaction = false;
                self.stats.record_commit(c.commit_time);
            }
            ChangeEvent::Abort => self.in_transaction = false,
            _ => {}
        }
        self.metrics.observe(&event);
        self.batch.push(event);
        self.batch.len() >= self.batch_events
    }

    /// Sends the events collected so far (nothing when there are none).
    pub async fn flush(&mut self) -> Step<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        // Size the next batch after this one: a trickle of small transactions does not pay
        // for a 4096-event allocation per flush, a bulk load does not regrow its vector.
        let capacity = (self.batch.len() * 2).max(16).min(self.batch_events);
        let batch = std::mem::replace(&mut self.batch, ChangeBatch::with_capacity(capacity));
        self.tx.send(Ok(batch)).await.map_err(|_| Stop::Closed)
    }

    /// Sends what is collected, then `error` as the stream's final item.
    pub async fn fail(&mut self, error: SourceError) {
        let _ = self.flush().await;
        let _ = self.tx.send(Err(error)).await;
    }

    /// Whether a `Begin` was pushed without its `Commit` (or `Abort`).
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// After a lost connection: when a transaction is open, pushes [`ChangeEvent::Abort`] (the
    /// host discards it; the source resends it from the last boundary) and flushes.
    pub async fn abort_open_transaction(&mut self) -> Step<()> {
        if self.in_transaction {
            self.push(ChangeEvent::Abort).await?;
        }
        self.flush().await
    }

    /// Tells the metrics how many tables the snapshot will read (those it skips because a
    /// resumed snapshot finished them before not counted), so `snapshot_tables{state="pending"}`
    /// can be reported; without it only `copying` and `done` are.
    pub fn plan_snapshot(&mut self, tables: usize) {
        self.metrics.plan_snapshot(tables);
    }

    /// Events collected and not yet sent.
    pub fn pending(&self) -> usize {
        self.batch.len()
    }

    /// The batch size limit.
    pub fn batch_events(&self) -> usize {
        self.batch_events
    }

    /// The stream's statistics.
    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// Whether the host dropped the stream.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the host drops the stream.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}
