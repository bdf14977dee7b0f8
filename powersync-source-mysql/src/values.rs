//! Column values → SQLite values (DESIGN.md "Values"), for both paths: the snapshot reads
//! rows with the binary protocol (prepared statements) on a utf8mb4, UTC session; the binlog
//! carries the storage encoding. Each path's differences are resolved here so a value reads the
//! same whichever path delivered it (the golden type test checks this):
//!
//! | MySQL type | value |
//! |---|---|
//! | TINYINT…BIGINT (signed/unsigned) | `Integer`; BIGINT UNSIGNED above i64::MAX → `Text` base 10 |
//! | DECIMAL/NUMERIC | `Text`, exact, scale kept |
//! | FLOAT / DOUBLE | `Real` |
//! | BIT(n), n ≤ 63 | `Integer` (the bits as an unsigned number) |
//! | BIT(64) | `Text`, the bits as an unsigned base-10 number, for every value (`"0"`, `"18446744073709551615"`): one SQLite type per column, where switching to `Text` only above `i64::MAX` would mix two |
//! | YEAR | `Integer` (`0000` → 0) |
//! | DATE | `Text` `YYYY-MM-DD` |
//! | TIME(p) | `Text` `[-]HH:MM:SS[.p digits]` (hours up to 838) |
//! | DATETIME(p) | `Text` `YYYY-MM-DDTHH:MM:SS[.p digits]` |
//! | TIMESTAMP(p) | `Text` UTC `YYYY-MM-DDTHH:MM:SS[.p digits]Z` |
//! | zero dates (`0000-00-00`, `0000-00-00 00:00:00`) and dates with a zero month or day | `Null` |
//! | CHAR/VARCHAR/TEXT (any charset) | `Text` (UTF-8) |
//! | BINARY(n) | `Blob` of n bytes (zero padded, as stored) |
//! | VARBINARY/BLOB | `Blob` |
//! | ENUM | `Text` (the member; the invalid-value index 0 → `""`) |
//! | SET | `Text`, JSON array of members in definition order, `[]` when empty |
//! | JSON | `Text`: MariaDB as stored; MySQL in the server's own text rendering (binary JSON from the binlog is rendered the same way) |
//! | spatial | `Text`, GeoJSON |
//! | anything else | `Text` as the server renders it |

use mysql_common::binlog::value::BinlogValue;
use mysql_common::value::Value as My;
use powersync_source_core::normalize::decimal::decimal_text;
use powersync_source_core::normalize::integer::f32_value;
use powersync_source_core::normalize::json::JsonArray;
use powersync_source_core::normalize::spatial::mysql_geometry_to_geojson;
use powersync_source_core::normalize::time::{
    format_time_span, format_timestamp_utc, DateTimeFields, FracDigits, NANOS_PER_SECOND,
};
use powersync_source_core::{SourceError, TableName, Value};

use crate::catalog::{ColumnInfo, Kind};
use crate::decimal_binary::is_normal_text;
use crate::json_binary;

/// Which path a value came from (they differ for a few types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// Binary protocol result set on a utf8mb4 / UTC session.
    Snapshot,
    /// Binlog row image.
    Binlog,
}

/// Decodes one value of `col` of `table`.
pub(crate) fn convert(
    value: My,
    col: &ColumnInfo,
    table: &TableName,
    path: Path,
) -> Result<Value, SourceError> {
    let fail = |what: String| {
        SourceError::decode_value(&table.to_string(), &col.name, &kind_name(&col.kind), what)
    };
    if let My::NULL = value {
        return Ok(Value::Null);
    }
    let v = match (&col.kind, value) {
        // The binlog's signedness comes from optional metadata that may be missing or may
        // not line up with the columns: the catalog's signedness decides, from the raw bits.
        (Kind::Int { unsigned, bits }, My::Int(i)) => int_value(i as u64, *unsigned, *bits),
        (Kind::Int { unsigned, bits }, My::UInt(u)) => int_value(u, *unsigned, *bits),
        // Servers print DECIMAL in the normal form already: the bytes become the text as
        // they are, without a copy.
        (Kind::Decimal, My::Bytes(b)) if is_normal_text(&b) => {
            Value::Text(String::from_utf8(b).map_err(|e| fail(e.to_string()))?)
        }
        (Kind::Decimal, My::Bytes(b)) => {
            Value::Text(decimal_text(&ascii(&b).map_err(fail)?).map_err(fail)?)
        }
        (Kind::Float, My::Float(f)) => f32_value(f),
        (Kind::Float, My::Double(f)) => f32_value(f as f32),
        (Kind::Double, My::Double(f)) => Value::real(f),
        (Kind::Double, My::Float(f)) => Value::real(f as f64),
        (Kind::Bit { width }, My::Bytes(b)) => {
            if b.len() > 8 && b[..b.len() - 8].iter().any(|x| *x != 0) {
                return Err(fail(format!("{} bytes do not fit 64 bits", b.len())));
            }
            let bits = b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64);
            bit_value(bits, *width).map_err(fail)?
        }
        (Kind::Bit { width }, My::Int(i)) => bit_value(i as u64, *width).map_err(fail)?,
        (Kind::Bit { width }, My::UInt(u)) => bit_value(u, *width).map_err(fail)?,
        (Kind::Year, My::Int(i)) => Value::Integer(i),
        (Kind::Year, My::UInt(u)) => Value::unsigned(u),
        (Kind::Year, My::Bytes(b)) => {
            let y: i64 = ascii(&b)
                .map_err(fail)?
                .parse()
                .map_err(|_| fail("not a year".into()))?;
            // The binlog stores YEAR as (year - 1900), with 0 meaning `0000`.
            Value::Integer(if path == Path::Binlog && y == 1900 {
                0
            } else {
                y
            })
        }
        (Kind::Date, My::Date(y, m, d, ..)) => date_value(y, m, d),
        (Kind::DateTime { frac }, My::Date(y, mo, d, h, mi, s, us)) => {
            datetime_value(fields(y, mo, d, h, mi, s, us), *frac, false)
        }
        (Kind::Timestamp { frac }, My::Date(y, mo, d, h, mi, s, us)) => {
            datetime_value(fields(y, mo, d, h, mi, s, us), *frac, true)
        }
        // Binlog TIMESTAMP2: seconds since the epoch (UTC) as text, optional `.micros`;
        // 0 is the zero timestamp.
        (Kind::Timestamp { frac }, My::Bytes(b)) => {
            let text = ascii(&b).map_err(fail)?;
            let (secs, micros) = match text.split_once('.') {
                Some((s, f)) => (s, f),
                None => (text.as_str(), "0"),
            };
            let secs: i64 = secs
                .parse()
                .map_err(|_| fail(format!("bad timestamp `{text}`")))?;
            let micros: i64 = micros
                .parse()
                .map_err(|_| fail(format!("bad timestamp `{text}`")))?;
            timestamp_value(secs, micros, *frac)
        }
        // Pre-5.6 binlog TIMESTAMP: whole seconds.
        (Kind::Timestamp { frac }, My::Int(secs)) => timestamp_value(secs, 0, *frac),
        (Kind::Time { frac }, My::Time(neg, days, h, m, s, us)) => {
            let nanos = ((days as u64 * 24 + h as u64) * 3600 + m as u64 * 60 + s as u64)
                * 1_000_000_000
                + us as u64 * 1000;
            Value::Text(format_time_span(neg, nanos, FracDigits::Fixed(*frac)))
        }
        (Kind::Text { charset }, My::Bytes(b)) => match path {
            Path::Snapshot => Value::Text(String::from_utf8(b).map_err(|e| fail(e.to_string()))?),
            Path::Binlog => Value::Text(charset.decode(&b).map_err(fail)?),
        },
        (Kind::FixedBinary { width }, My::Bytes(mut b)) => {
            // The binlog strips BINARY(n)'s trailing zero padding; the table holds it.
            if b.len() < *width {
                b.resize(*width, 0);
            }
            Value::Blob(b)
        }
        (Kind::Binary, My::Bytes(b)) => Value::Blob(b),
        (Kind::Enum(members), My::Int(i)) => Value::Text(enum_member(members, i).map_err(fail)?),
        (Kind::Enum(members), My::UInt(u)) => {
            Value::Text(enum_member(members, u as i64).map_err(fail)?)
        }
        (Kind::Enum(_), My::Bytes(b)) => {
            Value::Text(String::from_utf8(b).map_err(|e| fail(e.to_string()))?)
        }
        (Kind::Set(members), My::Bytes(b)) => match path {
            Path::Binlog => Value::Text(set_from_bits(members, &b)),
            Path::Snapshot => {
                let s = String::from_utf8(b).map_err(|e| fail(e.to_string()))?;
                let mut arr = JsonArray::new();
                for m in s.split(',').filter(|m| !m.is_empty()) {
                    arr.push_str(m);
                }
                Value::Text(arr.finish())
            }
        },
        (Kind::Set(members), My::UInt(bits)) => {
            Value::Text(set_from_bits(members, &bits.to_le_bytes()))
        }
        (Kind::Json, My::Bytes(b)) => {
            Value::Text(String::from_utf8(b).map_err(|e| fail(e.to_string()))?)
        }
        (Kind::Geometry, My::Bytes(b)) => {
            if b.is_empty() {
                Value::Null
            } else {
                Value::Text(mysql_geometry_to_geojson(&b).map_err(fail)?)
            }
        }
        (Kind::Other, v) => match v {
            My::Bytes(b) => Value::Text(String::from_utf8_lossy(&b).into_owned()),
            My::Int(i) => Value::Integer(i),
            My::UInt(u) => Value::unsigned(u),
            My::Float(f) => f32_value(f),
            My::Double(f) => Value::real(f),
            other => Value::Text(other.as_sql(true).trim_matches('\'').to_owned()),
        },
        (kind, other) => {
            return Err(fail(format!(
                "unexpected wire value {other:?} for a {} column",
                kind_name(kind)
            )))
        }
    };
    Ok(v)
}

/// Decodes a binlog row value.
pub(crate) fn convert_binlog(
    value: BinlogValue<'_>,
    col: &ColumnInfo,
    table: &TableName,
) -> Result<Value, SourceError> {
    match value {
        BinlogValue::Value(v) => convert(v, col, table, Path::Binlog),
        BinlogValue::Jsonb(j) => json_binary::render_value(&j)
            .map(Value::Text)
            .map_err(|e| SourceError::decode_value(&table.to_string(), &col.name, "json", e)),
        BinlogValue::JsonDiff(_) => Err(SourceError::unsupported(format!(
            "column {} of table {table}: partial JSON update in the binlog",
            col.name
        ))
        .with_hint(
            "SET GLOBAL binlog_row_value_options = '' so the binlog carries whole JSON documents",
        )),
    }
}

/// A BIT(`width`) value, its bits as an unsigned number: `Integer` up to 63 bits; `Text` in
/// base 10 for BIT(64), whatever the value, so a column never mixes the two types (a BIT(64)
/// holding `0` and one holding `2^64 - 1` both read as text).
fn bit_value(bits: u64, width: u8) -> Result<Value, String> {
    if width >= 64 {
        return Ok(Value::Text(bits.to_string()));
    }
    if bits >> width != 0 {
        return Err(format!("{bits} does not fit BIT({width})"));
    }
    // Fewer than 64 bits: always within i64.
    Ok(Value::Integer(bits as i64))
}

/// An integer of `bits` storage bits, read as unsigned or two's complement signed.
pub(crate) fn int_value(raw: u64, unsigned: bool, bits: u8) -> Value {
    let bits = bits.clamp(1, 64) as u32;
    let mask = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let v = raw & mask;
    if unsigned {
        Value::unsigned(v)
    } else if bits < 64 && v >> (bits - 1) & 1 == 1 {
        Value::Integer((v | !mask) as i64)
    } else {
        Value::Integer(v as i64)
    }
}

fn ascii(b: &[u8]) -> Result<String, String> {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| "not ASCII text".to_owned())
}

/// DATETIME fields as MySQL sends them (microseconds) in the core's terms.
pub(crate) fn fields(
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    micros: u32,
) -> DateTimeFields {
    DateTimeFields {
        year,
        month,
        day,
        hour,
        minute,
        second,
        // A fraction of a second or more (corrupt bytes) stays invalid: NULL like a zero date.
        nanos: micros.saturating_mul(1000),
    }
}

/// A DATETIME/TIMESTAMP from its fields with `frac` fraction digits (`Z` when `utc`); zero and
/// otherwise invalid dates are NULL.
pub(crate) fn datetime_value(f: DateTimeFields, frac: u8, utc: bool) -> Value {
    f.format(FracDigits::Fixed(frac), utc)
        .map_or(Value::Null, Value::Text)
}

/// A TIMESTAMP from seconds and microseconds since the epoch (UTC) with `frac` fraction
/// digits; 0 is MySQL's zero timestamp, NULL.
pub(crate) fn timestamp_value(secs: i64, micros: i64, frac: u8) -> Value {
    if secs == 0 && micros == 0 {
        return Value::Null;
    }
    Value::Text(format_timestamp_utc(
        secs as i128 * NANOS_PER_SECOND + micros as i128 * 1000,
        FracDigits::Fixed(frac),
    ))
}

/// A DATE from its fields; zero and otherwise invalid dates are NULL.
pub(crate) fn date_value(year: u16, month: u8, day: u8) -> Value {
    fields(year, month, day, 0, 0, 0, 0)
        .format_date()
        .map_or(Value::Null, Value::Text)
}

fn enum_member(members: &[String], index: i64) -> Result<String, String> {
    if index == 0 {
        return Ok(String::new());
    }
    usize::try_from(index - 1)
        .ok()
        .and_then(|i| members.get(i))
        .cloned()
        .ok_or_else(|| format!("ENUM index {index} is beyond its {} members", members.len()))
}

fn set_from_bits(members: &[String], bits: &[u8]) -> String {
    let mut arr = JsonArray::new();
    for (i, m) in members.iter().enumerate() {
        if bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0) {
            arr.push_str(m);
        }
    }
    arr.finish()
}

pub(crate) fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Int { unsigned, bits } => {
            format!("int{bits}{}", if *unsigned { " unsigned" } else { "" })
        }
        Kind::Decimal => "decimal".into(),
        Kind::Float => "float".into(),
        Kind::Double => "double".into(),
        Kind::Bit { width } => format!("bit({width})"),
        Kind::Year => "year".into(),
        Kind::Date => "date".into(),
        Kind::Time { .. } => "time".into(),
        Kind::DateTime { .. } => "datetime".into(),
        Kind::Timestamp { .. } => "timestamp".into(),
        Kind::Text { .. } => "text".into(),
        Kind::FixedBinary { .. } => "binary".into(),
        Kind::Binary => "blob".into(),
        Kind::Enum(_) => "enum".into(),
        Kind::Set(_) => "set".into(),
        Kind::Json => "json".into(),
        Kind::Geometry => "geometry".into(),
        Kind::Other => "other".into(),
    }
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

    fn t() -> TableName {
        TableName::new("db", "t")
    }

    #[test]
    fn paths_agree() {
        let ts = col(Kind::Timestamp { frac: 3 });
        assert_eq!(
            convert(
                My::Bytes(b"1700000000.123000".to_vec()),
                &ts,
                &t(),
                Path::Binlog
            )
            .unwrap(),
            convert(
                My::Date(2023, 11, 14, 22, 13, 20, 123_000),
                &ts,
                &t(),
                Path::Snapshot
            )
            .unwrap()
        );
        let u8c = col(Kind::Int {
            unsigned: true,
            bits: 8,
        });
        assert_eq!(
            convert(My::Int(-1), &u8c, &t(), Path::Binlog).unwrap(),
            Value::Integer(255)
        );
        let u64c = col(Kind::Int {
            unsigned: true,
            bits: 64,
        });
        assert_eq!(
            convert(My::Int(-1), &u64c, &t(), Path::Binlog).unwrap(),
            Value::Text("18446744073709551615".into())
        );
        let set = col(Kind::Set(Arc::from(vec![
            "a".to_owned(),
            "b".into(),
            "c".into(),
        ])));
        assert_eq!(
            convert(My::Bytes(vec![0b101]), &set, &t(), Path::Binlog).unwrap(),
            convert(My::Bytes(b"a,c".to_vec()), &set, &t(), Path::Snapshot).unwrap()
        );
        let y = col(Kind::Year);
        assert_eq!(
            convert(My::Bytes(b"1900".to_vec()), &y, &t(), Path::Binlog).unwrap(),
            Value::Integer(0)
        );
        let d = col(Kind::Date);
        assert_eq!(
            convert(My::Date(0, 0, 0, 0, 0, 0, 0), &d, &t(), Path::Snapshot).unwrap(),
            Value::Null
        );
        // BIT(n): Integer up to 63 bits, BIT(64) always Text, on both paths
        let b63 = col(Kind::Bit { width: 63 });
        let b64 = col(Kind::Bit { width: 64 });
        let max63 = vec![0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        for path in [Path::Snapshot, Path::Binlog] {
            assert_eq!(
                convert(My::Bytes(max63.clone()), &b63, &t(), path).unwrap(),
                Value::Integer(i64::MAX)
            );
            assert_eq!(
                convert(My::Bytes(vec![0; 8]), &b64, &t(), path).unwrap(),
                Value::Text("0".into())
            );
            assert_eq!(
                convert(My::Bytes(vec![0xff; 8]), &b64, &t(), path).unwrap(),
                Value::Text("18446744073709551615".into())
            );
        }
        assert_eq!(
            convert(My::UInt(5), &b64, &t(), Path::Snapshot).unwrap(),
            Value::Text("5".into())
        );
        assert!(convert(
            My::Bytes(vec![0xff]),
            &col(Kind::Bit { width: 7 }),
            &t(),
            Path::Binlog
        )
        .is_err());
        let tm = col(Kind::Time { frac: 2 });
        assert_eq!(
            convert(My::Time(true, 1, 2, 3, 4, 500_000), &tm, &t(), Path::Binlog).unwrap(),
            Value::Text("-26:03:04.50".into())
        );
    }
}
