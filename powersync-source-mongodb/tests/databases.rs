//! Several databases in one source: one cluster-level change stream, one checkpoint, the
//! barrier and markers in one checkpoint database, transactions spanning databases framed as
//! one transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, ChangeStream, Checkpoint, ErrorKind, Op, StartFrom, TableName, Value,
};
use powersync_source_mongodb::bson::{doc, Document};
use powersync_source_mongodb::mongodb::Client;
use powersync_source_mongodb::{MongoConfig, MongoSource};

use crate::common::{client, fast_retry, secantus, url};

/// The rows a host would hold: table → id → `v`, applied from the events.
type State = BTreeMap<String, BTreeMap<String, String>>;

/// What one run of a stream saw.
#[derive(Default)]
struct Seen {
    /// Committed transactions: the tables of their rows, in order.
    transactions: Vec<Vec<String>>,
    last_commit: Option<Checkpoint>,
    observed: Vec<Checkpoint>,
    snapshot_done: bool,
    /// Rows of the open transaction: a transaction may span batches, and so span two calls
    /// of `read_until`.
    pending: Vec<(String, Op, String, Option<String>)>,
}

fn key(v: &Value) -> String {
    match v {
        Value::Integer(i) => i.to_string(),
        Value::Text(t) => t.clone(),
        other => format!("{other:?}"),
    }
}

/// Reads `stream` until `until` holds (or panics after 30 s), applying committed rows to
/// `state` (rows of a transaction apply only at its commit, as a host's SQLite transaction).
async fn read_until(
    stream: &mut ChangeStream,
    state: &mut State,
    seen: &mut Seen,
    until: impl Fn(&State, &Seen) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !until(state, seen) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {state:?}"
        );
        let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(2), stream.next()).await
        else {
            continue;
        };
        for event in batch.expect("a batch").events {
            match event {
                ChangeEvent::Begin(_) => seen.pending.clear(),
                ChangeEvent::Row(r) => {
                    let table = r.table.name.to_string();
                    let row = r.new.as_ref().or(r.old.as_ref()).expect("a row image");
                    let id = key(&row.values()[r.table.key_indexes().next().expect("a key")]);
                    let v = r.new.as_ref().and_then(|n| {
                        let at = r.table.column_index("v")?;
                        Some(key(&n.values()[at]))
                    });
                    if r.snapshot {
                        state
                            .entry(table)
                            .or_default()
                            .insert(id, v.unwrap_or_default());
                    } else {
                        seen.pending.push((table, r.op, id, v));
                    }
                }
                ChangeEvent::Commit(c) => {
                    let mut tables = Vec::new();
                    for (table, op, id, v) in std::mem::take(&mut seen.pending) {
                        tables.push(table.clone());
                        let rows = state.entry(table).or_default();
                        match op {
                            Op::Delete => {
                                rows.remove(&id);
                            }
                            _ => {
                                rows.insert(id, v.unwrap_or_default());
                            }
                        }
                    }
                    if !tables.is_empty() {
                        seen.transactions.push(tables);
                    }
                    seen.last_commit = Some(c.checkpoint);
                }
                ChangeEvent::Abort => seen.pending.clear(),
                ChangeEvent::CheckpointObserved(c) => seen.observed.push(c),
                ChangeEvent::Snapshot(powersync_source_core::SnapshotProgress::Done { .. }) => {
                    seen.snapshot_done = true
                }
                _ => {}
            }
        }
    }
}

/// The documents of `db.coll` as id → `v`.
async fn source_rows(driver: &Client, db: &str, coll: &str) -> BTreeMap<String, String> {
    let mut cursor = driver
        .database(db)
        .collection::<Document>(coll)
        .find(doc! {})
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    while let Some(d) = cursor.next().await {
        let d = d.unwrap();
        let id = match d.get("_id").unwrap() {
            powersync_source_mongodb::bson::Bson::Int32(i) => i.to_string(),
            powersync_source_mongodb::bson::Bson::Int64(i) => i.to_string(),
            other => other.to_string(),
        };
        out.insert(id, d.get_str("v").unwrap_or_default().to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_databases_stream_in_one_order_under_one_checkpoint() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let driver = client(&url(&server, "", "")).await;
    let (shop, billing) = (driver.database("shop"), driver.database("billing"));
    let orders = shop.collection::<Document>("orders");
    let invoices = billing.collection::<Document>("invoices");
    orders
        .insert_many((0..20).map(|i| doc! {"_id": i, "v": format!("o{i}")}))
        .await
        .unwrap();
    invoices
        .insert_many((0..10).map(|i| doc! {"_id": i, "v": format!("i{i}")}))
        .await
        .unwrap();
    // An unselected collection of a selected database, and an unselected database.
    shop.collection::<Document>("carts")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    driver
        .database("other")
        .collection::<Document>("x")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();

    // No database in the URL: the table names carry them; markers go to the first one.
    let source_url = url(&server, "", "post_images=off&max_await_ms=200");
    let tables = vec![
        TableName::new("shop", "orders"),
        TableName::new("billing", "invoices"),
    ];
    let source = MongoSource::new(MongoConfig::parse(&source_url).unwrap())
        .with_tables(tables.clone())
        .with_retry(fast_retry());
    let report = source.check().await.unwrap();
    assert!(report.is_ready(), "{report:?}");
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut state = State::new();
    let mut seen = Seen::default();
    read_until(&mut stream, &mut state, &mut seen, |_, s| s.snapshot_done).await;
    assert_eq!(state["shop.orders"].len(), 20);
    assert_eq!(state["billing.invoices"].len(), 10);
    assert_eq!(state.len(), 2, "{:?}", state.keys());
    let checkpoints: Vec<String> = shop.list_collection_names().await.unwrap();
    assert!(checkpoints.contains(&"_powersync_checkpoints".to_string()));

    // Interleaved single writes, then one transaction over both databases.
    for i in 0..5 {
        orders
            .update_one(doc! {"_id": i}, doc! {"$set": {"v": format!("o{i}-u")}})
            .await
            .unwrap();
        invoices
            .insert_one(doc! {"_id": 100 + i, "v": "late"})
            .await
            .unwrap();
    }
    invoices.delete_one(doc! {"_id": 0}).await.unwrap();
    let mut session = driver.start_session().await.unwrap();
    let in_txn = session.start_transaction().await;
    let transactions = in_txn.is_ok();
    if transactions {
        orders
            .insert_one(doc! {"_id": 500, "v": "txn"})
            .session(&mut session)
            .await
            .unwrap();
        invoices
            .insert_one(doc! {"_id": 500, "v": "txn"})
            .session(&mut session)
            .await
            .unwrap();
        orders
            .delete_one(doc! {"_id": 19})
            .session(&mut session)
            .await
            .unwrap();
        session.commit_transaction().await.unwrap();
    }
    let marker = source.write_checkpoint().await.unwrap();
    read_until(&mut stream, &mut state, &mut seen, |_, s| {
        s.observed.contains(&marker)
    })
    .await;
    assert_eq!(
        state["shop.orders"],
        source_rows(&driver, "shop", "orders").await
    );
    assert_eq!(
        state["billing.invoices"],
        source_rows(&driver, "billing", "invoices").await
    );
    assert!(!state.contains_key("shop.carts") && !state.contains_key("other.x"));
    if transactions {
        // The transaction's three writes in two databases: one begin, one commit.
        let spanning: Vec<&Vec<String>> =
            seen.transactions.iter().filter(|t| t.len() > 1).collect();
        assert_eq!(
            spanning,
            vec![&vec![
                "shop.orders".to_string(),
                "billing.invoices".to_string(),
                "shop.orders".to_string()
            ]],
            "{:?}",
            seen.transactions
        );
    } else {
        eprintln!("the server refused a multi-document transaction: {in_txn:?}");
    }
    let resume_at = seen.last_commit.clone().expect("a commit");
    drop(stream);

    // Resuming from the one checkpoint sees the writes of both databases made meanwhile.
    orders
        .insert_one(doc! {"_id": 900, "v": "after"})
        .await
        .unwrap();
    invoices
        .update_one(doc! {"_id": 1}, doc! {"$set": {"v": "after"}})
        .await
        .unwrap();
    let mut stream = source
        .start(StartFrom::Checkpoint(resume_at))
        .await
        .unwrap();
    let marker = source.write_checkpoint().await.unwrap();
    let mut seen = Seen::default();
    read_until(&mut stream, &mut state, &mut seen, |_, s| {
        s.observed.contains(&marker)
    })
    .await;
    assert_eq!(
        state["shop.orders"],
        source_rows(&driver, "shop", "orders").await
    );
    assert_eq!(
        state["billing.invoices"],
        source_rows(&driver, "billing", "invoices").await
    );
    assert_eq!(
        seen.transactions,
        vec![
            vec!["shop.orders".to_string()],
            vec!["billing.invoices".to_string()]
        ],
        "nothing before the checkpoint again"
    );
}

/// `databases=` selects whole databases; `checkpoint_database=` puts the markers elsewhere; a
/// table without a database and no default one is a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_parameter_and_checkpoint_database() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let driver = client(&url(&server, "", "")).await;
    for db in ["a", "b"] {
        driver
            .database(db)
            .collection::<Document>("t")
            .insert_one(doc! {"_id": 1, "v": db})
            .await
            .unwrap();
    }
    let source_url = url(
        &server,
        "",
        "post_images=off&max_await_ms=200&databases=a,b&checkpoint_database=ops",
    );
    let source =
        MongoSource::new(MongoConfig::parse(&source_url).unwrap()).with_retry(fast_retry());
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut state = State::new();
    let mut seen = Seen::default();
    read_until(&mut stream, &mut state, &mut seen, |_, s| s.snapshot_done).await;
    assert_eq!(state.keys().collect::<Vec<_>>(), ["a.t", "b.t"]);
    driver
        .database("b")
        .collection::<Document>("new")
        .insert_one(doc! {"_id": 7, "v": "seven"})
        .await
        .unwrap();
    let marker = source.write_checkpoint().await.unwrap();
    read_until(&mut stream, &mut state, &mut seen, |_, s| {
        s.observed.contains(&marker)
    })
    .await;
    assert_eq!(state["b.new"]["7"], "seven");
    let names = driver
        .database("ops")
        .list_collection_names()
        .await
        .unwrap();
    assert_eq!(names, ["_powersync_checkpoints"]);
    drop(stream);

    let bare = MongoSource::new(MongoConfig::parse(&url(&server, "", "databases=a,b")).unwrap())
        .with_tables(vec![TableName::new("", "t")]);
    let e = bare.check().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
}

/// Transactions over two databases committed while the stream reads (so a read may come
/// between their events on the server) each arrive as one begin/commit holding all their rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_over_two_databases_stay_whole() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let driver = client(&url(&server, "", "")).await;
    let orders = driver.database("shop").collection::<Document>("orders");
    let invoices = driver
        .database("billing")
        .collection::<Document>("invoices");
    orders
        .insert_one(doc! {"_id": -1, "v": "seed"})
        .await
        .unwrap();
    invoices
        .insert_one(doc! {"_id": -1, "v": "seed"})
        .await
        .unwrap();
    let source_url = url(&server, "", "post_images=off&max_await_ms=50");
    let source = MongoSource::new(MongoConfig::parse(&source_url).unwrap())
        .with_tables(vec![
            TableName::new("shop", "orders"),
            TableName::new("billing", "invoices"),
        ])
        .with_retry(fast_retry());
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut state = State::new();
    let mut seen = Seen::default();
    read_until(&mut stream, &mut state, &mut seen, |_, s| s.snapshot_done).await;
    const N: i64 = 60;
    let writer = {
        let (driver, orders, invoices) = (driver.clone(), orders.clone(), invoices.clone());
        tokio::spawn(async move {
            let mut committed = 0;
            for i in 0..N {
                let mut session = driver.start_session().await.unwrap();
                session.start_transaction().await.unwrap();
                let ok = async {
                    orders
                        .insert_one(doc! {"_id": i, "v": "t"})
                        .session(&mut session)
                        .await?;
                    invoices
                        .insert_one(doc! {"_id": i, "v": "t"})
                        .session(&mut session)
                        .await?;
                    orders
                        .update_one(doc! {"_id": -1}, doc! {"$set": {"v": format!("t{i}")}})
                        .session(&mut session)
                        .await?;
                    session.commit_transaction().await
                }
                .await;
                match ok {
                    Ok(()) => committed += 1,
                    Err(e) => panic!("transaction {i}: {e}"),
                }
            }
            committed
        })
    };
    // Read while the writer commits, a batch at a time.
    while !writer.is_finished() {
        let before = seen.transactions.len();
        read_until(&mut stream, &mut state, &mut seen, |_, s| {
            s.transactions.len() > before || writer.is_finished()
        })
        .await;
    }
    let committed = writer.await.unwrap();
    assert_eq!(committed, N);
    let marker = source.write_checkpoint().await.unwrap();
    read_until(&mut stream, &mut state, &mut seen, |_, s| {
        s.observed.contains(&marker)
    })
    .await;
    let whole = vec![
        "shop.orders".to_string(),
        "billing.invoices".to_string(),
        "shop.orders".to_string(),
    ];
    let broken: Vec<&Vec<String>> = seen.transactions.iter().filter(|t| **t != whole).collect();
    assert!(broken.is_empty(), "{:?}", seen.transactions);
    assert_eq!(seen.transactions.len() as i64, N);
}
