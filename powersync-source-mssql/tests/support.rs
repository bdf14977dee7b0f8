//! Helpers for the scenario tests: reading events with a deadline.

use std::time::{Duration, Instant};

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeStream, SnapshotProgress, SourceError, TableName, Value,
};

use crate::fake::{bigint_type, text_type, FakeServer, Op};

/// Reads events until `done` holds for the events read so far (or fails after 10 s).
pub async fn read_until(
    stream: &mut ChangeStream,
    mut done: impl FnMut(&[ChangeEvent]) -> bool,
) -> Result<Vec<ChangeEvent>, SourceError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    while !done(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!(
                "condition not reached; events so far: {:#?}",
                summarize(&events)
            );
        }
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(batch)) => events.extend(batch?.events),
            Ok(None) => panic!("stream ended; events so far: {:#?}", summarize(&events)),
            Err(_) => {}
        }
    }
    Ok(events)
}

/// Reads until the next error, which it returns.
pub async fn read_error(stream: &mut ChangeStream) -> SourceError {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no error within 10 s");
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Err(e))) => return e,
            Ok(Some(Ok(_))) => {}
            Ok(None) => panic!("stream ended without an error"),
            Err(_) => {}
        }
    }
}

pub fn commits(events: &[ChangeEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, ChangeEvent::Commit(_)))
        .count()
}

pub fn snapshot_done(events: &[ChangeEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. })))
}

/// A compact text form of the events, for assertions and failure messages.
pub fn summarize(events: &[ChangeEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ChangeEvent::Begin(_) => Some("begin".to_string()),
            ChangeEvent::Commit(_) => Some("commit".to_string()),
            ChangeEvent::Abort => Some("abort".to_string()),
            ChangeEvent::Schema(s) => Some(format!(
                "schema {} [{}]",
                s.name,
                s.columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            ChangeEvent::Row(r) => {
                let show = |row: &Option<powersync_source_core::Row>| {
                    row.as_ref()
                        .map(|r| {
                            r.values()
                                .iter()
                                .map(show_value)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default()
                };
                Some(format!(
                    "{}{} {} ({}) -> ({})",
                    if r.snapshot { "snapshot " } else { "" },
                    r.op.as_str(),
                    r.table.name.name,
                    show(&r.old),
                    show(&r.new)
                ))
            }
            ChangeEvent::CheckpointObserved(_) => Some("observed".to_string()),
            _ => None,
        })
        .collect()
}

fn show_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(s) => s.clone(),
        Value::Blob(b) => format!("{b:02x?}"),
        Value::Unchanged => "unchanged".into(),
    }
}

/// `dbo.<name> (id bigint primary key, v nvarchar(max))` with CDC instance `dbo_<name>`.
pub fn simple_table(server: &FakeServer, name: &str) -> TableName {
    let t = TableName::new("dbo", name);
    server.create_table(&t, &[("id", bigint_type()), ("v", text_type())], &["id"]);
    server.enable_cdc(&t, &format!("dbo_{name}"));
    t
}

pub fn ins(t: &TableName, id: i64, v: &str) -> Op {
    Op::Insert(
        t.clone(),
        vec![
            ("id".into(), Value::Integer(id)),
            ("v".into(), Value::Text(v.into())),
        ],
    )
}

pub fn upd(t: &TableName, id: i64, v: &str) -> Op {
    Op::Update(
        t.clone(),
        vec![Value::Integer(id)],
        vec![("v".into(), Value::Text(v.into()))],
    )
}

pub fn del(t: &TableName, id: i64) -> Op {
    Op::Delete(t.clone(), vec![Value::Integer(id)])
}
