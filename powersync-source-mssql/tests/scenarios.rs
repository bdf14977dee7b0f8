//! CDC-specific behaviour on the in-memory model: windows, ordering, pairing, retention,
//! capture-instance switches, restarts, write checkpoints, lag.

use std::time::Duration;

use powersync_source_core::{
    ChangeEvent, ChangeSource, Checkpoint, ErrorKind, OldImage, Op as RowOp, SnapshotProgress,
    StartFrom, TableName, Value,
};
use powersync_source_mssql::testing::StreamPoint;
use powersync_source_testkit::conformance::Oracle;

use crate::fake::{lsn_value, text_type, FakeServer, Op};
use crate::support::*;
use crate::workload::fake_source;

async fn started(
    server: &FakeServer,
    tables: Vec<TableName>,
    options: &str,
) -> (powersync_source_core::ChangeStream, Vec<ChangeEvent>) {
    let source = fake_source(server, tables, options);
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let events = read_until(&mut stream, snapshot_done).await.unwrap();
    (stream, events)
}

fn commit_checkpoints(events: &[ChangeEvent]) -> Vec<Checkpoint> {
    events
        .iter()
        .filter_map(|e| match e {
            ChangeEvent::Commit(c) => Some(c.checkpoint.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn windows_are_capped_contiguous_and_never_overlap() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let (mut stream, _) = started(&server, vec![t.clone()], "&polling_batch_size=3").await;
    server.set_capture_paused(true);
    let mut commit_lsns = Vec::new();
    for i in 0..10 {
        commit_lsns.push(server.transaction(&[ins(&t, i, "x")]));
    }
    server.lock().window_calls.clear();
    server.set_capture_paused(false);
    let events = read_until(&mut stream, |e| commits(e) >= 10).await.unwrap();
    let cps = commit_checkpoints(&events);
    assert!(cps.windows(2).all(|w| w[0] < w[1]), "checkpoints increase");
    for (cp, lsn) in cps.iter().zip(&commit_lsns) {
        assert_eq!(StreamPoint::from_checkpoint(cp).unwrap().position.lsn, *lsn);
    }
    let s = server.lock();
    // Every window asked lsn_time_mapping for at most 3 transactions.
    let busy: Vec<_> = s.window_calls.iter().filter(|w| w.3 > 0).collect();
    assert!(
        busy.len() >= 4,
        "10 transactions need at least 4 windows of 3: {busy:?}"
    );
    assert!(s.window_calls.iter().all(|w| w.2 == 3 && w.3 <= 3));
    // Reads of the change table: each window holds at most 3 commits, and the next window
    // starts right after the previous one ends (inclusive bounds, increment_lsn).
    let reads: Vec<_> = s
        .change_calls
        .iter()
        .filter(|c| c.0 == "dbo_items" && c.3.is_none())
        .map(|c| (c.1, c.2))
        .collect();
    for (from, to) in &reads {
        let n = commit_lsns
            .iter()
            .filter(|l| *l >= from && *l <= to)
            .count();
        assert!(n <= 3, "window {from:?}..{to:?} holds {n} transactions");
    }
    for w in reads.windows(2) {
        assert_eq!(
            lsn_value(w[1].0),
            lsn_value(w[0].1) + 1,
            "windows are contiguous"
        );
    }
}

#[tokio::test]
async fn updates_pair_before_and_after_images() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let (mut stream, _) = started(&server, vec![t.clone()], "").await;
    server.transaction(&[ins(&t, 1, "a")]);
    server.transaction(&[upd(&t, 1, "b")]);
    server.transaction(&[del(&t, 1)]);
    let events = read_until(&mut stream, |e| commits(e) >= 3).await.unwrap();
    let rows: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ChangeEvent::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 3, "{:?}", summarize(&events));
    assert_eq!(rows[1].op, RowOp::Update);
    assert_eq!(rows[1].old_image, OldImage::Full);
    assert_eq!(
        rows[1].old.as_ref().unwrap().values(),
        &[Value::Integer(1), Value::Text("a".into())]
    );
    assert_eq!(
        rows[1].new.as_ref().unwrap().values(),
        &[Value::Integer(1), Value::Text("b".into())]
    );
    assert_eq!(rows[2].op, RowOp::Delete);
    assert_eq!(
        rows[2].old.as_ref().unwrap().values(),
        &[Value::Integer(1), Value::Text("b".into())]
    );
}

#[tokio::test]
async fn rows_of_several_tables_keep_commit_and_statement_order() {
    let server = FakeServer::new();
    let a = simple_table(&server, "a");
    let b = simple_table(&server, "b");
    let (mut stream, _) = started(&server, vec![a.clone(), b.clone()], "").await;
    server.transaction(&[ins(&b, 1, "b1"), ins(&a, 1, "a1")]);
    server.transaction(&[
        ins(&a, 2, "a2"),
        ins(&b, 2, "b2"),
        upd(&a, 1, "a1'"),
        del(&b, 1),
        ins(&a, 3, "a3"),
    ]);
    server.transaction(&[ins(&b, 3, "b3")]);
    let events = read_until(&mut stream, |e| commits(e) >= 3).await.unwrap();
    let got: Vec<String> = summarize(&events)
        .into_iter()
        .filter(|s| !s.starts_with("schema"))
        .collect();
    assert_eq!(
        got,
        vec![
            "begin",
            "insert b () -> (1,b1)",
            "insert a () -> (1,a1)",
            "commit",
            "begin",
            "insert a () -> (2,a2)",
            "insert b () -> (2,b2)",
            "update a (1,a1) -> (1,a1')",
            "delete b (1,b1) -> ()",
            "insert a () -> (3,a3)",
            "commit",
            "begin",
            "insert b () -> (3,b3)",
            "commit",
        ]
    );
}

#[tokio::test]
async fn resuming_from_any_checkpoint_yields_exactly_the_rest() {
    let server = FakeServer::new();
    let a = simple_table(&server, "a");
    let b = simple_table(&server, "b");
    let (mut stream, _) =
        started(&server, vec![a.clone(), b.clone()], "&polling_batch_size=4").await;
    for i in 0..12 {
        let ops = match i % 3 {
            0 => vec![ins(&a, i, "x"), ins(&b, i, "y")],
            1 => vec![upd(&a, i - 1, "z")],
            _ => vec![del(&b, i - 2), ins(&a, i, "w")],
        };
        server.transaction(&ops);
    }
    let all = read_until(&mut stream, |e| commits(e) >= 12).await.unwrap();
    drop(stream);
    let full = summarize(&all);
    let cps = commit_checkpoints(&all);
    let source = fake_source(&server, vec![a.clone(), b.clone()], "&polling_batch_size=4");
    for (k, cp) in cps.iter().enumerate() {
        let mut resumed = source
            .start(StartFrom::Checkpoint(cp.clone()))
            .await
            .unwrap();
        let want = 12 - (k + 1);
        let events = if want == 0 {
            read_until(&mut resumed, |e| {
                e.iter().any(|e| matches!(e, ChangeEvent::Keepalive(_)))
            })
            .await
            .unwrap()
        } else {
            read_until(&mut resumed, |e| commits(e) >= want)
                .await
                .unwrap()
        };
        let got: Vec<String> = summarize(&events)
            .into_iter()
            .filter(|s| !s.starts_with("schema"))
            .collect();
        // The expected suffix: everything after the k-th commit.
        let pos = full
            .iter()
            .enumerate()
            .filter(|(_, s)| *s == "commit")
            .nth(k)
            .map(|(i, _)| i)
            .unwrap();
        let expect: Vec<String> = full[pos + 1..]
            .iter()
            .filter(|s| !s.starts_with("schema"))
            .cloned()
            .collect();
        assert_eq!(got, expect, "resumed after commit {k}");
        assert_eq!(commit_checkpoints(&events), cps[k + 1..].to_vec());
    }
}

#[tokio::test]
async fn cleanup_below_the_position_is_fine_above_it_is_history_lost() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let (mut stream, _) = started(&server, vec![t.clone()], "").await;
    let l1 = server.transaction(&[ins(&t, 1, "a")]);
    let events = read_until(&mut stream, |e| commits(e) >= 1).await.unwrap();
    let cp = commit_checkpoints(&events)[0].clone();
    drop(stream);
    // Cleanup up to what the stream already read: resuming still works.
    server.cleanup(l1);
    let source = fake_source(&server, vec![t.clone()], "");
    let mut resumed = source
        .start(StartFrom::Checkpoint(cp.clone()))
        .await
        .unwrap();
    server.transaction(&[ins(&t, 2, "b")]);
    read_until(&mut resumed, |e| commits(e) >= 1).await.unwrap();
    drop(resumed);
    // Cleanup past an unread transaction: HistoryLost, with the fix in the hint.
    let l3 = server.transaction(&[ins(&t, 3, "c")]);
    server.cleanup(l3);
    let mut resumed = source.start(StartFrom::Checkpoint(cp)).await.unwrap();
    let e = read_error(&mut resumed).await;
    assert_eq!(e.kind(), ErrorKind::HistoryLost, "{e}");
    assert!(e.hint().unwrap_or_default().contains("resnapshot"), "{e}");
}

#[tokio::test]
async fn a_second_capture_instance_takes_over_at_its_start_lsn() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let (mut stream, _) = started(&server, vec![t.clone()], "").await;
    server.transaction(&[ins(&t, 1, "a")]);
    let first = read_until(&mut stream, |e| commits(e) >= 1).await.unwrap();
    let before_switch = commit_checkpoints(&first)[0].clone();
    assert!(
        before_switch.as_str().ends_with("~dbo.items=dbo_items"),
        "{before_switch}"
    );
    // The DBA adds a column and a second capture instance; both capture from now on.
    server.add_column(&t, "w", text_type());
    server.enable_cdc(&t, "dbo_items_v2");
    server.transaction(&[Op::Update(
        t.clone(),
        vec![Value::Integer(1)],
        vec![("w".into(), Value::Text("new".into()))],
    )]);
    server.transaction(&[ins(&t, 2, "b")]);
    let events = read_until(&mut stream, |e| commits(e) >= 2).await.unwrap();
    assert_eq!(
        summarize(&events)
            .into_iter()
            .filter(|s| s != "observed")
            .collect::<Vec<_>>(),
        vec![
            "begin",
            "schema dbo.items [id,v,w]",
            // v is nvarchar(max) and not changed: CDC leaves it NULL in both images.
            "update items (1,unchanged,null) -> (1,unchanged,new)",
            "commit",
            "begin",
            "insert items () -> (2,b,null)",
            "commit",
        ]
    );
    let after = commit_checkpoints(&events);
    assert!(
        after[0].as_str().ends_with("~dbo.items=dbo_items_v2"),
        "{}",
        after[0]
    );
    drop(stream);

    // Resuming from before the switch reads the same, even once the old instance is gone
    // (its successor covers every change after the checkpoint).
    server.disable_instance("dbo_items");
    let source = fake_source(&server, vec![t.clone()], "");
    let mut resumed = source
        .start(StartFrom::Checkpoint(before_switch))
        .await
        .unwrap();
    let again = read_until(&mut resumed, |e| commits(e) >= 2).await.unwrap();
    assert_eq!(summarize(&again), summarize(&events));
}

#[tokio::test]
async fn an_instance_dropped_too_early_is_a_schema_error() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let (mut stream, _) = started(&server, vec![t.clone()], "").await;
    server.transaction(&[ins(&t, 1, "a")]);
    let first = read_until(&mut stream, |e| commits(e) >= 1).await.unwrap();
    let cp = commit_checkpoints(&first)[0].clone();
    drop(stream);
    // A change only the old instance holds, then the old instance is replaced.
    server.transaction(&[ins(&t, 2, "b")]);
    server.enable_cdc(&t, "dbo_items_v2");
    server.disable_instance("dbo_items");
    let source = fake_source(&server, vec![t.clone()], "");
    let err = match source.start(StartFrom::Checkpoint(cp)).await {
        Err(e) => e,
        Ok(mut s) => read_error(&mut s).await,
    };
    assert_eq!(err.kind(), ErrorKind::Schema, "{err}");
    assert!(err.to_string().contains("dbo_items"), "{err}");
}

#[tokio::test]
async fn a_dropped_table_is_a_schema_error() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let (mut stream, _) = started(&server, vec![t.clone()], "").await;
    server.transaction(&[ins(&t, 1, "a")]);
    read_until(&mut stream, |e| commits(e) >= 1).await.unwrap();
    server.drop_table(&t);
    let e = read_error(&mut stream).await;
    assert_eq!(e.kind(), ErrorKind::Schema, "{e}");
    assert!(e.to_string().contains("dropped"), "{e}");
}

#[tokio::test]
async fn a_connection_lost_inside_a_transaction_aborts_and_resends_it() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let source = fake_source(&server, vec![t.clone()], "&page_rows=100").with_retry(
        powersync_source_core::RetryPolicy {
            initial_delay: Duration::from_millis(10),
            ..Default::default()
        },
    );
    let mut oracle = Oracle::strict();
    let mut stream =
        powersync_source_testkit::conformance::start_through_snapshot(&source, &mut oracle)
            .await
            .unwrap();
    server.set_capture_paused(true);
    let ops: Vec<Op> = (0..1000).map(|i| ins(&t, i, "x")).collect();
    server.transaction(&ops);
    // A page read in the middle of the transaction fails.
    server.lock().fail_after = Some(2);
    server.set_capture_paused(false);
    let events = read_until(&mut stream, |e| commits(e) >= 1).await.unwrap();
    let s = summarize(&events);
    let abort = s.iter().position(|e| e == "abort").expect("an abort");
    // Part of the transaction went out before the failure (pages of 100 rows).
    let partial = s[..abort]
        .iter()
        .filter(|e| e.starts_with("insert"))
        .count();
    assert!(
        partial > 0 && partial < 1000 && partial % 100 == 0,
        "{partial}"
    );
    assert_eq!(
        s[abort + 1..]
            .iter()
            .filter(|e| e.starts_with("insert"))
            .count(),
        1000
    );
    oracle.apply_batch(events).unwrap();
    assert_eq!(oracle.rows.len(), 1000);
    assert!(stream.stats().snapshot().reconnects >= 1);
}

#[tokio::test]
async fn write_checkpoint_waits_for_the_capture_job_within_a_bound() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let (mut stream, _) = started(&server, vec![t.clone()], "").await;
    let source = fake_source(&server, vec![t.clone()], "");
    server.set_capture_paused(true);
    let capture = {
        let server = server.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.set_capture_paused(false);
        })
    };
    let started_at = std::time::Instant::now();
    let marker = source.write_checkpoint().await.unwrap();
    assert!(started_at.elapsed() >= Duration::from_millis(250));
    capture.await.unwrap();
    let events = read_until(&mut stream, |e| {
        e.iter()
            .any(|e| matches!(e, ChangeEvent::CheckpointObserved(c) if *c == marker))
    })
    .await
    .unwrap();
    // The checkpoint row is never a row change.
    assert!(!events.iter().any(|e| matches!(e, ChangeEvent::Row(_))));

    // A capture job that never runs: a bounded, explained failure.
    server.set_capture_paused(true);
    let e = source
        .with_marker_timeout(Duration::from_millis(300))
        .write_checkpoint()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert!(e.to_string().contains("capture job"), "{e}");
}

#[tokio::test]
async fn lag_comes_from_lsn_time_mapping() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let (mut stream, _) = started(&server, vec![t.clone()], "").await;
    server.lock().commit_age_secs = 7;
    server.transaction(&[ins(&t, 1, "a")]);
    let events = read_until(&mut stream, |e| commits(e) >= 1).await.unwrap();
    let lag = stream.stats().snapshot().lag_seconds;
    assert!((6.0..60.0).contains(&lag), "lag {lag}");
    let commit_time = events.iter().find_map(|e| match e {
        ChangeEvent::Commit(c) => c.commit_time,
        _ => None,
    });
    assert!(commit_time.is_some());
}

#[tokio::test]
async fn legacy_lob_columns_not_in_an_update_are_unchanged() {
    let server = FakeServer::new();
    let t = TableName::new("dbo", "docs");
    server.create_table(
        &t,
        &[
            ("id", crate::fake::bigint_type()),
            (
                "body",
                powersync_source_mssql::testing::SqlType::simple("ntext"),
            ),
            ("v", text_type()),
        ],
        &["id"],
    );
    server.enable_cdc(&t, "dbo_docs");
    let (mut stream, _) = started(&server, vec![t.clone()], "").await;
    server.transaction(&[Op::Insert(
        t.clone(),
        vec![
            ("id".into(), Value::Integer(1)),
            ("body".into(), Value::Text("long".into())),
            ("v".into(), Value::Text("a".into())),
        ],
    )]);
    server.transaction(&[Op::Update(
        t.clone(),
        vec![Value::Integer(1)],
        vec![("v".into(), Value::Text("b".into()))],
    )]);
    server.transaction(&[Op::Update(
        t.clone(),
        vec![Value::Integer(1)],
        vec![("body".into(), Value::Text("longer".into()))],
    )]);
    // text/ntext/image are NULL in delete rows (Estuary PR 1929): not sent, not NULL.
    server.transaction(&[Op::Delete(t.clone(), vec![Value::Integer(1)])]);
    let events = read_until(&mut stream, |e| commits(e) >= 4).await.unwrap();
    assert!(
        summarize(&events).contains(&"delete docs (1,unchanged,b) -> ()".to_string()),
        "{:?}",
        summarize(&events)
    );
    assert_eq!(
        summarize(&events)
            .into_iter()
            .filter(|s| s.starts_with("update"))
            .collect::<Vec<_>>(),
        vec![
            "update docs (1,unchanged,a) -> (1,unchanged,b)",
            // v is nvarchar(max) and not changed: CDC leaves it NULL in both images.
            "update docs (1,unchanged,unchanged) -> (1,longer,unchanged)",
        ]
    );
}

#[tokio::test]
async fn an_interrupted_snapshot_resumes_from_its_last_chunk() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    server.transaction(&(0..1000).map(|i| ins(&t, i, "v0")).collect::<Vec<_>>());
    let source = fake_source(&server, vec![t.clone()], "");
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut oracle = Oracle::default();
    let first = read_until(&mut stream, |e| {
        e.iter()
            .any(|e| matches!(e, ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { .. })))
    })
    .await
    .unwrap();
    let resume = first
        .iter()
        .rev()
        .find_map(|e| match e {
            ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { resume, .. }) => {
                Some((**resume).clone())
            }
            _ => None,
        })
        .unwrap();
    assert!(first.iter().any(|e| matches!(
        e,
        ChangeEvent::Snapshot(SnapshotProgress::TableStarted {
            estimated_rows: Some(1000),
            ..
        })
    )));
    // Keep only what precedes the last chunk boundary (what a host would have stored).
    let cut = first
        .iter()
        .rposition(|e| matches!(e, ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { .. })))
        .unwrap();
    oracle.apply_batch(first[..=cut].to_vec()).unwrap();
    drop(stream);
    // Changes while the host was down: below and above the resume key, and new rows.
    server.transaction(&[
        upd(&t, 5, "changed"),
        upd(&t, 900, "changed"),
        del(&t, 6),
        del(&t, 901),
        ins(&t, 5000, "new"),
    ]);
    let token = resume.to_token();
    let mut stream = source
        .start(StartFrom::parse(&token).unwrap())
        .await
        .unwrap();
    powersync_source_testkit::conformance::drive(
        &mut stream,
        &mut oracle,
        Duration::from_secs(10),
        |o| o.snapshot_done,
    )
    .await
    .unwrap();
    let marker = source.write_checkpoint().await.unwrap();
    powersync_source_testkit::conformance::drive(
        &mut stream,
        &mut oracle,
        Duration::from_secs(10),
        |o| o.observed.contains(&marker),
    )
    .await
    .unwrap();
    let table: std::collections::BTreeMap<i64, std::collections::BTreeMap<String, Value>> = server
        .rows(&t)
        .into_iter()
        .map(|r| (r[0].1.as_integer().unwrap(), r.into_iter().collect()))
        .collect();
    assert_eq!(oracle.diff(&table), None);
}

#[tokio::test]
async fn the_snapshot_start_is_exact_under_concurrent_writes() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    server.transaction(&(0..500).map(|i| ins(&t, i, "v")).collect::<Vec<_>>());
    let writer = {
        let (server, t) = (server.clone(), t.clone());
        tokio::spawn(async move {
            for i in 0..300 {
                server.transaction(&[ins(&t, 10_000 + i, "w"), upd(&t, i, "u")]);
                tokio::task::yield_now().await;
            }
        })
    };
    let source = fake_source(&server, vec![t.clone()], "");
    // Strict: an insert seen by both the snapshot and the stream fails the test.
    let mut oracle = Oracle::strict();
    let mut stream =
        powersync_source_testkit::conformance::start_through_snapshot(&source, &mut oracle)
            .await
            .unwrap();
    writer.await.unwrap();
    let marker = source.write_checkpoint().await.unwrap();
    powersync_source_testkit::conformance::drive(
        &mut stream,
        &mut oracle,
        Duration::from_secs(10),
        |o| o.observed.contains(&marker),
    )
    .await
    .unwrap();
    let table: std::collections::BTreeMap<i64, std::collections::BTreeMap<String, Value>> = server
        .rows(&t)
        .into_iter()
        .map(|r| (r[0].1.as_integer().unwrap(), r.into_iter().collect()))
        .collect();
    assert_eq!(oracle.diff(&table), None);
}

#[tokio::test]
async fn checkpoints_inside_a_transaction_are_refused() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let source = fake_source(&server, vec![t], "");
    let cp = Checkpoint::parse("mssql:v1:00000000000000000100:00000000000000000001").unwrap();
    let e = source.start(StartFrom::Checkpoint(cp)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let garbage = Checkpoint::parse("mssql:v1:nope").unwrap();
    assert_eq!(
        source
            .start(StartFrom::Checkpoint(garbage))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Config
    );
}

#[tokio::test]
async fn an_old_instance_dropped_during_a_poll_that_needs_it_ends_with_schema() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let source =
        fake_source(&server, vec![t.clone()], "").with_retry(powersync_source_core::RetryPolicy {
            initial_delay: Duration::from_millis(10),
            ..Default::default()
        });
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, snapshot_done).await.unwrap();
    server.set_capture_paused(true);
    // A change only the old instance holds, then the successor, then the old one is dropped
    // between the poll's instance listing and its read (the read fails with "invalid object").
    server.transaction(&[ins(&t, 1, "a")]);
    server.enable_cdc(&t, "dbo_items_v2");
    server.transaction(&[ins(&t, 2, "b")]);
    server.lock().drop_before_next_read = Some("dbo_items".into());
    server.set_capture_paused(false);
    let e = read_error(&mut stream).await;
    // Retried once as a race, then reported as the loss it is.
    assert_eq!(e.kind(), ErrorKind::Schema, "{e}");
    assert!(e.to_string().contains("capture instance dbo_items"), "{e}");
    assert!(stream.stats().snapshot().reconnects >= 1);
}

#[tokio::test]
async fn a_connection_lost_during_the_snapshot_continues_after_the_last_row() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    server.transaction(&(0..1000).map(|i| ins(&t, i, "v0")).collect::<Vec<_>>());
    server.lock().fail_snapshot_after = Some(2);
    let source =
        fake_source(&server, vec![t.clone()], "").with_retry(powersync_source_core::RetryPolicy {
            initial_delay: Duration::from_millis(10),
            ..Default::default()
        });
    // The oracle catches duplicated streamed inserts; the row counter catches a snapshot row
    // read twice.
    let mut oracle = Oracle::strict();
    let mut stream =
        powersync_source_testkit::conformance::start_through_snapshot(&source, &mut oracle)
            .await
            .unwrap();
    assert!(stream.stats().snapshot().reconnects >= 1);
    assert_eq!(stream.stats().snapshot().rows, 1000, "every row read once");
    server.transaction(&[upd(&t, 1, "after")]);
    let marker = source.write_checkpoint().await.unwrap();
    powersync_source_testkit::conformance::drive(
        &mut stream,
        &mut oracle,
        Duration::from_secs(10),
        |o| o.observed.contains(&marker),
    )
    .await
    .unwrap();
    let table: std::collections::BTreeMap<i64, std::collections::BTreeMap<String, Value>> = server
        .rows(&t)
        .into_iter()
        .map(|r| (r[0].1.as_integer().unwrap(), r.into_iter().collect()))
        .collect();
    assert_eq!(oracle.diff(&table), None);
}

/// Ids of the inserted rows, in stream order.
fn inserted_ids(events: &[ChangeEvent]) -> Vec<i64> {
    events
        .iter()
        .filter_map(|e| match e {
            ChangeEvent::Row(r) if r.op == RowOp::Insert => {
                r.new.as_ref()?.get(0).and_then(Value::as_integer)
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_healthy_longer_than_give_up_after_survives_a_restart() {
    // The retry budget is per outage: a stream that has been healthy for longer than
    // `give_up_after` since its previous outage gets the whole budget again. With one backoff
    // for the life of the stream (or one never reset after the first blip), the restart below
    // would be final, since the first outage started more than `give_up_after` before it.
    let give_up_after = Duration::from_secs(2);
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    server.transaction(&[ins(&t, 1, "a"), ins(&t, 2, "b")]);
    let options = powersync_source_core::StreamOptions::default()
        .with_tables(vec![t.clone()])
        .with_retry(powersync_source_core::RetryPolicy {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            jitter: 0.0,
            max_attempts: None,
            give_up_after: Some(give_up_after),
            ..Default::default()
        });
    let source = fake_source(&server, vec![], "").with_stream_options(options);
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut events = read_until(&mut stream, snapshot_done).await.unwrap();
    let mut want = vec![1, 2];
    // A first, short outage: the stream reconnects and goes on.
    server.kill(Duration::from_millis(200));
    let mut id = 100;
    let healthy_since = std::time::Instant::now();
    // Healthy for longer than give_up_after, delivering a transaction now and then.
    while healthy_since.elapsed() < give_up_after + Duration::from_millis(500) {
        server.transaction(&[ins(&t, id, "x")]);
        want.push(id);
        id += 1;
        let seen = commits(&events);
        events.extend(read_until(&mut stream, |e| commits(e) >= 1).await.unwrap());
        assert!(commits(&events) > seen);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A restart: every connection broken and refused for 700 ms (several retries, well
    // inside one budget), with transactions committed while the server is unreachable.
    server.kill(Duration::from_millis(700));
    for i in 0..5 {
        server.transaction(&[ins(&t, 1000 + i, "during"), upd(&t, 1, "during")]);
        want.push(1000 + i);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.transaction(&[ins(&t, 2000, "after")]);
    want.push(2000);
    events.extend(
        read_until(&mut stream, |e| inserted_ids(e).contains(&2000))
            .await
            .unwrap(),
    );
    // Everything, once, in commit order (no abort: the outage hit between transactions).
    assert_eq!(
        inserted_ids(&events),
        want,
        "no duplicate, no gap, in order"
    );
    let updates = events
        .iter()
        .filter(|e| matches!(e, ChangeEvent::Row(r) if r.op == RowOp::Update))
        .count();
    assert_eq!(updates, 5);
    let stats = stream.stats().snapshot();
    assert!(
        stats.reconnects >= 3,
        "both outages were retried: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_stream_task_reaches_the_host_as_internal() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let ops: Vec<Op> = (0..10).map(|i| ins(&t, i, "x")).collect();
    server.transaction(&ops);
    let options = powersync_source_core::StreamOptions::default()
        .with_tables(vec![t.clone()])
        .with_panic_after_rows(4);
    let source = fake_source(&server, vec![], "").with_stream_options(options);
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let e = read_error(&mut stream).await;
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    assert!(e.to_string().contains("panicked"), "{e}");
    // The error is final: the stream ends after it.
    let end = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut stream),
    )
    .await;
    assert!(matches!(end, Ok(None)), "the stream ends after the panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_hold_at_most_batch_events() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let ops: Vec<Op> = (0..40).map(|i| ins(&t, i, "snap")).collect();
    server.transaction(&ops);
    let options = powersync_source_core::StreamOptions::default()
        .with_tables(vec![t.clone()])
        .with_batch_events(7);
    let source = fake_source(&server, vec![], "").with_stream_options(options);
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let ops: Vec<Op> = (100..150).map(|i| ins(&t, i, "txn")).collect();
    server.transaction(&ops);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (mut sizes, mut events) = (Vec::new(), Vec::new());
    while commits(&events) < 1 {
        let batch = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut stream))
            .await
            .expect("the transaction within 10 s")
            .expect("the stream goes on")
            .unwrap();
        sizes.push(batch.events.len());
        events.extend(batch.events);
    }
    assert!(sizes.iter().all(|n| *n <= 7), "{sizes:?}");
    // The snapshot and the 50-row transaction went through, split across batches.
    assert_eq!(inserted_ids(&events).len(), 90);
    assert!(sizes.len() >= 90 / 7, "{sizes:?}");
}
