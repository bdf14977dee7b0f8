//! The snapshot phase: every selected table read page by page at one pinned timestamp.

use std::collections::BTreeMap;

use powersync_source_core::{
    ChangeEvent, SnapshotProgress, SnapshotResume, SourceError, TableName, TableProgress,
};

use super::{cursor_checkpoint, doc_str, Replicator, SnapshotState, Stop};
use crate::catalog::{CHECKPOINT_TABLE, SCHEMA};

impl Replicator {
    pub(super) async fn snapshot(
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
}
