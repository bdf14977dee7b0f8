//! Scalars from the binary send format, and a bounds-checked reader for the structured ones.

use std::fmt::Write;

use powersync_source_core::normalize::integer::{f32_value, f64_value, u64_value};
use powersync_source_core::normalize::json::json_text;
use powersync_source_core::normalize::uuid::format_uuid;
use powersync_source_core::Value;

use super::registry::{Scalar, TypeRegistry};
use super::{datetime, geometry, json, network, numeric, utf8, Format, Res, ValueError};

/// Decodes a value in the binary send format (pgoutput `binary 'true'`, `COPY` binary,
/// extended-query binary results) of type `oid` with type modifier `typmod` (`-1` if none).
///
/// Gives the same [`Value`] as [`decode_text`](super::decode_text) for the same stored value.
/// Types without a binary decoder (see [`TypeRegistry::supports_binary`]) give a
/// [`ValueError`]. Never panics.
pub fn decode_binary(
    registry: &TypeRegistry,
    oid: u32,
    typmod: i32,
    bytes: &[u8],
) -> Result<Value, ValueError> {
    json::decode(registry, oid, typmod, Format::Binary, bytes)
        .map_err(|reason| ValueError::new(registry, oid, typmod, Format::Binary, reason))
}

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
            Value::Text(format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff))
        }
        Scalar::Tid => {
            let a: [u8; 6] = fixed(b, "tid")?;
            let block = u32::from_be_bytes([a[0], a[1], a[2], a[3]]);
            let offset = u16::from_be_bytes([a[4], a[5]]);
            Value::Text(format!("({block},{offset})"))
        }
        Scalar::Geometry => json::geometry_value(b)?,
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

/// Reads big-endian fields from a value's bytes; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        match end {
            Some(end) => {
                let s = &self.b[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "value ends early: needs {n} more bytes at offset {} of {}",
                self.pos,
                self.b.len()
            )),
        }
    }

    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Res<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Res<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn i32(&mut self) -> Res<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Res<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Bytes up to a zero byte (consumed, not returned).
    pub(crate) fn cstring(&mut self) -> Res<&'a [u8]> {
        let rest = &self.b[self.pos..];
        let Some(n) = rest.iter().position(|&c| c == 0) else {
            return Err("unterminated string".to_owned());
        };
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    /// A length-prefixed value: `-1` is NULL.
    pub(crate) fn value(&mut self) -> Res<Option<&'a [u8]>> {
        match self.i32()? {
            -1 => Ok(None),
            n if n < 0 => Err(format!("invalid value length {n}")),
            n => self.take(n as usize).map(Some),
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    /// Errors unless every byte was read.
    pub(crate) fn finish(&self, what: &str) -> Res<()> {
        if self.pos == self.b.len() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes after the {what}",
                self.b.len() - self.pos
            ))
        }
    }
}
