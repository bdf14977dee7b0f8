//! The task behind a [`ChangeStream`](powersync_source_core::ChangeStream): snapshot, then
//! change stream, with reconnects. It runs on the core runtime
//! ([`spawn_stream`](powersync_source_core::runtime::spawn_stream)): events go through an
//! [`Emitter`], the reconnect budget is a [`Reconnect`], snapshot progress a
//! [`SnapshotBook`]. The snapshot reading lives in [`snapshot`], DDL events in [`ddl`].

use std::collections::BTreeSet;
use std::time::Duration;

use mongodb::bson::raw::{RawDocument, RawDocumentBuf};
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream as DriverStream;
use mongodb::options::{ChangeStreamOptions, FullDocumentBeforeChangeType, FullDocumentType};
use mongodb::Client;
use powersync_source_core::position::MongoPosition;
use powersync_source_core::runtime::{Emitter, Reconnect, SnapshotBook, Step, Stop, TableStart};
use powersync_source_core::{
    Begin, ChangeEvent, Checkpoint, Commit, OldImage, Op, Position, RetryPolicy, Row, RowChange,
    SourceError, StreamOptions, UnixMicros, Value,
};

mod ddl;
mod snapshot;

use crate::backfill_docs::{signal_of, watermark_of};
use crate::backfill_reader::MongoChunkReader;
use crate::catalog::{list_collections, Selection};
use crate::change_event::{
    document_field, document_key, header, EventHeader, Operation, Reassembler,
};
use crate::config::{MongoConfig, PostImages};
use crate::document_row::CollectionShape;
use crate::driver_error::{driver_error, resume_error};
use crate::resume_token::token_cluster_time;
use crate::server_info::{CHECKPOINTS_COLLECTION, SIGNALS_COLLECTION};
use crate::shapes::{Ns, SharedShapes};
use crate::watch::{self, pipeline, resume_token, token_string};

/// Longest time events wait in a partly filled batch while the change stream keeps
/// delivering (an idle read flushes at once).
const FLUSH_LINGER: Duration = Duration::from_millis(20);

/// What the stream does first.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Snapshot the collections the book does not list as done, then stream from its
    /// `stream_from`.
    Snapshot(SnapshotBook),
    /// Stream from the setup's `start`.
    Stream,
}

/// Everything a stream task needs, prepared by `start()` before the task is spawned.
#[derive(Debug)]
pub(crate) struct Setup {
    pub client: Client,
    pub config: MongoConfig,
    pub selection: Selection,
    pub retry: RetryPolicy,
    /// How long a change-stream read may stay unanswered.
    pub silence: Duration,
    pub split_events: bool,
    /// Where streaming starts (the plan's snapshot barrier or checkpoint).
    pub start: MongoPosition,
    pub plan: Plan,
    /// The collection shapes, shared with the backfill reader.
    pub shapes: SharedShapes,
    pub backfill: BackfillSetup,
}

/// What turns on backfills once the stream streams.
#[derive(Debug)]
pub(crate) struct BackfillSetup {
    pub reader: MongoChunkReader,
    /// The checkpoint the stream resumes from (`StartFrom::Checkpoint`): the backfill cursor
    /// it carries continues.
    pub resume: Option<Checkpoint>,
    pub options: StreamOptions,
}

/// Why reading stopped without an error.
enum Flow {
    Continue,
    /// The stream was invalidated: reopen after the invalidate token.
    Reopen,
}

struct Replicator {
    client: Client,
    config: MongoConfig,
    selection: Selection,
    out: Emitter,
    retry: RetryPolicy,
    silence: Duration,
    split_events: bool,
    /// Keyed by (database, collection).
    shapes: SharedShapes,
    /// The server transaction of the open transaction (`None`: a single write).
    txn_key: Option<(Vec<u8>, i64)>,
    txn_time: Option<UnixMicros>,
    /// Position after the last event handled.
    position: MongoPosition,
    /// Position of the last checkpoint emitted (commit, keepalive, snapshot done).
    emitted: MongoPosition,
    reassembler: Reassembler,
    /// The selected collections known to exist (for `dropDatabase`, and to configure
    /// post-images on collections first seen mid-stream).
    known: BTreeSet<Ns>,
    /// Collections read again because a chunk went out under a stale schema.
    rereads: BTreeSet<Ns>,
}

/// The stream task: runs until the host drops the stream or a final error (which the runtime
/// hands to the host after the events pushed before it).
pub(crate) async fn run(setup: Setup, out: Emitter) -> Step<()> {
    let Setup {
        client,
        config,
        selection,
        retry,
        silence,
        split_events,
        start,
        plan,
        shapes,
        backfill,
    } = setup;
    let mut replicator = Replicator {
        client,
        config,
        selection,
        out,
        retry,
        silence,
        split_events,
        shapes,
        txn_key: None,
        txn_time: None,
        position: start.clone(),
        emitted: start,
        reassembler: Reassembler::default(),
        known: BTreeSet::new(),
        rereads: BTreeSet::new(),
    };
    match plan {
        Plan::Snapshot(book) => {
            // A resumed snapshot skips or continues collections read before the restart: their
            // fields must be known before their first event.
            replicator.list_known().await?;
            replicator
                .seed_shapes(|table| book.start(table) != TableStart::Fresh)
                .await?;
            replicator.initial_snapshot(book).await?;
        }
        Plan::Stream => {
            replicator.list_known().await?;
            replicator.seed_shapes(|_| true).await?;
        }
    }
    // Backfills (requested ones, and collections that enter the selection) run once the
    // stream streams; a checkpoint's cursor resumes an interrupted one.
    let BackfillSetup {
        reader,
        resume,
        options,
    } = backfill;
    let default_database = replicator.selection.database().to_owned();
    replicator.out.enable_backfill(
        Box::new(reader),
        resume.as_ref(),
        &default_database,
        &options,
    )?;
    replicator.stream().await
}

fn event_time(h: &EventHeader) -> UnixMicros {
    UnixMicros(i64::from(h.cluster_time.time) * 1_000_000)
}

impl Replicator {
    /// Starts the shape of each known collection `wanted` selects from the fields its current
    /// documents have (one aggregation per collection, returning only field names).
    ///
    /// A stream learns a collection's columns from the documents it sees. Resumed, it has seen
    /// none: its first event (a delete carrying only `documentKey`, or a document lacking some
    /// fields) would send a schema narrower than the one the host holds, and a host that
    /// follows schema events (the SQLite sink) would drop those columns and their values. The
    /// fault campaign (`powersync-source-chaos`) found exactly that. Fields that no current
    /// document has are not recovered; the host keeps what it has for them only if it never
    /// drops columns of a MongoDB table.
    async fn seed_shapes(
        &mut self,
        wanted: impl Fn(&powersync_source_core::TableName) -> bool,
    ) -> Result<(), SourceError> {
        use futures::TryStreamExt;
        use mongodb::bson::{doc, Document};
        let namespaces: Vec<Ns> = self.known.iter().cloned().collect();
        for (db, coll) in namespaces {
            if !wanted(&self.selection.table(&db, &coll)) {
                continue;
            }
            let pipeline = vec![
                doc! { "$project": { "_id": 0, "f": { "$objectToArray": "$$ROOT" } } },
                doc! { "$unwind": "$f" },
                doc! { "$group": { "_id": "$f.k", "t": { "$first": { "$type": "$f.v" } } } },
                doc! { "$sort": { "_id": 1 } },
            ];
            let context = format!("reading the fields of {db}.{coll}");
            let cursor = self
                .client
                .database(&db)
                .collection::<Document>(&coll)
                .aggregate(pipeline)
                .await
                .map_err(|e| driver_error(&context, e))?;
            let fields: Vec<Document> = cursor
                .try_collect()
                .await
                .map_err(|e| driver_error(&context, e))?;
            self.shapes.with(&db, &coll, |shape| {
                for f in &fields {
                    if let Ok(name) = f.get_str("_id") {
                        shape.seed(name, f.get_str("t").unwrap_or("mixed"));
                    }
                }
            });
        }
        Ok(())
    }

    /// Records every selected collection that exists now.
    async fn list_known(&mut self) -> Result<(), SourceError> {
        let databases: Vec<String> = self.selection.databases().map(str::to_owned).collect();
        for database in databases {
            let db = self.client.database(&database);
            for info in list_collections(&db).await? {
                if self.selection.contains(&database, &info.name) {
                    self.known.insert((database.clone(), info.name));
                }
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- streaming

    async fn open(&self) -> Result<DriverStream<RawDocumentBuf>, SourceError> {
        let full_document = if self.config.post_images().requires_images() {
            FullDocumentType::Required
        } else {
            FullDocumentType::UpdateLookup
        };
        let before = if self.config.post_images().requires_images() {
            FullDocumentBeforeChangeType::WhenAvailable
        } else {
            FullDocumentBeforeChangeType::Off
        };
        let mut options = ChangeStreamOptions::default();
        options.full_document = Some(full_document);
        options.full_document_before_change = Some(before);
        // startAfter (4.2+) also accepts the token of an invalidate event.
        options.start_after = Some(resume_token(&self.emitted.resume_token)?);
        options.max_await_time = Some(self.config.max_await());
        let stages = pipeline(&self.selection, self.split_events);
        let stream = watch::open(&self.client, &self.selection, stages, options)
            .await
            .map_err(|e| {
                resume_error(
                    format!(
                        "opening the change stream of {} after {}",
                        watch::scope(&self.selection),
                        self.emitted.to_checkpoint()
                    ),
                    e,
                )
            })?;
        Ok(stream.with_type::<RawDocumentBuf>())
    }

    async fn stream(&mut self) -> Step<()> {
        if self.known.is_empty() {
            self.list_known().await?;
        }
        let mut reconnect = Reconnect::new(self.retry.clone());
        loop {
            // A server that accepts the connection but never answers (half-open) must not
            // hold the reopen forever either.
            let outcome = match tokio::time::timeout(self.silence, self.open()).await {
                Ok(Ok(mut cs)) => self.pump(&mut cs, &mut reconnect).await,
                Ok(Err(e)) => Err(Stop::Failed(e)),
                Err(_) => Err(Stop::Failed(SourceError::connection(format!(
                    "opening the change stream got no answer within {:?} (half-open connection?)",
                    self.silence
                )))),
            };
            match outcome {
                Ok(Flow::Reopen) | Ok(Flow::Continue) => continue,
                Err(Stop::Closed) => return Err(Stop::Closed),
                Err(Stop::Failed(e)) => {
                    self.rewind();
                    reconnect.after_failure(e, &mut self.out).await?;
                }
            }
        }
    }

    /// Forgets what was read after the last emitted checkpoint: the reopened stream sends it
    /// again. The emitter tells the host to discard the open transaction
    /// ([`Reconnect::after_failure`]).
    fn rewind(&mut self) {
        if self.out.in_transaction() {
            // Schema events inside the discarded transaction are discarded too: send again.
            self.shapes.mark_all_changed();
        }
        self.position = self.emitted.clone();
        self.reassembler.clear();
    }

    async fn pump(
        &mut self,
        cs: &mut DriverStream<RawDocumentBuf>,
        reconnect: &mut Reconnect,
    ) -> Step<Flow> {
        let mut last_flush = std::time::Instant::now();
        loop {
            // An idle stream sends nothing to the host; notice a dropped stream anyway.
            if self.out.is_closed() {
                return Err(Stop::Closed);
            }
            let next = tokio::time::timeout(self.silence, cs.next_if_any()).await;
            match next {
                Err(_) => {
                    return Err(SourceError::connection(format!(
                        "the change stream sent nothing for {:?} (half-open connection?)",
                        self.silence
                    ))
                    .into())
                }
                Ok(Err(e)) => return Err(resume_error("reading the change stream", e).into()),
                Ok(Ok(Some(raw))) => {
                    reconnect.healthy();
                    self.out.stats().add_bytes(raw.as_bytes().len() as u64);
                    if let Flow::Reopen = self.handle(raw).await? {
                        return Ok(Flow::Reopen);
                    }
                    // Under steady writes every getMore returns events, so the idle flush
                    // below never comes: hand over what waited longer than the linger (the
                    // fault campaign saw changes held until a batch of 4096 filled).
                    if self.out.pending() > 0 && last_flush.elapsed() >= FLUSH_LINGER {
                        self.out.flush().await?;
                        last_flush = std::time::Instant::now();
                    }
                }
                Ok(Ok(None)) => {
                    reconnect.healthy();
                    let token = cs.resume_token();
                    self.idle(token).await?;
                    self.out.flush().await?;
                    last_flush = std::time::Instant::now();
                }
            }
        }
    }

    /// Ends the open transaction (or, outside one, reports a position advance).
    async fn close_transaction(&mut self) -> Step<()> {
        if self.out.in_transaction() {
            self.out
                .push(ChangeEvent::Commit(Commit {
                    checkpoint: self.position.to_checkpoint(),
                    commit_time: self.txn_time,
                }))
                .await?;
            self.emitted = self.position.clone();
        } else if self.position != self.emitted {
            self.out
                .push(ChangeEvent::Keepalive(self.position.to_checkpoint()))
                .await?;
            self.emitted = self.position.clone();
        }
        Ok(())
    }

    /// An empty `getMore`: commit, then advance to the post-batch resume token when its time
    /// can be read and is later than the last event's.
    async fn idle(&mut self, token: Option<ResumeToken>) -> Step<()> {
        self.close_transaction().await?;
        if let Some(data) = token.and_then(|t| token_string(&t)) {
            if data != self.position.resume_token {
                if let Some((seconds, increment)) = token_cluster_time(&data) {
                    if (seconds, increment) > (self.position.seconds, self.position.increment) {
                        self.position = MongoPosition {
                            seconds,
                            increment,
                            resume_token: data,
                        };
                    }
                }
            }
        }
        self.close_transaction().await?;
        self.out.stats().record_idle();
        Ok(())
    }

    async fn begin(&mut self, h: &EventHeader) -> Step<()> {
        // A different server transaction (or a single write) ends the open one.
        if self.out.in_transaction() && (h.txn.is_none() || h.txn != self.txn_key) {
            self.close_transaction().await?;
        }
        if !self.out.in_transaction() {
            self.txn_key = h.txn.clone();
            self.out
                .push(ChangeEvent::Begin(Begin {
                    xid: None,
                    commit_time: None,
                }))
                .await?;
        }
        self.txn_time = Some(event_time(h));
        Ok(())
    }

    /// An event of an internal document (a backfill watermark or signal) that `act` hands
    /// to the emitter; no row. Inside a multi-document transaction it joins that transaction
    /// (and takes effect at its commit); a single write ends any open transaction and gets a
    /// keepalive at its own position: the boundary where the backfill machinery acts (a chunk
    /// whose high watermark this is goes out right after it).
    async fn internal(&mut self, h: &EventHeader, act: impl FnOnce(&mut Emitter)) -> Step<()> {
        if h.txn.is_some() {
            self.begin(h).await?;
            act(&mut self.out);
            self.advance(h);
            return Ok(());
        }
        if self.out.in_transaction() {
            self.close_transaction().await?;
        }
        act(&mut self.out);
        self.advance(h);
        self.close_transaction().await
    }

    /// A chunk of `ns` went out under a schema without fields the stream learned while it was
    /// in flight (the core emits a chunk under the schema it was read with): the stream
    /// announces its schema again before its next row, and the collection is read again, so
    /// a host that dropped those columns gets their values back.
    ///
    /// Once per collection and stream run: a collection whose documents keep gaining new
    /// top-level fields would otherwise be read again and again.
    fn reread_stale(&mut self, (db, coll): Ns) {
        let table = self.selection.table(&db, &coll);
        self.shapes.with(&db, &coll, |s| s.mark_changed());
        if !self.rereads.insert((db, coll)) {
            tracing::warn!(
                "backfill of {table}: the stream learned new fields of it while a chunk was in flight; a re-read of it was already requested in this run (once per run): on a host that drops columns missing from a chunk's schema, values of such fields on documents that re-read has passed stay missing until those documents change"
            );
            return;
        }
        tracing::warn!(
            "backfill of {table}: the stream learned new fields of it while a chunk was in flight; reading it again"
        );
        self.out.backfill_added_table(table);
    }

    fn advance(&mut self, h: &EventHeader) {
        self.position = h.position();
        if self.out.in_transaction() {
            self.txn_time = Some(event_time(h));
        }
    }

    async fn handle(&mut self, raw: RawDocumentBuf) -> Step<Flow> {
        let first = header(&raw)?;
        let Some(event) = self.reassembler.push(raw, first.split)? else {
            return Ok(Flow::Continue);
        };
        let h = if first.split.is_some_and(|s| s.of > 1) {
            header(&event)?
        } else {
            first
        };
        let flow = self.dispatch(&h, &event).await?;
        // A write outside a multi-document transaction is a transaction of its own.
        if self.out.in_transaction() && self.txn_key.is_none() {
            self.close_transaction().await?;
        }
        Ok(flow)
    }

    async fn dispatch(&mut self, h: &EventHeader, event: &RawDocument) -> Step<Flow> {
        let db = h.db.clone().unwrap_or_default();
        let coll = h.coll.clone().unwrap_or_default();
        match h.op {
            Operation::Insert | Operation::Update | Operation::Replace | Operation::Delete => {
                let internal = db == self.selection.checkpoint_database();
                if internal && coll == CHECKPOINTS_COLLECTION {
                    if h.op == Operation::Insert {
                        match watermark_of(event)? {
                            Some(mark) => {
                                let stale = mark
                                    .strip_prefix("high:")
                                    .and_then(|m| self.shapes.chunk_passed(m));
                                self.internal(h, |out| out.backfill_watermark(&mark))
                                    .await?;
                                if let Some(ns) = stale {
                                    self.reread_stale(ns);
                                }
                            }
                            None => {
                                self.begin(h).await?;
                                self.out
                                    .push(ChangeEvent::CheckpointObserved(
                                        h.position().to_checkpoint(),
                                    ))
                                    .await?;
                            }
                        }
                    }
                } else if internal && coll == SIGNALS_COLLECTION {
                    if h.op == Operation::Insert {
                        if let Some(signal) = signal_of(event)? {
                            self.internal(h, |out| {
                                out.backfill_signal(&signal.id, &signal.kind, &signal.tables)
                            })
                            .await?;
                        }
                    }
                } else if self.selection.contains(&db, &coll) {
                    let new = self.known.insert((db.clone(), coll.clone()));
                    if new {
                        self.configure_new_collection(&db, &coll).await;
                    }
                    self.begin(h).await?;
                    if new {
                        // A collection entering the selection is read through a backfill
                        // (never blocking the other tables), the rule for late tables of
                        // every connector. For one created while streaming this repeats what
                        // the stream carries, harmlessly: chunk rows are the images at their
                        // high watermark.
                        self.out
                            .backfill_added_table(self.selection.table(&db, &coll));
                    }
                    self.row_event(h, &db, &coll, event).await?;
                }
                self.advance(h);
            }
            Operation::Drop => self.drop_collection(h, &db, &coll).await?,
            Operation::DropDatabase => self.drop_database(h, &db).await?,
            Operation::Rename => self.rename(h, &db, &coll, event).await?,
            Operation::Invalidate => {
                self.advance(h);
                self.close_transaction().await?;
                self.out.flush().await?;
                return Ok(Flow::Reopen);
            }
            Operation::Other => self.advance(h),
        }
        Ok(Flow::Continue)
    }

    /// A selected collection created while the stream runs gets post-images in
    /// `auto_configure` mode as soon as its first event is seen. An update committed before
    /// that has no post-image and fails the stream (`NoMatchingDocument`, reported as
    /// [`ErrorKind::Prerequisite`](powersync_source_core::ErrorKind::Prerequisite)).
    async fn configure_new_collection(&self, db: &str, coll: &str) {
        if self.config.post_images() != PostImages::AutoConfigure {
            return;
        }
        let db = self.client.database(db);
        let command = mongodb::bson::doc! {"collMod": coll, "changeStreamPreAndPostImages": {"enabled": true}};
        if let Err(e) = db.run_command(command).await {
            tracing::warn!(database = db.name(), collection = coll, error = %e, "could not enable changeStreamPreAndPostImages on a new collection");
        }
    }

    async fn row_event(
        &mut self,
        h: &EventHeader,
        db: &str,
        coll: &str,
        event: &RawDocument,
    ) -> Step<()> {
        let full = document_field(event, "fullDocument")?;
        let before = document_field(event, "fullDocumentBeforeChange")?;
        let converted = self
            .shapes
            .with(db, coll, |shape| -> Result<_, SourceError> {
                let Some((op, mut old, old_image, mut new)) =
                    convert(shape, h.op, full, before, event, coll)?
                else {
                    return Ok(None);
                };
                // A later image may have added columns: pad earlier rows to the final width.
                let width = shape.schema().columns.len();
                let fill = if old_image == OldImage::Full {
                    Value::Null
                } else {
                    Value::Unchanged
                };
                if let Some(old) = old.as_mut() {
                    pad(old, width, fill);
                }
                if let Some(new) = new.as_mut() {
                    pad(new, width, Value::Null);
                }
                let changed = shape.take_changed();
                let table = shape.schema().clone();
                Ok(Some((op, old, old_image, new, changed, table)))
            })?;
        let Some((op, old, old_image, new, changed, table)) = converted else {
            return Ok(());
        };
        if let Some(schema) = changed {
            self.out.push(ChangeEvent::Schema(schema)).await?;
        }
        self.out
            .push(ChangeEvent::Row(RowChange {
                op,
                table,
                old,
                old_image,
                new,
                snapshot: false,
            }))
            .await
    }
}

/// A row event's change under `shape`: (op, old row, old image kind, new row); `None` for an
/// update whose document is already gone.
type Converted = (Op, Option<Row>, OldImage, Option<Row>);

fn convert(
    shape: &mut CollectionShape,
    op: Operation,
    full: Option<&RawDocument>,
    before: Option<&RawDocument>,
    event: &RawDocument,
    coll: &str,
) -> Result<Option<Converted>, SourceError> {
    Ok(Some(match op {
        Operation::Insert => {
            let full = full.ok_or_else(|| {
                SourceError::decode(format!("insert into {coll} without fullDocument"))
            })?;
            let new = shape.row(full)?;
            (Op::Insert, None, OldImage::None, Some(new))
        }
        Operation::Update | Operation::Replace => {
            let Some(full) = full else {
                // updateLookup found no document: it was deleted after this update, and its
                // delete follows in the stream.
                tracing::debug!(
                    collection = coll,
                    "update without a current document; its delete follows"
                );
                return Ok(None);
            };
            let (old, image) = match before {
                Some(pre) => (shape.row(pre)?, OldImage::Full),
                None => (
                    shape.key_row_from_document_key(document_key(event)?)?,
                    OldImage::Key,
                ),
            };
            let new = shape.row(full)?;
            (Op::Update, Some(old), image, Some(new))
        }
        _ => {
            let (old, image) = match before {
                Some(pre) => (shape.row(pre)?, OldImage::Full),
                None => (
                    shape.key_row_from_document_key(document_key(event)?)?,
                    OldImage::Key,
                ),
            };
            (Op::Delete, Some(old), image, None)
        }
    }))
}

fn pad(row: &mut Row, width: usize, fill: Value) {
    let values = row.values_mut();
    if values.len() < width {
        values.resize(width, fill);
    }
}
