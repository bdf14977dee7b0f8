//! Composite (row) values → JSON objects field name → value, from `record_out` text
//! (`(1,"a b",,"say ""hi""")`) and from `record_send` binary (per-field type OIDs).

use powersync_source_core::normalize::json::write_json_string;

use super::builtin::Field;
use super::lex::{quoted_item, skip_ws, Item, Reader};
use super::registry::TypeRegistry;
use super::{decode, excerpt, Format, Res};

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
        decode::write_element(reg, f.type_oid, f.typmod, Format::Text, bytes, out, depth)
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
                decode::write_element(reg, oid, typmod, Format::Binary, v, out, depth)
                    .map_err(|e| format!("field {}: {e}", f.name))?
            }
        }
    }
    r.finish("composite")?;
    out.push('}');
    Ok(())
}
