//! How a collection's documents become rows of a table.
//!
//! A collection is a table whose identity is `_id`:
//! - column `id` (the key) holds `_id`, converted like any value (an ObjectId is 24 lowercase
//!   hex digits, an integer stays an integer);
//! - every top-level field of the documents is a column of the same name, holding the field's
//!   value converted by [`crate::bson_value`] (embedded documents and arrays as JSON text);
//! - a top-level field literally named `id` would clash with the key column and is renamed
//!   [`ID_FIELD_COLUMN`].
//!
//! Collections have no fixed schema, so the column list grows as fields are seen: a document
//! with a field no earlier document had adds a column at the end, and a
//! [`ChangeEvent::Schema`](powersync_source_core::ChangeEvent::Schema) with the longer list comes
//! before its row. Columns are never removed while a stream runs; a document without a field
//! has `Null` there (so a full-document image also clears fields a `$unset` removed). Column
//! types are the BSON type of the first value seen (`type_name`), for information only.
//!
//! Documents are read from their bytes with lossy UTF-8 ([`crate::bson_value`]): a field name
//! or string that is not valid UTF-8 gets U+FFFD where its bad bytes were, and the row is
//! delivered. (Two names that differ only in their invalid bytes would map to one column;
//! the later value wins.)

use std::collections::HashMap;
use std::sync::Arc;

use mongodb::bson::raw::{RawBsonRef, RawDocument};
use powersync_source_core::{
    Column, Result, Row, RowIdentity, SourceError, TableName, TableSchema, Value,
};

use crate::bson_value::{bson_to_value, fields, type_name};

/// The key column, holding `_id`.
pub const KEY_COLUMN: &str = "id";
/// The column of a top-level field named `id`.
pub const ID_FIELD_COLUMN: &str = "id_field";

/// The evolving table shape of one collection.
#[derive(Debug, Clone)]
pub struct CollectionShape {
    schema: Arc<TableSchema>,
    index: HashMap<String, usize>,
    /// Whether the schema changed since it was last emitted.
    dirty: bool,
}

impl CollectionShape {
    /// A shape with only the key column.
    pub fn new(table: TableName) -> Self {
        let schema = TableSchema {
            name: table,
            source_id: None,
            columns: vec![Column {
                nullable: Some(false),
                ..Column::new(KEY_COLUMN, "_id").key()
            }],
            identity: RowIdentity::PrimaryKey,
        };
        CollectionShape {
            schema: Arc::new(schema),
            index: HashMap::new(),
            dirty: true,
        }
    }

    /// The current schema.
    pub fn schema(&self) -> &Arc<TableSchema> {
        &self.schema
    }

    /// Returns the schema if it changed since the last call (or was never taken): emit it as a
    /// schema event before the next row.
    pub fn take_changed(&mut self) -> Option<Arc<TableSchema>> {
        if self.dirty {
            self.dirty = false;
            Some(self.schema.clone())
        } else {
            None
        }
    }

    /// Makes the next [`take_changed`](Self::take_changed) return the schema again.
    pub fn mark_changed(&mut self) {
        self.dirty = true;
    }

    fn column_for(&mut self, field: &str, bson_type: &'static str) -> usize {
        if let Some(&i) = self.index.get(field) {
            return i;
        }
        let name = if field == KEY_COLUMN {
            ID_FIELD_COLUMN
        } else {
            field
        };
        let schema = Arc::make_mut(&mut self.schema);
        schema.columns.push(Column::new(name, bson_type));
        let i = schema.columns.len() - 1;
        self.index.insert(field.to_owned(), i);
        self.dirty = true;
        i
    }

    /// Registers a field the collection's documents are known to have (read from the server
    /// when a stream resumes), with the BSON type name the server reports (`$type`), so the
    /// first schema after a resume is not narrower than the one the host already holds.
    pub fn seed(&mut self, field: &str, bson_type: &str) {
        if field == "_id" || self.index.contains_key(field) {
            return;
        }
        let name = if field == KEY_COLUMN {
            ID_FIELD_COLUMN
        } else {
            field
        };
        let schema = Arc::make_mut(&mut self.schema);
        schema.columns.push(Column::new(name, bson_type));
        let i = schema.columns.len() - 1;
        self.index.insert(field.to_owned(), i);
        self.dirty = true;
    }

    /// Registers the top-level fields of a document as columns without converting values, so
    /// a schema sent before the first rows already lists the fields of the first batch.
    pub fn observe(&mut self, doc: &RawDocument) {
        // A malformed document registers the fields before the damage; `row` reports it.
        for field in fields(doc).map_while(|f| f.ok()) {
            if field.key != "_id" {
                self.column_for(&field.key, field.type_name());
            }
        }
    }

    /// The full row of a document (every column; fields the document lacks are `Null`).
    pub fn row(&mut self, doc: &RawDocument) -> Result<Row> {
        let mut values: Vec<(usize, Value)> = Vec::new();
        let mut key = None;
        for field in fields(doc) {
            // The reader's message names the damage ("malformed BSON: …"); no external cause.
            let field = field.map_err(|e| {
                SourceError::decode(format!("a document of {}: {e}", self.schema.name))
            })?;
            let converted = field.to_value().map_err(|why| {
                SourceError::decode_value(
                    &self.schema.name.to_string(),
                    &field.key,
                    field.type_name(),
                    why,
                )
            })?;
            if field.key == "_id" {
                key = Some(converted);
            } else {
                let i = self.column_for(&field.key, field.type_name());
                values.push((i, converted));
            }
        }
        let key = key.ok_or_else(|| {
            SourceError::decode(format!("a document of {} has no _id", self.schema.name))
        })?;
        let mut row = vec![Value::Null; self.schema.columns.len()];
        row[0] = key;
        for (i, v) in values {
            row[i] = v;
        }
        Ok(Row::new(row))
    }

    /// A key-only row: `id` set, every other column [`Value::Unchanged`].
    pub fn key_row(&self, id: RawBsonRef<'_>) -> Result<Row> {
        let key = bson_to_value(id).map_err(|why| {
            SourceError::decode_value(&self.schema.name.to_string(), "_id", type_name(id), why)
        })?;
        let mut row = vec![Value::Unchanged; self.schema.columns.len()];
        row[0] = key;
        Ok(Row::new(row))
    }

    /// A key-only row from a change event's `documentKey` document (`{_id: …}`, plus the
    /// shard key on sharded collections), its `_id` read from the bytes with lossy UTF-8 like
    /// every row value: a string `_id` that is not valid UTF-8 still gives the key the
    /// snapshot and full-document rows use, where the `bson` crate's accessors refuse it.
    pub fn key_row_from_document_key(&self, document_key: &RawDocument) -> Result<Row> {
        let table = self.schema.name.to_string();
        for field in fields(document_key) {
            let field = field.map_err(|e| {
                SourceError::decode(format!("the documentKey of a change in {table}: {e}"))
            })?;
            if field.key == "_id" {
                let key = field.to_value().map_err(|why| {
                    SourceError::decode_value(&table, "_id", field.type_name(), why)
                })?;
                let mut row = vec![Value::Unchanged; self.schema.columns.len()];
                row[0] = key;
                return Ok(Row::new(row));
            }
        }
        Err(SourceError::decode(format!(
            "a change in {table} has a documentKey without _id"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, RawDocumentBuf};

    #[test]
    fn columns_grow_and_id_field_is_renamed() {
        let mut shape = CollectionShape::new(TableName::new("db", "c"));
        let a = RawDocumentBuf::from_document(&doc! {"_id": 1_i64, "v": "x"}).unwrap();
        let row = shape.row(&a).unwrap();
        assert_eq!(row.values(), &[Value::Integer(1), Value::Text("x".into())]);
        assert!(shape.take_changed().is_some());
        assert!(shape.take_changed().is_none());
        let b = RawDocumentBuf::from_document(&doc! {"id": 5, "_id": 2_i64}).unwrap();
        let row = shape.row(&b).unwrap();
        let schema = shape.take_changed().unwrap();
        let names: Vec<_> = schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "v", "id_field"]);
        assert_eq!(
            row.values(),
            &[Value::Integer(2), Value::Null, Value::Integer(5)]
        );
        let missing = RawDocumentBuf::from_document(&doc! {"v": 1}).unwrap();
        assert!(shape.row(&missing).is_err());
    }

    /// `{"_id": 1, "n\xff": "a\xffb"}` as bytes: the row arrives, with U+FFFD in the column
    /// name and the value, instead of a decode error that would stop the stream.
    #[test]
    fn invalid_utf8_names_and_strings_still_make_a_row() {
        let mut bytes = vec![0u8; 4];
        bytes.extend_from_slice(b"\x10_id\0");
        bytes.extend_from_slice(&1i32.to_le_bytes());
        bytes.extend_from_slice(b"\x02n\xff\0");
        bytes.extend_from_slice(&4i32.to_le_bytes());
        bytes.extend_from_slice(b"a\xffb\0");
        bytes.push(0);
        let len = bytes.len() as i32;
        bytes[..4].copy_from_slice(&len.to_le_bytes());
        let doc = RawDocument::from_bytes(&bytes).unwrap();
        let mut shape = CollectionShape::new(TableName::new("db", "c"));
        shape.observe(doc);
        let row = shape.row(doc).unwrap();
        assert_eq!(
            row.values(),
            &[Value::Integer(1), Value::Text("a\u{fffd}b".into())]
        );
        let key = shape.key_row_from_document_key(doc).unwrap();
        assert_eq!(key.values(), &[Value::Integer(1), Value::Unchanged]);
        // a documentKey whose string _id is not UTF-8: {_id: "a\xff"}
        let mut dk = vec![0u8; 4];
        dk.extend_from_slice(b"\x02_id\0");
        dk.extend_from_slice(&3i32.to_le_bytes());
        dk.extend_from_slice(b"a\xff\0");
        dk.push(0);
        let len = dk.len() as i32;
        dk[..4].copy_from_slice(&len.to_le_bytes());
        let dk = RawDocument::from_bytes(&dk).unwrap();
        assert!(dk.get("_id").is_err(), "the bson crate refuses it");
        let key = shape.key_row_from_document_key(dk).unwrap();
        assert_eq!(
            key.values(),
            &[Value::Text("a\u{fffd}".into()), Value::Unchanged]
        );
        let names: Vec<_> = shape
            .schema()
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["id", "n\u{fffd}"]);
    }
}
