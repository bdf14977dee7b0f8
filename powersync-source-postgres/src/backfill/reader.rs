//! [`PgChunkReader`]: the connector's side of a backfill, on connections of its own.

use std::sync::Arc;

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
}

impl PgChunkReader {
    /// A reader for the stream of `config` selecting `selection` (empty = every published
    /// table), whose emitted schemas `schemas` tracks.
    pub(crate) fn new(
        config: PostgresConfig,
        selection: Vec<TableName>,
        schemas: StreamSchemas,
    ) -> Self {
        PgChunkReader {
            config,
            selection,
            schemas,
            registry: TypeRegistry::new(),
            sql: None,
            copy: None,
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

    /// Forgets the client after a failure that may have broken it.
    fn after<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.as_ref().is_err_and(|e| e.is_retryable()) {
            self.sql = None;
        }
        result
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
        let result = match self.client().await {
            // Autocommit: the message is a transaction of its own, which the stream passes
            // in commit order.
            Ok(client) => client
                .execute(
                    "SELECT pg_catalog.pg_logical_emit_message(true, $1, $2)",
                    &[&WATERMARK_PREFIX, &mark],
                )
                .await
                .map(|_| ())
                .map_err(|e| sql_error(e, "writing a backfill watermark")),
            Err(e) => Err(e),
        };
        self.after(result)
    }

    async fn read_chunk(
        &mut self,
        table: &TableName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Chunk> {
        let result = self.read(table, after, limit).await;
        self.after(result)
    }

    async fn write_signal(&mut self, id: &str, tables: &[TableName]) -> Result<()> {
        let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        let insert = format!(
            "INSERT INTO {} (id, kind, tables) VALUES ($1, $2, $3)",
            qualified(&TableName::new("public", SIGNAL_TABLE))
        );
        let result = match self.client().await {
            Ok(client) => client
                .execute(&insert, &[&id, &SIGNAL_KIND_BACKFILL, &names.join(",")])
                .await
                .map(|_| ())
                .map_err(|e| sql_error(e, "writing a backfill signal")),
            Err(e) => Err(e),
        };
        self.after(result)
    }
}
