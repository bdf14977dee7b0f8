//! DDL events of a [`Replicator`]: `drop`, `dropDatabase` and `rename` (see the crate docs).

use mongodb::bson::raw::RawDocument;
use powersync_source_core::runtime::Step;
use powersync_source_core::{ChangeEvent, TableName, Truncate};

use super::Replicator;
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
            self.truncate(h, vec![self.selection.table(db, coll)])
                .await?;
            let ns = (db.to_owned(), coll.to_owned());
            self.known.remove(&ns);
            self.shapes.remove(&ns);
        }
        self.advance(h);
        Ok(())
    }

    /// `dropDatabase` of a replicated database empties its known selected collections.
    pub(super) async fn drop_database(&mut self, h: &EventHeader, db: &str) -> Step<()> {
        let tables: Vec<TableName> = self
            .known
            .iter()
            .filter(|(d, _)| d == db)
            .map(|(d, c)| self.selection.table(d, c))
            .collect();
        if !tables.is_empty() {
            self.truncate(h, tables).await?;
            self.known.retain(|(d, _)| d != db);
            self.shapes.remove_database(db);
        }
        self.advance(h);
        Ok(())
    }

    /// A rename empties the source table; a rename *into* a selected collection also empties
    /// the target and reads it through a backfill (see
    /// [`Emitter::backfill_added_table`](powersync_source_core::runtime::Emitter::backfill_added_table)).
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
        let from = (db.to_owned(), coll.to_owned());
        let to = (to_db.clone(), to_coll.clone());
        if from_selected {
            tables.push(self.selection.table(db, coll));
            self.known.remove(&from);
            self.shapes.remove(&from);
        }
        if to_selected {
            tables.push(self.selection.table(&to_db, &to_coll));
            self.shapes.remove(&to);
        }
        self.truncate(h, tables).await?;
        if to_selected {
            // The target's documents are read through a backfill from the end of this
            // transaction; its cursor rides on the checkpoints after it, so a crash resumes
            // the read instead of replaying the rename.
            self.known.insert(to);
            self.out
                .backfill_added_table(self.selection.table(&to_db, &to_coll));
        }
        self.advance(h);
        self.close_transaction().await
    }
}
