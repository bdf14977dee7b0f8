//! The MongoDB side of a backfill ([`ChunkReader`]): watermark and signal documents written
//! on a driver client of its own, chunks read in `_id` order exactly like the snapshot reads
//! its batches.
//!
//! A chunk is one [`read_batch`] query (`find` bounded by `min` on the `_id` index, see
//! [`crate::snapshot_reader`]), so chunks follow MongoDB's `_id` index order across every BSON
//! type: a collection whose `_id`s mix numbers, strings and ObjectIds is read whole (a
//! `{_id: {$gt: …}}` filter would only see the type bracket of the cursor). The cursor is the
//! snapshot's resume key of the last `_id` (canonical extended JSON, or its exact bytes for
//! text that is not UTF-8), so it keeps its BSON type across a restart. Documents become
//! rows under the stream's own [`SharedShapes`]: same columns, same order, same type names,
//! same values as the stream and the snapshot give them.

use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::raw::RawDocumentBuf;
use mongodb::bson::{doc, Document};
use mongodb::Client;
use powersync_source_core::backfill::{Chunk, ChunkReader};
use powersync_source_core::{ErrorKind, Result, Row, SourceError, TableName, Value};

use crate::backfill_docs::{signal_document, watermark_document, WATERMARK_FIELD};
use crate::catalog::{list_collections, Selection};
use crate::config::MongoConfig;
use crate::driver_error::{driver_error, server_code};
use crate::server_info::{CHECKPOINTS_COLLECTION, SIGNALS_COLLECTION};
use crate::shapes::SharedShapes;
use crate::snapshot_reader::{decode_key, document_id, encode_key, read_batch};

/// MongoDB's duplicate-key error: a retried signal insert that had already succeeded.
const DUPLICATE_KEY: i32 = 11000;

/// Reads backfill chunks and writes watermarks and signals for one stream.
#[derive(Debug)]
pub(crate) struct MongoChunkReader {
    config: MongoConfig,
    selection: Selection,
    shapes: SharedShapes,
    /// How long one round trip may stay unanswered.
    silence: Duration,
    /// Connected on first use; dropped after a connection error, so the next call starts a
    /// new pool.
    client: Option<Client>,
    /// The mark of the last low watermark written: the chunk read next belongs to it.
    mark: Option<String>,
}

impl MongoChunkReader {
    pub(crate) fn new(
        config: MongoConfig,
        selection: Selection,
        shapes: SharedShapes,
        silence: Duration,
    ) -> MongoChunkReader {
        MongoChunkReader {
            config,
            selection,
            shapes,
            silence,
            client: None,
            mark: None,
        }
    }

    async fn client(&mut self) -> Result<Client> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = crate::source::connect(&self.config).await?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// Forgets the client after a connection failure (the core retries the call).
    fn after<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if e.kind() == ErrorKind::Connection {
                self.client = None;
            }
        }
        result
    }

    async fn insert_watermark(&mut self, mark: &str) -> Result<()> {
        let client = self.client().await?;
        let db = client.database(self.selection.checkpoint_database());
        let checkpoints = db.collection::<Document>(CHECKPOINTS_COLLECTION);
        let id = ObjectId::new();
        let context = || {
            format!(
                "writing a backfill watermark to {}.{CHECKPOINTS_COLLECTION}",
                db.name()
            )
        };
        tokio::time::timeout(
            self.silence,
            checkpoints.insert_one(watermark_document(id, mark)),
        )
        .await
        .map_err(|_| {
            SourceError::connection(format!(
                "{}: no answer within {:?}",
                context(),
                self.silence
            ))
        })?
        .map_err(|e| driver_error(context(), e))?;
        if let Some(m) = mark.strip_prefix("low:") {
            self.mark = Some(m.to_owned());
        }
        // Keep the collection small: earlier watermarks were passed (or will be ignored).
        if mark.starts_with("high:") {
            let _ = checkpoints
                .delete_many(doc! {WATERMARK_FIELD: {"$exists": true}, "_id": {"$lt": id}})
                .await;
        }
        Ok(())
    }

    async fn read(
        &mut self,
        table: &TableName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Chunk> {
        let db = if table.schema.is_empty() {
            self.selection.database().to_owned()
        } else {
            table.schema.clone()
        };
        let coll = table.name.as_str();
        if !self.selection.contains(&db, coll) {
            return Err(SourceError::schema(format!(
                "cannot backfill {table}: this source does not replicate it"
            ))
            .with_hint("name a collection of the source's selection (database.collection)"));
        }
        let after = after.map(decode_key).transpose().map_err(|e| {
            SourceError::schema(format!("backfill cursor of {table} is not an _id")).with_source(e)
        })?;
        let client = self.client().await?;
        let collection = client.database(&db).collection::<RawDocumentBuf>(coll);
        let limit = u32::try_from(limit).unwrap_or(u32::MAX).max(1);
        let docs = read_batch(&collection, after.as_ref(), limit, self.silence).await?;
        if docs.is_empty() && after.is_none() {
            let exists = list_collections(&client.database(&db))
                .await?
                .iter()
                .any(|c| c.name == coll);
            if !exists {
                return Err(SourceError::schema(format!(
                    "cannot backfill {table}: the collection does not exist"
                )));
            }
        }
        let last_key = docs
            .last()
            .map(document_id)
            .transpose()?
            .map(|id| encode_key(&id));
        // The shape's dirty flag stays set when a document adds a column: the stream
        // announces the wider schema before its next row of this collection.
        let (mut rows, schema) = self.shapes.with(&db, coll, |shape| {
            let rows = docs
                .iter()
                .map(|d| shape.row(d))
                .collect::<Result<Vec<Row>>>()?;
            Ok::<_, SourceError>((rows, shape.schema().clone()))
        })?;
        if let Some(mark) = &self.mark {
            self.shapes
                .chunk_read(mark, (db.clone(), coll.to_owned()), schema.clone());
        }
        let width = schema.columns.len();
        for row in &mut rows {
            let values = row.values_mut();
            if values.len() < width {
                values.resize(width, Value::Null);
            }
        }
        Ok(Chunk {
            schema,
            rows,
            last_key,
        })
    }

    async fn insert_signal(&mut self, id: &str, tables: &[TableName]) -> Result<()> {
        let client = self.client().await?;
        let db = client.database(self.selection.checkpoint_database());
        let signals = db.collection::<Document>(SIGNALS_COLLECTION);
        match signals.insert_one(signal_document(id, tables)).await {
            Ok(_) => Ok(()),
            Err(e) if server_code(&e) == Some(DUPLICATE_KEY) => Ok(()),
            Err(e) => Err(driver_error(
                format!(
                    "writing a backfill signal to {}.{SIGNALS_COLLECTION}",
                    db.name()
                ),
                e,
            )),
        }
    }
}

#[async_trait]
impl ChunkReader for MongoChunkReader {
    async fn write_watermark(&mut self, mark: &str) -> Result<()> {
        let result = self.insert_watermark(mark).await;
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
        let result = self.insert_signal(id, tables).await;
        self.after(result)
    }
}
