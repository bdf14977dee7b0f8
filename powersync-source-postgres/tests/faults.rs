//! Fault tests: walsender terminated, slot dropped under a live stream, half-open connection,
//! server killed mid-snapshot, and the error kinds of common misconfigurations.

use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, ErrorKind, RetryPolicy, SnapshotProgress, SnapshotResume, StartFrom,
};
use powersync_source_postgres::{PostgresConfig, PostgresSource};
use powersync_source_testkit::conformance::{
    converge, drive, start_through_snapshot, Dml, Oracle, Workload,
};
use powersync_source_testkit::postgres::PostgresServer;

use crate::conformance::PgWorkload;

fn inserts(from: i64, n: i64) -> Vec<Dml> {
    (from..from + n)
        .map(|id| Dml::Insert {
            id,
            v: format!("v{id}"),
        })
        .collect()
}

async fn started() -> Option<PgWorkload> {
    powersync_source_testkit::init_tracing();
    let w = PgWorkload::start(None).await?;
    w.reset().await.unwrap();
    Some(w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walsender_terminated_reconnects_without_gap_or_duplicate() {
    let Some(w) = started().await else { return };
    w.apply(&inserts(0, 20)).await.unwrap();
    let source = w.source();
    let mut oracle = Oracle::strict();
    let mut stream = start_through_snapshot(source.as_ref(), &mut oracle)
        .await
        .unwrap();
    w.apply(&inserts(100, 20)).await.unwrap();
    drive(&mut stream, &mut oracle, Duration::from_secs(30), |o| {
        o.commits >= 1
    })
    .await
    .unwrap();
    let client = w.client().await.unwrap();
    let killed = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_replication",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(killed, 1);
    for round in 0..5 {
        w.apply(&inserts(200 + round * 10, 10)).await.unwrap();
    }
    converge(&w, &mut stream, &mut oracle).await.unwrap();
    assert!(stream.stats().snapshot().reconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_dropped_under_running_stream_is_history_lost() {
    let Some(w) = started().await else { return };
    let source = w.source();
    let mut oracle = Oracle::default();
    let mut stream = start_through_snapshot(source.as_ref(), &mut oracle)
        .await
        .unwrap();
    w.lose_history().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("no error within 30 s");
        match next {
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::HistoryLost, "{e}");
                break;
            }
            None => panic!("stream ended without an error"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connection_is_detected_and_recovered() {
    let Some(w) = started().await else { return };
    w.apply(&inserts(0, 10)).await.unwrap();
    let source = w.source();
    let mut oracle = Oracle::strict();
    let mut stream = start_through_snapshot(source.as_ref(), &mut oracle)
        .await
        .unwrap();
    // The silence timeout of the workload's source is 6 s: freeze the server for longer.
    w.server.pause().await.unwrap();
    let t = std::time::Instant::now();
    let r = drive(&mut stream, &mut oracle, Duration::from_secs(9), |_| false).await;
    eprintln!("paused drive: {:?} after {:?}", r.err(), t.elapsed());
    w.server.resume().await.unwrap();
    w.apply(&inserts(100, 10)).await.unwrap();
    converge(&w, &mut stream, &mut oracle).await.unwrap();
    assert!(
        stream.stats().snapshot().reconnects >= 1,
        "the frozen connection was not detected as dead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_snapshot_resumes_from_last_chunk() {
    let Some(w) = started().await else { return };
    for chunk in 0..10 {
        w.apply(&inserts(chunk * 500, 500)).await.unwrap();
    }
    let source = w.source();
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut oracle = Oracle::default();
    let mut resume: Option<SnapshotResume> = None;
    // Read until a few chunks are done, remembering the latest resume token.
    let mut chunks = 0;
    while chunks < 3 {
        let batch = stream.next().await.unwrap().unwrap();
        for e in &batch.events {
            if let ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { resume: r, .. }) = e {
                chunks += 1;
                resume = Some((**r).clone());
            }
        }
        oracle.apply_batch(batch.events).unwrap();
    }
    w.kill_and_restart().await.unwrap();
    drop(stream);
    // Writes after the crash, while no stream runs.
    w.apply(&inserts(10_000, 50)).await.unwrap();
    w.apply(&[
        Dml::Delete { id: 1 },
        Dml::Update {
            id: 4000,
            v: "changed".into(),
        },
    ])
    .await
    .unwrap();
    let token = resume.expect("a resume token").to_token();
    let mut stream = source
        .start(StartFrom::parse(&token).unwrap())
        .await
        .unwrap();
    drive(&mut stream, &mut oracle, Duration::from_secs(60), |o| {
        o.snapshot_done
    })
    .await
    .unwrap();
    converge(&w, &mut stream, &mut oracle).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_level_replica_is_a_prerequisite_error() {
    powersync_source_testkit::init_tracing();
    let server = PostgresServer::builder()
        .setting("wal_level", "replica")
        .start()
        .await;
    let Some(server) = powersync_source_testkit::or_skip(server) else {
        return;
    };
    server
        .psql("CREATE TABLE t (id int primary key); CREATE PUBLICATION powersync FOR ALL TABLES;")
        .await
        .unwrap();
    let source = PostgresSource::from_url(&server.url()).unwrap();
    let report = source.check().await.unwrap();
    assert!(!report.is_ready());
    let err = report.into_result().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Prerequisite);
    let text = err.to_string();
    assert!(
        text.contains("wal_level") && text.contains("restart"),
        "{text}"
    );
    let err = source.start(StartFrom::Beginning).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Prerequisite, "{err}");
}

#[tokio::test]
async fn unreachable_host_is_a_connection_error() {
    let port = powersync_source_testkit::free_port().unwrap();
    let config = PostgresConfig::parse(&format!(
        "postgres://postgres:pw@127.0.0.1:{port}/postgres?connect_timeout=2"
    ))
    .unwrap();
    let err = PostgresSource::new(config).check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(err.is_retryable());
    assert!(!format!("{err} {err:?}").contains(":pw@"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_without_key_is_reported_with_the_fix() {
    let Some(w) = started().await else { return };
    w.server
        .psql("CREATE TABLE nokey (a int, b text); CREATE PUBLICATION nk FOR TABLE nokey;")
        .await
        .unwrap();
    let source = PostgresSource::new(
        PostgresConfig::parse(&w.server.url())
            .unwrap()
            .with_publication("nk"),
    );
    let report = source.check().await.unwrap();
    let text = report.clone().into_result().unwrap_err().to_string();
    assert!(text.contains("REPLICA IDENTITY FULL"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_checkpoint_older_than_the_slot_is_history_lost() {
    let Some(w) = started().await else { return };
    let source = w.source();
    let mut oracle = Oracle::default();
    let mut stream = start_through_snapshot(source.as_ref(), &mut oracle)
        .await
        .unwrap();
    let old = oracle.last_checkpoint.clone().unwrap();
    w.apply(&inserts(0, 5)).await.unwrap();
    converge(&w, &mut stream, &mut oracle).await.unwrap();
    // The newer commit was acknowledged and confirmed to the server: wait until the slot says so.
    let client = w.client().await.unwrap();
    let newest = oracle.last_checkpoint.clone().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        drive(&mut stream, &mut oracle, Duration::from_millis(300), |_| {
            false
        })
        .await
        .ok();
        let confirmed = confirmed_flush(&client).await;
        use powersync_source_core::Position;
        if confirmed.to_checkpoint() > old {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot never confirmed {newest}"
        );
    }
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = source.start(StartFrom::Checkpoint(old)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HistoryLost, "{err}");
    assert!(
        err.to_string().contains("past the resume checkpoint"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_unpublished_writes_do_not_hold_wal() {
    let Some(w) = started().await else { return };
    let client = w.client().await.unwrap();
    client
        .batch_execute("CREATE TABLE other (id bigint primary key, pad text)")
        .await
        .unwrap();
    let source = w.source();
    let mut oracle = Oracle::default();
    let mut stream = start_through_snapshot(source.as_ref(), &mut oracle)
        .await
        .unwrap();
    // Lots of WAL from a table outside the publication.
    client
        .batch_execute(
            "INSERT INTO other SELECT g, repeat('x', 1000) FROM generate_series(1, 20000) g",
        )
        .await
        .unwrap();
    let target: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let target: powersync_source_core::position::PgLsn = target.parse().unwrap();
    // The host acknowledges what the stream hands it (keepalives); the slot must follow.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        drive(&mut stream, &mut oracle, Duration::from_millis(500), |_| {
            false
        })
        .await
        .ok();
        let confirmed = confirmed_flush(&client).await;
        if confirmed >= target {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot stuck at {confirmed}, WAL at {target}"
        );
    }
    assert!(oracle.rows.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toast_columns_not_sent_are_unchanged_and_key_only_old_images() {
    powersync_source_testkit::init_tracing();
    let Some(server) = powersync_source_testkit::or_skip(PostgresServer::start().await) else {
        return;
    };
    server
        .psql("CREATE TABLE t (id bigint primary key, big text, n int); CREATE PUBLICATION powersync FOR TABLE t;")
        .await
        .unwrap();
    let source = PostgresSource::new(PostgresConfig::parse(&server.url()).unwrap());
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    // Random text does not compress, so it is stored out of line (TOAST).
    server
        .psql("INSERT INTO t SELECT 1, string_agg(md5(g::text), ''), 0 FROM generate_series(1, 500) g;
               UPDATE t SET n = 1 WHERE id = 1; UPDATE t SET id = 2 WHERE id = 1; DELETE FROM t WHERE id = 2;")
        .await
        .unwrap();
    let mut rows = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while rows.len() < 4 {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for e in batch.events {
            if let ChangeEvent::Row(r) = e {
                if !r.snapshot {
                    rows.push(r);
                }
            }
        }
    }
    use powersync_source_core::{OldImage, Value};
    let big = rows[0].new.as_ref().unwrap().get(1).unwrap().clone();
    assert!(matches!(&big, Value::Text(s) if s.len() == 16_000));
    // The update of `n` did not send the unchanged TOASTed `big`.
    let upd = rows[1].new.as_ref().unwrap();
    assert_eq!(upd.get(1), Some(&Value::Unchanged));
    assert_eq!(upd.get(2), Some(&Value::Integer(1)));
    // A key change carries the old key only; the rest of the old image is Unchanged.
    assert_eq!(rows[2].old_image, OldImage::Key);
    let old = rows[2].old.as_ref().unwrap();
    assert_eq!(old.get(0), Some(&Value::Integer(1)));
    assert_eq!(old.get(2), Some(&Value::Unchanged));
    assert_eq!(rows[2].key_values()[0].1, &Value::Integer(1));
    // Delete: key-only old image.
    assert_eq!(rows[3].old_image, OldImage::Key);
    assert_eq!(
        rows[3].old.as_ref().unwrap().get(0),
        Some(&Value::Integer(2))
    );
}

/// With `REPLICA IDENTITY FULL` the server sends the old tuple whole, TOASTed values
/// detoasted: an update that leaves a TOASTed column untouched delivers its value, filled
/// from the old image (a key change too). Without FULL it stays `Unchanged` (the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_full_fills_unchanged_toast_from_the_old_image() {
    use powersync_source_core::{OldImage, Value};
    powersync_source_testkit::init_tracing();
    let Some(server) = powersync_source_testkit::or_skip(PostgresServer::start().await) else {
        return;
    };
    server
        .psql(
            "CREATE TABLE t (id bigint primary key, big text, n int);
               ALTER TABLE t ALTER big SET STORAGE EXTERNAL; ALTER TABLE t REPLICA IDENTITY FULL;
               CREATE PUBLICATION powersync FOR TABLE t;",
        )
        .await
        .unwrap();
    let source = PostgresSource::new(PostgresConfig::parse(&server.url()).unwrap());
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    server
        .psql("INSERT INTO t SELECT 1, string_agg(md5(g::text), ''), 0 FROM generate_series(1, 500) g;
               UPDATE t SET n = 1 WHERE id = 1; UPDATE t SET id = 2 WHERE id = 1;")
        .await
        .unwrap();
    let mut rows = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while rows.len() < 3 {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for e in batch.events {
            if let ChangeEvent::Row(r) = e {
                if !r.snapshot {
                    rows.push(r);
                }
            }
        }
    }
    let big = rows[0].new.as_ref().unwrap().get(1).unwrap().clone();
    assert!(matches!(&big, Value::Text(s) if s.len() == 16_000));
    for (update, id, n) in [(&rows[1], 1, 1), (&rows[2], 2, 1)] {
        assert_eq!(update.old_image, OldImage::Full);
        // The old image is complete (the server detoasted it) ...
        let old = update.old.as_ref().unwrap().get(1);
        assert!(old == Some(&big), "the old image lacks big: {}", brief(old));
        // ... so the new row carries the value, not Unchanged.
        let new = update.new.as_ref().unwrap();
        assert_eq!(new.get(0), Some(&Value::Integer(id)));
        assert!(
            new.get(1) == Some(&big),
            "the new row lacks big: {}",
            brief(new.get(1))
        );
        assert_eq!(new.get(2), Some(&Value::Integer(n)));
    }
}

/// A value short enough for a failure message.
fn brief(value: Option<&powersync_source_core::Value>) -> String {
    format!("{value:?}").chars().take(60).collect()
}

/// The conformance slot's confirmed position.
async fn confirmed_flush(
    client: &tokio_postgres::Client,
) -> powersync_source_core::position::PgLsn {
    let confirmed: String = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name LIKE 'conf_slot_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    confirmed.parse().unwrap()
}

/// The retry budget is per outage: a stream that has been healthy for longer than
/// `give_up_after` survives a server restart, twice (the second outage gets a fresh budget),
/// and delivers what was written right after each with no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_healthy_longer_than_give_up_after_survives_server_restarts() {
    let Some(w) = started().await else { return };
    w.apply(&inserts(0, 20)).await.unwrap();
    let give_up_after = Duration::from_secs(3);
    let retry = RetryPolicy {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
        give_up_after: Some(give_up_after),
        ..RetryPolicy::default()
    };
    let source = w.source_with(w.stream_options().with_retry(retry));
    let mut oracle = Oracle::strict();
    let mut stream = start_through_snapshot(&source, &mut oracle).await.unwrap();
    let mut next_id = 100;
    for restart in 1..=2u64 {
        // Healthy, with traffic, for longer than the whole retry budget.
        let healthy_since = std::time::Instant::now();
        while healthy_since.elapsed() < give_up_after + Duration::from_secs(1) {
            w.apply(&inserts(next_id, 10)).await.unwrap();
            next_id += 10;
            let _ = drive(&mut stream, &mut oracle, Duration::from_millis(500), |_| {
                false
            })
            .await;
        }
        let commits_before = oracle.commits;
        w.server.stop().await.unwrap();
        w.server.restart().await.unwrap();
        for _ in 0..5 {
            w.apply(&inserts(next_id, 10)).await.unwrap();
            next_id += 10;
        }
        converge(&w, &mut stream, &mut oracle)
            .await
            .unwrap_or_else(|e| panic!("after restart {restart}: {e}"));
        assert!(
            oracle.commits >= commits_before + 5,
            "{} commits",
            oracle.commits
        );
        assert!(stream.stats().snapshot().reconnects >= restart);
    }
}

/// A panic inside the stream task reaches the host as an `Internal` error, never as a silent
/// end of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_the_stream_task_is_an_internal_error() {
    let Some(w) = started().await else { return };
    w.apply(&inserts(0, 20)).await.unwrap();
    let source = w.source_with(w.stream_options().with_panic_after_rows(5));
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut rows = 0;
    let error = loop {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("no error within 30 s");
        match next {
            Some(Ok(batch)) => {
                rows += batch
                    .events
                    .iter()
                    .filter(|e| matches!(e, ChangeEvent::Row(_)))
                    .count()
            }
            Some(Err(e)) => break e,
            None => panic!("the stream ended without an error after {rows} rows"),
        }
    };
    assert_eq!(error.kind(), ErrorKind::Internal, "{error}");
    assert!(error.to_string().contains("panicked"), "{error}");
    assert!(rows <= 5, "{rows} rows before the panic");
    assert!(stream.next().await.is_none(), "the error is final");
}

/// `with_stream_options` is honoured: no batch holds more than `batch_events` events, and a
/// published table outside `tables` is neither snapshotted nor streamed (not even when it is
/// written in the same transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_options_bound_batches_and_select_tables() {
    let Some(w) = started().await else { return };
    let other = format!("other_{}", w.n());
    let client = w.client().await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE {other} (id bigint PRIMARY KEY);
             ALTER PUBLICATION conf_pub_{n} ADD TABLE {other};
             INSERT INTO {other} SELECT generate_series(1, 20);",
            n = w.n()
        ))
        .await
        .unwrap();
    w.apply(&inserts(0, 40)).await.unwrap();
    let source = w.source_with(w.stream_options().with_batch_events(7));
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();

    let mut snapshot_rows = 0;
    let mut streamed_rows = 0;
    let mut written = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while streamed_rows < 30 {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("rows within 30 s")
            .expect("stream open")
            .unwrap();
        assert!(batch.events.len() <= 7, "a batch of {}", batch.events.len());
        for event in &batch.events {
            match event {
                ChangeEvent::Row(r) => {
                    assert_eq!(r.table.name.name, w.table(), "row of an unselected table");
                    if r.snapshot {
                        snapshot_rows += 1;
                    } else {
                        streamed_rows += 1;
                    }
                }
                ChangeEvent::Schema(s) => assert_eq!(s.name.name, w.table()),
                ChangeEvent::Snapshot(SnapshotProgress::Done { .. }) if !written => {
                    written = true;
                    client
                        .batch_execute(&format!(
                            "BEGIN;
                             INSERT INTO {t} SELECT g, 'x' FROM generate_series(100, 129) g;
                             INSERT INTO {other} SELECT generate_series(100, 129);
                             COMMIT;",
                            t = w.table()
                        ))
                        .await
                        .unwrap();
                }
                _ => {}
            }
        }
    }
    assert_eq!(snapshot_rows, 40);
    assert_eq!(streamed_rows, 30);
}
