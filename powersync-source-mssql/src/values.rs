//! SQL Server values → SQLite values (DESIGN.md "Values"), from tiberius' [`ColumnData`].
//!
//! | SQL Server | [`Value`] |
//! |---|---|
//! | `tinyint`, `smallint`, `int`, `bigint` | `Integer` |
//! | `bit` | `Integer` 0/1 |
//! | `decimal`, `numeric` | `Text`, exact digits with the column's scale |
//! | `money`, `smallmoney` | `Text`, four decimals (selected as `decimal(19,4)`/`decimal(10,4)`: tiberius reads money through `f64`) |
//! | `float`, `real` | `Real` |
//! | `date` | `Text` `YYYY-MM-DD` |
//! | `time(n)` | `Text` `HH:MM:SS.fffffff` with `n` fraction digits (100 ns resolution) |
//! | `datetime2(n)` | `Text` `YYYY-MM-DDTHH:MM:SS.fffffff` with `n` digits |
//! | `datetime` | `Text` with 3 digits, rounded to the millisecond as SQL Server prints it (`.003`, `.007`) |
//! | `smalldatetime` | `Text` without fraction |
//! | `datetimeoffset(n)` | `Text` in UTC with `Z` |
//! | `char`, `nchar`, `varchar`, `nvarchar`, `text`, `ntext`, `xml` | `Text` |
//! | `binary`, `varbinary`, `image`, `rowversion`/`timestamp` | `Blob` |
//! | `uniqueidentifier` | `Text`, lowercase |
//! | `geometry`, `geography` | `Text`, GeoJSON (see [`crate::spatial`]); shapes without a GeoJSON form (arcs) become the hex text of the serialized value |
//! | `hierarchyid` | `Text` in its path form `/1/2/` (selected as `CAST(col AS nvarchar(4000))`, which is `ToString()`) |
//! | `sql_variant` | the rule of its base type (see [`variant_value`]) |
//! | anything else | `Text` as the server renders it |
//!
//! Why hierarchyid is rendered by the server: its bit-packed encoding (MS-SSCLRT §2.3) has
//! eleven variable-width label ranges; the server's `ToString()` is the reference for it and
//! costs nothing, so decoding it here would only add a way to be wrong.
//!
//! UDT columns (`geometry`, `geography`, `hierarchyid`) and `sql_variant` are never selected
//! raw: tiberius 0.12 cannot read their metadata (it panics), so the queries cast them.

use std::borrow::Cow;

use powersync_source_core::normalize::time::FracDigits;
use powersync_source_core::normalize::{decimal, integer, time, uuid};
use powersync_source_core::Value;
use tiberius::ColumnData;

use crate::backend::SqlType;
use crate::spatial::{clr_to_geojson, SpatialKind};

/// Days from 0001-01-01 (the `date`/`datetime2` epoch) to 1970-01-01.
const DAYS_0001_TO_1970: i64 = 719_162;
/// Days from 1900-01-01 (the `datetime`/`smalldatetime` epoch) to 1970-01-01.
const DAYS_1900_TO_1970: i64 = 25_567;
const NANOS_PER_DAY: i128 = 86_400_000_000_000;

/// One value of a column of type `ty`. Errors say what is wrong (the caller names the
/// table and column).
pub fn column_value(data: ColumnData<'_>, ty: &SqlType) -> Result<Value, String> {
    Ok(match data {
        ColumnData::U8(v) => v.map_or(Value::Null, |v| Value::Integer(v.into())),
        ColumnData::I16(v) => v.map_or(Value::Null, |v| Value::Integer(v.into())),
        ColumnData::I32(v) => v.map_or(Value::Null, |v| Value::Integer(v.into())),
        ColumnData::I64(v) => v.map_or(Value::Null, Value::Integer),
        ColumnData::F32(v) => v.map_or(Value::Null, integer::f32_value),
        ColumnData::F64(v) => v.map_or(Value::Null, integer::f64_value),
        ColumnData::Bit(v) => v.map_or(Value::Null, Value::bool),
        ColumnData::String(None) => Value::Null,
        ColumnData::String(Some(s)) => match ty.name.as_str() {
            "sql_variant" => variant_value(&s)?,
            _ => Value::Text(s.into_owned()),
        },
        ColumnData::Guid(v) => v.map_or(Value::Null, |g| {
            Value::Text(uuid::format_uuid(g.as_bytes()))
        }),
        ColumnData::Binary(None) => Value::Null,
        ColumnData::Binary(Some(b)) => binary_value(b, ty),
        ColumnData::Numeric(v) => v.map_or(Value::Null, |n| {
            Value::Text(decimal::decimal_from_int(n.value(), n.scale().into()))
        }),
        ColumnData::Xml(v) => v.map_or(Value::Null, |x| Value::Text(x.to_string())),
        ColumnData::DateTime(v) => v.map_or(Value::Null, |d| {
            datetime_value(d.days().into(), d.seconds_fragments().into())
        }),
        ColumnData::SmallDateTime(v) => v.map_or(Value::Null, |d| {
            let nanos = (i128::from(d.days()) - i128::from(DAYS_1900_TO_1970)) * NANOS_PER_DAY
                + i128::from(d.seconds_fragments()) * 60_000_000_000;
            Value::Text(time::format_timestamp(nanos, FracDigits::Fixed(0)))
        }),
        ColumnData::Time(v) => v.map_or(Value::Null, |t| {
            Value::Text(time::format_time(
                time_nanos(t.increments(), t.scale()),
                FracDigits::Fixed(t.scale()),
            ))
        }),
        ColumnData::Date(v) => v.map_or(Value::Null, |d| {
            Value::Text(time::format_date(i64::from(d.days()) - DAYS_0001_TO_1970))
        }),
        ColumnData::DateTime2(v) => v.map_or(Value::Null, |dt| {
            let t = dt.time();
            Value::Text(time::format_timestamp(
                datetime2_nanos(dt.date().days(), t.increments(), t.scale()),
                FracDigits::Fixed(t.scale()),
            ))
        }),
        // The TDS datetimeoffset carries the UTC instant plus the offset (MS-TDS 2.2.5.4.2),
        // so the instant prints as is.
        ColumnData::DateTimeOffset(v) => v.map_or(Value::Null, |d| {
            let dt = d.datetime2();
            let t = dt.time();
            Value::Text(time::format_timestamp_utc(
                datetime2_nanos(dt.date().days(), t.increments(), t.scale()),
                FracDigits::Fixed(t.scale()),
            ))
        }),
    })
}

fn binary_value(b: Cow<'_, [u8]>, ty: &SqlType) -> Value {
    let kind = match ty.name.as_str() {
        "geometry" => SpatialKind::Geometry,
        "geography" => SpatialKind::Geography,
        _ => return Value::Blob(b.into_owned()),
    };
    match clr_to_geojson(&b, kind) {
        Ok(json) => Value::Text(json),
        // Arcs and the full globe have no GeoJSON: keep the value, as hex text.
        Err(_) => Value::Text(hex_upper(&b)),
    }
}

fn hex_upper(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("0x");
    for x in b {
        s.push_str(&format!("{x:02X}"));
    }
    s
}

fn time_nanos(increments: u64, scale: u8) -> u64 {
    // 10^-scale second increments; scale ≤ 7 on the wire, clamp anything else.
    let scale = u32::from(scale.min(9));
    increments.saturating_mul(10u64.pow(9 - scale))
}

fn datetime2_nanos(days_since_0001: u32, increments: u64, scale: u8) -> i128 {
    (i128::from(days_since_0001) - i128::from(DAYS_0001_TO_1970)) * NANOS_PER_DAY
        + i128::from(time_nanos(increments, scale))
}

/// `datetime`: days since 1900 and 1/300-second ticks, printed with milliseconds rounded the
/// way SQL Server prints them (ticks 1 → `.003`, 2 → `.007`).
fn datetime_value(days: i64, ticks: i64) -> Value {
    let millis = (ticks * 10 + 1) / 3;
    let nanos = (i128::from(days) - i128::from(DAYS_1900_TO_1970)) * NANOS_PER_DAY
        + i128::from(millis) * 1_000_000;
    Value::Text(time::format_timestamp(nanos, FracDigits::Fixed(3)))
}

/// A `sql_variant`, selected as `<base type>:<text>` (see [`crate::tds`]): the value follows
/// the rule of its base type. Integers and `bit` → `Integer`; `float`/`real` → `Real`;
/// `decimal`/`numeric`/`money` → exact text; `date`, `time`, `datetime*` → the same texts as
/// the typed columns (`datetime2`/`time` with 7 digits, `datetime` with 3, `smalldatetime`
/// with none); `datetimeoffset` → UTC `Z`; `uniqueidentifier` → lowercase; `binary` →
/// `Blob` (the text is hex); everything else → the text.
pub fn variant_value(s: &str) -> Result<Value, String> {
    let (base, text) = s
        .split_once(':')
        .ok_or_else(|| "sql_variant text without its base type".to_string())?;
    let bad = |e: String| format!("sql_variant of base type {base}: {e}");
    Ok(match base {
        "tinyint" | "smallint" | "int" | "bigint" => Value::Integer(
            text.trim()
                .parse()
                .map_err(|e: std::num::ParseIntError| bad(e.to_string()))?,
        ),
        "bit" => Value::bool(text.trim() != "0"),
        "float" | "real" => integer::f64_value(
            text.trim()
                .parse()
                .map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?,
        ),
        "decimal" | "numeric" | "money" | "smallmoney" => {
            Value::Text(decimal::decimal_text(text.trim()).map_err(bad)?)
        }
        "uniqueidentifier" => Value::Text(uuid::uuid_text(text).map_err(bad)?),
        "date" => Value::Text(time::format_date(time::parse_date_text(text).map_err(bad)?)),
        "time" => {
            let (nanos, _) = time::parse_time_text(text).map_err(bad)?;
            Value::Text(time::format_time(nanos, FracDigits::Fixed(7)))
        }
        "datetime" | "datetime2" | "smalldatetime" => {
            let (nanos, _) = time::parse_timestamp_text(text).map_err(bad)?;
            let digits = match base {
                "datetime" => 3,
                "smalldatetime" => 0,
                _ => 7,
            };
            Value::Text(time::format_timestamp(nanos, FracDigits::Fixed(digits)))
        }
        "datetimeoffset" => {
            let (nanos, offset) = time::parse_timestamp_text(text).map_err(bad)?;
            Value::Text(time::format_timestamp_utc(
                time::to_utc_nanos(nanos, offset),
                FracDigits::Fixed(7),
            ))
        }
        "binary" | "varbinary" => Value::Blob(parse_hex(text).map_err(bad)?),
        _ => Value::Text(text.to_string()),
    })
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "not hex".to_string())
        })
        .collect()
}

#[cfg(test)]
#[path = "values_golden.rs"]
mod golden;
