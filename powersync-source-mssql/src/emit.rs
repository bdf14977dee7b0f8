//! Batches events and hands them to the host through a bounded channel (the backpressure).

use powersync_source_core::{ChangeBatch, ChangeEvent, SourceError, StreamStats};
use tokio::sync::mpsc;

/// Why a stream task stops early.
#[derive(Debug)]
pub enum Stop {
    /// The host dropped the stream: end quietly.
    Closed,
    /// A failure (retryable or not: the caller decides).
    Error(SourceError),
}

impl From<SourceError> for Stop {
    fn from(e: SourceError) -> Self {
        Stop::Error(e)
    }
}

/// Result of stream-task steps.
pub type Step<T> = std::result::Result<T, Stop>;

/// Collects events into batches of at most `max_events` and sends them.
#[derive(Debug)]
pub struct Emitter {
    tx: mpsc::Sender<powersync_source_core::Result<ChangeBatch>>,
    batch: ChangeBatch,
    max_events: usize,
    /// Shared statistics.
    pub stats: StreamStats,
}

impl Emitter {
    /// An emitter on `tx`.
    pub fn new(
        tx: mpsc::Sender<powersync_source_core::Result<ChangeBatch>>,
        max_events: usize,
        stats: StreamStats,
    ) -> Self {
        Emitter {
            tx,
            batch: ChangeBatch::with_capacity(max_events.min(1024)),
            max_events: max_events.max(1),
            stats,
        }
    }

    /// Appends an event; sends the batch when full.
    pub async fn push(&mut self, event: ChangeEvent) -> Step<()> {
        if let ChangeEvent::Row(_) = &event {
            self.stats.add_rows(1);
        }
        self.batch.push(event);
        if self.batch.len() >= self.max_events {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends what is collected.
    pub async fn flush(&mut self) -> Step<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(
            &mut self.batch,
            ChangeBatch::with_capacity(self.max_events.min(1024)),
        );
        self.tx.send(Ok(batch)).await.map_err(|_| Stop::Closed)
    }

    /// Sends a final error after what is collected.
    pub async fn fail(&mut self, e: SourceError) {
        let _ = self.flush().await;
        let _ = self.tx.send(Err(e)).await;
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
