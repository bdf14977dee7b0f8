//! The stream settings every connector accepts the same way.

use std::time::Duration;

use crate::retry::RetryPolicy;
use crate::schema::TableName;

/// Settings of a change stream that mean the same for every source. Each connector takes them
/// through `XSource::with_stream_options`; source-specific settings stay on its `XConfig`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StreamOptions {
    /// Tables to replicate; `None` = everything the source publishes (PostgreSQL publication,
    /// every table of the MySQL database, every collection, every CDC-enabled table, every
    /// Convex table).
    pub tables: Option<Vec<TableName>>,
    /// How transient failures are retried inside the stream. The budget is per outage: it
    /// starts at the first failure and is reset by the first successful read after it.
    pub retry: RetryPolicy,
    /// Largest number of events in one [`crate::ChangeBatch`].
    pub batch_events: usize,
    /// A connection that delivers nothing (no data, no keepalive) for this long is treated as
    /// half-open and reconnected.
    pub silence_timeout: Duration,
    /// Rows per backfill chunk (see [`crate::backfill`]): a chunk is read between two
    /// watermarks and emitted as one transaction.
    pub backfill_chunk_rows: usize,
    /// Test fault: the stream task panics after emitting this many rows (see
    /// [`StreamOptions::with_panic_after_rows`]).
    #[doc(hidden)]
    pub panic_after_rows: Option<u64>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            tables: None,
            retry: RetryPolicy::default(),
            batch_events: 4096,
            silence_timeout: Duration::from_secs(30),
            backfill_chunk_rows: crate::backfill::DEFAULT_CHUNK_ROWS,
            panic_after_rows: None,
        }
    }
}

impl StreamOptions {
    /// Replicate only `tables`.
    pub fn with_tables(mut self, tables: Vec<TableName>) -> Self {
        self.tables = Some(tables);
        self
    }
    /// Use `retry` for transient failures.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// At most `n` events per batch (at least 1).
    pub fn with_batch_events(mut self, n: usize) -> Self {
        self.batch_events = n.max(1);
        self
    }
    /// Reconnect after `timeout` without anything from the source.
    pub fn with_silence_timeout(mut self, timeout: Duration) -> Self {
        self.silence_timeout = timeout;
        self
    }
    /// Read backfills in chunks of `rows` rows (at least 1).
    pub fn with_backfill_chunk_rows(mut self, rows: usize) -> Self {
        self.backfill_chunk_rows = rows.max(1);
        self
    }
    /// Tests only: the stream task panics after emitting `rows` rows, to prove a panic reaches
    /// the host as an [`crate::ErrorKind::Internal`] error. Outside a test process, the
    /// environment variable `POWERSYNC_FAILPOINTS=stream_panic_after_rows=N` does the same.
    #[doc(hidden)]
    pub fn with_panic_after_rows(mut self, rows: u64) -> Self {
        self.panic_after_rows = Some(rows);
        self
    }
}
