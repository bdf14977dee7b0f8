//! What real deployments do that the connector must survive (issue 17): deployments prepared
//! for PowerSync, floats that need 17 digits, odd tables, read-only keys, long snapshot pages,
//! components, replaced tables. Each test drives a `FakeConvex` behaviour that follows the
//! Convex server code cited in `src/testing/`.

use std::time::Duration;

use powersync_source_convex::testing::{bytes, int64, CheckpointMutation, FakeConvex, Write};
use powersync_source_convex::{ConvexApi, ConvexSource, ValueEncoding, CHECKPOINT_TABLE};
use powersync_source_core::{
    ChangeEvent, ChangeSource, ErrorKind, SnapshotProgress, StartFrom, StreamOptions, Value,
};
use serde_json::json;

use crate::behaviour::{id_of, legacy_source, read_until, rows, seed, source, source_on, table};
use crate::workload::{config, KEY};

/// Item 1: PowerSync's `createCheckpoint` (patches one row in place, returns `null`) is
/// accepted by `check()`, and its markers still give checkpoints the stream observes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_prepared_for_powersync_checks_starts_and_checkpoints() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_checkpoint_mutation(CheckpointMutation::PowerSync);
    seed(&fake, "items", 2);
    let src = source(&fake, &["items"]);
    let report = src.check().await.unwrap();
    assert!(report.is_ready(), "{report:?}");
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    let mut last = None;
    for _ in 0..3 {
        let marker = src.write_checkpoint().await.unwrap();
        if let Some(prev) = &last {
            assert!(marker > *prev, "{marker} <= {prev}");
        }
        let events = read_until(
            &mut stream,
            |e| matches!(e, ChangeEvent::CheckpointObserved(c) if *c == marker),
        )
        .await
        .unwrap();
        assert_eq!(rows(&events).count(), 0, "marker rows reached the host");
        last = Some(marker);
    }
    // PowerSync's mutation keeps one row, patched in place.
    let markers = fake.documents(CHECKPOINT_TABLE);
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert!(markers[0]
        .get("last_updated")
        .is_some_and(|v| v != &json!(null)));
}

/// Item 2: one table whose documents are not a plain object (here a field name that is not an
/// identifier) makes Convex refuse `json_schemas` for the whole deployment. Not selected, it
/// must change nothing but a warning; the stream survives its periodic schema checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_odd_table_elsewhere_never_stops_check_or_stream() {
    for encoding in [ValueEncoding::Auto, ValueEncoding::Json] {
        let fake = FakeConvex::start(KEY).await.unwrap();
        seed(&fake, "items", 2);
        fake.insert("odd", json!({"hello world": 1.0})).unwrap();
        let src = ConvexSource::new(config(&fake.url(), KEY).with_encoding(encoding))
            .with_tables(vec![table("items")]);
        let report = src.check().await.unwrap();
        assert!(report.is_ready(), "{encoding:?}: {report:?}");
        let warning = report
            .problems
            .iter()
            .find(|p| p.setting == "json_schemas")
            .expect("a json_schemas warning");
        assert!(
            warning.to_string().contains("NoSchemaForExport")
                && warning.to_string().contains("64 top-level fields"),
            "{warning}"
        );
        let tables: Vec<String> = ConvexSource::new(config(&fake.url(), KEY))
            .discover()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.name)
            .collect();
        assert_eq!(tables, vec!["items", "odd"]);
        let mut stream = src.start(StartFrom::Beginning).await.unwrap();
        let events = read_until(&mut stream, |e| {
            matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
        })
        .await
        .unwrap();
        assert_eq!(rows(&events).count(), 2);
        // Past several periodic schema checks (500 ms in tests), new fields included.
        for i in 0..3 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            fake.insert("items", json!({"n": int64(10 + i), "new_field": "x"}))
                .unwrap();
            let events = read_until(&mut stream, |e| matches!(e, ChangeEvent::Commit(_)))
                .await
                .unwrap();
            assert_eq!(rows(&events).count(), 1, "{encoding:?}");
        }
    }
}

/// Item 5: a read-only deploy key reads every export endpoint, so it replicates; `check()`
/// says write checkpoints are off instead of failing, and `write_checkpoint` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_key_streams_with_write_checkpoints_off() {
    const READ_ONLY: &str = "prod:fake|read-only-Key-9";
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_read_only_key(READ_ONLY);
    seed(&fake, "items", 3);
    let src = ConvexSource::new(config(&fake.url(), READ_ONLY)).with_tables(vec![table("items")]);
    let report = src.check().await.unwrap();
    assert!(report.is_ready(), "{report:?}");
    let off = report
        .problems
        .iter()
        .find(|p| p.setting == "write checkpoints")
        .expect("a write-checkpoints warning");
    assert!(
        off.to_string().contains("write checkpoints are off")
            && off.to_string().contains("OperationNotPermitted"),
        "{off}"
    );
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    let events = read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    assert_eq!(rows(&events).count(), 3);
    fake.insert("items", json!({"n": int64(99)})).unwrap();
    let events = read_until(&mut stream, |e| matches!(e, ChangeEvent::Commit(_)))
        .await
        .unwrap();
    assert_eq!(rows(&events).count(), 1);
    let e = src.write_checkpoint().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(e.hint().is_some_and(|h| h.contains("read-only")), "{e:?}");
    // No marker was written by the read-only key.
    assert!(fake.documents(CHECKPOINT_TABLE).is_empty());
}

/// Item 3: a `list_snapshot` page may take the server over a minute; the client waits longer
/// than its ordinary request timeout for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_snapshot_pages_outlast_the_request_timeout() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    seed(&fake, "items", 5);
    fake.set_page_sizes(2, 128);
    let src = ConvexSource::new(
        config(&fake.url(), KEY).with_request_timeout(Duration::from_millis(300)),
    )
    .with_tables(vec![table("items")]);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    fake.set_snapshot_page_delay(Duration::from_millis(700));
    let events = read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    assert_eq!(rows(&events).count(), 5);
    assert_eq!(fake.snapshot_iterator_restarts(), 0);
}

/// Item 3: write checkpoints and checks during a snapshot never call `list_snapshot`, whose
/// one cached iterator they would evict (the next page then walks the log again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_and_checks_never_evict_the_snapshot_iterator() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    seed(&fake, "items", 12);
    fake.set_page_sizes(2, 128);
    fake.set_snapshot_page_delay(Duration::from_millis(150));
    let src = legacy_source(&fake, &["items"]);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { .. }))
    })
    .await
    .unwrap();
    let checkpoint = src.write_checkpoint().await.unwrap();
    assert!(src.check().await.unwrap().is_ready());
    let events = read_until(
        &mut stream,
        |e| matches!(e, ChangeEvent::CheckpointObserved(c) if *c == checkpoint),
    )
    .await
    .unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))));
    assert_eq!(fake.snapshot_iterator_restarts(), 0);
}

/// Item 4: a child component's tables are not the root's. Its table of the same name must not
/// lend the root table its field types (`json_schemas` without `byComponent` merges them),
/// its own tables are not discovered, and its deltas are not replicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_component_tables_stay_out() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.insert("users", json!({"avatar": bytes(b"\x01\x02")}))
        .unwrap();
    let child = |table: &str, fields: serde_json::Value| Write::Insert {
        table: table.into(),
        fields: fields.as_object().cloned().unwrap_or_default(),
    };
    fake.transaction_in_component(
        "auth",
        vec![
            child("users", json!({"avatar": "a URL"})),
            child("sessions", json!({"token": "t"})),
        ],
    )
    .unwrap();
    let tables: Vec<String> = source(&fake, &[])
        .discover()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.name)
        .collect();
    assert_eq!(tables, vec!["users"]);
    // With format=json the types come from json_schemas: Bytes must stay Bytes.
    let src = ConvexSource::new(config(&fake.url(), KEY).with_encoding(ValueEncoding::Json))
        .with_tables(vec![table("users")]);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    let events = read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    let snapshot: Vec<_> = rows(&events).collect();
    assert_eq!(snapshot.len(), 1);
    let row = snapshot[0].new.as_ref().unwrap();
    assert_eq!(
        row.get_by_name(&snapshot[0].table, "avatar"),
        Some(&Value::Blob(vec![1, 2]))
    );
    // The child's writes, then the root's: only the root's arrive.
    fake.transaction_in_component("auth", vec![child("users", json!({"avatar": "b"}))])
        .unwrap();
    fake.insert("users", json!({"avatar": bytes(b"\x03")}))
        .unwrap();
    let events = read_until(&mut stream, |e| matches!(e, ChangeEvent::Commit(_)))
        .await
        .unwrap();
    let streamed: Vec<_> = rows(&events).collect();
    assert_eq!(streamed.len(), 1);
    assert_eq!(
        streamed[0]
            .new
            .as_ref()
            .unwrap()
            .get_by_name(&streamed[0].table, "avatar"),
        Some(&Value::Blob(vec![3]))
    );
}

/// Item 6: a table replaced wholesale (`npx convex import --replace`, streaming import's
/// `replace_tables` / `clear_tables`) sends no deletes; the periodic check sees the row count
/// differ from the rows the stream holds, truncates the table and reads it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_table_is_truncated_and_read_again() {
    replaced_table(ConvexApi::StreamingExport).await;
}

/// The same through the Data Sync API, where the server itself sends the truncate and walks
/// the new tablet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_table_is_truncated_and_read_again_on_data_sync() {
    replaced_table(ConvexApi::DataSync).await;
}

async fn replaced_table(api: ConvexApi) {
    let fake = FakeConvex::start(KEY).await.unwrap();
    seed(&fake, "items", 3);
    seed(&fake, "other", 2);
    let src = source_on(&fake, &["items", "other"], api);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    // Ordinary writes keep the counts in step: no truncate for them.
    let id = fake.insert("items", json!({"n": int64(7)})).unwrap();
    fake.patch("items", &id, json!({"n": int64(8)})).unwrap();
    let other = fake.documents("other")[0]["_id"]
        .as_str()
        .unwrap()
        .to_string();
    fake.delete("other", &other).unwrap();
    let new_ids = fake
        .replace_table(
            "items",
            vec![json!({"n": int64(100)}), json!({"n": int64(101)})],
        )
        .unwrap();
    // Streaming export reads the new tablet inside the truncate's transaction; the Data Sync
    // API walks it at the sync's timestamp, before the new rows were written, so they follow
    // in the log's next transaction.
    let mut seen_truncate = false;
    let mut after = 0;
    let want = new_ids.len();
    let events = read_until(&mut stream, |e| {
        seen_truncate |= matches!(e, ChangeEvent::Truncate(_));
        if seen_truncate && matches!(e, ChangeEvent::Row(r) if r.table.name == table("items")) {
            after += 1;
        }
        seen_truncate && after >= want && matches!(e, ChangeEvent::Commit(_))
    })
    .await
    .unwrap();
    let at = events
        .iter()
        .position(|e| matches!(e, ChangeEvent::Truncate(_)))
        .unwrap();
    let ChangeEvent::Truncate(t) = &events[at] else {
        unreachable!()
    };
    assert_eq!(t.tables, vec![table("items")]);
    let events = &events[at..];
    // (Data Sync: writes to other tables made before the replacement may follow the
    // truncate, since the walk comes first.)
    let mut reread: Vec<String> = rows(events)
        .filter(|r| r.table.name == table("items"))
        .map(id_of)
        .collect();
    reread.sort();
    assert_eq!(reread, new_ids);
    // Once read again, the counts agree: no second truncate.
    fake.insert("items", json!({"n": int64(102)})).unwrap();
    let events = read_until(&mut stream, |e| matches!(e, ChangeEvent::Commit(_)))
        .await
        .unwrap();
    assert_eq!(rows(&events).count(), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    fake.insert("other", json!({"n": int64(1)})).unwrap();
    let events = read_until(
        &mut stream,
        |e| matches!(e, ChangeEvent::Row(r) if r.table.name == table("other")),
    )
    .await
    .unwrap();
    assert!(
        !events.iter().any(|e| matches!(e, ChangeEvent::Truncate(_))),
        "{events:?}"
    );
}

/// On streaming export a replaced table is read again page by page inside the truncate's
/// transaction; a page that fails makes the host discard that transaction, and the stream
/// starts it again, truncate included: one whole transaction reaches the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_while_reading_a_replaced_table_starts_its_transaction_again() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_page_sizes(2, 128);
    seed(&fake, "items", 3);
    // Events reach the test as they are made, so the failure lands inside the transaction.
    let src = legacy_source(&fake, &["items"]).with_stream_options(
        StreamOptions::default()
            .with_tables(vec![table("items")])
            .with_retry(config(&fake.url(), KEY).retry().clone())
            .with_batch_events(1),
    );
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    fake.set_snapshot_page_delay(Duration::from_millis(50));
    let mut new_ids = fake
        .replace_table("items", (0..5).map(|n| json!({"n": int64(n)})).collect())
        .unwrap();
    new_ids.sort();
    let mut failed = false;
    let events = read_until(&mut stream, |e| {
        if matches!(e, ChangeEvent::Truncate(_)) && !failed {
            failed = true;
            fake.fail_next(2, 503);
        }
        failed && matches!(e, ChangeEvent::Commit(_))
    })
    .await
    .unwrap();
    let aborted = events
        .iter()
        .rposition(|e| matches!(e, ChangeEvent::Abort))
        .expect("the open transaction is discarded");
    let after = &events[aborted + 1..];
    assert!(
        matches!(after.first(), Some(ChangeEvent::Begin(_))),
        "{after:?}"
    );
    assert!(
        matches!(after.get(1), Some(ChangeEvent::Truncate(_))),
        "{after:?}"
    );
    let mut reread: Vec<String> = rows(after).map(id_of).collect();
    reread.sort();
    assert_eq!(reread, new_ids);
}

/// The deltas page limit counts rows read, system tables and unselected tables included: a
/// burst of scheduler writes gives empty pages with `hasMore`, which move the position
/// (keepalives) without rows or transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_system_writes_only_keep_alive() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    seed(&fake, "items", 1);
    let src = source(&fake, &["items"]);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    fake.system_writes(1000);
    seed(&fake, "unselected", 300);
    fake.insert("items", json!({"n": int64(5)})).unwrap();
    let events = read_until(&mut stream, |e| matches!(e, ChangeEvent::Commit(_)))
        .await
        .unwrap();
    assert_eq!(rows(&events).count(), 1);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ChangeEvent::Begin(_)))
            .count(),
        1
    );
    let keepalives: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ChangeEvent::Keepalive(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    // 1000 system rows / 128 read per page: several empty pages, each a keepalive.
    assert!(keepalives.len() >= 7, "{}", keepalives.len());
    assert!(keepalives.windows(2).all(|w| w[0] < w[1]));
    // A write checkpoint through the burst still finds its marker.
    fake.system_writes(500);
    let marker = src.write_checkpoint().await.unwrap();
    read_until(
        &mut stream,
        |e| matches!(e, ChangeEvent::CheckpointObserved(c) if *c == marker),
    )
    .await
    .unwrap();
}
