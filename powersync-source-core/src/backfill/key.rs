//! Row keys as comparable strings: a chunk row and a streamed change of the same row must give
//! the same string (connectors normalize a snapshot value and a streamed value of one column
//! alike; the SQLite sink relies on that too).

use std::fmt::Write;

use crate::event::RowChange;
use crate::schema::TableSchema;
use crate::value::{Row, Value};

/// The key of `row` under `schema`'s key columns; `None` when a key value is missing.
pub(crate) fn row_key(schema: &TableSchema, row: &Row) -> Option<String> {
    let mut key = String::new();
    for i in schema.key_indexes() {
        push_value(&mut key, row.get(i)?)?;
    }
    Some(key)
}

/// The keys a streamed change touches: its old key and, when the update moved it, its new
/// key.
pub(crate) fn change_keys(change: &RowChange) -> impl Iterator<Item = String> + '_ {
    let old = change.old.as_ref().and_then(|r| row_key(&change.table, r));
    let new = change.new.as_ref().and_then(|r| row_key(&change.table, r));
    let new = if new == old { None } else { new };
    old.into_iter().chain(new)
}

fn push_value(out: &mut String, v: &Value) -> Option<()> {
    // Tagged and terminated so that no two different key tuples share a string.
    match v {
        Value::Null => out.push('n'),
        Value::Integer(i) => {
            let _ = write!(out, "i{i}");
        }
        Value::Real(f) => {
            let _ = write!(out, "r{:x}", f.to_bits());
        }
        Value::Text(s) => {
            let _ = write!(out, "t{}:{s}", s.len());
        }
        Value::Blob(b) => {
            let _ = write!(out, "b{}:", b.len());
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
        }
        Value::Unchanged => return None,
    }
    out.push('\u{1f}');
    Some(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{OldImage, Op};
    use crate::schema::{Column, RowIdentity, TableName};

    fn schema() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            name: TableName::new("s", "t"),
            source_id: None,
            columns: vec![Column::new("a", "text").key(), Column::new("v", "int")],
            identity: RowIdentity::PrimaryKey,
        })
    }

    #[test]
    fn keys_of_tuples_do_not_collide() {
        let s = schema();
        let a = row_key(&s, &Row::new(vec![Value::from("a\u{1f}b"), Value::Null]));
        let b = row_key(&s, &Row::new(vec![Value::from("a"), Value::Null]));
        assert_ne!(a, b);
        assert_eq!(
            row_key(&s, &Row::new(vec![Value::Integer(1), Value::Null])),
            row_key(&s, &Row::new(vec![Value::Integer(1), Value::Integer(9)]))
        );
    }

    #[test]
    fn a_key_change_touches_both_keys() {
        let s = schema();
        let change = RowChange {
            op: Op::Update,
            table: s,
            old: Some(Row::new(vec![Value::from("x"), Value::Unchanged])),
            old_image: OldImage::Key,
            new: Some(Row::new(vec![Value::from("y"), Value::Integer(2)])),
            snapshot: false,
        };
        assert_eq!(change_keys(&change).count(), 2);
    }
}
