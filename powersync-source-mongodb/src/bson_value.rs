//! BSON values → the SQLite value model (DESIGN.md "Values").
//!
//! | BSON | [`Value`] | notes |
//! |---|---|---|
//! | ObjectId | `Text`, 24 lowercase hex digits | |
//! | string, symbol | `Text` | |
//! | int32, int64 | `Integer` | |
//! | double | `Real`; NaN → `Null` | ±infinity stay `Real` |
//! | Decimal128 | `Text`, exact digits (`1.50`, `1500` for `1.5E+3`, `NaN`, `Infinity`) | never through `f64` |
//! | bool | `Integer` 0/1 | |
//! | Date | `Text` `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, always 3 fraction digits) | years outside 0–9999: astronomical years with at least four digits (`-0001-…`, `10000-…`), the core's calendar rule; every i64 millisecond value prints, none fails |
//! | Timestamp | `Integer` `(seconds << 32) \| increment` | the 64-bit value MongoDB orders by |
//! | Binary subtype 4 (UUID), 16 bytes | `Text`, lowercase `8-4-4-4-12` | |
//! | other Binary (incl. legacy UUID subtype 3, whose byte order is driver-specific) | `Blob` | |
//! | embedded document, array | `Text`, compact JSON, the same rules inside | see below |
//! | regex | `Text` `/pattern/options` | |
//! | JavaScript code (with or without scope) | `Text`, the code | the scope is dropped |
//! | DBPointer (deprecated) | `Text`, its extended JSON | |
//! | null, undefined, MinKey, MaxKey | `Null` | |
//!
//! Inside JSON (documents and arrays) the same rules apply, with booleans as JSON `true`/`false`,
//! blobs as base64 strings, non-finite doubles as `null` and Decimal128, dates, ObjectIds and UUIDs
//! as strings. Nesting deeper than [`MAX_DEPTH`] levels is a decode error (MongoDB itself stores at most
//! 100 levels), so a hostile document cannot exhaust the stack.

use std::fmt::Write as _;

use mongodb::bson::raw::{RawArray, RawBsonRef, RawDocument};
use mongodb::bson::spec::BinarySubtype;
use powersync_source_core::normalize::decimal::decimal_text;
use powersync_source_core::normalize::json::{write_json_f64, write_json_string, write_json_value};
use powersync_source_core::normalize::time::{format_timestamp_utc, FracDigits};
use powersync_source_core::normalize::uuid::format_uuid;
use powersync_source_core::Value;

/// Deepest nesting of documents and arrays converted to JSON.
pub const MAX_DEPTH: usize = 100;

/// Converts one BSON value. The error says what could not be read (the caller adds the
/// collection and field).
pub fn bson_to_value(v: RawBsonRef<'_>) -> Result<Value, String> {
    Ok(match v {
        RawBsonRef::Double(f) => Value::real(f),
        RawBsonRef::String(s) | RawBsonRef::Symbol(s) => Value::Text(s.to_owned()),
        RawBsonRef::Int32(i) => Value::Integer(i64::from(i)),
        RawBsonRef::Int64(i) => Value::Integer(i),
        RawBsonRef::Boolean(b) => Value::bool(b),
        RawBsonRef::ObjectId(oid) => Value::Text(oid.to_hex()),
        RawBsonRef::Decimal128(d) => Value::Text(decimal128_text(&d)?),
        RawBsonRef::DateTime(dt) => Value::Text(date_text(dt.timestamp_millis())),
        RawBsonRef::Timestamp(ts) => {
            Value::unsigned((u64::from(ts.time) << 32) | u64::from(ts.increment))
        }
        RawBsonRef::Binary(bin) => match uuid_bytes(bin.subtype, bin.bytes) {
            Some(uuid) => Value::Text(format_uuid(uuid)),
            None => Value::Blob(bin.bytes.to_vec()),
        },
        RawBsonRef::Document(doc) => {
            let mut out = String::new();
            write_document(&mut out, doc, 1)?;
            Value::Text(out)
        }
        RawBsonRef::Array(arr) => {
            let mut out = String::new();
            write_array(&mut out, arr, 1)?;
            Value::Text(out)
        }
        RawBsonRef::RegularExpression(re) => Value::Text(format!("/{}/{}", re.pattern, re.options)),
        RawBsonRef::JavaScriptCode(code) => Value::Text(code.to_owned()),
        RawBsonRef::JavaScriptCodeWithScope(cws) => Value::Text(cws.code.to_owned()),
        RawBsonRef::DbPointer(_) => Value::Text(extended_json(v)?),
        RawBsonRef::Null | RawBsonRef::Undefined | RawBsonRef::MinKey | RawBsonRef::MaxKey => {
            Value::Null
        }
    })
}

/// The BSON type name MongoDB uses (`$type`), for schemas and messages.
pub fn type_name(v: RawBsonRef<'_>) -> &'static str {
    match v {
        RawBsonRef::Double(_) => "double",
        RawBsonRef::String(_) => "string",
        RawBsonRef::Symbol(_) => "symbol",
        RawBsonRef::Int32(_) => "int",
        RawBsonRef::Int64(_) => "long",
        RawBsonRef::Boolean(_) => "bool",
        RawBsonRef::ObjectId(_) => "objectId",
        RawBsonRef::Decimal128(_) => "decimal",
        RawBsonRef::DateTime(_) => "date",
        RawBsonRef::Timestamp(_) => "timestamp",
        RawBsonRef::Binary(_) => "binData",
        RawBsonRef::Document(_) => "object",
        RawBsonRef::Array(_) => "array",
        RawBsonRef::RegularExpression(_) => "regex",
        RawBsonRef::JavaScriptCode(_) => "javascript",
        RawBsonRef::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        RawBsonRef::DbPointer(_) => "dbPointer",
        RawBsonRef::Null => "null",
        RawBsonRef::Undefined => "undefined",
        RawBsonRef::MinKey => "minKey",
        RawBsonRef::MaxKey => "maxKey",
    }
}

/// A whole document as JSON text (the same rules as for embedded documents).
pub fn document_json(doc: &RawDocument) -> Result<String, String> {
    let mut out = String::new();
    write_document(&mut out, doc, 1)?;
    Ok(out)
}

fn decimal128_text(d: &mongodb::bson::Decimal128) -> Result<String, String> {
    // The bson crate prints the IEEE 754-2008 string form (`1.5E+3`, `-0.00`); the core turns it
    // into plain exact digits.
    let printed = d.to_string();
    decimal_text(&printed).map_err(|e| format!("Decimal128 {printed}: {e}"))
}

/// Milliseconds since the epoch → `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn date_text(millis: i64) -> String {
    format_timestamp_utc(i128::from(millis) * 1_000_000, FracDigits::Fixed(3))
}

fn uuid_bytes(subtype: BinarySubtype, bytes: &[u8]) -> Option<&[u8; 16]> {
    match subtype {
        BinarySubtype::Uuid => bytes.try_into().ok(),
        _ => None,
    }
}

fn extended_json(v: RawBsonRef<'_>) -> Result<String, String> {
    let owned = mongodb::bson::Bson::try_from(v.to_raw_bson()).map_err(|e| e.to_string())?;
    Ok(owned.into_relaxed_extjson().to_string())
}

fn too_deep() -> String {
    format!("documents and arrays nested deeper than {MAX_DEPTH} levels are not supported")
}

fn write_document(out: &mut String, doc: &RawDocument, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    out.push('{');
    for (i, element) in doc.iter().enumerate() {
        let (key, value) = element.map_err(|e| format!("malformed BSON document: {e}"))?;
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, key);
        out.push(':');
        write_json(out, value, depth)?;
    }
    out.push('}');
    Ok(())
}

fn write_array(out: &mut String, arr: &RawArray, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    out.push('[');
    for (i, element) in arr.into_iter().enumerate() {
        let value = element.map_err(|e| format!("malformed BSON array: {e}"))?;
        if i > 0 {
            out.push(',');
        }
        write_json(out, value, depth)?;
    }
    out.push(']');
    Ok(())
}

/// One value inside JSON.
fn write_json(out: &mut String, v: RawBsonRef<'_>, depth: usize) -> Result<(), String> {
    match v {
        RawBsonRef::Document(doc) => write_document(out, doc, depth + 1),
        RawBsonRef::Array(arr) => write_array(out, arr, depth + 1),
        RawBsonRef::Boolean(b) => {
            out.push_str(if b { "true" } else { "false" });
            Ok(())
        }
        RawBsonRef::Double(f) => {
            // NaN and infinities have no JSON form: null.
            write_json_f64(out, f);
            Ok(())
        }
        RawBsonRef::Int32(i) => {
            let _ = write!(out, "{i}");
            Ok(())
        }
        RawBsonRef::Int64(i) => {
            let _ = write!(out, "{i}");
            Ok(())
        }
        other => {
            write_json_value(out, &bson_to_value(other)?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, Bson, RawDocumentBuf};

    fn convert(b: Bson) -> Value {
        let doc = RawDocumentBuf::from_document(&doc! {"v": b}).unwrap();
        bson_to_value(doc.get("v").unwrap().unwrap()).unwrap()
    }

    #[test]
    fn depth_limit_errors_clearly() {
        let mut b = Bson::Int32(1);
        for _ in 0..(MAX_DEPTH + 5) {
            b = Bson::Array(vec![b]);
        }
        let doc = RawDocumentBuf::from_document(&doc! {"v": b}).unwrap();
        let err = bson_to_value(doc.get("v").unwrap().unwrap()).unwrap_err();
        assert!(err.contains("nested deeper than 100"), "{err}");
        let mut ok = Bson::Int32(1);
        for _ in 0..MAX_DEPTH {
            ok = Bson::Array(vec![ok]);
        }
        assert!(matches!(convert(ok), Value::Text(_)));
    }

    #[test]
    fn nan_is_null() {
        assert_eq!(convert(Bson::Double(f64::NAN)), Value::Null);
    }
}
