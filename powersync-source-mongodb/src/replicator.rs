//! The task behind a [`ChangeStream`](powersync_source_core::ChangeStream): snapshot, then
//! change stream, with reconnects. The snapshot reading lives in [`snapshot`].

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use mongodb::bson::raw::{RawDocument, RawDocumentBuf};
use mongodb::bson::{doc, Bson, Document};
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream as DriverStream;
use mongodb::options::{FullDocumentBeforeChangeType, FullDocumentType};
use mongodb::Client;
use powersync_source_core::position::MongoPosition;
use powersync_source_core::{
    Backoff, Begin, ChangeBatch, ChangeEvent, Commit, OldImage, Op, Position, Result, RetryPolicy,
    Row, RowChange, SnapshotResume, SourceError, StreamStats, Truncate, UnixMicros, Value,
};
use tokio::sync::mpsc;

mod snapshot;

use crate::catalog::{list_collections, Selection};
use crate::change_event::{
    document_field, document_key, header, rename_target, EventHeader, Operation, Reassembler,
};
use crate::config::{MongoConfig, PostImages};
use crate::document_row::CollectionShape;
use crate::driver_error::resume_error;
use crate::resume_token::token_cluster_time;
use crate::server_info::CHECKPOINTS_COLLECTION;

/// What the stream does first.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Snapshot the collections not done in `resume`, then stream from its `stream_from`.
    Snapshot(SnapshotResume),
    /// Stream from a position.
    Stream(MongoPosition),
}

/// Why reading stopped without an error.
enum Flow {
    Continue,
    /// The stream was invalidated: reopen after the invalidate token.
    Reopen,
}

pub(crate) struct Replicator {
    pub client: Client,
    pub config: MongoConfig,
    pub selection: Selection,
    pub tx: mpsc::Sender<Result<ChangeBatch>>,
    pub stats: StreamStats,
    pub retry: RetryPolicy,
    pub silence: Duration,
    pub split_events: bool,
    shapes: HashMap<String, CollectionShape>,
    batch: ChangeBatch,
    in_txn: bool,
    /// The server transaction of the open transaction (`None`: a single write).
    txn_key: Option<(Vec<u8>, i64)>,
    txn_time: Option<UnixMicros>,
    /// Position after the last event handled.
    position: MongoPosition,
    /// Position of the last checkpoint emitted (commit, keepalive, snapshot done).
    emitted: MongoPosition,
    reassembler: Reassembler,
    known: BTreeSet<String>,
}

/// The pipeline shared by the replication stream and the checkpoint writer, so both see the
/// same resume tokens.
pub(crate) fn pipeline(selection: &Selection, split_events: bool) -> Vec<Document> {
    let mut stages = Vec::new();
    if !selection.names().is_empty() {
        let mut watched: Vec<Bson> = selection
            .names()
            .iter()
            .map(|n| Bson::from(n.as_str()))
            .collect();
        let targets = watched.clone();
        watched.push(Bson::from(CHECKPOINTS_COLLECTION));
        stages.push(doc! {"$match": {"$or": [
            {"ns.coll": {"$in": watched}},
            {"to.coll": {"$in": targets}},
            {"operationType": {"$in": ["dropDatabase", "invalidate"]}},
        ]}});
    }
    if split_events {
        stages.push(doc! {"$changeStreamSplitLargeEvent": {}});
    }
    stages
}

/// A driver resume token from its `_data` string.
pub(crate) fn resume_token(data: &str) -> Result<ResumeToken> {
    mongodb::bson::from_bson(Bson::Document(doc! {"_data": data}))
        .map_err(|e| SourceError::config(format!("resume token `{data}`: {e}")))
}

fn event_time(h: &EventHeader) -> UnixMicros {
    UnixMicros(i64::from(h.cluster_time.time) * 1_000_000)
}

impl Replicator {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: Client,
        config: MongoConfig,
        selection: Selection,
        tx: mpsc::Sender<Result<ChangeBatch>>,
        stats: StreamStats,
        retry: RetryPolicy,
        silence: Duration,
        split_events: bool,
        start: MongoPosition,
    ) -> Self {
        Replicator {
            client,
            config,
            selection,
            tx,
            stats,
            retry,
            silence,
            split_events,
            shapes: HashMap::new(),
            batch: ChangeBatch::default(),
            in_txn: false,
            txn_key: None,
            txn_time: None,
            position: start.clone(),
            emitted: start,
            reassembler: Reassembler::default(),
            known: BTreeSet::new(),
        }
    }

    /// Runs until the host drops the stream or a final error.
    pub(crate) async fn run(mut self, plan: Plan) {
        let result = async {
            if let Plan::Snapshot(resume) = plan {
                self.initial_snapshot(resume).await?;
            }
            self.stream().await
        }
        .await;
        if let Err(e) = result {
            if !self.tx.is_closed() {
                let _ = self.flush().await;
                let _ = self.tx.send(Err(e)).await;
            }
        }
    }

    async fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(
            &mut self.batch,
            ChangeBatch::with_capacity(self.config.batch_events().min(4096)),
        );
        self.tx
            .send(Ok(batch))
            .await
            .map_err(|_| SourceError::connection("the host dropped the stream"))
    }

    async fn push(&mut self, event: ChangeEvent) -> Result<()> {
        self.batch.push(event);
        if self.batch.len() >= self.config.batch_events() && !self.in_txn {
            self.flush().await?;
        }
        Ok(())
    }

    fn shape(&mut self, coll: &str) -> &mut CollectionShape {
        let table = self.selection.table(coll);
        self.shapes
            .entry(coll.to_owned())
            .or_insert_with(|| CollectionShape::new(table))
    }

    // ---------------------------------------------------------------- streaming

    async fn open(&self) -> Result<DriverStream<RawDocumentBuf>> {
        let db = self.client.database(self.selection.database());
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
        let token = resume_token(&self.emitted.resume_token)?;
        let stream = db
            .watch()
            .pipeline(pipeline(&self.selection, self.split_events))
            .full_document(full_document)
            .full_document_before_change(before)
            // startAfter (4.2+) also accepts the token of an invalidate event.
            .start_after(token)
            .max_await_time(self.config.max_await())
            .await
            .map_err(|e| {
                resume_error(
                    format!(
                        "opening the change stream of {} after {}",
                        db.name(),
                        self.emitted.to_checkpoint()
                    ),
                    e,
                )
            })?;
        Ok(stream.with_type::<RawDocumentBuf>())
    }

    async fn stream(&mut self) -> Result<()> {
        if self.known.is_empty() {
            let db = self.client.database(self.selection.database());
            for info in list_collections(&db).await? {
                if self
                    .selection
                    .contains(self.selection.database(), &info.name)
                {
                    self.known.insert(info.name);
                }
            }
        }
        let mut backoff: Option<Backoff> = None;
        loop {
            let outcome = match self.open().await {
                Ok(mut cs) => self.pump(&mut cs, &mut backoff).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(Flow::Reopen) | Ok(Flow::Continue) => continue,
                Err(e) => {
                    if self.tx.is_closed() {
                        return Ok(());
                    }
                    let b = backoff.get_or_insert_with(|| self.retry.backoff());
                    let Some(delay) = b.next_delay(&e) else {
                        return Err(e);
                    };
                    tracing::warn!(error = %e, ?delay, "change stream failed; resuming from the last checkpoint");
                    self.abort_transaction().await?;
                    self.stats.record_reconnect();
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Drops what was read after the last emitted checkpoint; the server sends it again.
    async fn abort_transaction(&mut self) -> Result<()> {
        if self.in_txn {
            self.batch.push(ChangeEvent::Abort);
            self.in_txn = false;
            // Schema events inside the discarded transaction are discarded too: send again.
            for shape in self.shapes.values_mut() {
                shape.mark_changed();
            }
        }
        self.position = self.emitted.clone();
        self.reassembler.clear();
        self.flush().await
    }

    async fn pump(
        &mut self,
        cs: &mut DriverStream<RawDocumentBuf>,
        backoff: &mut Option<Backoff>,
    ) -> Result<Flow> {
        loop {
            let next = tokio::time::timeout(self.silence, cs.next_if_any()).await;
            match next {
                Err(_) => {
                    return Err(SourceError::connection(format!(
                        "the change stream sent nothing for {:?} (half-open connection?)",
                        self.silence
                    )))
                }
                Ok(Err(e)) => return Err(resume_error("reading the change stream", e)),
                Ok(Ok(Some(raw))) => {
                    *backoff = None;
                    self.stats.add_bytes(raw.as_bytes().len() as u64);
                    if let Flow::Reopen = self.handle(raw).await? {
                        return Ok(Flow::Reopen);
                    }
                    if self.batch.len() >= self.config.batch_events() {
                        self.close_transaction();
                        self.flush().await?;
                    }
                }
                Ok(Ok(None)) => {
                    *backoff = None;
                    let token = cs.resume_token();
                    self.idle(token);
                    self.flush().await?;
                }
            }
        }
    }

    /// Ends the open transaction (or, outside one, reports a position advance).
    fn close_transaction(&mut self) {
        if self.in_txn {
            self.in_txn = false;
            self.batch.push(ChangeEvent::Commit(Commit {
                checkpoint: self.position.to_checkpoint(),
                commit_time: self.txn_time,
            }));
            self.stats.record_commit(self.txn_time);
            self.emitted = self.position.clone();
        } else if self.position != self.emitted {
            self.batch
                .push(ChangeEvent::Keepalive(self.position.to_checkpoint()));
            self.emitted = self.position.clone();
        }
    }

    /// An empty `getMore`: commit, then advance to the post-batch resume token when its time
    /// can be read and is later than the last event's.
    fn idle(&mut self, token: Option<ResumeToken>) {
        self.close_transaction();
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
        self.close_transaction();
        self.stats.record_idle();
    }

    fn begin(&mut self, h: &EventHeader) {
        // A different server transaction (or a single write) ends the open one.
        if self.in_txn && (h.txn.is_none() || h.txn != self.txn_key) {
            self.close_transaction();
        }
        if !self.in_txn {
            self.txn_key = h.txn.clone();
            self.in_txn = true;
            self.batch.push(ChangeEvent::Begin(Begin {
                xid: None,
                commit_time: None,
            }));
        }
        self.txn_time = Some(event_time(h));
    }

    fn advance(&mut self, h: &EventHeader) {
        self.position = h.position();
        if self.in_txn {
            self.txn_time = Some(event_time(h));
        }
    }

    async fn handle(&mut self, raw: RawDocumentBuf) -> Result<Flow> {
        let first = header(&raw)?;
        let Some(event) = self.reassembler.push(raw, first.split)? else {
            return Ok(Flow::Continue);
        };
        let h = if first.split.is_some_and(|s| s.of > 1) {
            header(&event)?
        } else {
            first
        };
        let db = h.db.clone().unwrap_or_default();
        let coll = h.coll.clone().unwrap_or_default();
        let ours = db == self.selection.database();
        let flow = self.dispatch(&h, &db, &coll, ours, &event).await?;
        // A write outside a multi-document transaction is a transaction of its own.
        if self.in_txn && self.txn_key.is_none() {
            self.close_transaction();
        }
        Ok(flow)
    }

    async fn dispatch(
        &mut self,
        h: &EventHeader,
        db: &str,
        coll: &str,
        ours: bool,
        event: &RawDocument,
    ) -> Result<Flow> {
        let (db, coll, h) = (db.to_owned(), coll.to_owned(), h);
        match h.op {
            Operation::Insert | Operation::Update | Operation::Replace | Operation::Delete => {
                if ours && coll == CHECKPOINTS_COLLECTION {
                    if h.op == Operation::Insert {
                        self.begin(h);
                        self.batch.push(ChangeEvent::CheckpointObserved(
                            h.position().to_checkpoint(),
                        ));
                    }
                } else if self.selection.contains(&db, &coll) {
                    if self.known.insert(coll.clone()) {
                        self.configure_new_collection(&coll).await;
                    }
                    self.begin(h);
                    self.row_event(h, &coll, event)?;
                }
                self.advance(h);
            }
            Operation::Drop => {
                if self.selection.contains(&db, &coll) {
                    self.begin(h);
                    self.batch.push(ChangeEvent::Truncate(Truncate {
                        tables: vec![self.selection.table(&coll)],
                    }));
                    self.known.remove(&coll);
                    self.shapes.remove(&coll);
                }
                self.advance(h);
            }
            Operation::DropDatabase => {
                if ours && !self.known.is_empty() {
                    self.begin(h);
                    let tables = self.known.iter().map(|c| self.selection.table(c)).collect();
                    self.batch.push(ChangeEvent::Truncate(Truncate { tables }));
                    self.known.clear();
                    self.shapes.clear();
                }
                self.advance(h);
            }
            Operation::Rename => self.rename(h, &db, &coll, event).await?,
            Operation::Invalidate => {
                self.advance(h);
                self.close_transaction();
                self.flush().await?;
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
    async fn configure_new_collection(&self, coll: &str) {
        if self.config.post_images() != PostImages::AutoConfigure {
            return;
        }
        let db = self.client.database(self.selection.database());
        let command = doc! {"collMod": coll, "changeStreamPreAndPostImages": {"enabled": true}};
        if let Err(e) = db.run_command(command).await {
            tracing::warn!(collection = coll, error = %e, "could not enable changeStreamPreAndPostImages on a new collection");
        }
    }

    fn row_event(&mut self, h: &EventHeader, coll: &str, event: &RawDocument) -> Result<()> {
        let full = document_field(event, "fullDocument")?;
        let before = document_field(event, "fullDocumentBeforeChange")?;
        let shape = self.shape(coll);
        let change = match h.op {
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
                    return Ok(());
                };
                let (old, image) = match before {
                    Some(pre) => (shape.row(pre)?, OldImage::Full),
                    None => (shape.key_row(document_key(event)?)?, OldImage::Key),
                };
                let new = shape.row(full)?;
                (Op::Update, Some(old), image, Some(new))
            }
            _ => {
                let (old, image) = match before {
                    Some(pre) => (shape.row(pre)?, OldImage::Full),
                    None => (shape.key_row(document_key(event)?)?, OldImage::Key),
                };
                (Op::Delete, Some(old), image, None)
            }
        };
        let (op, mut old, old_image, mut new) = change;
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
        if let Some(schema) = changed {
            self.batch.push(ChangeEvent::Schema(schema));
        }
        self.batch.push(ChangeEvent::Row(RowChange {
            op,
            table,
            old,
            old_image,
            new,
            snapshot: false,
        }));
        self.stats.add_rows(1);
        Ok(())
    }

    /// A rename empties the source table; a rename *into* a selected collection also copies the
    /// target (read like a snapshot). The commit before the copy carries the position *before*
    /// the rename, so a crash during the copy replays the rename and copies again.
    async fn rename(
        &mut self,
        h: &EventHeader,
        db: &str,
        coll: &str,
        event: &RawDocument,
    ) -> Result<()> {
        let (to_db, to_coll) = rename_target(event)?;
        let from_selected = self.selection.contains(db, coll);
        let to_selected = self.selection.contains(&to_db, &to_coll);
        if !from_selected && !to_selected {
            self.advance(h);
            return Ok(());
        }
        self.close_transaction();
        self.begin(h);
        let mut tables = Vec::new();
        if from_selected {
            tables.push(self.selection.table(coll));
            self.known.remove(coll);
            self.shapes.remove(coll);
        }
        if to_selected {
            tables.push(self.selection.table(&to_coll));
            self.shapes.remove(&to_coll);
        }
        self.batch.push(ChangeEvent::Truncate(Truncate { tables }));
        if to_selected {
            // Commit at the position before the rename (already emitted).
            self.in_txn = false;
            self.batch.push(ChangeEvent::Commit(Commit {
                checkpoint: self.emitted.to_checkpoint(),
                commit_time: Some(event_time(h)),
            }));
            self.flush().await?;
            self.known.insert(to_coll.clone());
            self.snapshot_collection(&to_coll, None).await?;
            self.advance(h);
            self.close_transaction();
        } else {
            self.advance(h);
            self.close_transaction();
        }
        Ok(())
    }
}

fn pad(row: &mut Row, width: usize, fill: Value) {
    let values = row.values_mut();
    if values.len() < width {
        values.resize(width, fill);
    }
}

/// The `_data` of a driver resume token.
pub(crate) fn token_string(token: &ResumeToken) -> Option<String> {
    match mongodb::bson::to_bson(token).ok()? {
        Bson::Document(d) => d.get_str("_data").ok().map(str::to_owned),
        _ => None,
    }
}

/// A shared helper for the source: the stream over the replicator's channel.
pub(crate) fn channel_stream(
    rx: mpsc::Receiver<Result<ChangeBatch>>,
) -> impl futures::Stream<Item = Result<ChangeBatch>> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
