//! Composite (row) values → JSON objects field name → value, from `record_out` text
//! (`(1,"a b",,"say ""hi""")`) and from `record_send` binary (per-field type OIDs).

use powersync_source_core::normalize::json::write_json_string;

use super::array::skip_ws;
use super::binary_format::Reader;
use super::registry::{Field, TypeRegistry};
use super::{excerpt, json, Format, Res};

/// Where a quoted-or-not item of `record_out` / `range_out` text ended up.
pub(crate) enum Item {
    /// `b[start..end]` unchanged.
    Slice(usize, usize),
    /// Unescaped into the scratch buffer.
    Scratch,
}

/// Reads one item as `record_in`/`range_in` do, starting at `b[i]`, up to an unquoted byte
/// for which `is_end` holds: double quotes group (a doubled `""` inside is one `"`),
/// backslash escapes the next byte. Returns the item and the index of the end byte.
pub(crate) fn quoted_item(
    b: &[u8],
    i: usize,
    is_end: impl Fn(u8) -> bool,
    scratch: &mut Vec<u8>,
) -> Res<(Item, usize)> {
    // Fast paths: a plain run, or one quoted run without escapes.
    if b.get(i) == Some(&b'"') {
        if let Some(q) = b[i + 1..].iter().position(|&c| c == b'"' || c == b'\\') {
            let close = i + 1 + q;
            if b[close] == b'"' && b.get(close + 1).is_some_and(|&c| is_end(c)) {
                return Ok((Item::Slice(i + 1, close), close + 1));
            }
        }
    } else {
        let mut j = i;
        while j < b.len() && !is_end(b[j]) && b[j] != b'"' && b[j] != b'\\' {
            j += 1;
        }
        if j < b.len() && is_end(b[j]) {
            return Ok((Item::Slice(i, j), j));
        }
    }
    scratch.clear();
    let mut in_quotes = false;
    let mut j = i;
    loop {
        let Some(&c) = b.get(j) else {
            return Err("unterminated value".to_owned());
        };
        match c {
            b'\\' => {
                let Some(&next) = b.get(j + 1) else {
                    return Err("value ends after a backslash".to_owned());
                };
                scratch.push(next);
                j += 2;
            }
            b'"' if in_quotes && b.get(j + 1) == Some(&b'"') => {
                scratch.push(b'"');
                j += 2;
            }
            b'"' => {
                in_quotes = !in_quotes;
                j += 1;
            }
            c if !in_quotes && is_end(c) => return Ok((Item::Scratch, j)),
            c => {
                scratch.push(c);
                j += 1;
            }
        }
    }
}

/// Text composite → JSON object.
pub(crate) fn composite_text(
    reg: &TypeRegistry,
    fields: &[Field],
    b: &[u8],
    out: &mut String,
    depth: u32,
) -> Res<()> {
    let err = |what: &str, at: usize| {
        Err(format!(
            "invalid composite at byte {at} ({what}): {}",
            excerpt(b)
        ))
    };
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'(') {
        return err("expected '('", i);
    }
    i += 1;
    let mut scratch = Vec::new();
    out.push('{');
    for (k, f) in fields.iter().enumerate() {
        if k > 0 {
            if b.get(i) != Some(&b',') {
                return err(
                    &format!(
                        "expected {} fields (reload the type if it changed)",
                        fields.len()
                    ),
                    i,
                );
            }
            i += 1;
            out.push(',');
        }
        write_json_string(out, &f.name);
        out.push(':');
        if matches!(b.get(i), Some(b',' | b')')) {
            out.push_str("null");
            continue;
        }
        let (item, next) = quoted_item(b, i, |c| c == b',' || c == b')', &mut scratch)?;
        let bytes = match item {
            Item::Slice(s, e) => &b[s..e],
            Item::Scratch => &scratch[..],
        };
        json::write_element(reg, f.type_oid, f.typmod, Format::Text, bytes, out, depth)
            .map_err(|e| format!("field {}: {e}", f.name))?;
        i = next;
    }
    if b.get(i) != Some(&b')') {
        return err(
            &format!(
                "expected {} fields (reload the type if it changed)",
                fields.len()
            ),
            i,
        );
    }
    if skip_ws(b, i + 1) != b.len() {
        return err("unexpected text after ')'", i + 1);
    }
    out.push('}');
    Ok(())
}

/// Binary composite: field count, then per field its type OID and its length-prefixed value.
pub(crate) fn composite_binary(
    reg: &TypeRegistry,
    fields: &[Field],
    b: &[u8],
    out: &mut String,
    depth: u32,
) -> Res<()> {
    let mut r = Reader::new(b);
    let n = r.i32()?;
    if n < 0 || n as usize != fields.len() {
        return Err(format!(
            "composite has {n} fields, the type has {} (reload the type if it changed)",
            fields.len()
        ));
    }
    out.push('{');
    for (k, f) in fields.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        let oid = r.u32()?;
        write_json_string(out, &f.name);
        out.push(':');
        match r.value()? {
            None => out.push_str("null"),
            Some(v) => {
                // The sender's OID is authoritative for the bytes; the typmod only applies
                // when it is the declared field type.
                let typmod = if oid == f.type_oid { f.typmod } else { -1 };
                json::write_element(reg, oid, typmod, Format::Binary, v, out, depth)
                    .map_err(|e| format!("field {}: {e}", f.name))?
            }
        }
    }
    r.finish("composite")?;
    out.push('}');
    Ok(())
}
