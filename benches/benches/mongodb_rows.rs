//! MongoDB BSON-to-row conversion ([`CollectionShape::row`], the path every snapshot document
//! and full-document change takes) on the raw bytes of the documents the `mongodb-throughput`
//! runner loads (bigint `_id`, int, string, double with a null every 50th, date, Decimal128,
//! a two-element array). The documents are built once with the `bson` crate and serialized:
//! BSON's encoding of a given document is fixed, so these are the bytes a server returns for
//! them. One row per iteration element; throughput in rows.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use powersync_source_core::{TableName, Value};
use powersync_source_mongodb::bson::raw::RawDocumentBuf;
use powersync_source_mongodb::bson::{doc, DateTime, Decimal128, Document};
use powersync_source_mongodb::document_row::CollectionShape;

const DOCS: u64 = 10_000;

/// The runner's document `i` (see `benches/src/bin/mongodb_throughput.rs`).
fn bench_doc(i: u64) -> Document {
    let every_50th = i % 50;
    doc! {
        "_id": i as i64,
        "n": (i % 100_000) as i32,
        "s": format!("{:032x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        "f": if every_50th == 0 { None } else { Some(i as f64 * 1.25) },
        "ts": DateTime::from_millis(1_704_067_200_000 + i as i64 * 1000),
        "amount": format!("{}.{:02}", i / 100, i % 100)
            .parse::<Decimal128>()
            .expect("decimal"),
        "tags": ["a", "b"],
    }
}

fn raw_docs() -> Vec<RawDocumentBuf> {
    (0..DOCS)
        .map(|i| RawDocumentBuf::from_document(&bench_doc(i)).expect("serializes"))
        .collect()
}

fn rows(c: &mut Criterion) {
    let docs = raw_docs();
    let bytes: usize = docs.iter().map(|d| d.as_bytes().len()).sum();
    // Every column known up front, as in a running stream (the first document adds them).
    let mut shape = CollectionShape::new(TableName::new("bench", "docs"));
    shape.observe(&docs[1]);
    let first = shape.row(&docs[1]).expect("converts");
    assert_eq!(first.values().len(), 7, "id + 6 fields");
    assert_eq!(first.values()[0], Value::Integer(1));

    let mut g = c.benchmark_group("mongodb_rows");
    g.throughput(Throughput::Elements(DOCS));
    g.bench_function(format!("bson_to_row/{DOCS}_docs_{bytes}_bytes"), |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for d in &docs {
                let row = shape.row(black_box(d)).expect("converts");
                acc += row.values().len();
            }
            black_box(acc)
        })
    });
    g.finish();
}

criterion_group!(benches, rows);
criterion_main!(benches);
