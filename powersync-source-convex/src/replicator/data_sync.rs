//! The Data Sync transport: `POST /api/v1/data/sync` pages as the initial snapshot, then as
//! transactions, re-walked tables as truncate-and-reload transactions.
//!
//! How the server's states map onto the core events (the contract: resume points only where
//! the received state is consistent, nothing lost or applied twice across restarts):
//!
//! - **Initial snapshot.** A new sync walks every selected table (status `snapshotting`) and
//!   may send a document more than once, or a delete, meanwhile; the state is consistent only
//!   at the first `stale`/`upToDate` page. Its pages are the snapshot: `TableStarted` where a
//!   table's truncate arrives, each document as a snapshot row (`Insert`, or `Update` when
//!   the walk sent that document before; a delete as a `Delete`; all with `snapshot: true`,
//!   applied in order), then `TableDone` for every table and `Done` at the first consistent
//!   page. No
//!   `ChunkDone` carries a resume token in between, since a position inside the walk is not a
//!   consistent state: a stream stopped during it starts the snapshot again.
//! - **Log.** Pages with a consistent status and no truncates follow the log: one transaction
//!   per commit timestamp, as with `document_deltas`. The page's last transaction commits at
//!   `convex:v2:<snapshotTs>:<next cursor>`; an earlier one at `convex:v2:<its ts>:<the cursor
//!   that asked for this page>`: resuming there asks for the same page again and drops what is
//!   at or below that timestamp, from every page until one reaches past it (a page read again
//!   may end sooner). Only pages that follow the log are filtered: a page that walks a table,
//!   which a re-read might become, is taken whole, so nothing is lost (rows of the log may
//!   then be applied twice, as the same upserts and deletes, and the next checkpoint may stand
//!   at an earlier timestamp than the one resumed from). A page with no selected rows is a
//!   keepalive when `snapshotTs` moved.
//! - **Re-walks.** When a table appears, enters the selection or is replaced wholesale, the
//!   server sends a truncate for it and walks it again (status `snapshotting` until done):
//!   one transaction from that page to the next consistent one, holding `Truncate` of the
//!   selected tables and every document of the pages in between as upserts (and deletes),
//!   committed at that consistent page. A restart inside it resumes before it; a retried
//!   request inside it (the host was told to abort the open transaction) walks again from
//!   the cursor that asked for its first page.
//! - **Markers.** The marker table is in the selection; a marker write is reported as
//!   `CheckpointObserved` with the checkpoint `write_checkpoint` returned (its `v1` form), at
//!   the next consistent page (after `Done` during the initial sync, after the commit of a
//!   re-walk), when the host holds everything written before it.
//! - **Deleted tables** leave the sync without a word from the server: the periodic check of
//!   the streaming phase reports them as a truncate, as on the legacy transport.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use powersync_source_core::position::ConvexCursor;
use powersync_source_core::runtime::{Step, Stop};
use powersync_source_core::{
    Begin, ChangeEvent, Checkpoint, Commit, Op, Position, SnapshotProgress, SourceError, TableName,
    Truncate,
};

use super::{cursor_checkpoint, nanos_to_micros, Replicator};
use crate::api::{Document, SyncPage, SyncStatus};
use crate::catalog::{CHECKPOINT_TABLE, SCHEMA};
use crate::decode::export_json_to_typed;

/// Where a Data Sync stream starts.
pub(crate) enum SyncStart {
    /// A new sync (the initial snapshot) and its first page, which `start` asked for (so a
    /// deployment without the Data Sync API is known before the stream runs).
    New { first: Box<SyncPage> },
    /// At a checkpoint: ask with `token` and drop what is at or below `ts` from the first page
    /// when it follows the log.
    Resume { ts: i64, token: String },
}

/// A Data Sync checkpoint.
fn sync_checkpoint(ts: i64, token: &str) -> Result<Checkpoint, SourceError> {
    ConvexCursor::data_sync(ts, token)
        .map(|c| c.to_checkpoint())
        .ok_or_else(|| {
            SourceError::decode(format!(
                "Convex sent a Data Sync cursor that cannot be stored (timestamp {ts}, {} bytes)",
                token.len()
            ))
        })
}

/// The hash of a document's table and id, for the documents the initial snapshot sent.
fn doc_key(table: &str, doc: &Document) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    table.hash(&mut h);
    doc.get("_id")
        .and_then(serde_json::Value::as_str)
        .hash(&mut h);
    h.finish()
}

/// A document of a sync page in the typed form the catalog decodes.
fn typed_document(value: Document) -> Result<Document, SourceError> {
    match export_json_to_typed(serde_json::Value::Object(value)) {
        Ok(serde_json::Value::Object(doc)) => Ok(doc),
        Ok(_) => Err(SourceError::decode(
            "a Data Sync value that is not an object",
        )),
        Err(why) => Err(SourceError::decode(format!("a Data Sync value: {why}"))),
    }
}

impl Replicator {
    /// Runs the Data Sync stream until the host drops it or a final error.
    pub(super) async fn data_sync(&mut self, start: SyncStart) -> Step<()> {
        let selection = self.selection.data_sync_selection();
        let (mut token, mut skip_through, mut first, mut snapshotting) = match start {
            SyncStart::New { first } => (None, None, Some(first), true),
            SyncStart::Resume { ts, token } => (Some(token), Some(ts), None, false),
        };
        if snapshotting {
            // A new sync walks every selected table the deployment has (it keeps no resume
            // point inside the walk, so there is nothing finished before to leave out).
            let planned = self
                .selection
                .snapshot_tables(self.catalog.known_tables())
                .len();
            self.out.plan_snapshot(planned);
        }
        let mut emitted_ts = skip_through.unwrap_or(-1);
        // The last consistent timestamp: the log continues above it.
        let mut floor = -1;
        // Rows per table of the initial snapshot.
        let mut started: BTreeMap<String, u64> = BTreeMap::new();
        // The documents the initial snapshot sent (hashes of table and id, freed at `Done`):
        // one sent again is an update, and counts once.
        let mut sent: HashSet<u64> = HashSet::new();
        // Inside a re-walk transaction, and the cursor that asked for its first page.
        let mut rewalk = false;
        let mut rewalk_from: Option<String> = None;
        // Marker writes seen since the last consistent page, reported at the next one: only
        // there has the host everything written before them. (A walk may send old markers
        // too; reporting a checkpoint that passed long ago is harmless.)
        let mut markers: Vec<i64> = Vec::new();
        let mut next_schema_check = Instant::now() + self.config.schema_check_interval();
        let mut replicated: BTreeSet<String> = self
            .catalog
            .known_tables()
            .filter(|t| self.selection.includes(t))
            .cloned()
            .collect();
        loop {
            let asked_with = token.clone();
            let page = match first.take() {
                Some(page) => *page,
                None => {
                    match self
                        .api
                        .data_sync(asked_with.as_deref(), &selection, Some(self.out.stats()))
                        .await
                    {
                        Ok(page) => {
                            self.reconnect.healthy();
                            page
                        }
                        Err(e) => {
                            let open = self.out.in_transaction();
                            // Retryable: the host is told to discard an open transaction.
                            self.reconnect.after_failure(e, &mut self.out).await?;
                            if open && rewalk {
                                // The re-walk's transaction is gone: walk again from its
                                // first page, whose cursor gives the same truncates again.
                                token = rewalk_from.clone();
                                rewalk = false;
                            }
                            continue;
                        }
                    }
                }
            };
            let consistent = page.status.consistent_at();
            let follows_log = consistent.is_some() && page.truncates.is_empty();
            // What a resumed stream already delivered: dropped from pages that follow the log
            // until one reaches past it (a re-read page may end sooner than the first read
            // did); a page that walks a table is taken whole, so nothing is lost.
            let skip = skip_through.filter(|_| follows_log && !snapshotting);
            if !follows_log || consistent.is_some_and(|ts| skip_through.is_some_and(|x| ts >= x)) {
                skip_through = None;
            }
            let next = page.pagination.next_cursor;
            let truncated: Vec<String> = page
                .truncates
                .iter()
                .filter(|t| t.component.is_empty() && self.selection.includes(&t.table))
                .map(|t| t.table.clone())
                .collect();
            if snapshotting {
                for table in &truncated {
                    if !started.contains_key(table) {
                        self.start_table(table).await?;
                        started.insert(table.clone(), 0);
                    }
                }
            } else if !rewalk && !follows_log {
                rewalk = true;
                rewalk_from = asked_with.clone();
                self.out
                    .push(ChangeEvent::Begin(Begin {
                        xid: None,
                        commit_time: None,
                    }))
                    .await?;
            }
            if rewalk && !truncated.is_empty() {
                replicated.extend(truncated.iter().cloned());
                self.out
                    .push(ChangeEvent::Truncate(Truncate {
                        tables: truncated
                            .iter()
                            .map(|t| TableName::new(SCHEMA, t))
                            .collect(),
                    }))
                    .await?;
            }
            // The log part: one transaction per timestamp, in timestamp order.
            let mut open: Option<i64> = None;
            let mut last_ts = floor;
            for v in page.values {
                if !v.component.is_empty() || skip.is_some_and(|s| v.ts <= s) {
                    continue;
                }
                let in_log = !snapshotting && !rewalk;
                if in_log {
                    if v.ts < last_ts {
                        return Err(SourceError::decode(format!(
                            "data sync went backwards: ts {} after {last_ts}",
                            v.ts
                        ))
                        .into());
                    }
                    last_ts = v.ts;
                }
                if v.table == CHECKPOINT_TABLE {
                    if !v.deleted {
                        markers.push(v.ts);
                    }
                    continue;
                }
                if !self.selection.includes(&v.table) {
                    continue;
                }
                let doc = typed_document(v.value)?;
                let (mut change, announce) =
                    self.catalog
                        .row_change(&v.table, &doc, v.deleted, snapshotting)?;
                if snapshotting {
                    if !started.contains_key(&v.table) {
                        self.start_table(&v.table).await?;
                        started.insert(v.table.clone(), 0);
                    }
                    let key = doc_key(&v.table, &doc);
                    if v.deleted {
                        sent.remove(&key);
                    } else if sent.insert(key) {
                        *started.entry(v.table.clone()).or_default() += 1;
                    } else {
                        // A later revision of a document the walk already sent.
                        change.op = Op::Update;
                    }
                } else {
                    replicated.insert(v.table.clone());
                }
                if in_log && open != Some(v.ts) {
                    if let Some(prev) = open {
                        // Resuming here asks for this page again and drops what is at or
                        // below `prev`.
                        let at =
                            match &asked_with {
                                Some(t) => sync_checkpoint(prev, t)?,
                                None => return Err(SourceError::decode(
                                    "data sync: the log followed on the first page of a new sync",
                                )
                                .into()),
                            };
                        self.out
                            .push(ChangeEvent::Commit(Commit {
                                checkpoint: at,
                                commit_time: Some(nanos_to_micros(prev)),
                            }))
                            .await?;
                        emitted_ts = prev;
                    }
                    self.out
                        .push(ChangeEvent::Begin(Begin {
                            xid: None,
                            commit_time: Some(nanos_to_micros(v.ts)),
                        }))
                        .await?;
                    open = Some(v.ts);
                }
                if let Some(schema) = announce {
                    self.out.push(ChangeEvent::Schema(schema)).await?;
                }
                self.out.push(ChangeEvent::Row(change)).await?;
            }
            token = Some(next.clone());
            let Some(ts) = consistent else {
                // Still walking: nothing here is a consistent state yet.
                self.out.flush().await?;
                continue;
            };
            if ts < last_ts {
                return Err(SourceError::decode(format!(
                    "data sync answered snapshotTs {ts} below its last ts {last_ts}"
                ))
                .into());
            }
            floor = ts;
            let at = sync_checkpoint(ts, &next)?;
            if snapshotting {
                self.finish_snapshot(&mut started, at).await?;
                sent = HashSet::new();
                snapshotting = false;
                emitted_ts = ts;
            } else if rewalk {
                self.out
                    .push(ChangeEvent::Commit(Commit {
                        checkpoint: at,
                        commit_time: Some(nanos_to_micros(ts)),
                    }))
                    .await?;
                rewalk = false;
                emitted_ts = ts;
            } else if let Some(t) = open {
                self.out
                    .push(ChangeEvent::Commit(Commit {
                        checkpoint: at,
                        commit_time: Some(nanos_to_micros(t)),
                    }))
                    .await?;
                emitted_ts = ts;
            } else if ts > emitted_ts {
                self.out.push(ChangeEvent::Keepalive(at.clone())).await?;
                emitted_ts = ts;
            }
            for m in std::mem::take(&mut markers) {
                self.out
                    .push(ChangeEvent::CheckpointObserved(cursor_checkpoint(m)?))
                    .await?;
            }
            if Instant::now() >= next_schema_check {
                next_schema_check = Instant::now() + self.config.schema_check_interval();
                let at = sync_checkpoint(ts, &next)?;
                self.check_deleted_tables(&mut replicated, at).await?;
            }
            self.out.flush().await?;
            self.note_acks(ts);
            if matches!(page.status, SyncStatus::UpToDate { .. }) {
                if open.is_none() {
                    self.out.stats().record_idle();
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.config.polling_interval()) => {}
                    _ = self.out.closed() => return Err(Stop::Closed),
                }
            }
        }
    }

    async fn start_table(&mut self, table: &str) -> Step<()> {
        self.out
            .push(ChangeEvent::Snapshot(SnapshotProgress::TableStarted {
                table: TableName::new(SCHEMA, table),
                estimated_rows: None,
            }))
            .await
    }

    /// Ends the initial snapshot at its first consistent page: every selected table done
    /// (those the deployment has but the walk sent nothing for, with 0 rows), then `Done`.
    async fn finish_snapshot(
        &mut self,
        started: &mut BTreeMap<String, u64>,
        at: Checkpoint,
    ) -> Step<()> {
        let tables = self.selection.snapshot_tables(self.catalog.known_tables());
        for table in tables {
            if let Entry::Vacant(slot) = started.entry(table) {
                self.start_table(slot.key()).await?;
                slot.insert(0);
            }
        }
        for (table, rows) in std::mem::take(started) {
            self.out
                .push(ChangeEvent::Snapshot(SnapshotProgress::TableDone {
                    table: TableName::new(SCHEMA, &table),
                    rows,
                }))
                .await?;
        }
        self.out
            .push(ChangeEvent::Snapshot(SnapshotProgress::Done {
                checkpoint: at,
            }))
            .await?;
        self.out.flush().await
    }
}
