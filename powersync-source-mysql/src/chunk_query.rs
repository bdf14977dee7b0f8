//! Key-ordered chunk reads, shared by the snapshot and backfills: the statements that read
//! a table `limit` rows at a time after the last key read, and that key's text form for
//! resume cursors (tagged wire values, so it binds back exactly).

use mysql_async::Value as My;
use powersync_source_core::SourceError;
use serde_json::json;

use crate::catalog::TableInfo;
use crate::connection::ident;

/// The two statements of a keyed chunk read and how the last key binds to the second.
pub(crate) struct ChunkQuery {
    /// The first chunk: `SELECT … ORDER BY key LIMIT n`.
    pub(crate) first: String,
    /// Every later chunk: `SELECT … WHERE key > ? ORDER BY key LIMIT n`.
    pub(crate) next: String,
    /// The key index each `?` of `next` binds.
    param_order: Vec<usize>,
}

impl ChunkQuery {
    /// Chunks of `limit` rows of `table` (which has a key), in key order.
    pub(crate) fn new(table: &TableInfo, limit: u64) -> Self {
        let cols = column_list(table);
        let keys: Vec<String> = table
            .key
            .iter()
            .map(|&i| ident(&table.columns[i].name))
            .collect();
        let order = keys.join(", ");
        let from = from(table);
        let (pred, param_order) = after_predicate(&keys);
        ChunkQuery {
            first: format!("SELECT {cols} FROM {from} ORDER BY {order} LIMIT {limit}"),
            next: format!("SELECT {cols} FROM {from} WHERE {pred} ORDER BY {order} LIMIT {limit}"),
            param_order,
        }
    }

    /// The parameters of `next` after the key `after` (key columns in key order).
    pub(crate) fn params(&self, after: &[My]) -> Vec<My> {
        self.param_order
            .iter()
            .map(|&i| after.get(i).cloned().unwrap_or(My::NULL))
            .collect()
    }
}

/// The whole table in one statement (a table without a key to chunk by).
pub(crate) fn select_all(table: &TableInfo) -> String {
    format!("SELECT {} FROM {}", column_list(table), from(table))
}

fn column_list(table: &TableInfo) -> String {
    let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    cols.join(", ")
}

fn from(table: &TableInfo) -> String {
    format!(
        "{}.{}",
        ident(&table.name().schema),
        ident(&table.name().name)
    )
}

/// `(k1, k2, …) > (?, ?, …)` spelled as `k1 > ? OR (k1 = ? AND k2 > ?) OR …`, which every
/// server version turns into index ranges, and the key index each `?` binds.
fn after_predicate(keys: &[String]) -> (String, Vec<usize>) {
    let mut terms = Vec::with_capacity(keys.len());
    let mut order = Vec::new();
    for i in 0..keys.len() {
        let mut parts = Vec::with_capacity(i + 1);
        for (j, k) in keys.iter().enumerate().take(i) {
            parts.push(format!("{k} = ?"));
            order.push(j);
        }
        parts.push(format!("{} > ?", keys[i]));
        order.push(i);
        terms.push(format!("({})", parts.join(" AND ")));
    }
    (terms.join(" OR "), order)
}

/// The last key of a chunk as JSON (tagged wire values, so it binds back exactly).
pub(crate) fn encode_key(values: &[My]) -> String {
    let items: Vec<serde_json::Value> = values
        .iter()
        .map(|v| match v {
            My::NULL => json!({"n": null}),
            My::Int(i) => json!({"i": i}),
            My::UInt(u) => json!({"u": u}),
            My::Float(f) => json!({"f": *f as f64}),
            My::Double(f) => json!({"d": f}),
            My::Bytes(b) => json!({"b": hex(b)}),
            My::Date(y, m, d, h, mi, s, us) => json!({"dt": [y, m, d, h, mi, s, us]}),
            My::Time(neg, d, h, m, s, us) => json!({"tm": [neg, d, h, m, s, us]}),
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Parses [`encode_key`]'s output.
pub(crate) fn decode_key(s: &str) -> Result<Vec<My>, SourceError> {
    let bad =
        |why: &str| SourceError::config(format!("snapshot resume key `{s}` is corrupt: {why}"));
    let v: serde_json::Value = serde_json::from_str(s).map_err(|_| bad("not JSON"))?;
    let items = v.as_array().ok_or_else(|| bad("not an array"))?;
    items
        .iter()
        .map(|item| {
            let obj = item
                .as_object()
                .filter(|o| o.len() == 1)
                .ok_or_else(|| bad("item"))?;
            let (tag, val) = obj.iter().next().ok_or_else(|| bad("item"))?;
            let nums = |n: usize| -> Result<Vec<u64>, SourceError> {
                let a = val
                    .as_array()
                    .filter(|a| a.len() == n)
                    .ok_or_else(|| bad("date"))?;
                a.iter()
                    .map(|x| {
                        x.as_u64()
                            .or(x.as_bool().map(u64::from))
                            .ok_or_else(|| bad("date"))
                    })
                    .collect()
            };
            Ok(match tag.as_str() {
                "n" => My::NULL,
                "i" => My::Int(val.as_i64().ok_or_else(|| bad("int"))?),
                "u" => My::UInt(val.as_u64().ok_or_else(|| bad("uint"))?),
                "f" => My::Float(val.as_f64().ok_or_else(|| bad("float"))? as f32),
                "d" => My::Double(val.as_f64().ok_or_else(|| bad("double"))?),
                "b" => My::Bytes(
                    unhex(val.as_str().ok_or_else(|| bad("bytes"))?).ok_or_else(|| bad("hex"))?,
                ),
                "dt" => {
                    let n = nums(7)?;
                    My::Date(
                        n[0] as u16,
                        n[1] as u8,
                        n[2] as u8,
                        n[3] as u8,
                        n[4] as u8,
                        n[5] as u8,
                        n[6] as u32,
                    )
                }
                "tm" => {
                    let n = nums(6)?;
                    My::Time(
                        n[0] != 0,
                        n[1] as u32,
                        n[2] as u8,
                        n[3] as u8,
                        n[4] as u8,
                        n[5] as u32,
                    )
                }
                _ => return Err(bad("unknown tag")),
            })
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.as_bytes().chunks_exact(2).remainder().is_empty() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicate() {
        let (p, o) = after_predicate(&["`a`".into(), "`b`".into()]);
        assert_eq!(p, "(`a` > ?) OR (`a` = ? AND `b` > ?)");
        assert_eq!(o, vec![0, 0, 1]);
    }

    #[test]
    fn keys_round_trip() {
        let k = vec![
            My::Int(-5),
            My::UInt(u64::MAX),
            My::Bytes(vec![0, 255, b'a']),
            My::Date(2024, 2, 29, 1, 2, 3, 4),
            My::Time(true, 1, 2, 3, 4, 5),
        ];
        assert_eq!(decode_key(&encode_key(&k)).unwrap(), k);
        assert!(decode_key("[{\"x\":1}]").is_err());
        assert!(decode_key("nope").is_err());
    }
}
