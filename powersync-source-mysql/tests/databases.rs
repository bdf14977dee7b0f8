//! Several schemas in one source: `?databases=`, `database.table` names across schemas,
//! `check()` asking for SELECT on every schema read, and one checkpoint for all.

use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{ChangeEvent, ChangeSource, ErrorKind, StartFrom, TableName};
use powersync_source_mysql::{MySqlConfig, MySqlSource};
use powersync_source_testkit::MariaDbServer;

const PASSWORD: &str = "two-Secret-37";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_one_stream_over_two_schemas() {
    let Some(server) = powersync_source_testkit::or_skip(MariaDbServer::start().await) else {
        return;
    };
    server
        .sql(&format!(
            "CREATE DATABASE shop; CREATE DATABASE billing;
             CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, v TEXT);
             CREATE TABLE billing.invoices (id BIGINT PRIMARY KEY, v TEXT);
             INSERT INTO shop.orders VALUES (1, 'o1');
             INSERT INTO billing.invoices VALUES (1, 'i1');
             CREATE USER 'half'@'%' IDENTIFIED BY '{PASSWORD}';
             GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'half'@'%';
             GRANT SELECT ON shop.* TO 'half'@'%';"
        ))
        .await
        .expect("setup");
    let port = server.port();

    // SELECT on one schema of two: check() names the other.
    let half = MySqlSource::new(
        MySqlConfig::parse(&format!(
            "mysql://half:{PASSWORD}@127.0.0.1:{port}/?databases=shop,billing"
        ))
        .unwrap(),
    );
    let report = half.check().await.unwrap();
    let select: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.setting == "SELECT")
        .collect();
    assert_eq!(select.len(), 1, "{:?}", report.problems);
    assert!(select[0].what.contains("`billing`"), "{}", select[0].what);

    // A table without a schema and no default one is a configuration error.
    let e = MySqlSource::new(
        MySqlConfig::parse(&format!(
            "mysql://root@127.0.0.1:{port}/?databases=shop,billing"
        ))
        .unwrap(),
    )
    .with_tables(vec![TableName::new("", "orders")])
    .check()
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");

    // Whole schemas through `databases=`: both snapshotted, a transaction over both is one
    // begin/commit, markers go to the first schema.
    let source = MySqlSource::new(
        MySqlConfig::parse(&format!(
            "mysql://root@127.0.0.1:{port}/?databases=shop,billing"
        ))
        .unwrap(),
    );
    assert!(source.check().await.unwrap().is_ready());
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    server
        .sql(
            "START TRANSACTION;
             INSERT INTO billing.invoices VALUES (2, 'i2');
             UPDATE shop.orders SET v = 'o1-u' WHERE id = 1;
             COMMIT;",
        )
        .await
        .unwrap();
    let marker = source.write_checkpoint().await.unwrap();
    let mut snapshot_tables = Vec::new();
    let mut transactions: Vec<Vec<String>> = Vec::new();
    let mut open: Option<Vec<String>> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    'read: loop {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("timeout")
            .expect("end")
            .expect("error");
        for e in batch.events {
            match e {
                ChangeEvent::Row(r) if r.snapshot => snapshot_tables.push(r.table.name.to_string()),
                ChangeEvent::Begin(_) => open = Some(Vec::new()),
                ChangeEvent::Row(r) => open
                    .as_mut()
                    .expect("a row inside a transaction")
                    .push(r.table.name.to_string()),
                ChangeEvent::Commit(_) => {
                    let t = open.take().expect("a begin");
                    if !t.is_empty() {
                        transactions.push(t);
                    }
                }
                ChangeEvent::CheckpointObserved(c) if c == marker => break 'read,
                _ => {}
            }
        }
    }
    snapshot_tables.sort();
    assert_eq!(snapshot_tables, ["billing.invoices", "shop.orders"]);
    assert_eq!(
        transactions,
        vec![vec![
            "billing.invoices".to_string(),
            "shop.orders".to_string()
        ]]
    );
    let marker_table = server
        .sql("SELECT COUNT(*) FROM shop._powersync_checkpoints")
        .await
        .unwrap();
    assert!(marker_table.contains('1'), "{marker_table}");
    drop(stream);

    // Named tables only, no database in the URL: the markers go to the first table's
    // database, and the stream observes them.
    let named =
        MySqlSource::new(MySqlConfig::parse(&format!("mysql://root@127.0.0.1:{port}/")).unwrap())
            .with_tables(vec![
                TableName::new("billing", "invoices"),
                TableName::new("shop", "orders"),
            ]);
    let mut stream = named.start(StartFrom::Beginning).await.unwrap();
    let marker = named.write_checkpoint().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    'observe: loop {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("timeout")
            .expect("end")
            .expect("error");
        for e in batch.events {
            if matches!(&e, ChangeEvent::CheckpointObserved(c) if *c == marker) {
                break 'observe;
            }
        }
    }
    let marker_table = server
        .sql("SELECT COUNT(*) FROM billing._powersync_checkpoints")
        .await
        .unwrap();
    assert!(marker_table.contains('1'), "{marker_table}");
    drop(stream);
    drop(server);
    binlog_filters_hiding_one_schema_of_two().await;
}

/// A binlog filter that logs one schema of two: `check()` names the hidden one only. (Called
/// from the test above: servers installed at the same moment in one process can collide in
/// `mariadb-install-db`'s temporary tables.)
async fn binlog_filters_hiding_one_schema_of_two() {
    let Some(server) = powersync_source_testkit::or_skip(
        MariaDbServer::builder()
            .arg("--binlog-do-db=shop")
            .start()
            .await,
    ) else {
        return;
    };
    server
        .sql("CREATE DATABASE shop; CREATE DATABASE billing;")
        .await
        .expect("setup");
    let source = MySqlSource::new(
        MySqlConfig::parse(&format!(
            "mysql://root@127.0.0.1:{}/?databases=shop,billing",
            server.port()
        ))
        .unwrap(),
    );
    let report = source.check().await.unwrap();
    let filters: Vec<&str> = report
        .problems
        .iter()
        .filter(|p| p.setting == "binlog-do-db")
        .map(|p| p.what.as_str())
        .collect();
    assert_eq!(filters.len(), 1, "{:?}", report.problems);
    assert!(filters[0].contains("`billing`"), "{}", filters[0]);
}
