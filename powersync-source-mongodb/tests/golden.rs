//! The golden table: BSON value → SQLite value. It is the specification users read; the same
//! table is checked on documents read through SecantusDB (snapshot and stream). The shapes of
//! regexes, code, DBPointers, out-of-range dates, booleans inside JSON and invalid UTF-8 are
//! PowerSync's (its MongoDB test vectors). A second table, [`golden_raw`], holds values the
//! bson crate cannot build (DBPointer, text that is not UTF-8) as raw bytes.

use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, Op, StartFrom, StreamOptions, TableName, Value,
};
use powersync_source_mongodb::bson::oid::ObjectId;
use powersync_source_mongodb::bson::spec::BinarySubtype;
use powersync_source_mongodb::bson::RawDocument;
use powersync_source_mongodb::bson::{
    doc, Binary, Bson, DateTime, Decimal128, Document, JavaScriptCodeWithScope, RawDocumentBuf,
    Regex, Timestamp,
};
use powersync_source_mongodb::bson_value::bson_to_value;
use powersync_source_mongodb::document_row::CollectionShape;
use powersync_source_mongodb::{MongoConfig, MongoSource};

use crate::common::{client, fast_retry, secantus, url};

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// (field, BSON input, expected value).
pub fn golden() -> Vec<(&'static str, Bson, Value)> {
    let uuid = Binary {
        subtype: BinarySubtype::Uuid,
        bytes: vec![
            0x55, 0x0E, 0x84, 0x00, 0xE2, 0x9B, 0x41, 0xD4, 0xA7, 0x16, 0x44, 0x66, 0x55, 0x44,
            0x00, 0x00,
        ],
    };
    vec![
        (
            "oid",
            Bson::ObjectId(ObjectId::parse_str("6B07A9E2C7E3E60F51E96CC9").unwrap()),
            text("6b07a9e2c7e3e60f51e96cc9"),
        ),
        (
            "str",
            Bson::String("héllo \"q\"".into()),
            text("héllo \"q\""),
        ),
        ("i32", Bson::Int32(-7), Value::Integer(-7)),
        ("i64", Bson::Int64(i64::MAX), Value::Integer(i64::MAX)),
        ("dbl", Bson::Double(1.5), Value::Real(1.5)),
        ("nan", Bson::Double(f64::NAN), Value::Null),
        (
            "inf",
            Bson::Double(f64::INFINITY),
            Value::Real(f64::INFINITY),
        ),
        (
            "dec",
            Bson::Decimal128(Decimal128::from_str("1.50").unwrap()),
            text("1.50"),
        ),
        (
            "dec_exp",
            Bson::Decimal128(Decimal128::from_str("1.5E+3").unwrap()),
            text("1500"),
        ),
        (
            "dec_big",
            Bson::Decimal128(Decimal128::from_str("1234567890123456789012345678901234").unwrap()),
            text("1234567890123456789012345678901234"),
        ),
        (
            "dec_nan",
            Bson::Decimal128(Decimal128::from_str("NaN").unwrap()),
            text("NaN"),
        ),
        (
            "dec_neg_inf",
            Bson::Decimal128(Decimal128::from_str("-Infinity").unwrap()),
            text("-Infinity"),
        ),
        ("t", Bson::Boolean(true), Value::Integer(1)),
        ("f", Bson::Boolean(false), Value::Integer(0)),
        (
            "date",
            Bson::DateTime(DateTime::from_millis(1_714_564_800_123)),
            text("2024-05-01T12:00:00.123Z"),
        ),
        (
            "date_pre_epoch",
            Bson::DateTime(DateTime::from_millis(-1)),
            text("1969-12-31T23:59:59.999Z"),
        ),
        (
            "date_year_0",
            Bson::DateTime(DateTime::from_millis(-62_167_219_200_000)),
            text("0000-01-01T00:00:00.000Z"),
        ),
        // years outside 0000–9999: ISO 8601 expanded form, sign and six digits
        (
            "date_year_10000",
            Bson::DateTime(DateTime::from_millis(253_402_300_800_000)),
            text("+010000-01-01T00:00:00.000Z"),
        ),
        (
            "date_year_minus_1",
            Bson::DateTime(DateTime::from_millis(-62_167_219_200_001)),
            text("-000001-12-31T23:59:59.999Z"),
        ),
        (
            "ts",
            Bson::Timestamp(Timestamp {
                time: 1,
                increment: 2,
            }),
            Value::Integer((1 << 32) | 2),
        ),
        (
            "uuid",
            Bson::Binary(uuid),
            text("550e8400-e29b-41d4-a716-446655440000"),
        ),
        (
            "bin",
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: vec![0, 1, 255],
            }),
            Value::Blob(vec![0, 1, 255]),
        ),
        (
            "legacy_uuid",
            Bson::Binary(Binary {
                subtype: BinarySubtype::UuidOld,
                bytes: vec![7; 16],
            }),
            Value::Blob(vec![7; 16]),
        ),
        (
            "doc",
            Bson::Document(
                doc! {"a": 1, "b": [true, null, 2.0, "x"], "c": {"d": Decimal128::from_str("0.10").unwrap()}},
            ),
            // booleans inside JSON are 1/0, as at the top level
            text(r#"{"a":1,"b":[1,null,2.0,"x"],"c":{"d":"0.10"}}"#),
        ),
        (
            "bools_nested",
            Bson::Document(doc! {"t": true, "f": false, "a": [false, true]}),
            text(r#"{"t":1,"f":0,"a":[0,1]}"#),
        ),
        (
            "arr",
            Bson::Array(vec![
                Bson::ObjectId(ObjectId::parse_str("6b07a9e2c7e3e60f51e96cc9").unwrap()),
                Bson::DateTime(DateTime::from_millis(0)),
                Bson::Double(f64::NAN),
                Bson::Binary(Binary {
                    subtype: BinarySubtype::Generic,
                    bytes: vec![0, 1, 2, 255],
                }),
                Bson::Int64(-1),
            ]),
            text(r#"["6b07a9e2c7e3e60f51e96cc9","1970-01-01T00:00:00.000Z",null,"AAEC/w==",-1]"#),
        ),
        (
            "re",
            Bson::RegularExpression(Regex {
                pattern: "^a.*b$".into(),
                options: "i".into(),
            }),
            text(r#"{"pattern":"^a.*b$","options":"i"}"#),
        ),
        (
            "code",
            Bson::JavaScriptCode("function() { return 1; }".into()),
            text(r#"{"code":"function() { return 1; }","scope":null}"#),
        ),
        (
            "code_scope",
            Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code: "x + 1".into(),
                scope: doc! {"x": 1, "ok": true},
            }),
            text(r#"{"code":"x + 1","scope":{"x":1,"ok":1}}"#),
        ),
        // the same shapes inside JSON are objects, not strings
        (
            "shapes_nested",
            Bson::Array(vec![
                Bson::RegularExpression(Regex {
                    pattern: "a".into(),
                    options: "m".into(),
                }),
                Bson::JavaScriptCode("f()".into()),
            ]),
            text(r#"[{"pattern":"a","options":"m"},{"code":"f()","scope":null}]"#),
        ),
        ("minkey", Bson::MinKey, Value::Null),
        ("maxkey", Bson::MaxKey, Value::Null),
        ("undef", Bson::Undefined, Value::Null),
        ("null", Bson::Null, Value::Null),
    ]
}

/// One BSON element, `tag` and value bytes, in a document `{"_id": 1, <field>: …}`.
fn raw_document(field: &[u8], tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    out.extend_from_slice(b"\x10_id\0");
    out.extend_from_slice(&1i32.to_le_bytes());
    out.push(tag);
    out.extend_from_slice(field);
    out.push(0);
    out.extend_from_slice(body);
    out.push(0);
    let len = out.len() as i32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out
}

/// A BSON string's bytes: length, the (possibly invalid UTF-8) text, a zero byte.
fn bson_string(text: &[u8]) -> Vec<u8> {
    let mut out = ((text.len() + 1) as i32).to_le_bytes().to_vec();
    out.extend_from_slice(text);
    out.push(0);
    out
}

/// (what, field name bytes, BSON type, value bytes, column name, expected value): values the
/// bson crate cannot build, converted as the snapshot and the stream convert documents
/// ([`CollectionShape::row`]). Not sent through SecantusDB: it refuses text that is not UTF-8
/// (`BadValue: invalid BSON in body`), where MongoDB stores what old drivers wrote.
#[allow(clippy::type_complexity)]
pub fn golden_raw() -> Vec<(&'static str, Vec<u8>, u8, Vec<u8>, String, Value)> {
    let oid = [
        0x66, 0xe8, 0x34, 0xcc, 0x91, 0xd8, 0x05, 0xdf, 0x11, 0xfa, 0x0e, 0xcb,
    ];
    let pointer = |namespace: &[u8]| {
        let mut body = bson_string(namespace);
        body.extend_from_slice(&oid);
        body
    };
    let bad = bson_string(b"foo: \xed\xa0\xbd\"");
    let mut nested = vec![0u8; 4];
    nested.push(0x02);
    nested.extend_from_slice(b"nested\0");
    nested.extend_from_slice(&bson_string(b"\xff"));
    nested.push(0);
    let len = nested.len() as i32;
    nested[..4].copy_from_slice(&len.to_le_bytes());
    vec![
        (
            "DBPointer",
            b"ptr".to_vec(),
            0x0C,
            pointer(b"mycollection"),
            "ptr".into(),
            text(r#"{"collection":"mycollection","oid":"66e834cc91d805df11fa0ecb","fields":{}}"#),
        ),
        (
            "DBPointer with a database",
            b"ptr".to_vec(),
            0x0C,
            pointer(b"mydb.mycollection"),
            "ptr".into(),
            text(
                r#"{"collection":"mycollection","oid":"66e834cc91d805df11fa0ecb","db":"mydb","fields":{}}"#,
            ),
        ),
        (
            "a string that is not UTF-8 (a CESU-8 lone surrogate) → one U+FFFD per invalid byte run",
            b"s".to_vec(),
            0x02,
            bad.clone(),
            "s".into(),
            text("foo: \u{fffd}\u{fffd}\u{fffd}\""),
        ),
        (
            "the same inside a document",
            b"doc".to_vec(),
            0x03,
            nested,
            "doc".into(),
            text("{\"nested\":\"\u{fffd}\"}"),
        ),
        (
            "a field name that is not UTF-8",
            b"k\xff".to_vec(),
            0x10,
            7i32.to_le_bytes().to_vec(),
            "k\u{fffd}".into(),
            Value::Integer(7),
        ),
        (
            "a regex that is not UTF-8",
            b"re".to_vec(),
            0x0B,
            b"a\xff\0i\0".to_vec(),
            "re".into(),
            text("{\"pattern\":\"a\u{fffd}\",\"options\":\"i\"}"),
        ),
    ]
}

#[test]
fn golden_raw_table_converts() {
    for (what, field, tag, body, column, expected) in golden_raw() {
        let bytes = raw_document(&field, tag, &body);
        let doc = RawDocument::from_bytes(&bytes).unwrap();
        let mut shape = CollectionShape::new(TableName::new("d", "c"));
        let row = shape
            .row(doc)
            .unwrap_or_else(|e| panic!("{what}: no row: {e}"));
        let got = row.get_by_name(shape.schema(), &column);
        assert_eq!(got, Some(&expected), "{what}");
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Real(x), Value::Real(y)) => x == y || (x.is_nan() && y.is_nan()),
        _ => a == b,
    }
}

#[test]
fn golden_table_converts() {
    for (field, input, expected) in golden() {
        let d = RawDocumentBuf::from_document(&doc! {"v": input.clone()}).unwrap();
        let got = bson_to_value(d.get("v").unwrap().unwrap()).unwrap();
        assert!(
            same(&got, &expected),
            "{field}: {input:?} gave {got:?}, want {expected:?}"
        );
    }
}

/// Every golden value travels through SecantusDB: once read by the snapshot, once streamed as
/// an insert, and the `_id` of each type comes out as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_values_through_secantus() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let base = url(&server, "golden", "");
    let driver = client(&base).await;
    let coll = driver.database("golden").collection::<Document>("types");
    let mut document = doc! {"_id": 1_i64};
    let mut streamed = doc! {"_id": ObjectId::parse_str("6b07a9e2c7e3e60f51e96cc9").unwrap()};
    // SecantusDB decodes dates into Python datetimes, which stop at years 1..=9999: the
    // out-of-range dates are covered by the unit table only.
    let live = |field: &str| !field.starts_with("date_year_");
    for (field, input, _) in golden().into_iter().filter(|(f, _, _)| live(f)) {
        document.insert(field, input.clone());
        streamed.insert(field, input);
    }
    coll.insert_one(document).await.unwrap();

    let source = MongoSource::new(
        MongoConfig::parse(&url(&server, "golden", "post_images=off&max_await_ms=200")).unwrap(),
    )
    .with_stream_options(
        StreamOptions::default()
            .with_tables(vec![TableName::new("golden", "types")])
            .with_retry(fast_retry()),
    );
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut rows = Vec::new();
    let mut inserted = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while rows.len() < 2 {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("rows within 30 s")
            .expect("stream open")
            .unwrap();
        for event in batch.events {
            match event {
                ChangeEvent::Row(r) => rows.push(r),
                ChangeEvent::Snapshot(powersync_source_core::SnapshotProgress::Done { .. })
                    if !inserted =>
                {
                    coll.insert_one(streamed.clone()).await.unwrap();
                    inserted = true;
                }
                _ => {}
            }
        }
    }
    assert!(rows[0].snapshot && !rows[1].snapshot);
    assert_eq!(rows[1].op, Op::Insert);
    for (i, r) in rows.iter().enumerate() {
        let new = r.new.as_ref().unwrap();
        let id = new.get_by_name(&r.table, "id").unwrap();
        let want_id = if i == 0 {
            Value::Integer(1)
        } else {
            text("6b07a9e2c7e3e60f51e96cc9")
        };
        assert_eq!(id, &want_id);
        for (field, input, expected) in golden().into_iter().filter(|(f, _, _)| live(f)) {
            let got = new
                .get_by_name(&r.table, field)
                .unwrap_or(&Value::Unchanged);
            assert!(
                same(got, &expected),
                "row {i} {field}: {input:?} gave {got:?}, want {expected:?}"
            );
        }
    }
}
