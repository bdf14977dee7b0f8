//! `tail`: the JSON line format, resuming from a checkpoint file, exit statuses, a panicking
//! stream task.

use serde_json::{json, Value as Json};

use crate::common::{run, server, sql, Proc, TAIL};

fn is_checkpoint(v: &Json) -> bool {
    let s = v.as_str().unwrap_or_default();
    let Some(body) = s.strip_prefix("postgres:v1:") else {
        return false;
    };
    body.len() == 17
        && body.as_bytes()[8] == b'/'
        && body
            .chars()
            .filter(|c| *c != '/')
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
}

fn rows<'a>(lines: &'a [Json], table: &str) -> Vec<&'a Json> {
    lines
        .iter()
        .filter(|j| j["kind"] == "row" && j["table"] == table)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_every_kind_of_line() {
    let Some(pg) = server().await else { return };
    sql(
        &pg,
        r"
        CREATE TABLE items (id int PRIMARY KEY, txt text, big text, r float8, b bytea, n numeric(6,2));
        CREATE TABLE audit (id int PRIMARY KEY, v text);
        ALTER TABLE audit REPLICA IDENTITY FULL;
        CREATE TABLE unpublished (id int);
        CREATE PUBLICATION powersync FOR TABLE items, audit;
        INSERT INTO items VALUES (1, 'one', NULL, 0.5, '\x0102', 1.5), (2, 'two', NULL, 2, NULL, NULL),
                                 (3, 'three', NULL, NULL, NULL, NULL);
        INSERT INTO audit VALUES (1, 'a'), (2, 'b');
        ",
    )
    .await;
    let url = pg.url();
    let mut tail = Proc::spawn(TAIL, &[&url, "--exit-when-idle", "2"]);
    tail.wait_line("snapshot_done", |j| j["kind"] == "snapshot_done")
        .await;
    // Each statement is its own transaction.
    sql(
        &pg,
        r"
        INSERT INTO items VALUES (4, 'four', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i), 1.0, '\x00ff', 12.3);
        UPDATE items SET txt = 'FOUR' WHERE id = 4;
        UPDATE items SET id = 20 WHERE id = 2;
        DELETE FROM items WHERE id = 3;
        UPDATE audit SET v = 'A' WHERE id = 1;
        DELETE FROM audit WHERE id = 2;
        TRUNCATE audit;
        ",
    )
    .await;
    tail.wait_line("the truncate", |j| j["kind"] == "truncate")
        .await;
    // A transaction of only an unpublished table, written while the walsender is idle:
    // PostgreSQL 15+ sends nothing for it but, once idle again with the client's reported
    // position behind it, a keepalive past it. (Written in the same batch as the statements
    // after it, the walsender may decode them all before idling, and the next commit alone
    // moves the position: correct, but then no keepalive line.)
    sql(&pg, "INSERT INTO unpublished VALUES (1);").await;
    tail.wait_line(
        "the keepalive past the unpublished table's transaction",
        |j| j["kind"] == "keepalive",
    )
    .await;
    sql(
        &pg,
        r"
        ALTER TABLE items ADD COLUMN extra int;
        INSERT INTO items (id, extra) VALUES (5, 7);
        ",
    )
    .await;
    tail.wait_line("the last insert", |j| {
        j["kind"] == "row" && j["key"]["id"] == 5
    })
    .await;
    let done = tail.finish().await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);
    let lines = done.json();
    for l in &lines {
        assert!(l["kind"].is_string(), "{l}");
    }

    // Snapshot: schema lines, then rows with snapshot = true, then snapshot_done.
    let schema = lines
        .iter()
        .find(|j| j["kind"] == "schema" && j["table"] == "public.items")
        .expect("schema line");
    assert_eq!(
        schema["columns"],
        json!([
            {"name": "id", "type": "integer"},
            {"name": "txt", "type": "text"},
            {"name": "big", "type": "text"},
            {"name": "r", "type": "double precision"},
            {"name": "b", "type": "bytea"},
            {"name": "n", "type": "numeric(6,2)"},
        ])
    );
    assert_eq!(schema["key"], json!(["id"]));
    let snap: Vec<&Json> = rows(&lines, "public.items")
        .into_iter()
        .filter(|j| j["snapshot"] == true)
        .collect();
    assert_eq!(snap.len(), 3);
    assert_eq!(
        *snap[0],
        json!({"kind": "row", "op": "insert", "table": "public.items", "snapshot": true,
               "key": {"id": 1}, "old": null,
               "new": {"id": 1, "txt": "one", "big": null, "r": 0.5, "b": {"$blob": "AQI="}, "n": "1.50"}})
    );
    let snapshot_done = lines
        .iter()
        .position(|j| j["kind"] == "snapshot_done")
        .expect("snapshot_done");
    assert!(is_checkpoint(&lines[snapshot_done]["checkpoint"]));
    assert_eq!(lines[snapshot_done].as_object().unwrap().len(), 2);
    let last_snapshot_row = lines.iter().rposition(|j| j["snapshot"] == true).unwrap();
    assert!(last_snapshot_row < snapshot_done);

    // Streamed rows.
    let streamed: Vec<&Json> = lines[snapshot_done..]
        .iter()
        .filter(|j| j["kind"] == "row")
        .collect();
    let insert = streamed[0];
    assert_eq!(insert["op"], "insert");
    assert_eq!(insert["snapshot"], false);
    assert_eq!(insert["new"]["b"], json!({"$blob": "AP8="}));
    assert_eq!(insert["new"]["n"], "12.30");
    assert_eq!(insert["new"]["big"].as_str().unwrap().len(), 400 * 32);
    // Reals keep a fraction: 1.0, not 1.
    let raw_insert = done
        .lines
        .iter()
        .find(|l| l.contains("\"op\":\"insert\"") && l.contains("\"id\":4"))
        .unwrap();
    assert!(raw_insert.contains("\"r\":1.0"), "{raw_insert}");

    // An update that leaves a TOASTed column alone: the column is unchanged, no old image.
    let toast = streamed[1];
    assert_eq!(
        *toast,
        json!({"kind": "row", "op": "update", "table": "public.items", "snapshot": false,
               "key": {"id": 4}, "old": null,
               "new": {"id": 4, "txt": "FOUR", "big": {"$unchanged": true}, "r": 1.0,
                       "b": {"$blob": "AP8="}, "n": "12.30"}})
    );
    // A key change: the old key image.
    let rekey = streamed[2];
    assert_eq!(rekey["op"], "update");
    assert_eq!(rekey["key"], json!({"id": 2}));
    assert_eq!(rekey["old"], json!({"id": 2}));
    assert_eq!(rekey["new"]["id"], 20);
    assert_eq!(rekey["new"]["r"], json!(2.0));
    let raw_rekey = done.lines.iter().find(|l| l.contains("\"id\":20")).unwrap();
    assert!(raw_rekey.contains("\"r\":2.0"), "{raw_rekey}");
    // A delete with the default identity: key only.
    assert_eq!(
        *streamed[3],
        json!({"kind": "row", "op": "delete", "table": "public.items", "snapshot": false,
               "key": {"id": 3}, "old": {"id": 3}, "new": null})
    );
    // REPLICA IDENTITY FULL: full old images.
    assert_eq!(
        *streamed[4],
        json!({"kind": "row", "op": "update", "table": "public.audit", "snapshot": false,
               "key": {"id": 1}, "old": {"id": 1, "v": "a"}, "new": {"id": 1, "v": "A"}})
    );
    assert_eq!(
        *streamed[5],
        json!({"kind": "row", "op": "delete", "table": "public.audit", "snapshot": false,
               "key": {"id": 2}, "old": {"id": 2, "v": "b"}, "new": null})
    );
    // Truncate.
    assert!(lines
        .iter()
        .any(|j| *j == json!({"kind": "truncate", "tables": ["public.audit"]})));
    // The schema change comes before the row that uses it.
    let new_schema = lines
        .iter()
        .rposition(|j| j["kind"] == "schema" && j["table"] == "public.items")
        .unwrap();
    assert!(new_schema > snapshot_done);
    assert_eq!(
        lines[new_schema]["columns"][6],
        json!({"name": "extra", "type": "integer"})
    );
    let last = lines.iter().rposition(|j| j["kind"] == "row").unwrap();
    assert!(new_schema < last);
    assert_eq!(lines[last]["new"]["extra"], 7);
    assert_eq!(lines[last]["new"]["txt"], Json::Null);

    // Commits: one per transaction, with checkpoints that only grow.
    let commits: Vec<&Json> = lines.iter().filter(|j| j["kind"] == "commit").collect();
    assert!(commits.len() >= 8, "{} commits", commits.len());
    let mut prev = lines[snapshot_done]["checkpoint"]
        .as_str()
        .unwrap()
        .to_string();
    for c in &commits {
        assert!(is_checkpoint(&c["checkpoint"]), "{c}");
        let cp = c["checkpoint"].as_str().unwrap();
        assert!(cp > prev.as_str(), "{cp} after {prev}");
        prev = cp.to_string();
        let t = c["commit_time"].as_str().expect("commit_time");
        assert!(
            t.ends_with('Z') && t.len() >= 20 && &t[10..11] == "T",
            "{t}"
        );
    }
    // The last row is followed by its commit.
    assert!(lines[last..].iter().any(|j| j["kind"] == "commit"));
    // The transaction that touched only an unpublished table moves the position: keepalive.
    let keepalive = lines
        .iter()
        .find(|j| j["kind"] == "keepalive")
        .expect("a keepalive line");
    assert!(is_checkpoint(&keepalive["checkpoint"]));
    assert_eq!(keepalive.as_object().unwrap().len(), 2);
    // No line for begin or snapshot progress.
    let kinds: std::collections::BTreeSet<&str> =
        lines.iter().map(|j| j["kind"].as_str().unwrap()).collect();
    let allowed: std::collections::BTreeSet<&str> = [
        "row",
        "truncate",
        "schema",
        "commit",
        "snapshot_done",
        "keepalive",
    ]
    .into_iter()
    .collect();
    assert!(kinds.is_subset(&allowed), "{kinds:?}");
}

/// Non-finite reals, snapshot and streamed: the infinities as `{"$real":…}` (never `null`,
/// which is SQL NULL), NaN as `null` because a NaN float is SQL NULL in the value rules
/// (SQLite has no NaN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_non_finite_reals_as_tagged_objects() {
    let Some(pg) = server().await else { return };
    sql(
        &pg,
        r"
        CREATE TABLE f (id int PRIMARY KEY, d float8, r float4);
        CREATE PUBLICATION powersync FOR TABLE f;
        INSERT INTO f VALUES (1, 'Infinity', '-Infinity'), (2, '-Infinity', 'Infinity'),
                             (3, 'NaN', 'NaN'), (4, 1, 1.5);
        ",
    )
    .await;
    let url = pg.url();
    let mut tail = Proc::spawn(TAIL, &[&url, "--exit-when-idle", "1"]);
    tail.wait_line("snapshot_done", |j| j["kind"] == "snapshot_done")
        .await;
    sql(
        &pg,
        r"
        INSERT INTO f VALUES (11, 'Infinity', '-Infinity'), (12, '-Infinity', 'Infinity'),
                             (13, 'NaN', 'NaN'), (14, 1, 1.5);
        ",
    )
    .await;
    tail.wait_line("the last insert", |j| {
        j["kind"] == "row" && j["key"]["id"] == 14
    })
    .await;
    let done = tail.finish().await;
    assert_eq!(done.code(), 0, "stderr:\n{}", done.stderr);
    let lines = done.json();
    let inf = json!({"$real": "Infinity"});
    let neg_inf = json!({"$real": "-Infinity"});
    for (snapshot, base) in [(true, 0), (false, 10)] {
        let new_of = |id: i64| -> Json {
            let row = rows(&lines, "public.f")
                .into_iter()
                .find(|j| j["key"]["id"] == id + base)
                .unwrap_or_else(|| panic!("row {} in {:?}", id + base, done.lines));
            assert_eq!(row["snapshot"], snapshot, "{row}");
            row["new"].clone()
        };
        assert_eq!(new_of(1), json!({"id": 1 + base, "d": inf, "r": neg_inf}));
        assert_eq!(new_of(2), json!({"id": 2 + base, "d": neg_inf, "r": inf}));
        assert_eq!(new_of(3), json!({"id": 3 + base, "d": null, "r": null}));
        assert_eq!(new_of(4), json!({"id": 4 + base, "d": 1.0, "r": 1.5}));
    }
    // The exact text, as a consumer that does not parse JSON sees it.
    let raw = done.lines.iter().find(|l| l.contains("\"id\":11")).unwrap();
    assert!(
        raw.contains(r#""d":{"$real":"Infinity"},"r":{"$real":"-Infinity"}"#),
        "{raw}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_the_checkpoint_file_without_gaps_or_duplicates() {
    let Some(pg) = server().await else { return };
    sql(
        &pg,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE PUBLICATION powersync FOR ALL TABLES;
         INSERT INTO t SELECT g, 'snap' FROM generate_series(1, 5) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tail.checkpoint");
    let file_arg = file.to_str().unwrap().to_string();
    // A small chunk size: the snapshot stores resume tokens on the way.
    let url = format!("{}?snapshot_chunk_rows=2", pg.url());
    let args = [
        url.as_str(),
        "--checkpoint-file",
        &file_arg,
        "--exit-when-idle",
        "1",
    ];

    // Run 1: the snapshot, and changes made while it runs.
    let mut tail = Proc::spawn(TAIL, &args);
    tail.wait_line("snapshot_done", |j| j["kind"] == "snapshot_done")
        .await;
    sql(
        &pg,
        "INSERT INTO t VALUES (6, 'live'); UPDATE t SET v = 'changed' WHERE id = 1;",
    )
    .await;
    tail.wait_line("the update", |j| j["op"] == "update").await;
    let first = tail.finish().await;
    assert_eq!(first.code(), 0, "{}", first.stderr);
    let first_lines = first.json();
    let stored = std::fs::read_to_string(&file).unwrap();
    let last_position = first_lines
        .iter()
        .rev()
        .find_map(|j| j.get("checkpoint").and_then(|c| c.as_str()))
        .unwrap();
    assert_eq!(stored.trim(), last_position);
    let ids: Vec<i64> = first_lines
        .iter()
        .filter(|j| j["kind"] == "row")
        .map(|j| j["key"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6, 1]);

    // While nothing runs: more transactions.
    for i in 7..=9 {
        sql(&pg, &format!("INSERT INTO t VALUES ({i}, 'offline')")).await;
    }
    sql(&pg, "DELETE FROM t WHERE id = 2").await;

    // Run 2 resumes from the file: exactly the changes made since, once each.
    let second = run(TAIL, &args).await;
    assert_eq!(second.code(), 0, "{}", second.stderr);
    let lines = second.json();
    assert!(lines.iter().all(|j| j["kind"] != "snapshot_done"));
    let changes: Vec<(String, i64)> = lines
        .iter()
        .filter(|j| j["kind"] == "row")
        .map(|j| {
            (
                j["op"].as_str().unwrap().to_string(),
                j["key"]["id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("insert".to_string(), 7),
            ("insert".to_string(), 8),
            ("insert".to_string(), 9),
            ("delete".to_string(), 2)
        ]
    );
    assert!(lines.iter().all(|j| j["snapshot"] != true));
    assert_eq!(lines.iter().filter(|j| j["kind"] == "commit").count(), 4);

    // Run 3: nothing new, nothing repeated.
    let third = run(TAIL, &args).await;
    assert_eq!(third.code(), 0, "{}", third.stderr);
    assert!(
        third.json().iter().all(|j| j["kind"] != "row"),
        "{:?}",
        third.lines
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_an_interrupted_snapshot_from_the_stored_token() {
    let Some(pg) = server().await else { return };
    sql(
        &pg,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE PUBLICATION powersync FOR ALL TABLES;
         INSERT INTO t SELECT g, 'snap' FROM generate_series(1, 50000) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cp");
    let file_arg = file.to_str().unwrap().to_string();
    let url = format!(
        "{}?snapshot_chunk_rows=1000&snapshot_parallelism=1",
        pg.url()
    );
    let args = [
        url.as_str(),
        "--checkpoint-file",
        &file_arg,
        "--exit-when-idle",
        "1",
    ];
    let mut tail = Proc::spawn(TAIL, &args);
    // Kill it once a resume token is stored (mid-snapshot), like a crash.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let stored = std::fs::read_to_string(&file).unwrap_or_default();
        if stored.starts_with("snapshot:") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no resume token stored"
        );
        assert!(
            tail.exited().is_none(),
            "tail ended before a token was stored: {}",
            tail.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tail.kill().await;
    let token = std::fs::read_to_string(&file).unwrap();
    let resume = powersync_source_core::SnapshotResume::parse_token(token.trim()).unwrap();
    let rows_before = match resume.tables.get("public.t") {
        Some(powersync_source_core::TableProgress::Partial { rows, .. }) => *rows,
        other => panic!("unexpected progress {other:?}"),
    };
    assert!(rows_before > 0 && rows_before < 50000);

    let second = run(TAIL, &args).await;
    assert_eq!(second.code(), 0, "{}", second.stderr);
    let lines = second.json();
    let ids: Vec<i64> = lines
        .iter()
        .filter(|j| j["kind"] == "row")
        .map(|j| j["key"]["id"].as_i64().unwrap())
        .collect();
    // The rest of the table, from the row after the stored chunk, once each.
    let expected: Vec<i64> = ((rows_before as i64 + 1)..=50000).collect();
    assert_eq!(ids.len(), expected.len());
    assert_eq!(ids, expected);
    assert!(lines.iter().any(|j| j["kind"] == "snapshot_done"));
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(stored.starts_with("postgres:v1:"), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_statuses() {
    // Configuration errors: 2, with the message on stderr.
    let bad = run(TAIL, &["not-a-url"]).await;
    assert_eq!(bad.code(), 2);
    assert!(bad.stderr.contains("configuration error"), "{}", bad.stderr);
    assert!(bad.lines.is_empty());
    let bad = run(TAIL, &["postgres://u:hunter2@127.0.0.1:1/db?nonsense=1"]).await;
    assert_eq!(bad.code(), 2);
    assert!(bad.stderr.contains("nonsense"), "{}", bad.stderr);
    assert!(!bad.stderr.contains("hunter2"), "{}", bad.stderr);
    let bad = run(TAIL, &["ftp://u:hunter2@host/x"]).await;
    assert_eq!(bad.code(), 2);
    assert!(!bad.stderr.contains("hunter2"), "{}", bad.stderr);
    // Every connector's URL problems: configuration errors, 2, passwords never echoed.
    for (url, says) in [
        (
            "mysql://root@127.0.0.1/db?bogus=1",
            "unknown option `bogus`",
        ),
        (
            "mariadb://root:hunter2@127.0.0.1/db?bogus=1",
            "unknown option",
        ),
        ("mongodb://127.0.0.1/", "no database to replicate"),
        (
            "mongodb+srv://u:hunter2@cluster.example/db?post_images=sometimes",
            "post_images",
        ),
        ("sqlserver://sa:hunter2@127.0.0.1", "names no database"),
        (
            "convex+https://happy-otter-123.convex.cloud",
            "no deploy key",
        ),
    ] {
        let r = run(TAIL, &[url]).await;
        assert_eq!(r.code(), 2, "{url}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{url}: {}", r.stderr);
        assert!(!r.stderr.contains("hunter2"), "{url}: {}", r.stderr);
    }
    let r = run(
        TAIL,
        &[
            "https://happy-otter-123.convex.cloud?bogus=1",
            "--deploy-key",
            "k",
        ],
    )
    .await;
    assert_eq!(r.code(), 2);
    assert!(r.stderr.contains("Convex"), "{}", r.stderr);
    // Usage errors (clap): 2.
    assert_eq!(run(TAIL, &[]).await.code(), 2);
    assert_eq!(
        run(TAIL, &["postgres://x/y", "--exit-when-idle", "soon"])
            .await
            .code(),
        2
    );

    let Some(pg) = server().await else { return };
    // Unreachable server: a connection error, 1.
    let port = powersync_source_testkit::free_port().unwrap();
    let r = run(
        TAIL,
        &[&format!("postgres://postgres@127.0.0.1:{port}/postgres")],
    )
    .await;
    assert_eq!(r.code(), 1, "{}", r.stderr);
    // A missing publication: a prerequisite, 2, saying how to fix it.
    sql(&pg, "CREATE TABLE t (id int PRIMARY KEY)").await;
    let r = run(TAIL, &[&pg.url(), "--publication", "nope"]).await;
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(r.stderr.contains("CREATE PUBLICATION"), "{}", r.stderr);
    // Idle: 0.
    sql(&pg, "CREATE PUBLICATION powersync FOR ALL TABLES").await;
    let started = std::time::Instant::now();
    let r = run(
        TAIL,
        &[&pg.url(), "--exit-when-idle", "0.5", "--table", "t"],
    )
    .await;
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let lines = r.json();
    assert_eq!(lines[0]["kind"], "schema");
    assert!(lines.iter().any(|j| j["kind"] == "snapshot_done"));
}

/// A panic in the connector's stream task (injected through the core runtime's failpoint
/// after 3 rows) reaches `tail` as an internal error: exit status 1, the error on stderr, and
/// no row after the panic. Without the runtime's panic forwarding the stream would just end
/// and `tail` would exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_stream_task_exits_1_with_an_internal_error() {
    let Some(pg) = server().await else { return };
    sql(
        &pg,
        "CREATE TABLE t (id int PRIMARY KEY);
         CREATE PUBLICATION powersync FOR ALL TABLES;
         INSERT INTO t SELECT generate_series(1, 10);",
    )
    .await;
    let r = Proc::spawn_with_env(
        TAIL,
        &[&pg.url(), "--exit-when-idle", "5"],
        &[("POWERSYNC_FAILPOINTS", "stream_panic_after_rows=3")],
    )
    .finish()
    .await;
    assert_eq!(r.code(), 1, "stderr:\n{}", r.stderr);
    assert!(
        r.stderr.contains("tail: internal error"),
        "stderr:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("panicked"), "stderr:\n{}", r.stderr);
    let lines = r.json();
    let rows = rows(&lines, "public.t").len();
    assert!(rows <= 3, "{rows} rows printed after a panic at 3");
    assert!(!lines.iter().any(|j| j["kind"] == "snapshot_done"));
}
