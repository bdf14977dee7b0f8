//! Convex-specific behaviour against `FakeConvex`: checks, the resumable pinned snapshot,
//! retries, history loss, markers, deleted tables, schema growth.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use powersync_source_convex::testing::{int64, FakeConvex, Write};
use powersync_source_convex::{ConvexApi, ConvexSource, CHECKPOINT_TABLE};
use powersync_source_core::{
    ChangeEvent, ChangeSource, ChangeStream, ErrorKind, Op, SnapshotProgress, SnapshotResume,
    SourceError, StartFrom, TableName, Value,
};
use serde_json::{json, Map, Value as Json};

use crate::workload::{config, KEY, WRONG_KEY};

pub(crate) fn table(name: &str) -> TableName {
    TableName::new("convex", name)
}

pub(crate) fn source(fake: &FakeConvex, tables: &[&str]) -> ConvexSource {
    source_on(fake, tables, ConvexApi::Auto)
}

/// A source of these tables told to use `api`.
pub(crate) fn source_on(fake: &FakeConvex, tables: &[&str], api: ConvexApi) -> ConvexSource {
    ConvexSource::new(config(&fake.url(), KEY).with_api(api))
        .with_tables(tables.iter().map(|t| table(t)).collect())
}

/// A source pinned to the streaming export endpoints, for behaviour of that transport.
pub(crate) fn legacy_source(fake: &FakeConvex, tables: &[&str]) -> ConvexSource {
    source_on(fake, tables, ConvexApi::StreamingExport)
}

/// Reads events until `stop` says so (or fails after 20 s); returns them all.
pub(crate) async fn read_until(
    stream: &mut ChangeStream,
    mut stop: impl FnMut(&ChangeEvent) -> bool,
) -> Result<Vec<ChangeEvent>, SourceError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| {
                SourceError::connection(format!("timed out; events so far: {}", out.len()))
            })?;
        let batch = next.ok_or_else(|| SourceError::connection("stream ended"))??;
        for e in batch.events {
            let done = stop(&e);
            out.push(e);
            if done {
                return Ok(out);
            }
        }
    }
}

pub(crate) fn rows(
    events: &[ChangeEvent],
) -> impl Iterator<Item = &powersync_source_core::RowChange> {
    events.iter().filter_map(|e| match e {
        ChangeEvent::Row(r) => Some(r),
        _ => None,
    })
}

pub(crate) fn id_of(r: &powersync_source_core::RowChange) -> String {
    let image = r.new.as_ref().or(r.old.as_ref()).unwrap();
    image.get(0).and_then(Value::as_text).unwrap().to_string()
}

pub(crate) fn seed(fake: &FakeConvex, t: &str, n: i64) -> Vec<String> {
    let writes = (0..n)
        .map(|i| Write::Insert {
            table: t.into(),
            fields: [("n".to_string(), int64(i))]
                .into_iter()
                .collect::<Map<String, Json>>(),
        })
        .collect();
    fake.transaction(writes).unwrap()
}

#[tokio::test]
async fn bad_key_is_auth_and_never_shown() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    let src = ConvexSource::new(config(&fake.url(), WRONG_KEY));
    let e = src.check().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    let text = format!("{e} {e:?} {:?}", src);
    assert!(
        !text.contains(WRONG_KEY) && !text.contains("wrong-Secret"),
        "{text}"
    );
    let e = src.start(StartFrom::Beginning).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth);
    let e = src.write_checkpoint().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth);
}

#[tokio::test]
async fn streaming_export_not_enabled_is_a_prerequisite() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.respond_next(
        "/api/get_table_column_names",
        403,
        json!({"code": "StreamingExportNotEnabled", "message": "Streaming export is not available on your current subscription."}),
    );
    let report = source(&fake, &[]).check().await.unwrap();
    let e = report.into_result().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Prerequisite);
    assert!(e.to_string().contains("StreamingExportNotEnabled"), "{e}");
}

#[tokio::test]
async fn check_names_every_missing_piece_with_its_fix() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.create_table("todos");
    assert!(source(&fake, &["todos"]).check().await.unwrap().is_ready());

    let report = source(&fake, &["todos", "nope"]).check().await.unwrap();
    let errors: Vec<String> = report.errors().map(|p| p.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("convex.nope"));

    let other = ConvexSource::new(config(&fake.url(), KEY))
        .with_tables(vec![TableName::new("mycomponent", "todos")]);
    let report = other.check().await.unwrap();
    assert!(report
        .errors()
        .any(|p| p.what.contains("only the default component")));
    let e = other.start(StartFrom::Beginning).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");

    // Write checkpoints are optional: a missing mutation or table is a warning with the fix.
    fake.set_mutation_deployed(false);
    let report = source(&fake, &["todos"]).check().await.unwrap();
    assert!(report.is_ready(), "{report:?}");
    let text = report
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("write checkpoints are off")
            && text.contains("powersync_checkpoints:createCheckpoint")
            && text.contains("export const createCheckpoint = internalMutation"),
        "{text}"
    );
    let e = source(&fake, &["todos"])
        .write_checkpoint()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Prerequisite, "{e}");

    fake.delete_table(CHECKPOINT_TABLE);
    let report = source(&fake, &["todos"]).check().await.unwrap();
    assert!(report.is_ready(), "{report:?}");
    let text = report
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("powersync_checkpoints: defineTable"),
        "{text}"
    );
}

#[tokio::test]
async fn typed_encoding_refused_falls_back_with_a_warning() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_typed_format(false);
    let report = source(&fake, &[]).check().await.unwrap();
    assert!(report.is_ready());
    assert!(
        report.problems.iter().any(|p| p.setting == "format"),
        "{report:?}"
    );
    assert!(report.server_version.unwrap().contains("format=json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_resumes_page_by_page_at_the_pinned_snapshot() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_page_sizes(40, 128);
    let ids = seed(&fake, "items", 250);
    seed(&fake, "other", 30);
    let src = legacy_source(&fake, &["items", "other"]);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    let mut chunks = 0;
    let first = read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { .. })) && {
            chunks += 1;
            chunks == 3
        }
    })
    .await
    .unwrap();
    drop(stream);
    let token: SnapshotResume = first
        .iter()
        .rev()
        .find_map(|e| match e {
            ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { resume, .. }) => {
                Some((**resume).clone())
            }
            _ => None,
        })
        .unwrap();
    // Changes after the pinned snapshot: the resumed snapshot must not see them.
    fake.delete("items", &ids[249]).unwrap();
    fake.patch("items", &ids[0], json!({"n": int64(-1)}))
        .unwrap();
    let late = fake.insert("items", json!({"n": int64(1000)})).unwrap();

    let stored = token.to_token();
    let mut stream = src.start(StartFrom::parse(&stored).unwrap()).await.unwrap();
    let rest = read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    let mut seen = BTreeMap::new();
    for r in rows(&first).chain(rows(&rest)) {
        assert!(r.snapshot);
        *seen
            .entry((r.table.name.name.clone(), id_of(r)))
            .or_insert(0) += 1;
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a snapshot row was read twice"
    );
    let items: BTreeSet<String> = seen
        .keys()
        .filter(|(t, _)| t == "items")
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(
        items,
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        "exactly the rows at the pinned snapshot"
    );
    assert_eq!(seen.keys().filter(|(t, _)| t == "other").count(), 30);
    // The snapshot value of ids[0] is the one at the pinned snapshot.
    let r0 = rows(&first)
        .chain(rows(&rest))
        .find(|r| id_of(r) == ids[0])
        .unwrap();
    assert_eq!(
        r0.new.as_ref().unwrap().get_by_name(&r0.table, "n"),
        Some(&Value::Text("0".into()))
    );
    // Then the stream brings the three later changes.
    let mut later = Vec::new();
    let mut commits = 0;
    let events = read_until(&mut stream, |e| {
        match e {
            ChangeEvent::Row(r) => later.push((r.op, id_of(r))),
            ChangeEvent::Commit(_) => commits += 1,
            _ => {}
        }
        commits == 3
    })
    .await
    .unwrap();
    assert_eq!(
        later,
        vec![
            (Op::Delete, ids[249].clone()),
            (Op::Update, ids[0].clone()),
            (Op::Update, late)
        ]
    );
    // Three mutations, three transactions.
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ChangeEvent::Commit(_)))
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_at_another_snapshot_or_an_expired_one_is_history_lost() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_page_sizes(10, 128);
    seed(&fake, "items", 300);
    let src = legacy_source(&fake, &["items"]);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    let first = read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { .. }))
    })
    .await
    .unwrap();
    fake.respond_next(
        "/api/list_snapshot",
        200,
        json!({"values": [], "snapshot": 1, "cursor": null, "hasMore": false}),
    );
    let e = read_until(&mut stream, |_| false).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HistoryLost, "{e}");
    assert!(e.to_string().contains("pinned"), "{e}");
    drop(stream);

    let token = first
        .iter()
        .find_map(|e| match e {
            ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { resume, .. }) => {
                Some((**resume).clone())
            }
            _ => None,
        })
        .unwrap();
    fake.expire_history();
    let result = match src.start(StartFrom::Snapshot(token)).await {
        Err(e) => e,
        Ok(mut s) => read_until(&mut s, |_| false).await.unwrap_err(),
    };
    assert_eq!(result.kind(), ErrorKind::HistoryLost, "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_going_backwards_is_an_error() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.create_table("items");
    let src = legacy_source(&fake, &["items"]);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    fake.respond_next(
        "/api/document_deltas",
        200,
        json!({"values": [{"_table": "items", "_component": "", "_id": "x", "_ts": 5, "_deleted": false, "_creationTime": 1.0}], "cursor": 10, "hasMore": false}),
    );
    let e = read_until(&mut stream, |_| false).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert!(e.to_string().contains("backwards"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried_without_duplicates() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_page_sizes(20, 16);
    seed(&fake, "items", 45);
    let src = source(&fake, &["items"]);
    fake.fail_next(2, 503);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    fake.fail_next(2, 429);
    let mut events = read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    for round in 0..5 {
        seed(&fake, "items", 10);
        fake.fail_next(1, if round % 2 == 0 { 500 } else { 429 });
    }
    let mut streamed = 0;
    events.extend(
        read_until(&mut stream, |e| {
            if matches!(e, ChangeEvent::Row(r) if !r.snapshot) {
                streamed += 1;
            }
            streamed == 50
        })
        .await
        .unwrap(),
    );
    let mut seen = BTreeSet::new();
    for r in rows(&events) {
        assert!(seen.insert(id_of(r)), "row {} delivered twice", id_of(r));
    }
    assert_eq!(seen.len(), 95);
    let stats = stream.stats().snapshot();
    assert!(stats.reconnects >= 5, "{stats:?}");
    assert!(
        stats.bytes_received > 0 && stats.transactions >= 5,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_are_observed_never_rows_and_idle_pages_keep_alive() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.create_table("items");
    seed(&fake, "unselected", 3);
    let src = source(&fake, &["items"]);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    let marker = src.write_checkpoint().await.unwrap();
    let events = read_until(
        &mut stream,
        |e| matches!(e, ChangeEvent::CheckpointObserved(c) if *c == marker),
    )
    .await
    .unwrap();
    assert_eq!(rows(&events).count(), 0, "marker rows reached the host");
    assert!(!events.iter().any(|e| matches!(e, ChangeEvent::Begin(_))));
    let keepalive = events
        .iter()
        .rev()
        .find_map(|e| match e {
            ChangeEvent::Keepalive(c) => Some(c.clone()),
            _ => None,
        })
        .expect("a keepalive before the marker");
    assert!(keepalive >= marker, "{keepalive} < {marker}");
    // Writes to an unselected table only move the position.
    seed(&fake, "unselected", 2);
    let events = read_until(
        &mut stream,
        |e| matches!(e, ChangeEvent::Keepalive(c) if *c > keepalive),
    )
    .await
    .unwrap();
    assert_eq!(rows(&events).count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_deleted_in_the_dashboard_is_reported() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    seed(&fake, "keep", 2);
    seed(&fake, "doomed", 2);
    // Every table: the marker table is left out.
    let src = source(&fake, &[]);
    let tables: Vec<String> = src
        .discover()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.name)
        .collect();
    assert_eq!(tables, vec!["doomed", "keep"]);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    assert!(fake.delete_table("doomed"));
    let events = read_until(&mut stream, |e| matches!(e, ChangeEvent::Commit(_)))
        .await
        .unwrap();
    let truncated: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ChangeEvent::Truncate(t) => Some(t.tables.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(truncated, vec![vec![table("doomed")]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_fields_announce_a_new_schema_first() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    let id = fake.insert("items", json!({"a": "x"})).unwrap();
    let src = source(&fake, &["items"]);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    fake.patch("items", &id, json!({"b": int64(9)})).unwrap();
    let events = read_until(&mut stream, |e| matches!(e, ChangeEvent::Row(_)))
        .await
        .unwrap();
    let schema = events
        .iter()
        .find_map(|e| match e {
            ChangeEvent::Schema(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a schema before the row");
    let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["_id", "_creationTime", "a", "b"]);
    assert!(schema.columns[0].is_key);
    // The default api=auto reads the fake's Data Sync API.
    assert_eq!(schema.columns[3].type_name, "int64 (export_json)");
    let row = rows(&events).next().unwrap();
    assert_eq!(
        row.new.as_ref().unwrap().get(3),
        Some(&Value::Text("9".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_mid_page_repeats_no_transaction() {
    resuming_mid_page(ConvexApi::StreamingExport).await;
}

/// On the Data Sync API a commit inside a page stands at the cursor that asked for the page
/// plus its timestamp: resuming there asks again and drops what is at or below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_mid_page_repeats_no_transaction_on_data_sync() {
    resuming_mid_page(ConvexApi::DataSync).await;
}

async fn resuming_mid_page(api: ConvexApi) {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_page_sizes(100, 1000);
    let id = fake.insert("items", json!({"n": int64(0)})).unwrap();
    let src = source_on(&fake, &["items"], api);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    // Twenty mutations land in one page: twenty transactions.
    for n in 1..=20 {
        fake.patch("items", &id, json!({"n": int64(n)})).unwrap();
    }
    let mut commits = Vec::new();
    let mut values = Vec::new();
    read_until(&mut stream, |e| {
        match e {
            ChangeEvent::Row(r) => values.push(r.new.as_ref().unwrap().get(2).cloned().unwrap()),
            ChangeEvent::Commit(c) => commits.push(c.checkpoint.clone()),
            _ => {}
        }
        commits.len() == 20
    })
    .await
    .unwrap();
    drop(stream);
    // Shorter pages now: the page read again ends before the resume point, and what it
    // holds was delivered already.
    fake.set_page_sizes(100, 3);
    // Resume after the seventh: exactly the thirteen later ones.
    let mut stream = src
        .start(StartFrom::Checkpoint(commits[6].clone()))
        .await
        .unwrap();
    let mut again = Vec::new();
    read_until(&mut stream, |e| {
        if let ChangeEvent::Row(r) = e {
            again.push(r.new.as_ref().unwrap().get(2).cloned().unwrap());
        }
        again.len() == 13
    })
    .await
    .unwrap();
    assert_eq!(again, values[7..].to_vec());
    assert!(commits.windows(2).all(|w| w[0] < w[1]));
    let version = if api == ConvexApi::DataSync { 2 } else { 1 };
    assert!(
        commits.iter().all(|c| c.version() == version),
        "{commits:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_with_has_more_are_fetched_without_waiting() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_page_sizes(100, 10);
    fake.create_table("items");
    // A long polling interval: only a caught-up stream may wait it.
    let src =
        ConvexSource::new(config(&fake.url(), KEY).with_polling_interval(Duration::from_secs(3)))
            .with_tables(vec![table("items")]);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    // The first idle poll is under way or done; queue a backlog of 30 pages behind it.
    for n in 0..300 {
        fake.insert("items", json!({"n": int64(n)})).unwrap();
    }
    let started = std::time::Instant::now();
    let mut commits = 0;
    read_until(&mut stream, |e| {
        if matches!(e, ChangeEvent::Commit(_)) {
            commits += 1;
        }
        commits == 300
    })
    .await
    .unwrap();
    // At most the one idle wait before the backlog, never one per page.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let stats = stream.stats().snapshot();
    assert_eq!(stats.transactions, 300);
    assert!(stats.lag_seconds < 60.0, "{stats:?}");
}

#[tokio::test]
async fn discover_lists_columns_with_types_and_key() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.insert("items", json!({"count": int64(1), "name": "a", "blob": powersync_source_convex::testing::bytes(b"x")}))
        .unwrap();
    fake.insert("items", json!({"count": int64(2), "name": "b", "ref": "c"}))
        .unwrap();
    let schemas = source(&fake, &["items"]).discover().await.unwrap();
    assert_eq!(schemas.len(), 1);
    let s = &schemas[0];
    assert_eq!(s.name, table("items"));
    let cols: Vec<(&str, &str, bool)> = s
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_name.as_str(), c.is_key))
        .collect();
    assert_eq!(
        cols,
        vec![
            ("_id", "id(items) (convex_encoded_json)", true),
            ("_creationTime", "float64 (convex_encoded_json)", false),
            ("blob", "bytes (convex_encoded_json)", false),
            ("count", "int64 (convex_encoded_json)", false),
            ("name", "string (convex_encoded_json)", false),
            ("ref", "string (convex_encoded_json)", false),
        ]
    );
    // The marker table is never part of "every table".
    let all = source(&fake, &[]).discover().await.unwrap();
    assert!(all.iter().all(|t| t.name.name != CHECKPOINT_TABLE));
}

/// One document of `items` with `n`.
fn insert_n(fake: &FakeConvex, n: i64) -> String {
    fake.insert("items", json!({ "n": int64(n) })).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_healthy_longer_than_give_up_after_survives_a_restart() {
    // The retry budget is per outage: a stream that has been healthy for longer than
    // `give_up_after` since its previous outage gets the whole budget again. With one backoff
    // for the life of the stream (or one never reset after the first blip), the restart below
    // would be final, since the first outage started more than `give_up_after` before it.
    let give_up_after = Duration::from_secs(2);
    let fake = FakeConvex::start(KEY).await.unwrap();
    let mut ids = seed(&fake, "items", 3);
    let options = powersync_source_core::StreamOptions::default()
        .with_tables(vec![table("items")])
        .with_retry(powersync_source_core::RetryPolicy {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            jitter: 0.0,
            max_attempts: None,
            give_up_after: Some(give_up_after),
            ..Default::default()
        });
    let src = ConvexSource::new(config(&fake.url(), KEY)).with_stream_options(options);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    let mut events = read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    // A first, short outage: the stream retries and goes on.
    fake.fail_next(2, 503);
    let mut n = 100;
    let healthy_since = std::time::Instant::now();
    // Healthy for longer than give_up_after, delivering a transaction now and then.
    while healthy_since.elapsed() < give_up_after + Duration::from_millis(500) {
        let id = insert_n(&fake, n);
        n += 1;
        ids.push(id.clone());
        events.extend(
            read_until(&mut stream, |e| matches!(e, ChangeEvent::Commit(_)))
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A restart: every connection dropped, refused for 700 ms (several retries, well inside
    // one budget), with writes committed while the deployment is unreachable.
    let during = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (0..5)
            .map(|i| insert_n(&fake, 1000 + i))
            .collect::<Vec<_>>()
    };
    let (restarted, written) = tokio::join!(fake.restart(Duration::from_millis(700)), during);
    restarted.unwrap();
    ids.extend(written);
    let after = insert_n(&fake, 2000);
    ids.push(after.clone());
    events.extend(
        read_until(
            &mut stream,
            |e| matches!(e, ChangeEvent::Row(r) if id_of(r) == after),
        )
        .await
        .unwrap(),
    );
    // Everything, once, in commit order.
    let delivered: Vec<String> = rows(&events).map(id_of).collect();
    assert_eq!(delivered, ids, "no duplicate, no gap, in order");
    let stats = stream.stats().snapshot();
    assert!(
        stats.reconnects >= 3,
        "both outages were retried: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_stream_task_reaches_the_host_as_internal() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    seed(&fake, "items", 10);
    let options = powersync_source_core::StreamOptions::default()
        .with_tables(vec![table("items")])
        .with_panic_after_rows(4);
    let src = ConvexSource::new(config(&fake.url(), KEY)).with_stream_options(options);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    let e = read_until(&mut stream, |_| false).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    assert!(e.to_string().contains("panicked"), "{e}");
    // The error is final: the stream ends after it.
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    assert!(matches!(end, Ok(None)), "the stream ends after the panic");
}
