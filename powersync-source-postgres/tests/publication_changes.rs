//! Tables that join the publication, or are re-created, while the stream runs.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{ChangeEvent, ChangeSource, Op, StartFrom, Value};
use powersync_source_postgres::{PostgresConfig, PostgresSource};
use powersync_source_testkit::postgres::PostgresServer;

/// table → id → v, applying events as a host would (upserts, idempotent deletes).
fn apply(state: &mut BTreeMap<String, BTreeMap<i64, Value>>, events: Vec<ChangeEvent>) {
    for e in events {
        match e {
            ChangeEvent::Row(r) => {
                let t = state.entry(r.table.name.name.clone()).or_default();
                let idx = |n: &str| r.table.column_index(n).unwrap();
                match r.op {
                    Op::Insert | Op::Update => {
                        let new = r.new.unwrap();
                        let id = new.get(idx("id")).unwrap().as_integer().unwrap();
                        t.insert(id, new.get(idx("v")).unwrap().clone());
                    }
                    Op::Delete => {
                        let id = r.old.unwrap().get(idx("id")).unwrap().as_integer().unwrap();
                        t.remove(&id);
                    }
                }
            }
            ChangeEvent::Truncate(tr) => {
                for name in tr.tables {
                    state.remove(&name.name);
                }
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_added_to_publication_and_recreated_is_snapshotted() {
    powersync_source_testkit::init_tracing();
    let Some(server) = powersync_source_testkit::or_skip(PostgresServer::start().await) else {
        return;
    };
    server
        .psql("CREATE TABLE a (id bigint primary key, v text); CREATE PUBLICATION powersync FOR TABLE a;
               INSERT INTO a VALUES (1, 'a1');")
        .await
        .unwrap();
    let source = PostgresSource::new(PostgresConfig::parse(&server.url()).unwrap());
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut state = BTreeMap::new();
    let read_until = |marker: powersync_source_core::Checkpoint| marker;
    let _ = read_until;

    // b exists with rows before it joins the publication.
    server
        .psql("CREATE TABLE b (id bigint primary key, v text); INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 10) g;
               ALTER PUBLICATION powersync ADD TABLE b; INSERT INTO b VALUES (11, 'b11');")
        .await
        .unwrap();
    let marker = source.write_checkpoint().await.unwrap();
    wait_for(&mut stream, &mut state, &marker).await;
    assert_eq!(state["a"].len(), 1);
    assert_eq!(state["b"].len(), 11, "{:?}", state["b"]);
    assert_eq!(state["b"][&5], Value::Text("b5".into()));

    // b is dropped and re-created with other rows: the old rows go, the new ones come.
    server
        .psql("DROP TABLE b; CREATE TABLE b (id bigint primary key, v text); INSERT INTO b VALUES (100, 'new');
               ALTER PUBLICATION powersync ADD TABLE b; INSERT INTO b VALUES (101, 'new2');")
        .await
        .unwrap();
    let marker = source.write_checkpoint().await.unwrap();
    wait_for(&mut stream, &mut state, &marker).await;
    let b: Vec<i64> = state["b"].keys().copied().collect();
    assert_eq!(b, vec![100, 101]);
}

async fn wait_for(
    stream: &mut powersync_source_core::ChangeStream,
    state: &mut BTreeMap<String, BTreeMap<i64, Value>>,
    marker: &powersync_source_core::Checkpoint,
) {
    // Until the marker passed and no table is left to backfill (a table first seen in the
    // stream is read by a backfill, whose cursor the checkpoints carry until it is done).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = false;
    loop {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("marker not observed")
            .unwrap()
            .unwrap();
        let mut backfilling = None;
        for e in &batch.events {
            match e {
                ChangeEvent::CheckpointObserved(c) if c == marker => seen = true,
                ChangeEvent::Commit(c) => {
                    backfilling = Some(c.checkpoint.backfill().unwrap().is_some())
                }
                ChangeEvent::Keepalive(c) => backfilling = Some(c.backfill().unwrap().is_some()),
                _ => {}
            }
        }
        apply(state, batch.events);
        if seen && backfilling == Some(false) {
            return;
        }
    }
}
