//! `MongoSource`: the [`ChangeSource`] implementation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::doc;
use mongodb::bson::raw::RawDocumentBuf;
use mongodb::options::ClientOptions;
use mongodb::Client;
use powersync_source_core::position::MongoPosition;
use powersync_source_core::runtime::{spawn_stream, SnapshotBook};
use powersync_source_core::{
    ChangeSource, ChangeStream, CheckReport, Checkpoint, Position, Result, RetryPolicy,
    SourceError, StartFrom, StreamOptions, TableName, TableSchema,
};
use tokio::sync::OnceCell;

use crate::backfill_reader::MongoChunkReader;
use crate::catalog::{list_collections, Selection};
use crate::config::{MongoConfig, PostImages};
use crate::document_row::CollectionShape;
use crate::driver_error::driver_error;
use crate::replicator::{self, BackfillSetup, Plan, Setup};
use crate::server_info::{parse_version, supports_split_event};
use crate::shapes::SharedShapes;
use crate::{check, snapshot_reader};

mod marker;

/// How much longer than the server's idle wait (`max_await_ms`) a change-stream read may stay
/// unanswered before the connection is treated as half-open, whatever the silence timeout.
const SILENCE_MARGIN: Duration = Duration::from_secs(5);

/// A new driver client (its own connection pool) for `config`'s URL.
pub(crate) async fn connect(config: &MongoConfig) -> Result<Client> {
    let mut options = ClientOptions::parse(config.driver_url().expose())
        .await
        .map_err(|e| driver_error(format!("connection URL {}", config.display_url()), e))?;
    if options.app_name.is_none() {
        options.app_name = Some("powersync-source".into());
    }
    if options.server_selection_timeout.is_none() {
        options.server_selection_timeout = Some(Duration::from_secs(10));
    }
    Client::with_options(options)
        .map_err(|e| driver_error(format!("connection URL {}", config.display_url()), e))
}

/// MongoDB collections replicated through a change stream: database-level for one database,
/// cluster-level when they span several.
///
/// See the [crate docs](crate) for the consistency model, the table shape and the values.
#[derive(Debug, Clone)]
pub struct MongoSource {
    config: MongoConfig,
    options: StreamOptions,
    client: Arc<OnceCell<Client>>,
}

impl MongoSource {
    /// A source for the URL's database with default [`StreamOptions`]: every collection,
    /// until [`with_tables`](Self::with_tables) or
    /// [`with_stream_options`](Self::with_stream_options) narrows it.
    pub fn new(config: MongoConfig) -> MongoSource {
        MongoSource {
            config,
            options: StreamOptions::default(),
            client: Default::default(),
        }
    }

    /// The stream settings shared by every connector:
    /// - `tables`: the collections to replicate. `TableName.schema` is the database (empty =
    ///   the URL's, or the single one of `databases=`), `TableName.name` the collection.
    ///   `None` (or an empty list) = every collection of the URL's database and of the
    ///   `databases=` list, except `system.*`, `_powersync_checkpoints` and
    ///   `_powersync_signals`. Tables in more than one database are read through one
    ///   cluster-level change stream under one checkpoint (see the crate docs). A table
    ///   without a database when the URL names none is an
    ///   [`ErrorKind::Config`](powersync_source_core::ErrorKind) error at `check`/`start`.
    /// - `retry`: reconnects inside the stream and retried snapshot reads.
    /// - `batch_events`: events per batch, unless the URL sets `batch_events` (which wins).
    /// - `silence_timeout`: how long a change-stream read may stay unanswered before the
    ///   connection is treated as dead; at least `max_await_ms` plus 5 s, since the server
    ///   answers an idle read only after `max_await_ms`.
    pub fn with_stream_options(mut self, options: StreamOptions) -> MongoSource {
        self.options = options;
        self
    }

    /// The stream settings (see [`with_stream_options`](Self::with_stream_options)).
    pub fn stream_options(&self) -> &StreamOptions {
        &self.options
    }

    /// Sets [`StreamOptions::tables`]: the collections to replicate (empty = every collection).
    pub fn with_tables(mut self, tables: Vec<TableName>) -> MongoSource {
        self.options.tables = Some(tables);
        self
    }

    /// Sets [`StreamOptions::retry`], the reconnect policy inside the stream.
    pub fn with_retry(mut self, retry: RetryPolicy) -> MongoSource {
        self.options.retry = retry;
        self
    }

    /// Sets [`StreamOptions::silence_timeout`] (see
    /// [`with_stream_options`](Self::with_stream_options)).
    pub fn with_silence_timeout(mut self, timeout: Duration) -> MongoSource {
        self.options.silence_timeout = timeout;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &MongoConfig {
        &self.config
    }

    fn tables(&self) -> &[TableName] {
        self.options.tables.as_deref().unwrap_or_default()
    }

    /// The options the stream runs with: the URL's `batch_events` wins over the stream
    /// options'.
    fn effective_options(&self) -> StreamOptions {
        match self.config.batch_events() {
            Some(n) => self.options.clone().with_batch_events(n),
            None => self.options.clone(),
        }
    }

    /// How long a read may stay unanswered: the silence timeout, but never less than the
    /// server's idle wait plus a margin.
    fn silence(&self) -> Duration {
        self.options
            .silence_timeout
            .max(self.config.max_await() + SILENCE_MARGIN)
    }

    fn selection(&self) -> Result<Selection> {
        Selection::resolve(
            self.config.database(),
            self.config.databases(),
            self.tables(),
            self.config.checkpoint_database(),
        )
    }

    /// The driver client, connected once and shared by clones of this source.
    pub async fn client(&self) -> Result<Client> {
        let client = self
            .client
            .get_or_try_init(|| connect(&self.config))
            .await?;
        Ok(client.clone())
    }

    async fn server_version(&self, client: &Client) -> Result<(u32, u32, u32)> {
        let build = client
            .database("admin")
            .run_command(doc! {"buildInfo": 1})
            .await
            .map_err(|e| driver_error(format!("connecting to {}", self.config.display_url()), e))?;
        Ok(build
            .get_str("version")
            .ok()
            .and_then(parse_version)
            .unwrap_or((0, 0, 0)))
    }

    /// Enables or verifies post-images on the selected collections, per the mode.
    async fn prepare_images(&self, client: &Client, selection: &Selection) -> Result<()> {
        let mode = self.config.post_images();
        if mode == PostImages::Off {
            return Ok(());
        }
        for database in selection.databases() {
            let db = client.database(database);
            let lacking: Vec<String> = list_collections(&db)
                .await?
                .into_iter()
                .filter(|c| selection.contains(database, &c.name) && !c.images)
                .map(|c| c.name)
                .collect();
            if lacking.is_empty() {
                continue;
            }
            if mode == PostImages::ReadOnly {
                return Err(SourceError::prerequisite(format!(
                    "post_images=read_only: changeStreamPreAndPostImages is not enabled on {}",
                    lacking
                        .iter()
                        .map(|c| format!("{database}.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .with_hint(
                    "run db.runCommand({collMod: \"<collection>\", changeStreamPreAndPostImages: {enabled: true}}) for each, or use post_images=auto_configure or post_images=off",
                ));
            }
            for name in lacking {
                db.run_command(doc! {"collMod": &name, "changeStreamPreAndPostImages": {"enabled": true}})
                    .await
                    .map_err(|e| {
                        driver_error(
                            format!("enabling changeStreamPreAndPostImages on {database}.{name} (post_images=auto_configure)"),
                            e,
                        )
                    })?;
                tracing::info!(database, collection = %name, "enabled changeStreamPreAndPostImages");
            }
        }
        Ok(())
    }

    async fn split_events(&self, client: &Client) -> Result<bool> {
        Ok(supports_split_event(self.server_version(client).await?))
    }
}

#[async_trait]
impl ChangeSource for MongoSource {
    fn kind(&self) -> &'static str {
        MongoPosition::SOURCE
    }

    async fn check(&self) -> Result<CheckReport> {
        let selection = self.selection()?;
        let client = self.client().await?;
        check::run(&client, &self.config, &selection).await
    }

    async fn discover(&self) -> Result<Vec<TableSchema>> {
        let selection = self.selection()?;
        let client = self.client().await?;
        let mut out = Vec::new();
        for database in selection.databases() {
            let db = client.database(database);
            for info in list_collections(&db).await? {
                if !selection.contains(database, &info.name) {
                    continue;
                }
                let coll = db.collection::<RawDocumentBuf>(&info.name);
                let mut shape = CollectionShape::new(selection.table(database, &info.name));
                // One document shows the fields; more appear as the stream sees them.
                if let Some(sample) = snapshot_reader::read_batch(&coll, None, 1, self.silence())
                    .await?
                    .first()
                {
                    shape.row(sample)?;
                }
                out.push(shape.schema().as_ref().clone());
            }
        }
        Ok(out)
    }

    /// Runs [`ChangeSource::check`] first and fails with its problems (a `Prerequisite`
    /// error listing every fix) before changing anything. Then enables post-images per
    /// `post_images`, writes the snapshot barrier for [`StartFrom::Beginning`], and spawns the
    /// stream task; failures up to here are returned, later ones arrive through the stream.
    async fn start(&self, from: StartFrom) -> Result<ChangeStream> {
        self.check().await?.into_result()?;
        let selection = self.selection()?;
        let client = self.client().await?;
        let split_events = self.split_events(&client).await?;
        self.prepare_images(&client, &selection).await?;
        let resume = match &from {
            StartFrom::Checkpoint(c) => Some(c.clone()),
            _ => None,
        };
        let (plan, start) = match from {
            StartFrom::Beginning => {
                // The barrier: everything after it is streamed, everything before it is in
                // the documents the snapshot reads afterwards.
                let barrier = marker::write(&client, &selection, split_events).await?;
                (
                    Plan::Snapshot(SnapshotBook::new(barrier.to_checkpoint())),
                    barrier,
                )
            }
            StartFrom::Snapshot(resume) => {
                let start = MongoPosition::from_checkpoint(&resume.stream_from)?;
                (Plan::Snapshot(SnapshotBook::resume(&resume)), start)
            }
            StartFrom::Checkpoint(c) => {
                let start = MongoPosition::from_checkpoint(&c)?;
                (Plan::Stream, start)
            }
        };
        if start.resume_token.is_empty() {
            return Err(SourceError::config(format!(
                "checkpoint {} has no resume token",
                start.to_checkpoint()
            )));
        }
        let options = self.effective_options();
        let shapes = SharedShapes::default();
        let reader = MongoChunkReader::new(
            self.config.clone(),
            selection.clone(),
            shapes.clone(),
            self.silence(),
        );
        let setup = Setup {
            client,
            config: self.config.clone(),
            shapes,
            backfill: BackfillSetup {
                reader,
                resume,
                options: options.clone(),
            },
            selection,
            retry: options.retry.clone(),
            silence: self.silence(),
            split_events,
            start,
            plan,
        };
        Ok(
            spawn_stream(MongoPosition::SOURCE, &options, move |out, _acks| {
                // Acknowledgements release nothing on MongoDB (see the crate docs).
                replicator::run(setup, out)
            })
            .serving_backfills(),
        )
    }

    async fn write_checkpoint(&self) -> Result<Checkpoint> {
        let client = self.client().await?;
        let split_events = self.split_events(&client).await?;
        let selection = self.selection()?;
        Ok(marker::write(&client, &selection, split_events)
            .await?
            .to_checkpoint())
    }
}
