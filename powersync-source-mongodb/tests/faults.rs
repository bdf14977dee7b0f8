//! Faults and refusals against SecantusDB: kills mid-snapshot, bad credentials, a standalone
//! server, read_only without images, invalid tokens; DDL events; auto_configure.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, ChangeStream, Checkpoint, ErrorKind, OldImage, Op, SnapshotProgress,
    SnapshotResume, StartFrom, TableName, Value,
};
use powersync_source_mongodb::bson::{doc, Document};
use powersync_source_mongodb::mongodb::options::{Acknowledgment, CollectionOptions, WriteConcern};
use powersync_source_mongodb::{MongoConfig, MongoSource};

use crate::common::{client, fast_retry, secantus, url};

fn source(url: &str, tables: &[&str]) -> MongoSource {
    MongoSource::new(MongoConfig::parse(url).unwrap())
        .with_tables(tables.iter().map(|t| TableName::new("", *t)).collect())
        .with_retry(fast_retry())
        .with_silence_timeout(Duration::from_secs(8))
}

async fn next_events(stream: &mut ChangeStream, within: Duration) -> Vec<ChangeEvent> {
    match tokio::time::timeout(within, stream.next()).await {
        Ok(Some(Ok(batch))) => batch.events,
        Ok(Some(Err(e))) => panic!("stream failed: {e}"),
        Ok(None) => panic!("stream ended"),
        Err(_) => Vec::new(),
    }
}

fn id_of(r: &powersync_source_core::RowChange) -> i64 {
    let image = r.new.as_ref().or(r.old.as_ref()).unwrap();
    image
        .get(0)
        .and_then(Value::as_integer)
        .expect("integer _id")
}

async fn fill(url: &str, db: &str, coll: &str, n: i64) {
    let driver = client(url).await;
    let wc = WriteConcern::builder()
        .w(Acknowledgment::Nodes(1))
        .journal(true)
        .build();
    let c = driver.database(db).collection_with_options::<Document>(
        coll,
        CollectionOptions::builder().write_concern(wc).build(),
    );
    for chunk in 0..(n / 500).max(1) {
        let docs: Vec<Document> = (chunk * 500..((chunk + 1) * 500).min(n))
            .map(|i| doc! {"_id": i, "v": format!("v{i}")})
            .collect();
        c.insert_many(docs).await.unwrap();
    }
}

/// The server is SIGKILLed while the snapshot reads: the stream retries the batch after the
/// restart and finishes with every document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_snapshot() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let base = url(&server, "snap", "");
    fill(&base, "snap", "big", 3000).await;
    let src = source(
        &url(
            &server,
            "snap",
            "post_images=off&snapshot_batch_size=200&max_await_ms=200",
        ),
        &["big"],
    );
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    let mut ids = BTreeSet::new();
    let mut killed = false;
    let mut done = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !done {
        assert!(
            tokio::time::Instant::now() < deadline,
            "snapshot did not finish"
        );
        for e in next_events(&mut stream, Duration::from_secs(5)).await {
            match e {
                ChangeEvent::Row(r) => {
                    ids.insert(id_of(&r));
                }
                ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { .. }) if !killed => {
                    killed = true;
                    server.kill().await.unwrap();
                    server.restart().await.unwrap();
                }
                ChangeEvent::Snapshot(SnapshotProgress::Done { .. }) => done = true,
                _ => {}
            }
        }
    }
    // The batch read across the kill was retried (by the driver's retryable read or by the
    // stream's backoff); every document arrived.
    assert!(killed);
    assert_eq!(ids.len(), 3000);
}

/// A snapshot stopped after some chunks resumes from its token: the rest is read, nothing
/// before the token again, and the stream then follows changes made meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_resumes_from_token() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let base = url(&server, "resume", "");
    fill(&base, "resume", "big", 1000).await;
    let src_url = url(
        &server,
        "resume",
        "post_images=off&snapshot_batch_size=100&max_await_ms=200",
    );
    let src = source(&src_url, &["big"]);
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    let mut first = BTreeSet::new();
    let mut resume: Option<SnapshotResume> = None;
    let mut pending = Vec::new();
    let far_enough = |r: &Option<SnapshotResume>| {
        matches!(
            r.as_ref().and_then(|r| r.tables.values().next()),
            Some(powersync_source_core::TableProgress::Partial { rows, .. }) if *rows >= 300
        )
    };
    while !far_enough(&resume) {
        for e in next_events(&mut stream, Duration::from_secs(10)).await {
            match e {
                ChangeEvent::Row(r) => pending.push(id_of(&r)),
                ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { resume: r, .. }) => {
                    first.extend(pending.drain(..));
                    resume = Some(*r);
                }
                _ => {}
            }
        }
    }
    drop(stream);
    // A change during the pause: streamed after the resumed snapshot.
    let driver = client(&base).await;
    driver
        .database("resume")
        .collection::<Document>("big")
        .insert_one(doc! {"_id": 5000_i64, "v": "late"})
        .await
        .unwrap();
    let token = resume.unwrap().to_token();
    let mut stream = source(&src_url, &["big"])
        .start(StartFrom::parse(&token).unwrap())
        .await
        .unwrap();
    let mut second = BTreeSet::new();
    let mut done = false;
    let mut late = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(done && late) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "resume did not finish"
        );
        for e in next_events(&mut stream, Duration::from_secs(5)).await {
            match e {
                ChangeEvent::Row(r) if r.snapshot => {
                    let id = id_of(&r);
                    assert!(!first.contains(&id), "{id:?} read twice");
                    second.insert(id);
                }
                ChangeEvent::Row(r) if id_of(&r) == 5000 => late = true,
                ChangeEvent::Snapshot(SnapshotProgress::Done { .. }) => done = true,
                _ => {}
            }
        }
    }
    assert_eq!(
        first.len() + second.len(),
        1000 + usize::from(second.contains(&5000))
    );
}

/// Wrong credentials are `Auth`, and the password appears nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials() {
    let Some(server) = secantus(&["--auth"]).await else {
        return;
    };
    let password = "Wr0ng-Secret-pw";
    let u = format!(
        "mongodb://sync:{password}@127.0.0.1:{}/app?directConnection=true&authSource=admin",
        server.port()
    );
    let src = source(&u, &[]);
    let err = src.check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    let shown = format!("{err} {err:?} {src:?}");
    assert!(!shown.contains(password), "{shown}");
}

/// A standalone server (SecantusDB `--standalone` drops the replica-set fields from hello) is
/// refused by check() with the fix, in the same report as every other problem found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_is_refused() {
    let Some(server) = secantus(&["--standalone"]).await else {
        return;
    };
    let driver = client(&url(&server, "app", "")).await;
    driver
        .database("app")
        .create_collection("plain")
        .await
        .unwrap();
    let src = source(
        &url(&server, "app", "post_images=read_only"),
        &["plain", "missing"],
    );
    let report = src.check().await.unwrap();
    assert!(report
        .server_version
        .as_deref()
        .unwrap_or("")
        .starts_with("MongoDB "));
    let settings: Vec<&str> = report.problems.iter().map(|p| p.setting.as_str()).collect();
    assert!(settings.contains(&"topology"), "{settings:?}");
    assert!(
        settings.contains(&"changeStreamPreAndPostImages"),
        "{settings:?}"
    );
    assert!(
        settings.iter().any(|s| s.contains("missing")),
        "{settings:?}"
    );
    let err = report.into_result().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Prerequisite);
    assert!(err.to_string().contains("standalone"), "{err}");
    assert!(err.to_string().contains("--replSet"), "{err}");
    assert!(err.to_string().contains("2 problem(s)"), "{err}");
}

/// read_only without pre/post images: check() names the collection and start() refuses.
/// auto_configure enables them and updates then carry full pre-images. A garbage token is
/// HistoryLost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_image_modes_and_bad_tokens() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let base = url(&server, "img", "");
    let driver = client(&base).await;
    let db = driver.database("img");
    db.create_collection("plain").await.unwrap();

    let read_only = source(&url(&server, "img", "post_images=read_only"), &["plain"]);
    let report = read_only.check().await.unwrap();
    let err = report.into_result().unwrap_err();
    assert!(
        err.to_string().contains("plain")
            && err.to_string().contains("changeStreamPreAndPostImages"),
        "{err}"
    );
    let err = read_only.start(StartFrom::Beginning).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Prerequisite);
    assert!(err.to_string().contains("plain"), "{err}");

    let auto = source(&url(&server, "img", "max_await_ms=200"), &["plain"]);
    assert!(auto.check().await.unwrap().is_ready());
    let mut stream = auto.start(StartFrom::Beginning).await.unwrap();
    let spec = db
        .run_command(doc! {"listCollections": 1, "filter": {"name": "plain"}})
        .await
        .unwrap();
    assert!(
        format!("{spec}").contains("changeStreamPreAndPostImages"),
        "{spec}"
    );
    let coll = db.collection::<Document>("plain");
    coll.insert_one(doc! {"_id": 1_i64, "v": "a"})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1_i64}, doc! {"$set": {"v": "b"}})
        .await
        .unwrap();
    let mut update = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while update.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no update event");
        for e in next_events(&mut stream, Duration::from_secs(5)).await {
            if let ChangeEvent::Row(r) = e {
                if r.op == Op::Update {
                    update = Some(r);
                }
            }
        }
    }
    let update = update.unwrap();
    assert_eq!(update.old_image, OldImage::Full);
    assert_eq!(
        update.old.as_ref().unwrap().get_by_name(&update.table, "v"),
        Some(&Value::Text("a".into()))
    );
    assert_eq!(
        update.new.as_ref().unwrap().get_by_name(&update.table, "v"),
        Some(&Value::Text("b".into()))
    );
    drop(stream);

    let garbage = Checkpoint::parse("mongodb:v1:0000000100000001:zz-not-a-token").unwrap();
    let result = match auto.start(StartFrom::Checkpoint(garbage)).await {
        Err(e) => e,
        Ok(mut s) => match tokio::time::timeout(Duration::from_secs(20), s.next()).await {
            Ok(Some(Err(e))) => e,
            other => panic!(
                "expected an error, got {:?}",
                other.map(|o| o.map(|b| b.map(|b| b.len())))
            ),
        },
    };
    assert_eq!(result.kind(), ErrorKind::HistoryLost, "{result}");
}

/// drop, rename (out of and into the selection; the target read through a backfill),
/// dropDatabase with its invalidate, and a new collection, with every collection of the
/// database selected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_events() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let base = url(&server, "ddl", "");
    let driver = client(&base).await;
    let db = driver.database("ddl");
    for (coll, n) in [("a", 3_i64), ("b", 2)] {
        let docs: Vec<Document> = (0..n).map(|i| doc! {"_id": i, "v": coll}).collect();
        db.collection::<Document>(coll)
            .insert_many(docs)
            .await
            .unwrap();
    }
    let src = source(
        &url(&server, "ddl", "post_images=off&max_await_ms=200"),
        &[],
    );
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    let mut events = Vec::new();
    // Snapshot both.
    let mut snap_rows = 0;
    while !events
        .iter()
        .any(|e| matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. })))
    {
        let batch = next_events(&mut stream, Duration::from_secs(10)).await;
        snap_rows += batch
            .iter()
            .filter(|e| matches!(e, ChangeEvent::Row(r) if r.snapshot))
            .count();
        events.extend(batch);
    }
    assert_eq!(snap_rows, 5);
    events.clear();

    driver
        .database("admin")
        .run_command(doc! {"renameCollection": "ddl.a", "to": "ddl.c"})
        .await
        .unwrap();
    db.collection::<Document>("b").drop().await.unwrap();
    db.collection::<Document>("fresh")
        .insert_one(doc! {"_id": 9_i64})
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let truncated = |events: &[ChangeEvent], name: &str| {
        events.iter().any(
            |e| matches!(e, ChangeEvent::Truncate(t) if t.tables.iter().any(|t| t.name == name)),
        )
    };
    let copied = |events: &[ChangeEvent]| {
        events
            .iter()
            .filter(|e| matches!(e, ChangeEvent::Row(r) if r.snapshot && r.table.name.name == "c"))
            .count()
    };
    let fresh = |events: &[ChangeEvent]| {
        events.iter().any(
            |e| matches!(e, ChangeEvent::Row(r) if !r.snapshot && r.table.name.name == "fresh"),
        )
    };
    // The renamed-in collection is read through a backfill (`added-` request), not inline.
    let backfilled = |events: &[ChangeEvent]| {
        events.iter().any(|e| {
            matches!(e, ChangeEvent::Snapshot(SnapshotProgress::BackfillDone { table, id, rows: 3 })
                if table.name == "c" && id.starts_with("added-"))
        })
    };
    while !(truncated(&events, "a")
        && truncated(&events, "b")
        && copied(&events) == 3
        && backfilled(&events)
        && fresh(&events))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "DDL events missing: {events:#?}"
        );
        events.extend(next_events(&mut stream, Duration::from_secs(5)).await);
    }

    driver.database("ddl").drop().await.unwrap();
    db.collection::<Document>("after")
        .insert_one(doc! {"_id": 1_i64})
        .await
        .unwrap();
    events.clear();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(events.iter().any(|e| matches!(e, ChangeEvent::Truncate(_)))
        && events
            .iter()
            .any(|e| matches!(e, ChangeEvent::Row(r) if r.table.name.name == "after")))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dropDatabase/invalidate not followed: {events:#?}"
        );
        events.extend(next_events(&mut stream, Duration::from_secs(5)).await);
    }
}
