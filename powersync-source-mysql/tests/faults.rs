//! Fault tests: a killed replication connection, a server killed mid-snapshot, a frozen server
//! (half-open connection), and a server set up wrongly.

use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, ErrorKind, SnapshotProgress, StartFrom, TableName,
};
use powersync_source_mysql::mysql_async::prelude::Queryable;
use powersync_source_mysql::{MySqlConfig, MySqlSource};
use powersync_source_testkit::conformance::{self, drive, Dml, Oracle, Workload};
use powersync_source_testkit::MariaDbServer;

use crate::workload::{err, MariaWorkload};

fn inserts(from: i64, n: i64) -> Vec<Dml> {
    (from..from + n)
        .map(|id| Dml::Insert {
            id,
            v: format!("v{id}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_a_live_stream() {
    powersync_source_testkit::init_tracing();
    let Some(w) = MariaWorkload::start().await else {
        return;
    };

    // KILL of the binlog dump thread: the stream reconnects from its last boundary, nothing
    // is lost or repeated (strict oracle).
    w.reset().await.unwrap();
    w.apply(&inserts(0, 50)).await.unwrap();
    let source = w.source();
    let mut oracle = Oracle::strict();
    let mut stream = conformance::start_through_snapshot(source.as_ref(), &mut oracle)
        .await
        .unwrap();
    w.apply(&inserts(100, 10)).await.unwrap();
    drive(&mut stream, &mut oracle, Duration::from_secs(20), |o| {
        o.commits >= 1
    })
    .await
    .unwrap();
    let mut c = w.conn().await.unwrap();
    let ids: Vec<u64> = c
        .query("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
        .await
        .unwrap();
    assert!(!ids.is_empty(), "no binlog dump thread found");
    for id in ids {
        c.query_drop(format!("KILL {id}")).await.unwrap();
    }
    for round in 0..5 {
        w.apply(&inserts(200 + round * 10, 10)).await.unwrap();
    }
    conformance::converge(&w, &mut stream, &mut oracle)
        .await
        .unwrap();
    assert!(
        stream.stats().snapshot().reconnects >= 1,
        "no reconnect counted"
    );

    // A frozen server (SIGSTOP): the silence timeout (6 s) notices the half-open connection;
    // after SIGCONT the stream reconnects and converges.
    let before = stream.stats().snapshot().reconnects;
    w.server.pause().await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    w.server.resume().await.unwrap();
    w.apply(&inserts(400, 10)).await.unwrap();
    conformance::converge(&w, &mut stream, &mut oracle)
        .await
        .unwrap();
    assert!(
        stream.stats().snapshot().reconnects > before,
        "the silent connection was not replaced"
    );
    let stats = stream.stats().snapshot();
    assert!(
        stats.rows > 0 && stats.transactions > 0 && stats.bytes_received > 0,
        "{stats:?}"
    );
    drop(stream);

    // The server killed in the middle of the snapshot: the stream fails, and the snapshot
    // resumes from its last finished chunk and converges.
    w.reset().await.unwrap();
    for chunk in 0..10 {
        w.apply(&inserts(chunk * 300, 300)).await.unwrap();
    }
    let source = w.source();
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut oracle = Oracle::default();
    let mut resume = None;
    while resume.is_none() {
        let batch = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        // Keep only what precedes the first chunk boundary, and resume from it.
        let mut events = Vec::new();
        for e in batch.events {
            let done = match &e {
                ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { resume: r, .. }) => {
                    resume = Some((**r).clone());
                    true
                }
                _ => false,
            };
            events.push(e);
            if done {
                break;
            }
        }
        oracle.apply_batch(events).unwrap();
    }
    w.server.kill().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream neither failed nor ended after the server died");
    if let Some(e) = ended {
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    }
    drop(stream);
    w.server.restart().await.unwrap();
    w.apply(&inserts(10_000, 20)).await.unwrap();
    let resume = resume.unwrap();
    let mut stream = source.start(StartFrom::Snapshot(resume)).await.unwrap();
    drive(&mut stream, &mut oracle, Duration::from_secs(60), |o| {
        o.snapshot_done
    })
    .await
    .unwrap();
    conformance::converge(&w, &mut stream, &mut oracle)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_binlog_is_a_prerequisite_error_naming_every_setting() {
    let server = powersync_source_testkit::start_or_skip!(
        MariaDbServer::builder()
            .setting("binlog_format", "STATEMENT")
            .setting("binlog_row_image", "MINIMAL")
            .start()
            .await
    );
    server
        .sql("CREATE TABLE test.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let source = MySqlSource::new(MySqlConfig::parse(&server.database_url("test")).unwrap())
        .with_tables(vec![TableName::new("", "t")]);
    let report = source.check().await.unwrap();
    let e = report.into_result().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Prerequisite);
    let text = e.to_string();
    assert!(text.contains("binlog_format"), "{text}");
    assert!(text.contains("binlog_row_image"), "{text}");
    // start() refuses too, with the same diagnosis.
    let e = source.start(StartFrom::Beginning).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Prerequisite);

    // A table that does not exist is reported by check() and refused by start().
    let missing = MySqlSource::new(MySqlConfig::parse(&server.database_url("test")).unwrap())
        .with_tables(vec![TableName::new("", "nope")]);
    let text = missing
        .check()
        .await
        .unwrap()
        .into_result()
        .unwrap_err()
        .to_string();
    assert!(text.contains("nope"), "{text}");

    // Nothing listening: a retryable connection error.
    let port = powersync_source_testkit::free_port().unwrap();
    let down = MySqlSource::new(
        MySqlConfig::parse(&format!("mysql://root@127.0.0.1:{port}/test")).unwrap(),
    );
    let e = down.check().await.map_err(err).unwrap_err();
    assert!(e.is_retryable(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_and_ddl_follow_the_database() {
    powersync_source_testkit::init_tracing();
    let Some(w) = MariaWorkload::start().await else {
        return;
    };
    w.exec(
        "CREATE TABLE test.a (id BIGINT PRIMARY KEY, v TEXT); INSERT INTO test.a VALUES (1, 'x')",
    )
    .await
    .unwrap();
    // Whole-database selection: discover lists the base tables.
    let source = w.source_for(vec![]);
    let tables = source.discover().await.unwrap();
    assert_eq!(
        tables
            .iter()
            .map(|t| t.name.to_string())
            .collect::<Vec<_>>(),
        vec!["test.a"]
    );
    assert_eq!(tables[0].key_names(), vec!["id"]);
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut oracle = Oracle::default();
    drive(&mut stream, &mut oracle, Duration::from_secs(20), |o| {
        o.snapshot_done
    })
    .await
    .unwrap();
    // A new table in scope gets a schema event; a renamed-in table's rows arrive through a
    // backfill (after the DDL, while the stream goes on).
    w.exec(
        "CREATE TABLE test.b (id BIGINT PRIMARY KEY, v TEXT); INSERT INTO test.b VALUES (7, 'y');
            CREATE TABLE other_db_placeholder_ignored (id INT)",
    )
    .await
    .ok();
    w.exec(
        "CREATE DATABASE IF NOT EXISTS side; CREATE TABLE side.c (id BIGINT PRIMARY KEY, v TEXT);
            INSERT INTO side.c VALUES (9, 'z'); RENAME TABLE side.c TO test.c",
    )
    .await
    .unwrap();
    let marker = source.write_checkpoint().await.unwrap();
    let mut seen_b = false;
    let mut seen_c_row = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut observed = false;
    let mut c_done = false;
    while !(observed && c_done) {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for e in batch.events {
            match e {
                ChangeEvent::Schema(s) if s.name.name == "b" => seen_b = true,
                ChangeEvent::Row(r) if r.table.name.name == "c" && r.snapshot => seen_c_row = true,
                ChangeEvent::CheckpointObserved(c) if c == marker => observed = true,
                ChangeEvent::Snapshot(SnapshotProgress::BackfillDone { table, id, rows })
                    if table.name == "c" =>
                {
                    assert!(id.starts_with("added-"), "{id}");
                    assert_eq!(rows, 1);
                    c_done = true;
                }
                _ => {}
            }
        }
    }
    assert!(seen_b, "no schema event for the created table");
    assert!(seen_c_row, "the renamed-in table's rows were not read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_idle_keepalives_and_resume_across_files() {
    powersync_source_testkit::init_tracing();
    let Some(w) = MariaWorkload::start().await else {
        return;
    };
    w.reset().await.unwrap();
    w.apply(&inserts(0, 10)).await.unwrap();
    let source = w.source();
    let mut oracle = Oracle::strict();
    let mut stream = conformance::start_through_snapshot(source.as_ref(), &mut oracle)
        .await
        .unwrap();
    let first = oracle.last_checkpoint.clone().unwrap();

    // Idle: heartbeats (1 s) bring keepalives.
    let mut keepalives = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while keepalives.len() < 2 {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("no keepalive on an idle server")
            .unwrap()
            .unwrap();
        for e in batch.events {
            if let ChangeEvent::Keepalive(c) = e {
                keepalives.push(c);
            }
        }
    }
    assert!(
        keepalives.iter().all(|c| c >= &first),
        "{keepalives:?} before {first}"
    );

    // Writes spread over three binlog files.
    w.apply(&inserts(100, 10)).await.unwrap();
    w.exec("FLUSH BINARY LOGS").await.unwrap();
    w.apply(&inserts(200, 10)).await.unwrap();
    w.exec("FLUSH BINARY LOGS").await.unwrap();
    w.apply(&inserts(300, 10)).await.unwrap();
    conformance::converge(&w, &mut stream, &mut oracle)
        .await
        .unwrap();
    let last = oracle.last_checkpoint.clone().unwrap();
    assert!(last > first, "{last} does not order after {first}");
    assert!(
        last.as_str().contains("0000000003:"),
        "the checkpoint did not follow the rotation: {last}"
    );
    stream.ack(&last).unwrap();
    drop(stream);

    // Resume from the checkpoint in the third file: only the newer rows arrive, once.
    w.apply(&inserts(400, 10)).await.unwrap();
    let mut stream = source.start(StartFrom::Checkpoint(last)).await.unwrap();
    conformance::converge(&w, &mut stream, &mut oracle)
        .await
        .unwrap();
}
