//! Batching events towards the host with backpressure.

use powersync_source_core::{ChangeBatch, ChangeEvent, Result, SourceError, StreamStats};
use tokio::sync::mpsc;

/// The host dropped the stream: stop quietly.
#[derive(Debug)]
pub(crate) struct Closed;

/// Collects events into batches of at most `limit` events and hands them to the host.
#[derive(Debug)]
pub(crate) struct Emitter {
    tx: mpsc::Sender<Result<ChangeBatch>>,
    batch: ChangeBatch,
    limit: usize,
    pub stats: StreamStats,
}

impl Emitter {
    pub fn new(tx: mpsc::Sender<Result<ChangeBatch>>, limit: usize, stats: StreamStats) -> Self {
        Emitter {
            tx,
            batch: ChangeBatch::with_capacity(limit.min(1024)),
            limit: limit.max(1),
            stats,
        }
    }

    /// Queues an event; sends the batch when it is full.
    pub async fn push(&mut self, event: ChangeEvent) -> Result<(), Closed> {
        if let ChangeEvent::Row(_) = &event {
            self.stats.add_rows(1);
        }
        self.batch.push(event);
        if self.batch.len() >= self.limit {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends what is queued.
    pub async fn flush(&mut self) -> Result<(), Closed> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(
            &mut self.batch,
            ChangeBatch::with_capacity(self.limit.min(1024)),
        );
        self.tx.send(Ok(batch)).await.map_err(|_| Closed)
    }

    /// Sends what is queued, then the final error.
    pub async fn fail(&mut self, error: SourceError) {
        let _ = self.flush().await;
        let _ = self.tx.send(Err(error)).await;
    }
}
