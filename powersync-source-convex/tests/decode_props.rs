//! Property tests: every decoder fed arbitrary values and bytes errors, never panics.

use powersync_source_convex::decode::{
    decode_json, decode_typed, export_json_to_typed, nested_json, Encoding, FieldType,
};
use powersync_source_convex::{ConvexConfig, Int64Mode};
use proptest::prelude::*;
use serde_json::{json, Value as Json};

fn arb_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Json::String),
        "[A-Za-z0-9+/=]{0,16}".prop_map(Json::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::btree_map(".{0,6}", inner.clone(), 0..5)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
            (
                prop_oneof![
                    Just("$integer"),
                    Just("$bytes"),
                    Just("$float"),
                    Just("$other")
                ],
                inner
            )
                .prop_map(|(k, v)| json!({ k: v })),
        ]
    })
}

fn arb_type() -> impl Strategy<Value = FieldType> {
    prop_oneof![
        Just(FieldType::String),
        Just(FieldType::Id("t".into())),
        Just(FieldType::Float64),
        Just(FieldType::Int64),
        Just(FieldType::Bytes),
        Just(FieldType::Boolean),
        Just(FieldType::Null),
        Just(FieldType::Array),
        Just(FieldType::Object),
        Just(FieldType::Any),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoders_never_panic(v in arb_json(), t in arb_type(), integer in any::<bool>()) {
        let mode = if integer { Int64Mode::Integer } else { Int64Mode::Text };
        let _ = decode_typed(&v, mode);
        let _ = decode_json(&v, Some(&t), mode);
        let _ = decode_json(&v, None, mode);
        let _ = nested_json(&v, Encoding::Typed);
        let _ = nested_json(&v, Encoding::Json);
        let _ = FieldType::from_json_schema(&v);
        let _ = FieldType::of_typed_value(&v);
        let _ = nested_json(&v, Encoding::ExportJson);
        if let Ok(t) = export_json_to_typed(v.clone()) {
            let _ = decode_typed(&t, mode);
        }
    }

    /// `export_json` as the server writes it (Int64 a plain integer, every float with a
    /// fraction or exponent), read back through the text: the same values as the typed
    /// encoding, every float bit for bit (whole numbers and -0.0 included).
    #[test]
    fn export_json_round_trips(i in any::<i64>(), f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
        let text = serde_json::to_string(&json!({"i": i, "f": f, "a": [i, f]})).unwrap();
        let doc = export_json_to_typed(serde_json::from_str(&text).unwrap()).unwrap();
        prop_assert_eq!(decode_typed(&doc["i"], Int64Mode::Integer).unwrap(), powersync_source_core::Value::Integer(i));
        match decode_typed(&doc["f"], Int64Mode::Integer).unwrap() {
            powersync_source_core::Value::Real(g) => prop_assert_eq!(g.to_bits(), f.to_bits()),
            other => prop_assert!(false, "{f} decoded as {other:?}"),
        }
        prop_assert_eq!(
            nested_json(&doc["a"], Encoding::ExportJson).unwrap(),
            nested_json(&json!([i.to_string(), f]), Encoding::Json).unwrap()
        );
    }

    #[test]
    fn arbitrary_bytes_as_json_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(v) = serde_json::from_slice::<Json>(&bytes) {
            let _ = decode_typed(&v, Int64Mode::Text);
            let _ = decode_json(&v, Some(&FieldType::Int64), Int64Mode::Text);
            let _ = decode_json(&v, Some(&FieldType::Bytes), Int64Mode::Text);
        }
    }

    #[test]
    fn int64_round_trips_in_both_encodings(i in any::<i64>()) {
        use base64::Engine as _;
        let typed = json!({"$integer": base64::engine::general_purpose::STANDARD.encode(i.to_le_bytes())});
        prop_assert_eq!(decode_typed(&typed, Int64Mode::Integer).unwrap(), powersync_source_core::Value::Integer(i));
        prop_assert_eq!(
            decode_json(&json!(i.to_string()), Some(&FieldType::Int64), Int64Mode::Text).unwrap(),
            powersync_source_core::Value::Text(i.to_string())
        );
    }

    #[test]
    fn url_parsing_never_panics(url in ".{0,60}", key in proptest::option::of(".{0,20}")) {
        let _ = ConvexConfig::parse(&url, key.as_deref());
        let _ = ConvexConfig::parse(&format!("convex+https://{url}"), Some("k"));
    }
}

#[test]
fn malformed_typed_values_are_errors() {
    for v in [
        json!({"$integer": "AAAA"}),
        json!({"$integer": 5}),
        json!({"$integer": "!!!"}),
        json!({"$float": "AAAAAAAAAAAAAAAAAAAA"}),
        json!({"$bytes": "@@"}),
        json!({"$weird": "x"}),
        json!([{"$integer": "AA=="}]),
    ] {
        assert!(decode_typed(&v, Int64Mode::Text).is_err(), "{v}");
    }
    // An integer beyond Int64 is no Convex value.
    assert!(export_json_to_typed(json!({"n": u64::MAX})).is_err());
    assert!(decode_json(&json!("12x"), Some(&FieldType::Int64), Int64Mode::Text).is_err());
    assert!(decode_json(&json!("Inf"), Some(&FieldType::Float64), Int64Mode::Text).is_err());
    assert!(decode_json(&json!("%%"), Some(&FieldType::Bytes), Int64Mode::Text).is_err());
    // Nesting deeper than Convex allows is refused, not a stack overflow.
    let mut deep = json!(1.0);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    assert!(nested_json(&deep, Encoding::Typed).is_err());
}
