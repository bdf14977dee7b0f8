//! The golden type table: every column type, read by the snapshot and by the binlog, must give
//! exactly the listed SQLite value on both paths. This table is the specification users read.

use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{ChangeEvent, ChangeSource, Op, StartFrom, TableName, Value};

use crate::workload::MariaWorkload;

const COLUMNS: &str = "
    id INT PRIMARY KEY,
    ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
    mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
    dec1 DECIMAL(10,2), dec2 DECIMAL(40,30), f FLOAT, d DOUBLE,
    b1 BIT(1), b12 BIT(12), b63 BIT(63), b64 BIT(64), y YEAR,
    dt DATE, tm TIME, tm3 TIME(3), dtm DATETIME, dtm6 DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL,
    c CHAR(5), vc VARCHAR(20) CHARACTER SET utf8mb4, tx TEXT CHARACTER SET utf8mb4, lat VARCHAR(20) CHARACTER SET latin1,
    u16 VARCHAR(10) CHARACTER SET utf16,
    bin BINARY(4), vb VARBINARY(10), bl BLOB,
    e ENUM('a','b','c'), st SET('x','y','z'), j JSON, g GEOMETRY, pt POINT";

const ROW1: &str = "(1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
    -9223372036854775808, 18446744073709551615,
    -12345678.90, 1.000000000000000000000000000001, 1.5, -2.25e100,
    b'1', b'101010101010', b'111111111111111111111111111111111111111111111111111111111111111',
    b'1111111111111111111111111111111111111111111111111111111111111111', 2155,
    '2024-02-29', '-838:59:59', '12:34:56.789', '1000-01-01 00:00:00', '9999-12-31 23:59:59.999999',
    '2038-01-19 03:14:07.499',
    'ab', 'héllo ✓', 'multi\\nline', 'café €', '😀x',
    x'0102', x'00ff', x'',
    'b', 'x,z', '{\"a\": [1, 2.5, \"s\"], \"b\": null}',
    ST_GeomFromText('LINESTRING(0 0,1 1)'), POINT(1.5, -2))";

const ROW3: &str = "(3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9223372036854775807,
    0, 0, 0, 0, b'0', b'0', b'0', b'0', 0,
    '0000-00-00', '00:00:00', '00:00:00.000', '0000-00-00 00:00:00', '2024-00-00 00:00:00',
    '0000-00-00 00:00:00',
    '', '', '', '', '',
    x'00000000', x'', x'',
    'zz', '', '[]', NULL, NULL)";

type Named = Vec<(String, Value)>;

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

/// Expected values of rows 1, 2 (all NULL) and 3, without `id`.
fn golden() -> Vec<Vec<(&'static str, Value)>> {
    use Value::*;
    let row1 = vec![
        ("ti", Integer(-128)),
        ("tiu", Integer(255)),
        ("si", Integer(-32768)),
        ("siu", Integer(65535)),
        ("mi", Integer(-8388608)),
        ("miu", Integer(16777215)),
        ("i", Integer(-2147483648)),
        ("iu", Integer(4294967295)),
        ("bi", Integer(i64::MIN)),
        ("biu", t("18446744073709551615")),
        ("dec1", t("-12345678.90")),
        ("dec2", t("1.000000000000000000000000000001")),
        ("f", Real(1.5)),
        ("d", Real(-2.25e100)),
        ("b1", Integer(1)),
        ("b12", Integer(0b1010_1010_1010)),
        // BIT(n): Integer up to 63 bits; BIT(64) is Text for every value (one SQLite type
        // per column), as base-10 digits
        ("b63", Integer(i64::MAX)),
        ("b64", t("18446744073709551615")),
        ("y", Integer(2155)),
        ("dt", t("2024-02-29")),
        ("tm", t("-838:59:59")),
        ("tm3", t("12:34:56.789")),
        ("dtm", t("1000-01-01T00:00:00")),
        ("dtm6", t("9999-12-31T23:59:59.999999")),
        ("ts", t("2038-01-19T03:14:07.499Z")),
        ("c", t("ab")),
        ("vc", t("héllo ✓")),
        ("tx", t("multi\nline")),
        ("lat", t("café €")),
        ("u16", t("😀x")),
        ("bin", Blob(vec![1, 2, 0, 0])),
        ("vb", Blob(vec![0, 255])),
        ("bl", Blob(vec![])),
        ("e", t("b")),
        ("st", t(r#"["x","z"]"#)),
        ("j", t(r#"{"a": [1, 2.5, "s"], "b": null}"#)),
        (
            "g",
            t(r#"{"type":"LineString","coordinates":[[0,0],[1,1]]}"#),
        ),
        ("pt", t(r#"{"type":"Point","coordinates":[1.5,-2]}"#)),
    ];
    let row2: Vec<_> = row1.iter().map(|(n, _)| (*n, Null)).collect();
    let row3 = vec![
        ("ti", Integer(0)),
        ("tiu", Integer(0)),
        ("si", Integer(0)),
        ("siu", Integer(0)),
        ("mi", Integer(0)),
        ("miu", Integer(0)),
        ("i", Integer(0)),
        ("iu", Integer(0)),
        ("bi", Integer(0)),
        ("biu", Integer(i64::MAX)),
        ("dec1", t("0.00")),
        ("dec2", t("0.000000000000000000000000000000")),
        ("f", Real(0.0)),
        ("d", Real(0.0)),
        ("b1", Integer(0)),
        ("b12", Integer(0)),
        ("b63", Integer(0)),
        ("b64", t("0")),
        ("y", Integer(0)),
        ("dt", Null),
        ("tm", t("00:00:00")),
        ("tm3", t("00:00:00.000")),
        ("dtm", Null),
        ("dtm6", Null),
        ("ts", Null),
        ("c", t("")),
        ("vc", t("")),
        ("tx", t("")),
        ("lat", t("")),
        ("u16", t("")),
        ("bin", Blob(vec![0, 0, 0, 0])),
        ("vb", Blob(vec![])),
        ("bl", Blob(vec![])),
        ("e", t("")),
        ("st", t("[]")),
        ("j", t("[]")),
        ("g", Null),
        ("pt", Null),
    ];
    vec![row1, row2, row3]
}

fn compare(
    path: &str,
    id: i64,
    got: &[(String, Value)],
    want: &[(&str, Value)],
    out: &mut Vec<String>,
) {
    for (name, expected) in want {
        let actual = got.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        if actual != Some(expected) {
            out.push(format!(
                "{path} row {id} column {name}: got {actual:?}, want {expected:?}"
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_types_snapshot_and_binlog_agree() {
    powersync_source_testkit::init_tracing();
    let Some(w) = MariaWorkload::start().await else {
        return;
    };
    w.exec(&format!(
        "SET SESSION sql_mode = ''; SET time_zone = '+00:00';
         CREATE TABLE test.golden ({COLUMNS});
         INSERT INTO test.golden VALUES {ROW1};
         INSERT INTO test.golden (id) VALUES (2);
         INSERT INTO test.golden VALUES {ROW3};"
    ))
    .await
    .expect("creating the golden table");
    let source = w.source_for(vec![TableName::new("", "golden")]);
    let mut stream = source.start(StartFrom::Beginning).await.expect("start");

    let mut snapshot: Vec<(i64, Vec<(String, Value)>)> = Vec::new();
    let mut streamed: Vec<(Op, i64, Named, Option<Named>)> = Vec::new();
    let mut marker = None;
    let mut observed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let named = |table: &powersync_source_core::TableSchema, row: &powersync_source_core::Row| {
        table
            .columns
            .iter()
            .map(|c| c.name.clone())
            .zip(row.values().iter().cloned())
            .collect::<Vec<_>>()
    };
    while !observed {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("timed out")
            .expect("stream ended")
            .expect("stream error");
        for event in batch.events {
            match event {
                ChangeEvent::Row(r) => {
                    let new = r.new.as_ref().map(|n| named(&r.table, n));
                    let old = r.old.as_ref().map(|o| named(&r.table, o));
                    let image = new.clone().or(old.clone()).unwrap_or_default();
                    let id = match image.iter().find(|(n, _)| n == "id") {
                        Some((_, Value::Integer(i))) => *i,
                        other => panic!("id is {other:?}"),
                    };
                    if r.snapshot {
                        snapshot.push((id, image));
                    } else {
                        streamed.push((r.op, id, image, old));
                    }
                }
                ChangeEvent::Snapshot(powersync_source_core::SnapshotProgress::Done { .. }) => {
                    w.exec(
                        "INSERT INTO test.golden SELECT id + 100, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, dec1, dec2, f, d, b1, b12, b63, b64, y, dt, tm, tm3, dtm, dtm6, ts, c, vc, tx, lat, u16, bin, vb, bl, e, st, j, g, pt FROM test.golden;
                         UPDATE test.golden SET vc = 'changed' WHERE id = 101;
                         DELETE FROM test.golden WHERE id = 103;",
                    )
                    .await
                    .expect("binlog workload");
                    marker = Some(source.write_checkpoint().await.expect("write checkpoint"));
                }
                ChangeEvent::CheckpointObserved(c) if Some(&c) == marker.as_ref() => {
                    observed = true
                }
                _ => {}
            }
        }
    }

    let golden = golden();
    let mut problems = Vec::new();
    assert_eq!(snapshot.len(), 3, "snapshot rows");
    for (id, got) in &snapshot {
        compare(
            "snapshot",
            *id,
            got,
            &golden[(*id - 1) as usize],
            &mut problems,
        );
    }
    let inserts: Vec<_> = streamed.iter().filter(|s| s.0 == Op::Insert).collect();
    assert_eq!(inserts.len(), 3, "streamed inserts");
    for (_, id, got, _) in &inserts {
        compare(
            "binlog insert",
            *id,
            got,
            &golden[(*id - 101) as usize],
            &mut problems,
        );
    }
    let update = streamed.iter().find(|s| s.0 == Op::Update).expect("update");
    compare(
        "binlog update old image",
        101,
        update.3.as_ref().expect("old image"),
        &golden[0],
        &mut problems,
    );
    let mut want_new = golden[0].clone();
    for (n, v) in want_new.iter_mut() {
        if *n == "vc" {
            *v = t("changed");
        }
    }
    compare(
        "binlog update new image",
        101,
        &update.2,
        &want_new,
        &mut problems,
    );
    let delete = streamed.iter().find(|s| s.0 == Op::Delete).expect("delete");
    compare(
        "binlog delete old image",
        103,
        &delete.2,
        &golden[2],
        &mut problems,
    );
    assert!(
        problems.is_empty(),
        "golden mismatches:\n{}",
        problems.join("\n")
    );
}
