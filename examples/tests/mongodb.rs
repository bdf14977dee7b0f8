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
