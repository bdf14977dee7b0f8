//! The stream task: the pinned snapshot, then `document_deltas` polling.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use powersync_source_core::position::ConvexCursor;
use powersync_source_core::{
    AckReceiver, Begin, ChangeBatch, ChangeEvent, Checkpoint, Commit, Position, Result,
    SnapshotProgress, SnapshotResume, SourceError, StreamStats, TableName, TableProgress, Truncate,
    UnixMicros,
};
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::api::{Api, Document};
use crate::catalog::{parse_json_schemas, Catalog, CHECKPOINT_TABLE, SCHEMA};
use crate::config::ConvexConfig;
use crate::decode::Encoding;
use crate::selection::Selection;

/// Events per batch before it is handed to the host.
const BATCH_EVENTS: usize = 1000;

/// Where the stream task starts.
pub(crate) enum Plan {
    /// Snapshot (from scratch when `snapshot` is `None`), then stream from the snapshot.
    Snapshot {
        snapshot: Option<i64>,
        progress: BTreeMap<String, TableProgress>,
    },
    /// Stream after this cursor.
    Stream { cursor: i64 },
}

/// Connector state carried in [`SnapshotResume::source_state`].
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct SnapshotState {
    /// The pinned `list_snapshot` timestamp.
    pub snapshot: i64,
}

pub(crate) struct Replicator {
    pub api: Api,
    pub config: ConvexConfig,
    pub selection: Selection,
    pub catalog: Catalog,
    pub tx: mpsc::Sender<Result<ChangeBatch>>,
    pub stats: StreamStats,
    pub acks: AckReceiver,
    batch: ChangeBatch,
}

/// The host dropped the stream: stop quietly.
struct Closed;

enum Stop {
    Closed,
    Failed(SourceError),
}

impl From<Closed> for Stop {
    fn from(_: Closed) -> Self {
        Stop::Closed
    }
}
impl From<SourceError> for Stop {
    fn from(e: SourceError) -> Self {
        Stop::Failed(e)
    }
}

fn cursor_checkpoint(c: i64) -> Result<Checkpoint> {
    ConvexCursor::new(c)
        .map(|c| c.to_checkpoint())
        .ok_or_else(|| SourceError::decode(format!("Convex sent a negative cursor {c}")))
}

fn nanos_to_micros(ts: i64) -> UnixMicros {
    UnixMicros(ts / 1000)
}

fn doc_str<'a>(doc: &'a Document, field: &str) -> Option<&'a str> {
    doc.get(field).and_then(Json::as_str)
}

fn doc_ts(doc: &Document) -> Result<i64> {
    doc.get("_ts")
        .and_then(Json::as_i64)
        .ok_or_else(|| SourceError::decode("a document without an integer `_ts`"))
}

impl Replicator {
    pub(crate) fn new(
        api: Api,
        config: ConvexConfig,
        selection: Selection,
        catalog: Catalog,
        tx: mpsc::Sender<Result<ChangeBatch>>,
        stats: StreamStats,
        acks: AckReceiver,
    ) -> Replicator {
        Replicator {
            api,
            config,
            selection,
            catalog,
            tx,
            stats,
            acks,
            batch: ChangeBatch::with_capacity(64),
        }
    }

    pub(crate) async fn run(mut self, plan: Plan) {
        let outcome = async {
            let cursor = match plan {
                Plan::Snapshot { snapshot, progress } => self.snapshot(snapshot, progress).await?,
                Plan::Stream { cursor } => cursor,
            };
            self.stream(cursor).await
        }
        .await;
        if let Err(Stop::Failed(e)) = outcome {
            let _ = self.flush().await;
            let _ = self.tx.send(Err(e)).await;
        }
    }

    async fn push(&mut self, event: ChangeEvent) -> std::result::Result<(), Closed> {
        self.batch.push(event);
        if self.batch.len() >= BATCH_EVENTS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::result::Result<(), Closed> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, ChangeBatch::with_capacity(64));
        self.tx.send(Ok(batch)).await.map_err(|_| Closed)
    }

    /// Runs `call` with the retry policy, counting reconnects.
    async fn retrying<T, F, Fut>(&mut self, mut call: F) -> std::result::Result<T, Stop>
    where
        F: FnMut(Api, StreamStats) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut backoff = self.config.retry().backoff();
        loop {
            match call(self.api.clone(), self.stats.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => match backoff.next_delay(&e) {
                    Some(delay) => {
                        tracing::warn!("Convex: {e}; retrying in {delay:?}");
                        self.stats.record_reconnect();
                        // Hand over what is ready while waiting.
                        self.flush().await?;
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.tx.closed() => return Err(Stop::Closed),
                        }
                    }
                    None => return Err(Stop::Failed(e)),
                },
            }
        }
    }

    async fn snapshot(
        &mut self,
        pinned: Option<i64>,
        mut progress: BTreeMap<String, TableProgress>,
    ) -> std::result::Result<i64, Stop> {
        let encoding = self.catalog.encoding();
        let tables = self.selection.snapshot_tables(self.catalog.known_tables());
        let mut snapshot = pinned;
        for table in tables {
            let key = TableName::new(SCHEMA, &table).to_string();
            let (mut cursor, mut rows) = match progress.get(&key) {
                Some(TableProgress::Done { .. }) => continue,
                Some(TableProgress::Partial { after_key, rows }) => {
                    (Some(after_key.clone()), *rows)
                }
                None => (None, 0),
            };
            self.push(ChangeEvent::Snapshot(SnapshotProgress::TableStarted {
                table: TableName::new(SCHEMA, &table),
                estimated_rows: None,
            }))
            .await?;
            loop {
                let (t, c, s) = (table.clone(), cursor.clone(), snapshot);
                let page = self
                    .retrying(move |api, stats| {
                        let (t, c) = (t.clone(), c.clone());
                        async move {
                            api.list_snapshot(s, c.as_deref(), &t, encoding, Some(&stats))
                                .await
                        }
                    })
                    .await?;
                match snapshot {
                    None => snapshot = Some(page.snapshot),
                    Some(s) if s != page.snapshot => {
                        return Err(SourceError::history_lost(format!(
                            "list_snapshot of table {table} answered at snapshot {} instead of the pinned {s}",
                            page.snapshot
                        ))
                        .with_hint("the pinned snapshot can no longer be read; start again from the beginning")
                        .into())
                    }
                    Some(_) => {}
                }
                for doc in &page.values {
                    if doc_str(doc, "_table").is_some_and(|t| t != table)
                        || doc_str(doc, "_component").is_some_and(|c| !c.is_empty())
                    {
                        continue;
                    }
                    let (change, announce) = self.catalog.row_change(&table, doc, false, true)?;
                    if let Some(schema) = announce {
                        self.push(ChangeEvent::Schema(schema)).await?;
                    }
                    self.push(ChangeEvent::Row(change)).await?;
                    rows += 1;
                    self.stats.add_rows(1);
                }
                let s = snapshot.unwrap_or(page.snapshot);
                if page.has_more {
                    let next = page.cursor.clone().ok_or_else(|| {
                        SourceError::decode(format!(
                            "list_snapshot of table {table}: hasMore without a cursor"
                        ))
                    })?;
                    progress.insert(
                        key.clone(),
                        TableProgress::Partial {
                            after_key: next.clone(),
                            rows,
                        },
                    );
                    cursor = Some(next);
                } else {
                    progress.insert(key.clone(), TableProgress::Done { rows });
                }
                let resume = SnapshotResume {
                    stream_from: cursor_checkpoint(s)?,
                    tables: progress.clone(),
                    source_state: serde_json::to_string(&SnapshotState { snapshot: s }).ok(),
                };
                self.push(ChangeEvent::Snapshot(SnapshotProgress::ChunkDone {
                    table: TableName::new(SCHEMA, &table),
                    rows_done: rows,
                    estimated_rows: None,
                    resume: Box::new(resume),
                }))
                .await?;
                // Hand each page over with its resume token: the host can store progress as
                // the snapshot goes.
                self.flush().await?;
                if !page.has_more {
                    break;
                }
            }
            self.push(ChangeEvent::Snapshot(SnapshotProgress::TableDone {
                table: TableName::new(SCHEMA, &table),
                rows,
            }))
            .await?;
        }
        let s = match snapshot {
            Some(s) => s,
            // Nothing to read: pin the snapshot on the (tiny) marker table.
            None => {
                self.retrying(move |api, stats| async move {
                    api.list_snapshot(None, None, CHECKPOINT_TABLE, encoding, Some(&stats))
                        .await
                })
                .await?
                .snapshot
            }
        };
        self.push(ChangeEvent::Snapshot(SnapshotProgress::Done {
            checkpoint: cursor_checkpoint(s)?,
        }))
        .await?;
        self.flush().await?;
        Ok(s)
    }

    async fn stream(&mut self, mut cursor: i64) -> std::result::Result<(), Stop> {
        let encoding = self.catalog.encoding();
        let mut last_ts = cursor;
        let mut emitted = cursor;
        let mut next_schema_check = Instant::now() + self.config.schema_check_interval();
        let mut replicated: BTreeSet<String> = self
            .catalog
            .known_tables()
            .filter(|t| self.selection.includes(t))
            .cloned()
            .collect();
        loop {
            let page = self
                .retrying(move |api, stats| async move {
                    api.document_deltas(cursor, encoding, Some(&stats)).await
                })
                .await?;
            if page.cursor < cursor {
                return Err(SourceError::decode(format!(
                    "document_deltas went backwards: cursor {} after {cursor}",
                    page.cursor
                ))
                .into());
            }
            // Fields `json` cannot type yet: refresh json_schemas once for this page.
            let untyped = page.values.iter().any(|d| {
                doc_str(d, "_table").is_some_and(|t| {
                    self.selection.includes(t) && self.catalog.has_untyped_fields(t, d)
                })
            });
            if untyped {
                let map = self
                    .retrying(|api, _| async move { api.json_schemas(Encoding::Json).await })
                    .await?;
                self.catalog.update_types(parse_json_schemas(&map));
            }
            // One transaction per timestamp: every write of a Convex mutation shares its
            // commit timestamp, and no two mutations share one. A transaction that ends
            // before the page does is committed at its own timestamp (resuming after it asks
            // for everything later); the page's last one at the page cursor.
            let mut open: Option<i64> = None;
            let mut any = false;
            let mut markers = Vec::new();
            let mut rows = 0u64;
            for doc in &page.values {
                let ts = doc_ts(doc)?;
                if ts <= cursor || ts < last_ts {
                    return Err(SourceError::decode(format!(
                        "document_deltas went backwards: _ts {ts} after {} (cursor {cursor})",
                        last_ts
                    ))
                    .into());
                }
                last_ts = ts;
                if doc_str(doc, "_component").is_some_and(|c| !c.is_empty()) {
                    continue;
                }
                let table = doc_str(doc, "_table")
                    .ok_or_else(|| SourceError::decode("a delta without `_table`"))?;
                let deleted = doc.get("_deleted").and_then(Json::as_bool).unwrap_or(false);
                if table == CHECKPOINT_TABLE {
                    if !deleted {
                        markers.push(ts);
                    }
                    continue;
                }
                if !self.selection.includes(table) {
                    continue;
                }
                replicated.insert(table.to_string());
                let (change, announce) = self.catalog.row_change(table, doc, deleted, false)?;
                if open != Some(ts) {
                    if let Some(prev) = open {
                        self.commit(prev, prev, &mut rows).await?;
                        emitted = prev;
                    }
                    self.push(ChangeEvent::Begin(Begin {
                        xid: None,
                        commit_time: Some(nanos_to_micros(ts)),
                    }))
                    .await?;
                    open = Some(ts);
                    any = true;
                }
                if let Some(schema) = announce {
                    self.push(ChangeEvent::Schema(schema)).await?;
                }
                self.push(ChangeEvent::Row(change)).await?;
                rows += 1;
            }
            if page.cursor < last_ts {
                return Err(SourceError::decode(format!(
                    "document_deltas answered cursor {} below its last _ts {last_ts}",
                    page.cursor
                ))
                .into());
            }
            cursor = page.cursor;
            if let Some(ts) = open {
                self.commit(cursor, ts, &mut rows).await?;
                emitted = cursor;
            } else if cursor > emitted {
                self.push(ChangeEvent::Keepalive(cursor_checkpoint(cursor)?))
                    .await?;
                emitted = cursor;
            }
            for ts in markers {
                self.push(ChangeEvent::CheckpointObserved(cursor_checkpoint(ts)?))
                    .await?;
            }
            if Instant::now() >= next_schema_check {
                next_schema_check = Instant::now() + self.config.schema_check_interval();
                self.check_deleted_tables(&mut replicated, cursor).await?;
            }
            self.flush().await?;
            self.note_acks(cursor);
            if !page.has_more {
                if !any {
                    self.stats.record_idle();
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.config.polling_interval()) => {}
                    _ = self.tx.closed() => return Err(Stop::Closed),
                }
            }
        }
    }

    /// Commits the open transaction at `position`; `ts` is its commit timestamp.
    async fn commit(
        &mut self,
        position: i64,
        ts: i64,
        rows: &mut u64,
    ) -> std::result::Result<(), Stop> {
        let commit_time = Some(nanos_to_micros(ts));
        self.push(ChangeEvent::Commit(Commit {
            checkpoint: cursor_checkpoint(position)?,
            commit_time,
        }))
        .await?;
        self.stats.add_rows(std::mem::take(rows));
        self.stats.record_commit(commit_time);
        Ok(())
    }

    /// Tables deleted in the dashboard send no deltas: compare `json_schemas` with the tables
    /// this stream replicates, and report each vanished one as a truncate at the current
    /// cursor (its rows are gone), so the host's copy does not silently go stale.
    async fn check_deleted_tables(
        &mut self,
        replicated: &mut BTreeSet<String>,
        cursor: i64,
    ) -> std::result::Result<(), Stop> {
        let map = match self.api.json_schemas(Encoding::Json).await {
            Ok(map) => map,
            Err(e) if e.is_retryable() => {
                tracing::warn!("Convex schema check skipped: {e}");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let types = parse_json_schemas(&map);
        let gone: Vec<String> = replicated
            .iter()
            .filter(|t| !types.contains_key(*t))
            .cloned()
            .collect();
        self.catalog.update_types(types);
        if gone.is_empty() {
            return Ok(());
        }
        for t in &gone {
            tracing::warn!(
                "Convex table {SCHEMA}.{t} was deleted (it is gone from json_schemas); reporting a truncate"
            );
            replicated.remove(t);
            self.catalog.forget(t);
        }
        self.push(ChangeEvent::Begin(Begin {
            xid: None,
            commit_time: None,
        }))
        .await?;
        self.push(ChangeEvent::Truncate(Truncate {
            tables: gone.iter().map(|t| TableName::new(SCHEMA, t)).collect(),
        }))
        .await?;
        self.push(ChangeEvent::Commit(Commit {
            checkpoint: cursor_checkpoint(cursor)?,
            commit_time: None,
        }))
        .await?;
        self.stats.record_commit(None);
        Ok(())
    }

    /// Acknowledgements release nothing on Convex (history is kept for the deployment's
    /// retention window whatever readers do); the stream only warns when the host's durable
    /// position falls far behind, since resuming from beyond the window is `HistoryLost`.
    fn note_acks(&mut self, head: i64) {
        const WARN_AFTER: Duration = Duration::from_secs(3 * 24 * 3600);
        if let Some(acked) = self.acks.latest() {
            if let Ok(pos) = ConvexCursor::from_checkpoint(&acked) {
                let behind = Duration::from_nanos(head.saturating_sub(pos.get()).max(0) as u64);
                if behind > WARN_AFTER {
                    tracing::warn!(
                        "the acknowledged Convex position {acked} is {behind:?} behind the stream; Convex keeps deltas only for its retention window"
                    );
                }
            }
        }
    }
}
