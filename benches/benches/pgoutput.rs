//! pgoutput decoding on messages recorded from a real server (`benches/data/pgoutput-*.bin`,
//! made by the `record-pgoutput` bin): per-message decode cost, and the full row path
//! (decode + value conversion into a [`Row`]) for the recorded inserts, text and binary tuples.

use std::hint::black_box;

use benches::recording;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use powersync_source_core::{Row, Value};
use powersync_source_postgres::pgoutput::{
    ColumnValue, PgOutputDecoder, PgOutputMessage, ReplicationMessage, TupleData,
};
use powersync_source_postgres::types::{decode_binary, decode_text, TypeRegistry};

struct Recording {
    name: &'static str,
    bytes: Vec<u8>,
}

fn load(name: &'static str) -> Recording {
    let path = benches::data_dir().join(format!("pgoutput-pg15-{name}.bin"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run the record-pgoutput bin)", path.display()));
    Recording { name, bytes }
}

/// Sums something from every column so the work is not optimized away.
#[inline]
fn touch(t: TupleData<'_>) -> usize {
    t.iter()
        .map(|c| match c {
            ColumnValue::Text(b) | ColumnValue::Binary(b) => b.len(),
            ColumnValue::Null | ColumnValue::UnchangedToast => 1,
        })
        .sum()
}

fn decode_all(messages: &[&[u8]]) -> usize {
    let mut decoder = PgOutputDecoder::new();
    let mut acc = 0;
    for m in messages {
        acc += match decoder.decode(m).expect("recorded message decodes") {
            PgOutputMessage::Insert(i) => touch(i.new),
            PgOutputMessage::Update(u) => touch(u.new) + u.old.map_or(0, |o| touch(o.tuple())),
            PgOutputMessage::Delete(d) => touch(d.old.tuple()),
            _ => 1,
        };
    }
    acc
}

/// Column types of the recorded table, from its Relation message.
fn column_types(messages: &[&[u8]]) -> Vec<(u32, i32)> {
    messages
        .iter()
        .find_map(|m| match PgOutputMessage::decode(m, false) {
            Ok(PgOutputMessage::Relation(r)) => Some(
                r.columns
                    .iter()
                    .map(|c| (c.type_oid, c.type_modifier))
                    .collect(),
            ),
            _ => None,
        })
        .expect("the recording has a Relation message")
}

/// What the connector does per insert: decode the message, convert every column.
fn insert_rows(registry: &TypeRegistry, types: &[(u32, i32)], inserts: &[&[u8]]) -> usize {
    let mut acc = 0;
    for m in inserts {
        let PgOutputMessage::Insert(i) = PgOutputMessage::decode(m, false).expect("decodes") else {
            unreachable!()
        };
        let mut values = Vec::with_capacity(types.len());
        for (value, &(oid, typmod)) in i.new.iter().zip(types) {
            values.push(match value {
                ColumnValue::Null => Value::Null,
                ColumnValue::UnchangedToast => Value::Unchanged,
                ColumnValue::Text(b) => decode_text(registry, oid, typmod, b).expect("value"),
                ColumnValue::Binary(b) => decode_binary(registry, oid, typmod, b).expect("value"),
            });
        }
        let row = Row::new(values);
        acc += row.len();
        black_box(row);
    }
    acc
}

fn bench(c: &mut Criterion) {
    let recordings = [load("text"), load("binary")];
    let registry = TypeRegistry::new();
    let mut group = c.benchmark_group("pgoutput");
    for rec in &recordings {
        let messages = recording::decode(&rec.bytes).expect("valid recording");
        // Sanity: the binary recording really has binary tuples, the text one text tuples.
        let want_binary = rec.name == "binary";
        let inserts: Vec<&[u8]> = messages
            .iter()
            .copied()
            .filter(|m| m.first() == Some(&b'I'))
            .collect();
        let PgOutputMessage::Insert(first) = PgOutputMessage::decode(inserts[0], false).unwrap()
        else {
            unreachable!()
        };
        assert!(first
            .new
            .iter()
            .all(|c| matches!(c, ColumnValue::Binary(_)) == want_binary || c.is_null()));

        // Every message (begin, relation, insert/update/delete, commit), tuples iterated.
        group.throughput(Throughput::Elements(messages.len() as u64));
        group.bench_function(format!("decode/{}", rec.name), |b| {
            b.iter(|| decode_all(black_box(&messages)))
        });

        // The same inside XLogData frames, as they come off the replication connection.
        let frames: Vec<Vec<u8>> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| recording::xlogdata(i as u64, m))
            .collect();
        group.bench_function(format!("decode_xlogdata/{}", rec.name), |b| {
            b.iter(|| {
                let mut acc = 0u64;
                for f in black_box(&frames) {
                    if let ReplicationMessage::XLogData(x) = ReplicationMessage::decode(f).unwrap()
                    {
                        acc += x.pgoutput(false).unwrap().type_byte() as u64;
                    }
                }
                acc
            })
        });

        // Row path: decode + value conversion into a Row, inserts only.
        let types = column_types(&messages);
        assert_eq!(
            insert_rows(&registry, &types, &inserts),
            inserts.len() * types.len()
        );
        group.throughput(Throughput::Elements(inserts.len() as u64));
        group.bench_function(format!("insert_to_row/{}", rec.name), |b| {
            b.iter(|| insert_rows(&registry, &types, black_box(&inserts)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
