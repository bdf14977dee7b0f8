//! The snapshot phase: every selected table read page by page at one pinned timestamp.

use std::collections::BTreeMap;

use powersync_source_core::runtime::{SnapshotBook, Step, TableStart};
use powersync_source_core::{
    ChangeEvent, Result, SnapshotProgress, SnapshotResume, SourceError, TableName, TableProgress,
};

use super::{cursor_checkpoint, doc_str, Replicator, SnapshotState};
use crate::catalog::{CHECKPOINT_TABLE, SCHEMA};

/// The progress book of the snapshot pinned at `snapshot`: the resume token carries the
/// pinned timestamp as its stream position and as the connector state.
fn pinned_book(snapshot: i64, progress: BTreeMap<String, TableProgress>) -> Result<SnapshotBook> {
    Ok(SnapshotBook::resume(&SnapshotResume {
        stream_from: cursor_checkpoint(snapshot)?,
        tables: progress,
        source_state: serde_json::to_string(&SnapshotState { snapshot }).ok(),
    }))
}

impl Replicator {
    /// Reads every selected table at the pinned snapshot (pinning one with the first page when
    /// `pinned` is `None`), skipping what `progress` says is read; returns the snapshot
    /// timestamp, where streaming continues.
    pub(super) async fn snapshot(
        &mut self,
        pinned: Option<i64>,
        progress: BTreeMap<String, TableProgress>,
    ) -> Step<i64> {
        let encoding = self.catalog.encoding();
        let tables = self.selection.snapshot_tables(self.catalog.known_tables());
        let mut snapshot = pinned;
        // A fresh snapshot has no book until its first page names the timestamp it pinned;
        // until then every table starts fresh.
        let mut book = match pinned {
            Some(s) => Some(pinned_book(s, progress)?),
            None => None,
        };
        // Tables a resumed snapshot finished before are not part of this one's plan.
        let planned = tables
            .iter()
            .filter(|t| {
                book.as_ref().is_none_or(|b| {
                    !matches!(
                        b.start(&TableName::new(SCHEMA, t.as_str())),
                        TableStart::Skip
                    )
                })
            })
            .count();
        self.out.plan_snapshot(planned);
        for table in tables {
            let name = TableName::new(SCHEMA, &table);
            let start = book.as_ref().map_or(TableStart::Fresh, |b| b.start(&name));
            let (mut cursor, mut rows) = match start {
                TableStart::Skip => continue,
                TableStart::Resume { after_key, rows } => (Some(after_key), rows),
                TableStart::Fresh => {
                    // Read from its first page here: the stream knows every row it holds.
                    self.row_ids.insert(table.clone(), Default::default());
                    (None, 0)
                }
            };
            self.out
                .push(ChangeEvent::Snapshot(SnapshotProgress::TableStarted {
                    table: name.clone(),
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
                let s = match snapshot {
                    None => page.snapshot,
                    Some(s) if s != page.snapshot => {
                        return Err(SourceError::history_lost(format!(
                            "list_snapshot of table {table} answered at snapshot {} instead of the pinned {s}",
                            page.snapshot
                        ))
                        .with_hint("the pinned snapshot can no longer be read; start again from the beginning")
                        .into())
                    }
                    Some(s) => s,
                };
                snapshot = Some(s);
                let mut b = match book.take() {
                    Some(b) => b,
                    None => pinned_book(s, BTreeMap::new())?,
                };
                for doc in &page.values {
                    if doc_str(doc, "_table").is_some_and(|t| t != table)
                        || doc_str(doc, "_component").is_some_and(|c| !c.is_empty())
                    {
                        continue;
                    }
                    let (change, announce) = self.catalog.row_change(&table, doc, false, true)?;
                    self.track_row(&table, doc, false);
                    if let Some(schema) = announce {
                        self.out.push(ChangeEvent::Schema(schema)).await?;
                    }
                    self.out.push(ChangeEvent::Row(change)).await?;
                    rows += 1;
                }
                let table_done = if page.has_more {
                    let next = page.cursor.clone().ok_or_else(|| {
                        SourceError::decode(format!(
                            "list_snapshot of table {table}: hasMore without a cursor"
                        ))
                    })?;
                    let event = b.chunk_done(&name, next.clone(), rows, None);
                    self.out.push(event).await?;
                    cursor = Some(next);
                    None
                } else {
                    // The last page's progress event already carries the table as done, so a
                    // host that stores it never reads the table again.
                    let done = b.table_done(&name, rows);
                    self.out
                        .push(ChangeEvent::Snapshot(SnapshotProgress::ChunkDone {
                            table: name.clone(),
                            rows_done: rows,
                            estimated_rows: None,
                            resume: Box::new(b.token()),
                        }))
                        .await?;
                    Some(done)
                };
                book = Some(b);
                // Hand each page over with its resume token: the host can store progress as
                // the snapshot goes.
                self.out.flush().await?;
                if let Some(done) = table_done {
                    self.out.push(done).await?;
                    break;
                }
            }
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
        let book = match book {
            Some(b) => b,
            None => pinned_book(s, BTreeMap::new())?,
        };
        self.out.push(book.done()).await?;
        self.out.flush().await?;
        Ok(s)
    }
}
