//! Backfills while streaming (DBLog watermarks) against a real server: a table `big` re-read
//! in chunks while a writer keeps bumping the `version` of random rows of `big` and `other`
//! (and inserts and deletes rows of `big`). A host model applies the events in stream order,
//! one transaction at a time, and checks that no row's `version` ever goes backwards, that
//! the signal table never reaches the host, that `other` keeps committing between chunks, and
//! at the end that it equals the source row for row. Variants: requested through the signal
//! table (PostgreSQL 15 and 18), through `ChangeStream::request_backfill`, resumed from a
//! checkpoint stored in the middle of the backfill, and a table added to the publication while
//! streaming.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, ChangeStream, Checkpoint, Op, RowChange, SnapshotProgress,
    StartFrom, StreamOptions, TableName, Value,
};
use powersync_source_postgres::{PostgresConfig, PostgresOptions, PostgresSource};
use powersync_source_testkit::postgres::PostgresServer;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const BIG_ROWS: i64 = 20_000;
const CHUNK_ROWS: usize = 500;
const LATE_ROWS: i64 = 3_000;

/// A row as the host holds it: version and payload.
type Held = (i64, Option<String>);

/// What happened in the stream, in order (for the checks beyond the row contents).
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// A committed transaction that changed `other`.
    OtherCommit,
    Started(String),
    Chunk(String, u64),
    Done(String, u64),
    Failed(String, String),
}

/// The host: per table, id → row, applied a transaction at a time at its Commit.
#[derive(Default)]
struct Model {
    tables: BTreeMap<String, BTreeMap<i64, Held>>,
    open: Option<Vec<RowOrTruncate>>,
    stored: Option<Checkpoint>,
    observed: Vec<Checkpoint>,
    seen: Vec<Seen>,
    violations: Vec<String>,
    /// Ids of `snapshot: true` rows of `big`/`late` applied since `mark_restart`.
    backfilled_ids: Vec<i64>,
}

enum RowOrTruncate {
    Row(RowChange),
    Truncate(Vec<TableName>),
}

fn column(change: &RowChange, row_new: bool, name: &str) -> Option<Value> {
    let i = change.table.columns.iter().position(|c| c.name == name)?;
    let row = if row_new { &change.new } else { &change.old };
    row.as_ref()?.get(i).cloned()
}

fn int(v: Option<Value>) -> i64 {
    match v {
        Some(Value::Integer(i)) => i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

impl Model {
    fn apply(&mut self, events: Vec<ChangeEvent>) {
        for event in events {
            match event {
                ChangeEvent::Begin(_) => {
                    assert!(self.open.is_none(), "Begin inside a transaction");
                    self.open = Some(Vec::new());
                }
                ChangeEvent::Row(r) => match &mut self.open {
                    Some(open) => open.push(RowOrTruncate::Row(r)),
                    // Initial snapshot rows come outside transactions.
                    None => self.apply_row(r),
                },
                ChangeEvent::Truncate(t) => match &mut self.open {
                    Some(open) => open.push(RowOrTruncate::Truncate(t.tables)),
                    None => self.truncate(&t.tables),
                },
                ChangeEvent::Schema(s) => {
                    if s.name.name == "_powersync_signals" {
                        self.violations.push("schema of the signal table".into());
                    }
                }
                ChangeEvent::Commit(c) => {
                    let txn = self.open.take().expect("Commit without Begin");
                    let mut other = false;
                    for item in txn {
                        match item {
                            RowOrTruncate::Row(r) => {
                                other |= r.table.name.name == "other" && !r.snapshot;
                                self.apply_row(r);
                            }
                            RowOrTruncate::Truncate(t) => self.truncate(&t),
                        }
                    }
                    if other {
                        self.seen.push(Seen::OtherCommit);
                    }
                    self.stored = Some(c.checkpoint);
                }
                ChangeEvent::Abort => self.open = None,
                ChangeEvent::Keepalive(c) => {
                    assert!(self.open.is_none(), "keepalive inside a transaction");
                    self.stored = Some(c);
                }
                ChangeEvent::CheckpointObserved(c) => self.observed.push(c),
                ChangeEvent::Snapshot(p) => match p {
                    SnapshotProgress::Done { checkpoint } => self.stored = Some(checkpoint),
                    SnapshotProgress::BackfillStarted { id, .. } => {
                        self.seen.push(Seen::Started(id))
                    }
                    SnapshotProgress::BackfillChunk { id, rows_done, .. } => {
                        self.seen.push(Seen::Chunk(id, rows_done))
                    }
                    SnapshotProgress::BackfillDone { id, rows, .. } => {
                        self.seen.push(Seen::Done(id, rows))
                    }
                    SnapshotProgress::BackfillFailed { id, error, .. } => {
                        self.seen.push(Seen::Failed(id, error))
                    }
                    _ => {}
                },
            }
        }
    }

    fn truncate(&mut self, tables: &[TableName]) {
        for t in tables {
            self.tables.remove(&t.name);
        }
    }

    fn apply_row(&mut self, r: RowChange) {
        let table = r.table.name.name.clone();
        if table == "_powersync_signals" {
            self.violations.push("a row of the signal table".into());
            return;
        }
        let rows = self.tables.entry(table.clone()).or_default();
        match r.op {
            Op::Delete => {
                rows.remove(&int(column(&r, false, "id")));
            }
            _ => {
                let id = int(column(&r, true, "id"));
                let version = int(column(&r, true, "version"));
                let payload = match column(&r, true, "payload") {
                    Some(Value::Text(s)) => Some(s),
                    Some(Value::Null) | None => None,
                    other => panic!("payload {other:?}"),
                };
                if let Some((held, _)) = rows.get(&id) {
                    if version < *held {
                        self.violations.push(format!(
                            "{table} {id}: version {held} -> {version} (snapshot: {})",
                            r.snapshot
                        ));
                    }
                }
                if r.snapshot {
                    self.backfilled_ids.push(id);
                }
                rows.insert(id, (version, payload));
            }
        }
    }

    fn done(&self, id: &str) -> bool {
        self.seen
            .iter()
            .any(|s| matches!(s, Seen::Done(d, _) if d == id))
    }

    fn chunks(&self, id: &str) -> usize {
        self.seen
            .iter()
            .filter(|s| matches!(s, Seen::Chunk(d, _) if d == id))
            .count()
    }

    /// The request id of the backfill whose id starts with `prefix`.
    fn started_with(&self, prefix: &str) -> Option<String> {
        self.seen.iter().find_map(|s| match s {
            Seen::Started(id) if id.starts_with(prefix) => Some(id.clone()),
            _ => None,
        })
    }
}

/// Reads `stream` into `model` (acknowledging what it stored) until `until` holds.
async fn drive(
    stream: &mut ChangeStream,
    model: &mut Model,
    timeout: Duration,
    until: impl Fn(&Model) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !until(model) {
        assert!(
            Instant::now() < deadline,
            "condition not reached within {timeout:?}; seen {:?}",
            model.seen.iter().rev().take(5).collect::<Vec<_>>()
        );
        if let Ok(next) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            let batch = next.expect("stream ended").expect("stream failed");
            model.apply(batch.events);
            if let Some(c) = &model.stored {
                stream.ack(c).unwrap();
            }
        }
    }
}

async fn client(server: &PostgresServer) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            server.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
}

/// Bumps versions of random rows of `tables` (and inserts/deletes rows of `big`) in small
/// transactions until `stop` is set.
fn spawn_writer(
    client: tokio_postgres::Client,
    tables: Vec<(&'static str, i64)>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut new_id = 1_000_000i64;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let mut sql = String::from("BEGIN;");
            for (table, rows) in &tables {
                for _ in 0..2 {
                    let id = (next() % *rows as u64) as i64 + 1;
                    sql.push_str(&format!(
                        "UPDATE {table} SET version = version + 1 WHERE id = {id};"
                    ));
                }
            }
            sql.push_str("COMMIT;");
            if n.is_multiple_of(7) {
                new_id += 1;
                sql.push_str(&format!(
                    "INSERT INTO big VALUES ({new_id}, 0, 'new {new_id}');"
                ));
            }
            if n.is_multiple_of(11) {
                let id = (next() % BIG_ROWS as u64) as i64 + 1;
                sql.push_str(&format!("DELETE FROM big WHERE id = {id};"));
            }
            sql.push_str(&format!(
                "UPDATE other SET version = version + 1 WHERE id = {};",
                next() % 100 + 1
            ));
            client.batch_execute(&sql).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n
    })
}

/// How the backfill of `big` is asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Request {
    Signal,
    Host,
}

struct Env {
    server: PostgresServer,
    source: PostgresSource,
}

/// A server with `big`, `other` and the signal table in a publication created `publication`;
/// the stream selects `tables` (`None`: every published table).
async fn env(
    bin: Option<PathBuf>,
    publication: &str,
    tables: Option<Vec<TableName>>,
) -> Option<Env> {
    powersync_source_testkit::init_tracing();
    let mut builder = PostgresServer::builder();
    if let Some(dir) = bin {
        builder = builder.bin_dir(dir);
    }
    let server = powersync_source_testkit::or_skip(builder.start().await)?;
    server
        .psql(&format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, version bigint NOT NULL, payload text);
             INSERT INTO big SELECT g, 0, md5(g::text) FROM generate_series(1, {BIG_ROWS}) g;
             CREATE TABLE other (id bigint PRIMARY KEY, version bigint NOT NULL, payload text);
             INSERT INTO other SELECT g, 0, NULL FROM generate_series(1, 100) g;
             CREATE TABLE _powersync_signals (id text PRIMARY KEY, kind text NOT NULL, tables text NOT NULL);
             CREATE PUBLICATION powersync {publication};"
        ))
        .await
        .unwrap();
    let config = PostgresConfig::parse(&server.url())
        .unwrap()
        .with_publication("powersync")
        .with_slot("backfill_slot")
        .with_streaming(true)
        // The smallest: a transaction of more than a few rows reaches the stream before its
        // commit (in-progress streaming), as the signal's transaction does below.
        .with_decoding_work_mem(Some("64kB"))
        .unwrap();
    let mut stream = StreamOptions::default()
        .with_backfill_chunk_rows(CHUNK_ROWS)
        .with_batch_events(500);
    stream.tables = tables;
    let source = PostgresSource::new(config)
        .with_options(PostgresOptions {
            status_interval: Duration::from_secs(1),
            ..PostgresOptions::default()
        })
        .with_stream_options(stream);
    Some(Env { server, source })
}

/// Stops the writer, makes the stream pass a write checkpoint, and compares the model with
/// the source (every table the model should hold).
async fn settle_and_compare(
    env: &Env,
    stream: &mut ChangeStream,
    model: &mut Model,
    stop: Arc<AtomicBool>,
    writer: JoinHandle<u64>,
    tables: &[&str],
) {
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 50, "the writer made only {writes} transactions");
    let checkpoint = env.source.write_checkpoint().await.unwrap();
    drive(stream, model, Duration::from_secs(60), |m| {
        m.observed.contains(&checkpoint)
    })
    .await;
    assert!(model.violations.is_empty(), "{:#?}", model.violations);
    let client = client(&env.server).await;
    for table in tables {
        let rows = client
            .query(&format!("SELECT id, version, payload FROM {table}"), &[])
            .await
            .unwrap();
        let source: BTreeMap<i64, Held> = rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let held = model.tables.get(*table).cloned().unwrap_or_default();
        if held != source {
            let missing = source.keys().filter(|k| !held.contains_key(k)).count();
            let extra = held.keys().filter(|k| !source.contains_key(k)).count();
            let differ = source
                .iter()
                .filter(|(k, v)| held.get(k).is_some_and(|h| h != *v))
                .take(5)
                .collect::<Vec<_>>();
            panic!(
                "{table}: host differs from source: {missing} missing, {extra} extra, e.g. differing {differ:?}"
            );
        }
    }
}

/// Between consecutive chunks of `id`, how many gaps saw a commit of `other`.
fn gaps_with_other(model: &Model, id: &str) -> (usize, usize) {
    let mut gaps = 0;
    let mut with_other = 0;
    let mut other_since = false;
    let mut started = false;
    for s in &model.seen {
        match s {
            Seen::Chunk(c, _) if c == id => {
                if started {
                    gaps += 1;
                    with_other += other_since as usize;
                }
                started = true;
                other_since = false;
            }
            Seen::OtherCommit => other_since = true,
            _ => {}
        }
    }
    (gaps, with_other)
}

/// The backfill of `big` under writes, asked for by `request`, checked to the end; the
/// stream selects `tables` (the signal table works whether or not they name it).
async fn backfill_under_writes(
    bin: Option<PathBuf>,
    request: Request,
    tables: Option<Vec<TableName>>,
) {
    let Some(env) = env(bin, "FOR ALL TABLES", tables).await else {
        return;
    };
    let mut stream = env.source.start(StartFrom::Beginning).await.unwrap();
    let mut model = Model::default();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.tables.get("big").map_or(0, |t| t.len()) as i64 == BIG_ROWS && m.stored.is_some()
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(
        client(&env.server).await,
        vec![("big", BIG_ROWS), ("other", 100)],
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = match request {
        Request::Signal => {
            // Inside a large transaction, which the server streams before its commit: the
            // signal is replayed at the commit with the rest.
            env.server
                .psql(
                    "BEGIN;
                     INSERT INTO other SELECT g, 0, repeat('x', 200) FROM generate_series(1001, 4000) g;
                     INSERT INTO _powersync_signals VALUES ('req-a', 'backfill', 'public.big');
                     COMMIT;",
                )
                .await
                .unwrap();
            "req-a".to_string()
        }
        Request::Host => stream
            .request_backfill(&[TableName::new("public", "big")])
            .unwrap(),
    };
    drive(&mut stream, &mut model, Duration::from_secs(300), |m| {
        m.done(&id) || !m.violations.is_empty()
    })
    .await;
    assert!(model.violations.is_empty(), "{:#?}", model.violations);
    assert!(
        model.seen.contains(&Seen::Started(id.clone())),
        "no BackfillStarted for {id}"
    );
    let chunks = model.chunks(&id);
    assert!(
        chunks as i64 >= BIG_ROWS / CHUNK_ROWS as i64,
        "only {chunks} chunks"
    );
    if request == Request::Signal {
        let streamed: i64 = client(&env.server)
            .await
            .query_one(
                "SELECT coalesce(sum(stream_bytes), 0)::bigint FROM pg_stat_replication_slots",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            streamed > 0,
            "the signal's transaction was not streamed in progress"
        );
    }
    let (gaps, with_other) = gaps_with_other(&model, &id);
    eprintln!("backfill {id}: {chunks} chunks; `other` committed in {with_other} of {gaps} gaps between chunks");
    assert!(
        with_other * 2 >= gaps,
        "`other` committed in only {with_other} of {gaps} gaps between chunks"
    );
    settle_and_compare(
        &env,
        &mut stream,
        &mut model,
        stop,
        writer,
        &["big", "other"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_through_the_signal_table_under_writes_on_15() {
    // A selection that does not name the signal table.
    let selection = vec![
        TableName::new("public", "big"),
        TableName::new("public", "other"),
    ];
    backfill_under_writes(None, Request::Signal, Some(selection)).await;
}

/// PostgreSQL 18's binaries, or `None` (with a line saying why) when they cannot be had.
async fn pg18() -> Option<PathBuf> {
    if std::env::var_os("POWERSYNC_SKIP_PG_MATRIX").is_some() {
        eprintln!("SKIPPED: PostgreSQL 18 (POWERSYNC_SKIP_PG_MATRIX is set)");
        return None;
    }
    let dir = powersync_source_testkit::postgres::postgres_binaries_for_major(18).await;
    powersync_source_testkit::or_skip(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_through_the_signal_table_under_writes_on_18() {
    if let Some(dir) = pg18().await {
        backfill_under_writes(Some(dir), Request::Signal, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_requested_by_the_host_under_writes() {
    backfill_under_writes(None, Request::Host, None).await;
}

/// The stream is dropped after a few chunks and restarted from the last checkpoint the host
/// stored: the backfill goes on after the stored cursor (not from the start, so at most the
/// chunk in flight is read again) and ends right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_resumes_from_the_stored_checkpoint() {
    resumes_from_the_stored_checkpoint(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_resumes_from_the_stored_checkpoint_on_18() {
    if let Some(dir) = pg18().await {
        resumes_from_the_stored_checkpoint(Some(dir)).await;
    }
}

async fn resumes_from_the_stored_checkpoint(bin: Option<PathBuf>) {
    let Some(env) = env(bin, "FOR ALL TABLES", None).await else {
        return;
    };
    let mut stream = env.source.start(StartFrom::Beginning).await.unwrap();
    let mut model = Model::default();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.tables.get("big").map_or(0, |t| t.len()) as i64 == BIG_ROWS && m.stored.is_some()
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(
        client(&env.server).await,
        vec![("big", BIG_ROWS), ("other", 100)],
        stop.clone(),
    );
    env.server
        .psql("INSERT INTO _powersync_signals VALUES ('req-b', 'backfill', 'big')")
        .await
        .unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.chunks("req-b") >= 8
    })
    .await;
    drop(stream);
    // What the host stored: everything up to its last boundary; the open transaction is lost.
    model.open = None;
    let stored = model.stored.clone().unwrap();
    let cursor = stored
        .backfill()
        .unwrap()
        .expect("the stored checkpoint carries the backfill cursor");
    let task = cursor.tasks.first().expect("a table left to read");
    let after: Vec<String> = serde_json::from_str(task.after.as_deref().unwrap()).unwrap();
    let after: i64 = after[0].parse().unwrap();
    assert!(after >= 7 * CHUNK_ROWS as i64, "stored cursor at {after}");
    let started_before = model
        .seen
        .iter()
        .filter(|s| matches!(s, Seen::Started(_)))
        .count();
    model.backfilled_ids.clear();

    let mut stream = env
        .source
        .start(StartFrom::Checkpoint(stored))
        .await
        .unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(300), |m| {
        m.done("req-b") || !m.violations.is_empty()
    })
    .await;
    assert!(model.violations.is_empty(), "{:#?}", model.violations);
    let started_after = model
        .seen
        .iter()
        .filter(|s| matches!(s, Seen::Started(_)))
        .count();
    assert_eq!(started_before, started_after, "the backfill started again");
    let first = model.backfilled_ids.iter().min().copied().unwrap();
    assert!(
        first > after,
        "after the restart the backfill read id {first}, at or before the stored cursor {after}"
    );
    eprintln!(
        "resumed after id {after}; {} rows backfilled after the restart",
        model.backfilled_ids.len()
    );
    settle_and_compare(
        &env,
        &mut stream,
        &mut model,
        stop,
        writer,
        &["big", "other"],
    )
    .await;
}

/// A table with rows added to the publication while streaming is read through a backfill
/// (`added-…` request) while the writer changes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_to_the_publication_is_backfilled() {
    table_added_to_the_publication(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_to_the_publication_is_backfilled_on_18() {
    if let Some(dir) = pg18().await {
        table_added_to_the_publication(Some(dir)).await;
    }
}

async fn table_added_to_the_publication(bin: Option<PathBuf>) {
    let Some(env) = env(bin, "FOR TABLE big, other, _powersync_signals", None).await else {
        return;
    };
    let mut stream = env.source.start(StartFrom::Beginning).await.unwrap();
    let mut model = Model::default();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.tables.get("big").map_or(0, |t| t.len()) as i64 == BIG_ROWS && m.stored.is_some()
    })
    .await;
    env.server
        .psql(&format!(
            "CREATE TABLE late (id bigint PRIMARY KEY, version bigint NOT NULL, payload text);
             INSERT INTO late SELECT g, 0, 'late ' || g FROM generate_series(1, {LATE_ROWS}) g;"
        ))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(
        client(&env.server).await,
        vec![("big", BIG_ROWS), ("other", 100), ("late", LATE_ROWS)],
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.server
        .psql("ALTER PUBLICATION powersync ADD TABLE late")
        .await
        .unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.started_with("added-").is_some()
    })
    .await;
    let id = model.started_with("added-").unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(300), |m| {
        m.done(&id) || !m.violations.is_empty()
    })
    .await;
    assert!(model.violations.is_empty(), "{:#?}", model.violations);
    let chunks = model.chunks(&id);
    assert!(
        chunks as i64 >= LATE_ROWS / CHUNK_ROWS as i64,
        "only {chunks} chunks"
    );
    settle_and_compare(
        &env,
        &mut stream,
        &mut model,
        stop,
        writer,
        &["big", "other", "late"],
    )
    .await;
}

/// `source` comparing the publication every second (the default is 10 s).
fn with_quick_publication_checks(source: PostgresSource) -> PostgresSource {
    source.with_options(PostgresOptions {
        status_interval: Duration::from_secs(1),
        publication_check_interval: Duration::from_secs(1),
        ..PostgresOptions::default()
    })
}

/// Starts `source` from the beginning and reads until its snapshot is held.
async fn through_snapshot(source: &PostgresSource) -> (ChangeStream, Model) {
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let mut model = Model::default();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.tables.get("big").map_or(0, |t| t.len()) as i64 == BIG_ROWS && m.stored.is_some()
    })
    .await;
    (stream, model)
}

/// Reads until a table's `added-…` backfill starts (60 s at most) and ends; returns its id.
async fn read_added_table(stream: &mut ChangeStream, model: &mut Model) -> String {
    drive(stream, model, Duration::from_secs(60), |m| {
        m.started_with("added-").is_some()
    })
    .await;
    let id = model.started_with("added-").unwrap();
    drive(stream, model, Duration::from_secs(120), |m| {
        m.done(&id) || !m.violations.is_empty()
    })
    .await;
    assert!(model.violations.is_empty(), "{:#?}", model.violations);
    id
}

/// A table added to the publication that nothing writes to afterwards is read too: no
/// Relation message would ever announce it, so the periodic publication comparison finds it
/// and backfills it. It fails when only Relation messages bring new tables ("condition not
/// reached within 60s").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_to_the_publication_without_writes_is_backfilled() {
    let Some(env) = env(None, "FOR TABLE big, other, _powersync_signals", None).await else {
        return;
    };
    let source = with_quick_publication_checks(env.source);
    let (mut stream, mut model) = through_snapshot(&source).await;
    env.server
        .psql(&format!(
            "CREATE TABLE quiet (id bigint PRIMARY KEY, version bigint NOT NULL, payload text);
             INSERT INTO quiet SELECT g, 0, 'quiet ' || g FROM generate_series(1, {LATE_ROWS}) g;
             ALTER PUBLICATION powersync ADD TABLE quiet;"
        ))
        .await
        .unwrap();
    let id = read_added_table(&mut stream, &mut model).await;
    assert_eq!(
        model.tables.get("quiet").map_or(0, |t| t.len()) as i64,
        LATE_ROWS
    );
    assert!(model.seen.contains(&Seen::Done(id, LATE_ROWS as u64)));
}

/// A table added to the publication while no stream runs is read when the stream resumes
/// from a checkpoint stored before: the checkpoint names no tables, the slot's catalog horizon
/// tells which may have joined since. The tables held before are not read again. Fails when
/// every published table counts as held at resume ("condition not reached within 60s").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_while_no_stream_runs_is_backfilled_on_resume() {
    let Some(env) = env(None, "FOR TABLE big, other, _powersync_signals", None).await else {
        return;
    };
    let source = with_quick_publication_checks(env.source);
    let (stream, mut model) = through_snapshot(&source).await;
    let stored = model.stored.clone().unwrap();
    drop(stream);
    env.server
        .psql(&format!(
            "CREATE TABLE while_down (id bigint PRIMARY KEY, version bigint NOT NULL, payload text);
             INSERT INTO while_down SELECT g, 0, 'down ' || g FROM generate_series(1, {LATE_ROWS}) g;
             ALTER PUBLICATION powersync ADD TABLE while_down;"
        ))
        .await
        .unwrap();
    let mut stream = source.start(StartFrom::Checkpoint(stored)).await.unwrap();
    let id = read_added_table(&mut stream, &mut model).await;
    assert_eq!(
        model.tables.get("while_down").map_or(0, |t| t.len()) as i64,
        LATE_ROWS
    );
    let started: Vec<&Seen> = model
        .seen
        .iter()
        .filter(|s| matches!(s, Seen::Started(_)))
        .collect();
    assert_eq!(started.len(), 1, "only the new table is read: {started:?}");
    assert!(model.seen.contains(&Seen::Done(id, LATE_ROWS as u64)));
}

/// A signal naming a table that does not exist ends that table's backfill with
/// `BackfillFailed`; the stream goes on and the next table of the signal is read. (A table
/// without a key cannot be in a stream's selection: `check()` refuses to start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_cannot_be_backfilled_fails_alone() {
    let Some(env) = env(None, "FOR ALL TABLES", None).await else {
        return;
    };
    let mut stream = env.source.start(StartFrom::Beginning).await.unwrap();
    let mut model = Model::default();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.tables.get("big").map_or(0, |t| t.len()) as i64 == BIG_ROWS && m.stored.is_some()
    })
    .await;
    env.server
        .psql("INSERT INTO _powersync_signals VALUES ('req-f', 'backfill', 'public.nope, other')")
        .await
        .unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(60), |m| {
        m.done("req-f")
    })
    .await;
    let failed: Vec<&String> = model
        .seen
        .iter()
        .filter_map(|s| match s {
            Seen::Failed(id, error) if id == "req-f" => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("not in the publication"), "{failed:?}");
    assert!(model.seen.contains(&Seen::Done("req-f".into(), 100)));
    assert!(model.violations.is_empty(), "{:#?}", model.violations);
}

/// With the signal table outside the publication, a host's request cannot travel through it
/// (its row would never reach the stream): it is kept in memory instead and still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_request_without_a_published_signal_table_is_kept_in_memory() {
    let Some(env) = env(None, "FOR TABLE big, other", None).await else {
        return;
    };
    let mut stream = env.source.start(StartFrom::Beginning).await.unwrap();
    let mut model = Model::default();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.tables.get("big").map_or(0, |t| t.len()) as i64 == BIG_ROWS && m.stored.is_some()
    })
    .await;
    let id = stream
        .request_backfill(&[TableName::new("public", "other")])
        .unwrap();
    // Something to pass: the request joins at the next boundary.
    env.server
        .psql("UPDATE other SET version = version + 1 WHERE id = 1")
        .await
        .unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(60), |m| {
        m.done(&id)
    })
    .await;
    assert!(model.seen.contains(&Seen::Done(id.clone(), 100)));
    let client = client(&env.server).await;
    let rows = client
        .query("SELECT count(*) FROM _powersync_signals", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 0, "no row was written");
}

/// The backfill's own connections (the watermark/catalog client and the COPY session; the
/// stream's catalog connection too, whose last query may be the same) are terminated several
/// times while it runs: the reader reconnects, the backfill completes, and the host ends equal
/// to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_survives_its_connections_being_killed() {
    let Some(env) = env(None, "FOR ALL TABLES", None).await else {
        return;
    };
    let mut stream = env.source.start(StartFrom::Beginning).await.unwrap();
    let mut model = Model::default();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.tables.get("big").map_or(0, |t| t.len()) as i64 == BIG_ROWS && m.stored.is_some()
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(
        client(&env.server).await,
        vec![("big", BIG_ROWS), ("other", 100)],
        stop.clone(),
    );
    env.server
        .psql("INSERT INTO _powersync_signals VALUES ('req-k', 'backfill', 'public.big')")
        .await
        .unwrap();
    let admin = client(&env.server).await;
    let mut killed = 0u64;
    for k in [3usize, 10, 20, 30] {
        drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
            m.chunks("req-k") >= k || m.done("req-k")
        })
        .await;
        let row = admin
            .query_one(
                "SELECT count(pg_catalog.pg_terminate_backend(pid))
                 FROM pg_catalog.pg_stat_activity
                 WHERE pid <> pg_catalog.pg_backend_pid()
                   AND backend_type = 'client backend'
                   AND (query LIKE '%pg_logical_emit_message(true, $1%'
                        OR query LIKE '%_powersync_key_%'
                        OR query LIKE '%FROM pg_catalog.pg_publication_tables pt%')",
                &[],
            )
            .await
            .unwrap();
        killed += row.get::<_, i64>(0) as u64;
    }
    assert!(
        killed >= 2,
        "only {killed} backfill connections were terminated"
    );
    drive(&mut stream, &mut model, Duration::from_secs(300), |m| {
        m.done("req-k") || !m.violations.is_empty()
    })
    .await;
    settle_and_compare(
        &env,
        &mut stream,
        &mut model,
        stop,
        writer,
        &["big", "other"],
    )
    .await;
}

/// A table without a primary key under `REPLICA IDENTITY FULL` is keyed (and ordered) by all
/// its columns: the chunk cursor spans several columns, and the rows the writer changes
/// between the watermarks are still recognized and dropped from the chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_keyed_by_all_its_columns_is_backfilled() {
    let Some(env) = env(None, "FOR ALL TABLES", None).await else {
        return;
    };
    env.server
        .psql(
            "CREATE TABLE nopk (id bigint NOT NULL, version bigint NOT NULL, payload text NOT NULL);
             ALTER TABLE nopk REPLICA IDENTITY FULL;
             INSERT INTO nopk SELECT g, 0, 'p' || (g % 17) FROM generate_series(1, 4000) g;",
        )
        .await
        .unwrap();
    let mut stream = env.source.start(StartFrom::Beginning).await.unwrap();
    let mut model = Model::default();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.tables.get("nopk").map_or(0, |t| t.len()) == 4000 && m.stored.is_some()
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(
        client(&env.server).await,
        vec![("nopk", 4000), ("other", 100)],
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.server
        .psql("INSERT INTO _powersync_signals VALUES ('req-n', 'backfill', 'public.nopk')")
        .await
        .unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.done("req-n") || !m.violations.is_empty()
    })
    .await;
    assert!(model.chunks("req-n") >= 8, "{:?}", model.seen.len());
    settle_and_compare(
        &env,
        &mut stream,
        &mut model,
        stop,
        writer,
        &["big", "other", "nopk"],
    )
    .await;
}
