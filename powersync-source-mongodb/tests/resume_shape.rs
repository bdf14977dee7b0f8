//! A resumed stream knows each collection's fields before its first event, so the first
//! schema it sends is never narrower than the one the host holds (a host following schema
//! events would drop the missing columns). Found by the fault campaign: after a resume, a
//! delete carrying only `documentKey` sent a schema of `id` alone.

use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, Checkpoint, SnapshotProgress, StartFrom, StreamOptions, TableName,
};
use powersync_source_mongodb::bson::doc;
use powersync_source_mongodb::{MongoConfig, MongoSource};

use crate::common::{client, fast_retry, secantus, url};

fn columns(schema: &powersync_source_core::TableSchema) -> Vec<String> {
    let mut c: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
    c.sort();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stream_sends_every_known_field_before_a_key_only_delete() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let u = url(&server, "shape", "");
    let driver = client(&u).await;
    let coll = driver
        .database("shape")
        .collection::<powersync_source_mongodb::bson::Document>("accounts");
    coll.insert_many(vec![
        doc! { "_id": 1, "balance": 10, "owner": "a" },
        doc! { "_id": 2, "balance": 20, "note": "only here" },
    ])
    .await
    .unwrap();
    let source = MongoSource::new(MongoConfig::parse(&u).unwrap()).with_stream_options(
        StreamOptions::default()
            .with_tables(vec![TableName::new("shape", "accounts")])
            .with_retry(fast_retry()),
    );

    // First run: snapshot, then stop at its end.
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut checkpoint: Option<Checkpoint> = None;
    while checkpoint.is_none() {
        let batch = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("snapshot in time")
            .expect("stream open")
            .unwrap();
        for e in batch.events {
            if let ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint: c }) = e {
                checkpoint = Some(c);
            }
        }
    }
    drop(stream);

    // While stopped: a delete (its event carries only the key).
    coll.delete_one(doc! { "_id": 1 }).await.unwrap();

    let from = StartFrom::Checkpoint(checkpoint.unwrap());
    let mut stream = source.start(from).await.unwrap();
    let schema = loop {
        let batch = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the delete in time")
            .expect("stream open")
            .unwrap();
        let found = batch.events.into_iter().find_map(|e| match e {
            ChangeEvent::Schema(s) => Some(s),
            ChangeEvent::Row(r) => Some(r.table),
            _ => None,
        });
        if let Some(s) = found {
            break s;
        }
    };
    assert_eq!(
        columns(&schema),
        vec!["balance", "id", "note", "owner"],
        "the first schema after the resume lists every field the documents have"
    );
}
