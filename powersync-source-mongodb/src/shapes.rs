//! The collection shapes of one stream, shared between the stream task and its backfill
//! reader, so a backfilled chunk is converted under the very column list (names, order, type
//! names) the stream's `Schema` events announce, and a column the reader learns from a
//! chunk's documents is announced by the stream too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use powersync_source_core::TableName;

use crate::document_row::CollectionShape;

/// A collection's namespace: (database, collection).
pub(crate) type Ns = (String, String);

/// Every collection shape of one stream, behind one lock (held only for conversions, never
/// across an `await`).
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedShapes(Arc<Mutex<HashMap<Ns, CollectionShape>>>);

impl SharedShapes {
    fn lock(&self) -> MutexGuard<'_, HashMap<Ns, CollectionShape>> {
        // A panic while converting leaves the map itself intact: keep using it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the shape of `db.coll` (created with only the key column when new).
    pub(crate) fn with<R>(
        &self,
        db: &str,
        coll: &str,
        f: impl FnOnce(&mut CollectionShape) -> R,
    ) -> R {
        let mut shapes = self.lock();
        let shape = shapes
            .entry((db.to_owned(), coll.to_owned()))
            .or_insert_with(|| CollectionShape::new(TableName::new(db, coll)));
        f(shape)
    }

    /// Forgets a collection (dropped, renamed away): its next shape starts afresh.
    pub(crate) fn remove(&self, ns: &Ns) {
        self.lock().remove(ns);
    }

    /// Forgets every collection of `db`.
    pub(crate) fn remove_database(&self, db: &str) {
        self.lock().retain(|(d, _), _| d != db);
    }

    /// Makes every shape announce its schema again before its next row.
    pub(crate) fn mark_all_changed(&self) {
        for shape in self.lock().values_mut() {
            shape.mark_changed();
        }
    }
}
