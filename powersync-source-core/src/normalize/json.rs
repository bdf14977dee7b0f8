//! JSON text: escaping, values, small builders for arrays and objects, and validation.
//!
//! Arrays, nested documents, composites, ranges and SETs become JSON text (DESIGN.md
//! "Values"). Their elements are first normalized to [`Value`]s by the connector, then written
//! with [`write_json_value`], which maps:
//!
//! | [`Value`] | JSON |
//! |---|---|
//! | `Null`, `Unchanged` | `null` |
//! | `Integer(i)` | the number, `42` |
//! | `Real(f)` | the shortest text that reads back as the same `f64`, always with a fraction or an exponent so it stays distinguishable from an integer: `1.0`, `0.1`, `1e16`, `1.5e-7`, `-0.0`; infinities (no JSON form) → `null` |
//! | `Text(s)` | a string, escaped per RFC 8259 |
//! | `Blob(b)` | a string holding `b` in standard base64 with padding (RFC 4648 §4): `"AAEC/w=="` |
//!
//! **Booleans are `1` and `0` inside JSON too**, for every source: a [`Value`] boolean already
//! is the integer 0/1 ([`Value::bool`]), and a connector that writes a source boolean straight
//! into JSON (a BSON or Convex document, an array element) calls [`write_json_bool`] (or
//! [`JsonArray::push_bool`] / [`JsonObject::push_bool`]), never `true`/`false`. This is
//! PowerSync's rule (its MongoDB test vectors: `[true]` → `[1]`), so a boolean reads the same
//! at the top level and nested, and SQLite's JSON functions compare it with the column values.
//! JSON documents the server renders (json/jsonb columns, MySQL JSON) are passed through
//! unchanged and keep their `true`/`false`.
//!
//! [`JsonArray`] and [`JsonObject`] write into a `String` you own (`JsonArray::begin(&mut s)`)
//! or into one they own (`JsonArray::new()` … `.finish()` returns it), and nest. (Holding a
//! `out: &mut String` parameter, pass `&mut *out` to keep using `out` after the builder.)
//!
//! ```
//! use powersync_source_core::normalize::json::{JsonArray, JsonObject};
//! use powersync_source_core::Value;
//!
//! let mut obj = JsonObject::new();
//! obj.field("lower", &Value::Integer(1));
//! obj.key("tags");
//! let mut tags = obj.begin_array();
//! tags.push_str("a\"b");
//! tags.push(&Value::Null);
//! tags.finish();
//! assert_eq!(obj.finish(), r#"{"lower":1,"tags":["a\"b",null]}"#);
//! ```

use std::borrow::BorrowMut;
use std::fmt::Write;

use base64::Engine as _;

use crate::value::Value;

/// Appends `s` as a JSON string literal (RFC 8259 §7): `"` and `\` escaped, control
/// characters U+0000–U+001F escaped (`\b \f \n \r \t` in short form, others as `\u00XX`),
/// everything else, non-ASCII included, written as UTF-8.
pub fn write_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` is an ASCII byte, so both slices end on char boundaries.
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends an `f64` as a JSON number: shortest round-trip digits, always with a fraction or an
/// exponent (`1.0`, `1e16`); `null` for infinities and NaN, which JSON cannot express.
pub fn write_json_f64(out: &mut String, f: f64) {
    if f.is_finite() {
        let _ = write!(out, "{f:?}");
    } else {
        out.push_str("null");
    }
}

/// Appends a source boolean inside JSON: `1` or `0`, never `true`/`false` (see the module
/// docs).
pub fn write_json_bool(out: &mut String, b: bool) {
    out.push(if b { '1' } else { '0' });
}

/// Appends `v` as JSON (see the module docs for the mapping).
pub fn write_json_value(out: &mut String, v: &Value) {
    match v {
        Value::Null | Value::Unchanged => out.push_str("null"),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Real(f) => write_json_f64(out, *f),
        Value::Text(s) => write_json_string(out, s),
        Value::Blob(b) => {
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(b, out);
            out.push('"');
        }
    }
}

/// `v` as JSON text (see [`write_json_value`]).
pub fn json_value_text(v: &Value) -> String {
    let mut out = String::new();
    write_json_value(&mut out, v);
    out
}

macro_rules! value_writers {
    () => {
        /// Appends a [`Value`] (see [`write_json_value`]).
        pub fn push(&mut self, v: &Value) -> &mut Self {
            self.before_value();
            write_json_value(self.out.borrow_mut(), v);
            self
        }
        /// Appends text that already is JSON (e.g. a `jsonb` value or a nested document
        /// rendered elsewhere), unchecked.
        pub fn push_raw(&mut self, json: &str) -> &mut Self {
            self.before_value();
            self.out.borrow_mut().push_str(json);
            self
        }
        /// Appends a string.
        pub fn push_str(&mut self, s: &str) -> &mut Self {
            self.before_value();
            write_json_string(self.out.borrow_mut(), s);
            self
        }
        /// Appends `null`.
        pub fn push_null(&mut self) -> &mut Self {
            self.push_raw("null")
        }
        /// Appends a source boolean as `1` or `0` (see [`write_json_bool`]). For a JSON
        /// `true`/`false` that must stay one, use [`push_raw`](Self::push_raw).
        pub fn push_bool(&mut self, b: bool) -> &mut Self {
            self.before_value();
            write_json_bool(self.out.borrow_mut(), b);
            self
        }
        /// Appends an integer.
        pub fn push_i64(&mut self, i: i64) -> &mut Self {
            self.before_value();
            let _ = write!(self.out.borrow_mut(), "{i}");
            self
        }
        /// Appends a float (see [`write_json_f64`]).
        pub fn push_f64(&mut self, f: f64) -> &mut Self {
            self.before_value();
            write_json_f64(self.out.borrow_mut(), f);
            self
        }
        /// Starts a nested array in this position; [`finish`](JsonArray::finish) it before
        /// using `self` again.
        pub fn begin_array(&mut self) -> JsonArray<&mut String> {
            self.before_value();
            JsonArray::begin(self.out.borrow_mut())
        }
        /// Starts a nested object in this position; [`finish`](JsonObject::finish) it before
        /// using `self` again.
        pub fn begin_object(&mut self) -> JsonObject<&mut String> {
            self.before_value();
            JsonObject::begin(self.out.borrow_mut())
        }
    };
}

/// Writes a JSON array: [`begin`](Self::begin), `push*` each element, [`finish`](Self::finish).
/// `S` is the `String` written to, owned (`JsonArray::new()`) or borrowed
/// (`JsonArray::begin(&mut s)`).
#[derive(Debug)]
#[must_use = "call finish() to close the array"]
pub struct JsonArray<S: BorrowMut<String> = String> {
    out: S,
    first: bool,
}

impl JsonArray<String> {
    /// Starts an array in a new `String`; [`finish`](Self::finish) returns it.
    pub fn new() -> Self {
        JsonArray::begin(String::new())
    }
}

impl Default for JsonArray<String> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: BorrowMut<String>> JsonArray<S> {
    /// Writes `[` to `out` and starts the array.
    pub fn begin(mut out: S) -> Self {
        out.borrow_mut().push('[');
        JsonArray { out, first: true }
    }
    fn before_value(&mut self) {
        if !self.first {
            self.out.borrow_mut().push(',');
        }
        self.first = false;
    }
    value_writers!();
    /// Writes `]` and returns the output (the `String`, or the `&mut String` given to
    /// [`begin`](Self::begin)).
    pub fn finish(mut self) -> S {
        self.out.borrow_mut().push(']');
        self.out
    }
}

/// Writes a JSON object: [`begin`](Self::begin), then for each member [`key`](Self::key)
/// followed by one `push*` (or [`field`](Self::field) / [`field_raw`](Self::field_raw) /
/// [`field_str`](Self::field_str) in one call), then [`finish`](Self::finish). A value pushed
/// without a key gets the key `""`, so the output stays valid JSON.
#[derive(Debug)]
#[must_use = "call finish() to close the object"]
pub struct JsonObject<S: BorrowMut<String> = String> {
    out: S,
    first: bool,
    has_key: bool,
}

impl JsonObject<String> {
    /// Starts an object in a new `String`; [`finish`](Self::finish) returns it.
    pub fn new() -> Self {
        JsonObject::begin(String::new())
    }
}

impl Default for JsonObject<String> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: BorrowMut<String>> JsonObject<S> {
    /// Writes `{` to `out` and starts the object.
    pub fn begin(mut out: S) -> Self {
        out.borrow_mut().push('{');
        JsonObject {
            out,
            first: true,
            has_key: false,
        }
    }
    /// Writes the key of the next member; push its value next.
    pub fn key(&mut self, k: &str) -> &mut Self {
        if self.has_key {
            // Two keys in a row: the first one gets a null value.
            self.out.borrow_mut().push_str("null");
        }
        let out = self.out.borrow_mut();
        if !self.first {
            out.push(',');
        }
        self.first = false;
        write_json_string(out, k);
        out.push(':');
        self.has_key = true;
        self
    }
    fn before_value(&mut self) {
        if !self.has_key {
            self.key("");
        }
        self.has_key = false;
    }
    value_writers!();
    /// Writes a member with a [`Value`].
    pub fn field(&mut self, k: &str, v: &Value) -> &mut Self {
        self.key(k).push(v)
    }
    /// Writes a member whose value already is JSON text.
    pub fn field_raw(&mut self, k: &str, json: &str) -> &mut Self {
        self.key(k).push_raw(json)
    }
    /// Writes a member with a string value.
    pub fn field_str(&mut self, k: &str, s: &str) -> &mut Self {
        self.key(k).push_str(s)
    }
    /// Writes `}` and returns the output (the `String`, or the `&mut String` given to
    /// [`begin`](Self::begin)). A key left without a value gets `null`.
    pub fn finish(mut self) -> S {
        if self.has_key {
            self.out.borrow_mut().push_str("null");
        }
        self.out.borrow_mut().push('}');
        self.out
    }
}

/// Validates a JSON document (RFC 8259: one value, surrounding whitespace allowed) and returns
/// it unchanged. For json/jsonb columns: the text is passed through as the server rendered it
/// (not re-serialized, so key order, number spelling and whitespace stay).
///
/// The validator is iterative: any nesting depth is accepted without recursion, so a
/// deeply nested document from the server neither fails nor overflows the stack.
pub fn json_text(s: &str) -> Result<String, String> {
    check_json(s).map(|()| s.to_owned())
}

/// Like [`json_text`] without the copy.
pub fn check_json(s: &str) -> Result<(), String> {
    validate(s.as_bytes()).map_err(|(at, why)| {
        let shown: String = s.chars().take(64).collect();
        let more = if s.len() > shown.len() { "…" } else { "" };
        format!("invalid JSON {shown:?}{more}: {why} at byte {at}")
    })
}

fn validate(b: &[u8]) -> Result<(), (usize, &'static str)> {
    // Open containers: `true` for an object, `false` for an array.
    let mut stack: Vec<bool> = Vec::new();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\n' | b'\r') {
            *i += 1;
        }
    };
    // Reads `"key"` `:` in an object.
    let member_key = |i: &mut usize| -> Result<(), (usize, &'static str)> {
        ws(i);
        if b.get(*i) != Some(&b'"') {
            return Err((*i, "expected a string key"));
        }
        string(b, i)?;
        ws(i);
        if b.get(*i) != Some(&b':') {
            return Err((*i, "expected ':'"));
        }
        *i += 1;
        Ok(())
    };
    'value: loop {
        ws(&mut i);
        match b.get(i) {
            None => return Err((i, "expected a value")),
            Some(b'{') => {
                i += 1;
                ws(&mut i);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    stack.push(true);
                    member_key(&mut i)?;
                    continue 'value;
                }
            }
            Some(b'[') => {
                i += 1;
                ws(&mut i);
                if b.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    stack.push(false);
                    continue 'value;
                }
            }
            Some(b'"') => string(b, &mut i)?,
            Some(b't') => literal(b, &mut i, b"true")?,
            Some(b'f') => literal(b, &mut i, b"false")?,
            Some(b'n') => literal(b, &mut i, b"null")?,
            Some(b'-' | b'0'..=b'9') => number(b, &mut i)?,
            Some(_) => return Err((i, "expected a value")),
        }
        // A value ended: close containers until one continues.
        loop {
            ws(&mut i);
            let Some(&is_object) = stack.last() else {
                return if i == b.len() {
                    Ok(())
                } else {
                    Err((i, "unexpected text after the document"))
                };
            };
            match (b.get(i), is_object) {
                (Some(b','), true) => {
                    i += 1;
                    member_key(&mut i)?;
                    continue 'value;
                }
                (Some(b','), false) => {
                    i += 1;
                    continue 'value;
                }
                (Some(b'}'), true) | (Some(b']'), false) => {
                    i += 1;
                    stack.pop();
                }
                (_, true) => return Err((i, "expected ',' or '}'")),
                (_, false) => return Err((i, "expected ',' or ']'")),
            }
        }
    }
}

fn literal(b: &[u8], i: &mut usize, word: &[u8]) -> Result<(), (usize, &'static str)> {
    if b[*i..].starts_with(word) {
        *i += word.len();
        Ok(())
    } else {
        Err((*i, "invalid literal"))
    }
}

fn string(b: &[u8], i: &mut usize) -> Result<(), (usize, &'static str)> {
    *i += 1; // opening quote
    loop {
        match b.get(*i) {
            None => return Err((*i, "unterminated string")),
            Some(b'"') => {
                *i += 1;
                return Ok(());
            }
            Some(b'\\') => {
                *i += 1;
                match b.get(*i) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => *i += 1,
                    Some(b'u') => {
                        let hex = b.get(*i + 1..*i + 5);
                        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                            return Err((*i, "expected 4 hex digits after \\u"));
                        }
                        *i += 5;
                    }
                    _ => return Err((*i, "invalid escape")),
                }
            }
            Some(0x00..=0x1f) => return Err((*i, "unescaped control character in string")),
            Some(_) => *i += 1,
        }
    }
}

fn number(b: &[u8], i: &mut usize) -> Result<(), (usize, &'static str)> {
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(*i) == Some(&b'-') {
        *i += 1;
    }
    match b.get(*i) {
        Some(b'0') => *i += 1,
        Some(b'1'..=b'9') => {
            digits(i);
        }
        _ => return Err((*i, "expected a digit")),
    }
    if b.get(*i) == Some(&b'.') {
        *i += 1;
        if digits(i) == 0 {
            return Err((*i, "expected a digit after '.'"));
        }
    }
    if matches!(b.get(*i), Some(b'e' | b'E')) {
        *i += 1;
        if matches!(b.get(*i), Some(b'+' | b'-')) {
            *i += 1;
        }
        if digits(i) == 0 {
            return Err((*i, "expected a digit in the exponent"));
        }
    }
    Ok(())
}
