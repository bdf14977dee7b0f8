//! Built-in geometric types (`point`, `line`, `lseg`, `box`, `path`, `polygon`, `circle`) from
//! their binary forms, printed as PostgreSQL prints them; PostGIS types go through the core's
//! WKB → GeoJSON conversion ([`geometry_value`]).

use std::fmt::Write;

use powersync_source_core::Value;

use super::Res;

/// Reads big-endian `f64`s from a slice whose length was checked.
fn f64_at(b: &[u8], i: usize) -> f64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i * 8..i * 8 + 8]);
    f64::from_be_bytes(a)
}

fn exact<'a>(b: &'a [u8], n_floats: usize, what: &str) -> Res<&'a [u8]> {
    if b.len() != n_floats * 8 {
        return Err(format!(
            "{what} needs {} bytes, got {}",
            n_floats * 8,
            b.len()
        ));
    }
    Ok(b)
}

/// Writes `f` as PostgreSQL's `float8out` does with `extra_float_digits > 0` (the default):
/// the shortest digits that read back exactly, in fixed notation for decimal exponents -4 to
/// 14 and as `d.ddde±XX` otherwise; `NaN`, `Infinity`, `-Infinity`; `-0`.
pub(crate) fn write_pg_float8(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    // `{:e}` gives the shortest round-trip digits as `d.ddde[-]x`.
    let mut buf = StackBuf::default();
    let _ = write!(buf, "{f:e}");
    let s = buf.as_str();
    let (mantissa, exp) = s.split_once('e').unwrap_or((s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    if negative {
        out.push('-');
    }
    let mut digits = [0u8; 24];
    let mut n = 0;
    for c in mantissa.bytes().filter(u8::is_ascii_digit) {
        if n < digits.len() {
            digits[n] = c;
            n += 1;
        }
    }
    let digits = &digits[..n];
    let push_digits = |out: &mut String, d: &[u8]| {
        for &c in d {
            out.push(c as char);
        }
    };
    if (-4..15).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            push_digits(out, digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                push_digits(out, digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
            } else {
                push_digits(out, &digits[..int_len]);
                out.push('.');
                push_digits(out, &digits[int_len..]);
            }
        }
    } else {
        push_digits(out, &digits[..1.min(digits.len())]);
        if digits.len() > 1 {
            out.push('.');
            push_digits(out, &digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    }
}

struct StackBuf {
    b: [u8; 40],
    n: usize,
}

impl Default for StackBuf {
    fn default() -> Self {
        StackBuf { b: [0; 40], n: 0 }
    }
}

impl StackBuf {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.b[..self.n]).unwrap_or_default()
    }
}

impl Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.n + s.len();
        let dst = self.b.get_mut(self.n..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.n = end;
        Ok(())
    }
}

fn write_point(out: &mut String, b: &[u8], i: usize) {
    out.push('(');
    write_pg_float8(out, f64_at(b, i));
    out.push(',');
    write_pg_float8(out, f64_at(b, i + 1));
    out.push(')');
}

/// `point`: `(x,y)`.
pub(crate) fn point_binary(b: &[u8]) -> Res<Value> {
    let b = exact(b, 2, "point")?;
    let mut out = String::with_capacity(24);
    write_point(&mut out, b, 0);
    Ok(Value::Text(out))
}

/// `line`: `{A,B,C}`.
pub(crate) fn line_binary(b: &[u8]) -> Res<Value> {
    let b = exact(b, 3, "line")?;
    let mut out = String::with_capacity(32);
    out.push('{');
    for i in 0..3 {
        if i > 0 {
            out.push(',');
        }
        write_pg_float8(&mut out, f64_at(b, i));
    }
    out.push('}');
    Ok(Value::Text(out))
}

/// `lseg`: `[(x1,y1),(x2,y2)]`.
pub(crate) fn lseg_binary(b: &[u8]) -> Res<Value> {
    let b = exact(b, 4, "lseg")?;
    let mut out = String::with_capacity(48);
    out.push('[');
    write_point(&mut out, b, 0);
    out.push(',');
    write_point(&mut out, b, 2);
    out.push(']');
    Ok(Value::Text(out))
}

/// `box`: `(x1,y1),(x2,y2)` (upper right corner first, as stored).
pub(crate) fn box_binary(b: &[u8]) -> Res<Value> {
    let b = exact(b, 4, "box")?;
    let mut out = String::with_capacity(48);
    write_point(&mut out, b, 0);
    out.push(',');
    write_point(&mut out, b, 2);
    Ok(Value::Text(out))
}

/// Points after a 32-bit count.
fn points<'a>(b: &'a [u8], what: &str) -> Res<(usize, &'a [u8])> {
    let Some((n, rest)) = b.split_first_chunk::<4>() else {
        return Err(format!("{what} needs a point count"));
    };
    let n = i32::from_be_bytes(*n);
    if n < 0 || rest.len() != n as usize * 16 {
        return Err(format!(
            "{what} with {n} points cannot have {} bytes",
            rest.len()
        ));
    }
    Ok((n as usize, rest))
}

fn write_points(out: &mut String, n: usize, b: &[u8]) {
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        write_point(out, b, 2 * i);
    }
}

/// `path`: closed flag, count, points → `((…),(…))` closed or `[(…),(…)]` open.
pub(crate) fn path_binary(b: &[u8]) -> Res<Value> {
    let Some((&closed, rest)) = b.split_first() else {
        return Err("path needs a closed flag".to_owned());
    };
    let (n, pts) = points(rest, "path")?;
    let mut out = String::with_capacity(2 + n * 24);
    out.push(if closed != 0 { '(' } else { '[' });
    write_points(&mut out, n, pts);
    out.push(if closed != 0 { ')' } else { ']' });
    Ok(Value::Text(out))
}

/// `polygon`: count, points → `((…),(…))`.
pub(crate) fn polygon_binary(b: &[u8]) -> Res<Value> {
    let (n, pts) = points(b, "polygon")?;
    let mut out = String::with_capacity(2 + n * 24);
    out.push('(');
    write_points(&mut out, n, pts);
    out.push(')');
    Ok(Value::Text(out))
}

/// `circle`: `<(x,y),r>`.
pub(crate) fn circle_binary(b: &[u8]) -> Res<Value> {
    let b = exact(b, 3, "circle")?;
    let mut out = String::with_capacity(36);
    out.push('<');
    write_point(&mut out, b, 0);
    out.push(',');
    write_pg_float8(&mut out, f64_at(b, 2));
    out.push('>');
    Ok(Value::Text(out))
}

/// GeoJSON of PostGIS EWKB bytes.
pub(crate) fn geometry_value(ewkb: &[u8]) -> Res<Value> {
    powersync_source_core::normalize::spatial::wkb_to_geojson(ewkb).map(Value::Text)
}
