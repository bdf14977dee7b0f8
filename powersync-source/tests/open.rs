//! `open` against a throwaway PostgreSQL: the options reach the connector (tables named as a
//! user types them, stream settings), and the stream delivers the selected table only.

use std::time::Duration;

use futures::StreamExt;
use powersync_source::{ChangeEvent, Options, SnapshotProgress, StartFrom, StreamOptions};
use powersync_source_testkit::{self as testkit, PostgresServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_reach_the_connector() {
    testkit::init_tracing();
    let Some(pg) = testkit::or_skip(PostgresServer::start().await) else {
        return;
    };
    pg.psql(
        "CREATE TABLE picked (id int PRIMARY KEY, v text);
         CREATE TABLE other (id int PRIMARY KEY);
         CREATE PUBLICATION powersync FOR ALL TABLES;
         INSERT INTO picked SELECT g, 'v' || g FROM generate_series(1, 10) g;
         INSERT INTO other SELECT generate_series(1, 10);",
    )
    .await
    .expect("setup SQL");
    let options = Options::new()
        .with_tables(["picked"])
        .with_stream_options(StreamOptions::default().with_batch_events(3));
    let source = powersync_source::open(&pg.url(), &options).expect("open");
    assert_eq!(source.kind(), "postgres");
    let tables = source.discover().await.expect("discover");
    let names: Vec<String> = tables.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, vec!["public.picked"]);

    let mut stream = source.start(StartFrom::Beginning).await.expect("start");
    let mut rows = Vec::new();
    loop {
        let batch = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("a batch within 60 s")
            .expect("the stream goes on")
            .expect("no error");
        assert!(batch.events.len() <= 3, "{} events", batch.events.len());
        let mut done = false;
        for event in &batch.events {
            match event {
                ChangeEvent::Row(r) => rows.push(r.table.name.to_string()),
                ChangeEvent::Snapshot(SnapshotProgress::Done { .. }) => done = true,
                _ => {}
            }
        }
        if done {
            break;
        }
    }
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().all(|t| t == "public.picked"), "{rows:?}");
}
