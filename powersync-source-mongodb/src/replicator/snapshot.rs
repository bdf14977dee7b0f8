//! The snapshot phase of a [`Replicator`]: every selected collection read in `_id` order, a
//! resume point after each batch (see the crate docs for the consistency argument).

use mongodb::bson::raw::RawDocumentBuf;
use powersync_source_core::runtime::{Reconnect, SnapshotBook, Step, TableStart};
use powersync_source_core::{
    ChangeEvent, OldImage, Op, Result, RowChange, SnapshotProgress, SourceError,
};

use super::Replicator;
use crate::snapshot_reader::{decode_key, document_id, encode_key, read_batch, AfterId};

impl Replicator {
    /// Reads every selected collection the book does not list as done, then emits the
    /// snapshot's end (streaming continues from the book's barrier).
    pub(super) async fn initial_snapshot(&mut self, mut book: SnapshotBook) -> Step<()> {
        self.list_known().await?;
        let names: Vec<(String, String)> = self.known.iter().cloned().collect();
        // Collections a resumed snapshot finished before are not part of this one's plan.
        let planned = names
            .iter()
            .filter(|(db, coll)| {
                !matches!(
                    book.start(&self.selection.table(db, coll)),
                    TableStart::Skip
                )
            })
            .count();
        self.out.plan_snapshot(planned);
        for (db, coll) in names {
            self.snapshot_collection(&db, &coll, Some(&mut book))
                .await?;
        }
        self.out.push(book.done()).await?;
        self.out.flush().await
    }

    /// Reads a whole collection (or what `book` says is left of it). Without a book (the copy
    /// after a rename into a selected collection) no resume points are emitted: a crash
    /// replays the rename and copies again.
    pub(super) async fn snapshot_collection(
        &mut self,
        db: &str,
        coll: &str,
        mut book: Option<&mut SnapshotBook>,
    ) -> Step<()> {
        let table = self.selection.table(db, coll);
        let start = match book.as_deref() {
            Some(book) => book.start(&table),
            None => TableStart::Fresh,
        };
        let (mut after, mut rows): (Option<AfterId>, u64) = match start {
            TableStart::Skip => return Ok(()),
            TableStart::Fresh => (None, 0),
            TableStart::Resume { after_key, rows } => (Some(decode_key(&after_key)?), rows),
        };
        let collection = self.client.database(db).collection::<RawDocumentBuf>(coll);
        let limit = self.config.snapshot_batch_size();
        // The estimate is metadata on MongoDB but a count on some servers: ask for it while the
        // first batch is read.
        let (estimated, first) = tokio::join!(
            collection.estimated_document_count(),
            read_batch(&collection, after.as_ref(), limit, self.silence)
        );
        let estimated = estimated.ok();
        self.out
            .push(ChangeEvent::Snapshot(SnapshotProgress::TableStarted {
                table: table.clone(),
                estimated_rows: estimated,
            }))
            .await?;
        if let Ok(docs) = &first {
            self.shapes.with(db, coll, |shape| {
                for doc in docs {
                    shape.observe(doc);
                }
            });
        }
        if let Some(schema) = self.shapes.with(db, coll, |shape| shape.take_changed()) {
            self.out.push(ChangeEvent::Schema(schema)).await?;
        }
        let mut first = Some(first);
        // The next batch is read while this one is converted (at most two batches in memory).
        let mut prefetch: Option<tokio::task::JoinHandle<Result<Vec<RawDocumentBuf>>>> = None;
        // Failed batch reads are retried with one budget per outage, like the stream's reads.
        let mut reconnect = Reconnect::new(self.retry.clone());
        loop {
            let result = if let Some(r) = first.take() {
                r
            } else if let Some(task) = prefetch.take() {
                match task.await {
                    Ok(r) => r,
                    // A bug, not a server failure: let the runtime report it as one.
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => Err(
                        SourceError::connection("the snapshot read task was cancelled")
                            .with_source(e),
                    ),
                }
            } else {
                read_batch(&collection, after.as_ref(), limit, self.silence).await
            };
            let docs = match result {
                Ok(docs) => {
                    reconnect.healthy();
                    docs
                }
                Err(e) => {
                    reconnect.after_failure(e, &mut self.out).await?;
                    continue;
                }
            };
            let last_id = docs.last().map(document_id).transpose()?;
            if docs.len() >= limit as usize {
                if let Some(id) = &last_id {
                    let (c, id, silence) = (collection.clone(), id.clone(), self.silence);
                    prefetch = Some(tokio::spawn(async move {
                        read_batch(&c, Some(&id), limit, silence).await
                    }));
                }
            }
            let n = docs.len();
            for doc in &docs {
                let (row, changed, schema) = self.shapes.with(db, coll, |shape| {
                    let row = shape.row(doc)?;
                    Ok::<_, SourceError>((row, shape.take_changed(), shape.schema().clone()))
                })?;
                if let Some(schema) = changed {
                    self.out.push(ChangeEvent::Schema(schema)).await?;
                }
                self.out
                    .push(ChangeEvent::Row(RowChange {
                        op: Op::Insert,
                        table: schema,
                        old: None,
                        old_image: OldImage::None,
                        new: Some(row),
                        snapshot: true,
                    }))
                    .await?;
            }
            rows += n as u64;
            if let Some(id) = last_id {
                if let Some(book) = book.as_deref_mut() {
                    let event = book.chunk_done(&table, encode_key(&id), rows, estimated);
                    self.out.push(event).await?;
                }
                after = Some(id);
            }
            if n < limit as usize {
                break;
            }
        }
        let done = match book {
            Some(book) => book.table_done(&table, rows),
            None => ChangeEvent::Snapshot(SnapshotProgress::TableDone { table, rows }),
        };
        self.out.push(done).await?;
        self.out.flush().await
    }
}
