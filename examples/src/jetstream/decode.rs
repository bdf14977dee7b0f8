//! Messages back into [`ChangeEvent`]s: the inverse of `tail`'s line format
//! ([`crate::json_lines`]) for rows, truncates and schema messages.
//!
//! Rows are rebuilt by column name against the table's last schema message (its
//! `"definition"` is the full [`TableSchema`]). A column missing from `new` or `old` is
//! [`Value::Unchanged`]; an `old` image with every column is a full image, otherwise a key
//! image. Values: JSON integers → Integer, other numbers → Real, strings → Text,
//! `{"$blob":…}` → Blob, `{"$real":"Infinity"|"-Infinity"}` → Real ±∞, `{"$real":"NaN"}` →
//! Null, `{"$unchanged":true}` → Unchanged, `null` → Null. Anything else is a decoding error
//! (never a panic): the payload came over the network.
//!
//! `{"$real":"NaN"}` becomes Null, not a NaN Real, because a [`Value::Real`] is never NaN
//! ([`Value::real`]) and SQLite has no NaN: binding a NaN double stores NULL (rusqlite passes
//! it to `sqlite3_bind_double`, which SQLite turns into NULL). So the mirror `consume` builds
//! holds exactly what `mirror` would: NULL for NaN, a REAL for each infinity.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine;
use powersync_source_core::{
    ChangeEvent, OldImage, Op, Row, RowChange, TableName, TableSchema, Truncate, Value,
};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Decodes messages, remembering the schemas seen.
#[derive(Debug, Default)]
pub struct Decoder {
    schemas: HashMap<String, Arc<TableSchema>>,
}

impl Decoder {
    /// A decoder that already knows `schemas` (e.g. from the mirror's state table).
    pub fn new(schemas: impl IntoIterator<Item = TableSchema>) -> Decoder {
        Decoder {
            schemas: schemas
                .into_iter()
                .map(|s| (s.name.to_string(), Arc::new(s)))
                .collect(),
        }
    }

    /// Decodes one data or schema message; `Ok(None)` for kinds that carry no change.
    pub fn decode(&mut self, payload: &[u8]) -> Result<Option<ChangeEvent>, String> {
        let mut node: Node =
            serde_json::from_slice(payload).map_err(|e| format!("not a JSON message: {e}"))?;
        node.exact_floats(&mut number_literals(payload).into_iter());
        let Node::Obj(obj) = &node else {
            return Err("a message must be a JSON object".into());
        };
        match get(obj, "kind") {
            Some(Node::Str(kind)) if kind == "row" => self.row(obj).map(Some),
            Some(Node::Str(kind)) if kind == "schema" => {
                #[derive(serde::Deserialize)]
                struct SchemaMessage {
                    definition: TableSchema,
                }
                let msg: SchemaMessage = serde_json::from_slice(payload)
                    .map_err(|e| format!("schema message `definition`: {e}"))?;
                let schema = Arc::new(msg.definition);
                self.schemas.insert(schema.name.to_string(), schema.clone());
                Ok(Some(ChangeEvent::Schema(schema)))
            }
            Some(Node::Str(kind)) if kind == "truncate" => {
                let Some(Node::Arr(tables)) = get(obj, "tables") else {
                    return Err("truncate message without `tables`".into());
                };
                let mut names = Vec::with_capacity(tables.len());
                for t in tables {
                    let Node::Str(t) = t else {
                        return Err("`tables` must hold strings".into());
                    };
                    names.push(match self.schemas.get(t) {
                        Some(s) => s.name.clone(),
                        None => TableName::parse(t, ""),
                    });
                }
                Ok(Some(ChangeEvent::Truncate(Truncate { tables: names })))
            }
            Some(Node::Str(_)) => Ok(None),
            _ => Err("message without a `kind` string".into()),
        }
    }

    fn row(&self, obj: &[(String, Node)]) -> Result<ChangeEvent, String> {
        let Some(Node::Str(table)) = get(obj, "table") else {
            return Err("row without `table`".into());
        };
        let schema = self
            .schemas
            .get(table)
            .ok_or_else(|| format!("row of `{table}` before any schema message for it"))?;
        let op = match get(obj, "op") {
            Some(Node::Str(op)) if op == "insert" => Op::Insert,
            Some(Node::Str(op)) if op == "update" => Op::Update,
            Some(Node::Str(op)) if op == "delete" => Op::Delete,
            _ => return Err("row without a known `op`".into()),
        };
        let snapshot = matches!(get(obj, "snapshot"), Some(Node::Bool(true)));
        let (old, old_image) = match get(obj, "old") {
            None | Some(Node::Null) => (None, OldImage::None),
            Some(Node::Obj(m)) => {
                let full = schema.columns.iter().all(|c| get(m, &c.name).is_some());
                (
                    Some(image(schema, m)?),
                    if full { OldImage::Full } else { OldImage::Key },
                )
            }
            Some(_) => return Err("row `old` must be an object or null".into()),
        };
        let new = match get(obj, "new") {
            None | Some(Node::Null) => None,
            Some(Node::Obj(m)) => Some(image(schema, m)?),
            Some(_) => return Err("row `new` must be an object or null".into()),
        };
        let (old, old_image) = if old.is_none() && op == Op::Delete {
            // Deletes always identify their row: fall back to the key.
            match get(obj, "key") {
                Some(Node::Obj(m)) => (Some(image(schema, m)?), OldImage::Key),
                _ => (None, OldImage::None),
            }
        } else {
            (old, old_image)
        };
        Ok(ChangeEvent::Row(RowChange {
            op,
            table: schema.clone(),
            old,
            old_image,
            new,
            snapshot,
        }))
    }
}

/// A JSON document with objects in document order and floats parsed exactly.
///
/// serde_json's default float parsing may be one unit in the last place off (exact parsing is
/// its `float_roundtrip` feature); a mirror must store exactly the double the source sent, so
/// floats are re-parsed from their literal with the standard library's correctly rounded
/// parser ([`Node::exact_floats`]).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<Node>),
    Obj(Vec<(String, Node)>),
}

impl Node {
    /// Replaces every number by the exact value of its literal (`literals` in document
    /// order, as [`number_literals`] lists them).
    fn exact_floats<'a>(&mut self, literals: &mut impl Iterator<Item = &'a str>) {
        match self {
            Node::Int(_) => {
                literals.next();
            }
            Node::Float(f) => {
                if let Some(exact) = literals.next().and_then(|l| l.parse::<f64>().ok()) {
                    *f = exact;
                }
            }
            Node::Arr(items) => items.iter_mut().for_each(|n| n.exact_floats(literals)),
            Node::Obj(entries) => entries
                .iter_mut()
                .for_each(|(_, n)| n.exact_floats(literals)),
            Node::Null | Node::Bool(_) | Node::Str(_) => {}
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(i64::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element()? {
            items.push(n);
        }
        Ok(Node::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            entries.push((k, v));
        }
        Ok(Node::Obj(entries))
    }
}

/// The number literals of a (valid) JSON document, in document order.
fn number_literals(json: &[u8]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_string = false;
    while i < json.len() {
        let b = json[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < json.len()
                && matches!(json[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            // Number literals are ASCII.
            out.push(std::str::from_utf8(&json[start..i]).unwrap_or(""));
        } else {
            i += 1;
        }
    }
    out
}

/// The value of `key` in an object.
fn get<'a>(obj: &'a [(String, Node)], key: &str) -> Option<&'a Node> {
    obj.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// A row image in column order; columns not in `map` are [`Value::Unchanged`].
fn image(schema: &TableSchema, map: &[(String, Node)]) -> Result<Row, String> {
    let mut values = Vec::with_capacity(schema.columns.len());
    for c in &schema.columns {
        values.push(match get(map, &c.name) {
            None => Value::Unchanged,
            Some(v) => value(v).map_err(|e| format!("column `{}`: {e}", c.name))?,
        });
    }
    Ok(Row::new(values))
}

/// One value (see the module docs).
fn value(node: &Node) -> Result<Value, String> {
    Ok(match node {
        Node::Null => Value::Null,
        Node::Int(i) => Value::Integer(*i),
        Node::Float(f) => Value::Real(*f),
        Node::Str(s) => Value::Text(s.clone()),
        Node::Obj(m) => {
            if let Some(b) = get(m, "$blob") {
                let Node::Str(b) = b else {
                    return Err("`$blob` must be a base64 string".into());
                };
                Value::Blob(
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .map_err(|e| format!("`$blob`: {e}"))?,
                )
            } else if let Some(r) = get(m, "$real") {
                match r {
                    Node::Str(r) if r == "Infinity" => Value::Real(f64::INFINITY),
                    Node::Str(r) if r == "-Infinity" => Value::Real(f64::NEG_INFINITY),
                    Node::Str(r) if r == "NaN" => Value::real(f64::NAN),
                    _ => {
                        return Err("`$real` must be \"NaN\", \"Infinity\" or \"-Infinity\"".into())
                    }
                }
            } else if get(m, "$unchanged") == Some(&Node::Bool(true)) {
                Value::Unchanged
            } else {
                return Err(
                    "objects are only `{\"$blob\":…}`, `{\"$real\":…}` or `{\"$unchanged\":true}`"
                        .into(),
                );
            }
        }
        Node::Bool(_) | Node::Arr(_) => return Err("booleans and arrays are not values".into()),
    })
}

#[cfg(test)]
mod tests {
    use powersync_source_core::{Column, RowIdentity};
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::json_lines;

    fn schema() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            name: TableName::new("public", "t"),
            source_id: Some(7),
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
    fn rows_roundtrip_through_the_line_format() {
        let s = schema();
        let mut d = Decoder::new([(*s).clone()]);
        let change = RowChange {
            op: Op::Update,
            table: s.clone(),
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
                Value::Blob(vec![0, 1, 255]),
                Value::Unchanged,
            ])),
            snapshot: false,
        };
        let line = json_lines::event_line(&ChangeEvent::Row(change.clone())).unwrap();
        let Some(ChangeEvent::Row(back)) = d.decode(line.as_bytes()).unwrap() else {
            panic!("not a row");
        };
        assert_eq!(back.op, Op::Update);
        assert_eq!(back.old_image, OldImage::Key);
        assert_eq!(back.old, change.old);
        assert_eq!(back.new, change.new);
        assert!(Arc::ptr_eq(&back.table, &d.schemas["public.t"]));
    }

    #[test]
    fn floats_are_exact() {
        let s = schema();
        let mut d = Decoder::new([(*s).clone()]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for i in 0..5000 {
            let r = match i {
                0 => 0.9598874021094495,
                1 => 1e300,
                2 => -2.5e-308,
                3 => 5e-324,
                4 => f64::INFINITY,
                5 => f64::NEG_INFINITY,
                _ => f64::from_bits(rng.gen::<u64>()),
            };
            // A `Value::Real` is never NaN (NaN is Null; see `non_finite_reals_roundtrip`).
            if r.is_nan() {
                continue;
            }
            let change = RowChange {
                op: Op::Insert,
                table: s.clone(),
                old: None,
                old_image: OldImage::None,
                new: Some(Row::new(vec![
                    Value::Integer(-7),
                    Value::Real(r),
                    Value::Text("a\"1.5e3\\\" -2 x".into()),
                    Value::Null,
                ])),
                snapshot: true,
            };
            let line = json_lines::event_line(&ChangeEvent::Row(change.clone())).unwrap();
            let Some(ChangeEvent::Row(back)) = d.decode(line.as_bytes()).unwrap() else {
                panic!("not a row");
            };
            assert_eq!(back.new, change.new, "{line}");
        }
    }

    /// The three non-finite encodings of `tail`'s line format read back: the infinities as
    /// themselves, NaN as Null (a `Value::Real` is never NaN); SQLite stores them as a mirror
    /// built by `mirror` would (REAL ±∞, NULL for NaN).
    #[test]
    fn non_finite_reals_roundtrip() {
        let s = schema();
        let mut d = Decoder::new([(*s).clone()]);
        let cases = [
            (
                f64::INFINITY,
                Value::Real(f64::INFINITY),
                r#"{"$real":"Infinity"}"#,
            ),
            (
                f64::NEG_INFINITY,
                Value::Real(f64::NEG_INFINITY),
                r#"{"$real":"-Infinity"}"#,
            ),
            (f64::NAN, Value::Null, r#"{"$real":"NaN"}"#),
        ];
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute("CREATE TABLE t (r REAL)", []).unwrap();
        for (r, expected, encoding) in cases {
            let change = RowChange {
                op: Op::Update,
                table: s.clone(),
                old: Some(Row::new(vec![
                    Value::Integer(1),
                    Value::Real(r),
                    Value::Null,
                    Value::Null,
                ])),
                old_image: OldImage::Full,
                new: Some(Row::new(vec![
                    Value::Integer(1),
                    Value::Real(r),
                    Value::Null,
                    Value::Unchanged,
                ])),
                snapshot: false,
            };
            let line = json_lines::event_line(&ChangeEvent::Row(change)).unwrap();
            assert!(line.contains(&format!(r#""r":{encoding}"#)), "{line}");
            let Some(ChangeEvent::Row(back)) = d.decode(line.as_bytes()).unwrap() else {
                panic!("not a row: {line}");
            };
            let new = back.new.unwrap();
            assert_eq!(new.values()[1], expected, "{line}");
            assert_eq!(back.old.unwrap().values()[1], expected, "{line}");
            assert_eq!(back.old_image, OldImage::Full);
            assert_eq!(new.values()[3], Value::Unchanged);

            // What SQLite stores for the value, and for a NaN double bound directly: the same.
            let stored = |v: rusqlite::types::Value| -> (String, Option<f64>) {
                db.query_row("SELECT typeof(?1), ?1", [v], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .unwrap()
            };
            let from_line = stored(match &new.values()[1] {
                Value::Real(f) => rusqlite::types::Value::Real(*f),
                _ => rusqlite::types::Value::Null,
            });
            let direct = stored(rusqlite::types::Value::Real(r));
            assert_eq!(
                (from_line.0.as_str(), from_line.1.map(f64::to_bits)),
                (direct.0.as_str(), direct.1.map(f64::to_bits)),
                "{encoding}"
            );
            let expected_type = if r.is_nan() { "null" } else { "real" };
            assert_eq!(from_line.0, expected_type, "{encoding}");
        }
        for bad in [
            r#"{"$real":"nan"}"#,
            r#"{"$real":"inf"}"#,
            r#"{"$real":1.5}"#,
            r#"{"$real":null}"#,
        ] {
            let line = format!(
                r#"{{"kind":"row","op":"insert","table":"public.t","new":{{"id":1,"r":{bad}}}}}"#
            );
            let e = d.decode(line.as_bytes()).unwrap_err();
            assert!(e.contains("$real"), "{bad}: {e}");
        }
    }

    #[test]
    fn schema_and_truncate() {
        let mut d = Decoder::default();
        assert!(d
            .decode(br#"{"kind":"row","table":"public.t","op":"insert"}"#)
            .is_err());
        let def = serde_json::to_value(&*schema()).unwrap();
        let msg = serde_json::json!({"kind":"schema","table":"public.t","definition":def});
        let Some(ChangeEvent::Schema(s)) = d.decode(msg.to_string().as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(*s, *schema());
        let Some(ChangeEvent::Truncate(t)) = d
            .decode(br#"{"kind":"truncate","tables":["public.t"]}"#)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(t.tables, vec![TableName::new("public", "t")]);
        assert!(d
            .decode(br#"{"kind":"keepalive","checkpoint":"x"}"#)
            .unwrap()
            .is_none());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut d = Decoder::new([(*schema()).clone()]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let seeds: [&[u8]; 4] = [
            br#"{"kind":"row","op":"insert","table":"public.t","new":{"id":1,"b":{"$blob":"AP8="}}}"#,
            br#"{"kind":"row","op":"delete","table":"public.t","key":{"id":1},"old":null}"#,
            br#"{"kind":"truncate","tables":["public.t"]}"#,
            br#"{"kind":"schema","definition":{"name":{"schema":"a","name":"b"}}}"#,
        ];
        for i in 0..20_000 {
            let mut bytes = seeds[i % seeds.len()].to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..bytes.len());
                match rng.gen_range(0..3) {
                    0 => bytes[at] = rng.gen(),
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, rng.gen()),
                }
            }
            let _ = d.decode(&bytes);
        }
        let random: Vec<u8> = (0..256).map(|_| rng.gen()).collect();
        assert!(d.decode(&random).is_err());
        assert!(d
            .decode(br#"{"kind":"row","op":"insert","table":"public.t","new":{"b":{"$blob":5}}}"#)
            .is_err());
        assert!(d
            .decode(br#"{"kind":"row","op":"insert","table":"public.t","new":{"b":[1]}}"#)
            .is_err());
    }
}
