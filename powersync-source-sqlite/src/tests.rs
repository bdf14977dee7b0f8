//! The sink's unit tests: transactions, savepoints and aborts, the `Unchanged` rule, schema
//! changes, snapshot positions, keyless tables, and the group policy.

use std::sync::Arc;
use std::time::Duration;

use powersync_source_core::{
    Begin, ChangeEvent, Checkpoint, Column, Commit, OldImage, Op, Row, RowChange, RowIdentity,
    SnapshotProgress, SnapshotResume, StartFrom, TableName, TableProgress, TableSchema, Truncate,
    Value,
};

use super::*;

fn schema(cols: &[(&str, bool)]) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        name: TableName::new("public", "t"),
        source_id: Some(1),
        columns: cols
            .iter()
            .map(|(n, k)| {
                let c = Column::new(*n, "text");
                if *k {
                    c.key()
                } else {
                    c
                }
            })
            .collect(),
        identity: RowIdentity::PrimaryKey,
    })
}

fn row(
    op: Op,
    s: &Arc<TableSchema>,
    old: Option<Vec<Value>>,
    new: Option<Vec<Value>>,
) -> ChangeEvent {
    ChangeEvent::Row(RowChange {
        op,
        table: s.clone(),
        old_image: if old.is_some() {
            OldImage::Key
        } else {
            OldImage::None
        },
        old: old.map(Row::new),
        new: new.map(Row::new),
        snapshot: false,
    })
}

/// The checkpoint a commit tells the host to acknowledge.
fn ack(committed: Option<Committed>) -> Option<Checkpoint> {
    committed.and_then(|c| c.checkpoint)
}

fn begin() -> ChangeEvent {
    ChangeEvent::Begin(Begin {
        xid: None,
        commit_time: None,
    })
}

fn commit(n: u32) -> ChangeEvent {
    ChangeEvent::Commit(Commit {
        checkpoint: cp(n),
        commit_time: None,
    })
}

fn cp(n: u32) -> Checkpoint {
    Checkpoint::parse(&format!("postgres:v1:00000000/{n:08X}")).unwrap()
}

fn dump(m: &Mirror, sql: &str) -> Vec<String> {
    let mut stmt = m.connection().prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        let mut parts = Vec::new();
        for i in 0..n {
            let v: rusqlite::types::Value = r.get(i)?;
            parts.push(format!("{v:?}"));
        }
        Ok(parts.join("|"))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

#[test]
fn transactions_savepoints_and_abort() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut m = Mirror::open(&path, &MirrorOptions::default()).unwrap();
    m.begin_run(&StartFrom::Checkpoint(cp(1))).unwrap();
    let s = schema(&[("id", true), ("a", false), ("b", false)]);
    let begin = ChangeEvent::Begin(Begin {
        xid: None,
        commit_time: None,
    });
    m.apply(&begin).unwrap();
    m.apply(&ChangeEvent::Schema(s.clone())).unwrap();
    m.apply(&row(
        Op::Insert,
        &s,
        None,
        Some(vec![1.into(), "x".into(), "y".into()]),
    ))
    .unwrap();
    m.apply(&ChangeEvent::Commit(Commit {
        checkpoint: cp(2),
        commit_time: None,
    }))
    .unwrap();
    m.apply(&begin).unwrap();
    m.apply(&row(
        Op::Insert,
        &s,
        None,
        Some(vec![2.into(), "x".into(), "y".into()]),
    ))
    .unwrap();
    m.apply(&ChangeEvent::Abort).unwrap();
    assert!(m.at_boundary());
    // Unchanged keeps the stored value; the key changes.
    m.apply(&begin).unwrap();
    m.apply(&row(
        Op::Update,
        &s,
        Some(vec![1.into(), Value::Unchanged, Value::Unchanged]),
        Some(vec![3.into(), "z".into(), Value::Unchanged]),
    ))
    .unwrap();
    // Update of a missing row inserts it when every value was sent…
    m.apply(&row(
        Op::Update,
        &s,
        None,
        Some(vec![4.into(), "q".into(), "r".into()]),
    ))
    .unwrap();
    // …and is skipped when one was not (no value held to keep; no NULL invented).
    m.apply(&row(
        Op::Update,
        &s,
        None,
        Some(vec![5.into(), "q".into(), Value::Unchanged]),
    ))
    .unwrap();
    m.apply(&row(
        Op::Delete,
        &s,
        Some(vec![9.into(), Value::Unchanged, Value::Unchanged]),
        None,
    ))
    .unwrap();
    m.apply(&ChangeEvent::Commit(Commit {
        checkpoint: cp(3),
        commit_time: None,
    }))
    .unwrap();
    assert_eq!(ack(m.commit().unwrap()), Some(cp(3)));
    assert_eq!(
        dump(&m, "SELECT * FROM t ORDER BY id"),
        vec![
            "Integer(3)|Text(\"z\")|Text(\"y\")",
            "Integer(4)|Text(\"q\")|Text(\"r\")"
        ]
    );
    drop(m);
    let m = Mirror::open(&path, &MirrorOptions::default()).unwrap();
    assert_eq!(m.stored_position(), Some(cp(3).as_str()));
    assert_eq!(
        m.tables(),
        vec![(TableName::new("public", "t"), "t".to_string())]
    );
}

/// The demo's lost values: a resumed snapshot already stored the row under its new key,
/// then the replay window resends the key-changing update whose TOASTed column is
/// `Unchanged`. The mirror holds no row under the old key, so the value held under the new
/// key must be kept, not overwritten with NULL.
#[test]
fn unchanged_after_a_replayed_key_change_keeps_the_value_under_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Mirror::open(&dir.path().join("m.db"), &MirrorOptions::default()).unwrap();
    m.begin_run(&StartFrom::Checkpoint(cp(1))).unwrap();
    let s = schema(&[("id", true), ("n", false), ("doc", false)]);
    let begin = ChangeEvent::Begin(Begin {
        xid: None,
        commit_time: None,
    });
    m.apply(&begin).unwrap();
    m.apply(&ChangeEvent::Schema(s.clone())).unwrap();
    // What the resumed snapshot copied: the row under its new id 20, and row 30.
    m.apply(&row(
        Op::Insert,
        &s,
        None,
        Some(vec![20.into(), 1.into(), "big document".into()]),
    ))
    .unwrap();
    m.apply(&row(
        Op::Insert,
        &s,
        None,
        Some(vec![30.into(), 1.into(), "other".into()]),
    ))
    .unwrap();
    // Replayed: UPDATE items SET id = 20 WHERE id = 10 (doc not sent).
    m.apply(&row(
        Op::Update,
        &s,
        Some(vec![10.into(), Value::Unchanged, Value::Unchanged]),
        Some(vec![20.into(), 2.into(), Value::Unchanged]),
    ))
    .unwrap();
    // A key change whose old row is held: the held row's value moves to the new key, and
    // replaces what the new key held.
    m.apply(&row(
        Op::Update,
        &s,
        Some(vec![20.into(), Value::Unchanged, Value::Unchanged]),
        Some(vec![30.into(), 3.into(), Value::Unchanged]),
    ))
    .unwrap();
    // Neither key held and a value not sent: nothing held to keep, and no NULL invented (the
    // row reaches the mirror under its final key, from the snapshot or a later change).
    m.apply(&row(
        Op::Update,
        &s,
        Some(vec![40.into(), Value::Unchanged, Value::Unchanged]),
        Some(vec![50.into(), 4.into(), Value::Unchanged]),
    ))
    .unwrap();
    m.apply(&ChangeEvent::Commit(Commit {
        checkpoint: cp(2),
        commit_time: None,
    }))
    .unwrap();
    ack(m.commit().unwrap());
    assert_eq!(
        dump(&m, "SELECT * FROM t ORDER BY id"),
        vec!["Integer(30)|Integer(3)|Text(\"big document\")",]
    );
}

#[test]
fn schema_changes_and_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Mirror::open(&dir.path().join("m.db"), &MirrorOptions::default()).unwrap();
    m.begin_run(&StartFrom::Checkpoint(cp(1))).unwrap();
    let s1 = schema(&[("id", true), ("a", false)]);
    m.apply(&ChangeEvent::Schema(s1.clone())).unwrap();
    m.apply(&row(
        Op::Insert,
        &s1,
        None,
        Some(vec![1.into(), "x".into()]),
    ))
    .unwrap();
    let s2 = schema(&[("id", true), ("b", false)]);
    m.apply(&ChangeEvent::Schema(s2.clone())).unwrap();
    m.apply(&row(
        Op::Insert,
        &s2,
        None,
        Some(vec![2.into(), "y".into()]),
    ))
    .unwrap();
    assert_eq!(
        dump(&m, "SELECT * FROM t ORDER BY id"),
        vec!["Integer(1)|Null", "Integer(2)|Text(\"y\")"]
    );
    // New key: recreated, rows kept.
    let s3 = schema(&[("id", false), ("b", true)]);
    m.apply(&ChangeEvent::Schema(s3.clone())).unwrap();
    assert_eq!(dump(&m, "SELECT count(*) FROM t"), vec!["Integer(2)"]);
    m.apply(&ChangeEvent::Truncate(Truncate {
        tables: vec![s3.name.clone()],
    }))
    .unwrap();
    m.apply(&ChangeEvent::Keepalive(cp(5))).unwrap();
    assert_eq!(ack(m.commit().unwrap()), Some(cp(5)));
    assert_eq!(dump(&m, "SELECT count(*) FROM t"), vec!["Integer(0)"]);
}

#[test]
fn abort_keeps_a_schema_change_the_stream_will_not_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Mirror::open(&dir.path().join("m.db"), &MirrorOptions::default()).unwrap();
    m.begin_run(&StartFrom::Checkpoint(cp(1))).unwrap();
    let s1 = schema(&[("id", true), ("a", false)]);
    m.apply(&ChangeEvent::Schema(s1.clone())).unwrap();
    m.apply(&row(
        Op::Insert,
        &s1,
        None,
        Some(vec![1.into(), "x".into()]),
    ))
    .unwrap();
    m.apply(&ChangeEvent::Keepalive(cp(2))).unwrap();
    ack(m.commit().unwrap());
    let begin = ChangeEvent::Begin(Begin {
        xid: None,
        commit_time: None,
    });
    m.apply(&begin).unwrap();
    let s2 = schema(&[("id", true), ("a", false), ("b", false)]);
    m.apply(&ChangeEvent::Schema(s2.clone())).unwrap();
    m.apply(&row(
        Op::Insert,
        &s2,
        None,
        Some(vec![2.into(), "y".into(), "z".into()]),
    ))
    .unwrap();
    m.apply(&ChangeEvent::Abort).unwrap();
    // The transaction is resent without its schema event.
    m.apply(&begin).unwrap();
    m.apply(&row(
        Op::Insert,
        &s2,
        None,
        Some(vec![3.into(), "y".into(), "z".into()]),
    ))
    .unwrap();
    m.apply(&ChangeEvent::Commit(Commit {
        checkpoint: cp(3),
        commit_time: None,
    }))
    .unwrap();
    assert_eq!(ack(m.commit().unwrap()), Some(cp(3)));
    assert_eq!(
        dump(&m, "SELECT * FROM t ORDER BY id"),
        vec![
            "Integer(1)|Text(\"x\")|Null",
            "Integer(3)|Text(\"y\")|Text(\"z\")"
        ]
    );
    let stored = m.stored_tables().unwrap();
    assert_eq!(stored[0].schema.columns.len(), 3);
}

#[test]
fn snapshot_positions_and_keyless_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut m = Mirror::open(&path, &MirrorOptions::default()).unwrap();
    m.begin_run(&StartFrom::Beginning).unwrap();
    assert!(m.in_snapshot_phase());
    let keyless = Arc::new(TableSchema {
        name: TableName::new("public", "k"),
        source_id: None,
        columns: vec![Column::new("a", "int"), Column::new("b", "text")],
        identity: RowIdentity::Full,
    });
    m.apply(&ChangeEvent::Schema(keyless.clone())).unwrap();
    for (a, b) in [(1, "x"), (1, "x"), (2, "y")] {
        let mut ev = row(Op::Insert, &keyless, None, Some(vec![a.into(), b.into()]));
        if let ChangeEvent::Row(r) = &mut ev {
            r.snapshot = true;
        }
        m.apply(&ev).unwrap();
    }
    let mut resume = SnapshotResume {
        stream_from: cp(9),
        tables: Default::default(),
        source_state: None,
    };
    resume.tables.insert(
        "public.k".into(),
        TableProgress::Partial {
            after_key: "[\"2\"]".into(),
            rows: 3,
        },
    );
    // A chunk end commits at once, storing the resume token; there is nothing to ack.
    let committed = m
        .feed(&ChangeEvent::Snapshot(SnapshotProgress::ChunkDone {
            table: keyless.name.clone(),
            rows_done: 3,
            estimated_rows: None,
            resume: Box::new(resume),
        }))
        .unwrap()
        .expect("a chunk end commits");
    assert_eq!(committed.checkpoint, None);
    assert_eq!(committed.rows, 3);
    assert!(m.stored_position().unwrap().starts_with("snapshot:v1:"));
    m.apply(&ChangeEvent::Snapshot(SnapshotProgress::TableDone {
        table: keyless.name.clone(),
        rows: 3,
    }))
    .unwrap();
    ack(m.commit().unwrap());
    let token = m.stored_position().unwrap().to_string();
    match StartFrom::parse(&token).unwrap() {
        StartFrom::Snapshot(r) => {
            assert_eq!(r.tables["public.k"], TableProgress::Done { rows: 3 })
        }
        other => panic!("{other:?}"),
    }
    m.apply(&ChangeEvent::Snapshot(SnapshotProgress::Done {
        checkpoint: cp(9),
    }))
    .unwrap();
    assert_eq!(ack(m.commit().unwrap()), Some(cp(9)));
    assert!(!m.in_snapshot_phase());
    // Keyless: matched by the old image, one row at a time.
    let full = |v: Vec<Value>| Some(v);
    let mut ev = row(Op::Delete, &keyless, full(vec![1.into(), "x".into()]), None);
    if let ChangeEvent::Row(r) = &mut ev {
        r.old_image = OldImage::Full;
    }
    m.apply(&ev).unwrap();
    let mut ev = row(
        Op::Update,
        &keyless,
        full(vec![2.into(), "y".into()]),
        Some(vec![2.into(), "w".into()]),
    );
    if let ChangeEvent::Row(r) = &mut ev {
        r.old_image = OldImage::Full;
    }
    m.apply(&ev).unwrap();
    m.apply(&ChangeEvent::Keepalive(cp(10))).unwrap();
    ack(m.commit().unwrap());
    assert_eq!(
        dump(&m, "SELECT a, b FROM k ORDER BY a"),
        vec!["Integer(1)|Text(\"x\")", "Integer(2)|Text(\"w\")"]
    );
    // Starting over drops the mirrored tables.
    drop(m);
    let mut m = Mirror::open(&path, &MirrorOptions::default()).unwrap();
    assert_eq!(m.start_from().unwrap(), StartFrom::Checkpoint(cp(10)));
    m.begin_run(&StartFrom::Beginning).unwrap();
    assert!(m.tables().is_empty());
    assert!(m.stored_position().is_none());
    assert_eq!(
        dump(&m, "SELECT count(*) FROM sqlite_master WHERE name = 'k'"),
        vec!["Integer(0)"]
    );
}

/// The group policy: no commit inside a source transaction, a commit once the streaming row
/// cap is reached at a boundary, the checkpoint of the last transaction acknowledged, and
/// nothing committed twice.
#[test]
fn groups_are_cut_by_rows_at_transaction_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let options = MirrorOptions::default().with_group_policy(
        GroupPolicy::default()
            .with_max_rows(3)
            .with_max_age(Duration::from_secs(3600)),
    );
    let mut m = Mirror::open(&dir.path().join("m.db"), &options).unwrap();
    m.begin_run(&StartFrom::Checkpoint(cp(1))).unwrap();
    let s = schema(&[("id", true), ("a", false)]);
    let mut commits = Vec::new();
    let mut feed = |m: &mut Mirror, ev: ChangeEvent| {
        if let Some(c) = m.feed(&ev).unwrap() {
            commits.push((c.checkpoint, c.rows));
        }
    };
    feed(&mut m, begin());
    feed(&mut m, ChangeEvent::Schema(s.clone()));
    for id in 1..=2 {
        feed(
            &mut m,
            row(Op::Insert, &s, None, Some(vec![id.into(), "x".into()])),
        );
    }
    feed(&mut m, commit(2));
    // Two rows: below the cap, and the group is young: nothing committed yet.
    assert!(m.commit_deadline().is_some());
    feed(&mut m, begin());
    for id in 3..=5 {
        feed(
            &mut m,
            row(Op::Insert, &s, None, Some(vec![id.into(), "x".into()])),
        );
    }
    // Five rows, but inside a transaction: still nothing, and no deadline applies.
    assert!(m.commit_deadline().is_none());
    feed(&mut m, commit(3));
    feed(&mut m, ChangeEvent::Keepalive(cp(4)));
    assert_eq!(commits, vec![(Some(cp(3)), 5)]);
    assert_eq!(m.stored_position(), Some(cp(3).as_str()));
    // The keepalive after the commit is pending; an explicit commit stores and acks it.
    assert_eq!(ack(m.commit().unwrap()), Some(cp(4)));
    assert_eq!(m.commit().unwrap(), None);
    assert_eq!(dump(&m, "SELECT count(*) FROM t"), vec!["Integer(5)"]);
}

/// Time: a streaming group older than `max_age` is committed at the next boundary; during
/// the snapshot, the default policy commits by chunk ends and rows only.
#[test]
fn groups_are_cut_by_age_while_streaming_only_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let options = MirrorOptions::default()
        .with_group_policy(GroupPolicy::default().with_max_age(Duration::from_millis(20)));
    let mut m = Mirror::open(&dir.path().join("m.db"), &options).unwrap();
    m.begin_run(&StartFrom::Beginning).unwrap();
    let s = schema(&[("id", true), ("a", false)]);
    assert!(m.feed(&ChangeEvent::Schema(s.clone())).unwrap().is_none());
    let mut snapshot_row = row(Op::Insert, &s, None, Some(vec![1.into(), "x".into()]));
    if let ChangeEvent::Row(r) = &mut snapshot_row {
        r.snapshot = true;
    }
    std::thread::sleep(Duration::from_millis(40));
    assert!(
        m.feed(&snapshot_row).unwrap().is_none(),
        "snapshot groups ignore age"
    );
    assert!(m.commit_deadline().is_none());
    let done = m
        .feed(&ChangeEvent::Snapshot(SnapshotProgress::Done {
            checkpoint: cp(5),
        }))
        .unwrap()
        .expect("the snapshot end commits");
    assert_eq!(done.checkpoint, Some(cp(5)));
    // Streaming: the first event opens a group; once it is old, the next boundary commits.
    assert!(m.feed(&begin()).unwrap().is_none());
    assert!(m
        .feed(&row(Op::Insert, &s, None, Some(vec![2.into(), "y".into()])))
        .unwrap()
        .is_none());
    std::thread::sleep(Duration::from_millis(40));
    let committed = m.feed(&commit(6)).unwrap().expect("an old group commits");
    assert_eq!(committed.checkpoint, Some(cp(6)));
    assert_eq!(committed.rows, 1);
}

/// `Mirror::open` on a path SQLite cannot open names the file; a corrupt table entry names
/// its key; an unreadable stored position is a configuration error from the core.
#[test]
fn errors_say_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/m.db");
    let e = Mirror::open(&missing, &MirrorOptions::default()).unwrap_err();
    assert!(e.to_string().starts_with("opening "), "{e}");
    assert!(e.to_string().contains("m.db"), "{e}");
    assert!(std::error::Error::source(&e).is_some());

    let path = dir.path().join("m.db");
    let m = Mirror::open(&path, &MirrorOptions::default()).unwrap();
    m.connection()
        .execute_batch(&format!(
            "INSERT INTO {STATE_TABLE} VALUES ('table:public.t', '{{nope'), ('checkpoint', 'garbage')"
        ))
        .unwrap();
    drop(m);
    let e = Mirror::open(&path, &MirrorOptions::default()).unwrap_err();
    assert!(e.to_string().contains("`table:public.t` is corrupt"), "{e}");
    m_without_tables(&path);
    let m = Mirror::open(&path, &MirrorOptions::default()).unwrap();
    let e = m.start_from().unwrap_err();
    assert_eq!(
        e.as_source_error().map(|s| s.kind()),
        Some(powersync_source_core::ErrorKind::Config)
    );
}

fn m_without_tables(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "DELETE FROM {STATE_TABLE} WHERE key LIKE 'table:%'"
    ))
    .unwrap();
}
