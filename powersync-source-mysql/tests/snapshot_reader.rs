//! The snapshot reader's own connection against MariaDB where the protocol has corners: a row
//! longer than one packet (split in 16 MiB parts), a server error in the middle of a result
//! set, and a query killed while the host is not reading.

use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{ChangeEvent, ChangeSource, StartFrom, TableName, Value};
use powersync_source_mysql::mysql_async::prelude::Queryable;

use crate::workload::MariaWorkload;

/// A 17 MiB LONGBLOB arrives in two packet parts; the row around it must come out whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_longer_than_one_packet_is_read_whole() {
    let Some(w) = MariaWorkload::start().await else {
        return;
    };
    let mut conn = w.conn().await.expect("connect");
    // The server sends no packet larger than max_allowed_packet (16 MiB by default).
    conn.query_drop("SET GLOBAL max_allowed_packet = 64 * 1024 * 1024")
        .await
        .expect("max_allowed_packet");
    drop(conn);
    let mut conn = w.conn().await.expect("connect");
    conn.query_drop(
        "CREATE TABLE test.big_blob (id INT PRIMARY KEY, b LONGBLOB, s VARCHAR(10)); \
         INSERT INTO test.big_blob VALUES (1, 'x', 'before'), \
           (2, REPEAT(CONCAT(CHAR(0), 'powersync-', CHAR(255)), 1600000), 'big'), \
           (3, '', 'after')",
    )
    .await
    .expect("create");
    let source = w.source_for(vec![TableName::new("test", "big_blob")]);
    let mut stream = source.start(StartFrom::Beginning).await.expect("start");
    let mut rows = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while rows.len() < 3 {
            let batch = stream.next().await.expect("open").expect("batch");
            for e in batch.events {
                if let ChangeEvent::Row(r) = e {
                    rows.push(r.new.expect("insert").values().to_vec());
                }
            }
        }
    })
    .await
    .expect("three rows");
    let mut unit = vec![0u8];
    unit.extend_from_slice(b"powersync-");
    unit.push(255);
    let big = unit.repeat(1_600_000);
    assert!(big.len() > 0xFF_FFFF, "the value spans two packet parts");
    assert_eq!(rows[0][2], Value::Text("before".into()));
    match &rows[1][1] {
        Value::Blob(b) => assert!(b == &big, "blob of {} bytes differs", b.len()),
        other => panic!("not a blob: {other:?}"),
    }
    assert_eq!(rows[1][2], Value::Text("big".into()));
    assert_eq!(rows[2][1], Value::Blob(Vec::new()));
    assert_eq!(rows[2][2], Value::Text("after".into()));
}

/// `KILL QUERY` on the snapshot's connection while rows are in flight: the server ends the
/// result set with an ERR packet; the stream fails with the server's code, and never ends as
/// if the table had been read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_in_the_middle_of_a_result_set_fails_the_snapshot() {
    let Some(w) = MariaWorkload::start().await else {
        return;
    };
    let mut conn = w.conn().await.expect("connect");
    conn.query_drop(
        "CREATE TABLE test.killed (id BIGINT PRIMARY KEY, s VARCHAR(200)); \
         INSERT INTO test.killed SELECT seq, REPEAT('k', 200) FROM seq_1_to_200000",
    )
    .await
    .expect("create");
    // One chunk for the whole table: the kill lands inside its result set.
    let url = w
        .url("rep", crate::workload::PASSWORD)
        .replace("chunk_rows=300", "chunk_rows=1000000");
    let source = powersync_source_mysql::MySqlSource::new(
        powersync_source_mysql::MySqlConfig::parse(&url).expect("url"),
    )
    .with_tables(vec![TableName::new("test", "killed")]);
    let mut stream = source.start(StartFrom::Beginning).await.expect("start");
    // Read one batch, then stop reading: the server blocks writing the rest of the rows.
    let first = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("first batch")
        .expect("open")
        .expect("batch");
    assert!(!first.events.is_empty());
    let id: Option<u64> = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let id: Option<u64> = conn
                .query_first(
                    "SELECT ID FROM information_schema.PROCESSLIST \
                     WHERE INFO LIKE 'SELECT%test%killed%' AND ID <> CONNECTION_ID()",
                )
                .await
                .expect("processlist");
            if id.is_some() {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the snapshot query is running");
    conn.query_drop(format!("KILL QUERY {}", id.expect("id")))
        .await
        .expect("kill");
    let mut rows = first
        .events
        .iter()
        .filter(|e| matches!(e, ChangeEvent::Row(_)))
        .count();
    let error = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match stream.next().await {
                Some(Ok(batch)) => {
                    for e in &batch.events {
                        match e {
                            ChangeEvent::Row(_) => rows += 1,
                            ChangeEvent::Snapshot(p) => assert!(
                                !matches!(p, powersync_source_core::SnapshotProgress::Done { .. }),
                                "the snapshot ended as if complete after {rows} rows"
                            ),
                            _ => {}
                        }
                    }
                }
                Some(Err(e)) => return e,
                None => panic!("the stream ended without an error after {rows} rows"),
            }
        }
    })
    .await
    .expect("the stream failed");
    assert!(
        rows < 200_000,
        "{rows} rows: the kill came too late to test anything"
    );
    // ER_QUERY_INTERRUPTED, from the ERR packet that ended the result set.
    assert_eq!(error.code(), Some("1317"), "{error}");
}

/// A user the server admits only over TLS (`REQUIRE SSL`), `ssl-mode=verify_identity` with
/// the test CA in `ssl-ca`: the snapshot (the reader's own connection) and the binlog (the
/// driver's) both arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)]
async fn snapshot_and_streaming_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    if powersync_source_testkit::certs::make(dir.path()).is_none() {
        println!("SKIPPED: MySQL TLS stream test (the openssl command is not installed)");
        return;
    }
    let file = |name: &str| dir.path().join(name).display().to_string();
    let Some(server) = powersync_source_testkit::or_skip(
        powersync_source_testkit::MariaDbServer::builder()
            .setting("ssl-cert", file("server.crt"))
            .setting("ssl-key", file("server.key"))
            .start()
            .await,
    ) else {
        return;
    };
    server
        .sql(
            "CREATE USER 'tls_rep'@'%' IDENTIFIED BY 'Tls-Rep-7' REQUIRE SSL;
             GRANT ALL PRIVILEGES ON *.* TO 'tls_rep'@'%';
             CREATE TABLE test.over_tls (id INT PRIMARY KEY, v VARCHAR(20));
             INSERT INTO test.over_tls VALUES (1, 'snapshot');",
        )
        .await
        .expect("setup");
    let url = format!(
        "mariadb://tls_rep:Tls-Rep-7@127.0.0.1:{}/test?ssl-mode=verify_identity&ssl-ca={}&server_id=4711",
        server.port(),
        file("ca.crt")
    );
    let source = powersync_source_mysql::MySqlSource::new(
        powersync_source_mysql::MySqlConfig::parse(&url).expect("url"),
    )
    .with_tables(vec![TableName::new("test", "over_tls")]);
    let mut stream = source.start(StartFrom::Beginning).await.expect("start");
    let mut seen = Vec::new();
    let mut inserted = false;
    tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < 2 {
            let batch = stream.next().await.expect("open").expect("batch");
            for e in batch.events {
                match e {
                    ChangeEvent::Row(r) => {
                        seen.push((r.snapshot, r.new.expect("insert").values()[1].clone()))
                    }
                    ChangeEvent::Snapshot(powersync_source_core::SnapshotProgress::Done {
                        ..
                    }) if !inserted => {
                        inserted = true;
                        server
                            .sql("INSERT INTO test.over_tls VALUES (2, 'binlog')")
                            .await
                            .expect("insert");
                    }
                    _ => {}
                }
            }
        }
    })
    .await
    .expect("both rows");
    assert_eq!(
        seen,
        vec![
            (true, Value::Text("snapshot".into())),
            (false, Value::Text("binlog".into()))
        ]
    );
}
