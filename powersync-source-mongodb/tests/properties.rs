//! Property tests: every decoder fed arbitrary bytes and values returns errors, never panics.

use powersync_source_core::TableName;
use powersync_source_mongodb::bson::{Bson, Document, RawDocument, RawDocumentBuf};
use powersync_source_mongodb::bson_value::{bson_to_value, document_json};
use powersync_source_mongodb::document_row::CollectionShape;
use powersync_source_mongodb::internals::{header, token_cluster_time};
use proptest::prelude::*;

fn leaf() -> impl Strategy<Value = Bson> {
    prop_oneof![
        any::<f64>().prop_map(Bson::Double),
        ".{0,12}".prop_map(Bson::String),
        any::<i32>().prop_map(Bson::Int32),
        any::<i64>().prop_map(Bson::Int64),
        any::<bool>().prop_map(Bson::Boolean),
        any::<i64>()
            .prop_map(|m| Bson::DateTime(powersync_source_mongodb::bson::DateTime::from_millis(m))),
        any::<[u8; 16]>().prop_map(|b| Bson::Decimal128(
            powersync_source_mongodb::bson::Decimal128::from_bytes(b)
        )),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..20)).prop_map(|(s, bytes)| {
            Bson::Binary(powersync_source_mongodb::bson::Binary {
                subtype: s.into(),
                bytes,
            })
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(time, increment)| Bson::Timestamp(
            powersync_source_mongodb::bson::Timestamp { time, increment }
        )),
        any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(
            powersync_source_mongodb::bson::oid::ObjectId::from_bytes(b)
        )),
        Just(Bson::Null),
        Just(Bson::MinKey),
        Just(Bson::MaxKey),
        Just(Bson::Undefined),
    ]
}

fn value() -> impl Strategy<Value = Bson> {
    leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Bson::Array),
            proptest::collection::vec(("[a-z_]{1,6}", inner), 0..6)
                .prop_map(|kv| Bson::Document(kv.into_iter().collect::<Document>())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(doc) = RawDocument::from_bytes(&bytes) {
            let _ = document_json(doc);
            for (_, v) in doc.iter().flatten() {
                let _ = bson_to_value(v);
            }
            let _ = header(doc);
            let _ = CollectionShape::new(TableName::new("d", "c")).row(doc);
        }
    }

    #[test]
    fn arbitrary_values_convert_or_error(v in value()) {
        let mut d = Document::new();
        d.insert("_id", v.clone());
        d.insert("v", v);
        let raw = RawDocumentBuf::from_document(&d).unwrap();
        let converted = bson_to_value(raw.get("v").unwrap().unwrap());
        if let Ok(powersync_source_core::Value::Real(f)) = converted {
            prop_assert!(!f.is_nan());
        }
        let mut shape = CollectionShape::new(TableName::new("d", "c"));
        let _ = shape.row(&raw);
    }

    #[test]
    fn arbitrary_tokens_never_panic(s in ".{0,80}", hex in "[0-9a-f]{0,120}") {
        let _ = token_cluster_time(&s);
        let _ = token_cluster_time(&hex);
    }

    #[test]
    fn corrupted_documents_never_panic(v in value(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut d = Document::new();
        d.insert("_id", 1);
        d.insert("v", v);
        let mut bytes = RawDocumentBuf::from_document(&d).unwrap().into_bytes();
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i.index(n)] = b;
        }
        if let Ok(doc) = RawDocument::from_bytes(&bytes) {
            let _ = document_json(doc);
            let _ = CollectionShape::new(TableName::new("d", "c")).row(doc);
        }
    }
}
