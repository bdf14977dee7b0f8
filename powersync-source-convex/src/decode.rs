//! Convex values → SQLite values.
//!
//! Two wire encodings reach this module:
//!
//! - **`convex_encoded_json`** (typed): Int64 is `{"$integer": base64(little-endian i64)}`,
//!   Bytes is `{"$bytes": base64}`, float64 values a JSON number cannot carry (NaN, ±∞, -0) are
//!   `{"$float": base64(little-endian f64)}`, every other number is a float64. Convex forbids
//!   `$`-prefixed field names in documents, so these one-key objects are unambiguous.
//! - **`json`** (the documented format): Int64 is a base-10 string, Bytes a base64 string,
//!   special floats the strings `NaN`, `Infinity`, `-Infinity`. A string is only known to be
//!   one of these through the field type `/api/json_schemas` reports ([`FieldType`]).
//!
//! Top-level fields map as DESIGN.md says: Int64 → base-10 text (or integer, see
//! [`Int64Mode`]), Bytes → blob, float64 → real (whole numbers too; NaN → null), booleans →
//! 0/1, strings and Ids → text, arrays and objects → JSON text. Inside arrays and objects both
//! encodings render the same JSON: Int64 as a base-10 string, Bytes as a base64 string, special
//! floats as `"NaN"`/`"Infinity"`/`"-Infinity"`, other floats with a fraction or exponent, and
//! booleans as `1`/`0` like at the top level (the rule for every source, see
//! [`powersync_source_core::normalize::json`]).
//!
//! Everything here is untrusted server input: malformed values are errors, never panics.

use base64::Engine as _;
use powersync_source_core::normalize::json::{write_json_bool, write_json_f64, write_json_string};
use powersync_source_core::Value;
use serde_json::Value as Json;

use crate::config::Int64Mode;

/// The type of a document field as `/api/json_schemas` describes it (used by the `json`
/// encoding to tell Int64 and Bytes from strings, and for column type names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// A string.
    String,
    /// A document id of the named table.
    Id(String),
    /// A float64 (JSON number, or a special-value string in `json`).
    Float64,
    /// An Int64.
    Int64,
    /// Bytes.
    Bytes,
    /// A boolean.
    Boolean,
    /// Null only.
    Null,
    /// An array.
    Array,
    /// An object or record.
    Object,
    /// Several types, or unknown (`v.any()`): strings stay text.
    Any,
}

impl FieldType {
    /// The type name used in column metadata.
    pub fn name(&self) -> String {
        match self {
            FieldType::String => "string".into(),
            FieldType::Id(t) => format!("id({t})"),
            FieldType::Float64 => "float64".into(),
            FieldType::Int64 => "int64".into(),
            FieldType::Bytes => "bytes".into(),
            FieldType::Boolean => "boolean".into(),
            FieldType::Null => "null".into(),
            FieldType::Array => "array".into(),
            FieldType::Object => "object".into(),
            FieldType::Any => "any".into(),
        }
    }

    /// Reads one property schema of `/api/json_schemas`. `optional` wrappers are absent there
    /// (optionality is the `required` list), unions are `anyOf`; a union of one type and null
    /// is that type.
    pub fn from_json_schema(schema: &Json) -> FieldType {
        let description = schema
            .get("$description")
            .and_then(Json::as_str)
            .unwrap_or_default();
        if description.starts_with("int64") {
            return FieldType::Int64;
        }
        if description == "base64 bytes" {
            return FieldType::Bytes;
        }
        if description == "float64" || description == "-inf, inf, or NaN" {
            return FieldType::Float64;
        }
        if let Some(table) = description
            .strip_prefix("Id(")
            .and_then(|s| s.strip_suffix(')'))
        {
            return FieldType::Id(table.to_string());
        }
        if let Some(options) = schema.get("anyOf").and_then(Json::as_array) {
            let mut found: Option<FieldType> = None;
            for option in options {
                let t = FieldType::from_json_schema(option);
                if t == FieldType::Null {
                    continue;
                }
                match &found {
                    None => found = Some(t),
                    Some(prev) if *prev == t => {}
                    Some(_) => return FieldType::Any,
                }
            }
            return found.unwrap_or(FieldType::Null);
        }
        match schema.get("type").and_then(Json::as_str) {
            Some("string") => FieldType::String,
            Some("number") | Some("integer") => FieldType::Float64,
            Some("boolean") => FieldType::Boolean,
            Some("null") => FieldType::Null,
            Some("array") => FieldType::Array,
            Some("object") => FieldType::Object,
            _ => FieldType::Any,
        }
    }

    /// The type of a typed (`convex_encoded_json`) value, for fields `/api/json_schemas` did
    /// not list yet.
    pub fn of_typed_value(v: &Json) -> FieldType {
        match v {
            Json::Null => FieldType::Null,
            Json::Bool(_) => FieldType::Boolean,
            Json::Number(_) => FieldType::Float64,
            Json::String(_) => FieldType::String,
            Json::Array(_) => FieldType::Array,
            Json::Object(map) => match typed_marker(map) {
                Some(("$integer", _)) => FieldType::Int64,
                Some(("$bytes", _)) => FieldType::Bytes,
                Some(("$float", _)) => FieldType::Float64,
                _ => FieldType::Object,
            },
        }
    }
}

/// The wire encoding of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `format=convex_encoded_json`.
    Typed,
    /// `format=json`, typed through `/api/json_schemas`.
    Json,
    /// The Data Sync API's fixed `export_json`: the typed encoding with Int64 as a plain JSON
    /// integer. Documents are rewritten with [`export_json_to_typed`] before they are decoded
    /// as [`Encoding::Typed`].
    ExportJson,
}

impl Encoding {
    /// The `format` query parameter.
    pub fn format_param(self) -> &'static str {
        match self {
            Encoding::Typed => "convex_encoded_json",
            Encoding::Json => "json",
            Encoding::ExportJson => "export_json",
        }
    }
    /// How column type names say which encoding the values were read from.
    pub fn label(self) -> &'static str {
        match self {
            Encoding::Typed => "convex_encoded_json",
            Encoding::Json => "json+json_schemas",
            Encoding::ExportJson => "export_json",
        }
    }
}

/// Rewrites a value of the Data Sync API's `export_json` encoding into the typed
/// (`convex_encoded_json`) form the decoders read: `export_json` is the typed encoding except
/// that an Int64 is a plain JSON integer (every float64 is written with a fraction or an
/// exponent, `-0.0` included, and NaN/±∞ as `{"$float": …}`), so a number without either is
/// an Int64. An integer outside the i64 range is an error.
pub fn export_json_to_typed(v: Json) -> Result<Json, String> {
    Ok(match v {
        Json::Number(n) if n.is_i64() || n.is_u64() => {
            let i = n
                .as_i64()
                .ok_or_else(|| format!("Int64 {n} is out of range"))?;
            let payload = base64::engine::general_purpose::STANDARD.encode(i.to_le_bytes());
            serde_json::json!({ "$integer": payload })
        }
        Json::Array(items) => Json::Array(
            items
                .into_iter()
                .map(export_json_to_typed)
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| Ok((k, export_json_to_typed(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other,
    })
}

fn typed_marker(map: &serde_json::Map<String, Json>) -> Option<(&str, &Json)> {
    if map.len() != 1 {
        return None;
    }
    let (k, v) = map.iter().next()?;
    k.starts_with('$').then_some((k.as_str(), v))
}

fn b64(s: &Json, what: &str) -> Result<Vec<u8>, String> {
    let s = s
        .as_str()
        .ok_or_else(|| format!("{what} payload is not a string"))?;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("{what} payload is not base64: {e}"))
}

fn eight(bytes: Vec<u8>, what: &str) -> Result<[u8; 8], String> {
    <[u8; 8]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{what} must be exactly 8 bytes, got {}", bytes.len()))
}

fn int64_value(i: i64, mode: Int64Mode) -> Value {
    match mode {
        Int64Mode::Text => powersync_source_core::normalize::integer::int64_as_text(i),
        Int64Mode::Integer => Value::Integer(i),
    }
}

fn number_f64(n: &serde_json::Number) -> Result<f64, String> {
    n.as_f64()
        .ok_or_else(|| format!("number {n} is not a float64"))
}

/// Decodes one top-level field of a `convex_encoded_json` document.
pub fn decode_typed(v: &Json, int64: Int64Mode) -> Result<Value, String> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::bool(*b),
        Json::Number(n) => Value::real(number_f64(n)?),
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(_) => Value::Text(nested_json(v, Encoding::Typed)?),
        Json::Object(map) => match typed_marker(map) {
            Some(("$integer", p)) => int64_value(
                i64::from_le_bytes(eight(b64(p, "$integer")?, "$integer")?),
                int64,
            ),
            Some(("$bytes", p)) => Value::Blob(b64(p, "$bytes")?),
            Some(("$float", p)) => {
                Value::real(f64::from_le_bytes(eight(b64(p, "$float")?, "$float")?))
            }
            Some((other, _)) => return Err(format!("unknown typed value `{other}`")),
            None => Value::Text(nested_json(v, Encoding::Typed)?),
        },
    })
}

/// Decodes one top-level field of a `json` document whose type `/api/json_schemas` reports as
/// `ty` (`None`: not reported, strings stay text).
pub fn decode_json(v: &Json, ty: Option<&FieldType>, int64: Int64Mode) -> Result<Value, String> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::bool(*b),
        Json::Number(n) => Value::real(number_f64(n)?),
        Json::String(s) => match ty {
            Some(FieldType::Int64) => {
                let i: i64 = s
                    .parse()
                    .map_err(|_| format!("`{s}` is not a base-10 Int64"))?;
                int64_value(i, int64)
            }
            Some(FieldType::Bytes) => Value::Blob(b64(v, "bytes")?),
            Some(FieldType::Float64) => match s.as_str() {
                "NaN" => Value::Null,
                "Infinity" => Value::Real(f64::INFINITY),
                "-Infinity" => Value::Real(f64::NEG_INFINITY),
                _ => return Err(format!("`{s}` is not a float64")),
            },
            _ => Value::Text(s.clone()),
        },
        Json::Array(_) | Json::Object(_) => Value::Text(nested_json(v, Encoding::Json)?),
    })
}

/// Renders an array or object as compact JSON text, typed markers resolved (see the module
/// docs), keys in the order Convex sends them (sorted).
pub fn nested_json(v: &Json, encoding: Encoding) -> Result<String, String> {
    let mut out = String::new();
    write_nested(&mut out, v, encoding, 0)?;
    Ok(out)
}

/// Convex limits nesting to 64 levels; anything deeper is not a Convex value (and must not
/// exhaust the stack).
const MAX_DEPTH: usize = 128;

fn write_special_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("\"NaN\"");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        write_json_f64(out, f);
    }
}

fn write_nested(
    out: &mut String,
    v: &Json,
    encoding: Encoding,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("value nested deeper than {MAX_DEPTH} levels"));
    }
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => write_json_bool(out, *b),
        Json::Number(n) => write_json_f64(out, number_f64(n)?),
        Json::String(s) => write_json_string(out, s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_nested(out, item, encoding, depth + 1)?;
            }
            out.push(']');
        }
        Json::Object(map) => {
            if encoding != Encoding::Json {
                match typed_marker(map) {
                    Some(("$integer", p)) => {
                        let i = i64::from_le_bytes(eight(b64(p, "$integer")?, "$integer")?);
                        out.push('"');
                        out.push_str(&i.to_string());
                        out.push('"');
                        return Ok(());
                    }
                    Some(("$bytes", p)) => {
                        // Validated, then passed on as the same base64 text `json` would send.
                        b64(p, "$bytes")?;
                        write_json_string(out, p.as_str().unwrap_or_default());
                        return Ok(());
                    }
                    Some(("$float", p)) => {
                        write_special_float(
                            out,
                            f64::from_le_bytes(eight(b64(p, "$float")?, "$float")?),
                        );
                        return Ok(());
                    }
                    Some((other, _)) => return Err(format!("unknown typed value `{other}`")),
                    None => {}
                }
            }
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, k);
                out.push(':');
                write_nested(out, item, encoding, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}
