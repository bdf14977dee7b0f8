//! The golden value table: Convex value → SQLite value, through both wire encodings, the
//! decoder alone and end to end (snapshot and stream) against `FakeConvex`.

use std::time::Duration;

use futures::StreamExt;
use powersync_source_convex::decode::{decode_json, decode_typed, Encoding, FieldType};
use powersync_source_convex::testing::{bytes, float, int64, FakeConvex};
use powersync_source_convex::{ConvexApi, ConvexSource, Int64Mode, ValueEncoding};
use powersync_source_core::{ChangeEvent, ChangeSource, Op, StartFrom, TableName, Value};
use serde_json::{json, Map, Value as Json};

use crate::workload::{config, KEY};

struct Golden {
    field: &'static str,
    /// The Convex value, in the typed encoding.
    value: fn() -> Json,
    /// With the default Int64-as-text.
    text_mode: Value,
    /// With `int64=integer` (differs only for Int64).
    integer_mode: Option<Value>,
}

fn t(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// The specification: read it as a table.
fn golden() -> Vec<Golden> {
    vec![
        Golden {
            field: "int64_small",
            value: || int64(5),
            text_mode: t("5"),
            integer_mode: Some(Value::Integer(5)),
        },
        Golden {
            field: "int64_negative",
            value: || int64(-42),
            text_mode: t("-42"),
            integer_mode: Some(Value::Integer(-42)),
        },
        Golden {
            field: "int64_max",
            value: || int64(i64::MAX),
            text_mode: t("9223372036854775807"),
            integer_mode: Some(Value::Integer(i64::MAX)),
        },
        Golden {
            field: "int64_min",
            value: || int64(i64::MIN),
            text_mode: t("-9223372036854775808"),
            integer_mode: Some(Value::Integer(i64::MIN)),
        },
        Golden {
            field: "float_whole",
            value: || json!(3.0),
            text_mode: Value::Real(3.0),
            integer_mode: None,
        },
        Golden {
            field: "float_fraction",
            value: || json!(0.1),
            text_mode: Value::Real(0.1),
            integer_mode: None,
        },
        // Shortest representations of 17 significant digits: a parser that is not correctly
        // rounded (serde_json without `float_roundtrip`) lands one unit in the last place off.
        Golden {
            field: "_creationTime",
            value: || json!(1796469721068.9465),
            text_mode: Value::Real(1796469721068.9465),
            integer_mode: None,
        },
        Golden {
            field: "float_17_digits",
            value: || json!(1733402765123.4568),
            text_mode: Value::Real(1733402765123.4568),
            integer_mode: None,
        },
        Golden {
            field: "float_17_digits_small",
            value: || json!(0.30000000000000004),
            text_mode: Value::Real(0.30000000000000004),
            integer_mode: None,
        },
        Golden {
            field: "float_17_digits_nested",
            value: || json!({"at": 1796469721068.9465, "list": [2.2250738585072014e-308]}),
            text_mode: t(r#"{"at":1796469721068.9465,"list":[2.2250738585072014e-308]}"#),
            integer_mode: None,
        },
        Golden {
            field: "float_huge",
            value: || json!(1e300),
            text_mode: Value::Real(1e300),
            integer_mode: None,
        },
        Golden {
            field: "float_negative_zero",
            value: || float(-0.0),
            text_mode: Value::Real(-0.0),
            integer_mode: None,
        },
        Golden {
            field: "float_nan",
            value: || float(f64::NAN),
            text_mode: Value::Null,
            integer_mode: None,
        },
        Golden {
            field: "float_infinity",
            value: || float(f64::INFINITY),
            text_mode: Value::Real(f64::INFINITY),
            integer_mode: None,
        },
        Golden {
            field: "float_neg_infinity",
            value: || float(f64::NEG_INFINITY),
            text_mode: Value::Real(f64::NEG_INFINITY),
            integer_mode: None,
        },
        Golden {
            field: "bool_true",
            value: || json!(true),
            text_mode: Value::Integer(1),
            integer_mode: None,
        },
        Golden {
            field: "bool_false",
            value: || json!(false),
            text_mode: Value::Integer(0),
            integer_mode: None,
        },
        Golden {
            field: "string",
            value: || json!("héllo \"q\"\n"),
            text_mode: t("héllo \"q\"\n"),
            integer_mode: None,
        },
        Golden {
            field: "string_of_digits",
            value: || json!("12345"),
            text_mode: t("12345"),
            integer_mode: None,
        },
        Golden {
            field: "string_base64_like",
            value: || json!("AAECAw=="),
            text_mode: t("AAECAw=="),
            integer_mode: None,
        },
        Golden {
            field: "bytes",
            value: || bytes(&[0, 1, 2, 255]),
            text_mode: Value::Blob(vec![0, 1, 2, 255]),
            integer_mode: None,
        },
        Golden {
            field: "bytes_empty",
            value: || bytes(&[]),
            text_mode: Value::Blob(vec![]),
            integer_mode: None,
        },
        Golden {
            field: "null",
            value: || Json::Null,
            text_mode: Value::Null,
            integer_mode: None,
        },
        Golden {
            field: "array",
            // Booleans inside JSON are 1/0, as at the top level (every source's rule).
            value: || json!([int64(1), 2.5, "x", bytes(&[1]), true, false, null, 3.0]),
            text_mode: t(r#"["1",2.5,"x","AQ==",1,0,null,3.0]"#),
            integer_mode: None,
        },
        Golden {
            field: "object",
            value: || json!({"a": int64(7), "b": {"c": float(f64::NAN), "d": float(f64::NEG_INFINITY)}, "e": 1.0, "f": "s\"t", "g": {"h": true, "i": [false]}}),
            text_mode: t(
                r#"{"a":"7","b":{"c":"NaN","d":"-Infinity"},"e":1.0,"f":"s\"t","g":{"h":1,"i":[0]}}"#,
            ),
            integer_mode: None,
        },
        Golden {
            field: "empty_array",
            value: || json!([]),
            text_mode: t("[]"),
            integer_mode: None,
        },
        Golden {
            field: "empty_object",
            value: || json!({}),
            text_mode: t("{}"),
            integer_mode: None,
        },
    ]
}

fn document() -> Map<String, Json> {
    golden()
        .into_iter()
        .map(|g| (g.field.to_string(), (g.value)()))
        .collect()
}

fn expected(g: &Golden, mode: Int64Mode) -> Value {
    match (mode, &g.integer_mode) {
        (Int64Mode::Integer, Some(v)) => v.clone(),
        _ => g.text_mode.clone(),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        // -0.0 == 0.0 for f64; the golden table wants the sign kept.
        (Value::Real(x), Value::Real(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// Convex's `json` rendering of a typed value (what the fake serves for `format=json`).
fn clean(v: &Json) -> Json {
    use base64::Engine as _;
    let eight = |p: &Json| -> [u8; 8] {
        base64::engine::general_purpose::STANDARD
            .decode(p.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    match v {
        Json::Array(a) => Json::Array(a.iter().map(clean).collect()),
        Json::Object(m) if m.len() == 1 && m.contains_key("$integer") => {
            json!(i64::from_le_bytes(eight(&m["$integer"])).to_string())
        }
        Json::Object(m) if m.len() == 1 && m.contains_key("$bytes") => m["$bytes"].clone(),
        Json::Object(m) if m.len() == 1 && m.contains_key("$float") => {
            let f = f64::from_le_bytes(eight(&m["$float"]));
            if f.is_nan() {
                json!("NaN")
            } else if f == f64::INFINITY {
                json!("Infinity")
            } else if f == f64::NEG_INFINITY {
                json!("-Infinity")
            } else {
                json!(f)
            }
        }
        Json::Object(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), clean(v))).collect()),
        other => other.clone(),
    }
}

fn type_of(v: &Json) -> FieldType {
    FieldType::of_typed_value(v)
}

#[test]
fn golden_decoder_both_encodings() {
    for mode in [Int64Mode::Text, Int64Mode::Integer] {
        for g in golden() {
            let typed = (g.value)();
            let want = expected(&g, mode);
            let got = decode_typed(&typed, mode).unwrap();
            assert!(same(&got, &want), "typed {}: {got:?} != {want:?}", g.field);
            let got = decode_json(&clean(&typed), Some(&type_of(&typed)), mode).unwrap();
            assert!(same(&got, &want), "json {}: {got:?} != {want:?}", g.field);
        }
    }
    // The same nested JSON text from both encodings.
    let nested = json!({"k": [int64(-1), bytes(b"hi"), float(f64::INFINITY)]});
    assert_eq!(
        powersync_source_convex::decode::nested_json(&nested, Encoding::Typed).unwrap(),
        powersync_source_convex::decode::nested_json(&clean(&nested), Encoding::Json).unwrap(),
    );
}

async fn end_to_end(encoding: ValueEncoding, typed_served: bool, mode: Int64Mode) {
    end_to_end_on(ConvexApi::StreamingExport, encoding, typed_served, mode).await;
}

async fn end_to_end_on(
    api: ConvexApi,
    encoding: ValueEncoding,
    typed_served: bool,
    mode: Int64Mode,
) {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_typed_format(typed_served);
    fake.insert("golden", json!(document())).unwrap();
    let source = ConvexSource::new(
        config(&fake.url(), KEY)
            .with_api(api)
            .with_encoding(encoding)
            .with_int64(mode),
    )
    .with_tables(vec![TableName::new("convex", "golden")]);
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut snapshot_row = None;
    let mut streamed_row = None;
    let mut label = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut inserted = false;
    while streamed_row.is_none() {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("golden rows arrive")
            .unwrap()
            .unwrap();
        for e in batch.events {
            match e {
                ChangeEvent::Schema(s) => label = Some(s.columns[2].type_name.clone()),
                ChangeEvent::Row(r) if r.snapshot => snapshot_row = Some(r),
                ChangeEvent::Row(r) => streamed_row = Some(r),
                ChangeEvent::Snapshot(powersync_source_core::SnapshotProgress::Done { .. })
                    if !inserted =>
                {
                    fake.insert("golden", json!(document())).unwrap();
                    inserted = true;
                }
                _ => {}
            }
        }
    }
    let label = label.unwrap();
    let want_label = if api == ConvexApi::DataSync {
        "export_json"
    } else if typed_served && encoding != ValueEncoding::Json {
        "convex_encoded_json"
    } else {
        "json+json_schemas"
    };
    assert!(
        label.contains(want_label),
        "schema says {label}, expected {want_label}"
    );
    for (what, r) in [
        ("snapshot", snapshot_row.unwrap()),
        ("stream", streamed_row.unwrap()),
    ] {
        assert_eq!(
            r.op,
            if what == "snapshot" {
                Op::Insert
            } else {
                Op::Update
            }
        );
        let row = r.new.as_ref().unwrap();
        for g in golden() {
            let got = row.get_by_name(&r.table, g.field).unwrap();
            let want = expected(&g, mode);
            assert!(
                same(got, &want),
                "{what} ({encoding:?}) {}: {got:?} != {want:?}",
                g.field
            );
        }
        assert!(matches!(
            row.get_by_name(&r.table, "_id"),
            Some(Value::Text(_))
        ));
        assert!(matches!(
            row.get_by_name(&r.table, "_creationTime"),
            Some(Value::Real(_))
        ));
        assert!(r.table.column_index("_ts").is_none() && r.table.column_index("_table").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_end_to_end_typed() {
    end_to_end(ValueEncoding::Auto, true, Int64Mode::Text).await;
    end_to_end(ValueEncoding::Typed, true, Int64Mode::Integer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_end_to_end_json_fallback() {
    // Refused typed encoding → json + json_schemas, same values.
    end_to_end(ValueEncoding::Auto, false, Int64Mode::Text).await;
    end_to_end(ValueEncoding::Json, true, Int64Mode::Integer).await;
}

/// The Data Sync API's `export_json` (Int64 as a plain integer) gives the same values, 17-digit
/// floats included, whatever streaming export would accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_end_to_end_data_sync() {
    end_to_end_on(
        ConvexApi::DataSync,
        ValueEncoding::Auto,
        true,
        Int64Mode::Text,
    )
    .await;
    end_to_end_on(
        ConvexApi::DataSync,
        ValueEncoding::Json,
        false,
        Int64Mode::Integer,
    )
    .await;
}
