//! `tail --metrics-addr`: the Prometheus endpoint against throwaway PostgreSQL, MariaDB and
//! SecantusDB servers, scraped while changes stream and after the walsender / binlog dump
//! thread / server is killed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{server, sql, Proc, TAIL};

/// One scrape: series (name with labels, as printed) → value.
type Scrape = BTreeMap<String, f64>;

/// GET /metrics over plain HTTP/1.1 (no client library needed for one request).
async fn scrape(addr: &str) -> Scrape {
    let mut last_error = String::new();
    for _ in 0..50 {
        match try_scrape(addr).await {
            Ok(s) => return s,
            Err(e) => last_error = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("scraping {addr}: {last_error}");
}

async fn try_scrape(addr: &str) -> Result<Scrape, String> {
    let mut conn = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header end in {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("not 200: {head}"));
    }
    let mut out = Scrape::new();
    for line in body.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("bad sample line {line:?}"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("bad value in {line:?}"))?;
        out.insert(series.to_string(), value);
    }
    Ok(out)
}

/// The sum of every series of the metric `name`.
fn sum(s: &Scrape, name: &str) -> f64 {
    s.iter()
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .map(|(_, v)| v)
        .sum()
}

/// The value of the series of `name` whose labels include every `label="value"` in `labels`.
fn value(s: &Scrape, name: &str, labels: &[&str]) -> Option<f64> {
    s.iter()
        .find(|(series, _)| {
            series.split('{').next() == Some(name) && labels.iter().all(|l| series.contains(l))
        })
        .map(|(_, v)| *v)
}

fn row_lines(lines: &[String], snapshot: bool) -> usize {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .filter(|j| j["kind"] == "row" && j["snapshot"].as_bool().unwrap_or(false) == snapshot)
        .count()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Counters never decrease between scrapes; `rows_total` summed equals the streamed row lines
/// `tail` printed and `snapshot_rows_total` the snapshot's; lag is small once caught up; the
/// snapshot table is `done`; a killed walsender counts a reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_serves_prometheus_metrics() {
    let Some(pg) = server().await else { return };
    sql(
        &pg,
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         CREATE TABLE other (id int PRIMARY KEY);
         CREATE PUBLICATION powersync FOR ALL TABLES;
         INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 7) i;",
    )
    .await;
    let addr = format!("127.0.0.1:{}", free_port());
    let url = pg.url();
    let mut tail = Proc::spawn(
        TAIL,
        &[&url, "--metrics-addr", &addr, "--exit-when-idle", "30"],
    );
    tail.wait_line("snapshot_done", |j| j["kind"] == "snapshot_done")
        .await;

    // Each statement is its own transaction.
    sql(
        &pg,
        "INSERT INTO items SELECT i, 'w' FROM generate_series(100, 119) i;
         UPDATE items SET v = 'u' WHERE id <= 5;
         DELETE FROM items WHERE id IN (6, 7);
         INSERT INTO other VALUES (1), (2), (3);",
    )
    .await;
    tail.wait_line("the last insert", |j| {
        j["kind"] == "row" && j["table"] == "public.other" && j["key"]["id"] == 3
    })
    .await;
    let first = scrape(&addr).await;
    assert_eq!(row_lines(&tail.lines, false), 30);
    assert_eq!(
        sum(&first, "powersync_source_rows_total"),
        30.0,
        "{first:#?}"
    );
    assert_eq!(
        value(
            &first,
            "powersync_source_rows_total",
            &["table=\"public.items\"", "op=\"update\""]
        ),
        Some(5.0),
        "{first:#?}"
    );
    assert_eq!(
        value(
            &first,
            "powersync_source_rows_total",
            &["table=\"public.items\"", "op=\"delete\""]
        ),
        Some(2.0),
        "{first:#?}"
    );
    assert_eq!(
        sum(&first, "powersync_source_snapshot_rows_total"),
        row_lines(&tail.lines, true) as f64
    );
    assert_eq!(sum(&first, "powersync_source_snapshot_rows_total"), 7.0);
    assert!(sum(&first, "powersync_source_transactions_total") >= 4.0);
    assert!(
        sum(&first, "powersync_source_bytes_total") > 0.0,
        "{first:#?}"
    );
    assert_eq!(
        value(
            &first,
            "powersync_source_snapshot_tables",
            &["state=\"done\""]
        ),
        Some(2.0),
        "{first:#?}"
    );
    // The slot's WAL is measured; the test server keeps WAL without limit
    // (max_slot_wal_keep_size = -1), so there is no budget series.
    assert!(
        value(&first, "powersync_source_retained_bytes", &[]).is_some(),
        "{first:#?}"
    );
    assert_eq!(
        value(&first, "powersync_source_history_budget_bytes", &[]),
        None,
        "{first:#?}"
    );
    let lag = value(
        &first,
        "powersync_source_lag_seconds",
        &["source=\"postgres\""],
    )
    .expect("lag_seconds");
    assert!((0.0..5.0).contains(&lag), "lag {lag}");

    // The walsender dies: the stream reconnects and goes on.
    sql(
        &pg,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_replication;",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sql(&pg, "INSERT INTO other VALUES (4), (5);").await;
    tail.wait_line("the insert after the reconnect", |j| {
        j["kind"] == "row" && j["table"] == "public.other" && j["key"]["id"] == 5
    })
    .await;
    let second = scrape(&addr).await;

    assert_monotonic(&first, &second);
    let rows = row_lines(&tail.lines, false);
    assert!(rows >= 32, "{rows} streamed rows");
    assert_eq!(
        sum(&second, "powersync_source_rows_total"),
        rows as f64,
        "{second:#?}"
    );
    let reconnects = sum(&second, "powersync_source_reconnects_total");
    assert!(reconnects >= 1.0, "{second:#?}\nstderr:\n{}", tail.stderr());
    assert!(
        sum(&second, "powersync_source_transactions_total")
            > sum(&first, "powersync_source_transactions_total")
    );
    tail.kill().await;
}

/// An address that cannot be bound is a startup error naming the flag, not a silent run
/// without metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_metrics_address_fails_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let r = Proc::spawn(
        TAIL,
        &["postgres://u@127.0.0.1:1/db", "--metrics-addr", &addr],
    )
    .finish()
    .await;
    assert_eq!(r.code(), 1, "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains("--metrics-addr"), "stderr:\n{}", r.stderr);
}

/// The same against MariaDB: rows by table and op, the reconnect after the binlog dump thread
/// is killed, counters never decreasing.
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_serves_prometheus_metrics_for_mariadb() {
    use powersync_source_testkit::{self as testkit, MariaDbServer};

    testkit::init_tracing();
    let Some(db) = testkit::or_skip(MariaDbServer::builder().start().await) else {
        return;
    };
    db.sql(
        "CREATE TABLE test.t (id BIGINT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO test.t VALUES (1, 'a'), (2, 'b'), (3, 'c');",
    )
    .await
    .expect("schema");
    let addr = format!("127.0.0.1:{}", free_port());
    // The binlog between the stream's position and the head, measured every 200 ms.
    let url = format!("{}?binlog_check_interval=0.2", db.database_url("test"));
    let mut tail = Proc::spawn(
        TAIL,
        &[&url, "--metrics-addr", &addr, "--exit-when-idle", "30"],
    );
    tail.wait_line("snapshot_done", |j| j["kind"] == "snapshot_done")
        .await;
    db.sql(
        "INSERT INTO test.t VALUES (10, 'x'), (11, 'y');
         UPDATE test.t SET v = 'A' WHERE id = 1;
         DELETE FROM test.t WHERE id = 2;",
    )
    .await
    .expect("writes");
    tail.wait_line("the delete", |j| {
        j["kind"] == "row" && j["op"] == "delete" && j["key"]["id"] == 2
    })
    .await;
    let first = scrape(&addr).await;
    assert_eq!(
        sum(&first, "powersync_source_rows_total"),
        4.0,
        "{first:#?}"
    );
    assert_eq!(
        sum(&first, "powersync_source_rows_total"),
        row_lines(&tail.lines, false) as f64
    );
    assert_eq!(
        value(
            &first,
            "powersync_source_rows_total",
            &["source=\"mysql\"", "table=\"test.t\"", "op=\"insert\""]
        ),
        Some(2.0),
        "{first:#?}"
    );
    assert_eq!(sum(&first, "powersync_source_snapshot_rows_total"), 3.0);
    assert!(sum(&first, "powersync_source_transactions_total") >= 3.0);
    assert!(sum(&first, "powersync_source_bytes_total") > 0.0);
    let lag = value(&first, "powersync_source_lag_seconds", &[]).expect("lag_seconds");
    assert!((0.0..5.0).contains(&lag), "lag {lag}");
    // Caught up: (almost) nothing of the binlog is ahead of the stream.
    let mut retained = None;
    for _ in 0..50 {
        retained = value(&scrape(&addr).await, "powersync_source_retained_bytes", &[]);
        if retained.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let retained = retained.expect("powersync_source_retained_bytes");
    assert!(retained < 100_000.0, "retained {retained}");

    // The binlog dump thread dies: the stream reconnects and goes on.
    db.sql(
        "SELECT CONCAT('KILL ', id) INTO @k FROM information_schema.processlist
           WHERE command LIKE 'Binlog Dump%' LIMIT 1;
         PREPARE s FROM @k; EXECUTE s;",
    )
    .await
    .expect("kill the dump thread");
    tokio::time::sleep(Duration::from_millis(500)).await;
    db.sql("INSERT INTO test.t VALUES (12, 'z');")
        .await
        .expect("insert");
    tail.wait_line("the insert after the reconnect", |j| {
        j["kind"] == "row" && j["key"]["id"] == 12
    })
    .await;
    let second = scrape(&addr).await;
    assert_monotonic(&first, &second);
    assert_eq!(
        sum(&second, "powersync_source_rows_total"),
        row_lines(&tail.lines, false) as f64,
        "{second:#?}"
    );
    assert!(
        sum(&second, "powersync_source_reconnects_total") >= 1.0,
        "{second:#?}\nstderr:\n{}",
        tail.stderr()
    );
    tail.kill().await;
}

/// Every counter of `before` is at least as high in `after`.
fn assert_monotonic(before: &Scrape, after: &Scrape) {
    for (series, was) in before {
        let name = series.split('{').next().unwrap_or_default();
        if !name.ends_with("_total") {
            continue;
        }
        let now = after.get(series).copied().unwrap_or(0.0);
        assert!(now >= *was, "{series} went from {was} to {now}");
    }
}

/// The same against SecantusDB (MongoDB wire protocol): rows by collection and op, counters
/// never decreasing, and a reconnect counted once the server is killed and restarted (the
/// double has no way to end one change stream alone).
#[cfg(feature = "mongodb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_serves_prometheus_metrics_for_mongodb() {
    use powersync_source_testkit::{self as testkit, SecantusServer};

    testkit::init_tracing();
    let Some(server) = testkit::or_skip(SecantusServer::start().await) else {
        return;
    };
    let py = |script: &'static str| {
        let server = &server;
        async move { server.pymongo(script).await.expect("pymongo script") }
    };
    py("db.items.insert_many([{'_id': 1, 'v': 'one'}, {'_id': 2, 'v': 'two'}])").await;
    let addr = format!("127.0.0.1:{}", free_port());
    // `post_images=off`: SecantusDB answers `fullDocument: 'required'` with the current
    // document (see the connector's tests).
    // `serverSelectionTimeoutMS`: the driver gives up on the killed server after 2 s, so the
    // outage reaches the stream's reconnect loop instead of waiting inside the driver.
    let url = format!(
        "mongodb://127.0.0.1:{}/test?directConnection=true&post_images=off&serverSelectionTimeoutMS=2000",
        server.port()
    );
    let mut tail = Proc::spawn(
        TAIL,
        &[&url, "--metrics-addr", &addr, "--exit-when-idle", "30"],
    );
    tail.wait_line("snapshot_done", |j| j["kind"] == "snapshot_done")
        .await;
    py("db.items.update_one({'_id': 1}, {'$set': {'v': 'ONE'}})\n\
        db.items.delete_one({'_id': 2})\n\
        db.items.insert_one({'_id': 3, 'v': 'three'})")
    .await;
    tail.wait_line("the insert", |j| j["kind"] == "row" && j["key"]["id"] == 3)
        .await;
    let first = scrape(&addr).await;
    assert_eq!(
        sum(&first, "powersync_source_rows_total"),
        3.0,
        "{first:#?}"
    );
    assert_eq!(
        sum(&first, "powersync_source_rows_total"),
        row_lines(&tail.lines, false) as f64
    );
    assert_eq!(
        value(
            &first,
            "powersync_source_rows_total",
            &[
                "source=\"mongodb\"",
                "table=\"test.items\"",
                "op=\"delete\""
            ]
        ),
        Some(1.0),
        "{first:#?}"
    );
    assert_eq!(sum(&first, "powersync_source_snapshot_rows_total"), 2.0);
    assert!(sum(&first, "powersync_source_transactions_total") >= 3.0);

    py("db.items.insert_one({'_id': 4, 'v': 'four'})").await;
    tail.wait_line("the second insert", |j| {
        j["kind"] == "row" && j["key"]["id"] == 4
    })
    .await;
    let second = scrape(&addr).await;
    assert_monotonic(&first, &second);
    assert_eq!(
        sum(&second, "powersync_source_rows_total"),
        row_lines(&tail.lines, false) as f64,
        "{second:#?}"
    );

    // The server dies: the stream notices (a reconnect is counted), and goes on once it is
    // back.
    server.kill().await.expect("kill the server");
    let mut reconnects = 0.0;
    for _ in 0..60 {
        reconnects = sum(&scrape(&addr).await, "powersync_source_reconnects_total");
        if reconnects >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        reconnects >= 1.0,
        "no reconnect counted\nstderr:\n{}",
        tail.stderr()
    );
    server.restart().await.expect("restart the server");
    py("db.items.insert_one({'_id': 5, 'v': 'five'})").await;
    tail.wait_line("the insert after the restart", |j| {
        j["kind"] == "row" && j["key"]["id"] == 5
    })
    .await;
    let third = scrape(&addr).await;
    assert_monotonic(&second, &third);
    assert_eq!(
        sum(&third, "powersync_source_rows_total"),
        row_lines(&tail.lines, false) as f64,
        "{third:#?}"
    );
    assert!(
        sum(&third, "powersync_source_reconnects_total") >= 1.0,
        "{third:#?}"
    );
    tail.kill().await;
}
