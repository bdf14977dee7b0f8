//! The connector's side of backfills ([`ChunkReader`]): watermark rows in the checkpoint
//! table, key-ordered chunk reads and signal rows, on SQL connections of its own (the driver's
//! for catalog queries and writes, the snapshot reader's for the chunks).
//!
//! Chunks are read like the snapshot reads a table (the same prepared statements, key
//! encoding, row reader and value conversion, the schema from the same catalog query the
//! stream's `Schema` events come from), so a backfilled row and a streamed row of one table
//! look alike.
//! Each chunk is one autocommit `SELECT`: InnoDB gives a statement a read view of its own,
//! taken after the low watermark committed (the watermark write returned first), which is
//! what the watermark method needs.

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as My};
use powersync_source_core::backfill::{Chunk, ChunkReader, SIGNAL_KIND_BACKFILL};
use powersync_source_core::{Result, SourceError, TableName};

use crate::catalog;
use crate::check::CHECKPOINT_COLUMNS;
use crate::chunk_query::{self, ChunkQuery};
use crate::client::Client;
use crate::config::MySqlConfig;
use crate::connection::{codes, connect, ident, sql_error};
use crate::markers::{self, SIGNAL_COLUMNS, WATERMARK_ROW};
use crate::replicator::Selection;
use crate::result_rows::ResultRows;

/// Reads backfill chunks and writes watermarks and signals for one stream.
#[derive(Debug)]
pub(crate) struct BinlogChunkReader {
    config: MySqlConfig,
    selection: Selection,
    /// Qualifies table names without a database.
    default_db: String,
    checkpoint_table: (String, String),
    signal_table: (String, String),
    /// Opened on first use; dropped after a connection error and opened again by the next
    /// call (the core retries retryable errors with backoff).
    conn: Option<Conn>,
    /// The connection chunks are read on; opened and dropped like `conn`.
    rows: Option<Client>,
}

impl BinlogChunkReader {
    /// A reader for the tables `selection` replicates; `config`'s checkpoint table is
    /// resolved ([`crate::MySqlSource`]'s configuration in use).
    pub(crate) fn new(config: MySqlConfig, selection: Selection, default_db: String) -> Self {
        let checkpoint_table = config.checkpoint_table();
        let signal_table = markers::signal_table(&checkpoint_table);
        BinlogChunkReader {
            config,
            selection,
            default_db,
            checkpoint_table,
            signal_table,
            conn: None,
            rows: None,
        }
    }

    /// Runs `work` on the connection (opened if needed); a connection error drops it, so the
    /// next call reconnects.
    async fn with_conn<T, F>(&mut self, work: F) -> Result<T>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> futures::future::BoxFuture<'c, Result<T>>,
    {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.config).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(SourceError::connection("no SQL connection for backfills"));
        };
        let result = work(conn).await;
        if result.as_ref().is_err_and(SourceError::is_retryable) {
            self.conn = None;
        }
        result
    }

    fn qualified(&self, t: &(String, String)) -> String {
        format!("{}.{}", ident(&t.0), ident(&t.1))
    }

    fn qualify(&self, table: &TableName) -> TableName {
        if table.schema.is_empty() {
            TableName::new(self.default_db.clone(), table.name.clone())
        } else {
            table.clone()
        }
    }
}

/// Runs `insert`; when the table does not exist yet, creates it with `create` and runs
/// `insert` again.
async fn insert_creating(
    conn: &mut Conn,
    insert: &str,
    params: Vec<My>,
    create: &str,
    context: &str,
) -> Result<()> {
    match conn.exec_drop(insert, params.clone()).await {
        Err(mysql_async::Error::Server(e)) if e.code == codes::NO_SUCH_TABLE => {
            conn.query_drop(create)
                .await
                .map_err(|e| sql_error(e, &format!("creating the table for {context}")))?;
            conn.exec_drop(insert, params)
                .await
                .map_err(|e| sql_error(e, context))
        }
        other => other.map_err(|e| sql_error(e, context)),
    }
}

#[async_trait]
impl ChunkReader for BinlogChunkReader {
    /// Updates the watermark row of the checkpoint table (created when missing, as
    /// `write_checkpoint` does); the stream recognises it by its prefix.
    async fn write_watermark(&mut self, mark: &str) -> Result<()> {
        if self.checkpoint_table.0.is_empty() {
            return Err(SourceError::config(
                "backfills need a database for the checkpoint table: add /database to the URL or set checkpoint_table=db.table",
            ));
        }
        let table = self.qualified(&self.checkpoint_table);
        let insert = format!(
            "INSERT INTO {table} (id, checkpoint, written_at) VALUES (?, ?, NOW(6)) \
             ON DUPLICATE KEY UPDATE checkpoint = VALUES(checkpoint), written_at = VALUES(written_at)"
        );
        let create = format!("CREATE TABLE IF NOT EXISTS {table} {CHECKPOINT_COLUMNS}");
        let params = vec![
            My::from(WATERMARK_ROW),
            My::from(markers::watermark_text(mark)),
        ];
        self.with_conn(move |conn| {
            Box::pin(async move {
                insert_creating(
                    conn,
                    &insert,
                    params,
                    &create,
                    "writing a backfill watermark",
                )
                .await
            })
        })
        .await
    }

    async fn read_chunk(
        &mut self,
        table: &TableName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Chunk> {
        let name = self.qualify(table);
        if !self
            .selection
            .wants(&name.schema, &name.name, &self.checkpoint_table)
        {
            return Err(SourceError::schema(format!(
                "table {name} is not replicated by this stream: a backfill of it would not be kept up to date"
            ))
            .with_hint("backfill a table of the stream's selection"));
        }
        let after = after.map(chunk_query::decode_key).transpose()?;
        if self.conn.is_none() {
            self.conn = Some(connect(&self.config).await?);
        }
        if self.rows.is_none() {
            self.rows = Some(Client::connect(&self.config).await?);
        }
        let (Some(conn), Some(rows)) = (self.conn.as_mut(), self.rows.as_mut()) else {
            return Err(SourceError::connection("no SQL connection for backfills"));
        };
        let result = read(conn, rows, name, after, limit).await;
        if result.as_ref().is_err_and(SourceError::is_retryable) {
            self.conn = None;
            self.rows = None;
        }
        result
    }

    /// Inserts the signal row (the signal table is created when missing: a request through
    /// the source's log survives a crash, one kept in memory does not).
    async fn write_signal(&mut self, id: &str, tables: &[TableName]) -> Result<()> {
        let table = self.qualified(&self.signal_table);
        let names: Vec<String> = tables.iter().map(|t| self.qualify(t).to_string()).collect();
        let insert = format!("INSERT INTO {table} (id, kind, tables) VALUES (?, ?, ?)");
        let create = format!("CREATE TABLE IF NOT EXISTS {table} {SIGNAL_COLUMNS}");
        let params = vec![
            My::from(id),
            My::from(SIGNAL_KIND_BACKFILL),
            My::from(names.join(",")),
        ];
        self.with_conn(move |conn| {
            Box::pin(async move {
                insert_creating(conn, &insert, params, &create, "writing a backfill signal").await
            })
        })
        .await
    }
}

/// ER_BAD_FIELD_ERROR: an unknown column.
const BAD_FIELD: u16 = 1054;

/// Up to `limit` rows of `name` after the key `after`, in key order: the shape from the
/// catalog on `conn`, the rows on `rows`.
async fn read(
    conn: &mut Conn,
    rows: &mut Client,
    name: TableName,
    after: Option<Vec<My>>,
    limit: usize,
) -> Result<Chunk> {
    // The schema as the stream's `Schema` events carry it: the same catalog query.
    let Some(table) = catalog::table_info(conn, &name).await? else {
        return Err(SourceError::schema(format!(
            "table {name} does not exist (or the user cannot see it)"
        )));
    };
    if table.key.is_empty() {
        return Err(SourceError::schema(format!(
            "table {name} has no primary key: a backfill reads in key order"
        ))
        .with_hint(format!("ALTER TABLE {name} ADD PRIMARY KEY (…)")));
    }
    let query = ChunkQuery::new(&table, limit as u64);
    let (sql, params) = match &after {
        None => (&query.first, Vec::new()),
        Some(k) => (&query.next, query.params(k)),
    };
    let context = format!("backfill of {name}");
    let stmt = match rows.prepare(sql).await {
        Ok(stmt) => stmt,
        // A column dropped between the catalog read and this statement: the next try reads
        // the table's shape again (the core retries retryable errors).
        Err(mysql_async::Error::Server(e)) if e.code == BAD_FIELD => {
            return Err(SourceError::connection(format!(
                "{context}: the table changed while its chunk was read ({})",
                e.message
            )))
        }
        Err(e) => return Err(sql_error(e, &context)),
    };
    let mut read = Vec::with_capacity(limit.min(65_536));
    let mut last = Vec::with_capacity(table.key.len());
    if let Some(mut result) = ResultRows::open(rows, &stmt, &params, &table, &context).await? {
        while let Some(row) = result.next(Some(&mut last)).await? {
            read.push(row);
        }
    }
    rows.close(stmt).await.map_err(|e| sql_error(e, &context))?;
    let last_key = (!read.is_empty()).then(|| chunk_query::encode_key(&last));
    Ok(Chunk {
        schema: table.schema.clone(),
        rows: read,
        last_key,
    })
}
