//! The stream task: the pinned snapshot ([`snapshot`]), then `document_deltas` polling
//! ([`deltas`]); this module holds the batching, the retries and the task's plumbing.

mod deltas;
mod snapshot;

use std::collections::BTreeMap;

use powersync_source_core::position::ConvexCursor;
use powersync_source_core::{
    AckReceiver, ChangeBatch, ChangeEvent, Checkpoint, Position, Result, SourceError, StreamStats,
    TableProgress, UnixMicros,
};
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::api::{Api, Document};
use crate::catalog::Catalog;
use crate::config::ConvexConfig;
use crate::selection::Selection;

/// Events per batch before it is handed to the host.
const BATCH_EVENTS: usize = 1000;

/// Where the stream task starts.
pub(crate) enum Plan {
    /// Snapshot (from scratch when `snapshot` is `None`), then stream from the snapshot.
    Snapshot {
        snapshot: Option<i64>,
        progress: BTreeMap<String, TableProgress>,
    },
    /// Stream after this cursor.
    Stream { cursor: i64 },
}

/// Connector state carried in [`SnapshotResume::source_state`].
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct SnapshotState {
    /// The pinned `list_snapshot` timestamp.
    pub snapshot: i64,
}

pub(crate) struct Replicator {
    pub api: Api,
    pub config: ConvexConfig,
    pub selection: Selection,
    pub catalog: Catalog,
    pub tx: mpsc::Sender<Result<ChangeBatch>>,
    pub stats: StreamStats,
    pub acks: AckReceiver,
    batch: ChangeBatch,
}

/// The host dropped the stream: stop quietly.
struct Closed;

enum Stop {
    Closed,
    Failed(SourceError),
}

impl From<Closed> for Stop {
    fn from(_: Closed) -> Self {
        Stop::Closed
    }
}
impl From<SourceError> for Stop {
    fn from(e: SourceError) -> Self {
        Stop::Failed(e)
    }
}

fn cursor_checkpoint(c: i64) -> Result<Checkpoint> {
    ConvexCursor::new(c)
        .map(|c| c.to_checkpoint())
        .ok_or_else(|| SourceError::decode(format!("Convex sent a negative cursor {c}")))
}

fn nanos_to_micros(ts: i64) -> UnixMicros {
    UnixMicros(ts / 1000)
}

fn doc_str<'a>(doc: &'a Document, field: &str) -> Option<&'a str> {
    doc.get(field).and_then(Json::as_str)
}

fn doc_ts(doc: &Document) -> Result<i64> {
    doc.get("_ts")
        .and_then(Json::as_i64)
        .ok_or_else(|| SourceError::decode("a document without an integer `_ts`"))
}

impl Replicator {
    pub(crate) fn new(
        api: Api,
        config: ConvexConfig,
        selection: Selection,
        catalog: Catalog,
        tx: mpsc::Sender<Result<ChangeBatch>>,
        stats: StreamStats,
        acks: AckReceiver,
    ) -> Replicator {
        Replicator {
            api,
            config,
            selection,
            catalog,
            tx,
            stats,
            acks,
            batch: ChangeBatch::with_capacity(64),
        }
    }

    pub(crate) async fn run(mut self, plan: Plan) {
        let outcome = async {
            let cursor = match plan {
                Plan::Snapshot { snapshot, progress } => self.snapshot(snapshot, progress).await?,
                Plan::Stream { cursor } => cursor,
            };
            self.stream(cursor).await
        }
        .await;
        if let Err(Stop::Failed(e)) = outcome {
            let _ = self.flush().await;
            let _ = self.tx.send(Err(e)).await;
        }
    }

    async fn push(&mut self, event: ChangeEvent) -> std::result::Result<(), Closed> {
        self.batch.push(event);
        if self.batch.len() >= BATCH_EVENTS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::result::Result<(), Closed> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, ChangeBatch::with_capacity(64));
        self.tx.send(Ok(batch)).await.map_err(|_| Closed)
    }

    /// Runs `call` with the retry policy, counting reconnects.
    async fn retrying<T, F, Fut>(&mut self, mut call: F) -> std::result::Result<T, Stop>
    where
        F: FnMut(Api, StreamStats) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut backoff = self.config.retry().backoff();
        loop {
            match call(self.api.clone(), self.stats.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => match backoff.next_delay(&e) {
                    Some(delay) => {
                        tracing::warn!("Convex: {e}; retrying in {delay:?}");
                        self.stats.record_reconnect();
                        // Hand over what is ready while waiting.
                        self.flush().await?;
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.tx.closed() => return Err(Stop::Closed),
                        }
                    }
                    None => return Err(Stop::Failed(e)),
                },
            }
        }
    }
}
