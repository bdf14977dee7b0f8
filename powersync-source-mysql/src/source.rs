//! `MySqlSource`: the [`ChangeSource`] implementation.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use powersync_source_core::position::BinlogPosition;
use powersync_source_core::{
    AckHandle, ChangeEvent, ChangeSource, ChangeStream, CheckReport, Checkpoint, Position, Result,
    RetryPolicy, SnapshotProgress, SourceError, StartFrom, StreamStats, TableName, TableSchema,
};
use tokio::sync::mpsc;

use crate::catalog::{self, TableInfo};
use crate::config::MySqlConfig;
use crate::connection::{connect, exec_drop, ident, sql_error};
use crate::emit::Emitter;
use crate::replicator::{Replicator, Selection};
use crate::server::{self, ServerInfo};
use crate::snapshot::{self, Stop};

/// A MySQL or MariaDB database replicated from its binlog. See the [crate docs](crate) for the
/// consistency model.
#[derive(Debug, Clone)]
pub struct MySqlSource {
    config: MySqlConfig,
    tables: Vec<TableName>,
    retry: RetryPolicy,
}

impl MySqlSource {
    /// A source over every base table of the URL's database.
    pub fn new(config: MySqlConfig) -> MySqlSource {
        MySqlSource {
            config,
            tables: Vec::new(),
            retry: RetryPolicy::default(),
        }
    }

    /// Restricts replication to these tables. A table with an empty `schema` is in the URL's
    /// database; `schema` is the MySQL database.
    pub fn with_tables(mut self, tables: Vec<TableName>) -> MySqlSource {
        self.tables = tables;
        self
    }

    /// Replaces the reconnect policy used inside the stream.
    pub fn with_retry(mut self, retry: RetryPolicy) -> MySqlSource {
        self.retry = retry;
        self
    }

    /// The connection settings.
    pub fn config(&self) -> &MySqlConfig {
        &self.config
    }

    fn selection(&self) -> Selection {
        if self.tables.is_empty() {
            Selection::Database(self.config.database.clone())
        } else {
            Selection::List(
                self.tables
                    .iter()
                    .map(|t| {
                        let db = if t.schema.is_empty() {
                            self.config.database.clone()
                        } else {
                            t.schema.clone()
                        };
                        (db, t.name.clone())
                    })
                    .collect(),
            )
        }
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
            &self.config.database,
            &self.tables,
            &self.config.checkpoint_table(),
        )
        .await
    }

    async fn discover(&self) -> Result<Vec<TableSchema>> {
        let mut conn = connect(&self.config).await?;
        let tables = catalog::selected_tables(
            &mut conn,
            &self.config.database,
            &self.tables,
            &self.config.checkpoint_table(),
        )
        .await?;
        Ok(tables.into_iter().map(|t| (*t.schema).clone()).collect())
    }

    async fn start(&self, from: StartFrom) -> Result<ChangeStream> {
        let mut conn = connect(&self.config).await?;
        let info = ServerInfo::detect(&mut conn).await?;
        crate::check::check(
            &mut conn,
            &info,
            &self.config.database,
            &self.tables,
            &self.config.checkpoint_table(),
        )
        .await?
        .into_result()?;
        let tables: Vec<Arc<TableInfo>> = catalog::selected_tables(
            &mut conn,
            &self.config.database,
            &self.tables,
            &self.config.checkpoint_table(),
        )
        .await?
        .into_iter()
        .map(Arc::new)
        .collect();
        let (acks, ack_rx) = AckHandle::channel(BinlogPosition::SOURCE);
        let stats = StreamStats::default();
        let (tx, rx) = mpsc::channel(4);
        let panic_tx = tx.clone();
        let mut out = Emitter::new(tx, self.config.batch_events, stats.clone());

        // Where streaming starts, and what the snapshot (if any) still has to read.
        let (pos, snapshot_progress) = match &from {
            StartFrom::Beginning => (None, Some(BTreeMap::new())),
            StartFrom::Snapshot(r) => (
                Some(BinlogPosition::from_checkpoint(&r.stream_from)?),
                Some(r.tables.clone()),
            ),
            StartFrom::Checkpoint(c) => (Some(BinlogPosition::from_checkpoint(c)?), None),
        };
        if let Some(p) = &pos {
            crate::replicator::validate_start(p, &info)?;
            server::ensure_history(&mut conn, &info, p).await?;
        }
        let config = self.config.clone();
        let selection = self.selection();
        let retry = self.retry.clone();
        let task = match snapshot_progress {
            None => {
                let pos = pos.ok_or_else(|| SourceError::config("no start position"))?;
                let replicator =
                    Replicator::new(config, info, selection, tables, retry, ack_rx, out, pos);
                tokio::spawn(replicator.run(true))
            }
            Some(progress) => {
                // The snapshot transaction opens before `start` returns, so a stream started
                // from the beginning is consistent with the moment of this call.
                let snap_pos = snapshot::begin(&mut conn, &info).await?;
                let pos = pos.unwrap_or(snap_pos);
                let stream_from = pos.to_checkpoint();
                tokio::spawn(async move {
                    let chunk = config.chunk_rows;
                    let read = snapshot::read_tables(
                        &mut conn,
                        &tables,
                        &stream_from,
                        &progress,
                        chunk,
                        &mut out,
                    )
                    .await;
                    match read {
                        Ok(()) => {}
                        Err(Stop::Closed) => return,
                        Err(Stop::Failed(e)) => {
                            out.fail(e.context("snapshot")).await;
                            return;
                        }
                    }
                    let _ = exec_drop(&mut conn, "COMMIT", "ending the snapshot").await;
                    drop(conn);
                    if out
                        .push(ChangeEvent::Snapshot(SnapshotProgress::Done {
                            checkpoint: stream_from.clone(),
                        }))
                        .await
                        .is_err()
                        || out.flush().await.is_err()
                    {
                        return;
                    }
                    Replicator::new(config, info, selection, tables, retry, ack_rx, out, pos)
                        .run(false)
                        .await;
                })
            }
        };
        tokio::spawn(async move {
            // A panic in the stream task must reach the host as an error, not a silent end.
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

    /// Writes the current binlog position into the checkpoint table (created on first use:
    /// `_powersync_checkpoints` in the URL's database, or the `checkpoint_table` option;
    /// columns `id INT PRIMARY KEY, checkpoint VARCHAR(512), written_at TIMESTAMP(6)`, one
    /// row). The stream recognises the row event and reports
    /// [`ChangeEvent::CheckpointObserved`] with the checkpoint written, which is the server's
    /// binlog head just before the marker (so it orders at or before the marker's commit). The
    /// user needs CREATE (once), INSERT and UPDATE on that table.
    async fn write_checkpoint(&self) -> Result<Checkpoint> {
        let (db, table) = self.config.checkpoint_table();
        if db.is_empty() {
            return Err(SourceError::config(
                "write_checkpoint needs a database for its checkpoint table: add /database to the URL or set checkpoint_table=db.table",
            ));
        }
        let mut conn = connect(&self.config).await?;
        let info = ServerInfo::detect(&mut conn).await?;
        let qualified = format!("{}.{}", ident(&db), ident(&table));
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {qualified} (id INT PRIMARY KEY, checkpoint VARCHAR(512) NOT NULL, \
             written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"
        ))
        .await
        .map_err(|e| sql_error(e, "creating the checkpoint table"))?;
        let checkpoint = server::head(&mut conn, &info).await?.to_checkpoint();
        conn.exec_drop(
            format!(
                "INSERT INTO {qualified} (id, checkpoint, written_at) VALUES (1, ?, NOW(6)) \
                 ON DUPLICATE KEY UPDATE checkpoint = VALUES(checkpoint), written_at = VALUES(written_at)"
            ),
            (checkpoint.as_str(),),
        )
        .await
        .map_err(|e| sql_error(e, "writing the checkpoint marker"))?;
        Ok(checkpoint)
    }
}
