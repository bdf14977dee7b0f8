//! One binlog row-image value → a SQLite [`Value`], read straight from the event bytes.
//!
//! The common column types (integers, floats, character and binary strings, JSON text,
//! DECIMAL, DATE, DATETIME2, TIMESTAMP2, YEAR) are read here with no intermediate value: a
//! string is copied once, into the `String` or `Vec` the [`Value`] owns; a DECIMAL or a
//! DATETIME is written once as its text. Every other type and column kind goes through
//! `mysql_common`'s storage-format decoder and [`convert_binlog`], the reference this fast path
//! must agree with (the unit tests compare the two on every type they share).

use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;
use powersync_source_core::normalize::integer::f32_value;
use powersync_source_core::normalize::spatial::mysql_geometry_to_geojson;
use powersync_source_core::{SourceError, TableName, Value};

use crate::catalog::{ColumnInfo, Kind};
use crate::charset::Charset;
use crate::row_image::ColumnFormat;
use crate::values::{convert_binlog, int_value};
use crate::{decimal_binary, values};

/// `DATETIMEF_INT_OFS`: the bias of a DATETIME2's 40-bit integer part.
const DATETIME_INT_OFS: i64 = 0x80_0000_0000;

/// Reads the value of column `col` (storage format `f`) from the front of `buf`.
pub(crate) fn read<'a>(
    buf: &mut ParseBuf<'a>,
    f: &'a ColumnFormat,
    col: &ColumnInfo,
    table: &TableName,
) -> Result<Value, SourceError> {
    use ColumnType::*;
    let fail = |what: String| {
        SourceError::decode_value(
            &table.to_string(),
            &col.name,
            &values::kind_name(&col.kind),
            what,
        )
    };
    let short = || fail(format!("truncated {:?} value", f.ty));
    let fixed = |buf: &mut ParseBuf<'a>, n: usize| eat(buf, n).ok_or_else(short);
    match (f.ty, &col.kind) {
        (
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG,
            Kind::Int { unsigned, bits },
        ) => {
            let width = match f.ty {
                MYSQL_TYPE_TINY => 1,
                MYSQL_TYPE_SHORT => 2,
                MYSQL_TYPE_INT24 => 3,
                MYSQL_TYPE_LONG => 4,
                _ => 8,
            };
            let b = fixed(buf, width)?;
            // Sign-extended from the storage width, as the reference decoder reads it; the
            // catalog's signedness and width decide the value.
            let mut raw = [0u8; 8];
            raw[..width].copy_from_slice(b);
            let shift = 64 - 8 * width as u32;
            let v = (i64::from_le_bytes(raw) << shift) >> shift;
            Ok(int_value(v as u64, *unsigned, *bits))
        }
        (MYSQL_TYPE_FLOAT, Kind::Float | Kind::Double) => {
            let b = fixed(buf, 4)?;
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            Ok(match col.kind {
                Kind::Float => f32_value(v),
                _ => Value::real(v as f64),
            })
        }
        (MYSQL_TYPE_DOUBLE, Kind::Float | Kind::Double) => {
            let b = fixed(buf, 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            let v = f64::from_le_bytes(a);
            Ok(match col.kind {
                Kind::Float => f32_value(v as f32),
                _ => Value::real(v),
            })
        }
        (MYSQL_TYPE_NEWDECIMAL, Kind::Decimal) => {
            let (text, used) = decimal_binary::read(buf.0, f.meta[0], f.meta[1]).map_err(fail)?;
            buf.checked_skip(used).then_some(()).ok_or_else(short)?;
            Ok(Value::Text(text))
        }
        (MYSQL_TYPE_DATETIME2, Kind::DateTime { frac }) => {
            let start = ParseBuf(buf.0);
            let b = fixed(buf, 5)?;
            let int = (u64::from_be_bytes([0, 0, 0, b[0], b[1], b[2], b[3], b[4]]) as i64)
                - DATETIME_INT_OFS;
            let micros = match f.meta[0] {
                1 | 2 => fixed(buf, 1)?[0] as i8 as i32 * 10_000,
                3 | 4 => {
                    let b = fixed(buf, 2)?;
                    i16::from_be_bytes([b[0], b[1]]) as i32 * 100
                }
                5 | 6 => {
                    let b = fixed(buf, 3)?;
                    i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8
                }
                _ => 0,
            };
            if int < 0 || micros < 0 {
                // Not a value MySQL writes for a DATETIME; the reference decides.
                *buf = start;
                return reference(buf, f, col, table);
            }
            let ymd = int >> 17;
            let ym = ymd >> 5;
            let hms = int % (1 << 17);
            let fields = values::fields(
                (ym / 13) as u16,
                (ym % 13) as u8,
                (ymd % (1 << 5)) as u8,
                (hms >> 12) as u8,
                ((hms >> 6) % (1 << 6)) as u8,
                (hms % (1 << 6)) as u8,
                micros as u32,
            );
            Ok(values::datetime_value(fields, *frac, false))
        }
        (MYSQL_TYPE_TIMESTAMP2, Kind::Timestamp { frac }) => {
            let b = fixed(buf, 4)?;
            let secs = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i32 as i64;
            let micros = match f.meta[0] {
                1 | 2 => fixed(buf, 1)?[0] as i8 as i64 * 10_000,
                3 | 4 => {
                    let b = fixed(buf, 2)?;
                    i16::from_be_bytes([b[0], b[1]]) as i64 * 100
                }
                5 | 6 => {
                    let b = fixed(buf, 3)?;
                    (i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8) as i64
                }
                _ => 0,
            };
            Ok(values::timestamp_value(secs, micros, *frac))
        }
        (MYSQL_TYPE_NEWDATE, Kind::Date) => {
            let b = fixed(buf, 3)?;
            let v = u32::from_le_bytes([b[0], b[1], b[2], 0]);
            let (y, m, d) = ((v >> 9) as u16, ((v >> 5) & 15) as u8, (v & 31) as u8);
            Ok(values::date_value(y, m, d))
        }
        (MYSQL_TYPE_YEAR, Kind::Year) => {
            // Stored as year - 1900, with 0 meaning `0000`.
            let y = fixed(buf, 1)?[0] as i64;
            Ok(Value::Integer(if y == 0 { 0 } else { 1900 + y }))
        }
        (
            MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_STRING
            | MYSQL_TYPE_BLOB
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_GEOMETRY,
            Kind::Text { .. }
            | Kind::Binary
            | Kind::FixedBinary { .. }
            | Kind::Json
            | Kind::Geometry
            | Kind::Other,
        ) => {
            let start = ParseBuf(buf.0);
            let Some(len_bytes) = length_bytes(f) else {
                *buf = start;
                return reference(buf, f, col, table);
            };
            let len = match len_bytes {
                1 => fixed(buf, 1)?[0] as usize,
                2 => {
                    let b = fixed(buf, 2)?;
                    u16::from_le_bytes([b[0], b[1]]) as usize
                }
                3 => {
                    let b = fixed(buf, 3)?;
                    u32::from_le_bytes([b[0], b[1], b[2], 0]) as usize
                }
                _ => {
                    let b = fixed(buf, 4)?;
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
                }
            };
            let b = fixed(buf, len)?;
            bytes_value(b, &col.kind).map_err(fail)
        }
        _ => reference(buf, f, col, table),
    }
}

/// The next `n` bytes of `buf`, if it holds them.
fn eat<'a>(buf: &mut ParseBuf<'a>, n: usize) -> Option<&'a [u8]> {
    buf.checked_eat(n)
}

/// The width of a string value's length prefix, as the reference decoder reads it; `None`
/// for a layout this fast path leaves to it.
fn length_bytes(f: &ColumnFormat) -> Option<usize> {
    use ColumnType::*;
    match f.ty {
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
            let max = f.meta[0] as usize | (f.meta[1] as usize) << 8;
            Some(if max < 256 { 1 } else { 2 })
        }
        MYSQL_TYPE_STRING => {
            // CHAR(n): metadata is (real type, length) with the length's high bits folded
            // into the type byte (MySQL bug #37426).
            let (b0, b1) = (f.meta[0] as usize, f.meta[1] as usize);
            if b0 == 0 {
                return None;
            }
            let max = if b0 & 0x30 != 0x30 {
                b1 | (((b0 & 0x30) ^ 0x30) << 4)
            } else {
                b1
            };
            Some(if max < 256 { 1 } else { 2 })
        }
        _ => match f.meta[0] {
            n @ 1..=4 => Some(n as usize),
            _ => None,
        },
    }
}

/// A string or blob value of a column of `kind`, as [`convert_binlog`] reads it.
fn bytes_value(b: &[u8], kind: &Kind) -> Result<Value, String> {
    Ok(match kind {
        Kind::Text { charset } => Value::Text(match charset {
            Charset::Utf8 => std::str::from_utf8(b)
                .map_err(|e| format!("not valid UTF-8: {e}"))?
                .to_owned(),
            // Character data is mostly ASCII, which every ASCII-compatible charset reads as is.
            Charset::Latin1 | Charset::Ascii if b.is_ascii() => {
                String::from_utf8(b.to_vec()).map_err(|e| e.to_string())?
            }
            cs => cs.decode(b)?,
        }),
        Kind::Binary => Value::Blob(b.to_vec()),
        Kind::FixedBinary { width } => {
            // The binlog strips BINARY(n)'s trailing zero padding; the table holds it.
            let mut v = Vec::with_capacity(b.len().max(*width));
            v.extend_from_slice(b);
            if v.len() < *width {
                v.resize(*width, 0);
            }
            Value::Blob(v)
        }
        Kind::Json => Value::Text(
            std::str::from_utf8(b)
                .map_err(|e| e.to_string())?
                .to_owned(),
        ),
        Kind::Geometry if b.is_empty() => Value::Null,
        Kind::Geometry => Value::Text(mysql_geometry_to_geojson(b)?),
        _ => Value::Text(String::from_utf8_lossy(b).into_owned()),
    })
}

/// The reference path: `mysql_common`'s decoder, then [`convert_binlog`].
fn reference<'a>(
    buf: &mut ParseBuf<'a>,
    f: &'a ColumnFormat,
    col: &ColumnInfo,
    table: &TableName,
) -> Result<Value, SourceError> {
    let v = buf.parse((f.ty, &f.meta[..], false, false)).map_err(|e| {
        SourceError::decode(format!("rows event of {table}: column {}", col.name)).with_source(e)
    })?;
    convert_binlog(v, col, table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn col(kind: Kind) -> ColumnInfo {
        ColumnInfo {
            name: "c".into(),
            kind,
        }
    }

    /// Reads `bytes` both ways; both must agree and consume the same bytes.
    fn both(ty: ColumnType, meta: &[u8], kind: Kind, bytes: &[u8]) -> Result<Value, String> {
        let f = ColumnFormat::new(ty, meta).unwrap();
        let c = col(kind);
        let t = TableName::new("db", "t");
        let mut fast = ParseBuf(bytes);
        let mut slow = ParseBuf(bytes);
        let a = read(&mut fast, &f, &c, &t).map_err(|e| e.to_string());
        let b = reference(&mut slow, &f, &c, &t).map_err(|e| e.to_string());
        match (&a, &b) {
            (Ok(x), Ok(y)) => {
                assert_eq!(x, y, "{ty:?} {meta:?} {bytes:?}");
                assert_eq!(fast.len(), slow.len(), "{ty:?} consumed");
            }
            (Err(_), Err(_)) => {}
            _ => panic!("{ty:?} {meta:?} {bytes:?}: fast {a:?}, reference {b:?}"),
        }
        a
    }

    #[test]
    fn agrees_with_the_reference() {
        use ColumnType::*;
        let int = |unsigned, bits| Kind::Int { unsigned, bits };
        let utf8 = Kind::Text {
            charset: Charset::Utf8,
        };
        let latin1 = Kind::Text {
            charset: Charset::Latin1,
        };
        let cases: Vec<(ColumnType, Vec<u8>, Kind, Vec<u8>)> = vec![
            (MYSQL_TYPE_TINY, vec![], int(false, 8), vec![0xff]),
            (MYSQL_TYPE_TINY, vec![], int(true, 8), vec![0xff]),
            (MYSQL_TYPE_TINY, vec![], int(false, 16), vec![0x80]),
            (MYSQL_TYPE_SHORT, vec![], int(false, 16), vec![0x00, 0x80]),
            (
                MYSQL_TYPE_INT24,
                vec![],
                int(true, 24),
                vec![0xff, 0xff, 0xff],
            ),
            (
                MYSQL_TYPE_INT24,
                vec![],
                int(false, 24),
                vec![0xff, 0xff, 0xff],
            ),
            (MYSQL_TYPE_LONG, vec![], int(true, 32), vec![0xff; 4]),
            (MYSQL_TYPE_LONGLONG, vec![], int(true, 64), vec![0xff; 8]),
            (
                MYSQL_TYPE_LONGLONG,
                vec![],
                int(false, 64),
                vec![1, 0, 0, 0, 0, 0, 0, 0x80],
            ),
            (
                MYSQL_TYPE_FLOAT,
                vec![4],
                Kind::Float,
                1.5f32.to_le_bytes().to_vec(),
            ),
            (
                MYSQL_TYPE_DOUBLE,
                vec![8],
                Kind::Double,
                (-2.25f64).to_le_bytes().to_vec(),
            ),
            (
                MYSQL_TYPE_DOUBLE,
                vec![8],
                Kind::Float,
                0.1f64.to_le_bytes().to_vec(),
            ),
            (
                MYSQL_TYPE_VARCHAR,
                vec![40, 0],
                utf8.clone(),
                b"\x03caf".to_vec(),
            ),
            (
                MYSQL_TYPE_VARCHAR,
                vec![0, 1],
                utf8.clone(),
                b"\x02\x00h\xc3\xa9"[..4].to_vec(),
            ),
            (
                MYSQL_TYPE_VARCHAR,
                vec![40, 0],
                latin1.clone(),
                b"\x04caf\xe9".to_vec(),
            ),
            (MYSQL_TYPE_VARCHAR, vec![40, 0], latin1, b"\x03abc".to_vec()),
            (
                MYSQL_TYPE_VARCHAR,
                vec![40, 0],
                utf8.clone(),
                b"\x02\xff\xfe".to_vec(),
            ),
            (
                MYSQL_TYPE_VARCHAR,
                vec![40, 0],
                utf8.clone(),
                b"\x09abc".to_vec(),
            ),
            (
                MYSQL_TYPE_STRING,
                vec![0xfe, 40],
                utf8.clone(),
                b"\x02ab".to_vec(),
            ),
            (
                MYSQL_TYPE_STRING,
                vec![0xee, 0x2c],
                utf8,
                b"\x02\x00ab".to_vec(),
            ),
            (
                MYSQL_TYPE_STRING,
                vec![0xfe, 4],
                Kind::FixedBinary { width: 4 },
                b"\x01a".to_vec(),
            ),
            (
                MYSQL_TYPE_BLOB,
                vec![2],
                Kind::Binary,
                b"\x02\x00\x00\x01".to_vec(),
            ),
            (
                MYSQL_TYPE_BLOB,
                vec![4],
                Kind::Json,
                b"\x02\x00\x00\x00{}".to_vec(),
            ),
            (
                MYSQL_TYPE_BLOB,
                vec![3],
                Kind::Other,
                b"\x01\x00\x00\xff".to_vec(),
            ),
            (
                MYSQL_TYPE_GEOMETRY,
                vec![4],
                Kind::Geometry,
                vec![0, 0, 0, 0],
            ),
            (MYSQL_TYPE_NEWDECIMAL, vec![12, 2], Kind::Decimal, {
                let d: mysql_common::binlog::decimal::Decimal = "-1234567890.12".parse().unwrap();
                let mut v = Vec::new();
                d.write_bin(&mut v).unwrap();
                v
            }),
            (MYSQL_TYPE_NEWDATE, vec![], Kind::Date, {
                let v: u32 = (2024 << 9) | (2 << 5) | 29;
                v.to_le_bytes()[..3].to_vec()
            }),
            (MYSQL_TYPE_NEWDATE, vec![], Kind::Date, vec![0, 0, 0]),
            (MYSQL_TYPE_YEAR, vec![], Kind::Year, vec![0]),
            (MYSQL_TYPE_YEAR, vec![], Kind::Year, vec![124]),
            (
                MYSQL_TYPE_TIMESTAMP2,
                vec![0],
                Kind::Timestamp { frac: 0 },
                vec![0, 0, 0, 0],
            ),
            (
                MYSQL_TYPE_TIMESTAMP2,
                vec![6],
                Kind::Timestamp { frac: 6 },
                {
                    let mut v = 1_700_000_000u32.to_be_bytes().to_vec();
                    v.extend_from_slice(&123_456u32.to_be_bytes()[1..]);
                    v
                },
            ),
            (
                MYSQL_TYPE_TIMESTAMP2,
                vec![3],
                Kind::Timestamp { frac: 3 },
                {
                    let mut v = 1_700_000_000u32.to_be_bytes().to_vec();
                    v.extend_from_slice(&1234u16.to_be_bytes());
                    v
                },
            ),
            (
                MYSQL_TYPE_TIMESTAMP2,
                vec![2],
                Kind::Timestamp { frac: 2 },
                vec![0, 0, 0, 1, 5],
            ),
        ];
        for (ty, meta, kind, bytes) in cases {
            let _ = both(ty, &meta, kind, &bytes);
        }
        // Truncated input is an error on both paths.
        assert!(both(MYSQL_TYPE_LONG, &[], int(false, 32), &[1, 2]).is_err());
        assert!(both(
            MYSQL_TYPE_VARCHAR,
            &[40, 0],
            col(Kind::Binary).kind,
            &[5, 1]
        )
        .is_err());
        // Kinds the fast path leaves to the reference.
        let members: Arc<[String]> = Arc::from(vec!["a".to_owned(), "b".into()]);
        assert_eq!(
            both(
                MYSQL_TYPE_ENUM,
                &[247, 1],
                Kind::Enum(members.clone()),
                &[2]
            )
            .unwrap(),
            Value::Text("b".into())
        );
        assert_eq!(
            both(MYSQL_TYPE_SET, &[248, 1], Kind::Set(members), &[3]).unwrap(),
            Value::Text("[\"a\",\"b\"]".into())
        );
    }

    /// DATETIME2 of every precision: the packed layout (year*13+month, day, hour, minute,
    /// second, fraction) against the reference.
    #[test]
    fn datetime2_every_precision() {
        for frac in 0u8..=6 {
            for (y, mo, d, h, mi, s, us) in [
                (2024u64, 2u64, 29u64, 23u64, 59u64, 58u64, 123_456u32),
                (0, 0, 0, 0, 0, 0, 0),
                (9999, 12, 31, 23, 59, 59, 999_999),
                (1000, 1, 1, 0, 0, 0, 1),
            ] {
                let ym = y * 13 + mo;
                let int = (((ym << 5) | d) << 17) | (h << 12) | (mi << 6) | s;
                let biased = int as i64 + DATETIME_INT_OFS;
                let mut bytes = (biased as u64).to_be_bytes()[3..].to_vec();
                let digits = 10u32.pow(6 - frac as u32);
                let stored = us / digits;
                match frac {
                    1 | 2 => bytes.push(stored as u8 * if frac == 1 { 10 } else { 1 }),
                    3 | 4 => bytes.extend_from_slice(
                        &((stored * if frac == 3 { 10 } else { 1 }) as u16).to_be_bytes(),
                    ),
                    5 | 6 => bytes.extend_from_slice(
                        &(stored * if frac == 5 { 10 } else { 1 }).to_be_bytes()[1..],
                    ),
                    _ => {}
                }
                both(
                    ColumnType::MYSQL_TYPE_DATETIME2,
                    &[frac],
                    Kind::DateTime { frac },
                    &bytes,
                )
                .unwrap();
            }
        }
    }
}
