//! `tail`, `mirror` and `setup` against the in-process Convex double
//! (`powersync_source_convex::testing::FakeConvex`, Convex's streaming export semantics).

use powersync_source_convex::testing::{int64, FakeConvex};
use serde_json::json;

use crate::common::{run, sqlite_rows, Proc, MIRROR, TAIL};

const SETUP: &str = env!("CARGO_BIN_EXE_setup");
const KEY: &str = "prod:fake|test-deploy-key-1234";

async fn fake() -> FakeConvex {
    FakeConvex::start(KEY)
        .await
        .expect("the Convex double starts")
}

fn url(fake: &FakeConvex) -> String {
    format!("convex+{}", fake.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_snapshot_and_deltas_and_never_the_key() {
    let fake = fake().await;
    fake.create_table("todos");
    let a = fake
        .insert("todos", json!({"text": "a", "n": int64(1), "done": false}))
        .unwrap();
    fake.insert("todos", json!({"text": "b", "n": int64(2), "done": true}))
        .unwrap();
    let url = url(&fake);
    let mut tail = Proc::spawn(TAIL, &[&url, "--deploy-key", KEY, "--exit-when-idle", "2"]);
    tail.wait_line("snapshot_done", |j| j["kind"] == "snapshot_done")
        .await;
    fake.patch("todos", &a, json!({"text": "A"})).unwrap();
    fake.delete("todos", &a).unwrap();
    tail.wait_line("the delete", |j| j["kind"] == "row" && j["op"] == "delete")
        .await;
    let done = tail.finish().await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);
    assert!(!done.stderr.contains("test-deploy-key"), "{}", done.stderr);
    let lines = done.json();
    let rows: Vec<_> = lines
        .iter()
        .filter(|j| j["kind"] == "row" && j["table"] == "convex.todos")
        .collect();
    assert_eq!(rows.len(), 4, "{lines:#?}");
    assert!(rows[..2].iter().all(|r| r["snapshot"] == true));
    // Int64 as text (the default), booleans as 0/1.
    assert_eq!(rows[0]["new"]["n"], "1");
    assert_eq!(rows[0]["new"]["done"], 0);
    assert_eq!(rows[2]["new"]["text"], "A");
    assert_eq!(rows[3]["key"]["_id"], a.as_str());
    let cp = lines
        .iter()
        .find(|j| j["kind"] == "commit")
        .and_then(|j| j["checkpoint"].as_str())
        .unwrap_or_default()
        .to_string();
    // Data Sync (`convex:v2:<ts>:<cursor>`) where the deployment serves it, else the streaming
    // export cursor (`convex:v1:<ts>`); either parses as a checkpoint.
    assert!(
        cp.starts_with("convex:v2:") || cp.starts_with("convex:v1:"),
        "{cp}"
    );
    assert!(powersync_source::Checkpoint::parse(&cp).is_ok(), "{cp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_follows_the_deployment_across_a_restart() {
    let fake = fake().await;
    fake.create_table("items");
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(
            fake.insert("items", json!({"i": int64(i), "v": format!("v{i}")}))
                .unwrap(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mirror.db");
    let file_arg = file.to_str().unwrap().to_string();
    let url = url(&fake);
    let done = run(
        MIRROR,
        &[
            &url,
            &file_arg,
            "--deploy-key",
            KEY,
            "--exit-when-idle",
            "1",
        ],
    )
    .await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);
    for id in &ids[..10] {
        fake.delete("items", id).unwrap();
    }
    fake.patch("items", &ids[20], json!({"v": "changed"}))
        .unwrap();
    let done = run(
        MIRROR,
        &[
            &url,
            &file_arg,
            "--deploy-key",
            KEY,
            "--exit-when-idle",
            "1",
        ],
    )
    .await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);
    let rows = sqlite_rows(&file, "SELECT i, v FROM items ORDER BY CAST(i AS INTEGER)");
    assert_eq!(rows.len(), 40);
    assert_eq!(rows[0], vec!["text:10", "text:v10"]);
    assert_eq!(rows[10], vec!["text:20", "text:changed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_prints_the_files_until_they_are_deployed() {
    let fake = fake().await;
    fake.create_table("todos");
    fake.set_mutation_deployed(false);
    let url = url(&fake);
    let done = run(SETUP, &[&url, "--deploy-key", KEY]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 3, "{out}\n{}", done.stderr);
    assert!(
        out.contains("-- file convex/powersync_checkpoints.ts"),
        "{out}"
    );
    assert!(
        out.contains("export const createCheckpoint = internalMutation"),
        "{out}"
    );
    assert!(out.contains("npx convex deploy"), "{out}");
    assert!(!out.contains(KEY) && !done.stderr.contains(KEY));

    fake.set_mutation_deployed(true);
    let done = run(SETUP, &[&url, "--deploy-key", KEY, "--apply"]).await;
    let out = done.lines.join("\n");
    assert_eq!(done.code(), 0, "{out}\n{}", done.stderr);
    assert!(out.contains("-- nothing to change"), "{out}");

    let done = run(SETUP, &[&url, "--deploy-key", "prod:fake|wrong"]).await;
    assert_eq!(done.code(), 2, "{}", done.stderr);
    assert!(done.stderr.contains("Generate"), "{}", done.stderr);
}
