//! Ranges → `{"lower":…,"upper":…,"lower_exclusive":0|1,"upper_exclusive":0|1}` (unbounded
//! sides `null` and exclusive) or the JSON string `"empty"`; multiranges → JSON arrays of
//! those. This is PowerSync's form (its `registry.test.ts` vectors), so a host replacing
//! PowerSync's service keeps its `json_extract` queries; flags are 0/1 like every boolean.

use super::lex::{quoted_item, skip_ws, Item, Reader};
use super::registry::TypeRegistry;
use super::{decode, excerpt, Format, Res};

const EMPTY_JSON: &str = r#""empty""#;

const RANGE_EMPTY: u8 = 0x01;
const RANGE_LB_INC: u8 = 0x02;
const RANGE_UB_INC: u8 = 0x04;
const RANGE_LB_INF: u8 = 0x08;
const RANGE_UB_INF: u8 = 0x10;
const RANGE_LB_NULL: u8 = 0x20;
const RANGE_UB_NULL: u8 = 0x40;

fn write_flags(out: &mut String, lower_inc: bool, upper_inc: bool) {
    out.push_str(",\"lower_exclusive\":");
    out.push_str(if lower_inc { "0" } else { "1" });
    out.push_str(",\"upper_exclusive\":");
    out.push_str(if upper_inc { "0" } else { "1" });
    out.push('}');
}

/// Text range (`[1,5)`, `empty`, `(,"2020-01-01 00:00:00")`) → JSON.
pub(crate) fn range_text(
    reg: &TypeRegistry,
    subtype: u32,
    b: &[u8],
    out: &mut String,
    depth: u32,
) -> Res<()> {
    let mut scratch = Vec::new();
    let end = parse_range(reg, subtype, b, 0, out, depth, &mut scratch)?;
    if skip_ws(b, end) != b.len() {
        return Err(format!("unexpected text after the range: {}", excerpt(b)));
    }
    Ok(())
}

/// Parses one range starting at `b[i]`, writes its JSON, returns the index after it.
fn parse_range(
    reg: &TypeRegistry,
    subtype: u32,
    b: &[u8],
    i: usize,
    out: &mut String,
    depth: u32,
    scratch: &mut Vec<u8>,
) -> Res<usize> {
    let err = |what: &str, at: usize| {
        Err(format!(
            "invalid range at byte {at} ({what}): {}",
            excerpt(b)
        ))
    };
    let mut i = skip_ws(b, i);
    if b.len() >= i + 5 && b[i..i + 5].eq_ignore_ascii_case(b"empty") {
        out.push_str(EMPTY_JSON);
        return Ok(i + 5);
    }
    let mut lower_inc = match b.get(i) {
        Some(b'[') => true,
        Some(b'(') => false,
        _ => return err("expected '[', '(' or 'empty'", i),
    };
    i += 1;
    out.push_str("{\"lower\":");
    if b.get(i) == Some(&b',') {
        out.push_str("null");
        lower_inc = false;
    } else {
        let (item, next) = quoted_item(b, i, |c| c == b',', scratch)?;
        let bytes = match item {
            Item::Slice(s, e) => &b[s..e],
            Item::Scratch => &scratch[..],
        };
        decode::write_element(reg, subtype, -1, Format::Text, bytes, out, depth)
            .map_err(|e| format!("range lower bound: {e}"))?;
        i = next;
    }
    if b.get(i) != Some(&b',') {
        return err("expected ','", i);
    }
    i += 1;
    out.push_str(",\"upper\":");
    let infinite_upper = matches!(b.get(i), Some(b']' | b')'));
    if infinite_upper {
        out.push_str("null");
    } else {
        let (item, next) = quoted_item(b, i, |c| c == b']' || c == b')', scratch)?;
        let bytes = match item {
            Item::Slice(s, e) => &b[s..e],
            Item::Scratch => &scratch[..],
        };
        decode::write_element(reg, subtype, -1, Format::Text, bytes, out, depth)
            .map_err(|e| format!("range upper bound: {e}"))?;
        i = next;
    }
    let upper_inc = match b.get(i) {
        Some(b']') => !infinite_upper,
        Some(b')') => false,
        _ => return err("expected ']' or ')'", i),
    };
    write_flags(out, lower_inc, upper_inc);
    Ok(i + 1)
}

/// Binary range: a flags byte, then the bounds present, length-prefixed.
pub(crate) fn range_binary(
    reg: &TypeRegistry,
    subtype: u32,
    b: &[u8],
    out: &mut String,
    depth: u32,
) -> Res<()> {
    let mut r = Reader::new(b);
    let flags = r.u8()?;
    if flags & RANGE_EMPTY != 0 {
        r.finish("empty range")?;
        out.push_str(EMPTY_JSON);
        return Ok(());
    }
    out.push_str("{\"lower\":");
    let lower_present = flags & (RANGE_LB_INF | RANGE_LB_NULL) == 0;
    let upper_present = flags & (RANGE_UB_INF | RANGE_UB_NULL) == 0;
    let bound = |r: &mut Reader<'_>, out: &mut String, present: bool, which: &str| -> Res<()> {
        if !present {
            out.push_str("null");
            return Ok(());
        }
        match r.value()? {
            Some(v) => decode::write_element(reg, subtype, -1, Format::Binary, v, out, depth)
                .map_err(|e| format!("range {which} bound: {e}")),
            None => Err(format!("range {which} bound is NULL")),
        }
    };
    bound(&mut r, out, lower_present, "lower")?;
    out.push_str(",\"upper\":");
    bound(&mut r, out, upper_present, "upper")?;
    r.finish("range")?;
    write_flags(
        out,
        lower_present && flags & RANGE_LB_INC != 0,
        upper_present && flags & RANGE_UB_INC != 0,
    );
    Ok(())
}

/// Text multirange (`{[1,3),[5,7)}`, `{}`) → JSON array of ranges.
pub(crate) fn multirange_text(
    reg: &TypeRegistry,
    subtype: u32,
    b: &[u8],
    out: &mut String,
    depth: u32,
) -> Res<()> {
    let err = |what: &str| Err(format!("invalid multirange ({what}): {}", excerpt(b)));
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return err("expected '{'");
    }
    i = skip_ws(b, i + 1);
    out.push('[');
    let mut scratch = Vec::new();
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            i = parse_range(reg, subtype, b, i, out, depth, &mut scratch)?;
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b',') => {
                    out.push(',');
                    i += 1;
                }
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return err("expected ',' or '}'"),
            }
        }
    }
    if skip_ws(b, i) != b.len() {
        return err("unexpected text after '}'");
    }
    out.push(']');
    Ok(())
}

/// Binary multirange: a range count, then each range length-prefixed.
pub(crate) fn multirange_binary(
    reg: &TypeRegistry,
    subtype: u32,
    b: &[u8],
    out: &mut String,
    depth: u32,
) -> Res<()> {
    let mut r = Reader::new(b);
    let n = r.i32()?;
    if n < 0 || n as usize > r.remaining() / 4 {
        return Err(format!("invalid multirange range count {n}"));
    }
    out.push('[');
    for k in 0..n {
        if k > 0 {
            out.push(',');
        }
        match r.value()? {
            Some(v) => range_binary(reg, subtype, v, out, depth)?,
            None => return Err("multirange holds a NULL range".to_owned()),
        }
    }
    r.finish("multirange")?;
    out.push(']');
    Ok(())
}
