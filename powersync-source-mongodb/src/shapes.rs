//! The collection shapes of one stream, shared between the stream task and its backfill
//! reader, so a backfilled chunk is converted under the very column list (names, order, type
//! names) the stream's `Schema` events announce, and a column the reader learns from a
//! chunk's documents is announced by the stream too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use powersync_source_core::{TableName, TableSchema};

use crate::document_row::CollectionShape;

/// A collection's namespace: (database, collection).
pub(crate) type Ns = (String, String);

/// Chunks in flight by mark (the watermarks' common suffix): the collection and the schema
/// the chunk was converted under.
type ChunkSchemas = HashMap<String, (Ns, Arc<TableSchema>)>;

/// Every collection shape of one stream, behind one lock (held only for conversions, never
/// across an `await`), and the schema each backfill chunk in flight was converted under.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedShapes {
    shapes: Arc<Mutex<HashMap<Ns, CollectionShape>>>,
    chunks: Arc<Mutex<ChunkSchemas>>,
}

impl SharedShapes {
    fn lock(&self) -> MutexGuard<'_, HashMap<Ns, CollectionShape>> {
        // A panic while converting leaves the map itself intact: keep using it.
        self.shapes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn chunks(&self) -> MutexGuard<'_, ChunkSchemas> {
        self.chunks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The reader converted the chunk `mark` of `ns` under `schema`.
    pub(crate) fn chunk_read(&self, mark: &str, ns: Ns, schema: Arc<TableSchema>) {
        self.chunks().insert(mark.to_owned(), (ns, schema));
    }

    /// The stream passed the high watermark of chunk `mark`: the collection, when the stream
    /// learned fields of it after the chunk was read. The chunk then goes out under a schema
    /// narrower than the one the stream announced (a host following schema events drops the
    /// newer columns); the caller reads the collection again.
    pub(crate) fn chunk_passed(&self, mark: &str) -> Option<Ns> {
        let (ns, schema) = self.chunks().remove(mark)?;
        let current = self.lock().get(&ns).map(|s| s.schema().clone())?;
        (*current != *schema).then_some(ns)
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
