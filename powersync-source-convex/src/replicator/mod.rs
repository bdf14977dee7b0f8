//! The stream task: on streaming export the pinned snapshot ([`snapshot`]), then
//! `document_deltas` polling ([`deltas`]); or the Data Sync API ([`data_sync`]); this module
//! holds the retries and the task's plumbing.

mod data_sync;
mod deltas;
mod snapshot;

pub(crate) use data_sync::SyncStart;

use std::collections::{BTreeMap, HashMap, HashSet};

use powersync_source_core::position::ConvexCursor;
use powersync_source_core::runtime::{Emitter, Reconnect, Step, Stop};
use powersync_source_core::{
    AckReceiver, Checkpoint, Position, Result, SourceError, StreamStats, TableProgress, UnixMicros,
};
use serde_json::Value as Json;

use crate::api::{Api, Document};
use crate::catalog::Catalog;
use crate::config::ConvexConfig;
use crate::selection::Selection;

/// Where the stream task starts.
pub(crate) enum Plan {
    /// Snapshot (from scratch when `snapshot` is `None`), then stream from the snapshot.
    Snapshot {
        snapshot: Option<i64>,
        progress: BTreeMap<String, TableProgress>,
    },
    /// Stream after this cursor.
    Stream { cursor: i64 },
    /// The Data Sync API.
    DataSync(SyncStart),
}

/// Connector state carried in [`SnapshotResume::source_state`](powersync_source_core::SnapshotResume::source_state).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct SnapshotState {
    /// The pinned `list_snapshot` timestamp.
    pub snapshot: i64,
}

/// What the stream task reads, decided by `start` before the task runs.
pub(crate) struct Setup {
    pub api: Api,
    pub config: ConvexConfig,
    pub selection: Selection,
    pub catalog: Catalog,
}

/// The stream task's state.
pub(crate) struct Replicator {
    api: Api,
    config: ConvexConfig,
    selection: Selection,
    catalog: Catalog,
    out: Emitter,
    acks: AckReceiver,
    /// The retry budget of the current outage; every answered request ends one.
    reconnect: Reconnect,
    /// The rows the host holds, per table this stream read in full (snapshotted from its
    /// first page here, or read again after a replacement), as hashes of their ids: the
    /// periodic check compares their number with the deployment's count to find tables
    /// replaced without deletes.
    row_ids: HashMap<String, HashSet<u64>>,
    /// Whether the last table count was refused (warned once until one succeeds).
    table_sizes_refused: bool,
}

/// The hash of a document id kept in [`Replicator::row_ids`].
fn id_hash(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
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
    pub(crate) fn new(setup: Setup, out: Emitter, acks: AckReceiver) -> Replicator {
        let reconnect = Reconnect::new(setup.config.retry().clone());
        Replicator {
            api: setup.api,
            config: setup.config,
            selection: setup.selection,
            catalog: setup.catalog,
            out,
            acks,
            reconnect,
            row_ids: HashMap::new(),
            table_sizes_refused: false,
        }
    }

    /// Runs the stream until the host drops it or a final error, which reaches the host after
    /// the events before it.
    pub(crate) async fn run(mut self, plan: Plan) -> Step<()> {
        let outcome = async {
            let cursor = match plan {
                Plan::Snapshot { snapshot, progress } => self.snapshot(snapshot, progress).await?,
                Plan::Stream { cursor } => cursor,
                Plan::DataSync(start) => return self.data_sync(start).await,
            };
            self.stream(cursor).await
        }
        .await;
        match outcome {
            Err(Stop::Failed(e)) => {
                self.out.fail(e).await;
                Ok(())
            }
            other => other,
        }
    }

    /// Notes a row the host now holds (`deleted`: no longer holds) in a table read in full.
    fn track_row(&mut self, table: &str, doc: &Document, deleted: bool) {
        let (Some(ids), Some(id)) = (self.row_ids.get_mut(table), doc_str(doc, "_id")) else {
            return;
        };
        if deleted {
            ids.remove(&id_hash(id));
        } else {
            ids.insert(id_hash(id));
        }
    }

    /// Runs `call` until it answers, retrying transient failures (429, 5xx, network) with the
    /// stream's retry policy. The budget is per outage: a successful call resets it, so a
    /// stream that has run for days survives the next restart of the deployment.
    async fn retrying<T, F, Fut>(&mut self, mut call: F) -> Step<T>
    where
        F: FnMut(Api, StreamStats) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        loop {
            match call(self.api.clone(), self.out.stats().clone()).await {
                Ok(v) => {
                    self.reconnect.healthy();
                    return Ok(v);
                }
                Err(e) => self.reconnect.after_failure(e, &mut self.out).await?,
            }
        }
    }
}
