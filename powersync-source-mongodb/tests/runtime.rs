//! The stream runtime under this connector: the retry budget is per outage, a panic in the
//! stream task reaches the host, `start()` runs `check()`, and the shared stream options apply.

use std::time::{Duration, Instant};

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, ErrorKind, RetryPolicy, StartFrom, StreamOptions, TableName,
};
use powersync_source_mongodb::bson::{doc, Document};
use powersync_source_mongodb::{MongoConfig, MongoSource};
use powersync_source_testkit::conformance::{
    converge, drive, start_through_snapshot, Dml, Oracle, Workload,
};

use crate::common::{client, secantus, url};
use crate::conformance::MongoWorkload;

/// The retry budget of one outage (`give_up_after`), shorter than the healthy stretch before it.
const GIVE_UP_AFTER: Duration = Duration::from_secs(3);

fn inserts(from: i64, n: i64) -> Vec<Dml> {
    (from..from + n)
        .map(|id| Dml::Insert {
            id,
            v: format!("v{id}"),
        })
        .collect()
}

/// A stream that has been healthy for longer than `give_up_after` still gets the whole budget
/// at its next outage, and again at the one after: it survives two SIGKILLs and restarts of
/// the server, each noticed by the stream itself (not only absorbed by the driver's own
/// resume), and delivers every write from before, during and after them exactly once (strict
/// oracle: no duplicate; fresh read: no gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_stream_survives_restarts_after_its_budget_elapsed() {
    let Some(w) = MongoWorkload::secantus(&[]).await else {
        return;
    };
    w.reset().await.unwrap();
    w.apply(&inserts(0, 20)).await.unwrap();
    let retry = RetryPolicy {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
        give_up_after: Some(GIVE_UP_AFTER),
        ..RetryPolicy::default()
    };
    // The driver gives up selecting a server after 2 s, so the outage reaches the stream's
    // reconnect loop; one reconnect attempt then waits up to 2 s for the restarted server.
    let source = w
        .source_for("serverSelectionTimeoutMS=2000")
        .with_stream_options(
            StreamOptions::default()
                .with_tables(vec![TableName::new("", w.collection_name())])
                .with_retry(retry)
                .with_silence_timeout(Duration::from_secs(8)),
        );
    let server = w.server.as_ref().expect("a throwaway server");
    let mut oracle = Oracle::strict();
    let mut stream = start_through_snapshot(&source, &mut oracle).await.unwrap();
    let stats = stream.stats().clone();
    let mut next = 100;
    for outage in 1..=2_i64 {
        // Healthy and busy for longer than the budget.
        let healthy = Instant::now();
        while healthy.elapsed() < GIVE_UP_AFTER + Duration::from_secs(1) {
            w.apply(&inserts(next, 5)).await.unwrap();
            next += 5;
            let until = Instant::now() + Duration::from_millis(300);
            drive(&mut stream, &mut oracle, Duration::from_secs(10), |_| {
                Instant::now() >= until
            })
            .await
            .unwrap();
        }
        // Written just before the crash, probably not read yet.
        w.apply(&inserts(10_000 * outage, 10)).await.unwrap();
        server.kill().await.unwrap();
        drive(&mut stream, &mut oracle, Duration::from_secs(20), |_| {
            stats.snapshot().reconnects >= outage.unsigned_abs()
        })
        .await
        .unwrap_or_else(|e| panic!("outage {outage} not noticed by the stream: {e}"));
        server.restart().await.unwrap();
        w.apply(&inserts(10_000 * outage + 100, 10)).await.unwrap();
        converge(&w, &mut stream, &mut oracle)
            .await
            .unwrap_or_else(|e| panic!("after outage {outage}: {e}"));
        assert!(oracle.rows.contains_key(&(10_000 * outage + 9)));
        assert!(oracle.rows.contains_key(&(10_000 * outage + 109)));
    }
}

/// A server that stops answering (SIGSTOP: connections stay open, nothing comes back) is
/// detected by the silence timeout rather than waited on forever; once it answers again the
/// stream reconnects and delivers the writes of both sides of the pause exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connection_is_detected_by_the_silence_timeout() {
    let Some(w) = MongoWorkload::secantus(&[]).await else {
        return;
    };
    w.reset().await.unwrap();
    w.apply(&inserts(0, 5)).await.unwrap();
    // The effective timeout is at least max_await_ms (200 ms here) + 5 s.
    let source = w.source_for("").with_stream_options(
        StreamOptions::default()
            .with_tables(vec![TableName::new("", w.collection_name())])
            .with_retry(RetryPolicy {
                initial_delay: Duration::from_millis(100),
                max_delay: Duration::from_millis(500),
                give_up_after: Some(Duration::from_secs(60)),
                ..RetryPolicy::default()
            })
            .with_silence_timeout(Duration::from_secs(1)),
    );
    let server = w.server.as_ref().expect("a throwaway server");
    let mut oracle = Oracle::strict();
    let mut stream = start_through_snapshot(&source, &mut oracle).await.unwrap();
    w.apply(&inserts(100, 5)).await.unwrap();
    server.pause().await.unwrap();
    let stats = stream.stats().clone();
    let paused = Instant::now();
    let noticed = drive(&mut stream, &mut oracle, Duration::from_secs(30), |_| {
        stats.snapshot().reconnects >= 1
    })
    .await;
    server.resume().await.unwrap();
    noticed.unwrap_or_else(|e| panic!("the silent server was not noticed: {e}"));
    assert!(
        paused.elapsed() >= Duration::from_secs(5),
        "{:?}",
        paused.elapsed()
    );
    w.apply(&inserts(200, 5)).await.unwrap();
    converge(&w, &mut stream, &mut oracle).await.unwrap();
    assert!(oracle.rows.contains_key(&104) && oracle.rows.contains_key(&204));
}

/// A server that stops answering in the middle of the snapshot: the batch read gives up after
/// the silence timeout and is retried once the server answers again; every document arrives
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connection_during_the_snapshot_is_retried() {
    let Some(w) = MongoWorkload::secantus(&[]).await else {
        return;
    };
    w.reset().await.unwrap();
    w.apply(&inserts(0, 1000)).await.unwrap();
    let source = w.source_for("snapshot_batch_size=100").with_stream_options(
        StreamOptions::default()
            .with_tables(vec![TableName::new("", w.collection_name())])
            .with_batch_events(50)
            .with_silence_timeout(Duration::from_secs(1)),
    );
    let server = w.server.as_ref().expect("a throwaway server");
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut oracle = Oracle::strict();
    let mut paused = false;
    let mut snapshot_rows = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !oracle.snapshot_done {
        assert!(Instant::now() < deadline, "the snapshot did not finish");
        let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(2), stream.next()).await
        else {
            continue;
        };
        let batch = batch.unwrap();
        let chunk_done = batch.events.iter().any(|e| {
            matches!(
                e,
                ChangeEvent::Snapshot(powersync_source_core::SnapshotProgress::ChunkDone { .. })
            )
        });
        snapshot_rows += batch
            .events
            .iter()
            .filter(|e| matches!(e, ChangeEvent::Row(r) if r.snapshot))
            .count();
        oracle.apply_batch(batch.events).unwrap();
        if chunk_done && !paused {
            paused = true;
            server.pause().await.unwrap();
            let stats = stream.stats().clone();
            // The task may be blocked on a full channel: keep reading while waiting.
            let deadline = Instant::now() + Duration::from_secs(30);
            while stats.snapshot().reconnects == 0 && Instant::now() < deadline {
                if let Ok(Some(batch)) =
                    tokio::time::timeout(Duration::from_millis(500), stream.next()).await
                {
                    let batch = batch.unwrap();
                    snapshot_rows += batch
                        .events
                        .iter()
                        .filter(|e| matches!(e, ChangeEvent::Row(r) if r.snapshot))
                        .count();
                    oracle.apply_batch(batch.events).unwrap();
                }
            }
            let noticed = stats.snapshot().reconnects >= 1;
            server.resume().await.unwrap();
            assert!(noticed, "the silent server was not noticed within 30 s");
        }
    }
    assert!(paused);
    assert_eq!(
        snapshot_rows, 1000,
        "a document was read twice or not at all"
    );
    assert_eq!(oracle.rows.len(), 1000);
}

/// An outage longer than the budget ends the stream with a final `Connection` error (after
/// the events before it), never silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_longer_than_the_budget_is_a_final_error() {
    let Some(w) = MongoWorkload::secantus(&[]).await else {
        return;
    };
    w.reset().await.unwrap();
    w.apply(&inserts(0, 5)).await.unwrap();
    let source = w
        .source_for("serverSelectionTimeoutMS=500")
        .with_stream_options(
            StreamOptions::default()
                .with_tables(vec![TableName::new("", w.collection_name())])
                .with_retry(RetryPolicy {
                    initial_delay: Duration::from_millis(100),
                    max_delay: Duration::from_millis(300),
                    give_up_after: Some(Duration::from_secs(2)),
                    ..RetryPolicy::default()
                }),
        );
    let mut oracle = Oracle::strict();
    let mut stream = start_through_snapshot(&source, &mut oracle).await.unwrap();
    w.server.as_ref().unwrap().kill().await.unwrap();
    let error = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
            Ok(Some(Ok(batch))) => oracle.apply_batch(batch.events).unwrap(),
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!("the stream ended without an error"),
            Err(_) => panic!("no error within 30 s of the server's death"),
        }
    };
    assert_eq!(error.kind(), ErrorKind::Connection, "{error}");
    assert!(stream.stats().snapshot().reconnects >= 1);
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    assert!(
        matches!(end, Ok(None)),
        "the stream went on after its final error"
    );
}

/// A panic inside the stream task reaches the host as an `Internal` error, then the stream
/// ends: never a silent end that looks like a finished stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_the_stream_task_is_an_internal_error() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let base = url(&server, "panic", "");
    let docs: Vec<Document> = (0..20_i64).map(|i| doc! {"_id": i, "v": i}).collect();
    client(&base)
        .await
        .database("panic")
        .collection::<Document>("t")
        .insert_many(docs)
        .await
        .unwrap();
    let source = MongoSource::new(
        MongoConfig::parse(&url(&server, "panic", "post_images=off&max_await_ms=200")).unwrap(),
    )
    .with_stream_options(
        StreamOptions::default()
            .with_tables(vec![TableName::new("", "t")])
            .with_batch_events(2)
            .with_panic_after_rows(5),
    );
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut rows = 0;
    let error = loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            Ok(Some(Ok(batch))) => {
                rows += batch
                    .events
                    .iter()
                    .filter(|e| matches!(e, ChangeEvent::Row(_)))
                    .count()
            }
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!("the stream ended without an error after {rows} rows"),
            Err(_) => panic!("no error within 20 s"),
        }
    };
    assert_eq!(error.kind(), ErrorKind::Internal, "{error}");
    assert!(rows <= 5, "{rows} rows before the panic");
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    assert!(
        matches!(end, Ok(None)),
        "the stream went on after its error"
    );
}

/// `start()` runs `check()`: a standalone server is refused up front with the fix, not by a
/// failing stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_runs_check() {
    let Some(server) = secantus(&["--standalone"]).await else {
        return;
    };
    let source = MongoSource::new(MongoConfig::parse(&url(&server, "app", "")).unwrap());
    let err = source.start(StartFrom::Beginning).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Prerequisite, "{err}");
    assert!(err.to_string().contains("standalone"), "{err}");
}

/// `StreamOptions::batch_events` bounds the batches, and the URL's `batch_events` wins over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_limit_from_options_and_url() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let base = url(&server, "batches", "");
    let docs: Vec<Document> = (0..30_i64).map(|i| doc! {"_id": i}).collect();
    client(&base)
        .await
        .database("batches")
        .collection::<Document>("t")
        .insert_many(docs)
        .await
        .unwrap();
    for (extra, limit) in [("", 3), ("&batch_events=5", 5)] {
        let source = MongoSource::new(
            MongoConfig::parse(&url(&server, "batches", &format!("post_images=off{extra}")))
                .unwrap(),
        )
        .with_stream_options(
            StreamOptions::default()
                .with_tables(vec![TableName::new("", "t")])
                .with_batch_events(3),
        );
        let mut oracle = Oracle::default();
        let stream = start_through_snapshot(&source, &mut oracle).await.unwrap();
        assert_eq!(oracle.rows.len(), 30);
        assert_eq!(oracle.max_batch, limit, "URL part `{extra}`");
        drop(stream);
    }
}
