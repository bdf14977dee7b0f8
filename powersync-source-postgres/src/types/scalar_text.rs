//! Scalars from the server's text output format.

use powersync_source_core::normalize::decimal::{decimal_from_parts, decimal_text};
use powersync_source_core::normalize::integer::{f32_value, f64_value, u64_value};
use powersync_source_core::normalize::json::json_text;
use powersync_source_core::normalize::spatial::wkb_hex_to_geojson;
use powersync_source_core::normalize::time::{
    format_date, format_time, format_time_with_offset_utc, format_timestamp, format_timestamp_utc,
    parse_date_text, parse_time_text, parse_timestamp_text, to_utc_nanos,
};
use powersync_source_core::normalize::uuid::uuid_text;
use powersync_source_core::Value;

use super::builtin::Scalar;
use super::{datetime, excerpt, frac_digits, utf8, Res};

fn parse<T: std::str::FromStr>(b: &[u8], what: &str) -> Res<T> {
    utf8(b)?
        .parse::<T>()
        .map_err(|_| format!("invalid {what} {}", excerpt(b)))
}

pub(crate) fn scalar_text(s: Scalar, typmod: i32, b: &[u8]) -> Res<Value> {
    Ok(match s {
        Scalar::Bool => match b {
            b"t" | b"true" => Value::Integer(1),
            b"f" | b"false" => Value::Integer(0),
            _ => return Err(format!("invalid boolean {}", excerpt(b))),
        },
        Scalar::Int2 => Value::Integer(parse::<i16>(b, "smallint")? as i64),
        Scalar::Int4 => Value::Integer(parse::<i32>(b, "integer")? as i64),
        Scalar::Int8 => Value::Integer(parse::<i64>(b, "bigint")?),
        Scalar::Oid => Value::Integer(parse::<u32>(b, "unsigned 32-bit integer")? as i64),
        Scalar::Xid8 => u64_value(parse::<u64>(b, "xid8")?),
        Scalar::Float4 => f32_value(parse::<f32>(b, "real")?),
        Scalar::Float8 => f64_value(parse::<f64>(b, "double precision")?),
        Scalar::Numeric => Value::Text(decimal_text(utf8(b)?)?),
        Scalar::Money => money_text(b)?,
        Scalar::Text
        | Scalar::Char
        | Scalar::Xml
        | Scalar::Jsonpath
        | Scalar::Inet
        | Scalar::Cidr
        | Scalar::Macaddr
        | Scalar::Macaddr8
        | Scalar::Tsvector
        | Scalar::Point
        | Scalar::Line
        | Scalar::Lseg
        | Scalar::Box
        | Scalar::Path
        | Scalar::Polygon
        | Scalar::Circle
        | Scalar::Tid
        | Scalar::Unknown => Value::Text(utf8(b)?.to_owned()),
        Scalar::PgLsn => Value::Text(pg_lsn_text(utf8(b)?)?),
        Scalar::Bit => {
            if !b.iter().all(|&c| c == b'0' || c == b'1') {
                return Err(format!("invalid bit string {}", excerpt(b)));
            }
            Value::Text(utf8(b)?.to_owned())
        }
        Scalar::Json | Scalar::Jsonb => Value::Text(json_text(utf8(b)?)?),
        Scalar::Bytea => Value::Blob(bytea_text(b)?),
        Scalar::Uuid => Value::Text(uuid_text(utf8(b)?)?),
        Scalar::Date => Value::Text(format_date(parse_date_text(utf8(b)?)?)),
        Scalar::Time => match parse_time_text(utf8(b)?)? {
            (nanos, None) => Value::Text(format_time(nanos, frac_digits(typmod))),
            (_, Some(_)) => return Err(format!("unexpected time zone in {}", excerpt(b))),
        },
        Scalar::TimeTz => match parse_time_text(utf8(b)?)? {
            (nanos, Some(offset)) => Value::Text(format_time_with_offset_utc(
                nanos,
                offset,
                frac_digits(typmod),
            )),
            (_, None) => return Err(format!("missing time zone offset in {}", excerpt(b))),
        },
        Scalar::Timestamp => match parse_timestamp_text(utf8(b)?)? {
            (nanos, None) => Value::Text(format_timestamp(nanos, frac_digits(typmod))),
            (_, Some(_)) => return Err(format!("unexpected time zone in {}", excerpt(b))),
        },
        Scalar::TimestampTz => {
            let (local, offset) = parse_timestamp_text(utf8(b)?)?;
            Value::Text(format_timestamp_utc(
                to_utc_nanos(local, offset),
                frac_digits(typmod),
            ))
        }
        Scalar::Interval => Value::Text(datetime::interval_text(b)?),
        Scalar::Geometry => Value::Text(wkb_hex_to_geojson(utf8(b)?)?),
    })
}

/// `bytea` text: hex (`\x0102ff`, the default `bytea_output`) or the legacy escape format
/// (`abc\000\\`).
pub(crate) fn bytea_text(b: &[u8]) -> Res<Vec<u8>> {
    if let Some(hex) = b.strip_prefix(b"\\x") {
        let mut out = Vec::with_capacity(hex.len() / 2);
        let mut i = 0;
        while i < hex.len() {
            let c = hex[i];
            if c.is_ascii_whitespace() {
                i += 1;
                continue;
            }
            let (Some(hi), Some(lo)) = (hex_val(c), hex.get(i + 1).and_then(|&c| hex_val(c)))
            else {
                return Err(format!("invalid hexadecimal bytea at byte {}", i + 2));
            };
            out.push(hi << 4 | lo);
            i += 2;
        }
        return Ok(out);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            match b.get(i + 1..i + 4) {
                Some([d0 @ b'0'..=b'3', d1 @ b'0'..=b'7', d2 @ b'0'..=b'7']) => {
                    out.push((d0 - b'0') << 6 | (d1 - b'0') << 3 | (d2 - b'0'));
                    i += 4;
                }
                _ => return Err(format!("invalid escape in bytea at byte {i}")),
            }
        }
    }
    Ok(out)
}

pub(crate) fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `money` text in any `lc_monetary` (`$1,234.50`, `-$1,234.50`, `($5.00)`, `1.234,50 €`):
/// the digits are the amount in hundredths (see the module docs on the scale).
fn money_text(b: &[u8]) -> Res<Value> {
    let mut digits = [0u8; 24];
    let mut n = 0;
    let mut negative = false;
    for &c in b {
        match c {
            b'0'..=b'9' => {
                // Leading zeros carry nothing and would only fill the buffer.
                if n == 0 && c == b'0' {
                    continue;
                }
                let slot = digits
                    .get_mut(n)
                    .ok_or_else(|| format!("money amount too long: {}", excerpt(b)))?;
                *slot = c;
                n += 1;
            }
            b'-' | b'(' => negative = true,
            _ => {}
        }
    }
    if !b.iter().any(u8::is_ascii_digit) {
        return Err(format!("invalid money {}", excerpt(b)));
    }
    // Only ASCII digits were stored.
    let digits = std::str::from_utf8(&digits[..n]).unwrap_or_default();
    Ok(Value::Text(decimal_from_parts(negative, digits, 2)))
}

/// `16/B374D848` → `00000016/B374D848`: zero-padded, like the connector's own checkpoints, so
/// `pg_lsn` texts sort as the positions do.
fn pg_lsn_text(s: &str) -> Res<String> {
    let parse = |part: &str| {
        (!part.is_empty() && part.len() <= 8)
            .then(|| u32::from_str_radix(part, 16).ok())
            .flatten()
    };
    match s.split_once('/').map(|(hi, lo)| (parse(hi), parse(lo))) {
        Some((Some(hi), Some(lo))) => Ok(format!("{hi:08X}/{lo:08X}")),
        _ => Err(format!("invalid pg_lsn {}", excerpt(s.as_bytes()))),
    }
}
