//! WAL retention: a slot invalidated by `max_slot_wal_keep_size` during a long snapshot ends
//! the stream with `HistoryLost` within one slot check, not at the end of the copy.

use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, ErrorKind, SnapshotProgress, StartFrom, StreamOptions,
};
use powersync_source_postgres::{PostgresConfig, PostgresOptions, PostgresSource};
use powersync_source_testkit::postgres::PostgresServer;
use powersync_source_testkit::start_or_skip;

const CHECK: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_invalidated_during_the_snapshot_ends_the_stream_within_one_check() {
    invalidated_during_the_snapshot(None).await;
}

/// On 17+ the server says why (`invalidation_reason`), and the error carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_18_the_invalidation_reason_is_in_the_error() {
    if std::env::var_os("POWERSYNC_SKIP_PG_MATRIX").is_some() {
        eprintln!("SKIPPED: PostgreSQL 18 (POWERSYNC_SKIP_PG_MATRIX is set)");
        return;
    }
    let dir = powersync_source_testkit::postgres::postgres_binaries_for_major(18).await;
    let Some(dir) = powersync_source_testkit::or_skip(dir) else {
        return;
    };
    invalidated_during_the_snapshot(Some(dir)).await;
}

/// A throttled snapshot (the host stops reading) while another table writes 128 MB and a
/// checkpoint removes the WAL the slot needs.
async fn invalidated_during_the_snapshot(bin_dir: Option<std::path::PathBuf>) {
    powersync_source_testkit::init_tracing();
    let mut builder = PostgresServer::builder()
        .setting("max_slot_wal_keep_size", "16MB")
        .setting("max_wal_size", "64MB");
    if let Some(dir) = bin_dir {
        builder = builder.bin_dir(dir);
    }
    let pg = start_or_skip!(builder.start().await);
    pg.psql(
        "CREATE TABLE big (id int PRIMARY KEY, v text);
         INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 200000) g;
         CREATE TABLE filler (id int, pad text);
         CREATE PUBLICATION powersync FOR TABLE big;",
    )
    .await
    .expect("schema");
    let source = PostgresSource::new(PostgresConfig::parse(&pg.url()).expect("url"))
        .with_options(PostgresOptions {
            slot_check_interval: CHECK,
            ..PostgresOptions::default()
        })
        .with_stream_options(StreamOptions::default().with_batch_events(100));
    let mut stream = source.start(StartFrom::Beginning).await.expect("start");
    // One batch, then the host stops reading: the snapshot is throttled by backpressure and
    // holds the slot at its start while another table writes.
    let first = stream.next().await.expect("a batch").expect("no error");
    assert!(!first.events.is_empty());
    tokio::time::sleep(CHECK * 3).await;
    let before = stream.stats().snapshot();
    assert!(
        before.history_budget_bytes.is_some(),
        "the budget is measured: {before:?}"
    );

    // About 17 MB of WAL elsewhere: past half the budget (the watch warns), not yet lost as
    // no checkpoint ran. The budget is `safe_wal_size` + the retained WAL: the slot's segment
    // plus max_slot_wal_keep_size, 16 to 32 MB here.
    pg.psql("INSERT INTO filler SELECT g, repeat('x', 1000) FROM generate_series(1, 16000) g;")
        .await
        .expect("filler");
    tokio::time::sleep(CHECK * 3).await;
    let half = stream.stats().snapshot();
    let budget = half.history_budget_bytes.expect("a budget");
    let used = half.retained_bytes as f64 / (half.retained_bytes + budget) as f64;
    assert!(
        used >= 0.5,
        "the watch sees the slot past half its budget: {half:?}"
    );

    // 128 MB more, and a checkpoint that removes it.
    for _ in 0..4 {
        pg.psql("INSERT INTO filler SELECT g, repeat('x', 1000) FROM generate_series(1, 32000) g;")
            .await
            .expect("filler");
    }
    pg.psql("CHECKPOINT;").await.expect("checkpoint");
    let status = pg
        .psql("SELECT wal_status FROM pg_replication_slots WHERE slot_name LIKE 'powersync%';")
        .await
        .expect("slot status");
    assert!(status.contains("lost"), "the slot is invalidated: {status}");
    // Within one check (and some slack), while the host still does not read.
    tokio::time::sleep(CHECK * 3).await;

    let mut snapshot_done = false;
    let error = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(batch))) => {
                snapshot_done |= batch
                    .events
                    .iter()
                    .any(|e| matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. })));
            }
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!("the stream ended without an error"),
            Err(_) => panic!("no error within 10 s of the invalidation"),
        }
    };
    assert_eq!(error.kind(), ErrorKind::HistoryLost, "{error}");
    let text = error.to_string();
    assert!(text.contains("was invalidated"), "{text}");
    assert!(
        text.contains("max_slot_wal_keep_size (now 16 MB)"),
        "{text}"
    );
    if pg.major_version() >= 17 {
        assert!(text.contains("(reason: wal_removed)"), "{text}");
    }
    assert!(!snapshot_done, "ended before the copy finished");
    assert!(stream.next().await.is_none());
}

/// `check()` warns about unbounded WAL retention and about other inactive slots holding WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_unbounded_retention_and_idle_slots() {
    powersync_source_testkit::init_tracing();
    let pg = start_or_skip!(
        PostgresServer::builder()
            .setting("max_slot_wal_keep_size", "-1")
            .start()
            .await
    );
    pg.psql(
        "CREATE TABLE t (id int PRIMARY KEY);
         CREATE PUBLICATION powersync FOR ALL TABLES;
         SELECT pg_create_logical_replication_slot('forgotten', 'pgoutput');",
    )
    .await
    .expect("schema");
    let source = PostgresSource::new(PostgresConfig::parse(&pg.url()).expect("url"));
    let report = source.check().await.expect("check");
    assert!(report.is_ready(), "{:?}", report.problems);
    let warnings: Vec<String> = report
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.setting, p.what))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("max_slot_wal_keep_size") && w.contains("-1")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("replication slots") && w.contains("`forgotten`")),
        "{warnings:?}"
    );
}
