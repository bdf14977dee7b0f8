//! `ConvexSource`: the [`ChangeSource`] implementation.

use async_trait::async_trait;
use powersync_source_core::position::ConvexCursor;
use powersync_source_core::{
    AckHandle, ChangeSource, ChangeStream, CheckReport, Checkpoint, Position, Result, SourceError,
    StartFrom, StreamStats, TableName, TableSchema,
};
use tokio::sync::mpsc;

use crate::api::Api;
use crate::catalog::{parse_json_schemas, Catalog, SCHEMA};
use crate::config::ConvexConfig;
use crate::decode::Encoding;
use crate::replicator::{Plan, Replicator, SnapshotState};
use crate::selection::Selection;

/// A Convex deployment replicated through the streaming export API.
///
/// One `reqwest` client (rustls) is shared by `check`, `discover`, `write_checkpoint` and every
/// stream of this source. See the [crate docs](crate) for the consistency model.
#[derive(Debug, Clone)]
pub struct ConvexSource {
    config: ConvexConfig,
    tables: Vec<TableName>,
    api: Api,
}

impl ConvexSource {
    /// A source replicating every table of the default component (except the marker table
    /// `powersync_checkpoints`).
    pub fn new(config: ConvexConfig) -> ConvexSource {
        let api = Api::new(&config);
        ConvexSource {
            config,
            tables: Vec::new(),
            api,
        }
    }

    /// Restricts replication to these tables (`TableName.schema` = `convex`; any other schema
    /// is refused by `check` and `start`). An empty list selects every table except
    /// `powersync_checkpoints`.
    pub fn with_tables(mut self, tables: Vec<TableName>) -> ConvexSource {
        self.tables = tables;
        self
    }

    /// The connection settings.
    pub fn config(&self) -> &ConvexConfig {
        &self.config
    }
}

#[async_trait]
impl ChangeSource for ConvexSource {
    fn kind(&self) -> &'static str {
        ConvexCursor::SOURCE
    }

    /// Checks that the deployment answers with the deploy key, that streaming export is
    /// available, that every selected table exists, and that `powersync_checkpoints` and
    /// `powersync_checkpoints:createCheckpoint` are deployed (the check runs the mutation
    /// once, writing one marker row). With `encoding=auto`, a warning says when the typed
    /// encoding is not accepted.
    async fn check(&self) -> Result<CheckReport> {
        Ok(crate::check::check(&self.api, &self.config, &self.tables)
            .await?
            .0)
    }

    async fn discover(&self) -> Result<Vec<TableSchema>> {
        let selection = Selection::new(&self.tables)?;
        let map = self
            .api
            .retrying(|| self.api.json_schemas(Encoding::Json))
            .await?;
        let types = parse_json_schemas(&map);
        let names = selection.snapshot_tables(types.keys());
        let (encoding, _) = crate::check::negotiate_encoding(&self.api, &self.config).await?;
        let mut catalog = Catalog::new(types, encoding, self.config.int64());
        Ok(names.iter().map(|t| (*catalog.schema(t)).clone()).collect())
    }

    /// Starts replication. `Beginning` pins one snapshot for every table and streams from
    /// it; `Snapshot(token)` finishes an interrupted snapshot at the same pinned timestamp;
    /// `Checkpoint` streams `document_deltas` after the checkpoint's cursor. A cursor or
    /// snapshot older than the deployment's retention is
    /// [`HistoryLost`](powersync_source_core::ErrorKind::HistoryLost) (reported by `start` or
    /// as the stream's first item).
    async fn start(&self, from: StartFrom) -> Result<ChangeStream> {
        let selection = Selection::new(&self.tables)?;
        let (report, schemas, encoding) =
            crate::check::check(&self.api, &self.config, &self.tables).await?;
        report.into_result()?;
        let (Some(schemas), Some(encoding)) = (schemas, encoding) else {
            return Err(SourceError::prerequisite(
                "the deployment check did not complete",
            ));
        };
        let plan = match from {
            StartFrom::Beginning => Plan::Snapshot {
                snapshot: None,
                progress: Default::default(),
            },
            StartFrom::Checkpoint(c) => Plan::Stream {
                cursor: ConvexCursor::from_checkpoint(&c)?.get(),
            },
            StartFrom::Snapshot(resume) => {
                let pinned = ConvexCursor::from_checkpoint(&resume.stream_from)?.get();
                if let Some(state) = &resume.source_state {
                    let state: SnapshotState = serde_json::from_str(state).map_err(|e| {
                        SourceError::config(format!("snapshot resume token: bad Convex state: {e}"))
                    })?;
                    if state.snapshot != pinned {
                        return Err(SourceError::config(
                            "snapshot resume token: the pinned snapshot and the stream position disagree",
                        ));
                    }
                }
                for key in resume.tables.keys() {
                    if !key.starts_with(&format!("{SCHEMA}.")) {
                        return Err(SourceError::config(format!(
                            "snapshot resume token names table {key}, not a Convex table"
                        )));
                    }
                }
                Plan::Snapshot {
                    snapshot: Some(pinned),
                    progress: resume.tables,
                }
            }
        };
        let catalog = Catalog::new(parse_json_schemas(&schemas), encoding, self.config.int64());
        let (acks, ack_rx) = AckHandle::channel(ConvexCursor::SOURCE);
        let stats = StreamStats::default();
        let (tx, rx) = mpsc::channel(4);
        let panic_tx = tx.clone();
        let replicator = Replicator::new(
            self.api.clone(),
            self.config.clone(),
            selection,
            catalog,
            tx,
            stats.clone(),
            ack_rx,
        );
        let task = tokio::spawn(replicator.run(plan));
        tokio::spawn(async move {
            // A panic in the stream task must reach the host as an error, not a silent end.
            if let Err(e) = task.await {
                if e.is_panic() {
                    let _ = panic_tx
                        .send(Err(SourceError::decode(format!(
                            "the Convex stream task panicked: {e}"
                        ))))
                        .await;
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(ChangeStream::new(stream, acks, stats))
    }

    /// Runs `powersync_checkpoints:createCheckpoint` and returns the marker's commit position;
    /// a running stream reports exactly this checkpoint with `CheckpointObserved` when it
    /// passes the marker (within one polling interval on an idle deployment).
    async fn write_checkpoint(&self) -> Result<Checkpoint> {
        crate::marker::write_checkpoint(&self.api).await
    }
}
