//! The change stream a source returns, its acknowledgement handle and its statistics.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{mpsc, watch};

use crate::backfill::HostRequest;
use crate::schema::TableName;

use crate::checkpoint::Checkpoint;
use crate::error::{Result, SourceError};
use crate::event::{ChangeBatch, UnixMicros};
use crate::telemetry::SourceMetrics;

type BoxedBatches = Pin<Box<dyn Stream<Item = Result<ChangeBatch>> + Send + 'static>>;

/// An ordered stream of [`ChangeBatch`]es from one source, with the handle that tells the
/// source what the host has stored.
///
/// Contract (every connector):
/// - Batches come in source commit order; see [`crate::ChangeEvent`] for event order.
/// - Transient failures (network, server restart) are retried inside the stream with backoff
///   and resumed from the last emitted transaction boundary: the host sees neither a duplicate
///   nor a gap. Errors that reach the host are final for this stream; after one the stream
///   ends.
/// - Positions are released upstream (PostgreSQL flush LSN, …) only when acknowledged with
///   [`ChangeStream::ack`]. Received is not durable.
/// - Dropping the stream stops replication and closes its connections.
///
/// Where to consume it: the connector runs as a task on the Tokio runtime that called
/// `start`, and the rows it allocates are freed where the host drops them. Take batches off
/// the stream in a task spawned on a multi-threaded runtime (or on a current-thread runtime),
/// not in the body of `#[tokio::main]` / `Runtime::block_on`, which runs on a thread outside
/// the runtime's workers: there every row is freed on another thread than the one that
/// allocated it, and glibc's allocator makes that cost about as much CPU again as the
/// connector's own work (measured with `mysql-throughput`, which prints both placements:
/// MariaDB streaming about 400 vs 900 ns of CPU per row). Allocators built for cross-thread
/// frees (jemalloc, mimalloc) do not have this cost.
pub struct ChangeStream {
    inner: BoxedBatches,
    acks: AckHandle,
    stats: StreamStats,
    /// Where [`ChangeStream::request_backfill`] sends; `backfills` says whether the connector
    /// serves it.
    requests: Option<mpsc::UnboundedSender<HostRequest>>,
    backfills: bool,
}

impl ChangeStream {
    /// Assembles a stream (connector side).
    pub fn new(
        inner: impl Stream<Item = Result<ChangeBatch>> + Send + 'static,
        acks: AckHandle,
        stats: StreamStats,
    ) -> Self {
        ChangeStream {
            // Fused: polling after the end keeps answering `None`.
            inner: Box::pin(futures::StreamExt::fuse(inner)),
            acks,
            stats,
            requests: None,
            backfills: false,
        }
    }

    pub(crate) fn with_backfill_channel(mut self, tx: mpsc::UnboundedSender<HostRequest>) -> Self {
        self.requests = Some(tx);
        self
    }

    /// Connector side: this stream serves [`ChangeStream::request_backfill`] (the connector
    /// calls [`crate::runtime::Emitter::enable_backfill`] once it streams).
    #[doc(hidden)]
    pub fn serving_backfills(mut self) -> Self {
        self.backfills = true;
        self
    }

    /// Asks the running stream to re-read `tables` while every table keeps streaming (see
    /// [`crate::backfill`] for the method and the events). Returns the request id the
    /// progress events name.
    ///
    /// The request is written into the source's signal table (`_powersync_signals`), so it
    /// reaches the stored checkpoint through the source's log like a signal a person inserts;
    /// without that table it is kept in memory until the next checkpoint carries it. SQL
    /// Server and Convex streams answer [`crate::ErrorKind::Unsupported`].
    pub fn request_backfill(&self, tables: &[TableName]) -> Result<String> {
        let tx = match &self.requests {
            Some(tx) if self.backfills => tx,
            _ => {
                return Err(SourceError::unsupported(format!(
                    "backfills are not supported by {} streams",
                    self.acks.source
                )))
            }
        };
        if tables.is_empty() {
            return Err(SourceError::config(
                "a backfill request needs at least one table",
            ));
        }
        let id = crate::backfill::new_request_id();
        tx.send(HostRequest {
            id: id.clone(),
            tables: tables.to_vec(),
        })
        .map_err(|_| SourceError::connection("the stream has ended"))?;
        Ok(id)
    }

    /// Tells the source that everything up to and including `checkpoint` is durably stored.
    /// Only a checkpoint this stream emitted (commit, keepalive, snapshot done) may be
    /// acknowledged; older acknowledgements than the last are ignored.
    pub fn ack(&self, checkpoint: &Checkpoint) -> Result<()> {
        self.acks.ack(checkpoint)
    }

    /// A cloneable handle to acknowledge from another task.
    pub fn ack_handle(&self) -> AckHandle {
        self.acks.clone()
    }

    /// Live statistics.
    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }
}

impl Stream for ChangeStream {
    type Item = Result<ChangeBatch>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for ChangeStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeStream")
            .field("stats", &self.stats.snapshot())
            .finish()
    }
}

/// Host side of acknowledgements. Cloneable; every clone feeds the same source.
#[derive(Clone)]
pub struct AckHandle {
    source: &'static str,
    tx: Arc<watch::Sender<Option<Checkpoint>>>,
}

/// Connector side of acknowledgements: the latest acknowledged checkpoint.
#[derive(Debug, Clone)]
pub struct AckReceiver {
    rx: watch::Receiver<Option<Checkpoint>>,
}

impl AckHandle {
    /// A handle/receiver pair for a source tag (`postgres`, …).
    pub fn channel(source: &'static str) -> (AckHandle, AckReceiver) {
        let (tx, rx) = watch::channel(None);
        (
            AckHandle {
                source,
                tx: Arc::new(tx),
            },
            AckReceiver { rx },
        )
    }

    /// See [`ChangeStream::ack`].
    pub fn ack(&self, checkpoint: &Checkpoint) -> Result<()> {
        if checkpoint.source() != self.source {
            return Err(SourceError::config(format!(
                "cannot acknowledge {checkpoint} on a {} stream",
                self.source
            )));
        }
        self.tx.send_if_modified(|cur| match cur {
            Some(prev) if prev.position_part() >= checkpoint.position_part() => false,
            _ => {
                *cur = Some(checkpoint.clone());
                true
            }
        });
        Ok(())
    }
}

impl fmt::Debug for AckHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckHandle")
            .field("acked", &*self.tx.borrow())
            .finish()
    }
}

impl AckReceiver {
    /// The latest acknowledged checkpoint.
    pub fn latest(&self) -> Option<Checkpoint> {
        self.rx.borrow().clone()
    }
    /// Waits until a newer acknowledgement arrives; returns `false` once every handle is gone.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// Live counters of a stream, readable from any task at any time. Cloning shares them.
#[derive(Clone, Default)]
pub struct StreamStats {
    inner: Arc<StatsInner>,
}

#[derive(Default)]
struct StatsInner {
    bytes_received: AtomicU64,
    rows: AtomicU64,
    transactions: AtomicU64,
    lag_micros: AtomicI64,
    lag_bytes: AtomicU64,
    reconnects: AtomicU64,
    retained_bytes: AtomicU64,
    history_budget_bytes: AtomicU64,
    /// Whether a connector measured a budget (none: unbounded or unknown).
    budget_set: AtomicBool,
    /// The checkpoint tag, for a stream made with [`StreamStats::for_source`].
    source: Option<&'static str>,
    /// The same numbers as metrics (feature `metrics`), for a stream made with
    /// [`StreamStats::for_source`].
    metrics: SourceMetrics,
}

/// A point-in-time copy of [`StreamStats`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StatsSnapshot {
    /// Bytes read from the source's replication connection(s).
    pub bytes_received: u64,
    /// Row events emitted (snapshot and streamed).
    pub rows: u64,
    /// Transactions (commits) emitted.
    pub transactions: u64,
    /// Seconds between the last emitted commit's source commit time and when it was emitted;
    /// 0 when the stream is caught up and idle.
    pub lag_seconds: f64,
    /// Bytes of source history between the source's head and the last acknowledged position,
    /// where the source can tell (PostgreSQL WAL bytes held by the slot).
    pub lag_bytes: u64,
    /// Times the stream reconnected after a transient failure.
    pub reconnects: u64,
    /// Bytes of history the source retains for this stream, where the connector measures it
    /// (PostgreSQL: WAL held by the slot).
    pub retained_bytes: u64,
    /// Bytes of history left before the source may drop what this stream needs (PostgreSQL
    /// `safe_wal_size`); `None` where unbounded or not measured.
    pub history_budget_bytes: Option<u64>,
}

impl StreamStats {
    /// Statistics of a stream of the source whose checkpoint tag is `source`; with the crate
    /// feature `metrics`, every update is also recorded as a metric labelled with it (see
    /// [`crate::telemetry`]). [`crate::runtime::spawn_stream`] makes them this way.
    /// `StreamStats::default()` records no metrics.
    pub fn for_source(source: &'static str) -> Self {
        StreamStats {
            inner: Arc::new(StatsInner {
                source: Some(source),
                metrics: SourceMetrics::new(source),
                ..StatsInner::default()
            }),
        }
    }

    /// The checkpoint tag of the stream (`None` for `StreamStats::default()`): the `source`
    /// label of its metrics and field of its log lines.
    pub fn source(&self) -> Option<&'static str> {
        self.inner.source
    }

    /// Counts bytes read from the wire.
    pub fn add_bytes(&self, n: u64) {
        self.inner.bytes_received.fetch_add(n, Ordering::Relaxed);
        self.inner.metrics.bytes(n);
    }
    /// Counts emitted rows.
    pub fn add_rows(&self, n: u64) {
        self.inner.rows.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts an emitted commit and updates the lag from its source commit time.
    pub fn record_commit(&self, commit_time: Option<UnixMicros>) {
        self.inner.transactions.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.transaction();
        if let Some(t) = commit_time {
            let lag = (UnixMicros::now().0 - t.0).max(0);
            self.inner.lag_micros.store(lag, Ordering::Relaxed);
            self.inner.metrics.lag_seconds(lag as f64 / 1e6);
        }
    }
    /// Marks the stream as caught up (lag 0).
    pub fn record_idle(&self) {
        self.inner.lag_micros.store(0, Ordering::Relaxed);
        self.inner.metrics.lag_seconds(0.0);
    }
    /// Sets the byte lag (source head minus acknowledged position).
    pub fn set_lag_bytes(&self, n: u64) {
        self.inner.lag_bytes.store(n, Ordering::Relaxed);
        self.inner.metrics.lag_bytes(n);
    }
    /// Counts a reconnect after a transient failure.
    pub fn record_reconnect(&self) {
        self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.reconnect();
    }
    /// Sets the bytes of history the source retains for this stream (PostgreSQL: WAL held by
    /// the slot; MySQL/MariaDB: binlog from the stream's position to the head).
    pub fn set_retained_bytes(&self, n: u64) {
        self.inner.retained_bytes.store(n, Ordering::Relaxed);
        self.inner.metrics.retained_bytes(n);
    }
    /// Sets the bytes of history left before the source may drop what this stream needs
    /// (PostgreSQL `safe_wal_size`). Not called where the history is unbounded.
    pub fn set_history_budget_bytes(&self, n: u64) {
        self.inner.history_budget_bytes.store(n, Ordering::Relaxed);
        self.inner.budget_set.store(true, Ordering::Relaxed);
        self.inner.metrics.history_budget_bytes(n);
    }
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let i = &self.inner;
        StatsSnapshot {
            bytes_received: i.bytes_received.load(Ordering::Relaxed),
            rows: i.rows.load(Ordering::Relaxed),
            transactions: i.transactions.load(Ordering::Relaxed),
            lag_seconds: i.lag_micros.load(Ordering::Relaxed) as f64 / 1e6,
            lag_bytes: i.lag_bytes.load(Ordering::Relaxed),
            reconnects: i.reconnects.load(Ordering::Relaxed),
            retained_bytes: i.retained_bytes.load(Ordering::Relaxed),
            history_budget_bytes: i
                .budget_set
                .load(Ordering::Relaxed)
                .then(|| i.history_budget_bytes.load(Ordering::Relaxed)),
        }
    }
}

impl fmt::Debug for StreamStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}
