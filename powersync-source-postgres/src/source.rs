//! `PostgresSource`: the [`ChangeSource`] implementation.

use async_trait::async_trait;
use powersync_source_core::position::PgLsn;
use powersync_source_core::runtime::spawn_stream;
use powersync_source_core::{
    ChangeSource, ChangeStream, CheckReport, Checkpoint, Position, Result, SourceError, StartFrom,
    StreamOptions, TableName, TableSchema,
};

use crate::catalog::published_tables;
use crate::config::PostgresConfig;
use crate::connection::{sql, sql_error};
use crate::options::{PostgresOptions, CHECKPOINT_MESSAGE_PREFIX};
use crate::replicator;
use crate::types::TypeRegistry;

/// A PostgreSQL database replicated through a logical replication slot and a publication.
///
/// Configured by a [`PostgresConfig`] (connection, publication, slot, snapshot settings), the
/// [`StreamOptions`] every source shares ([`PostgresSource::with_stream_options`]) and the
/// PostgreSQL-specific [`PostgresOptions`] ([`PostgresSource::with_options`]). See the
/// [crate docs](crate) for the consistency model.
#[derive(Debug, Clone)]
pub struct PostgresSource {
    config: PostgresConfig,
    stream: StreamOptions,
    options: PostgresOptions,
}

impl PostgresSource {
    /// A source with default options.
    pub fn new(config: PostgresConfig) -> Self {
        PostgresSource {
            config,
            stream: StreamOptions::default(),
            options: PostgresOptions::default(),
        }
    }

    /// A source from a URL or libpq key-value string (see [`PostgresConfig::parse`]).
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(Self::new(PostgresConfig::parse(url)?))
    }

    /// Replaces the settings every source shares: tables (`None` or an empty list = every
    /// table of the publication), retry policy, batch size and silence timeout. A silent
    /// connection is asked for a reply after half of `silence_timeout`, and reconnected when
    /// none comes by the end of it.
    pub fn with_stream_options(mut self, options: StreamOptions) -> Self {
        self.stream = options;
        self
    }

    /// Replaces the PostgreSQL-specific options.
    pub fn with_options(mut self, options: PostgresOptions) -> Self {
        self.options = options;
        self
    }

    /// Restricts replication to these tables (`schema.name`); an empty list = every table of
    /// the publication. Shorthand for [`StreamOptions::tables`].
    pub fn with_tables(mut self, tables: Vec<TableName>) -> Self {
        self.stream.tables = (!tables.is_empty()).then_some(tables);
        self
    }

    /// The connection settings.
    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// The settings every source shares.
    pub fn stream_options(&self) -> &StreamOptions {
        &self.stream
    }

    /// The PostgreSQL-specific options.
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// Drops the replication slot (e.g. when a host stops replicating for good). A missing
    /// slot is not an error.
    pub async fn drop_slot(&self) -> Result<()> {
        let client = sql::connect(&self.config).await?;
        crate::slot::drop_slot(&client, &self.config.slot()).await
    }

    /// The selected tables; empty = every table of the publication.
    fn tables(&self) -> &[TableName] {
        self.stream.tables.as_deref().unwrap_or_default()
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
            self.tables(),
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
            self.tables(),
        )
        .await?;
        Ok(tables
            .into_iter()
            .filter(|t| !crate::backfill::is_signal_table(&t.schema.name))
            .map(|t| (*t.schema).clone())
            .collect())
    }

    /// Runs [`ChangeSource::check`] first and fails with its first problem (a
    /// `Prerequisite`, `Auth` or `Config` error carrying the fix) before touching the slot.
    /// Then prepares the slot (created with an exported snapshot for
    /// [`StartFrom::Beginning`]; checked to still hold `from` otherwise) and the published
    /// tables, so these failures are returned here rather than through the stream.
    async fn start(&self, from: StartFrom) -> Result<ChangeStream> {
        let client = sql::connect(&self.config).await?;
        crate::check::check(
            &client,
            self.config.publication(),
            &self.config.slot(),
            self.tables(),
        )
        .await?
        .into_result()?;
        // Backfills need logical messages in the stream (the watermarks): 14+.
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| sql_error(e, "reading the server version"))?
            .get(0);
        let prepared = replicator::prepare(
            self.config.clone(),
            self.options.clone(),
            self.stream.clone(),
            client,
            from,
        )
        .await?;
        // Backfills are enabled by the stream task once it streams; on an older server
        // `request_backfill` answers Unsupported, and a signal row is ignored with a warning.
        let stream = spawn_stream(PgLsn::SOURCE, &self.stream, move |out, acks| {
            prepared.run(out, acks)
        });
        Ok(if version >= 140_000 {
            stream.serving_backfills()
        } else {
            stream
        })
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
        let lsn: PgLsn = lsn.parse().map_err(|e: String| {
            SourceError::decode(format!("pg_logical_emit_message returned `{lsn}`: {e}"))
        })?;
        Ok(lsn.to_checkpoint())
    }
}
