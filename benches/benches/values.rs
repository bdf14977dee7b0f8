//! Per-value cost of PostgreSQL value decoding (`decode_binary`, `decode_text`) by type, and of
//! the core normalize functions the decoders use. One value per iteration.
//!
//! The setup checks that each type's text and binary samples decode to the same `Value`, so the
//! hand-built binary encodings below are the real send formats.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use powersync_source_core::normalize::decimal::decimal_text;
use powersync_source_core::normalize::json::write_json_value;
use powersync_source_core::normalize::time::{days_from_civil, format_timestamp_utc, FracDigits};
use powersync_source_core::normalize::uuid::format_uuid;
use powersync_source_core::Value;
use powersync_source_postgres::types::{decode_binary, decode_text, oid, TypeRegistry};

const INT4_ARRAY: u32 = 1007;
const TEXT_ARRAY: u32 = 1009;
const PG_EPOCH_DAYS: i64 = 10_957; // 2000-01-01 in days since 1970-01-01

const UUID: [u8; 16] = [
    0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11,
];

/// Binary array: 1 dimension, no nulls, lower bound 1.
fn array_binary(elem: u32, elems: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&elem.to_be_bytes());
    b.extend_from_slice(&(elems.len() as i32).to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    for e in elems {
        b.extend_from_slice(&(e.len() as i32).to_be_bytes());
        b.extend_from_slice(e);
    }
    b
}

/// (name, type oid, typmod, text format, binary format)
type Sample = (&'static str, u32, i32, Vec<u8>, Vec<u8>);

fn samples() -> Vec<Sample> {
    let ts_unix_micros = days_from_civil(2024, 5, 1) * 86_400_000_000
        + (12 * 3600 + 34 * 60 + 56) * 1_000_000
        + 789_012;
    let ts_pg = ts_unix_micros - PG_EPOCH_DAYS * 86_400_000_000;
    let date_pg = (days_from_civil(2024, 5, 1) - PG_EPOCH_DAYS) as i32;
    let json = r#"{"a": 1, "b": [true, null, "x"], "name": "powersync"}"#;
    let mut jsonb = vec![1u8];
    jsonb.extend_from_slice(json.as_bytes());
    // numeric 12345.67: base-10000 digits 1 | 2345 | 6700, weight 1, dscale 2.
    let mut numeric = Vec::new();
    for v in [3i16, 1, 0, 2, 1, 2345, 6700] {
        numeric.extend_from_slice(&v.to_be_bytes());
    }
    let ints: Vec<[u8; 4]> = (1..=10i32).map(|i| i.to_be_bytes()).collect();
    let int_refs: Vec<&[u8]> = ints.iter().map(|i| i.as_slice()).collect();
    vec![
        (
            "int8",
            oid::INT8,
            -1,
            b"1234567890123".to_vec(),
            1_234_567_890_123i64.to_be_bytes().to_vec(),
        ),
        (
            "int4",
            oid::INT4,
            -1,
            b"123456".to_vec(),
            123_456i32.to_be_bytes().to_vec(),
        ),
        ("bool", oid::BOOL, -1, b"t".to_vec(), vec![1]),
        (
            "float8",
            oid::FLOAT8,
            -1,
            b"1234.5678".to_vec(),
            1234.5678f64.to_be_bytes().to_vec(),
        ),
        ("numeric", oid::NUMERIC, -1, b"12345.67".to_vec(), numeric),
        (
            "text_32",
            oid::TEXT,
            -1,
            b"c4ca4238a0b923820dcc509a6f75849b".to_vec(),
            b"c4ca4238a0b923820dcc509a6f75849b".to_vec(),
        ),
        ("text_1k", oid::TEXT, -1, vec![b'x'; 1024], vec![b'x'; 1024]),
        (
            "timestamptz",
            oid::TIMESTAMPTZ,
            -1,
            b"2024-05-01 14:34:56.789012+02".to_vec(),
            ts_pg.to_be_bytes().to_vec(),
        ),
        (
            "date",
            oid::DATE,
            -1,
            b"2024-05-01".to_vec(),
            date_pg.to_be_bytes().to_vec(),
        ),
        (
            "uuid",
            oid::UUID,
            -1,
            b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".to_vec(),
            UUID.to_vec(),
        ),
        ("jsonb", oid::JSONB, -1, json.as_bytes().to_vec(), jsonb),
        (
            "int4_array_10",
            INT4_ARRAY,
            -1,
            b"{1,2,3,4,5,6,7,8,9,10}".to_vec(),
            array_binary(oid::INT4, &int_refs),
        ),
        (
            "text_array_3",
            TEXT_ARRAY,
            -1,
            br#"{alpha,"beta gamma",delta}"#.to_vec(),
            array_binary(oid::TEXT, &[b"alpha", b"beta gamma", b"delta"]),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let registry = TypeRegistry::new();
    let samples = samples();
    for (name, oid, typmod, text, binary) in &samples {
        let t =
            decode_text(&registry, *oid, *typmod, text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let b = decode_binary(&registry, *oid, *typmod, binary)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t, b, "{name}: text and binary samples disagree");
    }

    let mut group = c.benchmark_group("values");
    group.throughput(Throughput::Elements(1));
    for (name, oid, typmod, text, binary) in &samples {
        group.bench_with_input(BenchmarkId::new("binary", name), binary, |b, bytes| {
            b.iter(|| decode_binary(&registry, *oid, *typmod, black_box(bytes)))
        });
        group.bench_with_input(BenchmarkId::new("text", name), text, |b, bytes| {
            b.iter(|| decode_text(&registry, *oid, *typmod, black_box(bytes)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Elements(1));
    let nanos: i128 = 1_714_566_896_789_012_000;
    group.bench_function("format_timestamp_utc", |b| {
        b.iter(|| format_timestamp_utc(black_box(nanos), FracDigits::Trim))
    });
    group.bench_function("decimal_text", |b| {
        b.iter(|| decimal_text(black_box("-12345.6700")))
    });
    group.bench_function("format_uuid", |b| b.iter(|| format_uuid(black_box(&UUID))));
    let values = [
        ("integer", Value::Integer(1_234_567_890)),
        ("real", Value::Real(1234.5678)),
        ("text", Value::Text("say \"hello\"\n".into())),
    ];
    for (name, v) in &values {
        let mut out = String::with_capacity(64);
        group.bench_function(BenchmarkId::new("write_json_value", name), |b| {
            b.iter(|| {
                out.clear();
                write_json_value(&mut out, black_box(v));
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
