//! Scalars from the binary send format, and a bounds-checked reader for the structured ones.

use std::fmt::Write;

use powersync_source_core::normalize::integer::{f32_value, f64_value, u64_value};
use powersync_source_core::normalize::json::json_text;
use powersync_source_core::normalize::uuid::format_uuid;
use powersync_source_core::Value;

use super::builtin::Scalar;
use super::lex::Reader;
use super::{datetime, geometry, network, numeric, utf8, Res};

fn fixed<const N: usize>(b: &[u8], what: &str) -> Res<[u8; N]> {
    <[u8; N]>::try_from(b).map_err(|_| format!("{what} needs {N} bytes, got {}", b.len()))
}

pub(crate) fn scalar_binary(s: Scalar, typmod: i32, b: &[u8]) -> Res<Value> {
    Ok(match s {
        Scalar::Bool => Value::Integer((fixed::<1>(b, "boolean")?[0] != 0) as i64),
        Scalar::Int2 => Value::Integer(i16::from_be_bytes(fixed(b, "smallint")?) as i64),
        Scalar::Int4 => Value::Integer(i32::from_be_bytes(fixed(b, "integer")?) as i64),
        Scalar::Int8 => Value::Integer(i64::from_be_bytes(fixed(b, "bigint")?)),
        Scalar::Oid => Value::Integer(u32::from_be_bytes(fixed(b, "oid")?) as i64),
        Scalar::Xid8 => u64_value(u64::from_be_bytes(fixed(b, "xid8")?)),
        Scalar::Float4 => f32_value(f32::from_be_bytes(fixed(b, "real")?)),
        Scalar::Float8 => f64_value(f64::from_be_bytes(fixed(b, "double precision")?)),
        Scalar::Numeric => numeric::numeric_binary(b)?,
        Scalar::Money => numeric::money_binary(i64::from_be_bytes(fixed(b, "money")?)),
        Scalar::Text | Scalar::Xml => Value::Text(utf8(b)?.to_owned()),
        Scalar::Char => char_binary(b)?,
        Scalar::Bytea => Value::Blob(b.to_vec()),
        Scalar::Uuid => Value::Text(format_uuid(&fixed(b, "uuid")?)),
        Scalar::Json => Value::Text(json_text(utf8(b)?)?),
        Scalar::Jsonb => Value::Text(json_text(utf8(jsonb_payload(b)?)?)?),
        Scalar::Jsonpath => Value::Text(utf8(jsonb_payload(b)?)?.to_owned()),
        Scalar::Date => datetime::date_binary(i32::from_be_bytes(fixed(b, "date")?)),
        Scalar::Time => datetime::time_binary(i64::from_be_bytes(fixed(b, "time")?), typmod)?,
        Scalar::TimeTz => {
            let a: [u8; 12] = fixed(b, "time with time zone")?;
            let micros = i64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
            let zone = i32::from_be_bytes([a[8], a[9], a[10], a[11]]);
            datetime::timetz_binary(micros, zone, typmod)?
        }
        Scalar::Timestamp => {
            datetime::timestamp_binary(i64::from_be_bytes(fixed(b, "timestamp")?), typmod, false)
        }
        Scalar::TimestampTz => {
            datetime::timestamp_binary(i64::from_be_bytes(fixed(b, "timestamptz")?), typmod, true)
        }
        Scalar::Interval => {
            let a: [u8; 16] = fixed(b, "interval")?;
            let micros = i64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
            let days = i32::from_be_bytes([a[8], a[9], a[10], a[11]]);
            let months = i32::from_be_bytes([a[12], a[13], a[14], a[15]]);
            datetime::interval_binary(micros, days, months)
        }
        Scalar::Inet => network::inet_binary(b, false)?,
        Scalar::Cidr => network::inet_binary(b, true)?,
        Scalar::Macaddr => network::macaddr_binary(b, 6)?,
        Scalar::Macaddr8 => network::macaddr_binary(b, 8)?,
        Scalar::Bit => bit_binary(b)?,
        Scalar::Tsvector => tsvector_binary(b)?,
        Scalar::Point => geometry::point_binary(b)?,
        Scalar::Line => geometry::line_binary(b)?,
        Scalar::Lseg => geometry::lseg_binary(b)?,
        Scalar::Box => geometry::box_binary(b)?,
        Scalar::Path => geometry::path_binary(b)?,
        Scalar::Polygon => geometry::polygon_binary(b)?,
        Scalar::Circle => geometry::circle_binary(b)?,
        Scalar::PgLsn => {
            let lsn = u64::from_be_bytes(fixed(b, "pg_lsn")?);
            Value::Text(format!("{:08X}/{:08X}", lsn >> 32, lsn & 0xffff_ffff))
        }
        Scalar::Tid => {
            let a: [u8; 6] = fixed(b, "tid")?;
            let block = u32::from_be_bytes([a[0], a[1], a[2], a[3]]);
            let offset = u16::from_be_bytes([a[4], a[5]]);
            Value::Text(format!("({block},{offset})"))
        }
        Scalar::Geometry => geometry::geometry_value(b)?,
        Scalar::Unknown => {
            return Err(
                "the binary format of this type is unknown to the connector; \
                 decode it from text (disable binary for this table)"
                    .to_owned(),
            )
        }
    })
}

/// The JSON text of binary `jsonb` / `jsonpath`: a version byte (1), then the text.
pub(crate) fn jsonb_payload(b: &[u8]) -> Res<&[u8]> {
    match b.split_first() {
        Some((1, rest)) => Ok(rest),
        Some((v, _)) => Err(format!("unsupported jsonb binary version {v}")),
        None => Err("empty jsonb value".to_owned()),
    }
}

/// `"char"`: one byte; bytes with the high bit print as `\ooo`, as `charout` does, and the
/// zero byte as the empty string.
fn char_binary(b: &[u8]) -> Res<Value> {
    let [c] = fixed::<1>(b, "\"char\"")?;
    Ok(Value::Text(match c {
        0 => String::new(),
        1..=0x7f => (c as char).to_string(),
        _ => format!("\\{:o}{:o}{:o}", c >> 6, (c >> 3) & 7, c & 7),
    }))
}

/// `bit`/`varbit`: a 32-bit length in bits, then the bits, most significant first.
fn bit_binary(b: &[u8]) -> Res<Value> {
    let Some((len, bytes)) = b.split_first_chunk::<4>() else {
        return Err("bit string needs a length".to_owned());
    };
    let len = i32::from_be_bytes(*len);
    if len < 0 || bytes.len() != (len as usize).div_ceil(8) {
        return Err(format!(
            "bit string of {len} bits cannot have {} bytes",
            bytes.len()
        ));
    }
    let mut out = String::with_capacity(len as usize);
    for i in 0..len as usize {
        out.push(if bytes[i / 8] & (0x80 >> (i % 8)) != 0 {
            '1'
        } else {
            '0'
        });
    }
    Ok(Value::Text(out))
}

/// `tsvector`: a lexeme count, then per lexeme its text (zero-terminated), a position count
/// and the positions (weight in the top 2 bits); printed as `tsvectorout` does:
/// `'it''s':1A,3 'x':2B`.
fn tsvector_binary(b: &[u8]) -> Res<Value> {
    let mut r = Reader::new(b);
    let n = r.i32()?;
    if n < 0 {
        return Err(format!("invalid tsvector lexeme count {n}"));
    }
    let mut out = String::with_capacity(b.len() + 2 * n as usize);
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        let lexeme = r.cstring()?;
        out.push('\'');
        for c in utf8(lexeme)?.chars() {
            if c == '\'' || c == '\\' {
                out.push(c);
            }
            out.push(c);
        }
        out.push('\'');
        let npos = r.u16()?;
        for p in 0..npos {
            out.push(if p == 0 { ':' } else { ',' });
            let pos = r.u16()?;
            let _ = write!(out, "{}", pos & 0x3fff);
            match pos >> 14 {
                3 => out.push('A'),
                2 => out.push('B'),
                1 => out.push('C'),
                _ => {}
            }
        }
    }
    r.finish("tsvector")?;
    Ok(Value::Text(out))
}
