//! Exact decimals (decimal, numeric, money, Decimal128) as text, never through `f64`.
//!
//! The normal form, produced by every function here:
//!
//! - an optional `-`, never a `+`; no `-` on zero (`-0.00` → `0.00`);
//! - the integer part without redundant leading zeros, at least one digit (`.5` → `0.5`,
//!   `007` → `7`);
//! - the fraction exactly as long as the value's **scale**, trailing zeros kept (`1.50` stays
//!   `1.50`: the scale is part of a decimal's value in SQL), no `.` when the scale is 0 (`5.` →
//!   `5`);
//! - no exponent: `1.5E+3` → `1500`, `1.5e-3` → `0.0015`, `1.50E+1` → `15.0` (the scale of
//!   `mantissa × 10^exp` is the mantissa's fraction length minus `exp`, floored at 0, which is
//!   how PostgreSQL reads such literals);
//! - special values as the fixed texts [`NAN_TEXT`], [`INFINITY_TEXT`],
//!   [`NEG_INFINITY_TEXT`] (PostgreSQL numeric, MongoDB Decimal128).

/// Text of a decimal NaN.
pub const NAN_TEXT: &str = "NaN";
/// Text of a decimal positive infinity.
pub const INFINITY_TEXT: &str = "Infinity";
/// Text of a decimal negative infinity.
pub const NEG_INFINITY_TEXT: &str = "-Infinity";

/// Largest exponent magnitude [`decimal_text`] expands (the output grows by one digit per unit
/// of exponent). Decimal128 needs 6176, PostgreSQL never prints exponents.
pub const MAX_EXPONENT: u32 = 32_768;

/// Validates a decimal literal and returns it in the normal form (see the module docs).
///
/// Accepts surrounding ASCII whitespace, an optional sign, digits with an optional `.` (at
/// least one digit on either side), an optional exponent `e`/`E` with optional sign; and, in
/// any letter case, `NaN` (also `+nan`, `-nan`, `snan`) → `NaN`, `inf`/`infinity` (optionally
/// `+`) → `Infinity`, `-inf`/`-infinity` → `-Infinity`. Rejects anything else, including
/// thousands separators, hexadecimal, non-ASCII digits, and exponents beyond
/// ±[`MAX_EXPONENT`].
pub fn decimal_text(s: &str) -> Result<String, String> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    if let Some(special) = special_text(t) {
        return Ok(special.to_owned());
    }
    parse(t.as_bytes()).map_err(|why| format!("invalid decimal {}: {why}", quote(s)))
}

fn special_text(t: &str) -> Option<&'static str> {
    if t.len() > 9 {
        return None;
    }
    let lower = t.to_ascii_lowercase();
    match lower.as_str() {
        "nan" | "+nan" | "-nan" | "snan" | "+snan" | "-snan" => Some(NAN_TEXT),
        "inf" | "+inf" | "infinity" | "+infinity" => Some(INFINITY_TEXT),
        "-inf" | "-infinity" => Some(NEG_INFINITY_TEXT),
        _ => None,
    }
}

fn quote(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}…")
    }
}

fn parse(b: &[u8]) -> Result<String, &'static str> {
    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int = &b[int_start..i];
    let mut frac: &[u8] = &[];
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac = &b[start..i];
    }
    if int.is_empty() && frac.is_empty() {
        return Err("expected digits");
    }
    let mut exp: i64 = 0;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        let exp_negative = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if exp <= MAX_EXPONENT as i64 {
                exp = exp * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        if i == start {
            return Err("expected digits in the exponent");
        }
        if exp > MAX_EXPONENT as i64 {
            return Err("exponent too large");
        }
        if exp_negative {
            exp = -exp;
        }
    }
    if i != b.len() {
        return Err("unexpected character");
    }
    let mut digits = Vec::with_capacity(int.len() + frac.len());
    digits.extend_from_slice(int);
    digits.extend_from_slice(frac);
    let scale = frac.len() as i64 - exp;
    if scale < 0 {
        digits.resize(digits.len() + (-scale) as usize, b'0');
    }
    Ok(assemble(negative, &digits, scale.max(0) as usize))
}

/// `digits` (ASCII digits) × 10^-`scale` in the normal form.
fn assemble(negative: bool, digits: &[u8], scale: usize) -> String {
    // Split into the integer part and the fraction, padding the fraction on the left.
    let (int, frac_pad, frac) = if scale >= digits.len() {
        (&digits[..0], scale - digits.len(), digits)
    } else {
        let (a, b) = digits.split_at(digits.len() - scale);
        (a, 0, b)
    };
    let int = match int.iter().position(|&c| c != b'0') {
        Some(p) => &int[p..],
        None => &int[..0],
    };
    let zero = int.is_empty() && frac.iter().all(|&c| c == b'0');
    // Callers pass ASCII digits only, so the slices are text as they are (copied whole, not
    // character by character: every binary decimal of a snapshot comes through here).
    let mut out = String::with_capacity(int.len() + scale + 3);
    if negative && !zero {
        out.push('-');
    }
    if int.is_empty() {
        out.push('0');
    } else {
        out.push_str(std::str::from_utf8(int).unwrap_or_default());
    }
    if scale > 0 {
        out.push('.');
        out.extend(std::iter::repeat_n('0', frac_pad));
        out.push_str(std::str::from_utf8(frac).unwrap_or_default());
    }
    out
}

/// A decimal from its sign, its digits and its scale (the number of those digits after the
/// point), in the normal form: `(false, "12345", 2)` → `123.45`, `(false, "123", 5)` →
/// `0.00123`, `(true, "000", 1)` → `0.0`, `(false, "", 0)` → `0`.
///
/// For decoders of binary decimals (MySQL, SQL Server, PostgreSQL numeric, Decimal128).
/// Characters of `digits` other than ASCII digits are ignored. The output is
/// `digits.len() + scale + 3` bytes at most: pass a scale the protocol bounds (MySQL ≤ 30,
/// SQL Server ≤ 38, PostgreSQL ≤ 16383, Decimal128 ≤ 6176).
pub fn decimal_from_parts(negative: bool, digits: &str, scale: u32) -> String {
    let bytes = digits.as_bytes();
    if bytes.iter().all(u8::is_ascii_digit) {
        assemble(negative, bytes, scale as usize)
    } else {
        let clean: Vec<u8> = bytes.iter().copied().filter(u8::is_ascii_digit).collect();
        assemble(negative, &clean, scale as usize)
    }
}

/// An integer count of 10^-`scale` units as a decimal: `(12345, 2)` → `123.45`; SQL Server
/// `money` is `(raw, 4)`.
pub fn decimal_from_int(value: i128, scale: u32) -> String {
    decimal_from_parts(value < 0, &value.unsigned_abs().to_string(), scale)
}
