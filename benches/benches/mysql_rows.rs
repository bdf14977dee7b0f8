//! MariaDB binlog row decoding on events recorded from a real server
//! (`benches/data/mariadb-binlog-*.bin`, made by the `record-binlog` bin): every event of the
//! file read as the binlog reader reads it (framing, checksum, table maps) and every row image
//! decoded into row changes of SQLite values. Throughput is in rows.
//!
//! - `narrow`: the throughput runner's 6-column table; 5000 inserts, 1000 updates (before and
//!   after images), 500 deletes;
//! - `wide`: 12 columns with JSON, DECIMAL(20,6), DATETIME(6), TIMESTAMP(6), utf8mb4 text;
//!   2000 inserts.
//!
//! ```text
//! cargo bench -p benches --features mysql --bench mysql_rows
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use powersync_source_core::TableName;
use powersync_source_mysql::decoders::{BinlogRows, ColumnSpec};

/// The recorded tables' columns (`mariadb-binlog-tables.tsv`).
fn tables() -> Vec<(TableName, Vec<ColumnSpec>)> {
    let path = benches::data_dir().join("mariadb-binlog-tables.tsv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run the record-binlog bin)", path.display()));
    let mut out: Vec<(TableName, Vec<ColumnSpec>)> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 7, "bad line {line:?}");
        let spec = ColumnSpec {
            name: f[1].into(),
            data_type: f[2].into(),
            column_type: f[3].into(),
            datetime_precision: f[4].parse().ok(),
            charset: (!f[5].is_empty()).then(|| f[5].to_owned()),
            json: f[6] == "1",
        };
        match out.last_mut() {
            Some((t, cols)) if t.name == f[0] => cols.push(spec),
            _ => out.push((TableName::new("test", f[0]), vec![spec])),
        }
    }
    out
}

/// The events of a binlog file (after the 4-byte magic), each framed by its header's size.
fn events(file: &[u8]) -> Vec<&[u8]> {
    let mut rest = file.strip_prefix(b"\xfebin").expect("a binlog file");
    let mut out = Vec::new();
    while rest.len() >= 19 {
        let size = u32::from_le_bytes(rest[9..13].try_into().expect("4 bytes")) as usize;
        let (event, tail) = rest.split_at(size);
        out.push(event);
        rest = tail;
    }
    out
}

/// Decodes every event; returns the rows.
fn decode(tables: &[(TableName, Vec<ColumnSpec>)], events: &[&[u8]]) -> usize {
    let mut decoder = BinlogRows::new(tables.to_vec());
    let mut rows = 0;
    let mut sink = |change| {
        black_box(change);
    };
    for e in events {
        rows += decoder.event(e, &mut sink).expect("recorded event decodes");
    }
    rows
}

fn bench(c: &mut Criterion) {
    let tables = tables();
    let mut group = c.benchmark_group("mysql_rows");
    for (name, want) in [("narrow", 5000 + 1000 + 500), ("wide", 2000)] {
        let path = benches::data_dir().join(format!("mariadb-binlog-{name}.bin"));
        let file = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run the record-binlog bin)", path.display()));
        let events = events(&file);
        assert_eq!(
            decode(&tables, &events),
            want,
            "{name}: rows in the recording"
        );
        group.throughput(Throughput::Elements(want as u64));
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode(&tables, black_box(&events)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
