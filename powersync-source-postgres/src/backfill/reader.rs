//! [`PgChunkReader`]: the connector's side of a backfill, on connections of its own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use powersync_source_core::backfill::{
    Chunk, ChunkReader, SIGNAL_KIND_BACKFILL, SIGNAL_TABLE, WATERMARK_PREFIX,
};
use powersync_source_core::{Result, RowIdentity, SourceError, TableName};
use tokio_postgres::Client;

use super::StreamSchemas;
use crate::catalog::{self, qualified};
use crate::config::PostgresConfig;
use crate::connection::copy::CopySession;
use crate::connection::{sql, sql_error};
use crate::snapshot_reader::{self, Piece, TableJob};
use crate::types::TypeRegistry;

/// Reads backfill chunks and writes watermarks and signals, each on an ordinary connection
/// opened on first use and again after it failed (so a transient failure is retried by the
/// core with a new connection): a `tokio-postgres` client for the catalog, the watermarks
/// and the signals, and a [`CopySession`] for the chunks (the snapshot's reader, so values
/// are normalized exactly as the snapshot's).
pub(crate) struct PgChunkReader {
    config: PostgresConfig,
    /// The stream's table selection; empty = every table of the publication.
    selection: Vec<TableName>,
    schemas: StreamSchemas,
    registry: TypeRegistry,
    sql: Option<Client>,
    copy: Option<CopySession>,
    /// Bound of a watermark or signal write (the stream's silence timeout): a half-open
    /// connection must not stall the backfill forever.
    write_timeout: Duration,
    /// Bound of a chunk read (catalog and `COPY`): generous, a selective row filter may
    /// make the server scan far for a chunk.
    read_timeout: Duration,
}

/// `op`, or a retryable error when it takes longer than `limit`.
async fn bounded<T>(limit: Duration, what: &str, op: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, op).await.unwrap_or_else(|_| {
        Err(SourceError::connection(format!(
            "{what}: no answer within {limit:?}"
        )))
    })
}

impl PgChunkReader {
    /// A reader for the stream of `config` selecting `selection` (empty = every published
    /// table), whose emitted schemas `schemas` tracks; `silence` is the stream's silence
    /// timeout, which bounds each operation.
    pub(crate) fn new(
        config: PostgresConfig,
        selection: Vec<TableName>,
        schemas: StreamSchemas,
        silence: Duration,
    ) -> Self {
        PgChunkReader {
            config,
            selection,
            schemas,
            registry: TypeRegistry::new(),
            sql: None,
            copy: None,
            write_timeout: silence,
            read_timeout: (silence * 4).max(Duration::from_secs(120)),
        }
    }

    async fn client(&mut self) -> Result<&Client> {
        if self.sql.as_ref().is_none_or(|c| c.is_closed()) {
            self.sql = Some(sql::connect(&self.config).await?);
        }
        self.sql
            .as_ref()
            .ok_or_else(|| SourceError::internal("backfill connection missing after connect"))
    }

    /// Forgets the connections after a failure that may have broken them (the next call
    /// opens new ones).
    fn after<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.as_ref().is_err_and(|e| e.is_retryable()) {
            self.sql = None;
            self.copy = None;
        }
        result
    }

    async fn watermark(&mut self, mark: &str) -> Result<()> {
        // Autocommit: the message is a transaction of its own, which the stream passes in
        // commit order.
        self.client()
            .await?
            .execute(
                "SELECT pg_catalog.pg_logical_emit_message(true, $1, $2)",
                &[&WATERMARK_PREFIX, &mark],
            )
            .await
            .map(|_| ())
            .map_err(|e| sql_error(e, "writing a backfill watermark"))
    }

    async fn signal(&mut self, id: &str, tables: &[TableName]) -> Result<()> {
        let signal = TableName::new("public", SIGNAL_TABLE);
        let publication = self.config.publication().to_string();
        let client = self.client().await?;
        // A row of an unpublished signal table would never reach the stream: the request
        // would be lost. Failing keeps it in memory (the core's fallback).
        let published: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables
                                WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)",
                &[&publication, &signal.schema, &signal.name],
            )
            .await
            .map_err(|e| sql_error(e, "looking for the signal table in the publication"))?
            .get(0);
        if !published {
            return Err(SourceError::prerequisite(format!(
                "the signal table {signal} is not in publication `{publication}`"
            ))
            .with_hint("run `setup --apply`, or create the table and add it to the publication"));
        }
        let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        let insert = format!(
            "INSERT INTO {} (id, kind, tables) VALUES ($1, $2, $3)",
            qualified(&signal)
        );
        client
            .execute(&insert, &[&id, &SIGNAL_KIND_BACKFILL, &names.join(",")])
            .await
            .map(|_| ())
            .map_err(|e| sql_error(e, "writing a backfill signal"))
    }

    async fn read(
        &mut self,
        table: &TableName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Chunk> {
        if !self.selection.is_empty() && !self.selection.contains(table) {
            return Err(SourceError::schema(format!(
                "{table} is not among the stream's selected tables"
            )));
        }
        let publication = self.config.publication().to_string();
        let selection = [table.clone()];
        let mut registry = std::mem::take(&mut self.registry);
        let published = {
            let client = self.client().await?;
            catalog::published_tables(client, &mut registry, &publication, &selection).await
        };
        self.registry = registry;
        let Some(published) = published?.into_iter().next() else {
            return Err(SourceError::schema(format!(
                "{table} is not in the publication `{publication}` (or does not exist)"
            ))
            .with_hint("add it to the publication, or check the table name"));
        };
        // NOTHING: the stream's changes carry no key to reconcile the chunks with (and its
        // schema events flag none, which the catalog's primary key would contradict).
        if published.schema.identity == RowIdentity::Nothing
            || published.schema.key_indexes().next().is_none()
        {
            return Err(SourceError::schema(format!(
                "{table} has no key to read it in order by and to match the stream's changes with (no primary key or replica identity index, or REPLICA IDENTITY NOTHING)"
            ))
            .with_hint("add a primary key (with the default replica identity)"));
        }
        let after = after
            .map(|a| {
                snapshot_reader::decode_key(a).map_err(|e| {
                    SourceError::schema(format!("the backfill cursor of {table} is corrupt"))
                        .with_source(e)
                })
            })
            .transpose()?;
        let job = TableJob {
            index: 0,
            table: Arc::new(published),
            piece: Piece::Keyed {
                after_key: None,
                rows_done: 0,
                recheck: None,
            },
        };
        if self.copy.is_none() {
            self.copy = Some(CopySession::connect(&self.config).await?);
        }
        let Some(session) = self.copy.as_mut() else {
            return Err(SourceError::internal(
                "backfill COPY session missing after connect",
            ));
        };
        let read = snapshot_reader::read_key_chunk(
            session,
            &self.registry,
            &job,
            after.as_deref(),
            limit as u64,
        )
        .await;
        let (rows, last_key) = match read {
            Ok(chunk) => chunk,
            Err(e) => {
                // The session's protocol state is unknown after a failed COPY.
                self.copy = None;
                return Err(e);
            }
        };
        Ok(Chunk {
            schema: self.schemas.matching(job.table.schema.clone()),
            rows,
            last_key: last_key.map(|k| snapshot_reader::encode_key(&k)),
        })
    }
}

#[async_trait]
impl ChunkReader for PgChunkReader {
    async fn write_watermark(&mut self, mark: &str) -> Result<()> {
        let limit = self.write_timeout;
        let result = bounded(limit, "writing a backfill watermark", self.watermark(mark)).await;
        self.after(result)
    }

    async fn read_chunk(
        &mut self,
        table: &TableName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Chunk> {
        let bound = self.read_timeout;
        let what = format!("reading a backfill chunk of {table}");
        let result = bounded(bound, &what, self.read(table, after, limit)).await;
        self.after(result)
    }

    async fn write_signal(&mut self, id: &str, tables: &[TableName]) -> Result<()> {
        let limit = self.write_timeout;
        let result = bounded(limit, "writing a backfill signal", self.signal(id, tables)).await;
        self.after(result)
    }
}
