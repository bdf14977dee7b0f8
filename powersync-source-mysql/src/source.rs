//! `MySqlSource`: the [`ChangeSource`] implementation.

use std::sync::Arc;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use powersync_source_core::position::BinlogPosition;
use powersync_source_core::runtime::{spawn_stream, SnapshotBook, Stop};
use powersync_source_core::{
    ChangeSource, ChangeStream, CheckReport, Checkpoint, Position, Result, RetryPolicy,
    SourceError, StartFrom, StreamOptions, TableName, TableSchema,
};

use crate::backfill_reader::BinlogChunkReader;
use crate::catalog::{self, Scope, TableInfo};
use crate::check::CHECKPOINT_COLUMNS;
use crate::client::Client;
use crate::config::MySqlConfig;
use crate::connection::{connect, ident, sql_error};
use crate::markers::CHECKPOINT_ROW;
use crate::replicator::{Replicator, Selection, Settings};
use crate::retention::{self, BinlogWatch};
use crate::server::{self, ServerInfo};
use crate::snapshot;

/// Tables of one or more MySQL or MariaDB databases (schemas) replicated from the server's one
/// binlog, under one checkpoint. See the [crate docs](crate) for the consistency model.
///
/// Source-specific settings (heartbeat, snapshot chunk size, server id, TLS, …) come from the
/// URL ([`MySqlConfig`]); the settings every source shares come from [`StreamOptions`]
/// ([`MySqlSource::with_stream_options`]).
#[derive(Debug, Clone)]
pub struct MySqlSource {
    config: MySqlConfig,
    stream: StreamOptions,
}

impl MySqlSource {
    /// A source over every base table of the URL's database and of its `databases=` list, with
    /// default [`StreamOptions`].
    pub fn new(config: MySqlConfig) -> MySqlSource {
        MySqlSource {
            config,
            stream: StreamOptions::default(),
        }
    }

    /// Replaces the stream settings every source shares:
    /// - `tables`: the tables to replicate (`None` or an empty list: every base table of the
    ///   URL's database and of its `databases=` list). `schema` is the MySQL database; a table
    ///   with an empty `schema` is in the URL's database (or the only one `databases=` lists;
    ///   with neither it is a `Config` error at `check`/`start`). Tables may be in several
    ///   databases: one binlog stream and one snapshot transaction read them all, and a
    ///   transaction spanning databases is one `Begin`/`Commit`.
    /// - `retry`: the reconnect policy inside the stream (budget per outage).
    /// - `batch_events`: events per batch, unless the URL sets `batch_events`.
    /// - `silence_timeout`: a binlog connection silent this long (no event, no heartbeat) is
    ///   reconnected, unless the URL sets `silence_timeout`. It must be longer than the
    ///   heartbeat period, or [`ChangeSource::start`] fails with a `Config` error.
    pub fn with_stream_options(mut self, options: StreamOptions) -> MySqlSource {
        self.stream = options;
        self
    }

    /// Restricts replication to these tables (an empty list: every base table of the URL's
    /// database); the same as setting [`StreamOptions::tables`].
    pub fn with_tables(mut self, tables: Vec<TableName>) -> MySqlSource {
        self.stream.tables = Some(tables);
        self
    }

    /// Replaces the reconnect policy used inside the stream; the same as setting
    /// [`StreamOptions::retry`].
    pub fn with_retry(mut self, retry: RetryPolicy) -> MySqlSource {
        self.stream.retry = retry;
        self
    }

    /// The connection settings.
    pub fn config(&self) -> &MySqlConfig {
        &self.config
    }

    /// The stream settings as given (the URL's `batch_events` and `silence_timeout` take
    /// precedence when the stream starts).
    pub fn stream_options(&self) -> &StreamOptions {
        &self.stream
    }

    /// The selected tables; empty means the whole database.
    fn tables(&self) -> &[TableName] {
        self.stream.tables.as_deref().unwrap_or(&[])
    }

    /// The schemas this source reads (see [`Scope`]).
    fn scope(&self) -> Scope {
        Scope::of(&self.config)
    }

    /// The configuration with the checkpoint table's database resolved: the URL's
    /// `checkpoint_table=db.table`, else the URL's database, else the first of `databases=`,
    /// else (only tables named) the database of the first table.
    fn config_in_use(&self) -> MySqlConfig {
        let mut config = self.config.clone();
        if config.checkpoint_table().0.is_empty() {
            if let Some(first) = self.scope().schemas(self.tables()).into_iter().next() {
                config.checkpoint_table.0 = Some(first);
            }
        }
        config
    }

    fn selection(&self) -> Selection {
        let scope = self.scope();
        if self.tables().is_empty() {
            Selection::Databases(scope.whole)
        } else {
            Selection::List(
                scope
                    .qualify(self.tables())
                    .into_iter()
                    .map(|t| (t.schema, t.name))
                    .collect(),
            )
        }
    }

    /// The database that qualifies table names without one in backfill signals: the URL's
    /// (or the only one of `databases=`), else the checkpoint table's.
    fn default_db(&self) -> String {
        let db = self.scope().default_db;
        if db.is_empty() {
            self.config_in_use().checkpoint_table().0
        } else {
            db
        }
    }

    /// The backfill reader of a stream of this source (its own SQL connection).
    fn chunk_reader(&self) -> BinlogChunkReader {
        BinlogChunkReader::new(self.config_in_use(), self.selection(), self.default_db())
    }

    /// The stream options with the URL's overrides applied, and the replicator's settings.
    fn resolved(&self) -> Result<(StreamOptions, Settings)> {
        let mut options = self.stream.clone();
        if let Some(n) = self.config.batch_events {
            options.batch_events = n;
        }
        let silence_timeout = self
            .config
            .silence_timeout
            .unwrap_or(options.silence_timeout);
        if silence_timeout <= self.config.heartbeat {
            return Err(SourceError::config(format!(
                "the silence timeout ({silence_timeout:?}) must be longer than the heartbeat \
                 period ({:?})",
                self.config.heartbeat
            ))
            .with_hint(
                "raise StreamOptions::silence_timeout or the URL's silence_timeout, or lower \
                 the URL's heartbeat",
            ));
        }
        options.silence_timeout = silence_timeout;
        let settings = Settings {
            retry: options.retry.clone(),
            silence_timeout,
        };
        Ok((options, settings))
    }
}

#[async_trait]
impl ChangeSource for MySqlSource {
    fn kind(&self) -> &'static str {
        BinlogPosition::SOURCE
    }

    async fn check(&self) -> Result<CheckReport> {
        let mut conn = connect(&self.config).await?;
        let info = ServerInfo::detect(&mut conn).await?;
        crate::check::check(
            &mut conn,
            &info,
            &self.scope(),
            self.tables(),
            &self.config_in_use().checkpoint_table(),
        )
        .await
    }

    async fn discover(&self) -> Result<Vec<TableSchema>> {
        let mut conn = connect(&self.config).await?;
        let tables = catalog::selected_tables(
            &mut conn,
            &self.scope(),
            self.tables(),
            &self.config_in_use().checkpoint_table(),
        )
        .await?;
        Ok(tables.into_iter().map(|t| (*t.schema).clone()).collect())
    }

    /// Checks the prerequisites first (the same diagnosis as [`ChangeSource::check`]: a
    /// server that is not ready is a `Prerequisite` error here), validates a resume position
    /// against the server (flavour, GTID text, binlogs still present) and, from the beginning,
    /// opens the snapshot transaction before returning, so the stream is consistent with the
    /// moment of this call.
    async fn start(&self, from: StartFrom) -> Result<ChangeStream> {
        let (options, settings) = self.resolved()?;
        let mut conn = connect(&self.config).await?;
        let info = ServerInfo::detect(&mut conn).await?;
        crate::check::check(
            &mut conn,
            &info,
            &self.scope(),
            self.tables(),
            &self.config_in_use().checkpoint_table(),
        )
        .await?
        .into_result()?;
        let tables: Vec<Arc<TableInfo>> = catalog::selected_tables(
            &mut conn,
            &self.scope(),
            self.tables(),
            &self.config_in_use().checkpoint_table(),
        )
        .await?
        .into_iter()
        .map(Arc::new)
        .collect();

        let config = self.config_in_use();
        let selection = self.selection();
        let (pos, mut book, mut snap) = match &from {
            StartFrom::Checkpoint(c) => {
                let pos = BinlogPosition::from_checkpoint(c)?;
                crate::replicator::validate_start(&pos, &info)?;
                server::ensure_history(&mut conn, &info, &pos).await?;
                let resume = c.clone();
                let reader = self.chunk_reader();
                let default_db = self.default_db();
                let stream_options = options.clone();
                return Ok(spawn_stream(
                    BinlogPosition::SOURCE,
                    &options,
                    move |mut out, acks| async move {
                        let (feed, position) = retention::feed(&pos);
                        let _watch =
                            BinlogWatch::spawn(config.clone(), out.stats().clone(), position);
                        // The backfill this checkpoint carries (if any) continues from its
                        // last stored chunk.
                        out.enable_backfill(
                            Box::new(reader),
                            Some(&resume),
                            &default_db,
                            &stream_options,
                        )?;
                        Replicator::new(config, info, selection, tables, settings, acks, out, pos)
                            .with_position_feed(feed)
                            .run(true)
                            .await
                    },
                )
                .serving_backfills());
            }
            StartFrom::Snapshot(resume) => {
                let pos = BinlogPosition::from_checkpoint(&resume.stream_from)?;
                crate::replicator::validate_start(&pos, &info)?;
                server::ensure_history(&mut conn, &info, &pos).await?;
                // A new read view for the rest: the rows it reads may already hold changes
                // after the original position, which streaming from there replays.
                let mut snap = Client::connect(&self.config).await?;
                snapshot::begin(&mut snap, &mut conn, &info).await?;
                (pos, SnapshotBook::resume(resume), snap)
            }
            // The snapshot transaction opens before `start` returns, so a stream started from
            // the beginning is consistent with the moment of this call.
            StartFrom::Beginning => {
                let mut snap = Client::connect(&self.config).await?;
                let pos = snapshot::begin(&mut snap, &mut conn, &info).await?;
                let book = SnapshotBook::new(pos.to_checkpoint());
                (pos, book, snap)
            }
        };
        let chunk_rows = self.config.chunk_rows;
        let reader = self.chunk_reader();
        let default_db = self.default_db();
        let stream_options = options.clone();
        Ok(spawn_stream(
            BinlogPosition::SOURCE,
            &options,
            move |mut out, acks| async move {
                // Measured from the snapshot's position while it copies: the binlog written
                // meanwhile is what streaming reads next.
                let (feed, position) = retention::feed(&pos);
                let _watch = BinlogWatch::spawn(config.clone(), out.stats().clone(), position);
                let read =
                    snapshot::read_tables(&mut snap, &tables, &mut book, chunk_rows, &mut out)
                        .await;
                match read {
                    Ok(()) => {}
                    Err(Stop::Closed) => return Ok(()),
                    Err(Stop::Failed(e)) => {
                        out.fail(e.context("snapshot")).await;
                        return Ok(());
                    }
                }
                // Ending a read-only transaction: a failure changes nothing already read.
                let _ = snap.query_drop("COMMIT").await;
                drop(snap);
                out.push(book.done()).await?;
                out.flush().await?;
                out.enable_backfill(Box::new(reader), None, &default_db, &stream_options)?;
                Replicator::new(config, info, selection, tables, settings, acks, out, pos)
                    .with_position_feed(feed)
                    .run(false)
                    .await
            },
        )
        .serving_backfills())
    }

    /// Writes the current binlog position into the checkpoint table (created on first use:
    /// `_powersync_checkpoints` in the URL's database, or the `checkpoint_table` option;
    /// columns `id INT PRIMARY KEY, checkpoint VARCHAR(512), written_at TIMESTAMP(6)`; row 1,
    /// while backfill watermarks use row 2). The stream recognises the row event and reports
    /// [`ChangeEvent::CheckpointObserved`](powersync_source_core::ChangeEvent::CheckpointObserved)
    /// with the checkpoint written, which is the server's binlog head just before the marker
    /// (so it orders at or before the marker's commit). The user needs CREATE (once), INSERT
    /// and UPDATE on that table.
    async fn write_checkpoint(&self) -> Result<Checkpoint> {
        let (db, table) = self.config_in_use().checkpoint_table();
        if db.is_empty() {
            return Err(SourceError::config(
                "write_checkpoint needs a database for its checkpoint table: add /database to the URL or set checkpoint_table=db.table",
            ));
        }
        let mut conn = connect(&self.config).await?;
        let info = ServerInfo::detect(&mut conn).await?;
        let qualified = format!("{}.{}", ident(&db), ident(&table));
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {qualified} {CHECKPOINT_COLUMNS}"
        ))
        .await
        .map_err(|e| sql_error(e, "creating the checkpoint table"))?;
        let checkpoint = server::head(&mut conn, &info).await?.to_checkpoint();
        conn.exec_drop(
            format!(
                "INSERT INTO {qualified} (id, checkpoint, written_at) VALUES ({CHECKPOINT_ROW}, ?, NOW(6)) \
                 ON DUPLICATE KEY UPDATE checkpoint = VALUES(checkpoint), written_at = VALUES(written_at)"
            ),
            (checkpoint.as_str(),),
        )
        .await
        .map_err(|e| sql_error(e, "writing the checkpoint marker"))?;
        Ok(checkpoint)
    }
}
