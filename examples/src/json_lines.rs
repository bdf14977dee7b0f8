//! `tail`'s output format: one JSON object per line, one line per event.
//!
//! Every object has a `kind`:
//!
//! ```text
//! {"kind":"row","op":"insert"|"update"|"delete","table":"schema.name","snapshot":bool,"key":{…},"old":{…}|null,"new":{…}|null}
//! {"kind":"truncate","tables":["schema.name",…]}
//! {"kind":"schema","table":"schema.name","columns":[{"name":…,"type":…},…],"key":["col",…]}
//! {"kind":"commit","checkpoint":"postgres:v1:…","commit_time":"2024-05-01T12:00:00.000001Z"|null}
//! {"kind":"snapshot_done","checkpoint":"…"}
//! {"kind":"keepalive","checkpoint":"…"}
//! {"kind":"abort"}
//! {"kind":"checkpoint_observed","checkpoint":"…"}
//! {"kind":"backfill_done","table":"schema.name","id":"…","rows":n}
//! {"kind":"backfill_failed","table":"schema.name","id":"…","error":"…"}
//! ```
//!
//! - `key` is the row identity ([`RowChange::key_values`]); `old` is present (non-null) only
//!   when the source sent an old image; for a key-only old image it holds only the columns the
//!   source sent. `new` is null for deletes.
//! - `abort`: the transaction begun before it will be resent; discard its rows.
//! - `checkpoint_observed`: the stream passed a marker written by
//!   [`ChangeSource::write_checkpoint`](powersync_source_core::ChangeSource::write_checkpoint).
//! - `backfill_done` follows the commit of a backfill's last chunk (backfilled rows print as
//!   rows with `"snapshot":true` between a begin and a commit); `backfill_failed`: the
//!   backfill of that table was given up (dropped table, no key), the stream goes on.
//! - `Begin` and snapshot progress other than the end of the snapshot and of a backfill print
//!   nothing.
//!
//! Values: SQL null → `null`; Integer → a JSON integer; Real → a JSON number that always has a
//! fraction or an exponent (`1.0`, never `1`), and the reals JSON has no number for as
//! `{"$real":"Infinity"}`, `{"$real":"-Infinity"}`, `{"$real":"NaN"}` (never `null`, which is
//! SQL NULL; connectors map NaN to NULL, see [`Value::real`], so `NaN` appears only for a
//! hand-built [`Value::Real`]); Text → a string; Blob → `{"$blob":"<base64>"}`; a value the
//! source did not send (unchanged TOAST column) → `{"$unchanged":true}`.
//! `consume` reads every one of these back (`jetstream::decode`, feature `jetstream`).

use std::io::{self, Write};

use base64::Engine;
use powersync_source_core::{
    ChangeEvent, OldImage, Row, RowChange, SnapshotProgress, TableSchema, Value,
};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// Writes the line for `event` (with its newline) to `out`; returns whether the event has a
/// line at all.
pub fn write_event<W: Write>(out: &mut W, event: &ChangeEvent) -> io::Result<bool> {
    let line = EventLine(event);
    if !line.has_line() {
        return Ok(false);
    }
    serde_json::to_writer(&mut *out, &line).map_err(io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(true)
}

/// The line for `event` as a string without the newline, or `None`.
pub fn event_line(event: &ChangeEvent) -> Option<String> {
    let line = EventLine(event);
    if !line.has_line() {
        return None;
    }
    serde_json::to_string(&line).ok()
}

/// A value as JSON (see the module docs).
pub fn value_json(value: &Value) -> serde_json::Value {
    serde_json::to_value(JsonValue(value)).unwrap_or(serde_json::Value::Null)
}

/// Serializes one [`Value`] in the line format.
#[derive(Debug, Clone, Copy)]
pub struct JsonValue<'a>(pub &'a Value);

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Integer(i) => s.serialize_i64(*i),
            // serde_json prints finite floats with a fraction or exponent (`1.0`, `1e20`).
            Value::Real(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Real(f) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("$real", non_finite_name(*f))?;
                m.end()
            }
            Value::Text(t) => s.serialize_str(t),
            Value::Blob(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(
                    "$blob",
                    &base64::engine::general_purpose::STANDARD.encode(b),
                )?;
                m.end()
            }
            Value::Unchanged => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("$unchanged", &true)?;
                m.end()
            }
        }
    }
}

/// The `$real` text of a real that is not finite: what JavaScript's `Number` prints
/// (`String(1/0)`), so a JSON consumer can turn it back into a number.
fn non_finite_name(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

struct EventLine<'a>(&'a ChangeEvent);

impl EventLine<'_> {
    fn has_line(&self) -> bool {
        match self.0 {
            ChangeEvent::Begin(_) => false,
            ChangeEvent::Snapshot(
                SnapshotProgress::Done { .. }
                | SnapshotProgress::BackfillDone { .. }
                | SnapshotProgress::BackfillFailed { .. },
            ) => true,
            ChangeEvent::Snapshot(_) => false,
            _ => true,
        }
    }
}

impl Serialize for EventLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ChangeEvent::Row(change) => RowLine(change).serialize(s),
            ChangeEvent::Truncate(t) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("kind", "truncate")?;
                let tables: Vec<String> = t.tables.iter().map(|t| t.to_string()).collect();
                m.serialize_entry("tables", &tables)?;
                m.end()
            }
            ChangeEvent::Schema(schema) => {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("kind", "schema")?;
                m.serialize_entry("table", &schema.name.to_string())?;
                m.serialize_entry("columns", &Columns(schema))?;
                m.serialize_entry("key", &schema.key_names())?;
                m.end()
            }
            ChangeEvent::Commit(c) => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("kind", "commit")?;
                m.serialize_entry("checkpoint", c.checkpoint.as_str())?;
                m.serialize_entry("commit_time", &c.commit_time.map(|t| t.to_rfc3339()))?;
                m.end()
            }
            ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint }) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("kind", "snapshot_done")?;
                m.serialize_entry("checkpoint", checkpoint.as_str())?;
                m.end()
            }
            ChangeEvent::Snapshot(SnapshotProgress::BackfillDone { table, id, rows }) => {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("kind", "backfill_done")?;
                m.serialize_entry("table", &table.to_string())?;
                m.serialize_entry("id", id)?;
                m.serialize_entry("rows", rows)?;
                m.end()
            }
            ChangeEvent::Snapshot(SnapshotProgress::BackfillFailed { table, id, error }) => {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("kind", "backfill_failed")?;
                m.serialize_entry("table", &table.to_string())?;
                m.serialize_entry("id", id)?;
                m.serialize_entry("error", error)?;
                m.end()
            }
            ChangeEvent::Keepalive(checkpoint) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("kind", "keepalive")?;
                m.serialize_entry("checkpoint", checkpoint.as_str())?;
                m.end()
            }
            ChangeEvent::CheckpointObserved(checkpoint) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("kind", "checkpoint_observed")?;
                m.serialize_entry("checkpoint", checkpoint.as_str())?;
                m.end()
            }
            ChangeEvent::Abort => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("kind", "abort")?;
                m.end()
            }
            // Not printed (see `has_line`); an empty object keeps this total.
            ChangeEvent::Begin(_) | ChangeEvent::Snapshot(_) => s.serialize_map(Some(0))?.end(),
        }
    }
}

struct Columns<'a>(&'a TableSchema);

impl Serialize for Columns<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.columns.len()))?;
        for c in &self.0.columns {
            seq.serialize_element(&ColumnLine(&c.name, &c.type_name))?;
        }
        seq.end()
    }
}

struct ColumnLine<'a>(&'a str, &'a str);

impl Serialize for ColumnLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("name", self.0)?;
        m.serialize_entry("type", self.1)?;
        m.end()
    }
}

struct RowLine<'a>(&'a RowChange);

impl Serialize for RowLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut m = s.serialize_map(Some(7))?;
        m.serialize_entry("kind", "row")?;
        m.serialize_entry("op", c.op.as_str())?;
        m.serialize_entry("table", &c.table.name.to_string())?;
        m.serialize_entry("snapshot", &c.snapshot)?;
        m.serialize_entry("key", &KeyMap(c))?;
        let old = match (&c.old, c.old_image) {
            (Some(row), OldImage::Key) => Some(Image {
                schema: &c.table,
                row,
                skip_unchanged: true,
            }),
            (Some(row), OldImage::Full) => Some(Image {
                schema: &c.table,
                row,
                skip_unchanged: false,
            }),
            _ => None,
        };
        m.serialize_entry("old", &old)?;
        let new = c.new.as_ref().map(|row| Image {
            schema: &c.table,
            row,
            skip_unchanged: false,
        });
        m.serialize_entry("new", &new)?;
        m.end()
    }
}

struct KeyMap<'a>(&'a RowChange);

impl Serialize for KeyMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let key = self.0.key_values();
        let mut m = s.serialize_map(Some(key.len()))?;
        for (name, value) in key {
            m.serialize_entry(name, &JsonValue(value))?;
        }
        m.end()
    }
}

struct Image<'a> {
    schema: &'a TableSchema,
    row: &'a Row,
    skip_unchanged: bool,
}

impl Serialize for Image<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (column, value) in self.schema.columns.iter().zip(self.row.values()) {
            if self.skip_unchanged && value.is_unchanged() {
                continue;
            }
            m.serialize_entry(&column.name, &JsonValue(value))?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use powersync_source_core::{Column, Op, RowIdentity, TableName};

    use super::*;

    fn schema() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            name: TableName::new("public", "t"),
            source_id: None,
            columns: vec![
                Column::new("id", "int8").key(),
                Column::new("r", "float8"),
                Column::new("b", "bytea"),
                Column::new("big", "text"),
            ],
            identity: RowIdentity::PrimaryKey,
        })
    }

    #[test]
    fn values() {
        assert_eq!(value_json(&Value::Real(1.0)).to_string(), "1.0");
        assert_eq!(value_json(&Value::Real(2.5)).to_string(), "2.5");
        assert_eq!(value_json(&Value::Real(1e300)).to_string(), "1e+300");
        assert_eq!(value_json(&Value::Real(-0.0)).to_string(), "-0.0");
        assert_eq!(value_json(&Value::Null).to_string(), "null");
        assert_eq!(value_json(&Value::Integer(-3)).to_string(), "-3");
        assert_eq!(
            value_json(&Value::Blob(vec![0, 255])).to_string(),
            r#"{"$blob":"AP8="}"#
        );
        assert_eq!(
            value_json(&Value::Unchanged).to_string(),
            r#"{"$unchanged":true}"#
        );
    }

    /// Non-finite reals are tagged objects, never `null` (SQL NULL), alone and inside a row line.
    #[test]
    fn non_finite_reals() {
        assert_eq!(
            value_json(&Value::Real(f64::INFINITY)).to_string(),
            r#"{"$real":"Infinity"}"#
        );
        assert_eq!(
            value_json(&Value::Real(f64::NEG_INFINITY)).to_string(),
            r#"{"$real":"-Infinity"}"#
        );
        assert_eq!(
            value_json(&Value::Real(f64::NAN)).to_string(),
            r#"{"$real":"NaN"}"#
        );
        // Any NaN payload or sign prints the same.
        assert_eq!(
            value_json(&Value::Real(-f64::NAN)).to_string(),
            r#"{"$real":"NaN"}"#
        );
        let change = RowChange {
            op: Op::Insert,
            table: schema(),
            old: None,
            old_image: OldImage::None,
            new: Some(Row::new(vec![
                Value::Integer(1),
                Value::Real(f64::NEG_INFINITY),
                Value::Null,
                Value::Null,
            ])),
            snapshot: true,
        };
        assert_eq!(
            event_line(&ChangeEvent::Row(change)).unwrap(),
            r#"{"kind":"row","op":"insert","table":"public.t","snapshot":true,"key":{"id":1},"old":null,"new":{"id":1,"r":{"$real":"-Infinity"},"b":null,"big":null}}"#
        );
    }

    #[test]
    fn update_with_key_image() {
        let change = RowChange {
            op: Op::Update,
            table: schema(),
            old: Some(Row::new(vec![
                Value::Integer(1),
                Value::Unchanged,
                Value::Unchanged,
                Value::Unchanged,
            ])),
            old_image: OldImage::Key,
            new: Some(Row::new(vec![
                Value::Integer(2),
                Value::Real(1.0),
                Value::Blob(b"hi".to_vec()),
                Value::Unchanged,
            ])),
            snapshot: false,
        };
        let line = event_line(&ChangeEvent::Row(change)).unwrap();
        assert_eq!(
            line,
            r#"{"kind":"row","op":"update","table":"public.t","snapshot":false,"key":{"id":1},"old":{"id":1},"new":{"id":2,"r":1.0,"b":{"$blob":"aGk="},"big":{"$unchanged":true}}}"#
        );
    }

    #[test]
    fn silent_events() {
        assert!(
            event_line(&ChangeEvent::Begin(powersync_source_core::Begin {
                xid: None,
                commit_time: None
            }))
            .is_none()
        );
        assert_eq!(
            event_line(&ChangeEvent::Abort).unwrap(),
            r#"{"kind":"abort"}"#
        );
    }
}
