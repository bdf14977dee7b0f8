//! The connector on the core stream runtime: the retry budget is per outage (a stream healthy
//! for longer than `give_up_after` survives a server restart), a panic in the stream task
//! reaches the host as an `Internal` error, and the shared stream options are honoured.

use std::time::{Duration, Instant};

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, ErrorKind, RetryPolicy, StartFrom, StreamOptions, TableName,
};
use powersync_source_mysql::{MySqlConfig, MySqlSource};
use powersync_source_testkit::conformance::{self, drive, Dml, Oracle, Workload};

use crate::workload::{MariaWorkload, PASSWORD};

fn inserts(from: i64, n: i64) -> Vec<Dml> {
    (from..from + n)
        .map(|id| Dml::Insert {
            id,
            v: format!("v{id}"),
        })
        .collect()
}

/// A source over the workload's current table with these stream options.
fn source(w: &MariaWorkload, options: StreamOptions) -> MySqlSource {
    MySqlSource::new(MySqlConfig::parse(&w.url("rep", PASSWORD)).unwrap())
        .with_stream_options(options.with_tables(vec![TableName::new("test", w.table())]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_longer_than_give_up_after_survives_a_restart() {
    powersync_source_testkit::init_tracing();
    let Some(w) = MariaWorkload::start().await else {
        return;
    };
    w.reset().await.unwrap();
    w.apply(&inserts(0, 20)).await.unwrap();
    let give_up_after = Duration::from_secs(3);
    let source = source(
        &w,
        StreamOptions::default().with_retry(RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            give_up_after: Some(give_up_after),
            ..RetryPolicy::default()
        }),
    );
    let started = Instant::now();
    let mut oracle = Oracle::strict();
    let mut stream = conformance::start_through_snapshot(&source, &mut oracle)
        .await
        .unwrap();
    // Healthy for longer than the whole budget, with traffic.
    let mut round = 0;
    while started.elapsed() < give_up_after + Duration::from_secs(1) {
        w.apply(&inserts(100 + round * 5, 5)).await.unwrap();
        drive(&mut stream, &mut oracle, Duration::from_millis(500), |_| {
            false
        })
        .await
        .ok();
        round += 1;
    }
    let commits = oracle.commits;
    assert!(commits >= 1, "no transaction streamed while healthy");

    // Written just before the server goes away (maybe not streamed yet), and while it is back.
    w.apply(&inserts(1000, 10)).await.unwrap();
    let restart = Instant::now();
    w.kill_and_restart().await.unwrap();
    let restart = restart.elapsed();
    assert!(
        restart < give_up_after,
        "the restart took {restart:?}, longer than the budget the test means to use"
    );
    for r in 0..3 {
        w.apply(&inserts(2000 + r * 10, 10)).await.unwrap();
    }
    // The strict oracle fails on a duplicate insert; converge compares with the table.
    conformance::converge(&w, &mut stream, &mut oracle)
        .await
        .unwrap();
    assert!(oracle.commits >= commits + 4, "{} commits", oracle.commits);
    assert!(
        stream.stats().snapshot().reconnects >= 1,
        "no reconnect counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_stream_task_is_an_internal_error() {
    powersync_source_testkit::init_tracing();
    let Some(w) = MariaWorkload::start().await else {
        return;
    };
    w.reset().await.unwrap();
    w.apply(&inserts(0, 20)).await.unwrap();
    let source = source(&w, StreamOptions::default().with_panic_after_rows(5));
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut rows = 0;
    let error = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.next().await {
                Some(Ok(batch)) => {
                    rows += batch
                        .events
                        .iter()
                        .filter(|e| matches!(e, ChangeEvent::Row(_)))
                        .count()
                }
                Some(Err(e)) => return e,
                None => panic!("the stream ended without an error after {rows} rows"),
            }
        }
    })
    .await
    .expect("no error within 30 s");
    assert_eq!(error.kind(), ErrorKind::Internal, "{error}");
    assert!(rows <= 5, "{rows} rows before the panic");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream did not end after its final error")
            .is_none(),
        "events after the final error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_options_and_error_codes() {
    let Some(w) = MariaWorkload::start().await else {
        return;
    };
    w.reset().await.unwrap();
    w.apply(&inserts(0, 40)).await.unwrap();
    // The URL without `batch_events`: the stream option sets the batch size.
    let url = format!(
        "mariadb://rep:{PASSWORD}@127.0.0.1:{}/test?server_id=6001&heartbeat=1",
        w.server.port()
    );
    let source = MySqlSource::new(MySqlConfig::parse(&url).unwrap()).with_stream_options(
        StreamOptions::default()
            .with_tables(vec![TableName::new("", w.table())])
            .with_batch_events(7),
    );
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut rows = 0;
    let mut done = false;
    while !done {
        let batch = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(batch.events.len() <= 7, "{} events", batch.events.len());
        for e in &batch.events {
            match e {
                ChangeEvent::Row(_) => rows += 1,
                ChangeEvent::Snapshot(powersync_source_core::SnapshotProgress::Done { .. }) => {
                    done = true
                }
                _ => {}
            }
        }
    }
    assert_eq!(rows, 40);
    drop(stream);

    // A silence timeout not above the heartbeat is refused before anything starts.
    let e = source
        .clone()
        .with_stream_options(StreamOptions::default().with_silence_timeout(Duration::from_secs(1)))
        .start(StartFrom::Beginning)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");

    // Server errors carry the MySQL error number.
    let e = w.source_with_wrong_password().check().await.unwrap_err();
    assert_eq!((e.kind(), e.code()), (ErrorKind::Auth, Some("1045")), "{e}");
}
