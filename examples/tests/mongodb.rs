//! `tail`, `mirror` and `setup` against a throwaway SecantusDB (MongoDB wire protocol, one-node
//! replica set with change streams).

use powersync_source_testkit::{self as testkit, SecantusServer};

use crate::common::{run, sqlite_rows, Proc, MIRROR, TAIL};

const SETUP: &str = env!("CARGO_BIN_EXE_setup");

async fn secantus() -> Option<SecantusServer> {
    testkit::init_tracing();
    testkit::or_skip(SecantusServer::start().await)
}

async fn py(server: &SecantusServer, script: &str) -> String {
    server.pymongo(script).await.expect("pymongo script")
}

/// The URL of database `test`, with `post_images=off` (SecantusDB answers
/// `fullDocument: 'required'` with the current document, see the connector's tests).
fn url(server: &SecantusServer) -> String {
    format!(
        "mongodb://127.0.0.1:{}/test?directConnection=true&post_images=off",
        server.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_snapshot_and_change_stream_rows() {
    let Some(server) = secantus().await else {
        return;
    };
    py(
        &server,
        "db.items.insert_many([{'_id': 1, 'v': 'one', 'n': 1.5}, {'_id': 2, 'v': 'two', 'tags': ['a', 'b']}])",
    )
    .await;
    let url = url(&server);
    let mut tail = Proc::spawn(TAIL, &[&url, "--exit-when-idle", "2"]);
    tail.wait_line("snapshot_done", |j| j["kind"] == "snapshot_done")
        .await;
    py(
        &server,
        "db.items.update_one({'_id': 1}, {'$set': {'v': 'ONE'}})\n\
         db.items.delete_one({'_id': 2})\n\
         db.items.insert_one({'_id': 3, 'v': 'three'})",
    )
    .await;
    tail.wait_line("the insert", |j| j["kind"] == "row" && j["key"]["id"] == 3)
        .await;
    let done = tail.finish().await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);
    let lines = done.json();
    let rows: Vec<_> = lines
        .iter()
        .filter(|j| j["kind"] == "row" && j["table"] == "test.items")
        .collect();
    assert_eq!(rows.len(), 5, "{lines:#?}");
    assert!(rows[..2].iter().all(|r| r["snapshot"] == true));
    assert_eq!(rows[0]["new"]["v"], "one");
    assert_eq!(rows[0]["new"]["n"], 1.5);
    assert_eq!(rows[1]["new"]["tags"], r#"["a","b"]"#);
    assert_eq!(rows[2]["op"], "update");
    assert_eq!(rows[2]["new"]["v"], "ONE");
    assert_eq!(rows[3]["op"], "delete");
    assert_eq!(rows[3]["key"]["id"], 2);
    let cp = lines
        .iter()
        .find(|j| j["kind"] == "commit")
        .and_then(|j| j["checkpoint"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(cp.starts_with("mongodb:v1:"), "{cp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_equals_the_collection_after_a_kill() {
    let Some(server) = secantus().await else {
        return;
    };
    py(
        &server,
        "db.items.insert_many([{'_id': i, 'v': 'v%d' % i, 'n': i} for i in range(300)])",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mirror.db");
    let file_arg = file.to_str().unwrap().to_string();
    let url = url(&server);
    let done = run(MIRROR, &[&url, &file_arg, "--exit-when-idle", "1"]).await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);

    let mirror = Proc::spawn(MIRROR, &[&url, &file_arg]);
    py(
        &server,
        "db.items.update_many({'n': {'$lt': 50}}, {'$set': {'v': 'changed'}}, )\n\
         db.items.delete_many({'n': {'$gte': 250}})",
    )
    .await;
    mirror.kill().await;
    py(
        &server,
        "db.items.insert_many([{'_id': 1000 + i, 'v': 'late', 'n': 1000 + i} for i in range(5)])",
    )
    .await;
    let done = run(MIRROR, &[&url, &file_arg, "--exit-when-idle", "2"]).await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);
    let rows = sqlite_rows(&file, "SELECT id, v FROM items ORDER BY id");
    assert_eq!(rows.len(), 255, "{rows:?}");
    assert_eq!(rows[0], vec!["int:0", "text:changed"]);
    assert_eq!(rows[60], vec!["int:60", "text:v60"]);
    assert_eq!(rows[254], vec!["int:1004", "text:late"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_creates_the_checkpoint_collection_and_images() {
    let Some(server) = secantus().await else {
        return;
    };
    py(&server, "db.items.insert_one({'_id': 1})").await;
    let url = format!(
        "mongodb://127.0.0.1:{}/test?directConnection=true&post_images=read_only",
        server.port()
    );
    let done = run(SETUP, &[&url]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 3, "{out}\n{}", done.stderr);
    assert!(
        out.contains(r#"db.getSiblingDB("test").createCollection("_powersync_checkpoints");"#),
        "{out}"
    );
    assert!(out.contains(r#"collMod: "items""#), "{out}");

    let done = run(SETUP, &[&url, "--apply"]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 0, "{out}\n{}", done.stderr);
    assert!(out.contains("-- done"), "{out}");
    assert!(out.contains("-- password for powersync: "), "{out}");
    let done = run(SETUP, &[&url, "--apply"]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 0, "{out}\n{}", done.stderr);
    assert!(out.contains("-- nothing to change"), "{out}");
    assert!(!out.contains("password for"), "{out}");
    let listed = py(
        &server,
        "print(sorted(c['name'] for c in db.list_collections()))\n\
         print(db.command('listCollections', filter={'name': 'items'})['cursor']['firstBatch'][0]['options'])",
    )
    .await;
    assert!(listed.contains("_powersync_checkpoints"), "{listed}");
    assert!(listed.contains("changeStreamPreAndPostImages"), "{listed}");
}

/// The documents of `db.coll` as `[id, v]` rows in `sqlite_rows`' spelling, ordered by id.
async fn mongo_rows(
    driver: &powersync_source_mongodb::mongodb::Client,
    db: &str,
    coll: &str,
) -> Vec<Vec<String>> {
    use powersync_source_mongodb::bson::{doc, Document};
    let mut cursor = driver
        .database(db)
        .collection::<Document>(coll)
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap();
    let mut out = Vec::new();
    while cursor.advance().await.unwrap() {
        let d = cursor.deserialize_current().unwrap();
        out.push(vec![
            format!("int:{}", d.get_i64("_id").unwrap()),
            format!("text:{}", d.get_str("v").unwrap()),
        ]);
    }
    out
}

/// Transactions spanning both databases write pairs (`_id` ≥ 1 000 000 in both); a mirror
/// that applied one half of such a transaction without the other breaks this.
fn assert_pairs_whole(file: &std::path::Path, when: &str) {
    let q = "SELECT id, v FROM orders WHERE id >= 1000000 ORDER BY id";
    let orders = sqlite_rows(file, q);
    let invoices = sqlite_rows(file, &q.replace("orders", "invoices"));
    assert_eq!(
        orders, invoices,
        "{when}: a cross-database transaction applied in part"
    );
}

/// Two databases in one source (`--table shop.orders --table billing.invoices`, no database in
/// the URL): writes interleaved across both, single and in multi-document transactions that
/// span both, `mirror` killed twice under the workload. The mirror equals both collections,
/// and every state the SQLite file is left in after the snapshot holds both halves of each
/// transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_of_two_databases_survives_kills_under_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use powersync_source_mongodb::bson::doc;
    use powersync_source_mongodb::bson::Document;

    let Some(server) = secantus().await else {
        return;
    };
    let base = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true",
        server.port()
    );
    let driver = powersync_source_mongodb::mongodb::Client::with_uri_str(&base)
        .await
        .unwrap();
    let orders = driver.database("shop").collection::<Document>("orders");
    let invoices = driver
        .database("billing")
        .collection::<Document>("invoices");
    orders
        .insert_many((0..100i64).map(|i| doc! {"_id": i, "v": format!("o{i}")}))
        .await
        .unwrap();
    invoices
        .insert_many((0..100i64).map(|i| doc! {"_id": i, "v": format!("i{i}")}))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mirror.db");
    let file_arg = file.to_str().unwrap().to_string();
    let url = format!("{base}&post_images=off&max_await_ms=200");
    let args = [
        url.as_str(),
        file_arg.as_str(),
        "--table",
        "shop.orders",
        "--table",
        "billing.invoices",
    ];
    // The snapshot first, on a quiet server: a snapshot is fuzzy until the stream has replayed
    // past its last read, so only states after it must hold whole transactions.
    let mut quiet = args.to_vec();
    quiet.extend(["--exit-when-idle", "1"]);
    let done = run(MIRROR, &quiet).await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);

    let stop = Arc::new(AtomicBool::new(false));
    let workload = {
        let (driver, orders, invoices, stop) = (
            driver.clone(),
            orders.clone(),
            invoices.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut i: i64 = 0;
            let mut transactions = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                orders
                    .update_one(doc! {"_id": i % 100}, doc! {"$set": {"v": format!("o{i}")}})
                    .await
                    .unwrap();
                invoices
                    .insert_one(doc! {"_id": 1000 + i, "v": format!("i{i}")})
                    .await
                    .unwrap();
                if i % 7 == 0 {
                    orders.delete_one(doc! {"_id": 1000 + i}).await.unwrap();
                    invoices
                        .delete_one(doc! {"_id": 1000 + i - 7})
                        .await
                        .unwrap();
                }
                // A transaction over both databases: a pair inserted, an older pair changed.
                let mut session = driver.start_session().await.unwrap();
                session.start_transaction().await.unwrap();
                let id = 1_000_000 + i;
                let v = format!("t{i}");
                let written: Result<(), powersync_source_mongodb::mongodb::error::Error> = async {
                    orders
                        .insert_one(doc! {"_id": id, "v": &v})
                        .session(&mut session)
                        .await?;
                    invoices
                        .insert_one(doc! {"_id": id, "v": &v})
                        .session(&mut session)
                        .await?;
                    if i > 3 {
                        let older = doc! {"_id": id - 3};
                        let set = doc! {"$set": {"v": format!("t{i}-again")}};
                        orders
                            .update_one(older.clone(), set.clone())
                            .session(&mut session)
                            .await?;
                        invoices
                            .update_one(older, set)
                            .session(&mut session)
                            .await?;
                    }
                    session.commit_transaction().await
                }
                .await;
                match written {
                    Ok(()) => transactions += 1,
                    // A write conflict with the mirror's reads: the server says to try again.
                    Err(e) if e.contains_label("TransientTransactionError") => {
                        let _ = session.abort_transaction().await;
                    }
                    Err(e) => panic!("transaction {i}: {e}"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            transactions
        })
    };

    for kill in 1..=2 {
        let mirror = Proc::spawn(MIRROR, &args);
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        mirror.kill().await;
        assert_pairs_whole(&file, &format!("after kill {kill}"));
    }
    stop.store(true, Ordering::Relaxed);
    let transactions = workload.await.unwrap();
    assert!(transactions > 10, "{transactions} transactions");
    let mut finish = args.to_vec();
    finish.extend(["--exit-when-idle", "2"]);
    let done = run(MIRROR, &finish).await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);
    assert_pairs_whole(&file, "at the end");
    assert_eq!(
        sqlite_rows(&file, "SELECT id, v FROM orders ORDER BY id"),
        mongo_rows(&driver, "shop", "orders").await
    );
    assert_eq!(
        sqlite_rows(&file, "SELECT id, v FROM invoices ORDER BY id"),
        mongo_rows(&driver, "billing", "invoices").await
    );
}

/// `setup` for two databases: both get their checkpoint/images steps from one run, and the role
/// holds the cluster-wide `find`/`changeStream` a cluster-level change stream needs (one
/// database does not ask for it, see the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_for_two_databases_asks_for_the_cluster_privilege() {
    let Some(server) = secantus().await else {
        return;
    };
    py(
        &server,
        "client.shop.orders.insert_one({'_id': 1})\nclient.billing.invoices.insert_one({'_id': 1})",
    )
    .await;
    let url = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true&post_images=read_only&databases=shop,billing",
        server.port()
    );
    let done = run(SETUP, &[&url]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 3, "{out}\n{}", done.stderr);
    assert!(out.contains("database shop, billing"), "{out}");
    assert!(
        out.contains(r#"db.getSiblingDB("shop").createCollection("_powersync_checkpoints");"#),
        "{out}"
    );
    assert!(
        out.contains(r#"getSiblingDB("billing").runCommand({ collMod: "invoices""#),
        "{out}"
    );
    assert!(
        out.contains(r#"{"resource":{"db":"","collection":""},"actions":["find","changeStream"]}"#),
        "{out}"
    );
    let done = run(SETUP, &[&url, "--apply"]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 0, "{out}\n{}", done.stderr);
    let done = run(SETUP, &[&url, "--apply"]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 0, "{out}\n{}", done.stderr);
    assert!(out.contains("-- nothing to change"), "{out}");
}
