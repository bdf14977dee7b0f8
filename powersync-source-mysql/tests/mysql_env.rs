//! The suite against a real MySQL 8 (GTID sets, `COM_BINLOG_DUMP_GTID`, v2 row events, binary
//! JSON, `caching_sha2_password`), run only when `MYSQL_TEST_URL` names one, e.g.
//! `mysql://root:secret@127.0.0.1:3306/test` (a user with replication rights on a server with
//! `gtid_mode=ON`, `binlog_format=ROW`, `binlog_row_image=FULL`). The database must exist; the
//! test creates and drops its own tables.

use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{ChangeEvent, ChangeSource, ErrorKind, StartFrom, TableName, Value};
use powersync_source_mysql::mysql_async::prelude::Queryable;
use powersync_source_mysql::mysql_async::{Conn, Opts};
use powersync_source_mysql::{MySqlConfig, MySqlSource};
use powersync_source_testkit::conformance::{self, drive, Oracle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)]
async fn real_mysql() {
    let Some(url) = std::env::var("MYSQL_TEST_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("SKIPPED: real MySQL suite (MYSQL_TEST_URL is not set)");
        return;
    };
    let config = MySqlConfig::parse(&url).expect("MYSQL_TEST_URL");
    let plain_url = url.replacen("mariadb://", "mysql://", 1);
    let plain_url = plain_url.split('?').next().unwrap_or_default().to_owned();
    let mut conn = Conn::new(Opts::from_url(&plain_url).expect("url"))
        .await
        .expect("connect");
    let table = format!("powersync_it_{}", std::process::id());
    conn.query_drop(format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id BIGINT PRIMARY KEY, v TEXT, j JSON, u BIGINT UNSIGNED)"
    ))
    .await
    .expect("create table");
    conn.query_drop(format!(
        "INSERT INTO {table} VALUES (1, 'a', '{{\"k\": [1, true, null, \"s\"]}}', 18446744073709551615)"
    ))
    .await
    .expect("insert");

    let source =
        MySqlSource::new(config.clone()).with_tables(vec![TableName::new("", table.clone())]);
    let report = source.check().await.expect("check");
    assert!(report.is_ready(), "{:?}", report.problems);
    let mut oracle = Oracle::default();
    let mut stream = conformance::start_through_snapshot(&source, &mut oracle)
        .await
        .expect("snapshot");
    let checkpoint = oracle.last_checkpoint.clone().expect("checkpoint");
    assert!(
        checkpoint.as_str().contains(":m:"),
        "MySQL checkpoints carry a GTID set: {checkpoint}"
    );
    conn.query_drop(format!(
        "INSERT INTO {table} VALUES (2, 'b', '{{\"k\": [1, true, null, \"s\"]}}', 1); UPDATE {table} SET v = 'c' WHERE id = 1"
    ))
    .await
    .expect("dml");
    let marker = source.write_checkpoint().await.expect("write checkpoint");
    let mut json = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut done = false;
    while !done {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("timeout")
            .expect("end")
            .expect("error");
        for e in batch.events {
            match e {
                ChangeEvent::Row(r) => {
                    let i = r.table.column_index("j").expect("j");
                    if let Some(Value::Text(t)) = r.new.as_ref().and_then(|n| n.get(i)) {
                        json.push(t.clone());
                    }
                }
                ChangeEvent::CheckpointObserved(c) if c == marker => done = true,
                _ => {}
            }
        }
    }
    // Binary JSON from the binlog reads like the server's own text.
    let text: String = conn
        .query_first(format!("SELECT CAST(j AS CHAR) FROM {table} WHERE id = 2"))
        .await
        .expect("select")
        .expect("row");
    assert!(json.iter().all(|j| j == &text), "{json:?} vs {text}");
    drop(stream);

    // Resume by GTID set repeats nothing.
    let mut stream = source
        .start(StartFrom::Checkpoint(checkpoint))
        .await
        .expect("resume");
    let mut oracle2 = Oracle::default();
    let _ = drive(&mut stream, &mut oracle2, Duration::from_secs(10), |o| {
        o.commits >= 2
    })
    .await;
    assert!(
        oracle2.commits >= 2,
        "the resumed stream did not replay the two transactions"
    );

    // A wrong password is Auth.
    let bad = MySqlSource::new(config.with_password("definitely-wrong"));
    let e = bad.check().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    conn.query_drop(format!("DROP TABLE {table}")).await.ok();
}
