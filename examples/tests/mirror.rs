//! `mirror`: equal to the source after a SIGKILL under writes; schema changes; truncates;
//! exit statuses.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use powersync_source_testkit::PostgresServer;
use rand::{Rng, SeedableRng};

use crate::common::{
    client, run, server, sql, sqlite_columns, sqlite_rows, wait_position, Proc, MIRROR,
};

/// The source's rows rendered like `common::sqlite_rows` renders SQLite's.
async fn source_rows(pg: &PostgresServer, query: &str, kinds: &[&str]) -> Vec<Vec<String>> {
    let c = client(pg).await;
    let msgs = c.simple_query(query).await.expect("source query");
    msgs.into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                kinds
                    .iter()
                    .enumerate()
                    .map(|(i, kind)| match r.get(i) {
                        None => "null".to_string(),
                        Some(v) => match *kind {
                            "real" => format!("real:{:?}", v.parse::<f64>().unwrap()),
                            other => format!("{other}:{v}"),
                        },
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equals_the_source_after_a_kill_under_writes() {
    let Some(pg) = server().await else { return };
    sql(
        &pg,
        "CREATE TABLE t (id bigint PRIMARY KEY, v text, n int, f float8, big text, b bytea, d date);
         CREATE TABLE nokey (a int, b text);
         ALTER TABLE nokey REPLICA IDENTITY FULL;
         CREATE PUBLICATION powersync FOR ALL TABLES;
         INSERT INTO t SELECT g, 'v' || g, g % 7, g / 4.0,
             CASE WHEN g % 50 = 0 THEN (SELECT string_agg(md5(g::text || i), '') FROM generate_series(1, 300) i) END,
             decode(md5(g::text), 'hex'), date '2020-01-01' + g
           FROM generate_series(1, 3000) g;
         INSERT INTO nokey SELECT g, 'n' || g FROM generate_series(1, 100) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let db_arg = db.to_str().unwrap().to_string();
    let url = format!("{}?snapshot_chunk_rows=500", pg.url());

    // A writer: random transactions until told to stop.
    let done = Arc::new(AtomicU64::new(0));
    let writer = {
        let mut c = client(&pg).await;
        let done = done.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let mut next = 3001i64;
            let mut next_nokey = 1000i32;
            for _ in 0..600 {
                let tx = c.transaction().await.unwrap();
                for _ in 0..rng.gen_range(1..=3) {
                    let id = rng.gen_range(1..next);
                    match rng.gen_range(0..10) {
                        0..=3 => {
                            // Leaves `big` alone: unchanged TOAST values must survive.
                            let f: f64 = rng.gen::<f64>() * 100.0;
                            tx.execute(
                                "UPDATE t SET v = v || '+', n = coalesce(n, 0) + 1, f = $2 WHERE id = $1",
                                &[&id, &f],
                            )
                            .await
                            .unwrap();
                        }
                        4 => {
                            tx.execute("UPDATE t SET id = $2 WHERE id = $1", &[&id, &next])
                                .await
                                .unwrap();
                            next += 1;
                        }
                        5..=6 => {
                            tx.execute(
                                "INSERT INTO t (id, v, n, f, b, d) VALUES ($1, 'new', NULL, 0.5, '\\x00', '1999-12-31')",
                                &[&next],
                            )
                            .await
                            .unwrap();
                            next += 1;
                        }
                        7 => {
                            tx.execute("DELETE FROM t WHERE id = $1", &[&id])
                                .await
                                .unwrap();
                        }
                        8 => {
                            let a = rng.gen_range(1..200i32);
                            tx.execute("UPDATE nokey SET b = b || '*' WHERE a = $1", &[&a])
                                .await
                                .unwrap();
                        }
                        _ => {
                            // Rows stay distinct: a table without a primary key is keyed by
                            // all its columns in SQLite (exact duplicates would merge).
                            let a = rng.gen_range(1..200i32);
                            tx.execute("DELETE FROM nokey WHERE a = $1", &[&a])
                                .await
                                .unwrap();
                            tx.execute("INSERT INTO nokey VALUES ($1, 'again')", &[&next_nokey])
                                .await
                                .unwrap();
                            next_nokey += 1;
                        }
                    }
                }
                tx.commit().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };

    let mut mirror = Proc::spawn(MIRROR, &[&url, &db_arg]);
    wait_position(&mut mirror, &db, |p| p.starts_with("postgres:")).await;
    while done.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    mirror.kill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resumed = Proc::spawn(MIRROR, &[&url, &db_arg, "--exit-when-idle", "1.5"]);
    writer.await.unwrap();
    let finished = resumed.finish().await;
    assert_eq!(finished.code(), 0, "stderr:\n{}", finished.stderr);
    assert!(
        finished.stderr.contains("resuming from postgres:v1:"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("mirror: summary {"),
        "{}",
        finished.stderr
    );

    let expected = source_rows(
        &pg,
        "SELECT id, v, n, f, big, encode(b, 'hex'), to_char(d, 'YYYY-MM-DD') FROM t ORDER BY t.id",
        &["int", "text", "int", "real", "text", "blob", "text"],
    )
    .await;
    let actual = sqlite_rows(&db, "SELECT id, v, n, f, big, b, d FROM t ORDER BY id");
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a, e);
    }
    let expected = source_rows(
        &pg,
        "SELECT a, b FROM nokey ORDER BY a, b",
        &["int", "text"],
    )
    .await;
    let actual = sqlite_rows(&db, "SELECT a, b FROM nokey ORDER BY a, b");
    assert_eq!(actual, expected);
    // The stored position is the source's latest acknowledged one.
    let position = crate::common::mirror_position(&db).unwrap();
    assert!(position.starts_with("postgres:v1:"), "{position}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_schema_changes_and_truncates() {
    let Some(pg) = server().await else { return };
    sql(
        &pg,
        "CREATE TABLE a (id int PRIMARY KEY, v text, w text);
         CREATE TABLE b (id int PRIMARY KEY);
         CREATE SCHEMA other;
         CREATE TABLE other.b (id int PRIMARY KEY, note text);
         CREATE PUBLICATION powersync FOR ALL TABLES;
         INSERT INTO a VALUES (1, 'v1', 'w1');
         INSERT INTO b SELECT generate_series(1, 10);
         INSERT INTO other.b VALUES (1, 'kept');",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let db_arg = db.to_str().unwrap().to_string();
    let url = pg.url();
    let mut mirror = Proc::spawn(MIRROR, &[&url, &db_arg, "--exit-when-idle", "3"]);
    wait_position(&mut mirror, &db, |p| p.starts_with("postgres:")).await;
    // Two tables named `b`: both schema-qualified.
    assert_eq!(
        sqlite_rows(&db, "SELECT count(*) FROM \"public.b\""),
        vec![vec!["int:10"]]
    );
    assert_eq!(
        sqlite_rows(&db, "SELECT id, note FROM \"other.b\""),
        vec![vec!["int:1", "text:kept"]]
    );
    sql(
        &pg,
        "ALTER TABLE a ADD COLUMN x int;
         INSERT INTO a VALUES (2, 'v2', 'w2', 5);
         ALTER TABLE a DROP COLUMN w;
         INSERT INTO a (id, v, x) VALUES (3, 'v3', 6);
         UPDATE a SET x = 9 WHERE id = 1;
         TRUNCATE b;
         INSERT INTO b VALUES (100);",
    )
    .await;
    let finished = mirror.finish().await;
    assert_eq!(finished.code(), 0, "stderr:\n{}", finished.stderr);
    assert_eq!(sqlite_columns(&db, "a"), vec!["id", "v", "x"]);
    assert_eq!(
        sqlite_rows(&db, "SELECT id, v, x FROM a ORDER BY id"),
        vec![
            vec!["int:1", "text:v1", "int:9"],
            vec!["int:2", "text:v2", "int:5"],
            vec!["int:3", "text:v3", "int:6"],
        ]
    );
    assert_eq!(
        sqlite_rows(&db, "SELECT id FROM \"public.b\""),
        vec![vec!["int:100"]]
    );
    assert_eq!(
        sqlite_rows(&db, "SELECT count(*) FROM \"other.b\""),
        vec![vec!["int:1"]]
    );

    // A new primary key while the mirror is down: the table is rebuilt with it on the next run.
    sql(
        &pg,
        "ALTER TABLE a DROP CONSTRAINT a_pkey, ADD PRIMARY KEY (id, v);
         INSERT INTO a VALUES (4, 'v4', 7);",
    )
    .await;
    let second = run(MIRROR, &[&url, &db_arg, "--exit-when-idle", "1"]).await;
    assert_eq!(second.code(), 0, "stderr:\n{}", second.stderr);
    assert!(second.stderr.contains("resuming from"), "{}", second.stderr);
    let pk: Vec<Vec<String>> = sqlite_rows(
        &db,
        "SELECT name FROM pragma_table_info('a') WHERE pk > 0 ORDER BY pk",
    );
    assert_eq!(pk, vec![vec!["text:id"], vec!["text:v"]]);
    assert_eq!(
        sqlite_rows(&db, "SELECT count(*) FROM a"),
        vec![vec!["int:4"]]
    );
    // The stored schemas follow.
    let stored = sqlite_rows(
        &db,
        "SELECT value FROM _powersync_mirror_state WHERE key = 'table:public.a'",
    );
    let schema: serde_json::Value =
        serde_json::from_str(stored[0][0].trim_start_matches("text:")).unwrap();
    assert_eq!(schema["sqlite_name"], "a");
    assert_eq!(schema["schema"]["columns"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let db_arg = db.to_str().unwrap();
    let r = run(MIRROR, &["nonsense", db_arg]).await;
    assert_eq!(r.code(), 2, "{}", r.stderr);
    let r = run(MIRROR, &["mysql://root@127.0.0.1/db?bogus=1", db_arg]).await;
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(r.stderr.contains("unknown option"), "{}", r.stderr);
    assert_eq!(run(MIRROR, &["postgres://x/y"]).await.code(), 2);

    let Some(pg) = server().await else { return };
    let r = run(MIRROR, &[&pg.url(), db_arg]).await;
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(r.stderr.contains("CREATE PUBLICATION"), "{}", r.stderr);
    sql(&pg, "CREATE PUBLICATION powersync FOR ALL TABLES").await;
    let r = run(
        MIRROR,
        &[&pg.url(), "/nonexistent-dir/m.db", "--exit-when-idle", "1"],
    )
    .await;
    assert_eq!(r.code(), 1, "{}", r.stderr);
    let r = run(MIRROR, &[&pg.url(), db_arg, "--exit-when-idle", "0.5"]).await;
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert!(Path::new(&db).exists());
}
