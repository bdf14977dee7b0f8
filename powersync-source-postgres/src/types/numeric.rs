//! `numeric` and `money` from their binary forms.

use powersync_source_core::normalize::decimal::{
    decimal_from_int, decimal_from_parts, INFINITY_TEXT, NAN_TEXT, NEG_INFINITY_TEXT,
};
use powersync_source_core::Value;

use super::Res;

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
const NUMERIC_MAX_DSCALE: u16 = 0x3FFF;

/// Binary `numeric`: `ndigits`, `weight`, `sign`, `dscale` (all 16-bit), then `ndigits`
/// base-10000 digits, the first one weighted 10000^`weight`. Printed as PostgreSQL does:
/// exactly `dscale` fraction digits.
pub(crate) fn numeric_binary(b: &[u8]) -> Res<Value> {
    let Some((head, digits)) = b.split_first_chunk::<8>() else {
        return Err(format!(
            "numeric needs an 8-byte header, got {} bytes",
            b.len()
        ));
    };
    let ndigits = u16::from_be_bytes([head[0], head[1]]) as usize;
    let weight = i16::from_be_bytes([head[2], head[3]]) as i64;
    let sign = u16::from_be_bytes([head[4], head[5]]);
    let dscale = u16::from_be_bytes([head[6], head[7]]);
    if digits.len() != ndigits * 2 {
        return Err(format!(
            "numeric with {ndigits} digits needs {} bytes, got {}",
            8 + ndigits * 2,
            b.len()
        ));
    }
    let negative = match sign {
        NUMERIC_POS => false,
        NUMERIC_NEG => true,
        NUMERIC_NAN => return Ok(Value::Text(NAN_TEXT.to_owned())),
        NUMERIC_PINF => return Ok(Value::Text(INFINITY_TEXT.to_owned())),
        NUMERIC_NINF => return Ok(Value::Text(NEG_INFINITY_TEXT.to_owned())),
        other => return Err(format!("invalid numeric sign 0x{other:04x}")),
    };
    if dscale > NUMERIC_MAX_DSCALE {
        return Err(format!("invalid numeric display scale {dscale}"));
    }
    let digit = |i: i64| -> Res<u16> {
        if i < 0 || i as usize >= ndigits {
            return Ok(0);
        }
        let i = i as usize * 2;
        let d = u16::from_be_bytes([digits[i], digits[i + 1]]);
        if d >= 10_000 {
            return Err(format!("invalid numeric digit {d}"));
        }
        Ok(d)
    };
    // Decimal digits of the integer part (groups 0..=weight) and of the fraction (dscale
    // digits from group weight+1 on): the value is digits × 10^-dscale.
    let int_groups = (weight + 1).max(0);
    let len = int_groups as usize * 4 + dscale as usize;
    let mut stack = [0u8; 64];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut pos = 0;
    for g in 0..int_groups {
        put_group(&mut buf[pos..pos + 4], digit(g)?);
        pos += 4;
    }
    let mut g = weight + 1;
    while pos < len {
        let mut four = [0u8; 4];
        put_group(&mut four, digit(g)?);
        let n = (len - pos).min(4);
        buf[pos..pos + n].copy_from_slice(&four[..n]);
        pos += n;
        g += 1;
    }
    // Digits beyond dscale are not printed (PostgreSQL truncates them the same way), but
    // they must still be valid.
    for i in g.max(0)..ndigits as i64 {
        digit(i)?;
    }
    let text = std::str::from_utf8(buf).map_err(|e| e.to_string())?;
    Ok(Value::Text(decimal_from_parts(
        negative,
        text,
        dscale as u32,
    )))
}

fn put_group(out: &mut [u8], d: u16) {
    out[0] = b'0' + (d / 1000) as u8;
    out[1] = b'0' + (d / 100 % 10) as u8;
    out[2] = b'0' + (d / 10 % 10) as u8;
    out[3] = b'0' + (d % 10) as u8;
}

/// Binary `money`: a 64-bit count of hundredths (see the module docs on `lc_monetary`).
pub(crate) fn money_binary(cents: i64) -> Value {
    Value::Text(decimal_from_int(cents as i128, 2))
}
