//! The binlog retention gauge: bytes of binlog from the stream's position to the head,
//! measured on a separate connection, grow while the host does not read and shrink once it
//! has caught up.

use std::time::{Duration, Instant};

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, ChangeStream, SnapshotProgress, StartFrom, TableName, Value,
};
use powersync_source_mysql::mysql_async::prelude::Queryable;
use powersync_source_mysql::{MySqlConfig, MySqlSource};

use crate::workload::{MariaWorkload, PASSWORD};

/// Reads batches until `until` says stop or `limit` passes; `true` when it stopped.
async fn read_until(
    stream: &mut ChangeStream,
    limit: Duration,
    mut until: impl FnMut(&ChangeEvent) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(batch)) => {
                if batch.expect("a batch").events.iter().any(&mut until) {
                    return true;
                }
            }
            Ok(None) => panic!("the stream ended"),
            Err(_) => return false,
        }
    }
    false
}

fn retained(stream: &ChangeStream) -> u64 {
    stream.stats().snapshot().retained_bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_bytes_grow_while_the_host_lags() {
    let Some(w) = MariaWorkload::start().await else {
        return;
    };
    let mut conn = w.conn().await.expect("connect");
    conn.query_drop(
        "CREATE TABLE test.retained (id INT PRIMARY KEY, v LONGTEXT); \
         INSERT INTO test.retained VALUES (1, 'a'), (2, 'b')",
    )
    .await
    .expect("create");
    // Small batches so that a host that stops reading stops the stream soon after.
    let url = w
        .url("rep", PASSWORD)
        .replace("batch_events=1000", "batch_events=10")
        + "&binlog_check_interval=0.2";
    let source = MySqlSource::new(MySqlConfig::parse(&url).expect("url"))
        .with_tables(vec![TableName::new("test", "retained")]);
    let mut stream = source.start(StartFrom::Beginning).await.expect("start");
    assert!(
        read_until(&mut stream, Duration::from_secs(30), |e| matches!(
            e,
            ChangeEvent::Snapshot(SnapshotProgress::Done { .. })
        ))
        .await,
        "the snapshot did not end"
    );

    // The host stops reading while 4 MB of transactions are written.
    let big = "x".repeat(20_000);
    for id in 10..210 {
        conn.exec_drop(
            "INSERT INTO test.retained VALUES (?, ?)",
            (id, big.as_str()),
        )
        .await
        .expect("insert");
    }
    let lagging = Instant::now();
    let mut high = 0;
    while lagging.elapsed() < Duration::from_secs(10) {
        high = retained(&stream);
        if high > 2_000_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        high > 2_000_000,
        "retained bytes {high} while the host lags 4 MB behind"
    );

    // Caught up: the gauge comes down to (about) nothing.
    let last = |e: &ChangeEvent| match e {
        ChangeEvent::Row(r) => r
            .new
            .as_ref()
            .is_some_and(|row| row.get(0) == Some(&Value::Integer(209))),
        _ => false,
    };
    assert!(
        read_until(&mut stream, Duration::from_secs(30), last).await,
        "the last insert did not arrive"
    );
    let caught_up = Instant::now();
    let mut low = high;
    while caught_up.elapsed() < Duration::from_secs(10) {
        // Keep reading (heartbeats) so the stream's position follows the head.
        read_until(&mut stream, Duration::from_millis(200), |_| false).await;
        low = retained(&stream);
        if low < 100_000 {
            break;
        }
    }
    assert!(
        low < 100_000,
        "retained bytes {low} once caught up (were {high})"
    );
}
