//! `PostgresSource`: the [`ChangeSource`] implementation.

use std::time::Duration;

use async_trait::async_trait;
use powersync_source_core::position::PgLsn;
use powersync_source_core::{
    AckHandle, ChangeSource, ChangeStream, CheckReport, Checkpoint, Position, Result, RetryPolicy,
    SourceError, StartFrom, StreamStats, TableName, TableSchema,
};
use tokio::sync::mpsc;

use crate::catalog::published_tables;
use crate::config::PgConfig;
use crate::connection::sql;
use crate::replicator::Replicator;
use crate::sql_error;
use crate::types::TypeRegistry;

/// Prefix of the logical messages written by [`ChangeSource::write_checkpoint`].
pub(crate) const CHECKPOINT_MESSAGE_PREFIX: &str = "powersync";

/// Options of a PostgreSQL source beyond the connection settings.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Tables to replicate (`schema.name`); empty = every table of the publication.
    pub tables: Vec<TableName>,
    /// Reconnect policy inside the stream.
    pub retry: RetryPolicy,
    /// How long the replication connection may stay silent before it is treated as dead
    /// (half-open). A status update asking for a reply is sent after half of it.
    pub silence_timeout: Duration,
    /// Interval of standby status updates reporting the acknowledged position.
    pub status_interval: Duration,
    /// Request pgoutput's binary value format when the server offers it (14+) and every
    /// selected column type can be read in binary; text otherwise.
    pub binary: bool,
    /// Events per batch before a batch is handed to the host.
    pub batch_events: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            tables: Vec::new(),
            retry: RetryPolicy::default(),
            silence_timeout: Duration::from_secs(30),
            status_interval: Duration::from_secs(10),
            binary: true,
            batch_events: 4096,
        }
    }
}

/// A PostgreSQL database replicated through a logical replication slot and a publication.
///
/// See the [crate docs](crate) for the consistency model.
#[derive(Debug, Clone)]
pub struct PostgresSource {
    config: PgConfig,
    options: PostgresOptions,
}

impl PostgresSource {
    /// A source with default options.
    pub fn new(config: PgConfig) -> Self {
        PostgresSource {
            config,
            options: PostgresOptions::default(),
        }
    }

    /// A source from a URL or libpq key-value string.
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(Self::new(PgConfig::parse(url)?))
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: PostgresOptions) -> Self {
        self.options = options;
        self
    }

    /// Restricts replication to these tables.
    pub fn with_tables(mut self, tables: Vec<TableName>) -> Self {
        self.options.tables = tables;
        self
    }

    /// The connection settings.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    /// The options.
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// Drops the replication slot (e.g. when a host stops replicating for good). A missing
    /// slot is not an error.
    pub async fn drop_slot(&self) -> Result<()> {
        let client = sql::connect(&self.config).await?;
        crate::slot::drop_slot(&client, &self.config.slot()).await
    }
}

#[async_trait]
impl ChangeSource for PostgresSource {
    fn kind(&self) -> &'static str {
        PgLsn::SOURCE
    }

    async fn check(&self) -> Result<CheckReport> {
        let client = sql::connect(&self.config).await?;
        crate::check::check(
            &client,
            self.config.publication(),
            &self.config.slot(),
            &self.options.tables,
        )
        .await
    }

    async fn discover(&self) -> Result<Vec<TableSchema>> {
        let client = sql::connect(&self.config).await?;
        let mut registry = TypeRegistry::new();
        let tables = published_tables(
            &client,
            &mut registry,
            self.config.publication(),
            &self.options.tables,
        )
        .await?;
        Ok(tables.into_iter().map(|t| (*t.schema).clone()).collect())
    }

    async fn start(&self, from: StartFrom) -> Result<ChangeStream> {
        let client = sql::connect(&self.config).await?;
        crate::check::check(
            &client,
            self.config.publication(),
            &self.config.slot(),
            &self.options.tables,
        )
        .await?
        .into_result()?;
        let (acks, ack_rx) = AckHandle::channel(PgLsn::SOURCE);
        let stats = StreamStats::default();
        let (tx, rx) = mpsc::channel(4);
        let panic_tx = tx.clone();
        let mut replicator = Replicator::new(
            self.config.clone(),
            self.options.clone(),
            client,
            ack_rx,
            stats.clone(),
            tx,
        );
        let start = replicator.prepare(from).await?;
        let task = tokio::spawn(replicator.run(start));
        tokio::spawn(async move {
            // A panic in the stream task must reach the host as an error, not as a silent end.
            if let Err(e) = task.await {
                if e.is_panic() {
                    let _ = panic_tx
                        .send(Err(SourceError::decode(format!(
                            "the replication task panicked: {e}"
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

    async fn write_checkpoint(&self) -> Result<Checkpoint> {
        let client = sql::connect(&self.config).await?;
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| sql_error(e, "reading the server version"))?
            .get(0);
        if version < 140_000 {
            // pgoutput passes logical messages through only from 14 (`messages 'true'`).
            return Err(SourceError::unsupported(format!(
                "write checkpoints need PostgreSQL 14 or newer (server_version_num {version})"
            )));
        }
        let row = client
            .query_one(
                // The content is the insert position before the message: the stream reports
                // exactly this position when it passes the message, so the caller can match it.
                "SELECT pos::text FROM pg_catalog.pg_current_wal_insert_lsn() AS pos,
                        LATERAL pg_catalog.pg_logical_emit_message(true, $1, pos::text) AS m",
                &[&CHECKPOINT_MESSAGE_PREFIX],
            )
            .await
            .map_err(|e| sql_error(e, "writing a checkpoint message"))?;
        let lsn: String = row.get(0);
        let lsn: PgLsn = lsn
            .parse()
            .map_err(|e: String| SourceError::decode(format!("pg_logical_emit_message: {e}")))?;
        Ok(lsn.to_checkpoint())
    }
}
