//! `ConvexSource`: the [`ChangeSource`] implementation.

use async_trait::async_trait;
use powersync_source_core::position::ConvexCursor;
use powersync_source_core::runtime::spawn_stream;
use powersync_source_core::{
    ChangeSource, ChangeStream, CheckReport, Checkpoint, Position, Result, SourceError, StartFrom,
    StreamOptions, TableName, TableSchema,
};

use crate::api::Api;
use crate::catalog::{Catalog, SCHEMA};
use crate::config::ConvexApi;
use crate::config::ConvexConfig;
use crate::decode::Encoding;
use crate::replicator::{Plan, Replicator, Setup, SnapshotState, SyncStart};
use crate::selection::Selection;

/// A Convex deployment replicated through the Data Sync API or the streaming export API
/// (chosen by [`ConvexConfig::api`]).
///
/// One `reqwest` client (rustls) is shared by `check`, `discover`, `write_checkpoint` and every
/// stream of this source. See the [crate docs](crate) for the consistency model.
#[derive(Debug, Clone)]
pub struct ConvexSource {
    config: ConvexConfig,
    options: StreamOptions,
    api: Api,
}

impl ConvexSource {
    /// A source replicating every table of the default component (except the marker table
    /// `powersync_checkpoints`).
    pub fn new(config: ConvexConfig) -> ConvexSource {
        let api = Api::new(&config);
        let options = StreamOptions::default().with_retry(config.retry().clone());
        ConvexSource {
            config,
            options,
            api,
        }
    }

    /// Sets the stream settings every connector shares: the tables (`TableName.schema` =
    /// `convex`; `None` or an empty list = every table except `powersync_checkpoints`), the
    /// reconnect policy of the stream (which replaces [`ConvexConfig::with_retry`]'s), and the
    /// largest batch. Every HTTP request is bounded by the configuration's
    /// `request_timeout_ms` rather than by `silence_timeout`.
    pub fn with_stream_options(mut self, options: StreamOptions) -> ConvexSource {
        self.options = options;
        self
    }

    /// The stream settings.
    pub fn stream_options(&self) -> &StreamOptions {
        &self.options
    }

    /// Restricts replication to these tables (`TableName.schema` = `convex`; any other schema
    /// is refused by `check` and `start`). An empty list selects every table except
    /// `powersync_checkpoints`. Shorthand for [`StreamOptions::with_tables`].
    pub fn with_tables(mut self, tables: Vec<TableName>) -> ConvexSource {
        self.options.tables = Some(tables);
        self
    }

    /// The selected tables; empty = every table.
    fn tables(&self) -> &[TableName] {
        self.options.tables.as_deref().unwrap_or_default()
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
    /// available and that every selected table exists in the root component (errors). Warns
    /// when write checkpoints are off (no `powersync_checkpoints:createCheckpoint` deployed,
    /// or a read-only key; the check runs the mutation once, writing one marker row), when
    /// `/api/json_schemas` refuses the deployment (field types unknown), and, with
    /// `encoding=auto`, when the typed encoding is not accepted.
    async fn check(&self) -> Result<CheckReport> {
        Ok(crate::check::check(&self.api, &self.config, self.tables())
            .await?
            .0)
    }

    /// The selected tables with their columns. Type names carry the encoding the stream will
    /// read: `export_json` with `api=data_sync`; with `api=auto` discovery does not probe the
    /// Data Sync API (a probe starts a sync) and names the streaming export encoding.
    async fn discover(&self) -> Result<Vec<TableSchema>> {
        let selection = Selection::new(self.tables())?;
        let types = crate::discovery::discover(&self.api).await?.types;
        let names = selection.snapshot_tables(types.keys());
        let encoding = match self.config.api() {
            ConvexApi::DataSync => Encoding::ExportJson,
            _ => {
                crate::check::negotiate_encoding(&self.api, &self.config)
                    .await?
                    .0
            }
        };
        let mut catalog = Catalog::new(types, encoding, self.config.int64());
        Ok(names.iter().map(|t| (*catalog.schema(t)).clone()).collect())
    }

    /// Runs [`ChangeSource::check`] first and fails with every error-level problem it finds
    /// (one [`Prerequisite`](powersync_source_core::ErrorKind::Prerequisite) error), then
    /// starts replication on the API [`ConvexConfig::api`] chooses (see the crate docs,
    /// "Which API"). `Beginning` takes a consistent snapshot of every table (one pinned
    /// `list_snapshot` timestamp, or the initial Data Sync walk) and streams from it;
    /// `Snapshot(token)` finishes an interrupted streaming export snapshot at the same pinned
    /// timestamp; `Checkpoint` streams after it (`convex:v1` through `document_deltas`, or
    /// moved to the Data Sync API; `convex:v2` through the Data Sync API). A position older
    /// than the deployment's retention is
    /// [`HistoryLost`](powersync_source_core::ErrorKind::HistoryLost) (reported by `start` or
    /// as the stream's first item).
    async fn start(&self, from: StartFrom) -> Result<ChangeStream> {
        let selection = Selection::new(self.tables())?;
        let (report, schemas, encoding) =
            crate::check::check(&self.api, &self.config, self.tables()).await?;
        report.into_result()?;
        let (Some(schemas), Some(encoding)) = (schemas, encoding) else {
            return Err(SourceError::prerequisite(
                "the deployment check did not complete",
            ));
        };
        let api = self.config.api();
        let plan = match from {
            StartFrom::Beginning => match api {
                ConvexApi::StreamingExport => Plan::Snapshot {
                    snapshot: None,
                    progress: Default::default(),
                },
                // The first page of a new sync is asked for here: a deployment without the
                // Data Sync API answers 404, which `auto` takes as "use streaming export" and
                // `data_sync` reports from `start`.
                ConvexApi::Auto | ConvexApi::DataSync => {
                    let sel = selection.data_sync_selection();
                    match self
                        .api
                        .retrying(|| self.api.data_sync(None, &sel, None))
                        .await
                    {
                        Ok(page) => Plan::DataSync(SyncStart::New {
                            first: Box::new(page),
                        }),
                        Err(e) if api == ConvexApi::Auto && is_missing_route(&e) => {
                            tracing::info!("Convex deployment without the Data Sync API ({e}); using streaming export");
                            Plan::Snapshot {
                                snapshot: None,
                                progress: Default::default(),
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            },
            StartFrom::Checkpoint(c) => {
                let cursor = ConvexCursor::from_checkpoint(&c)?;
                match (cursor.token(), api) {
                    (Some(_), ConvexApi::StreamingExport) => {
                        return Err(SourceError::config(format!(
                            "checkpoint `{c}` is a Data Sync position, which api=streaming_export cannot resume"
                        ))
                        .with_hint("use api=data_sync or api=auto"))
                    }
                    (Some(token), _) => Plan::DataSync(SyncStart::Resume {
                        ts: cursor.get(),
                        token: token.to_string(),
                    }),
                    (None, ConvexApi::StreamingExport) => Plan::Stream {
                        cursor: cursor.get(),
                    },
                    // A streaming export cursor: move it to the Data Sync API where the
                    // deployment serves it.
                    (None, _) => {
                        let sel = selection.data_sync_selection();
                        let ts = cursor.get();
                        match self
                            .api
                            .retrying(|| self.api.data_sync_cursor_from_deltas(ts, &sel))
                            .await
                        {
                            Ok(token) => Plan::DataSync(SyncStart::Resume { ts, token }),
                            Err(e) if api == ConvexApi::Auto && is_missing_route(&e) => {
                                Plan::Stream { cursor: ts }
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            StartFrom::Snapshot(resume) => {
                if api == ConvexApi::DataSync {
                    return Err(SourceError::config(
                        "this snapshot resume token comes from a streaming export snapshot, which api=data_sync cannot finish",
                    )
                    .with_hint("start from the beginning, or use api=auto or api=streaming_export to finish it"));
                }
                let pinned = ConvexCursor::from_checkpoint(&resume.stream_from)?;
                if pinned.token().is_some() {
                    return Err(SourceError::config(
                        "snapshot resume token: a Data Sync position cannot pin a streaming export snapshot",
                    ));
                }
                let pinned = pinned.get();
                if let Some(state) = &resume.source_state {
                    let state: SnapshotState = serde_json::from_str(state).map_err(|e| {
                        SourceError::config("snapshot resume token: bad Convex state")
                            .with_source(e)
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
        // Data Sync values are `export_json`, read through the typed decoders.
        let encoding = match plan {
            Plan::DataSync(_) => Encoding::ExportJson,
            _ => encoding,
        };
        let catalog = Catalog::new(schemas, encoding, self.config.int64());
        // The stream's retry policy is the stream options' (one budget per outage); the
        // configuration's stays with the one-shot calls.
        let config = self.config.clone().with_retry(self.options.retry.clone());
        let setup = Setup {
            api: self.api.clone(),
            config,
            selection,
            catalog,
        };
        Ok(spawn_stream(
            ConvexCursor::SOURCE,
            &self.options,
            move |out, acks| Replicator::new(setup, out, acks).run(plan),
        ))
    }

    /// Runs `powersync_checkpoints:createCheckpoint` (this crate's or PowerSync's) and returns
    /// the marker's commit position, found in the marker table's deltas (never through
    /// `list_snapshot`, which would evict a running snapshot's iterator);
    /// a running stream reports exactly this checkpoint with `CheckpointObserved` when it
    /// passes the marker (within one polling interval on an idle deployment).
    async fn write_checkpoint(&self) -> Result<Checkpoint> {
        crate::marker::write_checkpoint(&self.api).await
    }
}

/// Whether a request failed because the deployment does not serve the route (a backend from
/// before the Data Sync API).
fn is_missing_route(e: &SourceError) -> bool {
    e.code() == Some("404")
}
