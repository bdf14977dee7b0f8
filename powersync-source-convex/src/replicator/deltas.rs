//! The streaming phase: `document_deltas` pages as transactions, keepalives and markers, the
//! periodic check for deleted tables, acknowledgements.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use powersync_source_core::position::ConvexCursor;
use powersync_source_core::runtime::{Step, Stop};
use powersync_source_core::{
    Begin, ChangeEvent, Checkpoint, Commit, Position, SourceError, TableName, Truncate,
};
use serde_json::Value as Json;

use super::{cursor_checkpoint, doc_str, doc_ts, nanos_to_micros, Replicator};
use crate::catalog::{parse_json_schemas, CHECKPOINT_TABLE, SCHEMA};
use crate::decode::Encoding;
use crate::discovery::{is_schema_refusal, JSON_SCHEMAS_HINT};

impl Replicator {
    pub(super) async fn stream(&mut self, mut cursor: i64) -> Step<()> {
        let encoding = self.catalog.encoding();
        let mut last_ts = cursor;
        let mut emitted = cursor;
        let mut next_schema_check = Instant::now() + self.config.schema_check_interval();
        let mut schemas_retry_at = Instant::now();
        let mut replicated: BTreeSet<String> = self
            .catalog
            .known_tables()
            .filter(|t| self.selection.includes(t))
            .cloned()
            .collect();
        loop {
            let page = self
                .retrying(move |api, stats| async move {
                    api.document_deltas(cursor, None, encoding, Some(&stats))
                        .await
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
            if untyped && Instant::now() >= schemas_retry_at {
                match self.json_schemas().await? {
                    Some(types) => self.catalog.update_types(types),
                    // Refused: the new fields stay untyped; asking again for every page would
                    // only repeat the refusal, so wait for the next schema check.
                    None => schemas_retry_at = Instant::now() + self.config.schema_check_interval(),
                }
            }
            // One transaction per timestamp: every write of a Convex mutation shares its
            // commit timestamp, and no two mutations share one. A transaction that ends
            // before the page does is committed at its own timestamp (resuming after it asks
            // for everything later); the page's last one at the page cursor.
            let mut open: Option<i64> = None;
            let mut any = false;
            let mut markers = Vec::new();
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
                let table = table.to_string();
                self.track_row(&table, doc, deleted);
                if open != Some(ts) {
                    if let Some(prev) = open {
                        self.commit(prev, prev).await?;
                        emitted = prev;
                    }
                    self.out
                        .push(ChangeEvent::Begin(Begin {
                            xid: None,
                            commit_time: Some(nanos_to_micros(ts)),
                        }))
                        .await?;
                    open = Some(ts);
                    any = true;
                }
                if let Some(schema) = announce {
                    self.out.push(ChangeEvent::Schema(schema)).await?;
                }
                self.out.push(ChangeEvent::Row(change)).await?;
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
                self.commit(cursor, ts).await?;
                emitted = cursor;
            } else if cursor > emitted {
                self.out
                    .push(ChangeEvent::Keepalive(cursor_checkpoint(cursor)?))
                    .await?;
                emitted = cursor;
            }
            for ts in markers {
                self.out
                    .push(ChangeEvent::CheckpointObserved(cursor_checkpoint(ts)?))
                    .await?;
            }
            if Instant::now() >= next_schema_check {
                next_schema_check = Instant::now() + self.config.schema_check_interval();
                self.check_deleted_tables(&mut replicated, cursor_checkpoint(cursor)?)
                    .await?;
                self.check_replaced_tables(cursor).await?;
            }
            self.out.flush().await?;
            self.note_acks(cursor);
            if !page.has_more {
                if !any {
                    self.out.stats().record_idle();
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.config.polling_interval()) => {}
                    _ = self.out.closed() => return Err(Stop::Closed),
                }
            }
        }
    }

    /// Commits the open transaction at `position`; `ts` is its commit timestamp.
    pub(super) async fn commit(&mut self, position: i64, ts: i64) -> Step<()> {
        self.out
            .push(ChangeEvent::Commit(Commit {
                checkpoint: cursor_checkpoint(position)?,
                commit_time: Some(nanos_to_micros(ts)),
            }))
            .await
    }

    /// `json_schemas` as field types, retrying transient failures; `None` when Convex refuses
    /// the deployment for one table's shape (see [`crate::discovery`]), logged once per call.
    async fn json_schemas(&mut self) -> Step<Option<crate::catalog::TypeMap>> {
        let map = self
            .retrying(|api, _| async move {
                match api.json_schemas(Encoding::Json).await {
                    Ok(map) => Ok(Some(map)),
                    Err(e) if is_schema_refusal(&e) => {
                        tracing::warn!("Convex field types unavailable: {e} ({JSON_SCHEMAS_HINT})");
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(map.map(|m| parse_json_schemas(&m)))
    }

    /// Tables deleted in the dashboard send no deltas: compare the deployment's tables
    /// (`get_table_column_names`, which no table's shape can make fail) with the tables this
    /// stream replicates, and report each vanished one as a truncate at the current cursor
    /// (its rows are gone), so the host's copy does not silently go stale. The check is
    /// skipped, not fatal, when the deployment cannot answer it right now. With
    /// `format=json` the field types are refreshed on the way; the typed encoding needs no
    /// `json_schemas` call while streaming.
    pub(super) async fn check_deleted_tables(
        &mut self,
        replicated: &mut BTreeSet<String>,
        at: Checkpoint,
    ) -> Step<()> {
        let tables: BTreeSet<String> = match self.api.table_columns().await {
            Ok(Some(columns)) => columns.into_keys().collect(),
            // A backend without get_table_column_names: json_schemas lists the tables.
            Ok(None) => match self.api.json_schemas(Encoding::Json).await {
                Ok(map) => map.keys().cloned().collect(),
                Err(e) if e.is_retryable() || is_schema_refusal(&e) => {
                    tracing::warn!("Convex schema check skipped: {e}");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            },
            Err(e) if e.is_retryable() => {
                tracing::warn!("Convex schema check skipped: {e}");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if self.catalog.encoding() == Encoding::Json {
            if let Some(types) = self.json_schemas().await? {
                self.catalog.update_types(types);
            }
        }
        let types = tables;
        let gone: Vec<String> = replicated
            .iter()
            .filter(|t| !types.contains(*t))
            .cloned()
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        for t in &gone {
            tracing::warn!(
                "Convex table {SCHEMA}.{t} was deleted (it is gone from the deployment's tables); reporting a truncate"
            );
            replicated.remove(t);
            self.catalog.forget(t);
            self.row_ids.remove(t);
        }
        self.out
            .push(ChangeEvent::Begin(Begin {
                xid: None,
                commit_time: None,
            }))
            .await?;
        self.out
            .push(ChangeEvent::Truncate(Truncate {
                tables: gone.iter().map(|t| TableName::new(SCHEMA, t)).collect(),
            }))
            .await?;
        self.out
            .push(ChangeEvent::Commit(Commit {
                checkpoint: at,
                commit_time: None,
            }))
            .await
    }

    /// Tables replaced wholesale (`npx convex import --replace`, streaming import's
    /// `replace_tables` / `clear_tables`) send no deletes for their old rows: compare the
    /// deployment's count of each table read in full, at the stream's cursor, with the rows
    /// the host holds, and on a difference truncate the table and read it again at the cursor
    /// (one transaction), so the host's copy does not silently keep stale rows. A replacement
    /// that keeps the count and whose new rows all arrived as deltas leaves nothing stale.
    async fn check_replaced_tables(&mut self, cursor: i64) -> Step<()> {
        let mut replaced = Vec::new();
        let tables: Vec<(String, usize)> = self
            .row_ids
            .iter()
            .map(|(t, ids)| (t.clone(), ids.len()))
            .collect();
        for (table, held) in tables {
            match self.api.table_size_at(&table, cursor).await {
                Ok(n) if n as usize != held => {
                    tracing::warn!(
                        "Convex table {SCHEMA}.{table} has {n} rows at cursor {cursor} but the stream holds {held}: it was replaced without deletes; reading it again"
                    );
                    replaced.push(table);
                }
                Ok(_) => self.table_sizes_refused = false,
                Err(e) if e.is_retryable() => {
                    tracing::warn!("Convex replaced-table check skipped: {e}");
                    return Ok(());
                }
                // A count at an old cursor may be refused (a query timestamp too far in the
                // past), or the system query missing on an old backend: skip this round, warn
                // once, try again at the next check.
                Err(e) => {
                    if !self.table_sizes_refused {
                        tracing::warn!(
                            "Convex replaced-table check skipped (until it succeeds, a table replaced wholesale keeps stale rows): {e}"
                        );
                        self.table_sizes_refused = true;
                    }
                    return Ok(());
                }
            }
        }
        if replaced.is_empty() {
            return Ok(());
        }
        // A failed page inside the transaction makes the host discard it (Abort): start the
        // whole transaction again, truncate included.
        'transaction: loop {
            self.out
                .push(ChangeEvent::Begin(Begin {
                    xid: None,
                    commit_time: None,
                }))
                .await?;
            self.out
                .push(ChangeEvent::Truncate(Truncate {
                    tables: replaced.iter().map(|t| TableName::new(SCHEMA, t)).collect(),
                }))
                .await?;
            for table in &replaced {
                self.row_ids.insert(table.clone(), Default::default());
                if !self.read_table_at(table, cursor).await? {
                    continue 'transaction;
                }
            }
            break;
        }
        self.out
            .push(ChangeEvent::Commit(Commit {
                checkpoint: cursor_checkpoint(cursor)?,
                commit_time: None,
            }))
            .await
    }

    /// Reads a table as of `snapshot` (the stream's cursor, so the deltas after it apply on
    /// top), every row as an upsert inside the open transaction. `false` when a page failed
    /// and the host was told to discard the transaction (the caller starts it again).
    async fn read_table_at(&mut self, table: &str, snapshot: i64) -> Step<bool> {
        let encoding = self.catalog.encoding();
        let mut page_cursor: Option<String> = None;
        loop {
            let page = match self
                .api
                .list_snapshot(
                    Some(snapshot),
                    page_cursor.as_deref(),
                    table,
                    encoding,
                    Some(self.out.stats()),
                )
                .await
            {
                Ok(page) => {
                    self.reconnect.healthy();
                    page
                }
                Err(e) => {
                    let open = self.out.in_transaction();
                    self.reconnect.after_failure(e, &mut self.out).await?;
                    if open {
                        return Ok(false);
                    }
                    continue;
                }
            };
            for doc in &page.values {
                if doc_str(doc, "_table").is_some_and(|t| t != table)
                    || doc_str(doc, "_component").is_some_and(|c| !c.is_empty())
                {
                    continue;
                }
                let (change, announce) = self.catalog.row_change(table, doc, false, false)?;
                self.track_row(table, doc, false);
                if let Some(schema) = announce {
                    self.out.push(ChangeEvent::Schema(schema)).await?;
                }
                self.out.push(ChangeEvent::Row(change)).await?;
            }
            if !page.has_more {
                return Ok(true);
            }
            page_cursor = Some(page.cursor.ok_or_else(|| {
                SourceError::decode(format!(
                    "list_snapshot of table {table}: hasMore without a cursor"
                ))
            })?);
        }
    }

    /// Acknowledgements release nothing on Convex (history is kept for the deployment's
    /// retention window whatever readers do); the stream only warns when the host's durable
    /// position falls far behind, since resuming from beyond the window is `HistoryLost`.
    pub(super) fn note_acks(&mut self, head: i64) {
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
