//! The golden table: SQL Server values as tiberius decodes them → the SQLite values hosts get.
//! It is the specification users read; the real-server suite checks the same outputs end to
//! end.

use std::borrow::Cow;

use proptest::prelude::*;
use tiberius::numeric::Numeric;
use tiberius::time::{Date, DateTime, DateTime2, DateTimeOffset, SmallDateTime, Time};
use tiberius::xml::XmlData;
use tiberius::{ColumnData, Uuid};

use super::*;
use crate::spatial::{clr_to_geojson, SpatialKind};

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

fn ty(name: &str) -> SqlType {
    SqlType::simple(name)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Days 2024-01-01 since 0001-01-01 and since 1900-01-01.
const D2024: u32 = 738_885;
const D2024_1900: i32 = 45_290;

#[test]
fn golden_table() {
    let cases: Vec<(&str, ColumnData<'static>, SqlType, Value)> = vec![
        (
            "tinyint",
            ColumnData::U8(Some(255)),
            ty("tinyint"),
            Value::Integer(255),
        ),
        (
            "smallint",
            ColumnData::I16(Some(-32768)),
            ty("smallint"),
            Value::Integer(-32768),
        ),
        (
            "int",
            ColumnData::I32(Some(i32::MAX)),
            ty("int"),
            Value::Integer(2_147_483_647),
        ),
        (
            "bigint",
            ColumnData::I64(Some(i64::MIN)),
            ty("bigint"),
            Value::Integer(i64::MIN),
        ),
        (
            "bit",
            ColumnData::Bit(Some(true)),
            ty("bit"),
            Value::Integer(1),
        ),
        (
            "decimal(10,2)",
            ColumnData::Numeric(Some(Numeric::new_with_scale(-12345, 2))),
            SqlType::decimal("decimal", 10, 2),
            t("-123.45"),
        ),
        (
            "numeric(38,0)",
            ColumnData::Numeric(Some(Numeric::new_with_scale(
                99_999_999_999_999_999_999_999_999_999_999_999_999,
                0,
            ))),
            SqlType::decimal("numeric", 38, 0),
            t("99999999999999999999999999999999999999"),
        ),
        (
            "numeric(5,5)",
            ColumnData::Numeric(Some(Numeric::new_with_scale(1, 5))),
            SqlType::decimal("numeric", 5, 5),
            t("0.00001"),
        ),
        // money is selected as decimal(19,4): every digit survives.
        (
            "money max",
            ColumnData::Numeric(Some(Numeric::new_with_scale(i64::MAX.into(), 4))),
            ty("money"),
            t("922337203685477.5807"),
        ),
        // Materialize test/sql-server-cdc/40-data-types.td: the money extremes.
        (
            "money min",
            ColumnData::Numeric(Some(Numeric::new_with_scale(i64::MIN.into(), 4))),
            ty("money"),
            t("-922337203685477.5808"),
        ),
        // char/varchar/text come converted to nvarchar by the server (any collation,
        // _UTF8 included): UTF-16 text.
        (
            "varchar (as nvarchar)",
            ColumnData::String(Some(Cow::Borrowed("héllo ✓ 😀"))),
            ty("varchar"),
            t("héllo ✓ 😀"),
        ),
        (
            "smallmoney",
            ColumnData::Numeric(Some(Numeric::new_with_scale(-2_147_483_648, 4))),
            ty("smallmoney"),
            t("-214748.3648"),
        ),
        (
            "real",
            ColumnData::F32(Some(1.5)),
            ty("real"),
            Value::Real(1.5),
        ),
        (
            "float",
            ColumnData::F64(Some(-2.25e300)),
            ty("float"),
            Value::Real(-2.25e300),
        ),
        (
            "date min",
            ColumnData::Date(Some(Date::new(0))),
            ty("date"),
            t("0001-01-01"),
        ),
        (
            "date",
            ColumnData::Date(Some(Date::new(D2024))),
            ty("date"),
            t("2024-01-01"),
        ),
        (
            "date max",
            ColumnData::Date(Some(Date::new(3_652_058))),
            ty("date"),
            t("9999-12-31"),
        ),
        (
            "time(7)",
            ColumnData::Time(Some(Time::new(863_999_999_999, 7))),
            SqlType::scaled("time", 7),
            t("23:59:59.9999999"),
        ),
        (
            "time(3)",
            ColumnData::Time(Some(Time::new(45_296_789, 3))),
            SqlType::scaled("time", 3),
            t("12:34:56.789"),
        ),
        (
            "time(0)",
            ColumnData::Time(Some(Time::new(1, 0))),
            SqlType::scaled("time", 0),
            t("00:00:01"),
        ),
        (
            "datetime2(7)",
            ColumnData::DateTime2(Some(DateTime2::new(Date::new(D2024), Time::new(1, 7)))),
            SqlType::scaled("datetime2", 7),
            t("2024-01-01T00:00:00.0000001"),
        ),
        (
            "datetime2(2)",
            ColumnData::DateTime2(Some(DateTime2::new(Date::new(0), Time::new(5, 2)))),
            SqlType::scaled("datetime2", 2),
            t("0001-01-01T00:00:00.05"),
        ),
        (
            "datetime2 max",
            ColumnData::DateTime2(Some(DateTime2::new(
                Date::new(3_652_058),
                Time::new(863_999_999_999, 7),
            ))),
            SqlType::scaled("datetime2", 7),
            t("9999-12-31T23:59:59.9999999"),
        ),
        // The TDS value is the UTC instant (+120 minutes is only the offset to display).
        (
            "datetimeoffset(7)",
            ColumnData::DateTimeOffset(Some(DateTimeOffset::new(
                DateTime2::new(Date::new(D2024), Time::new(360_001_234_567, 7)),
                120,
            ))),
            SqlType::scaled("datetimeoffset", 7),
            t("2024-01-01T10:00:00.1234567Z"),
        ),
        (
            "datetimeoffset(0)",
            ColumnData::DateTimeOffset(Some(DateTimeOffset::new(
                DateTime2::new(Date::new(D2024), Time::new(0, 0)),
                -300,
            ))),
            SqlType::scaled("datetimeoffset", 0),
            t("2024-01-01T00:00:00Z"),
        ),
        (
            "datetime .003",
            ColumnData::DateTime(Some(DateTime::new(D2024_1900, 1))),
            ty("datetime"),
            t("2024-01-01T00:00:00.003"),
        ),
        (
            "datetime .007",
            ColumnData::DateTime(Some(DateTime::new(D2024_1900, 2))),
            ty("datetime"),
            t("2024-01-01T00:00:00.007"),
        ),
        (
            "datetime last tick",
            ColumnData::DateTime(Some(DateTime::new(D2024_1900, 25_919_999))),
            ty("datetime"),
            t("2024-01-01T23:59:59.997"),
        ),
        (
            "datetime 1753",
            ColumnData::DateTime(Some(DateTime::new(-53_690, 0))),
            ty("datetime"),
            t("1753-01-01T00:00:00.000"),
        ),
        (
            "smalldatetime",
            ColumnData::SmallDateTime(Some(SmallDateTime::new(45_290, 61))),
            ty("smalldatetime"),
            t("2024-01-01T01:01:00"),
        ),
        (
            "nvarchar",
            ColumnData::String(Some(Cow::Borrowed("héllo ✓"))),
            ty("nvarchar"),
            t("héllo ✓"),
        ),
        (
            "char",
            ColumnData::String(Some(Cow::Borrowed("ab  "))),
            ty("char"),
            t("ab  "),
        ),
        (
            "ntext",
            ColumnData::String(Some(Cow::Borrowed("long"))),
            ty("ntext"),
            t("long"),
        ),
        (
            "xml",
            ColumnData::Xml(Some(Cow::Owned(XmlData::new("<a b=\"1\"/>")))),
            ty("xml"),
            t("<a b=\"1\"/>"),
        ),
        (
            "varbinary",
            ColumnData::Binary(Some(Cow::Borrowed(&[0u8, 1, 255][..]))),
            ty("varbinary"),
            Value::Blob(vec![0, 1, 255]),
        ),
        (
            "image",
            ColumnData::Binary(Some(Cow::Borrowed(&[7u8][..]))),
            ty("image"),
            Value::Blob(vec![7]),
        ),
        (
            "rowversion",
            ColumnData::Binary(Some(Cow::Borrowed(&[0u8, 0, 0, 0, 0, 0, 7, 209][..]))),
            ty("timestamp"),
            Value::Blob(vec![0, 0, 0, 0, 0, 0, 7, 209]),
        ),
        (
            "uniqueidentifier",
            ColumnData::Guid(Some(
                Uuid::parse_str("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap(),
            )),
            ty("uniqueidentifier"),
            t("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
        ),
        (
            "geometry point",
            ColumnData::Binary(Some(Cow::Owned(hex(
                "00000000010C00000000000014400000000000002440",
            )))),
            ty("geometry"),
            t(r#"{"type":"Point","coordinates":[5,10]}"#),
        ),
        (
            "geography point",
            ColumnData::Binary(Some(Cow::Owned(hex(
                "E6100000010C00000000000014400000000000002440",
            )))),
            ty("geography"),
            t(r#"{"type":"Point","coordinates":[10,5]}"#),
        ),
        (
            "geometry without GeoJSON form",
            ColumnData::Binary(Some(Cow::Owned(hex("0000000002FF")))),
            ty("geometry"),
            t("0x0000000002FF"),
        ),
        (
            "hierarchyid",
            ColumnData::String(Some(Cow::Borrowed("/1/2/"))),
            ty("hierarchyid"),
            t("/1/2/"),
        ),
        (
            "sql_variant int",
            ColumnData::String(Some(Cow::Borrowed("int:42"))),
            ty("sql_variant"),
            Value::Integer(42),
        ),
        (
            "sql_variant bit",
            ColumnData::String(Some(Cow::Borrowed("bit:1"))),
            ty("sql_variant"),
            Value::Integer(1),
        ),
        (
            "sql_variant float",
            ColumnData::String(Some(Cow::Borrowed("float:1.5000000000000000e+000"))),
            ty("sql_variant"),
            Value::Real(1.5),
        ),
        (
            "sql_variant money",
            ColumnData::String(Some(Cow::Borrowed("money:12.3400"))),
            ty("sql_variant"),
            t("12.3400"),
        ),
        (
            "sql_variant datetimeoffset",
            ColumnData::String(Some(Cow::Borrowed(
                "datetimeoffset:2024-01-01T12:00:00.1234567+02:00",
            ))),
            ty("sql_variant"),
            t("2024-01-01T10:00:00.1234567Z"),
        ),
        (
            "sql_variant datetime2",
            ColumnData::String(Some(Cow::Borrowed("datetime2:2024-01-01T12:00:00.5"))),
            ty("sql_variant"),
            t("2024-01-01T12:00:00.5000000"),
        ),
        (
            "sql_variant date",
            ColumnData::String(Some(Cow::Borrowed("date:2024-02-29"))),
            ty("sql_variant"),
            t("2024-02-29"),
        ),
        (
            "sql_variant time",
            ColumnData::String(Some(Cow::Borrowed("time:12:34:56.1234567"))),
            ty("sql_variant"),
            t("12:34:56.1234567"),
        ),
        (
            "sql_variant guid",
            ColumnData::String(Some(Cow::Borrowed(
                "uniqueidentifier:6F9619FF-8B86-D011-B42D-00C04FC964FF",
            ))),
            ty("sql_variant"),
            t("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
        ),
        (
            "sql_variant varbinary",
            ColumnData::String(Some(Cow::Borrowed("varbinary:0A0B"))),
            ty("sql_variant"),
            Value::Blob(vec![10, 11]),
        ),
        (
            "sql_variant nvarchar",
            ColumnData::String(Some(Cow::Borrowed("nvarchar:a:b"))),
            ty("sql_variant"),
            t("a:b"),
        ),
        ("null int", ColumnData::I32(None), ty("int"), Value::Null),
        (
            "null string",
            ColumnData::String(None),
            ty("sql_variant"),
            Value::Null,
        ),
        (
            "null binary",
            ColumnData::Binary(None),
            ty("geometry"),
            Value::Null,
        ),
        (
            "null datetime2",
            ColumnData::DateTime2(None),
            SqlType::scaled("datetime2", 7),
            Value::Null,
        ),
        (
            "NaN float",
            ColumnData::F64(Some(f64::NAN)),
            ty("float"),
            Value::Null,
        ),
    ];
    for (name, data, ty, want) in cases {
        assert_eq!(column_value(data, &ty), Ok(want), "{name}");
    }
}

#[test]
fn bad_variants_are_errors() {
    for s in [
        "int",
        "int:x",
        "date:2024-02-30",
        "varbinary:0",
        "datetimeoffset:nope",
        "float:1e",
    ] {
        assert!(variant_value(s).is_err(), "{s}");
    }
}

#[test]
fn type_names_as_sql_server_spells_them() {
    let nv = SqlType {
        name: "nvarchar".into(),
        max_length: 40,
        precision: 0,
        scale: 0,
    };
    assert_eq!(nv.display(), "nvarchar(20)");
    let vb = SqlType {
        name: "varbinary".into(),
        max_length: -1,
        precision: 0,
        scale: 0,
    };
    assert_eq!(vb.display(), "varbinary(max)");
    assert_eq!(
        SqlType::decimal("decimal", 10, 2).display(),
        "decimal(10,2)"
    );
    assert_eq!(SqlType::scaled("datetime2", 3).display(), "datetime2(3)");
}

proptest! {
    #[test]
    fn spatial_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = clr_to_geojson(&bytes, SpatialKind::Geometry);
        let _ = clr_to_geojson(&bytes, SpatialKind::Geography);
    }

    #[test]
    fn spatial_decoder_survives_mutated_valid_values(flip in 0usize..120, to in any::<u8>(), cut in 0usize..120) {
        // A valid polygon-with-hole value, one byte changed and possibly truncated.
        let mut b = hex("00000000010409000000000000000000000000000000000000000000000000002440000000000000000000000000000024400000000000002440000000000000000000000000000024400000000000000000000000000000000000000000000000400000000000000040000000000000084000000000000000400000000000000840000000000000084000000000000000400000000000000040020000000200000000000500000001000000FFFFFFFF0000000003");
        let i = flip % b.len();
        b[i] = to;
        b.truncate(b.len() - cut.min(b.len()));
        let _ = clr_to_geojson(&b, SpatialKind::Geometry);
    }

    #[test]
    fn value_decoder_never_panics(
        s in ".{0,40}",
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        days in any::<u32>(),
        incr in any::<u64>(),
        scale in any::<u8>(),
        dt_days in any::<i32>(),
        ticks in any::<u32>(),
        num in any::<i128>(),
    ) {
        let _ = variant_value(&s);
        for name in ["sql_variant", "hierarchyid", "nvarchar"] {
            let _ = column_value(ColumnData::String(Some(Cow::Borrowed(&s))), &ty(name));
        }
        for name in ["geometry", "geography", "varbinary"] {
            let _ = column_value(ColumnData::Binary(Some(Cow::Borrowed(&bytes))), &ty(name));
        }
        let date = Date::new(days & 0x00FF_FFFF);
        let time = Time::new(incr, scale);
        let _ = column_value(ColumnData::Time(Some(time)), &ty("time"));
        let _ = column_value(ColumnData::DateTime2(Some(DateTime2::new(date, time))), &ty("datetime2"));
        let _ = column_value(ColumnData::DateTimeOffset(Some(DateTimeOffset::new(DateTime2::new(date, time), scale as i16))), &ty("datetimeoffset"));
        let _ = column_value(ColumnData::DateTime(Some(DateTime::new(dt_days, ticks))), &ty("datetime"));
        let _ = column_value(ColumnData::SmallDateTime(Some(SmallDateTime::new(days as u16, ticks as u16))), &ty("smalldatetime"));
        let _ = column_value(ColumnData::Numeric(Some(Numeric::new_with_scale(num, scale % 38))), &ty("decimal"));
    }
}

#[test]
fn the_mutation_seed_is_a_valid_polygon() {
    let b = hex("00000000010409000000000000000000000000000000000000000000000000002440000000000000000000000000000024400000000000002440000000000000000000000000000024400000000000000000000000000000000000000000000000400000000000000040000000000000084000000000000000400000000000000840000000000000084000000000000000400000000000000040020000000200000000000500000001000000FFFFFFFF0000000003");
    assert_eq!(
        clr_to_geojson(&b, SpatialKind::Geometry).unwrap(),
        r#"{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10],[0,0]],[[2,2],[3,2],[3,3],[2,2]]]}"#
    );
}
