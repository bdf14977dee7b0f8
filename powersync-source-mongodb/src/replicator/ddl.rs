//! DDL events of a [`Replicator`]: `drop`, `dropDatabase` and `rename` (see the crate docs).

use mongodb::bson::raw::RawDocument;
use powersync_source_core::runtime::Step;
use powersync_source_core::{ChangeEvent, Commit, Position, TableName, Truncate};

use super::{event_time, Replicator};
use crate::change_event::{rename_target, EventHeader};

impl Replicator {
    /// A `Truncate` of `tables` inside the transaction of `h`.
    async fn truncate(&mut self, h: &EventHeader, tables: Vec<TableName>) -> Step<()> {
        self.begin(h).await?;
        self.out
            .push(ChangeEvent::Truncate(Truncate { tables }))
            .await
    }

    /// A dropped selected collection is emptied.
    pub(super) async fn drop_collection(
        &mut self,
        h: &EventHeader,
        db: &str,
        coll: &str,
    ) -> Step<()> {
        if self.selection.contains(db, coll) {
            self.truncate(h, vec![self.selection.table(coll)]).await?;
            self.known.remove(coll);
            self.shapes.remove(coll);
        }
        self.advance(h);
        Ok(())
    }

    /// `dropDatabase` of the replicated database empties every known selected collection.
    pub(super) async fn drop_database(&mut self, h: &EventHeader, ours: bool) -> Step<()> {
        if ours && !self.known.is_empty() {
            let tables = self.known.iter().map(|c| self.selection.table(c)).collect();
            self.truncate(h, tables).await?;
            self.known.clear();
            self.shapes.clear();
        }
        self.advance(h);
        Ok(())
    }

    /// A rename empties the source table; a rename *into* a selected collection also copies the
    /// target (read like a snapshot). The commit before the copy carries the position *before*
    /// the rename, so a crash during the copy replays the rename and copies again.
    pub(super) async fn rename(
        &mut self,
        h: &EventHeader,
        db: &str,
        coll: &str,
        event: &RawDocument,
    ) -> Step<()> {
        let (to_db, to_coll) = rename_target(event)?;
        let from_selected = self.selection.contains(db, coll);
        let to_selected = self.selection.contains(&to_db, &to_coll);
        if !from_selected && !to_selected {
            self.advance(h);
            return Ok(());
        }
        self.close_transaction().await?;
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
        self.truncate(h, tables).await?;
        if to_selected {
            // Commit at the position before the rename (already emitted).
            self.out
                .push(ChangeEvent::Commit(Commit {
                    checkpoint: self.emitted.to_checkpoint(),
                    commit_time: Some(event_time(h)),
                }))
                .await?;
            self.out.flush().await?;
            self.known.insert(to_coll.clone());
            self.snapshot_collection(&to_coll, None).await?;
        }
        self.advance(h);
        self.close_transaction().await
    }
}
