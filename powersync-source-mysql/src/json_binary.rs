//! MySQL binary JSON (the JSON column format in MySQL 5.7+ row images) → the text MySQL itself
//! prints for the document (`{"a": 1, "b": [true, null]}`: `": "` and `", "` separators, keys
//! in stored order, which is MySQL's canonical order), so the binlog path gives the same text
//! as the snapshot path's `SELECT`. MariaDB stores JSON as text and never reaches this module.
//!
//! The structure is parsed by `mysql_common` (`binlog::jsonb`); this module renders it, with a
//! depth limit so a hostile document cannot overflow the stack.

use mysql_common::binlog::jsonb::{self, StorageFormat};
use mysql_common::binlog::misc::{datetime_from_packed, time_from_packed};
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;
use mysql_common::value::Value as My;
use powersync_source_core::normalize::json::{write_json_f64, write_json_string};

/// Deepest nesting rendered (MySQL itself refuses documents deeper than 100).
const MAX_DEPTH: usize = 128;

/// Parses and renders a binary JSON value from its raw bytes.
pub(crate) fn to_text(raw: &[u8]) -> Result<String, String> {
    let mut buf = ParseBuf(raw);
    let value: jsonb::Value<'_> = buf
        .parse(())
        .map_err(|e| format!("invalid binary JSON: {e}"))?;
    render_value(&value)
}

/// Renders an already parsed binary JSON value.
pub(crate) fn render_value(v: &jsonb::Value<'_>) -> Result<String, String> {
    let mut out = String::new();
    render(v, &mut out, 0)?;
    Ok(out)
}

fn render(v: &jsonb::Value<'_>, out: &mut String, depth: usize) -> Result<(), String> {
    use jsonb::Value as J;
    if depth > MAX_DEPTH {
        return Err(format!("binary JSON nested deeper than {MAX_DEPTH}"));
    }
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::I16(i) => out.push_str(&i.to_string()),
        J::U16(i) => out.push_str(&i.to_string()),
        J::I32(i) => out.push_str(&i.to_string()),
        J::U32(i) => out.push_str(&i.to_string()),
        J::I64(i) => out.push_str(&i.to_string()),
        J::U64(i) => out.push_str(&i.to_string()),
        J::F64(f) => write_json_f64(out, *f),
        J::String(s) => write_json_string(out, &s.str()),
        J::SmallArray(a) => array(a, out, depth)?,
        J::LargeArray(a) => array(a, out, depth)?,
        J::SmallObject(o) => object(o, out, depth)?,
        J::LargeObject(o) => object(o, out, depth)?,
        J::Opaque(o) => opaque(o.value_type(), o.data_raw(), out)?,
    }
    Ok(())
}

fn array<T: StorageFormat>(
    a: &jsonb::ComplexValue<'_, T, jsonb::Array>,
    out: &mut String,
    depth: usize,
) -> Result<(), String> {
    out.push('[');
    for (i, e) in a.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let e = e.map_err(|e| format!("invalid binary JSON array: {e}"))?;
        render(&e, out, depth + 1)?;
    }
    out.push(']');
    Ok(())
}

fn object<T: StorageFormat>(
    o: &jsonb::ComplexValue<'_, T, jsonb::Object>,
    out: &mut String,
    depth: usize,
) -> Result<(), String> {
    out.push('{');
    for (i, e) in o.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let (k, v) = e.map_err(|e| format!("invalid binary JSON object: {e}"))?;
        write_json_string(out, &k.value());
        out.push_str(": ");
        render(&v, out, depth + 1)?;
    }
    out.push('}');
    Ok(())
}

/// Opaque scalars: MySQL prints DECIMAL as a number, temporal values as quoted strings with
/// six fraction digits, and anything else as `"base64:typeNN:…"`.
fn opaque(ty: ColumnType, data: &[u8], out: &mut String) -> Result<(), String> {
    use ColumnType::*;
    match ty {
        MYSQL_TYPE_NEWDECIMAL => {
            let (&precision, rest) = data.split_first().ok_or("empty JSON decimal")?;
            let (&scale, bin) = rest.split_first().ok_or("truncated JSON decimal")?;
            if precision == 0 || precision > 65 || scale > precision || scale > 30 {
                return Err(format!(
                    "invalid JSON decimal precision {precision} scale {scale}"
                ));
            }
            let d = mysql_common::binlog::decimal::Decimal::read_bin(
                bin,
                precision as usize,
                scale as usize,
                false,
            )
            .map_err(|e| format!("invalid JSON decimal: {e}"))?;
            out.push_str(&d.to_string());
        }
        MYSQL_TYPE_DATE | MYSQL_TYPE_DATETIME | MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIME => {
            let packed = ParseBuf(data)
                .checked_eat_i64_le()
                .ok_or("truncated JSON temporal value")?;
            let text = if ty == MYSQL_TYPE_TIME {
                match time_from_packed(packed) {
                    My::Time(neg, d, h, m, s, us) => format!(
                        "{}{:02}:{:02}:{:02}.{us:06}",
                        if neg { "-" } else { "" },
                        d as u64 * 24 + h as u64,
                        m,
                        s
                    ),
                    other => return Err(format!("bad JSON time {other:?}")),
                }
            } else {
                match datetime_from_packed(packed) {
                    My::Date(y, mo, d, h, mi, s, us) if ty == MYSQL_TYPE_DATE => {
                        let _ = (h, mi, s, us);
                        format!("{y:04}-{mo:02}-{d:02}")
                    }
                    My::Date(y, mo, d, h, mi, s, us) => {
                        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
                    }
                    other => return Err(format!("bad JSON datetime {other:?}")),
                }
            };
            write_json_string(out, &text);
        }
        other => {
            use base64_lite::encode;
            write_json_string(out, &format!("base64:type{}:{}", other as u8, encode(data)));
        }
    }
    Ok(())
}

/// Standard base64 with padding, for MySQL's opaque JSON rendering.
mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"a": 1, "b": [true, "x"]}` built by hand to the documented format
    /// (MySQL `json_binary.h`): small object = count u16, size u16, key entries (offset u16,
    /// length u16), value entries (type u8, inlined value or offset u16), keys, values.
    #[test]
    fn renders_like_mysql() {
        // Object: count 2, size; key entries at 4..12; value entries at 12..18; keys at 18..20;
        // array value at 20.
        let mut obj: Vec<u8> = vec![
            2, 0, 0, 0, // count, size (patched)
            18, 0, 1, 0, // key "a" at 18
            19, 0, 1, 0, // key "b" at 19
            0x05, 1, 0, // int16 1 inline
            0x02, 20, 0, // small array at 20
            b'a', b'b',
        ];
        // Array at object offset 20: count 2, size 12; entries: true inline, string at 10.
        let array: Vec<u8> = vec![2, 0, 12, 0, 0x04, 0x01, 0x00, 0x0c, 10, 0, 1, b'x'];
        obj.extend_from_slice(&array);
        let size = obj.len() as u16;
        obj[2..4].copy_from_slice(&size.to_le_bytes());
        let mut raw = vec![0x00]; // small object
        raw.extend_from_slice(&obj);
        assert_eq!(to_text(&raw).unwrap(), r#"{"a": 1, "b": [true, "x"]}"#);
    }

    #[test]
    fn scalars_and_garbage() {
        assert_eq!(to_text(&[0x04, 0x00]).unwrap(), "null");
        assert_eq!(to_text(&[0x0c, 2, b'h', b'i']).unwrap(), "\"hi\"");
        assert!(to_text(&[0x02, 5, 0, 1, 0]).is_err());
        assert!(to_text(&[0x77]).is_err());
    }
}
