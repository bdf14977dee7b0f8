//! The connector on the Data Sync API: choosing the API, moving a streaming export position
//! over, and the errors of positions that cannot be resumed.

use powersync_source_convex::testing::{int64, FakeConvex};
use powersync_source_convex::ConvexApi;
use powersync_source_core::position::ConvexCursor;
use powersync_source_core::{
    ChangeEvent, ChangeSource, Checkpoint, ErrorKind, Op, Position, SnapshotProgress, StartFrom,
};
use serde_json::json;

use crate::behaviour::{read_until, rows, seed, source_on};
use crate::workload::KEY;

/// The `n` values of the rows in `events`, in order.
fn ns(events: &[ChangeEvent]) -> Vec<String> {
    rows(events)
        .map(|r| format!("{:?}", r.new.as_ref().unwrap().get_by_name(&r.table, "n")))
        .collect()
}

/// Streams from the beginning until `writes` committed transactions after the snapshot have
/// passed; returns the last commit's checkpoint.
async fn stream_to_checkpoint(fake: &FakeConvex, api: ConvexApi, writes: i64) -> Checkpoint {
    let src = source_on(fake, &["items"], api);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    for n in 0..writes {
        fake.insert("items", json!({"n": int64(100 + n)})).unwrap();
    }
    let mut commits = Vec::new();
    read_until(&mut stream, |e| {
        if let ChangeEvent::Commit(c) = e {
            commits.push(c.checkpoint.clone());
        }
        commits.len() as i64 == writes
    })
    .await
    .unwrap();
    commits.pop().unwrap()
}

/// A streaming export checkpoint resumes on the Data Sync API (through
/// `data_sync_cursor_from_deltas`) with exactly the later writes, and the stream's positions
/// are Data Sync ones from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_export_checkpoint_moves_to_data_sync() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    seed(&fake, "items", 3);
    let legacy = stream_to_checkpoint(&fake, ConvexApi::StreamingExport, 2).await;
    assert_eq!(legacy.version(), 1);
    fake.insert("items", json!({"n": int64(7)})).unwrap();
    fake.insert("items", json!({"n": int64(8)})).unwrap();
    for api in [ConvexApi::Auto, ConvexApi::DataSync] {
        let before = fake.requests_to("/api/data_sync_cursor_from_deltas");
        let src = source_on(&fake, &["items"], api);
        let mut stream = src
            .start(StartFrom::Checkpoint(legacy.clone()))
            .await
            .unwrap();
        let mut commits = Vec::new();
        let events = read_until(&mut stream, |e| {
            if let ChangeEvent::Commit(c) = e {
                commits.push(c.checkpoint.clone());
            }
            commits.len() == 2
        })
        .await
        .unwrap();
        assert_eq!(
            ns(&events),
            vec!["Some(Text(\"7\"))", "Some(Text(\"8\"))"],
            "{api:?}"
        );
        assert!(commits.iter().all(|c| c.version() == 2), "{commits:?}");
        let at = ConvexCursor::from_checkpoint(&commits[1]).unwrap();
        assert!(
            at.token().is_some()
                && at.get() > ConvexCursor::from_checkpoint(&legacy).unwrap().get()
        );
        assert_eq!(
            fake.requests_to("/api/data_sync_cursor_from_deltas"),
            before + 1
        );
    }
}

/// `api=auto` on a deployment without the Data Sync API keeps a streaming export checkpoint
/// on streaming export; `api=data_sync` says the deployment lacks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_data_sync_auto_stays_on_streaming_export() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_data_sync_available(false);
    seed(&fake, "items", 2);
    let legacy = stream_to_checkpoint(&fake, ConvexApi::Auto, 1).await;
    assert_eq!(legacy.version(), 1);
    fake.insert("items", json!({"n": int64(9)})).unwrap();
    let src = source_on(&fake, &["items"], ConvexApi::Auto);
    let mut stream = src
        .start(StartFrom::Checkpoint(legacy.clone()))
        .await
        .unwrap();
    let events = read_until(&mut stream, |e| matches!(e, ChangeEvent::Commit(_)))
        .await
        .unwrap();
    assert_eq!(ns(&events), vec!["Some(Text(\"9\"))"]);
    let e = source_on(&fake, &["items"], ConvexApi::DataSync)
        .start(StartFrom::Checkpoint(legacy))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Prerequisite, "{e}");
    assert_eq!(e.code(), Some("404"));
    let e = source_on(&fake, &["items"], ConvexApi::DataSync)
        .start(StartFrom::Beginning)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("404"), "{e}");
}

/// A Data Sync position cannot be resumed on streaming export, and one the deployment no
/// longer holds is history lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sync_positions_that_cannot_be_resumed() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    seed(&fake, "items", 2);
    let at = stream_to_checkpoint(&fake, ConvexApi::DataSync, 1).await;
    assert_eq!(at.version(), 2);
    let e = source_on(&fake, &["items"], ConvexApi::StreamingExport)
        .start(StartFrom::Checkpoint(at.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    // Not a cursor of this deployment: the host's configuration, not lost history.
    let foreign = ConvexCursor::data_sync(5, "not-this-deployment")
        .unwrap()
        .to_checkpoint();
    let src = source_on(&fake, &["items"], ConvexApi::Auto);
    let e = match src.start(StartFrom::Checkpoint(foreign)).await {
        Err(e) => e,
        Ok(mut s) => read_until(&mut s, |_| false).await.unwrap_err(),
    };
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.hint().unwrap().contains("deployment URL"), "{e}");
    fake.expire_history();
    let src = source_on(&fake, &["items"], ConvexApi::Auto);
    let e = match src.start(StartFrom::Checkpoint(at)).await {
        Err(e) => e,
        Ok(mut s) => read_until(&mut s, |_| false).await.unwrap_err(),
    };
    assert_eq!(e.kind(), ErrorKind::HistoryLost, "{e}");
}

/// The initial snapshot on the Data Sync API: every selected table started and done, rows as
/// snapshot rows, `Done` at a Data Sync position; no resume token inside the walk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_sync_is_the_snapshot() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_page_sizes(4, 128);
    seed(&fake, "items", 10);
    seed(&fake, "other", 3);
    fake.create_table("empty");
    let src = source_on(&fake, &["items", "other", "empty"], ConvexApi::DataSync);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    let events = read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    let mut started = Vec::new();
    let mut done = Vec::new();
    for e in &events {
        match e {
            ChangeEvent::Snapshot(SnapshotProgress::TableStarted { table, .. }) => {
                started.push(table.name.clone())
            }
            ChangeEvent::Snapshot(SnapshotProgress::TableDone { table, rows }) => {
                done.push((table.name.clone(), *rows))
            }
            ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { .. }) => {
                panic!("a resume token inside the walk")
            }
            ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint }) => {
                assert_eq!(checkpoint.version(), 2)
            }
            ChangeEvent::Row(r) => assert!(r.snapshot),
            ChangeEvent::Begin(_) | ChangeEvent::Commit(_) => {
                panic!("a transaction in the snapshot")
            }
            _ => {}
        }
    }
    started.sort();
    done.sort();
    assert_eq!(started, vec!["empty", "items", "other"]);
    assert_eq!(
        done,
        vec![
            ("empty".to_string(), 0),
            ("items".to_string(), 10),
            ("other".to_string(), 3)
        ]
    );
    assert_eq!(rows(&events).count(), 13);
}

/// The server's walk alternates with the log when it falls behind: documents already walked
/// come again at later revisions, and deletes, while `snapshotting`. Applied in order, the
/// snapshot ends at the deployment's state, a document sent again is an `Update`, and each
/// table's row count counts a document once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interleaved_initial_sync_ends_at_the_deployment_state() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_page_sizes(3, 128);
    fake.set_data_sync_interleave(true);
    fake.set_snapshot_page_delay(std::time::Duration::from_millis(100));
    let ids = seed(&fake, "items", 12);
    let src = source_on(&fake, &["items"], ConvexApi::DataSync);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    let mut held: std::collections::BTreeMap<String, String> = Default::default();
    let (mut updates, mut deletes, mut writes, mut done_rows) = (0, 0, 0, None);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    'read: loop {
        let batch = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut stream))
            .await
            .expect("the snapshot ends")
            .unwrap()
            .unwrap();
        for e in batch.events {
            match e {
                ChangeEvent::Row(r) => {
                    assert!(r.snapshot);
                    let image = r.new.as_ref().or(r.old.as_ref()).unwrap();
                    let id = format!("{:?}", image.get_by_name(&r.table, "_id").unwrap());
                    match r.op {
                        Op::Delete => {
                            deletes += 1;
                            held.remove(&id);
                        }
                        op => {
                            updates += usize::from(op == Op::Update);
                            let n = format!("{:?}", image.get_by_name(&r.table, "n").unwrap());
                            held.insert(id, n);
                        }
                    }
                }
                ChangeEvent::Snapshot(SnapshotProgress::TableDone { rows, .. }) => {
                    done_rows = Some(rows)
                }
                ChangeEvent::Snapshot(SnapshotProgress::Done { .. }) => break 'read,
                _ => {}
            }
        }
        // Writes while the walk runs: to documents walked already and not yet.
        if writes < 3 {
            writes += 1;
            fake.patch("items", &ids[0], json!({"n": int64(1000 + writes)}))
                .unwrap();
            fake.patch("items", &ids[11], json!({"n": int64(2000 + writes)}))
                .unwrap();
            if writes == 1 {
                fake.delete("items", &ids[1]).unwrap();
                fake.insert("items", json!({"n": int64(3000)})).unwrap();
            }
        }
    }
    let want: std::collections::BTreeMap<String, String> = fake
        .documents("items")
        .iter()
        .map(|d| {
            let n = crate::workload::decode_int64(&d["n"]).unwrap();
            (
                format!(
                    "{:?}",
                    powersync_source_core::Value::Text(d["_id"].as_str().unwrap().into())
                ),
                format!("{:?}", powersync_source_core::Value::Text(n.to_string())),
            )
        })
        .collect();
    assert_eq!(held, want);
    assert!(
        updates > 0 && deletes > 0,
        "updates {updates}, deletes {deletes}"
    );
    // Twelve seeded and one inserted, each counted once (the deleted one was walked before
    // its delete).
    assert_eq!(done_rows, Some(13));
}

/// A table that enters the selection is walked inside one transaction (truncate, then its
/// rows); a request that fails inside it makes the host discard the transaction, and the
/// walk starts again from its first page: one whole transaction reaches the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_inside_a_re_walk_starts_it_again() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_page_sizes(2, 128);
    seed(&fake, "items", 1);
    seed(&fake, "other", 5);
    let at = stream_to_checkpoint(&fake, ConvexApi::DataSync, 1).await;
    // `other` joins the selection: the server walks it at the sync's timestamp.
    fake.set_snapshot_page_delay(std::time::Duration::from_millis(100));
    let src = source_on(&fake, &["items", "other"], ConvexApi::DataSync);
    let mut stream = src.start(StartFrom::Checkpoint(at)).await.unwrap();
    let mut failed = false;
    let events = read_until(&mut stream, |e| {
        if matches!(e, ChangeEvent::Truncate(_)) && !failed {
            failed = true;
            fake.fail_next(3, 503);
        }
        failed && matches!(e, ChangeEvent::Commit(_))
    })
    .await
    .unwrap();
    let aborted = events
        .iter()
        .position(|e| matches!(e, ChangeEvent::Abort))
        .expect("the open transaction is discarded");
    let after = &events[aborted + 1..];
    assert!(
        matches!(after.first(), Some(ChangeEvent::Begin(_))),
        "{after:?}"
    );
    assert!(
        matches!(after.get(1), Some(ChangeEvent::Truncate(t)) if t.tables[0].name == "other"),
        "{after:?}"
    );
    assert_eq!(rows(after).count(), 5, "{after:?}");
    assert!(matches!(after.last(), Some(ChangeEvent::Commit(_))));
}

/// A write checkpoint taken while the initial sync walks (and alternates with the log) is
/// observed, once the snapshot is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_checkpoint_during_the_initial_sync_is_observed() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_page_sizes(3, 128);
    fake.set_data_sync_interleave(true);
    fake.set_snapshot_page_delay(std::time::Duration::from_millis(100));
    seed(&fake, "items", 12);
    let src = source_on(&fake, &["items"], ConvexApi::DataSync);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| matches!(e, ChangeEvent::Row(_)))
        .await
        .unwrap();
    let checkpoint = src.write_checkpoint().await.unwrap();
    let mut done = false;
    read_until(&mut stream, |e| {
        done |= matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }));
        matches!(e, ChangeEvent::CheckpointObserved(c) if *c == checkpoint)
    })
    .await
    .expect("the checkpoint is observed");
    assert!(done, "observed before the snapshot was done");
}
