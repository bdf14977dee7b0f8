//! The connector's side of a backfill ([`ChunkReader`]) and the task that drives it: low
//! watermark, chunk read, hand-over, high watermark.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::{Result, SourceError};
use crate::retry::RetryPolicy;
use crate::schema::{TableName, TableSchema};
use crate::value::Row;

/// Evaluates an async expression until it succeeds, fails with a non-retryable error, or the
/// retry budget is spent. (A macro: the expression borrows the reader mutably, which a closure
/// returning a future cannot.)
macro_rules! retrying {
    ($retry:expr, $op:expr) => {{
        let mut backoff = $retry.backoff();
        loop {
            match $op.await {
                Ok(v) => break Ok(v),
                Err(e) => match backoff.next_delay(&e) {
                    Some(delay) => {
                        tracing::warn!("backfill: {e}; retrying in {delay:?}");
                        tokio::time::sleep(delay).await;
                    }
                    None => break Err(e),
                },
            }
        }
    }};
}

/// What a connector provides for backfills: its own connection to the source (not the
/// replication connection), used from a task of its own.
///
/// Errors: a retryable ([`SourceError::is_retryable`]) error is retried with the stream's
/// [`RetryPolicy`]; the connector reconnects inside the next call. Any other error from
/// [`ChunkReader::read_chunk`] ends that table's backfill
/// ([`crate::SnapshotProgress::BackfillFailed`]); one from a watermark write ends the stream
/// (no backfill can work without them).
#[async_trait]
pub trait ChunkReader: Send + 'static {
    /// Writes `mark` into the source's change log in a transaction of its own, so that the
    /// stream passes it in commit order; the connector's stream task hands it to
    /// [`crate::runtime::Emitter::backfill_watermark`] when it does.
    async fn write_watermark(&mut self, mark: &str) -> Result<()>;

    /// Reads up to `limit` rows of `table` whose key is greater than `after` (the encoding of
    /// a key this reader returned in [`Chunk::last_key`]; `None` = from the first row), in
    /// key order, each row normalized exactly as the stream normalizes it. A table that no
    /// longer exists, or has no key to order by, is a [`crate::ErrorKind::Schema`] error.
    async fn read_chunk(
        &mut self,
        table: &TableName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Chunk>;

    /// Inserts a backfill signal for `tables` with request id `id` into the source's signal
    /// table ([`super::SIGNAL_TABLE`]), so the request travels through the source's log.
    async fn write_signal(&mut self, id: &str, tables: &[TableName]) -> Result<()>;
}

/// Rows of one table in key order, after some key.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The table's schema, as the stream emits it.
    pub schema: Arc<TableSchema>,
    /// The rows, in key order, in the schema's column order.
    pub rows: Vec<Row>,
    /// The encoding of the last row's key, to pass back as `after`; `None` when `rows` is
    /// empty.
    pub last_key: Option<String>,
}

/// A host's request, as [`crate::ChangeStream::request_backfill`] sends it.
#[derive(Debug)]
pub(crate) struct HostRequest {
    pub(crate) id: String,
    pub(crate) tables: Vec<TableName>,
}

/// Work for the reader task.
#[derive(Debug)]
pub(crate) enum Order {
    /// Read the chunk after `after` between two watermarks named by `mark`.
    Chunk {
        mark: String,
        table: TableName,
        after: Option<String>,
        limit: usize,
    },
    /// Write a signal row for a host's request.
    Signal { id: String, tables: Vec<TableName> },
}

/// What the reader task reports.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The chunk read after the low watermark `mark` (sent before the high one is written).
    Chunk { mark: String, result: Result<Chunk> },
    /// Writing the signal row failed: the request is added in memory instead.
    SignalFailed {
        id: String,
        tables: Vec<TableName>,
        error: SourceError,
    },
    /// A watermark could not be written: the stream ends with this error.
    Fatal(SourceError),
}

/// The low and high watermark texts of a chunk.
pub(crate) fn low_mark(mark: &str) -> String {
    format!("low:{mark}")
}
pub(crate) fn high_mark(mark: &str) -> String {
    format!("high:{mark}")
}

/// Runs orders until the stream task drops its sender.
pub(crate) async fn run(
    mut reader: Box<dyn ChunkReader>,
    mut orders: mpsc::Receiver<Order>,
    mut requests: Option<mpsc::UnboundedReceiver<HostRequest>>,
    outcomes: mpsc::Sender<Outcome>,
    retry: RetryPolicy,
    default_schema: String,
) {
    loop {
        // A host's request is written into the source's signal table, so that it reaches the
        // stream (and the stored checkpoint) through the source's log like any signal.
        let order = tokio::select! {
            order = orders.recv() => order,
            Some(request) = next_request(&mut requests) => Some(Order::Signal {
                id: request.id,
                tables: request
                    .tables
                    .into_iter()
                    .map(|t| super::qualified(t, &default_schema))
                    .collect(),
            }),
        };
        let Some(order) = order else {
            return;
        };
        let sent = match order {
            Order::Signal { id, tables } => {
                match retrying!(retry, reader.write_signal(&id, &tables)) {
                    Ok(()) => true,
                    Err(error) => outcomes
                        .send(Outcome::SignalFailed { id, tables, error })
                        .await
                        .is_ok(),
                }
            }
            Order::Chunk {
                mark,
                table,
                after,
                limit,
            } => {
                let low = low_mark(&mark);
                if let Err(e) = retrying!(retry, reader.write_watermark(&low)) {
                    let _ = outcomes.send(Outcome::Fatal(watermark_error(e))).await;
                    return;
                }
                let result = retrying!(retry, reader.read_chunk(&table, after.as_deref(), limit));
                // The chunk goes to the stream task before the high watermark exists, so it is
                // there when the stream passes that watermark.
                if outcomes
                    .send(Outcome::Chunk {
                        mark: mark.clone(),
                        result,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                let high = high_mark(&mark);
                if let Err(e) = retrying!(retry, reader.write_watermark(&high)) {
                    let _ = outcomes.send(Outcome::Fatal(watermark_error(e))).await;
                    return;
                }
                true
            }
        };
        if !sent {
            return;
        }
    }
}

/// The next host request; pending forever once there are none (or never were).
async fn next_request(
    requests: &mut Option<mpsc::UnboundedReceiver<HostRequest>>,
) -> Option<HostRequest> {
    match requests {
        Some(rx) => match rx.recv().await {
            Some(r) => Some(r),
            None => {
                *requests = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

fn watermark_error(e: SourceError) -> SourceError {
    SourceError::prerequisite("cannot write a backfill watermark into the source")
        .with_hint("run `setup` (it creates what backfills need), or give the connecting user the right to write them")
        .with_source(e)
}
