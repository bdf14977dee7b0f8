//! The table schemas the stream emitted last, shared with the backfill reader so a chunk
//! carries the very schema the stream uses for its table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use powersync_source_core::{TableName, TableSchema};

/// Per table, the schema of the last `Schema` event the stream emitted for it.
///
/// Why shared: a chunk's `Schema` event must equal what the stream emits (the SQLite sink
/// rewrites a table whose schema event differs, and recreates it when the key differs). The
/// reader reads the catalog for every chunk (the table may have changed) and uses the stream's
/// schema whenever the two have the same shape; the catalog's otherwise (a table the stream
/// has not sent a schema for yet, or one changed in the catalog ahead of the stream).
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamSchemas(Arc<Mutex<HashMap<TableName, Arc<TableSchema>>>>);

impl StreamSchemas {
    /// Records that the stream emitted `schema` for its table.
    pub(crate) fn emitted(&self, schema: &Arc<TableSchema>) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(schema.name.clone(), schema.clone());
        }
    }

    /// The stream's schema of `catalog`'s table when it has the same shape, else `catalog`.
    pub(crate) fn matching(&self, catalog: Arc<TableSchema>) -> Arc<TableSchema> {
        let streamed = self
            .0
            .lock()
            .ok()
            .and_then(|map| map.get(&catalog.name).cloned());
        match streamed {
            Some(s) if same_shape(&s, &catalog) => s,
            _ => catalog,
        }
    }
}

/// Same table shape as far as consumers care (name, identity, columns, types, key).
pub(crate) fn same_shape(a: &TableSchema, b: &TableSchema) -> bool {
    a.name == b.name
        && a.identity == b.identity
        && a.columns.len() == b.columns.len()
        && a.columns
            .iter()
            .zip(&b.columns)
            .all(|(x, y)| x.name == y.name && x.type_name == y.type_name && x.is_key == y.is_key)
}

#[cfg(test)]
mod tests {
    use powersync_source_core::{Column, RowIdentity};

    use super::*;

    fn schema(nullable: Option<bool>, key: bool) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            name: TableName::new("public", "t"),
            source_id: Some(1),
            columns: vec![Column {
                name: "id".into(),
                type_name: "bigint".into(),
                is_key: key,
                nullable,
            }],
            identity: RowIdentity::PrimaryKey,
        })
    }

    #[test]
    fn the_streams_schema_wins_when_shapes_match() {
        let schemas = StreamSchemas::default();
        let streamed = schema(None, true);
        schemas.emitted(&streamed);
        assert!(Arc::ptr_eq(
            &schemas.matching(schema(Some(false), true)),
            &streamed
        ));
        // A different key is a different shape: the catalog's schema goes out.
        let catalog = schema(Some(false), false);
        assert!(Arc::ptr_eq(&schemas.matching(catalog.clone()), &catalog));
    }
}
