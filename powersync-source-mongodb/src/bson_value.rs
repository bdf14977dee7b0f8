//! BSON values → the SQLite value model (DESIGN.md "Values"), the shapes PowerSync writes
//! (its MongoDB test vectors decided every row marked ★).
//!
//! | BSON | [`Value`] | notes |
//! |---|---|---|
//! | ObjectId | `Text`, 24 lowercase hex digits | |
//! | string, symbol | `Text` | ★ bytes that are not valid UTF-8, at any depth, become U+FFFD (`�`); never an error |
//! | int32, int64 | `Integer` | |
//! | double | `Real`; NaN → `Null` | ±infinity stay `Real` |
//! | Decimal128 | `Text`, exact digits (`1.50`, `1500` for `1.5E+3`, `NaN`, `Infinity`) | never through `f64` |
//! | bool | `Integer` 0/1 | ★ inside JSON `1`/`0` too |
//! | Date | `Text` `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, always 3 fraction digits) | ★ years outside 0000–9999 in ISO 8601 expanded form (`+010000-01-01T00:00:00.000Z`, `-000001-12-31T23:59:59.999Z`), the core's calendar rule; every i64 millisecond value prints, none fails |
//! | Timestamp | `Integer` `(seconds << 32) \| increment` | the 64-bit value MongoDB orders by |
//! | Binary subtype 4 (UUID), 16 bytes | `Text`, lowercase `8-4-4-4-12` | |
//! | other Binary (incl. legacy UUID subtype 3, whose byte order is driver-specific) | `Blob` | |
//! | embedded document, array | `Text`, compact JSON, the same rules inside | see below |
//! | regex | `Text` `{"pattern":"^a","options":"i"}` | ★ the options as stored |
//! | JavaScript code | `Text` `{"code":"…","scope":null}` | ★ |
//! | JavaScript code with scope | `Text` `{"code":"…","scope":{…}}` | ★ the scope converted like a document |
//! | DBPointer (deprecated) | `Text` `{"collection":"c","oid":"…","fields":{}}`; a namespace `db.c` adds `"db":"db"` after `oid` | ★ DBRef's shape |
//! | null, undefined, MinKey, MaxKey | `Null` | |
//!
//! Inside JSON (documents and arrays) the same rules apply: booleans are `1`/`0`
//! ([`write_json_bool`]), regexes, code and DBPointers are the objects above (not strings),
//! blobs are base64 strings, non-finite doubles `null`, and Decimal128, dates, ObjectIds and
//! UUIDs strings. Nesting deeper than [`MAX_DEPTH`] levels is a decode error (MongoDB itself
//! stores at most 100 levels), so a hostile document cannot exhaust the stack.
//!
//! # Reading the bytes
//!
//! Documents are read from their BSON bytes by the bounds-checked reader below rather than
//! through the `bson` crate's iterators, which refuse a whole document when one string, key
//! or regex in it is not valid UTF-8. MongoDB stores such strings (it does not validate
//! UTF-8 on every path, e.g. strings written by old drivers), and a stream must not stop on
//! one: text is decoded lossily instead, as PowerSync does. Lengths, terminators and type
//! tags are still checked, so malformed BSON is an error, never a panic or a wrong value.

use std::borrow::Cow;
use std::fmt::Write as _;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::raw::{RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::Decimal128;
use powersync_source_core::normalize::decimal::decimal_text;
use powersync_source_core::normalize::json::{
    write_json_bool, write_json_f64, write_json_string, write_json_value,
};
use powersync_source_core::normalize::time::{format_timestamp_utc, FracDigits};
use powersync_source_core::normalize::uuid::format_uuid;
use powersync_source_core::Value;

/// Deepest nesting of documents and arrays converted to JSON.
pub const MAX_DEPTH: usize = 100;

/// Converts one BSON value. The error says what could not be read (the caller adds the
/// collection and field). Documents, arrays and scopes inside `v` are read from their bytes,
/// with lossy UTF-8 (see the module docs).
pub fn bson_to_value(v: RawBsonRef<'_>) -> Result<Value, String> {
    match Element::from_raw(v) {
        Some(element) => element.to_value(),
        None => {
            // The bson crate keeps a DBPointer's parts private: read them back from its
            // encoding in a one-field document (rare: the type is deprecated).
            let mut doc = RawDocumentBuf::new();
            doc.append_ref("v", v);
            match fields(&doc).next() {
                Some(field) => field?.to_value(),
                None => Err("unreadable DBPointer".to_owned()),
            }
        }
    }
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
    write_document(&mut out, doc.as_bytes(), 1)?;
    Ok(out)
}

/// Milliseconds since the epoch → `YYYY-MM-DDTHH:MM:SS.mmmZ` (years outside 0000–9999 in
/// the expanded form `+010000-…` / `-000001-…`).
pub fn date_text(millis: i64) -> String {
    format_timestamp_utc(i128::from(millis) * 1_000_000, FracDigits::Fixed(3))
}

/// The top-level fields of `doc`, read from its bytes: keys and text decoded lossily, the
/// structure checked. Iteration ends after the first error.
pub(crate) fn fields(doc: &RawDocument) -> Fields<'_> {
    Fields::new(doc.as_bytes())
}

/// One field of a document (see [`fields`]).
pub(crate) struct Field<'a> {
    /// The field name (U+FFFD where its bytes are not UTF-8).
    pub key: Cow<'a, str>,
    element: Element<'a>,
    /// The element as stored: type byte, name, value.
    raw: &'a [u8],
}

impl<'a> Field<'a> {
    /// The element's bytes exactly as stored (type byte, name, value), invalid UTF-8 included:
    /// how a value is passed back to the server unchanged (the snapshot's `_id` bounds).
    pub fn raw_element(&self) -> &'a [u8] {
        self.raw
    }

    /// The BSON type name (see [`type_name`]).
    pub fn type_name(&self) -> &'static str {
        self.element.type_name()
    }

    /// The converted value (see the module docs).
    pub fn to_value(&self) -> Result<Value, String> {
        self.element.to_value()
    }
}

/// A BSON value borrowed from a document's bytes. Text fields hold raw bytes, decoded lossily
/// when used.
#[derive(Debug, Clone, Copy)]
enum Element<'a> {
    Double(f64),
    String(&'a [u8]),
    /// An embedded document: its full bytes (length prefix to terminator).
    Document(&'a [u8]),
    /// An array: its full bytes, a document whose keys are ignored.
    Array(&'a [u8]),
    Binary {
        subtype: u8,
        data: &'a [u8],
    },
    Undefined,
    ObjectId([u8; 12]),
    Boolean(bool),
    DateTime(i64),
    Null,
    Regex {
        pattern: &'a [u8],
        options: &'a [u8],
    },
    DbPointer {
        namespace: &'a [u8],
        oid: [u8; 12],
    },
    Code(&'a [u8]),
    Symbol(&'a [u8]),
    CodeWithScope {
        code: &'a [u8],
        /// The scope document's full bytes.
        scope: &'a [u8],
    },
    Int32(i32),
    Timestamp {
        time: u32,
        increment: u32,
    },
    Int64(i64),
    Decimal128([u8; 16]),
    MinKey,
    MaxKey,
}

impl<'a> Element<'a> {
    /// The same value as an [`Element`] (strings in a `RawBsonRef` are valid UTF-8 already;
    /// nested documents are read from their bytes). `None` for a DBPointer, whose parts the
    /// bson crate does not expose.
    fn from_raw(v: RawBsonRef<'a>) -> Option<Element<'a>> {
        Some(match v {
            RawBsonRef::Double(f) => Element::Double(f),
            RawBsonRef::String(s) => Element::String(s.as_bytes()),
            RawBsonRef::Document(d) => Element::Document(d.as_bytes()),
            RawBsonRef::Array(a) => Element::Array(a.as_bytes()),
            RawBsonRef::Binary(b) => Element::Binary {
                subtype: u8::from(b.subtype),
                data: b.bytes,
            },
            RawBsonRef::Undefined => Element::Undefined,
            RawBsonRef::ObjectId(oid) => Element::ObjectId(oid.bytes()),
            RawBsonRef::Boolean(b) => Element::Boolean(b),
            RawBsonRef::DateTime(dt) => Element::DateTime(dt.timestamp_millis()),
            RawBsonRef::Null => Element::Null,
            RawBsonRef::RegularExpression(re) => Element::Regex {
                pattern: re.pattern.as_bytes(),
                options: re.options.as_bytes(),
            },
            RawBsonRef::DbPointer(_) => return None,
            RawBsonRef::JavaScriptCode(code) => Element::Code(code.as_bytes()),
            RawBsonRef::Symbol(s) => Element::Symbol(s.as_bytes()),
            RawBsonRef::JavaScriptCodeWithScope(cws) => Element::CodeWithScope {
                code: cws.code.as_bytes(),
                scope: cws.scope.as_bytes(),
            },
            RawBsonRef::Int32(i) => Element::Int32(i),
            RawBsonRef::Timestamp(ts) => Element::Timestamp {
                time: ts.time,
                increment: ts.increment,
            },
            RawBsonRef::Int64(i) => Element::Int64(i),
            RawBsonRef::Decimal128(d) => Element::Decimal128(d.bytes()),
            RawBsonRef::MinKey => Element::MinKey,
            RawBsonRef::MaxKey => Element::MaxKey,
        })
    }

    fn type_name(&self) -> &'static str {
        match self {
            Element::Double(_) => "double",
            Element::String(_) => "string",
            Element::Symbol(_) => "symbol",
            Element::Int32(_) => "int",
            Element::Int64(_) => "long",
            Element::Boolean(_) => "bool",
            Element::ObjectId(_) => "objectId",
            Element::Decimal128(_) => "decimal",
            Element::DateTime(_) => "date",
            Element::Timestamp { .. } => "timestamp",
            Element::Binary { .. } => "binData",
            Element::Document(_) => "object",
            Element::Array(_) => "array",
            Element::Regex { .. } => "regex",
            Element::Code(_) => "javascript",
            Element::CodeWithScope { .. } => "javascriptWithScope",
            Element::DbPointer { .. } => "dbPointer",
            Element::Null => "null",
            Element::Undefined => "undefined",
            Element::MinKey => "minKey",
            Element::MaxKey => "maxKey",
        }
    }

    /// The top-level value.
    fn to_value(self) -> Result<Value, String> {
        Ok(match self {
            Element::Double(f) => Value::real(f),
            Element::String(s) | Element::Symbol(s) => Value::Text(lossy(s).into_owned()),
            Element::Int32(i) => Value::Integer(i64::from(i)),
            Element::Int64(i) => Value::Integer(i),
            Element::Boolean(b) => Value::bool(b),
            Element::ObjectId(oid) => Value::Text(ObjectId::from_bytes(oid).to_hex()),
            Element::Decimal128(d) => Value::Text(decimal128_text(d)?),
            Element::DateTime(millis) => Value::Text(date_text(millis)),
            Element::Timestamp { time, increment } => {
                Value::unsigned((u64::from(time) << 32) | u64::from(increment))
            }
            Element::Binary { subtype, data } => match uuid_bytes(subtype, data) {
                Some(uuid) => Value::Text(format_uuid(uuid)),
                None => Value::Blob(data.to_vec()),
            },
            Element::Null | Element::Undefined | Element::MinKey | Element::MaxKey => Value::Null,
            // Documents, arrays and the object shapes: JSON text.
            Element::Document(_)
            | Element::Array(_)
            | Element::Regex { .. }
            | Element::Code(_)
            | Element::CodeWithScope { .. }
            | Element::DbPointer { .. } => {
                let mut out = String::new();
                self.write_json(&mut out, 0)?;
                Value::Text(out)
            }
        })
    }

    /// Writes the value as JSON; `depth` is the nesting level of the container holding it
    /// (0 for a top-level field).
    fn write_json(self, out: &mut String, depth: usize) -> Result<(), String> {
        match self {
            Element::Document(d) => write_document(out, d, depth + 1)?,
            Element::Array(a) => write_array(out, a, depth + 1)?,
            Element::Boolean(b) => write_json_bool(out, b),
            // NaN and infinities have no JSON form: null.
            Element::Double(f) => write_json_f64(out, f),
            Element::Int32(i) => {
                let _ = write!(out, "{i}");
            }
            Element::Int64(i) => {
                let _ = write!(out, "{i}");
            }
            Element::String(s) | Element::Symbol(s) => write_json_string(out, &lossy(s)),
            Element::Regex { pattern, options } => {
                out.push_str("{\"pattern\":");
                write_json_string(out, &lossy(pattern));
                out.push_str(",\"options\":");
                write_json_string(out, &lossy(options));
                out.push('}');
            }
            Element::Code(code) => {
                out.push_str("{\"code\":");
                write_json_string(out, &lossy(code));
                out.push_str(",\"scope\":null}");
            }
            Element::CodeWithScope { code, scope } => {
                out.push_str("{\"code\":");
                write_json_string(out, &lossy(code));
                out.push_str(",\"scope\":");
                write_document(out, scope, depth + 1)?;
                out.push('}');
            }
            Element::DbPointer { namespace, oid } => {
                // DBRef's shape, as PowerSync writes it: the namespace `db.collection` split
                // at its first dot.
                let namespace = lossy(namespace);
                let (db, collection) = match namespace.split_once('.') {
                    Some((db, collection)) => (Some(db), collection),
                    None => (None, &*namespace),
                };
                out.push_str("{\"collection\":");
                write_json_string(out, collection);
                out.push_str(",\"oid\":");
                write_json_string(out, &ObjectId::from_bytes(oid).to_hex());
                if let Some(db) = db {
                    out.push_str(",\"db\":");
                    write_json_string(out, db);
                }
                out.push_str(",\"fields\":{}}");
            }
            _ => write_json_value(out, &self.to_value()?),
        }
        Ok(())
    }
}

fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn decimal128_text(bytes: [u8; 16]) -> Result<String, String> {
    // The bson crate prints the IEEE 754-2008 string form (`1.5E+3`, `-0.00`); the core turns it
    // into plain exact digits.
    let printed = Decimal128::from_bytes(bytes).to_string();
    decimal_text(&printed).map_err(|e| format!("Decimal128 {printed}: {e}"))
}

fn uuid_bytes(subtype: u8, bytes: &[u8]) -> Option<&[u8; 16]> {
    match BinarySubtype::from(subtype) {
        BinarySubtype::Uuid => bytes.try_into().ok(),
        _ => None,
    }
}

fn too_deep() -> String {
    format!("documents and arrays nested deeper than {MAX_DEPTH} levels are not supported")
}

/// Writes the document in `bytes` as a JSON object; `depth` is its own nesting level.
fn write_document(out: &mut String, bytes: &[u8], depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    out.push('{');
    for (i, field) in Fields::new(bytes).enumerate() {
        let field = field?;
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, &field.key);
        out.push(':');
        field.element.write_json(out, depth)?;
    }
    out.push('}');
    Ok(())
}

/// Writes the array in `bytes` as a JSON array (its keys, `"0"`, `"1"`…, are not checked).
fn write_array(out: &mut String, bytes: &[u8], depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    out.push('[');
    for (i, field) in Fields::new(bytes).enumerate() {
        let field = field?;
        if i > 0 {
            out.push(',');
        }
        field.element.write_json(out, depth)?;
    }
    out.push(']');
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The bounds-checked BSON reader

/// The fields of one BSON document (`int32 length, elements, 0x00`), in order.
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    /// Offset of the next element's type byte.
    pos: usize,
    /// Offset of the document's terminating zero byte.
    end: usize,
    /// Set after the last element or an error.
    done: bool,
    /// An error found before the first element (a bad length or terminator).
    pending: Option<String>,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Fields<'a> {
        let mut fields = Fields {
            bytes,
            pos: 4,
            end: 0,
            done: false,
            pending: None,
        };
        match document_len(bytes, 0) {
            Ok(len) if len == bytes.len() => fields.end = len - 1,
            Ok(len) => {
                fields.pending = Some(malformed(format!(
                    "document length {len} but {} bytes",
                    bytes.len()
                )))
            }
            Err(e) => fields.pending = Some(e),
        }
        fields
    }

    /// Reads the element starting at `self.pos` and moves past it.
    fn element(&mut self) -> Result<Field<'a>, String> {
        let mut r = Reader {
            bytes: &self.bytes[..self.end],
            pos: self.pos,
        };
        let start = r.pos;
        let tag = r.u8()?;
        let key = lossy(r.cstring()?);
        let element = match tag {
            0x01 => Element::Double(f64::from_le_bytes(r.array()?)),
            0x02 => Element::String(r.string()?),
            0x03 => Element::Document(r.document()?),
            0x04 => Element::Array(r.document()?),
            0x05 => {
                let len = r.len()?;
                let subtype = r.u8()?;
                let data = r.take(len)?;
                Element::Binary {
                    subtype,
                    data: binary_data(subtype, data)?,
                }
            }
            0x06 => Element::Undefined,
            0x07 => Element::ObjectId(r.array()?),
            0x08 => Element::Boolean(match r.u8()? {
                0 => false,
                1 => true,
                other => return Err(malformed(format!("boolean byte {other}"))),
            }),
            0x09 => Element::DateTime(i64::from_le_bytes(r.array()?)),
            0x0A => Element::Null,
            0x0B => Element::Regex {
                pattern: r.cstring()?,
                options: r.cstring()?,
            },
            0x0C => Element::DbPointer {
                namespace: r.string()?,
                oid: r.array()?,
            },
            0x0D => Element::Code(r.string()?),
            0x0E => Element::Symbol(r.string()?),
            0x0F => {
                let start = r.pos;
                let total = r.len()?;
                let code = r.string()?;
                let scope = r.document()?;
                if r.pos - start != total {
                    return Err(malformed(format!(
                        "code with scope length {total} but {} bytes",
                        r.pos - start
                    )));
                }
                Element::CodeWithScope { code, scope }
            }
            0x10 => Element::Int32(i32::from_le_bytes(r.array()?)),
            0x11 => {
                // Stored as one little-endian u64: the increment in the low half.
                let increment = u32::from_le_bytes(r.array()?);
                let time = u32::from_le_bytes(r.array()?);
                Element::Timestamp { time, increment }
            }
            0x12 => Element::Int64(i64::from_le_bytes(r.array()?)),
            0x13 => Element::Decimal128(r.array()?),
            0xFF => Element::MinKey,
            0x7F => Element::MaxKey,
            other => return Err(malformed(format!("unknown element type 0x{other:02x}"))),
        };
        self.pos = r.pos;
        Ok(Field {
            key,
            element,
            raw: &self.bytes[start..r.pos],
        })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(e) = self.pending.take() {
            self.done = true;
            return Some(Err(e));
        }
        if self.pos >= self.end {
            self.done = true;
            return None;
        }
        let field = self.element();
        if field.is_err() {
            self.done = true;
        }
        Some(field)
    }
}

/// The legacy binary subtype 2 wraps its bytes in a second length; the others are the bytes.
fn binary_data(subtype: u8, data: &[u8]) -> Result<&[u8], String> {
    if subtype != 0x02 {
        return Ok(data);
    }
    let mut r = Reader {
        bytes: data,
        pos: 0,
    };
    let inner = r.len()?;
    if inner + 4 != data.len() {
        return Err(malformed("old binary subtype with a wrong inner length"));
    }
    r.take(inner)
}

fn malformed(why: impl std::fmt::Display) -> String {
    format!("malformed BSON: {why}")
}

/// The declared length of the document starting at `at`, checked against the bytes there
/// (at least 5, within `bytes`, ending in a zero byte).
fn document_len(bytes: &[u8], at: usize) -> Result<usize, String> {
    let mut r = Reader { bytes, pos: at };
    let len = r.len()?;
    if len < 5 {
        return Err(malformed(format!("document length {len}")));
    }
    match at.checked_add(len).and_then(|end| bytes.get(end - 1)) {
        Some(0) => Ok(len),
        Some(_) => Err(malformed("document not terminated by a zero byte")),
        None => Err(malformed(format!("document length {len} beyond its bytes"))),
    }
}

/// A cursor over bytes where every read is checked against the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| malformed("a value runs past the end of its document"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self.take(N)?;
        // `take` returned exactly N bytes.
        bytes
            .try_into()
            .map_err(|_| malformed("a value runs past the end of its document"))
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    /// A non-negative int32 length.
    fn len(&mut self) -> Result<usize, String> {
        let n = i32::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| malformed(format!("negative length {n}")))
    }

    /// Bytes up to a zero byte, which is consumed.
    fn cstring(&mut self) -> Result<&'a [u8], String> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed("unterminated key or regex"))?;
        let out = self.take(n)?;
        self.pos += 1;
        Ok(out)
    }

    /// A length-prefixed, zero-terminated string's bytes (without the zero).
    fn string(&mut self) -> Result<&'a [u8], String> {
        let len = self.len()?;
        if len == 0 {
            return Err(malformed("string length 0"));
        }
        let bytes = self.take(len)?;
        match bytes.split_last() {
            Some((0, text)) => Ok(text),
            _ => Err(malformed("string not terminated by a zero byte")),
        }
    }

    /// An embedded document's full bytes.
    fn document(&mut self) -> Result<&'a [u8], String> {
        let len = document_len(self.bytes, self.pos)?;
        self.take(len)
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

    /// The field `v` of a document holding one element of type `tag` with `body` bytes, read
    /// by the document reader (as the snapshot and the stream read fields).
    fn raw_field(tag: u8, body: &[u8]) -> Result<Value, String> {
        let bytes = raw_doc(tag, b"v", body);
        let doc = RawDocument::from_bytes(&bytes).map_err(|e| e.to_string())?;
        let field = fields(doc).next().expect("one field")?;
        assert_eq!(field.key, "v");
        field.to_value()
    }

    fn raw_doc(tag: u8, key: &[u8], body: &[u8]) -> Vec<u8> {
        let mut out = vec![0; 4];
        out.push(tag);
        out.extend_from_slice(key);
        out.push(0);
        out.extend_from_slice(body);
        out.push(0);
        let len = out.len() as i32;
        out[..4].copy_from_slice(&len.to_le_bytes());
        out
    }

    fn bson_string(bytes: &[u8]) -> Vec<u8> {
        let mut out = ((bytes.len() + 1) as i32).to_le_bytes().to_vec();
        out.extend_from_slice(bytes);
        out.push(0);
        out
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

    #[test]
    fn invalid_utf8_becomes_replacement_text_at_any_depth() {
        let bad = bson_string(&[b'a', 0xff, b'b']);
        assert_eq!(raw_field(0x02, &bad), Ok(Value::Text("a\u{fffd}b".into())));
        assert_eq!(raw_field(0x0E, &bad), Ok(Value::Text("a\u{fffd}b".into())));
        let nested = raw_doc(0x02, b"n", &bad);
        assert_eq!(
            raw_field(0x03, &nested),
            Ok(Value::Text("{\"n\":\"a\u{fffd}b\"}".into()))
        );
        // a key that is not UTF-8, and a regex
        let key = raw_doc(0x10, &[b'k', 0xc3], &1i32.to_le_bytes());
        assert_eq!(
            raw_field(0x03, &key),
            Ok(Value::Text("{\"k\u{fffd}\":1}".into()))
        );
        assert_eq!(
            raw_field(0x0B, &[b'^', 0xfe, 0, b'i', 0]),
            Ok(Value::Text(
                "{\"pattern\":\"^\u{fffd}\",\"options\":\"i\"}".into()
            ))
        );
        // code, code with scope, DBPointer
        assert_eq!(
            raw_field(0x0D, &bad),
            Ok(Value::Text(
                "{\"code\":\"a\u{fffd}b\",\"scope\":null}".into()
            ))
        );
        let mut cws = Vec::new();
        let scope = raw_doc(0x02, b"s", &bad);
        let total = 4 + bad.len() + scope.len();
        cws.extend_from_slice(&(total as i32).to_le_bytes());
        cws.extend_from_slice(&bad);
        cws.extend_from_slice(&scope);
        assert_eq!(
            raw_field(0x0F, &cws),
            Ok(Value::Text(
                "{\"code\":\"a\u{fffd}b\",\"scope\":{\"s\":\"a\u{fffd}b\"}}".into()
            ))
        );
        let mut ptr = bson_string(&[b'd', b'.', 0xff]);
        ptr.extend_from_slice(&[0x11; 12]);
        assert_eq!(
            raw_field(0x0C, &ptr),
            Ok(Value::Text(
                "{\"collection\":\"\u{fffd}\",\"oid\":\"111111111111111111111111\",\"db\":\"d\",\"fields\":{}}"
                    .into()
            ))
        );
    }

    #[test]
    fn malformed_bytes_are_errors() {
        // string length beyond the document, missing terminator, zero length
        assert!(raw_field(0x02, &1000i32.to_le_bytes()).is_err());
        assert!(raw_field(0x02, &[2, 0, 0, 0, b'a', b'b']).is_err());
        assert!(raw_field(0x02, &[0, 0, 0, 0]).is_err());
        // negative binary length, unknown type, bad boolean byte
        assert!(raw_field(0x05, &[0xff, 0xff, 0xff, 0xff, 0]).is_err());
        assert!(raw_field(0x42, &[]).is_err());
        assert!(raw_field(0x08, &[2]).is_err());
        // code with scope whose total length disagrees with its parts
        let mut cws = 99i32.to_le_bytes().to_vec();
        cws.extend_from_slice(&bson_string(b"x"));
        cws.extend_from_slice(&[5, 0, 0, 0, 0]);
        assert!(raw_field(0x0F, &cws).is_err());
        // a document whose length prefix disagrees with its bytes
        let mut bytes = raw_doc(0x10, b"v", &1i32.to_le_bytes());
        bytes[0] += 1;
        assert!(Fields::new(&bytes).next().unwrap().is_err());
    }

    /// A document with every kind of element whose bytes have inner lengths (strings, regex,
    /// code with scope, DBPointer, old binary, nested documents and arrays).
    fn every_kind() -> Vec<u8> {
        let mut cws = Vec::new();
        let scope = raw_doc(0x02, b"s", &bson_string(b"x"));
        let code = bson_string(b"f()");
        cws.extend_from_slice(&((4 + code.len() + scope.len()) as i32).to_le_bytes());
        cws.extend_from_slice(&code);
        cws.extend_from_slice(&scope);
        let mut ptr = bson_string(b"db.c");
        ptr.extend_from_slice(&[7; 12]);
        let mut old_binary = 8i32.to_le_bytes().to_vec();
        old_binary.push(2);
        old_binary.extend_from_slice(&4i32.to_le_bytes());
        old_binary.extend_from_slice(b"abcd");
        let doc = mongodb::bson::RawDocumentBuf::from_document(
            &doc! {"a": [1, "two", {"three": 3.0, "t": true}], "n": null, "d": Bson::DateTime(mongodb::bson::DateTime::from_millis(-1))},
        )
        .unwrap();
        let mut out = vec![0u8; 4];
        for (tag, key, body) in [
            (0x02u8, &b"s"[..], bson_string(b"text")),
            (0x0B, b"r", b"^a\0i\0".to_vec()),
            (0x0F, b"c", cws),
            (0x0C, b"p", ptr),
            (0x05, b"b", old_binary),
            (0x03, b"o", doc.as_bytes().to_vec()),
        ] {
            out.push(tag);
            out.extend_from_slice(key);
            out.push(0);
            out.extend_from_slice(&body);
        }
        out.push(0);
        let len = out.len() as i32;
        out[..4].copy_from_slice(&len.to_le_bytes());
        out
    }

    #[test]
    fn every_kind_reads() {
        let bytes = every_kind();
        let doc = RawDocument::from_bytes(&bytes).unwrap();
        assert_eq!(
            document_json(doc).unwrap(),
            r#"{"s":"text","r":{"pattern":"^a","options":"i"},"c":{"code":"f()","scope":{"s":"x"}},"p":{"collection":"c","oid":"070707070707070707070707","db":"db","fields":{}},"b":"YWJjZA==","o":{"a":[1,"two",{"three":3.0,"t":1}],"n":null,"d":"1969-12-31T23:59:59.999Z"}}"#
        );
    }

    proptest::proptest! {
        /// The document of every kind with bytes overwritten: values or errors, never a panic.
        #[test]
        fn corrupted_every_kind_never_panics(flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 1..6)) {
            let mut bytes = every_kind();
            let n = bytes.len();
            for (i, b) in flips {
                bytes[i.index(n)] = b;
            }
            if let Ok(doc) = RawDocument::from_bytes(&bytes) {
                let _ = document_json(doc);
                for field in fields(doc) {
                    let Ok(field) = field else { break };
                    let _ = field.to_value();
                }
            }
        }

        /// Any body inside a well-framed document (length prefix, final zero byte): the reader
        /// returns values or errors, never panics, whatever the tags and lengths say.
        #[test]
        fn framed_garbage_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut bytes = ((body.len() + 5) as i32).to_le_bytes().to_vec();
            bytes.extend_from_slice(&body);
            bytes.push(0);
            if let Ok(doc) = RawDocument::from_bytes(&bytes) {
                let _ = document_json(doc);
                for field in fields(doc) {
                    let Ok(field) = field else { break };
                    let _ = field.to_value();
                }
            }
        }
    }

    #[test]
    fn timestamp_halves_are_in_order() {
        let mut body = 2u32.to_le_bytes().to_vec(); // increment
        body.extend_from_slice(&1u32.to_le_bytes()); // seconds
        assert_eq!(raw_field(0x11, &body), Ok(Value::Integer((1 << 32) | 2)));
    }
}
