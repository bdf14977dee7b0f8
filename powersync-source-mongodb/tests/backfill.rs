//! Backfills while streaming (DBLog watermarks) against SecantusDB: requested through a
//! signal document and through `ChangeStream::request_backfill`, resumed from a stored
//! checkpoint, and a collection created while streaming. Events are applied to an in-memory
//! model in stream order, the way a host applies them (a transaction at its commit): at the end
//! the model equals the source, and no document's `version` (bumped by every update of a
//! concurrent writer) ever goes backwards in apply order.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use powersync_source_core::{
    ChangeEvent, ChangeSource, ChangeStream, Checkpoint, Op, RowChange, SnapshotProgress,
    StartFrom, StreamOptions, TableName, Value,
};
use powersync_source_mongodb::bson::{doc, Document};
use powersync_source_mongodb::mongodb::Client;
use powersync_source_mongodb::{MongoConfig, MongoSource};

use crate::common::{client, fast_retry, secantus, url};

const DB: &str = "bf";
const CHUNK: usize = 500;

/// The host's copy: (collection, `_id`) → `version`, applied a transaction at a time.
#[derive(Default)]
struct Model {
    rows: HashMap<(String, i64), i64>,
    /// Values of the columns named `f…` (fields added while streaming), per row, dropped
    /// when a schema event no longer lists them (as the SQLite sink drops such columns).
    extras: HashMap<(String, i64), BTreeMap<String, i64>>,
    pending: Vec<ChangeEvent>,
    in_txn: bool,
    /// Whether `version` must not go backwards (off during the initial snapshot, whose
    /// replay window legitimately does).
    checking: bool,
    backwards: Vec<String>,
    /// The last boundary applied: what a host would have stored.
    stored: Option<Checkpoint>,
    /// Backfill (snapshot: true inside a transaction) keys applied, in order.
    backfilled: Vec<(String, i64)>,
    started: Vec<(TableName, String)>,
    chunks: Vec<(TableName, String, u64)>,
    done: Vec<(TableName, String, u64)>,
    failed: Vec<String>,
    /// Commits holding rows of `other` since the last backfill chunk, per chunk.
    other_commits: u64,
    other_commits_per_chunk: Vec<u64>,
    observed: Vec<Checkpoint>,
}

impl Model {
    fn apply_row(&mut self, change: &RowChange, in_txn: bool) {
        let table = change.table.name.name.clone();
        assert!(
            !table.starts_with("_powersync"),
            "an internal collection leaked as rows: {table}"
        );
        let key_of = |row: &powersync_source_core::Row| match row.get(0) {
            Some(Value::Integer(i)) => *i,
            other => panic!("{table}: key {other:?}"),
        };
        match change.op {
            Op::Delete => {
                let key = key_of(change.old.as_ref().expect("old"));
                self.rows.remove(&(table, key));
            }
            _ => {
                let new = change.new.as_ref().expect("new");
                let key = key_of(new);
                let version = match new.get_by_name(&change.table, "version") {
                    Some(Value::Integer(v)) => *v,
                    other => panic!("{table} {key}: version {other:?}"),
                };
                if change.snapshot && in_txn {
                    self.backfilled.push((table.clone(), key));
                }
                let extras = self.extras.entry((table.clone(), key)).or_default();
                extras.clear();
                for (i, column) in change.table.columns.iter().enumerate() {
                    if let (true, Some(Value::Integer(v))) =
                        (column.name.starts_with('f'), new.get(i))
                    {
                        extras.insert(column.name.clone(), *v);
                    }
                }
                let slot = self.rows.entry((table.clone(), key)).or_insert(version);
                if self.checking && version < *slot {
                    self.backwards.push(format!(
                        "{table} {key}: version {} then {version} (snapshot: {})",
                        *slot, change.snapshot
                    ));
                }
                *slot = version;
            }
        }
    }

    fn apply(&mut self, event: ChangeEvent) {
        if std::env::var("BF_TRACE").is_ok() {
            match &event {
                ChangeEvent::Row(r) => eprintln!(
                    "event row {} {:?} snapshot={}",
                    r.table.name.name,
                    r.new.as_ref().map(|n| n.values()[..2].to_vec()),
                    r.snapshot
                ),
                other => eprintln!(
                    "event {}",
                    format!("{other:?}").chars().take(160).collect::<String>()
                ),
            }
        }
        match event {
            ChangeEvent::Begin(_) => {
                self.in_txn = true;
                self.pending.clear();
            }
            ChangeEvent::Row(_) | ChangeEvent::Schema(_) if self.in_txn => self.pending.push(event),
            ChangeEvent::Row(r) => self.apply_row(&r, false),
            ChangeEvent::Schema(schema) => self.apply_schema(&schema),
            ChangeEvent::Commit(c) => {
                let events = std::mem::take(&mut self.pending);
                if events
                    .iter()
                    .any(|e| matches!(e, ChangeEvent::Row(r) if r.table.name.name == "other"))
                {
                    self.other_commits += 1;
                }
                for e in &events {
                    match e {
                        ChangeEvent::Row(r) => self.apply_row(r, true),
                        ChangeEvent::Schema(s) => self.apply_schema(s),
                        _ => {}
                    }
                }
                self.in_txn = false;
                self.stored = Some(c.checkpoint);
            }
            ChangeEvent::Abort => {
                self.pending.clear();
                self.in_txn = false;
            }
            ChangeEvent::Keepalive(c) => self.stored = Some(c),
            ChangeEvent::CheckpointObserved(c) => self.observed.push(c),
            ChangeEvent::Snapshot(p) => match p {
                SnapshotProgress::Done { checkpoint } => {
                    self.stored = Some(checkpoint);
                    self.checking = true;
                }
                SnapshotProgress::BackfillStarted { table, id } => self.started.push((table, id)),
                SnapshotProgress::BackfillChunk {
                    table,
                    id,
                    rows_done,
                } => {
                    self.chunks.push((table, id, rows_done));
                    self.other_commits_per_chunk.push(self.other_commits);
                    self.other_commits = 0;
                }
                SnapshotProgress::BackfillDone { table, id, rows } => {
                    self.done.push((table, id, rows))
                }
                SnapshotProgress::BackfillFailed { table, id, error } => {
                    self.failed.push(format!("{table} {id}: {error}"))
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn apply_schema(&mut self, schema: &powersync_source_core::TableSchema) {
        let table = &schema.name.name;
        for ((t, _), extras) in self.extras.iter_mut() {
            if t == table {
                extras.retain(|name, _| schema.columns.iter().any(|c| &c.name == name));
            }
        }
    }

    fn collection(&self, name: &str) -> BTreeMap<i64, i64> {
        self.rows
            .iter()
            .filter(|((t, _), _)| t == name)
            .map(|((_, k), v)| (*k, *v))
            .collect()
    }
}

/// A stream and the events of its last batch not applied yet.
struct Host {
    stream: ChangeStream,
    unread: std::collections::VecDeque<ChangeEvent>,
}

impl Host {
    fn new(stream: ChangeStream) -> Host {
        Host {
            stream,
            unread: Default::default(),
        }
    }
}

/// Applies the stream's events until `until` holds after an event; the rest of that batch
/// is applied by the next call (or dropped with the host, as a host that stops there would).
async fn run_until(
    host: &mut Host,
    model: &mut Model,
    what: &str,
    mut until: impl FnMut(&Model) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while let Some(event) = host.unread.pop_front() {
        model.apply(event);
        if until(model) {
            return;
        }
    }
    let stream = &mut host.stream;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {} chunks, done {:?}, failed {:?}",
            model.chunks.len(),
            model.done,
            model.failed
        );
        let Ok(next) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await else {
            continue;
        };
        let batch = next.expect("stream ended").expect("stream failed");
        let mut events = batch.events.into_iter();
        while let Some(event) = events.next() {
            model.apply(event);
            if until(model) {
                host.unread.extend(events);
                return;
            }
        }
    }
}

/// Makes the stream pass a fresh write-checkpoint marker and apply its transaction.
async fn catch_up(source: &MongoSource, stream: &mut Host, model: &mut Model) {
    let target = source.write_checkpoint().await.expect("write_checkpoint");
    let seen = model.observed.len();
    let mut passed = false;
    run_until(stream, model, "the checkpoint marker", |m| {
        passed |= m.observed[seen.min(m.observed.len())..]
            .iter()
            .any(|c| c.body() >= target.body());
        passed && !m.in_txn
    })
    .await;
}

/// Updates random documents of the collections in `targets` (`$inc` of `version`) until
/// stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    targets: Arc<Mutex<Vec<(String, i64)>>>,
    writes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(driver: Client, targets: Vec<(String, i64)>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(Mutex::new(targets));
        let writes = Arc::new(AtomicU64::new(0));
        let (s, t, w) = (stop.clone(), targets.clone(), writes.clone());
        let task = tokio::spawn(async move {
            let db = driver.database(DB);
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            while !s.load(Ordering::Relaxed) {
                let list = t.lock().unwrap().clone();
                for (coll, n) in list {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = (x % n as u64) as i64;
                    db.collection::<Document>(&coll)
                        .update_one(doc! {"_id": key}, doc! {"$inc": {"version": 1_i64}})
                        .await
                        .expect("writer update");
                    let n = w.fetch_add(1, Ordering::Relaxed);
                    if std::env::var("BF_TRACE").is_ok() {
                        eprintln!("write {n}: {coll} {key}");
                    }
                }
            }
        });
        Writer {
            stop,
            targets,
            writes,
            task,
        }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer");
        self.writes.load(Ordering::Relaxed)
    }
}

async fn fill(driver: &Client, coll: &str, n: i64) {
    let db = driver.database(DB);
    db.run_command(doc! {"create": coll, "changeStreamPreAndPostImages": {"enabled": true}})
        .await
        .expect("create");
    let c = db.collection::<Document>(coll);
    let pad = "p".repeat(64);
    for start in (0..n).step_by(2000) {
        let docs: Vec<Document> = (start..(start + 2000).min(n))
            .map(|i| doc! {"_id": i, "version": 0_i64, "pad": pad.as_str()})
            .collect();
        c.insert_many(docs).await.expect("insert");
    }
}

/// `_id` → `version` of a collection as the source holds it.
async fn source_rows(driver: &Client, coll: &str) -> BTreeMap<i64, i64> {
    let docs: Vec<Document> = driver
        .database(DB)
        .collection::<Document>(coll)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.iter()
        .map(|d| (d.get_i64("_id").unwrap(), d.get_i64("version").unwrap()))
        .collect()
}

/// `_id` → the `f…` fields of the documents that have any.
async fn source_extras(driver: &Client, coll: &str) -> BTreeMap<i64, BTreeMap<String, i64>> {
    let docs: Vec<Document> = driver
        .database(DB)
        .collection::<Document>(coll)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.iter()
        .map(|d| {
            let extras: BTreeMap<String, i64> = d
                .iter()
                .filter(|(k, _)| k.starts_with('f'))
                .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
                .collect();
            (d.get_i64("_id").unwrap(), extras)
        })
        .filter(|(_, e)| !e.is_empty())
        .collect()
}

async fn assert_mirrors(driver: &Client, model: &Model, collections: &[&str]) {
    for coll in collections {
        let want = source_extras(driver, coll).await;
        let got: BTreeMap<i64, BTreeMap<String, i64>> = model
            .extras
            .iter()
            .filter(|((t, _), e)| t == coll && !e.is_empty())
            .map(|((_, k), e)| (*k, e.clone()))
            .collect();
        assert_eq!(want, got, "{coll}: fields added while streaming");
    }
    for coll in collections {
        let want = source_rows(driver, coll).await;
        let got = model.collection(coll);
        let differing: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(k) != Some(v))
            .take(5)
            .map(|(k, v)| (*k, *v, got.get(k).copied()))
            .collect();
        assert!(
            differing.is_empty() && want.len() == got.len(),
            "{coll}: source {} rows, model {} rows, differing (key, source, model) {differing:?}; backwards {:?}",
            want.len(),
            got.len(),
            &model.backwards[..model.backwards.len().min(5)]
        );
    }
    assert!(
        model.backwards.is_empty(),
        "versions went backwards: {:?}",
        &model.backwards[..model.backwards.len().min(5)]
    );
    assert!(model.failed.is_empty(), "{:?}", model.failed);
}

struct Setup {
    _server: powersync_source_testkit::SecantusServer,
    driver: Client,
    source: MongoSource,
}

async fn setup(big: i64) -> Option<Setup> {
    let server = secantus(&[]).await?;
    let u = url(&server, DB, "max_await_ms=200");
    let driver = client(&url(&server, DB, "")).await;
    fill(&driver, "big", big).await;
    fill(&driver, "other", 100).await;
    let source = MongoSource::new(MongoConfig::parse(&u).unwrap()).with_stream_options(
        StreamOptions::default()
            .with_backfill_chunk_rows(CHUNK)
            .with_retry(fast_retry()),
    );
    Some(Setup {
        _server: server,
        driver,
        source,
    })
}

/// Starts from scratch and applies the initial snapshot.
async fn snapshot(s: &Setup, model: &mut Model) -> Host {
    let mut stream = Host::new(s.source.start(StartFrom::Beginning).await.unwrap());
    run_until(&mut stream, model, "the snapshot", |m| m.checking).await;
    stream
}

async fn signal(driver: &Client, id: &str, tables: &str) {
    driver
        .database(DB)
        .collection::<Document>("_powersync_signals")
        .insert_one(doc! {"id": id, "kind": "backfill", "tables": tables})
        .await
        .expect("signal");
}

/// (a) A signal document asks for a backfill of `big` while a writer updates `big` and
/// `other`: `BackfillDone` with the signal's id, the model equals the source, no version goes
/// backwards, and `other` keeps committing between chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signalled_backfill_runs_under_concurrent_writes() {
    let Some(s) = setup(20_000).await else {
        return;
    };
    let mut model = Model::default();
    let mut stream = snapshot(&s, &mut model).await;
    let writer = Writer::start(
        s.driver.clone(),
        vec![("big".into(), 20_000), ("other".into(), 100)],
    );
    signal(&s.driver, "req-a", "bf.big").await;
    run_until(&mut stream, &mut model, "BackfillDone", |m| {
        !m.done.is_empty()
    })
    .await;
    let writes = writer.stop().await;
    catch_up(&s.source, &mut stream, &mut model).await;

    assert_eq!(
        model.started,
        vec![(TableName::new(DB, "big"), "req-a".into())]
    );
    let (table, id, rows) = model.done[0].clone();
    assert_eq!((table, id.as_str()), (TableName::new(DB, "big"), "req-a"));
    let chunks = model.chunks.len();
    assert!(chunks >= 20_000 / CHUNK, "{chunks} chunks");
    assert!(rows > 0 && rows <= 20_000, "{rows} rows");
    assert_eq!(rows as usize, model.backfilled.len());
    let with_other = model
        .other_commits_per_chunk
        .iter()
        .filter(|n| **n > 0)
        .count();
    eprintln!(
        "backfill: {chunks} chunks, {rows} rows, {writes} writes; chunks preceded by commits of `other`: {with_other}"
    );
    assert!(
        with_other * 2 >= chunks,
        "`other` committed before only {with_other} of {chunks} chunks"
    );
    assert_mirrors(&s.driver, &model, &["big", "other"]).await;
}

/// (b) The stream is dropped after a few chunks and restarted from the last boundary a host
/// stored: the backfill continues after the stored cursor (no `BackfillStarted` again, every
/// backfilled key after the restart beyond every one stored before), and ends right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_resumes_from_the_stored_checkpoint() {
    let Some(s) = setup(20_000).await else {
        return;
    };
    let mut model = Model::default();
    let mut stream = snapshot(&s, &mut model).await;
    let writer = Writer::start(
        s.driver.clone(),
        vec![("big".into(), 20_000), ("other".into(), 100)],
    );
    signal(&s.driver, "req-b", "big").await;
    run_until(&mut stream, &mut model, "five chunks", |m| {
        m.chunks.len() >= 5
    })
    .await;
    drop(stream);
    let stored = model.stored.clone().expect("a stored checkpoint");
    let cursor = stored
        .backfill()
        .unwrap()
        .expect("the checkpoint carries the cursor");
    assert_eq!(cursor.tasks[0].id, "req-b");
    assert_eq!(cursor.tasks[0].rows, model.backfilled.len() as u64);
    let before = model.backfilled.len();
    let max_before = model.backfilled.iter().map(|(_, k)| *k).max().unwrap();
    model.in_txn = false;
    model.pending.clear();

    let mut stream = Host::new(s.source.start(StartFrom::Checkpoint(stored)).await.unwrap());
    run_until(&mut stream, &mut model, "BackfillDone", |m| {
        !m.done.is_empty()
    })
    .await;
    writer.stop().await;
    catch_up(&s.source, &mut stream, &mut model).await;

    assert_eq!(model.started.len(), 1, "started again: {:?}", model.started);
    let after: Vec<i64> = model.backfilled[before..].iter().map(|(_, k)| *k).collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|k| *k > max_before),
        "re-read keys up to {max_before}: first after the restart {:?}",
        after.first()
    );
    assert_eq!(model.done[0].1, "req-b");
    assert_eq!(model.done[0].2 as usize, model.backfilled.len());
    assert_mirrors(&s.driver, &model, &["big", "other"]).await;
}

/// (c) `ChangeStream::request_backfill` goes through the signal collection and reads the
/// table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_request_is_backfilled() {
    let Some(s) = setup(1_200).await else {
        return;
    };
    let mut model = Model::default();
    let mut stream = snapshot(&s, &mut model).await;
    let id = stream
        .stream
        .request_backfill(&[TableName::new(DB, "big")])
        .expect("request");
    run_until(&mut stream, &mut model, "BackfillDone", |m| {
        !m.done.is_empty()
    })
    .await;
    assert_eq!(
        model.done[0],
        (TableName::new(DB, "big"), id.clone(), 1_200)
    );
    let signals = s
        .driver
        .database(DB)
        .collection::<Document>("_powersync_signals")
        .count_documents(doc! {"id": &id})
        .await
        .unwrap();
    assert_eq!(signals, 1, "the request went through the signal collection");
    assert_eq!(model.chunks.len(), 1_200_usize.div_ceil(CHUNK));
    catch_up(&s.source, &mut stream, &mut model).await;
    assert_mirrors(&s.driver, &model, &["big", "other"]).await;
}

/// (d) A collection created (and filled) while streaming is read through a backfill with an
/// `added-` request id, under the same checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_created_while_streaming_is_backfilled() {
    let Some(s) = setup(2_000).await else {
        return;
    };
    let mut model = Model::default();
    let mut stream = snapshot(&s, &mut model).await;
    let writer = Writer::start(
        s.driver.clone(),
        vec![("big".into(), 2_000), ("other".into(), 100)],
    );
    fill(&s.driver, "late", 4_000).await;
    writer.targets.lock().unwrap().push(("late".into(), 4_000));
    run_until(&mut stream, &mut model, "BackfillDone of late", |m| {
        m.done.iter().any(|(t, _, _)| t.name == "late")
    })
    .await;
    writer.stop().await;
    catch_up(&s.source, &mut stream, &mut model).await;
    let (table, id) = &model.started[0];
    assert_eq!(table, &TableName::new(DB, "late"));
    assert!(id.starts_with("added-"), "{id}");
    assert_eq!(model.started.len(), 1, "{:?}", model.started);
    assert!(model.chunks.len() >= 2, "{:?}", model.chunks.len());
    assert_mirrors(&s.driver, &model, &["big", "other", "late"]).await;
}

/// `check()` warns (never errors) while `_powersync_signals` is missing, and `setup --apply`
/// (the `provision` run) creates it with the other prerequisites.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_a_missing_signal_collection_and_setup_creates_it() {
    let Some(server) = secantus(&[]).await else {
        return;
    };
    let u = url(&server, "sig", "post_images=off");
    let driver = client(&url(&server, "sig", "")).await;
    driver
        .database("sig")
        .create_collection("items")
        .await
        .unwrap();
    let source = MongoSource::new(MongoConfig::parse(&u).unwrap());
    let signals = |report: &powersync_source_core::CheckReport| {
        report
            .problems
            .iter()
            .find(|p| p.setting == "backfill signals")
            .cloned()
    };
    let report = source.check().await.unwrap();
    let warning = signals(&report).expect("a warning about the signal collection");
    assert_eq!(warning.severity, powersync_source_core::Severity::Warning);
    assert!(
        warning.what.contains("_powersync_signals"),
        "{}",
        warning.what
    );
    assert!(report.is_ready(), "{:?}", report.problems);

    let request = powersync_source_core::provision::Request {
        apply: true,
        user: "powersync".into(),
        tables: Vec::new(),
    };
    let mut out = Vec::new();
    powersync_source_mongodb::provision::run(source.config(), &request, &mut out)
        .await
        .expect("setup");
    let names = driver
        .database("sig")
        .list_collection_names()
        .await
        .unwrap();
    assert!(
        names.iter().any(|n| n == "_powersync_signals"),
        "{names:?}\n{}",
        String::from_utf8_lossy(&out)
    );
    assert!(signals(&source.check().await.unwrap()).is_none());
}

/// A field the stream first sees while a chunk of the same collection is in flight makes
/// that chunk's schema narrower than the one the stream announced: the collection is read
/// again (an `added-` backfill), and the model still ends equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_learned_during_a_chunk_reads_the_collection_again() {
    let Some(s) = setup(10_000).await else {
        return;
    };
    let mut model = Model::default();
    let mut stream = snapshot(&s, &mut model).await;
    let writer = Writer::start(
        s.driver.clone(),
        vec![("big".into(), 10_000), ("other".into(), 100)],
    );
    signal(&s.driver, "req-e", "bf.big").await;
    run_until(&mut stream, &mut model, "three chunks", |m| {
        m.chunks.len() >= 3
    })
    .await;
    // New fields on documents already backfilled, while chunks keep cycling: some first
    // appearance lands between a chunk's read and its high watermark.
    let big = s.driver.database(DB).collection::<Document>("big");
    for i in 0..60_i64 {
        let field = format!("f{i}");
        big.update_one(doc! {"_id": i}, doc! {"$set": {field: i}})
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    run_until(&mut stream, &mut model, "every backfill done", |m| {
        m.done.iter().any(|(_, id, _)| id == "req-e")
            && !m.in_txn
            && m.stored
                .as_ref()
                .is_some_and(|c| c.backfill().unwrap().is_none_or(|b| b.is_empty()))
    })
    .await;
    writer.stop().await;
    catch_up(&s.source, &mut stream, &mut model).await;
    let reread = model
        .started
        .iter()
        .any(|(t, id)| t.name == "big" && id.starts_with("added-"));
    // Whether a first appearance landed in a chunk's flight window is timing: say which.
    eprintln!("read again: {reread}; started {:?}", model.started);
    assert_mirrors(&s.driver, &model, &["big", "other"]).await;
}

/// A signal inserted inside a multi-document transaction (with a change of `other`) is
/// honoured: the backfill runs, and the transaction's change of `other` arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_inside_a_transaction_is_honoured() {
    let Some(s) = setup(1_000).await else {
        return;
    };
    let mut model = Model::default();
    let mut stream = snapshot(&s, &mut model).await;
    let db = s.driver.database(DB);
    let mut session = s.driver.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    db.collection::<Document>("other")
        .update_one(doc! {"_id": 1_i64}, doc! {"$inc": {"version": 1_i64}})
        .session(&mut session)
        .await
        .unwrap();
    db.collection::<Document>("_powersync_signals")
        .insert_one(doc! {"id": "req-t", "kind": "backfill", "tables": ["big"]})
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();
    run_until(&mut stream, &mut model, "BackfillDone", |m| {
        !m.done.is_empty()
    })
    .await;
    assert_eq!(
        model.done[0],
        (TableName::new(DB, "big"), "req-t".into(), 1_000)
    );
    catch_up(&s.source, &mut stream, &mut model).await;
    assert_mirrors(&s.driver, &model, &["big", "other"]).await;
}
