//! `tail`, `mirror` and `setup` against a throwaway MariaDB with a GTID row binlog.

use std::time::Duration;

use powersync_source_testkit::{self as testkit, MariaDbServer};

use crate::common::{run, sqlite_rows, wait_position, Proc, MIRROR, TAIL};

const SETUP: &str = env!("CARGO_BIN_EXE_setup");

async fn mariadb(builder: testkit::MariaDbBuilder) -> Option<MariaDbServer> {
    testkit::init_tracing();
    testkit::or_skip(builder.start().await)
}

async fn sql(db: &MariaDbServer, statements: &str) -> String {
    db.sql(statements).await.expect("MariaDB statement")
}

/// `id|v|n` of every row, as the `mariadb` client prints them, in id order.
async fn source_rows(db: &MariaDbServer) -> Vec<Vec<String>> {
    sql(db, "SELECT id, v, n FROM test.t ORDER BY id")
        .await
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("id"))
        .map(|l| {
            let mut cols = l.split('\t');
            vec![
                format!("int:{}", cols.next().unwrap_or_default()),
                format!("text:{}", cols.next().unwrap_or_default()),
                format!("text:{}", cols.next().unwrap_or_default()),
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_snapshot_and_binlog_changes() {
    let Some(db) = mariadb(MariaDbServer::builder()).await else {
        return;
    };
    sql(
        &db,
        "CREATE TABLE test.t (id BIGINT PRIMARY KEY, v VARCHAR(20), n DECIMAL(8,2), d DATETIME(3));
         INSERT INTO test.t VALUES (1, 'one', 1.50, '2024-01-02 03:04:05.678'), (2, 'two', NULL, NULL);",
    )
    .await;
    let url = db.database_url("test");
    let mut tail = Proc::spawn(TAIL, &[&url, "--exit-when-idle", "2"]);
    tail.wait_line("snapshot_done", |j| j["kind"] == "snapshot_done")
        .await;
    sql(
        &db,
        "UPDATE test.t SET v = 'ONE', n = 2.25 WHERE id = 1; DELETE FROM test.t WHERE id = 2;
         INSERT INTO test.t VALUES (3, 'three', 3.00, '1999-12-31 23:59:59.000');",
    )
    .await;
    tail.wait_line("the insert", |j| j["kind"] == "row" && j["key"]["id"] == 3)
        .await;
    let done = tail.finish().await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);
    let lines = done.json();
    let rows: Vec<_> = lines
        .iter()
        .filter(|j| j["kind"] == "row" && j["table"] == "test.t")
        .collect();
    assert_eq!(rows.len(), 5, "{lines:#?}");
    assert_eq!(rows[0]["snapshot"], true);
    assert_eq!(rows[0]["new"]["n"], "1.50");
    assert_eq!(rows[0]["new"]["d"], "2024-01-02T03:04:05.678");
    let update = rows[2];
    assert_eq!(update["op"], "update", "{update}");
    assert_eq!(update["snapshot"], false);
    assert_eq!(update["new"]["v"], "ONE");
    assert_eq!(update["new"]["n"], "2.25");
    assert_eq!(rows[3]["op"], "delete");
    assert_eq!(rows[3]["key"]["id"], 2);
    assert_eq!(rows[4]["new"]["d"], "1999-12-31T23:59:59.000");
    let commits: Vec<_> = lines.iter().filter(|j| j["kind"] == "commit").collect();
    assert!(!commits.is_empty());
    for c in commits {
        let cp = c["checkpoint"].as_str().unwrap_or_default();
        assert!(cp.starts_with("mysql:v1:"), "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_equals_the_source_after_kills_under_writes() {
    let Some(db) = mariadb(MariaDbServer::builder()).await else {
        return;
    };
    let mut seed = String::from(
        "CREATE TABLE test.t (id BIGINT PRIMARY KEY, v VARCHAR(40), n DECIMAL(10,2));\n",
    );
    for chunk in 0..4 {
        seed.push_str("INSERT INTO test.t VALUES ");
        let values: Vec<String> = (chunk * 500 + 1..=chunk * 500 + 500)
            .map(|i| format!("({i}, 'v{i}', {}.{:02})", i % 97, i % 100))
            .collect();
        seed.push_str(&values.join(", "));
        seed.push_str(";\n");
    }
    sql(&db, &seed).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mirror.db");
    let file_arg = file.to_str().unwrap().to_string();
    let url = format!("{}?chunk_rows=300", db.database_url("test"));

    // Killed twice: once mid-snapshot, once mid-stream, with writes in between.
    let mut mirror = Proc::spawn(MIRROR, &[&url, &file_arg]);
    wait_position(&mut mirror, &file, |p| {
        p.starts_with("snapshot:") || p.starts_with("mysql:")
    })
    .await;
    mirror.kill().await;
    for round in 0..3 {
        sql(
            &db,
            &format!(
                "UPDATE test.t SET v = 'u{round}' WHERE id % 7 = {round};
                 DELETE FROM test.t WHERE id % 11 = {round};
                 INSERT INTO test.t VALUES ({}, 'new', 1.00);",
                10_000 + round
            ),
        )
        .await;
    }
    let mut mirror = Proc::spawn(MIRROR, &[&url, &file_arg]);
    wait_position(&mut mirror, &file, |p| p.starts_with("mysql:")).await;
    sql(
        &db,
        "UPDATE test.t SET n = n + 1 WHERE id < 100; INSERT INTO test.t VALUES (20000, 'late', 0.01);",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    mirror.kill().await;
    sql(
        &db,
        "DELETE FROM test.t WHERE id BETWEEN 200 AND 260; UPDATE test.t SET v = NULL WHERE id = 5;",
    )
    .await;
    let done = run(MIRROR, &[&url, &file_arg, "--exit-when-idle", "2"]).await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);
    let mirrored = sqlite_rows(
        &file,
        "SELECT id, COALESCE(v, 'NULL'), n FROM t ORDER BY id",
    );
    let source = source_rows(&db).await;
    assert_eq!(mirrored.len(), source.len());
    assert_eq!(mirrored, source);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_reports_then_applies_and_the_user_can_replicate() {
    // Without a binlog: the restart step is reported, the SQL steps still run.
    let Some(off) = mariadb(MariaDbServer::builder().arg("--skip-log-bin")).await else {
        return;
    };
    let url = off.database_url("test");
    let done = run(SETUP, &[&url]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 3, "{out}\n{}", done.stderr);
    assert!(out.contains("the binary log is off (log_bin)"), "{out}");
    assert!(out.contains("log_bin = binlog"), "{out}");
    assert!(out.contains("restart needed"), "{out}");
    assert!(out.contains("CREATE USER 'powersync'@'%'"), "{out}");
    let done = run(SETUP, &[&url, "--apply"]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 3, "{out}\n{}", done.stderr);
    assert!(out.contains("-- password for powersync: "), "{out}");
    assert!(out.contains("still to do:"), "{out}");
    drop(off);

    // With the binlog on: --apply makes it ready, a second run changes nothing, and the
    // printed password lets the connector replicate.
    let Some(db) = mariadb(MariaDbServer::builder().setting("binlog_format", "MIXED")).await else {
        return;
    };
    sql(
        &db,
        "CREATE TABLE test.items (id INT PRIMARY KEY, v TEXT); INSERT INTO test.items VALUES (1, 'a');",
    )
    .await;
    let url = db.database_url("test");
    let done = run(SETUP, &[&url]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 3, "{out}\n{}", done.stderr);
    assert!(out.contains("SET GLOBAL binlog_format = 'ROW';"), "{out}");
    let done = run(SETUP, &[&url, "--apply"]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 0, "{out}\n{}", done.stderr);
    let password = done
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("-- password for powersync: "))
        .expect("the password line")
        .to_string();
    let done = run(SETUP, &[&url, "--apply"]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 0, "{out}\n{}", done.stderr);
    assert!(out.contains("-- nothing to change"), "{out}");
    assert!(!out.contains("password for"), "{out}");

    let user_url = format!("mysql://powersync:{password}@127.0.0.1:{}/test", db.port());
    let done = run(TAIL, &[&user_url, "--exit-when-idle", "1"]).await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);
    assert!(
        done.json()
            .iter()
            .any(|j| j["kind"] == "row" && j["table"] == "test.items"),
        "{:?}",
        done.lines
    );
}

/// `id|v` rows of `db.table` in `sqlite_rows`' spelling, ordered by id.
async fn pairs_of(
    conn: &mut powersync_source_mysql::mysql_async::Conn,
    table: &str,
) -> Vec<Vec<String>> {
    use powersync_source_mysql::mysql_async::prelude::Queryable;
    let rows: Vec<(i64, String)> = conn
        .query(format!("SELECT id, v FROM {table} ORDER BY id"))
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, v)| vec![format!("int:{id}"), format!("text:{v}")])
        .collect()
}

/// Transactions spanning both schemas write pairs (id ≥ 1 000 000 in both); a mirror that
/// applied one half of such a transaction without the other breaks this.
fn assert_pairs_whole(file: &std::path::Path, when: &str) {
    let q = "SELECT id, v FROM orders WHERE id >= 1000000 ORDER BY id";
    let orders = sqlite_rows(file, q);
    let invoices = sqlite_rows(file, &q.replace("orders", "invoices"));
    assert_eq!(
        orders, invoices,
        "{when}: a cross-database transaction applied in part"
    );
}

/// Two schemas in one source (`?databases=shop,billing`, no database in the URL): one binlog
/// stream and one checkpoint; writes interleaved across both, single and in transactions that
/// span both; `mirror` killed twice under the workload. The mirror equals both schemas' tables,
/// and every state the SQLite file is left in after the snapshot holds both halves of each
/// transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_of_two_databases_survives_kills_under_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use powersync_source_mysql::mysql_async::prelude::Queryable;
    use powersync_source_mysql::mysql_async::{Conn, Opts};

    let Some(db) = mariadb(MariaDbServer::builder()).await else {
        return;
    };
    let mut seed = String::from(
        "CREATE DATABASE shop; CREATE DATABASE billing;
         CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL);
         CREATE TABLE billing.invoices (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL);
         CREATE TABLE shop.carts (id BIGINT PRIMARY KEY);\n",
    );
    for (table, p) in [("shop.orders", "o"), ("billing.invoices", "i")] {
        let values: Vec<String> = (0..100).map(|i| format!("({i}, '{p}{i}')")).collect();
        seed.push_str(&format!(
            "INSERT INTO {table} VALUES {};\n",
            values.join(", ")
        ));
    }
    sql(&db, &seed).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mirror.db");
    let file_arg = file.to_str().unwrap().to_string();
    let url = format!("{}?databases=shop,billing", db.url());
    let args = [url.as_str(), file_arg.as_str()];
    // The snapshot first, on a quiet server; then only whole transactions may show.
    let done = run(MIRROR, &[&url, &file_arg, "--exit-when-idle", "1"]).await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);
    let tables = sqlite_rows(
        &file,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name",
    );
    assert_eq!(
        tables,
        vec![
            vec!["text:carts"],
            vec!["text:invoices"],
            vec!["text:orders"]
        ]
    );

    let stop = Arc::new(AtomicBool::new(false));
    let workload = {
        let stop = stop.clone();
        let mut conn = Conn::new(Opts::from_url(&db.url()).unwrap()).await.unwrap();
        tokio::spawn(async move {
            let mut i: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let mut batch = format!(
                    "UPDATE shop.orders SET v = 'o{i}' WHERE id = {};
                     INSERT INTO billing.invoices VALUES ({}, 'i{i}');",
                    i % 100,
                    1000 + i
                );
                if i % 7 == 0 {
                    batch.push_str(&format!(
                        "DELETE FROM billing.invoices WHERE id = {};",
                        1000 + i - 7
                    ));
                }
                // A transaction over both schemas: a pair inserted, an older pair changed.
                let id = 1_000_000 + i;
                batch.push_str(&format!(
                    "START TRANSACTION;
                     INSERT INTO shop.orders VALUES ({id}, 't{i}');
                     INSERT INTO billing.invoices VALUES ({id}, 't{i}');
                     UPDATE shop.orders SET v = 't{i}-again' WHERE id = {};
                     UPDATE billing.invoices SET v = 't{i}-again' WHERE id = {};
                     COMMIT;",
                    id - 3,
                    id - 3
                ));
                conn.query_drop(batch).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            i
        })
    };
    for kill in 1..=2 {
        let mirror = Proc::spawn(MIRROR, &args);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        mirror.kill().await;
        assert_pairs_whole(&file, &format!("after kill {kill}"));
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = workload.await.unwrap();
    assert!(rounds > 10, "{rounds} rounds");
    let done = run(MIRROR, &[&url, &file_arg, "--exit-when-idle", "2"]).await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);
    assert_pairs_whole(&file, "at the end");
    let mut conn = Conn::new(Opts::from_url(&db.url()).unwrap()).await.unwrap();
    assert_eq!(
        sqlite_rows(&file, "SELECT id, v FROM orders ORDER BY id"),
        pairs_of(&mut conn, "shop.orders").await
    );
    assert_eq!(
        sqlite_rows(&file, "SELECT id, v FROM invoices ORDER BY id"),
        pairs_of(&mut conn, "billing.invoices").await
    );
}

/// `setup` for two schemas (`?databases=shop,billing`): SELECT on each, the checkpoint table in
/// the first; after `--apply` the new user passes `check()` for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_for_two_databases_grants_select_on_each() {
    let Some(db) = mariadb(MariaDbServer::builder()).await else {
        return;
    };
    sql(
        &db,
        "CREATE DATABASE shop; CREATE DATABASE billing;
         CREATE TABLE shop.orders (id INT PRIMARY KEY); CREATE TABLE billing.invoices (id INT PRIMARY KEY);",
    )
    .await;
    let url = format!("{}?databases=shop,billing", db.url());
    let done = run(SETUP, &[&url]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 3, "{out}\n{}", done.stderr);
    assert!(out.contains("database shop, billing as"), "{out}");
    assert!(
        out.contains("GRANT SELECT ON `shop`.* TO 'powersync'@'%';"),
        "{out}"
    );
    assert!(
        out.contains("GRANT SELECT ON `billing`.* TO 'powersync'@'%';"),
        "{out}"
    );
    assert!(
        out.contains("CREATE TABLE IF NOT EXISTS `shop`.`_powersync_checkpoints`"),
        "{out}"
    );
    let done = run(SETUP, &[&url, "--apply"]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 0, "{out}\n{}", done.stderr);
    let done = run(SETUP, &[&url]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 0, "{out}\n{}", done.stderr);
    assert!(out.contains("nothing to change"), "{out}");
}
