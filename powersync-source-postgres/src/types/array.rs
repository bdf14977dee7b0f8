//! Arrays → JSON arrays (nested for several dimensions), from `array_out` text
//! (`{1,2}`, `{{"a b",NULL},{"\"q\"",x}}`, `[0:1]={1,2}`, `{(1,2),(0,0);(3,3),(1,1)}` for
//! `box[]`) and from `array_send` binary.

use super::lex::{skip_ws, Reader};
use super::registry::TypeRegistry;
use super::{decode, excerpt, Format, Res};

/// PostgreSQL's `MAXDIM`.
const MAX_DIMS: usize = 6;

/// Text array → JSON, written to `out`.
pub(crate) fn array_text(
    reg: &TypeRegistry,
    element: u32,
    typmod: i32,
    delim: u8,
    b: &[u8],
    out: &mut String,
    depth: u32,
) -> Res<()> {
    let err = |what: &str, at: usize| {
        Err(format!(
            "invalid array at byte {at} ({what}): {}",
            excerpt(b)
        ))
    };
    let mut i = skip_ws(b, 0);
    // Optional dimension decoration `[lb:ub][lb:ub]=` (lower bounds are not kept).
    if b.get(i) == Some(&b'[') {
        while b.get(i) == Some(&b'[') {
            i += 1;
            while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b':') {
                i += 1;
            }
            if b.get(i) != Some(&b']') {
                return err("bad dimension bounds", i);
            }
            i = skip_ws(b, i + 1);
        }
        if b.get(i) != Some(&b'=') {
            return err("expected '=' after the dimensions", i);
        }
        i = skip_ws(b, i + 1);
    }
    if b.get(i) != Some(&b'{') {
        return err("expected '{'", i);
    }
    let mut level = 0usize;
    // True after `{` or a delimiter: an element or `{` may come (or `}` right after `{`).
    let mut expect_value = true;
    let mut just_opened = false;
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        i = skip_ws(b, i);
        let Some(&c) = b.get(i) else {
            return err("unterminated", i);
        };
        if c == b'{' {
            if !expect_value {
                return err("unexpected '{'", i);
            }
            if level == MAX_DIMS {
                return err("more than 6 dimensions", i);
            }
            out.push('[');
            level += 1;
            i += 1;
            just_opened = true;
        } else if c == b'}' {
            if level == 0 || (expect_value && !just_opened) {
                return err("unexpected '}'", i);
            }
            out.push(']');
            level -= 1;
            i += 1;
            if level == 0 {
                break;
            }
            expect_value = false;
            just_opened = false;
        } else if c == delim {
            if expect_value {
                return err("unexpected delimiter", i);
            }
            out.push(',');
            i += 1;
            expect_value = true;
            just_opened = false;
        } else {
            if !expect_value || level == 0 {
                return err("unexpected element", i);
            }
            let (elem, next) = element_text(b, i, delim, &mut scratch)?;
            match elem {
                Elem::Null => out.push_str("null"),
                Elem::Slice(s, e) => {
                    decode::write_element(reg, element, typmod, Format::Text, &b[s..e], out, depth)
                        .map_err(|e| format!("array element: {e}"))?
                }
                Elem::Scratch => {
                    decode::write_element(reg, element, typmod, Format::Text, &scratch, out, depth)
                        .map_err(|e| format!("array element: {e}"))?
                }
            }
            i = next;
            expect_value = false;
            just_opened = false;
        }
    }
    if skip_ws(b, i) != b.len() {
        return err("unexpected text after the array", i);
    }
    Ok(())
}

enum Elem {
    Null,
    /// The element is `b[start..end]` unchanged.
    Slice(usize, usize),
    /// The element (unescaped) is in the scratch buffer.
    Scratch,
}

/// One element starting at `b[i]` (not whitespace, not `{`, `}` or the delimiter): quoted
/// (`"a \"b\""`) or not (`abc`, `NULL`, `a\,b`). Returns it and the index after it.
fn element_text(b: &[u8], i: usize, delim: u8, scratch: &mut Vec<u8>) -> Res<(Elem, usize)> {
    if b[i] == b'"' {
        let body = i + 1;
        let Some(q) = b[body..].iter().position(|&c| c == b'"' || c == b'\\') else {
            return Err("unterminated quoted array element".to_owned());
        };
        if b[body + q] == b'"' {
            return Ok((Elem::Slice(body, body + q), body + q + 1));
        }
        scratch.clear();
        let mut j = body;
        loop {
            match b.get(j) {
                None => return Err("unterminated quoted array element".to_owned()),
                Some(b'"') => return Ok((Elem::Scratch, j + 1)),
                Some(b'\\') => {
                    let Some(&c) = b.get(j + 1) else {
                        return Err("array ends after a backslash".to_owned());
                    };
                    scratch.push(c);
                    j += 2;
                }
                Some(&c) => {
                    scratch.push(c);
                    j += 1;
                }
            }
        }
    }
    // Unquoted: up to the delimiter or a brace; surrounding whitespace is not part of it.
    let is_end = |c: u8| c == delim || c == b'{' || c == b'}';
    let mut j = i;
    let mut escaped = false;
    while j < b.len() && !is_end(b[j]) {
        match b[j] {
            b'\\' => {
                escaped = true;
                j += 2;
            }
            b'"' => return Err("unexpected '\"' inside an unquoted array element".to_owned()),
            _ => j += 1,
        }
    }
    if j > b.len() {
        return Err("array ends after a backslash".to_owned());
    }
    if !escaped {
        let mut end = j;
        while end > i && b[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        if b[i..end].eq_ignore_ascii_case(b"NULL") {
            return Ok((Elem::Null, j));
        }
        return Ok((Elem::Slice(i, end), j));
    }
    scratch.clear();
    // Length of `scratch` up to the last character that was escaped or not whitespace.
    let mut keep = 0;
    let mut k = i;
    while k < j {
        if b[k] == b'\\' {
            scratch.push(b[k + 1]);
            keep = scratch.len();
            k += 2;
        } else {
            scratch.push(b[k]);
            if !b[k].is_ascii_whitespace() {
                keep = scratch.len();
            }
            k += 1;
        }
    }
    scratch.truncate(keep);
    Ok((Elem::Scratch, j))
}

/// Binary array: dimensions count, has-nulls flag, element type, per dimension its length and
/// lower bound, then each element length-prefixed (`-1` for NULL).
pub(crate) fn array_binary(
    reg: &TypeRegistry,
    element: u32,
    typmod: i32,
    b: &[u8],
    out: &mut String,
    depth: u32,
) -> Res<()> {
    let mut r = Reader::new(b);
    let ndim = r.i32()?;
    let _has_nulls = r.i32()?;
    let _element_oid = r.u32()?;
    if ndim == 0 {
        r.finish("empty array")?;
        out.push_str("[]");
        return Ok(());
    }
    if !(1..=MAX_DIMS as i32).contains(&ndim) {
        return Err(format!("invalid array dimension count {ndim}"));
    }
    let mut dims = [0usize; MAX_DIMS];
    let mut total: usize = 1;
    for d in dims.iter_mut().take(ndim as usize) {
        let len = r.i32()?;
        let _lower_bound = r.i32()?;
        if len < 0 {
            return Err(format!("invalid array dimension length {len}"));
        }
        *d = len as usize;
        total = total.saturating_mul(len as usize);
    }
    // Every element takes at least its 4-byte length.
    if total > r.remaining() / 4 {
        return Err(format!(
            "array of {total} elements cannot fit in {} bytes",
            r.remaining()
        ));
    }
    out.reserve(r.remaining());
    let mut ctx = BinaryElems {
        reg,
        element,
        typmod,
        depth,
        r,
    };
    ctx.dimension(&dims[..ndim as usize], out)?;
    ctx.r.finish("array")
}

struct BinaryElems<'a, 'r> {
    reg: &'r TypeRegistry,
    element: u32,
    typmod: i32,
    depth: u32,
    r: Reader<'a>,
}

impl BinaryElems<'_, '_> {
    fn dimension(&mut self, dims: &[usize], out: &mut String) -> Res<()> {
        out.push('[');
        for k in 0..dims[0] {
            if k > 0 {
                out.push(',');
            }
            if dims.len() > 1 {
                self.dimension(&dims[1..], out)?;
            } else {
                match self.r.value()? {
                    None => out.push_str("null"),
                    Some(v) => decode::write_element(
                        self.reg,
                        self.element,
                        self.typmod,
                        Format::Binary,
                        v,
                        out,
                        self.depth,
                    )
                    .map_err(|e| format!("array element: {e}"))?,
                }
            }
        }
        out.push(']');
        Ok(())
    }
}
