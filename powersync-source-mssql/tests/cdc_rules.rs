//! The data-shape rules of real SQL Server CDC that the connector must follow, each on the
//! model with the document or peer test that states it (the model's comments cite them too).

use powersync_source_core::{ChangeEvent, ChangeSource, StartFrom, TableName, Value};
use powersync_source_mssql::testing::{CheckpointShape, SqlType};

use crate::fake::{bigint_type, text_type, FakeServer, Op};
use crate::support::*;
use crate::workload::fake_source;

async fn started(
    server: &FakeServer,
    tables: Vec<TableName>,
) -> (powersync_source_core::ChangeStream, Vec<ChangeEvent>) {
    let source = fake_source(server, tables, "");
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let events = read_until(&mut stream, snapshot_done).await.unwrap();
    (stream, events)
}

fn sized(name: &str, max_length: i32) -> SqlType {
    SqlType {
        name: name.into(),
        max_length,
        precision: 0,
        scale: 0,
    }
}

fn rows_of(events: &[ChangeEvent], prefix: &str) -> Vec<String> {
    summarize(events)
        .into_iter()
        .filter(|s| s.starts_with(prefix))
        .collect()
}

/// Review finding 1 (Microsoft's `cdc.fn_cdc_get_all_changes` page; Debezium PR 7452 and PR
/// 8078; Materialize `test/sql-server-cdc/varchar-max.td`): an update that does not touch a
/// `varchar(max)`/`nvarchar(max)`/`varbinary(max)` column leaves it NULL in both images. The
/// replica must keep the value: `Unchanged`, never NULL. A max column set to NULL by the update
/// (its mask bit set) is a real NULL.
#[tokio::test]
async fn unchanged_max_columns_are_unchanged_not_null() {
    let server = FakeServer::new();
    let t = TableName::new("dbo", "docs");
    server.create_table(
        &t,
        &[
            ("id", bigint_type()),
            ("title", sized("nvarchar", 100)),
            ("body", text_type()),
            ("raw", sized("varbinary", -1)),
        ],
        &["id"],
    );
    server.enable_cdc(&t, "dbo_docs");
    let (mut stream, _) = started(&server, vec![t.clone()]).await;
    let long = "x".repeat(9000);
    server.transaction(&[Op::Insert(
        t.clone(),
        vec![
            ("id".into(), Value::Integer(1)),
            ("title".into(), Value::Text("a".into())),
            ("body".into(), Value::Text(long.clone())),
            ("raw".into(), Value::Blob(vec![1, 2])),
        ],
    )]);
    server.transaction(&[Op::Update(
        t.clone(),
        vec![Value::Integer(1)],
        vec![("title".into(), Value::Text("b".into()))],
    )]);
    server.transaction(&[Op::Update(
        t.clone(),
        vec![Value::Integer(1)],
        vec![
            ("body".into(), Value::Null),
            ("raw".into(), Value::Blob(vec![3])),
        ],
    )]);
    let events = read_until(&mut stream, |e| commits(e) >= 3).await.unwrap();
    assert_eq!(
        rows_of(&events, "update"),
        vec![
            "update docs (1,a,unchanged,unchanged) -> (1,b,unchanged,unchanged)".to_string(),
            format!("update docs (1,b,{long},[01, 02]) -> (1,b,null,[03])"),
        ]
    );
}

/// Review finding 2 (Microsoft: "Computed columns that are included in a capture instance
/// always have a value of NULL"; Materialize `computed-columns.td` refuses them, Estuary's
/// `TestCapture-ComputedColumn` leaves them out): a computed column is neither streamed as NULL
/// nor snapshotted with its value; the schema leaves it out, so snapshot and stream agree.
#[tokio::test]
async fn computed_columns_are_left_out_of_snapshot_and_stream() {
    let server = FakeServer::new();
    let t = TableName::new("dbo", "lines");
    server.create_table(
        &t,
        &[
            ("id", bigint_type()),
            ("qty", bigint_type()),
            ("total", bigint_type()),
        ],
        &["id"],
    );
    server.mark_computed(&t, "total");
    server.enable_cdc(&t, "dbo_lines");
    let line = |id: i64, qty: i64| {
        Op::Insert(
            t.clone(),
            vec![
                ("id".into(), Value::Integer(id)),
                ("qty".into(), Value::Integer(qty)),
                ("total".into(), Value::Integer(qty * 10)),
            ],
        )
    };
    server.transaction(&[line(1, 2)]);
    let (mut stream, snapshot) = started(&server, vec![t.clone()]).await;
    server.transaction(&[line(2, 3)]);
    server.transaction(&[Op::Update(
        t.clone(),
        vec![Value::Integer(1)],
        vec![
            ("qty".into(), Value::Integer(5)),
            ("total".into(), Value::Integer(50)),
        ],
    )]);
    let events = read_until(&mut stream, |e| commits(e) >= 2).await.unwrap();
    let mut all = summarize(&snapshot);
    all.extend(summarize(&events));
    let all: Vec<String> = all
        .into_iter()
        .filter(|s| s.starts_with("schema") || s.contains("lines"))
        .collect();
    assert_eq!(
        all,
        vec![
            "schema dbo.lines [id,qty]",
            "snapshot insert lines () -> (1,2)",
            "insert lines () -> (2,3)",
            "update lines (1,2) -> (1,5)",
        ]
    );
}

/// Review finding 3 (About Change Data Capture: "If a tracked column is dropped, null values
/// will be supplied for the column in the subsequent change entries"; Materialize
/// `upstream-schema-changes.td`): after `ALTER TABLE … DROP COLUMN` without a new capture
/// instance, the snapshot must not select the missing column (the server raises error 207);
/// it reads NULL for it, as the change rows do.
#[tokio::test]
async fn a_column_dropped_without_a_new_instance_reads_null() {
    let server = FakeServer::new();
    let t = TableName::new("dbo", "items");
    server.create_table(
        &t,
        &[
            ("id", bigint_type()),
            ("v", sized("nvarchar", 40)),
            ("old", sized("nvarchar", 40)),
        ],
        &["id"],
    );
    server.enable_cdc(&t, "dbo_items");
    server.transaction(&[Op::Insert(
        t.clone(),
        vec![
            ("id".into(), Value::Integer(1)),
            ("v".into(), Value::Text("a".into())),
            ("old".into(), Value::Text("x".into())),
        ],
    )]);
    server.drop_column(&t, "old");
    let (mut stream, snapshot) = started(&server, vec![t.clone()]).await;
    server.transaction(&[ins(&t, 2, "b")]);
    let events = read_until(&mut stream, |e| commits(e) >= 1).await.unwrap();
    let mut all = summarize(&snapshot);
    all.extend(summarize(&events));
    let all: Vec<String> = all
        .into_iter()
        .filter(|s| s.starts_with("schema") || s.contains("items"))
        .collect();
    assert_eq!(
        all,
        vec![
            "schema dbo.items [id,v,old]",
            "snapshot insert items () -> (1,a,null)",
            "insert items () -> (2,b,null)",
        ]
    );
}

/// Review finding 9 (Debezium DBZ-4273: keep the newest `create_date` per start LSN;
/// Materialize `80-deterministic-capture-instance-selection.td`; Estuary
/// `TestCaptureInstanceCleanup`): cleanup raises both instances' start LSN to the same
/// low-water mark. A fresh stream must take the newer instance (by creation date, whatever the
/// names), so dropping the old one later changes nothing.
#[tokio::test]
async fn equal_start_lsns_after_cleanup_pick_the_newest_instance() {
    let server = FakeServer::new();
    let t = TableName::new("dbo", "items");
    server.create_table(
        &t,
        &[("id", bigint_type()), ("v", sized("nvarchar", 40))],
        &["id"],
    );
    // The older instance has the name that sorts last.
    server.enable_cdc(&t, "dbo_items_z");
    server.transaction(&[ins(&t, 1, "a")]);
    server.add_column(&t, "w", sized("nvarchar", 40));
    server.enable_cdc(&t, "dbo_items_a");
    let low = server.transaction(&[ins(&t, 2, "b")]);
    server.cleanup(low);
    let (mut stream, snapshot) = started(&server, vec![t.clone()]).await;
    assert!(
        summarize(&snapshot).contains(&"schema dbo.items [id,v,w]".to_string()),
        "{:?}",
        summarize(&snapshot)
    );
    server.disable_instance("dbo_items_z");
    server.transaction(&[Op::Insert(
        t.clone(),
        vec![
            ("id".into(), Value::Integer(3)),
            ("v".into(), Value::Text("c".into())),
            ("w".into(), Value::Text("w".into())),
        ],
    )]);
    let events = read_until(&mut stream, |e| commits(e) >= 1).await.unwrap();
    assert_eq!(
        rows_of(&events, "insert"),
        vec!["insert items () -> (3,c,w)"]
    );
}

/// Review finding 4 (powersync-service enables CDC with `@role_name = N'cdc_reader'`;
/// `sys.fn_cdc_get_min_lsn` answers zeros "when the caller is not authorized"): check() names
/// the gating role with the fix, and a stream that loses the membership fails with a
/// Prerequisite error, not a false "capture instance disappeared".
#[tokio::test]
async fn a_gating_role_the_user_lacks_is_reported_not_taken_for_a_drop() {
    let server = FakeServer::new();
    let t = TableName::new("dbo", "items");
    server.create_table(
        &t,
        &[("id", bigint_type()), ("v", sized("nvarchar", 40))],
        &["id"],
    );
    server.enable_cdc_gated(&t, "dbo_items", Some("cdc_reader"));
    let source = fake_source(&server, vec![t.clone()], "");
    let report = source.check().await.unwrap();
    let gating: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.setting == "gating role cdc_reader")
        .collect();
    assert_eq!(gating.len(), 1, "{:?}", report.problems);
    assert_eq!(gating[0].fix, "ALTER ROLE [cdc_reader] ADD MEMBER <user>;");

    server.lock().user_roles = vec!["cdc_reader".into()];
    let report = source.check().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let (mut stream, _) = started(&server, vec![t.clone()]).await;
    server.lock().user_roles.clear();
    server.transaction(&[ins(&t, 1, "a")]);
    let e = read_error(&mut stream).await;
    assert_eq!(
        e.kind(),
        powersync_source_core::ErrorKind::Prerequisite,
        "{e}"
    );
    assert!(e.to_string().contains("cdc_reader"), "{e}");
}

/// Review finding 4 (powersync-service `modules/module-mssql/ci/init-mssql.sql`): a database
/// prepared by PowerSync's own instructions has `_powersync_checkpoints (id INT IDENTITY
/// PRIMARY KEY, last_updated DATETIME)` under the gating role `cdc_reader`. check() finds it
/// ready, the exact snapshot start and write checkpoints work on it (no `token` column: error
/// 207 on the server and in the model).
#[tokio::test]
async fn a_powersync_service_prepared_database_works_as_it_is() {
    let server = FakeServer::with_checkpoint_shape(CheckpointShape::Service);
    let t = TableName::new("dbo", "items");
    server.create_table(
        &t,
        &[("id", bigint_type()), ("v", sized("nvarchar", 40))],
        &["id"],
    );
    server.enable_cdc_gated(&t, "dbo_items", Some("cdc_reader"));
    server.lock().user_roles = vec!["cdc_reader".into()];
    server.transaction(&[ins(&t, 1, "a")]);
    let source = fake_source(&server, vec![t.clone()], "");
    let report = source.check().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let (mut stream, snapshot) = started(&server, vec![t.clone()]).await;
    assert_eq!(
        rows_of(&snapshot, "snapshot"),
        vec!["snapshot insert items () -> (1,a)"]
    );
    let checkpoint = source.write_checkpoint().await.unwrap();
    server.transaction(&[ins(&t, 2, "b")]);
    let events = read_until(&mut stream, |e| {
        commits(e) >= 1
            && e.iter()
                .any(|e| matches!(e, ChangeEvent::CheckpointObserved(c) if *c == checkpoint))
    })
    .await
    .unwrap();
    assert_eq!(rows_of(&events, "insert"), vec!["insert items () -> (2,b)"]);
}

/// A key-changing update (debezium/debezium PR 7728; Microsoft Q&A): one row gives a delete (1)
/// and an insert (2) sharing a `__$seqval`; a bulk statement gives the deletes then the
/// inserts with separate seqvals (Estuary `TestCapture-PrimaryKeyUpdate`). The stream shows
/// them as deletes and inserts in that order, in one transaction.
#[tokio::test]
async fn key_updates_arrive_as_deletes_and_inserts() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let (mut stream, _) = started(&server, vec![t.clone()]).await;
    server.transaction(&[ins(&t, 1, "a"), ins(&t, 2, "b"), ins(&t, 3, "c")]);
    server.transaction(&[Op::Update(
        t.clone(),
        vec![Value::Integer(1)],
        vec![("id".into(), Value::Integer(10))],
    )]);
    server.transaction(&[Op::UpdateKeys(
        t.clone(),
        vec![
            (
                vec![Value::Integer(2)],
                vec![("id".into(), Value::Integer(20))],
            ),
            (
                vec![Value::Integer(3)],
                vec![("id".into(), Value::Integer(30))],
            ),
        ],
    )]);
    let events = read_until(&mut stream, |e| commits(e) >= 3).await.unwrap();
    let shown: Vec<String> = summarize(&events)
        .into_iter()
        .filter(|s| s != "observed" && !s.starts_with("schema"))
        .collect();
    assert_eq!(
        shown[5..],
        [
            "begin",
            "delete items (1,a) -> ()",
            "insert items () -> (10,a)",
            "commit",
            "begin",
            "delete items (2,b) -> ()",
            "delete items (3,c) -> ()",
            "insert items () -> (20,b)",
            "insert items () -> (30,c)",
            "commit",
        ]
    );
}

/// Concurrent transactions interleave their sequence values in the log; the change function
/// returns each committed transaction's rows under its commit LSN, so the stream emits whole
/// transactions in commit order (the one that committed first first), rows in statement order.
#[tokio::test]
async fn interleaved_transactions_are_emitted_whole_in_commit_order() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let (mut stream, _) = started(&server, vec![t.clone()]).await;
    server.interleaved(
        &[ins(&t, 1, "a"), ins(&t, 3, "c")],
        &[ins(&t, 2, "b"), ins(&t, 4, "d")],
    );
    let events = read_until(&mut stream, |e| commits(e) >= 2).await.unwrap();
    let shown: Vec<String> = summarize(&events)
        .into_iter()
        .filter(|s| s != "observed" && !s.starts_with("schema"))
        .collect();
    assert_eq!(
        shown,
        [
            "begin",
            "insert items () -> (2,b)",
            "insert items () -> (4,d)",
            "commit",
            "begin",
            "insert items () -> (1,a)",
            "insert items () -> (3,c)",
            "commit",
        ]
    );
}

/// On an idle database the capture job still writes `cdc.lsn_time_mapping` rows without change
/// rows (Debezium DBZ-2582; Materialize `72-ingestion-lag-when-idle.td`). Windows covering only
/// them (even capped at one transaction) end in keepalives, never in empty transactions, and
/// the next real change streams normally.
#[tokio::test]
async fn idle_capture_scans_give_keepalives_not_transactions() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let source = fake_source(&server, vec![t.clone()], "&polling_batch_size=1");
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, snapshot_done).await.unwrap();
    server.idle_scan();
    server.idle_scan();
    let last_idle = server.idle_scan();
    let events = read_until(&mut stream, |e| {
        e.iter().any(|e| {
            matches!(e, ChangeEvent::Keepalive(c)
                if powersync_source_mssql::testing::StreamPoint::from_checkpoint(c)
                    .is_ok_and(|p| p.position.lsn >= last_idle))
        })
    })
    .await
    .unwrap();
    assert_eq!(commits(&events), 0, "{:?}", summarize(&events));
    assert!(!events.iter().any(|e| matches!(e, ChangeEvent::Begin(_))));
    server.transaction(&[ins(&t, 1, "a")]);
    let events = read_until(&mut stream, |e| commits(e) >= 1).await.unwrap();
    assert_eq!(rows_of(&events, "insert"), ["insert items () -> (1,a)"]);
}

/// Review §2.1 (d): listing the capture instances (a six-way catalog join) on every poll is
/// wasted work on a busy server; powersync-service re-reads them every 60 s and Estuary skips
/// unchanged change tables. Polls read a one-row fingerprint of `cdc.change_tables` and list
/// the instances again only when it changed; a new instance is still taken over.
#[tokio::test]
async fn idle_polls_do_not_list_the_capture_instances_again() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let (mut stream, _) = started(&server, vec![t.clone()]).await;
    let before = server.lock().catalog_loads;
    // About 30 polls at the 10 ms interval.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.transaction(&[ins(&t, 1, "a")]);
    read_until(&mut stream, |e| commits(e) >= 1).await.unwrap();
    let idle = server.lock().catalog_loads - before;
    assert!(idle <= 1, "listed {idle} times while nothing changed");

    server.add_column(&t, "w", text_type());
    server.enable_cdc(&t, "dbo_items_v2");
    server.transaction(&[Op::Insert(
        t.clone(),
        vec![
            ("id".into(), Value::Integer(2)),
            ("v".into(), Value::Text("b".into())),
            ("w".into(), Value::Text("x".into())),
        ],
    )]);
    let events = read_until(&mut stream, |e| commits(e) >= 1).await.unwrap();
    assert!(
        summarize(&events).contains(&"insert items () -> (2,b,x)".to_string()),
        "{:?}",
        summarize(&events)
    );
    assert!(server.lock().catalog_loads > before + idle);
}

/// Review §3.7 (a): while the shared table lock waits for a long-running writer, every later
/// writer of the table queues behind it. The lock transaction waits at most a short
/// LOCK_TIMEOUT (error 1222) and the start tries again, a bounded number of times; it locks
/// exactly the selected tables.
#[tokio::test]
async fn snapshot_lock_timeouts_are_retried_a_bounded_number_of_times() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let other = simple_table(&server, "other");
    server.transaction(&[ins(&t, 1, "a")]);
    server.lock().lock_timeouts = 2;
    let (_stream, events) = started(&server, vec![t.clone()]).await;
    assert_eq!(
        rows_of(&events, "snapshot"),
        ["snapshot insert items () -> (1,a)"]
    );
    assert_eq!(server.lock().locked, vec![t.clone()]);
    assert!(!server.lock().locked.contains(&other));

    server.lock().lock_timeouts = 100;
    let e = fake_source(&server, vec![t], "")
        .start(StartFrom::Beginning)
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        powersync_source_core::ErrorKind::Connection,
        "{e}"
    );
    assert_eq!(e.code(), Some("1222"));
    assert!(
        server.lock().lock_timeouts > 90,
        "a bounded number of attempts"
    );
}

/// Materialize `72-ingestion-lag-when-idle.td`: right after `sp_cdc_enable_table`, with the
/// capture job behind, the new instance's `start_lsn` is above `sys.fn_cdc_get_max_lsn()`.
/// The stream keeps reading the old instance (idle polls, keepalives) and takes the new one
/// over once the capture job has reached its start.
#[tokio::test]
async fn a_new_instance_above_the_max_lsn_is_taken_over_when_capture_reaches_it() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let (mut stream, _) = started(&server, vec![t.clone()]).await;
    server.transaction(&[ins(&t, 1, "a")]);
    read_until(&mut stream, |e| commits(e) >= 1).await.unwrap();
    server.set_capture_paused(true);
    server.add_column(&t, "w", text_type());
    let start = server.enable_cdc(&t, "dbo_items_v2");
    assert!(server.max_lsn().is_some_and(|m| m < start));
    // Idle polls while the new instance is above the max LSN.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    server.transaction(&[Op::Insert(
        t.clone(),
        vec![
            ("id".into(), Value::Integer(2)),
            ("v".into(), Value::Text("b".into())),
            ("w".into(), Value::Text("x".into())),
        ],
    )]);
    server.set_capture_paused(false);
    let events = read_until(&mut stream, |e| commits(e) >= 1).await.unwrap();
    let shown: Vec<String> = summarize(&events)
        .into_iter()
        .filter(|s| s != "observed")
        .collect();
    assert_eq!(
        shown,
        [
            "begin",
            "schema dbo.items [id,v,w]",
            "insert items () -> (2,b,x)",
            "commit"
        ]
    );
}

/// Review §2.1 (changes): each page of a window used to call the change function from the
/// window's start, re-scanning (and sorting) every earlier transaction for every page. A later
/// page starts at the commit LSN of the row it continues after.
#[tokio::test]
async fn later_pages_start_at_the_commit_lsn_they_continue_in() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let source = fake_source(&server, vec![t.clone()], "&page_rows=1");
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, snapshot_done).await.unwrap();
    server.set_capture_paused(true);
    let first = server.transaction(&[ins(&t, 1, "a")]);
    let second = server.transaction(&[ins(&t, 2, "b"), ins(&t, 3, "c")]);
    server.lock().change_calls.clear();
    server.set_capture_paused(false);
    read_until(&mut stream, |e| commits(e) >= 2).await.unwrap();
    let calls: Vec<_> = server
        .lock()
        .change_calls
        .iter()
        .filter(|c| c.0 == "dbo_items")
        .map(|c| (c.1, c.3.map(|k| k.start_lsn)))
        .collect();
    let window_from = calls[0].0;
    assert!(window_from <= first);
    assert_eq!(calls[0].1, None);
    // Page 2 continues after the row of `first`, pages 3 and 4 inside `second`.
    assert_eq!(calls[1], (first, Some(first)));
    assert_eq!(calls[2], (second, Some(second)));
    assert_eq!(calls[3], (second, Some(second)));
}

/// Estuary `TestCapture-DroppedAndRecreatedTable`: a table dropped and created again (with
/// CDC) under the same name loses its rows without delete events; Estuary re-backfills it. The
/// stream must not carry on with the new table's instance as if it were a successor: it ends
/// with a Schema error (resnapshot), even once the log has moved past the new instance's start.
#[tokio::test]
async fn a_dropped_and_recreated_table_is_not_taken_for_a_successor() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let other = simple_table(&server, "other");
    server.transaction(&[ins(&t, 1, "a")]);
    let (mut stream, _) = started(&server, vec![t.clone(), other.clone()]).await;
    server.set_capture_paused(true);
    server.drop_table(&t);
    server.create_table(&t, &[("id", bigint_type()), ("v", text_type())], &["id"]);
    server.enable_cdc(&t, "dbo_items");
    // The log moves past the new instance's start on another table.
    server.transaction(&[ins(&other, 1, "x")]);
    server.set_capture_paused(false);
    let e = read_error(&mut stream).await;
    assert_eq!(e.kind(), powersync_source_core::ErrorKind::Schema, "{e}");
    assert!(e.to_string().contains("created again"), "{e}");
}

/// Estuary PR 2796 / `TestDatatypes-BitNotNullDeletion`: real servers have sent NULL for a
/// `bit NOT NULL` column in delete rows. A NULL in a NOT NULL column was not sent: Unchanged.
#[tokio::test]
async fn a_null_in_a_not_null_column_of_a_delete_is_unchanged() {
    let server = FakeServer::new();
    let t = TableName::new("dbo", "flags");
    server.create_table(
        &t,
        &[("id", bigint_type()), ("on", SqlType::simple("bit"))],
        &["id"],
    );
    server.enable_cdc(&t, "dbo_flags");
    // The model marks only key columns NOT NULL; `on` is declared NOT NULL here.
    server.set_not_null(&t, "on");
    server.lock().null_bits_in_deletes = true;
    let (mut stream, _) = started(&server, vec![t.clone()]).await;
    server.transaction(&[Op::Insert(
        t.clone(),
        vec![
            ("id".into(), Value::Integer(1)),
            ("on".into(), Value::Integer(1)),
        ],
    )]);
    server.transaction(&[Op::Delete(t.clone(), vec![Value::Integer(1)])]);
    let events = read_until(&mut stream, |e| commits(e) >= 2).await.unwrap();
    assert_eq!(
        rows_of(&events, "delete"),
        ["delete flags (1,unchanged) -> ()"]
    );
}
