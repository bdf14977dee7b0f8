//! Streaming behaviour against SecantusDB: idle advance, checkpoint order, transaction framing.

use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{ChangeEvent, ChangeSource, SnapshotProgress, StartFrom, TableName};
use powersync_source_mongodb::bson::{doc, Document};
use powersync_source_mongodb::{MongoConfig, MongoSource};

use crate::common::{client, fast_retry, secantus, url};

/// Writes to an unselected collection move the checkpoint forward through keepalives (post-batch
/// resume tokens and skipped events), and every checkpoint the stream emits is later than the one
/// before it, as a string too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_unselected_writes_advance_the_position() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let base = url(&server, "idle", "");
    let driver = client(&base).await;
    let db = driver.database("idle");
    db.create_collection("watched").await.unwrap();
    let source = MongoSource::new(
        MongoConfig::parse(&url(&server, "idle", "post_images=off&max_await_ms=200")).unwrap(),
    )
    .with_tables(vec![TableName::new("idle", "watched")])
    .with_retry(fast_retry());
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut checkpoints = Vec::new();
    let mut keepalives = 0;
    let mut commits = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut round = 0;
    while keepalives < 3 || commits < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "keepalives {keepalives}, commits {commits}"
        );
        round += 1;
        db.collection::<Document>("other")
            .insert_one(doc! {"round": round})
            .await
            .unwrap();
        if round % 3 == 0 {
            db.collection::<Document>("watched")
                .insert_one(doc! {"round": round})
                .await
                .unwrap();
        }
        let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(2), stream.next()).await
        else {
            continue;
        };
        for event in batch.unwrap().events {
            match event {
                ChangeEvent::Keepalive(c) => {
                    keepalives += 1;
                    checkpoints.push(c);
                }
                ChangeEvent::Commit(c) => {
                    commits += 1;
                    checkpoints.push(c.checkpoint);
                }
                ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint }) => {
                    checkpoints.push(checkpoint)
                }
                ChangeEvent::Row(r) => {
                    assert_eq!(r.table.name.name, "watched", "unselected rows leaked")
                }
                _ => {}
            }
        }
    }
    for pair in checkpoints.windows(2) {
        assert!(
            pair[0].as_str() < pair[1].as_str(),
            "{} then {}",
            pair[0],
            pair[1]
        );
    }
    let stats = stream.stats().snapshot();
    assert!(stats.transactions >= 2);
    assert!(stats.lag_seconds < 30.0, "{stats:?}");
}

/// A multi-document transaction arrives as one begin … commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_document_transaction_is_one_commit() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let base = url(&server, "txn", "");
    let driver = client(&base).await;
    let coll = driver.database("txn").collection::<Document>("t");
    driver.database("txn").create_collection("t").await.unwrap();
    let source = MongoSource::new(
        MongoConfig::parse(&url(&server, "txn", "post_images=off&max_await_ms=200")).unwrap(),
    )
    .with_tables(vec![TableName::new("", "t")])
    .with_retry(fast_retry());
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut session = driver.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    for i in 0..3_i64 {
        coll.insert_one(doc! {"_id": i})
            .session(&mut session)
            .await
            .unwrap();
    }
    session.commit_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 10_i64}).await.unwrap();

    // Rows between each begin and its commit.
    let mut groups: Vec<usize> = Vec::new();
    let mut open: Option<usize> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while groups.iter().sum::<usize>() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "groups so far {groups:?}"
        );
        let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(2), stream.next()).await
        else {
            continue;
        };
        for event in batch.unwrap().events {
            match event {
                ChangeEvent::Begin(_) => open = Some(0),
                ChangeEvent::Row(r) if !r.snapshot => {
                    *open.as_mut().expect("row outside a transaction") += 1
                }
                ChangeEvent::Commit(_) => groups.extend(open.take()),
                _ => {}
            }
        }
    }
    assert_eq!(groups, vec![3, 1]);
}

/// An update whose event (pre-image + post-image + update description) is over 16 MB arrives
/// split by `$changeStreamSplitLargeEvent` and is reassembled into one row change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_over_16_mb_is_reassembled() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let base = url(&server, "large", "");
    let driver = client(&base).await;
    let coll = driver.database("large").collection::<Document>("big");
    driver
        .database("large")
        .create_collection("big")
        .await
        .unwrap();
    // Default mode: auto_configure enables pre/post images, so the update event carries both.
    let source =
        MongoSource::new(MongoConfig::parse(&url(&server, "large", "max_await_ms=200")).unwrap())
            .with_tables(vec![TableName::new("", "big")])
            .with_retry(fast_retry());
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let size = 9 * 1024 * 1024;
    coll.insert_one(doc! {"_id": 1_i64, "x": "a".repeat(size)})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1_i64}, doc! {"$set": {"x": "b".repeat(size)}})
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut update = None;
    while update.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no update event");
        let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await
        else {
            continue;
        };
        for event in batch.unwrap().events {
            if let ChangeEvent::Row(r) = event {
                if r.op == powersync_source_core::Op::Update {
                    update = Some(r);
                }
            }
        }
    }
    let update = update.unwrap();
    let x = |row: &powersync_source_core::Row| match row.get_by_name(&update.table, "x") {
        Some(powersync_source_core::Value::Text(s)) => (s.len(), s.as_bytes()[0]),
        other => panic!("x is {other:?}"),
    };
    assert_eq!(x(update.new.as_ref().unwrap()), (size, b'b'));
    assert_eq!(update.old_image, powersync_source_core::OldImage::Full);
    assert_eq!(x(update.old.as_ref().unwrap()), (size, b'a'));
}
