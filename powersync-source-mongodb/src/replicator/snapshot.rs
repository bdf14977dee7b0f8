//! The snapshot phase of a [`Replicator`]: every selected collection read in `_id` order, a
//! resume point after each batch (see the crate docs for the consistency argument).

use mongodb::bson::raw::RawDocumentBuf;
use powersync_source_core::{
    Backoff, ChangeEvent, OldImage, Op, Result, RowChange, SnapshotProgress, SnapshotResume,
    SourceError, TableProgress,
};

use super::Replicator;
use crate::catalog::list_collections;
use crate::snapshot_reader::{decode_key, document_id, encode_key, read_batch};

impl Replicator {
    pub(super) async fn initial_snapshot(&mut self, mut resume: SnapshotResume) -> Result<()> {
        let db = self.client.database(self.selection.database());
        let collections = list_collections(&db).await?;
        for info in collections {
            if self
                .selection
                .contains(self.selection.database(), &info.name)
            {
                self.known.insert(info.name);
            }
        }
        let names: Vec<String> = self.known.iter().cloned().collect();
        for coll in names {
            self.snapshot_collection(&coll, Some(&mut resume)).await?;
        }
        let checkpoint = resume.stream_from.clone();
        self.batch
            .push(ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint }));
        self.flush().await
    }

    /// Reads a whole collection (or what `resume` says is left of it).
    pub(super) async fn snapshot_collection(
        &mut self,
        coll: &str,
        mut resume: Option<&mut SnapshotResume>,
    ) -> Result<()> {
        let table = self.selection.table(coll);
        let key = table.to_string();
        let (mut after, mut rows) = match resume.as_ref().and_then(|r| r.tables.get(&key)) {
            Some(TableProgress::Done { .. }) => return Ok(()),
            Some(TableProgress::Partial { after_key, rows }) => {
                (Some(decode_key(after_key)?), *rows)
            }
            None => (None, 0),
        };
        let collection = self
            .client
            .database(self.selection.database())
            .collection::<RawDocumentBuf>(coll);
        let limit = self.config.snapshot_batch_size();
        // The estimate is metadata on MongoDB but a count on some servers: ask for it while the
        // first batch is read.
        let (estimated, first) = tokio::join!(
            collection.estimated_document_count(),
            read_batch(&collection, after.as_ref(), limit)
        );
        let estimated = estimated.ok();
        self.push(ChangeEvent::Snapshot(SnapshotProgress::TableStarted {
            table: table.clone(),
            estimated_rows: estimated,
        }))
        .await?;
        if let Ok(docs) = &first {
            let shape = self.shape(coll);
            for doc in docs {
                shape.observe(doc);
            }
        }
        if let Some(schema) = self.shape(coll).take_changed() {
            self.push(ChangeEvent::Schema(schema)).await?;
        }
        let mut first = Some(first);
        // The next batch is read while this one is converted (at most two batches in memory).
        let mut prefetch: Option<tokio::task::JoinHandle<Result<Vec<RawDocumentBuf>>>> = None;
        let mut backoff: Option<Backoff> = None;
        loop {
            let result = if let Some(r) = first.take() {
                r
            } else if let Some(task) = prefetch.take() {
                task.await.unwrap_or_else(|e| {
                    Err(SourceError::connection(format!("snapshot read task: {e}")))
                })
            } else {
                read_batch(&collection, after.as_ref(), limit).await
            };
            let docs = match result {
                Ok(docs) => {
                    backoff = None;
                    docs
                }
                Err(e) => {
                    let b = backoff.get_or_insert_with(|| self.retry.backoff());
                    match b.next_delay(&e) {
                        Some(delay) => {
                            tracing::warn!(error = %e, ?delay, "snapshot read failed; retrying the batch");
                            self.stats.record_reconnect();
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                        None => return Err(e),
                    }
                }
            };
            let last_id = docs.last().map(document_id).transpose()?;
            if docs.len() >= limit as usize {
                if let Some(id) = &last_id {
                    let (c, id) = (collection.clone(), id.clone());
                    prefetch = Some(tokio::spawn(async move {
                        read_batch(&c, Some(&id), limit).await
                    }));
                }
            }
            let n = docs.len();
            for doc in &docs {
                let shape = self.shape(coll);
                let row = shape.row(doc)?;
                let changed = shape.take_changed();
                let schema = shape.schema().clone();
                if let Some(schema) = changed {
                    self.push(ChangeEvent::Schema(schema)).await?;
                }
                self.push(ChangeEvent::Row(RowChange {
                    op: Op::Insert,
                    table: schema,
                    old: None,
                    old_image: OldImage::None,
                    new: Some(row),
                    snapshot: true,
                }))
                .await?;
            }
            self.stats.add_rows(n as u64);
            rows += n as u64;
            if let Some(id) = last_id {
                if let Some(resume) = resume.as_deref_mut() {
                    resume.tables.insert(
                        key.clone(),
                        TableProgress::Partial {
                            after_key: encode_key(&id),
                            rows,
                        },
                    );
                    self.push(ChangeEvent::Snapshot(SnapshotProgress::ChunkDone {
                        table: table.clone(),
                        rows_done: rows,
                        estimated_rows: estimated,
                        resume: Box::new(resume.clone()),
                    }))
                    .await?;
                }
                after = Some(id);
            }
            if n < limit as usize {
                break;
            }
        }
        if let Some(resume) = resume {
            resume.tables.insert(key, TableProgress::Done { rows });
        }
        self.push(ChangeEvent::Snapshot(SnapshotProgress::TableDone {
            table,
            rows,
        }))
        .await?;
        self.flush().await
    }
}
