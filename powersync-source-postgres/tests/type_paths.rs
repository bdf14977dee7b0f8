//! The golden type table through the connector's three value paths: the snapshot (COPY
//! binary), the stream in pgoutput binary format, and the stream in text format. Each must give
//! the golden value of `tests/types.rs` for every row.

use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, ChangeStream, Row, SnapshotProgress, StartFrom, Value,
};
use powersync_source_postgres::{PostgresConfig, PostgresOptions, PostgresSource};
use powersync_source_testkit::postgres::PostgresServer;

use crate::types::{golden, setup};

async fn next_rows(
    stream: &mut ChangeStream,
    snapshot: bool,
    n: usize,
) -> (Vec<Row>, Option<powersync_source_core::Checkpoint>) {
    let mut rows = Vec::new();
    let mut done = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while rows.len() < n || (snapshot && done.is_none()) {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("rows in time")
            .unwrap()
            .unwrap();
        for e in batch.events {
            match e {
                ChangeEvent::Row(r) if r.snapshot == snapshot => rows.push(r.new.unwrap()),
                ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint }) => {
                    done = Some(checkpoint)
                }
                _ => {}
            }
        }
    }
    (rows, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_values_are_identical_through_snapshot_binary_and_text_streams() {
    powersync_source_testkit::init_tracing();
    let Some(server) = powersync_source_testkit::or_skip(PostgresServer::start().await) else {
        return;
    };
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            server.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let _schema = setup(&client).await;
    let mut cases = golden();
    if client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS postgis SCHEMA public")
        .await
        .is_ok()
    {
        cases.push(crate::types::Case {
            ty: "geometry",
            sql: "'SRID=4326;POINT(1 2)'".into(),
            expected: Value::Text(r#"{"type":"Point","coordinates":[1,2]}"#.into()),
        });
    } else {
        eprintln!("SKIPPED: PostGIS row of the path test (extension not installed)");
    }
    let columns: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| format!("c{i} {}", c.ty))
        .collect();
    let values: Vec<String> = cases
        .iter()
        .map(|c| format!("({})::{}", c.sql, c.ty))
        .collect();
    client
        .batch_execute(&format!(
            "CREATE TABLE public.paths (id int PRIMARY KEY, {});
             CREATE PUBLICATION powersync FOR TABLE public.paths;
             INSERT INTO public.paths VALUES (1, {});",
            columns.join(", "),
            values.join(", ")
        ))
        .await
        .unwrap();
    let insert_again = format!("INSERT INTO public.paths VALUES (2, {})", values.join(", "));

    let config = PostgresConfig::parse(&server.url()).unwrap();
    let binary = PostgresSource::new(config.clone());
    let mut stream = binary.start(StartFrom::Beginning).await.unwrap();
    let (snapshot_rows, done) = next_rows(&mut stream, true, 1).await;
    let before_insert = done.unwrap();
    client.batch_execute(&insert_again).await.unwrap();
    let (binary_rows, _) = next_rows(&mut stream, false, 1).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let text = PostgresSource::new(config).with_options(PostgresOptions {
        binary: false,
        ..PostgresOptions::default()
    });
    let mut stream = text
        .start(StartFrom::Checkpoint(before_insert))
        .await
        .unwrap();
    let (text_rows, _) = next_rows(&mut stream, false, 1).await;

    let mut failures = Vec::new();
    for (path, row) in [
        ("snapshot", &snapshot_rows[0]),
        ("binary stream", &binary_rows[0]),
        ("text stream", &text_rows[0]),
    ] {
        assert_eq!(row.len(), cases.len() + 1);
        for (i, case) in cases.iter().enumerate() {
            let got = row.get(i + 1).unwrap();
            if got != &case.expected {
                failures.push(format!(
                    "{path}: {} {} → {got:?}, expected {:?}",
                    case.ty, case.sql, case.expected
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "type paths: {} golden values identical through snapshot, binary and text streams",
        cases.len()
    );
}
