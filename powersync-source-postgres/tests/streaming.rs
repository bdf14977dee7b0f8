//! In-progress transactions (pgoutput `streaming`, PostgreSQL 14+) against a real server whose
//! `logical_decoding_work_mem` is the smallest allowed (64 kB), so every transaction of more
//! than a few rows is streamed to the connector before its commit. Each test holds a
//! transaction open, waits until the server reports having streamed it
//! (`pg_stat_replication_slots.stream_bytes`), and checks what the host sees: every row of
//! committed work exactly once, in order, between its Begin and Commit, nothing of aborted
//! work, and nothing before the commit.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, ChangeStream, Checkpoint, Op, StartFrom, Value,
};
use powersync_source_postgres::PostgresSource;
use powersync_source_testkit::conformance::Workload;
use tokio::time::Instant;

use crate::conformance::PgWorkload;

/// What the host saw: committed transactions (their inserted ids, in order) and the rest.
#[derive(Debug, Default)]
struct Seen {
    committed: Vec<Vec<i64>>,
    /// The new row of every insert seen, by id.
    rows: std::collections::HashMap<i64, Vec<Value>>,
    open: Option<Vec<i64>>,
    last_checkpoint: Option<Checkpoint>,
    observed: Vec<Checkpoint>,
    snapshot_done: bool,
}

impl Seen {
    fn apply(&mut self, events: Vec<ChangeEvent>) {
        for e in events {
            match e {
                ChangeEvent::Begin(_) => {
                    assert!(self.open.is_none(), "Begin inside an open transaction");
                    self.open = Some(Vec::new());
                }
                ChangeEvent::Row(r) if r.snapshot => {}
                ChangeEvent::Row(r) => {
                    let open = self
                        .open
                        .as_mut()
                        .expect("row change outside a transaction");
                    assert_eq!(r.op, Op::Insert, "these tests only insert");
                    let new = r.new.as_ref().expect("insert without a new row");
                    match new.get(0) {
                        Some(Value::Integer(id)) => {
                            open.push(*id);
                            self.rows.insert(*id, new.values().to_vec());
                        }
                        other => panic!("id is {other:?}"),
                    }
                }
                ChangeEvent::Commit(c) => {
                    let txn = self.open.take().expect("Commit without Begin");
                    // Transactions without rows (write checkpoints) are not of interest here.
                    if !txn.is_empty() {
                        self.committed.push(txn);
                    }
                    self.last_checkpoint = Some(c.checkpoint);
                }
                ChangeEvent::Abort => self.open = None,
                ChangeEvent::Keepalive(c) => {
                    assert!(self.open.is_none(), "keepalive inside a transaction");
                    self.last_checkpoint = Some(c);
                }
                ChangeEvent::CheckpointObserved(c) => self.observed.push(c),
                ChangeEvent::Snapshot(powersync_source_core::SnapshotProgress::Done {
                    checkpoint,
                }) => {
                    self.snapshot_done = true;
                    self.last_checkpoint = Some(checkpoint);
                }
                _ => {}
            }
        }
    }

    /// Every id of every committed transaction, checked to be unique.
    fn all_ids(&self) -> HashSet<i64> {
        let mut all = HashSet::new();
        for id in self.committed.iter().flatten() {
            assert!(all.insert(*id), "id {id} delivered twice");
        }
        all
    }

    /// The committed transaction whose first row is `first`.
    fn txn_starting_at(&self, first: i64) -> &[i64] {
        self.committed
            .iter()
            .find(|t| t.first() == Some(&first))
            .unwrap_or_else(|| panic!("no committed transaction starts with id {first}"))
    }
}

/// Reads `stream` into `seen` (acknowledging what it saw) until `until` holds.
async fn drive(
    stream: &mut ChangeStream,
    seen: &mut Seen,
    timeout: Duration,
    until: impl Fn(&Seen) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !until(seen) {
        assert!(
            Instant::now() < deadline,
            "condition not reached within {timeout:?}; seen {} transactions",
            seen.committed.len()
        );
        if let Ok(next) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            let batch = next.expect("stream ended").expect("stream failed");
            seen.apply(batch.events);
            if let Some(c) = &seen.last_checkpoint {
                stream.ack(c).unwrap();
            }
        }
    }
}

/// Reads until the stream passed everything committed so far (a write checkpoint).
async fn converge(source: &PostgresSource, stream: &mut ChangeStream, seen: &mut Seen) {
    let marker = source.write_checkpoint().await.unwrap();
    drive(stream, seen, Duration::from_secs(90), |s| {
        s.observed.contains(&marker) && s.open.is_none()
    })
    .await;
}

/// Reads for `d`: nothing of an open transaction may arrive.
async fn read_for(stream: &mut ChangeStream, seen: &mut Seen, d: Duration) {
    let until = Instant::now() + d;
    drive(stream, seen, d + Duration::from_secs(5), |_| {
        Instant::now() >= until
    })
    .await;
}

async fn started() -> Option<PgWorkload> {
    powersync_source_testkit::init_tracing();
    let w = PgWorkload::start_with(None, &[("logical_decoding_work_mem", "64kB")], true).await?;
    w.reset().await.unwrap();
    Some(w)
}

/// `stream_bytes` of the workload's slot (0 before any).
async fn stream_bytes(w: &PgWorkload) -> i64 {
    w.client()
        .await
        .unwrap()
        .query_one(
            "SELECT coalesce(sum(stream_bytes), 0)::bigint FROM pg_stat_replication_slots \
             WHERE slot_name = $1",
            &[&w.slot()],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits until the server reports more streamed bytes on the slot than `before`, reading
/// the stream meanwhile (nothing of the open transaction may arrive).
async fn wait_streamed(w: &PgWorkload, stream: &mut ChangeStream, seen: &mut Seen, before: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream_bytes(w).await <= before {
        assert!(Instant::now() < deadline, "the server streamed nothing");
        read_for(stream, seen, Duration::from_millis(200)).await;
    }
}

/// Opens a transaction inserting ids `0..rows` on a client of its own and waits until the
/// server has streamed it (the slot had streamed nothing before); the transaction stays open.
async fn open_streamed(
    w: &PgWorkload,
    stream: &mut ChangeStream,
    seen: &mut Seen,
    rows: i64,
) -> tokio_postgres::Client {
    let big = w.client().await.unwrap();
    big.batch_execute(&format!("BEGIN; {};", insert_sql(&w.table(), 0, rows)))
        .await
        .unwrap();
    wait_streamed(w, stream, seen, 0).await;
    big
}

/// The workload's source with a client memory budget of `memory_kb` and spill files in `dir`.
fn spilling_source(w: &PgWorkload, memory_kb: u64, dir: &Path) -> PostgresSource {
    PostgresSource::new(
        w.config()
            .with_streaming_memory_kb(memory_kb)
            .with_spill_dir(dir),
    )
    .with_options(w.options())
    .with_stream_options(w.stream_options())
}

/// Starts `source` from the beginning and reads until its (empty) snapshot is done.
async fn started_after_snapshot(source: &PostgresSource) -> (ChangeStream, Seen) {
    let mut seen = Seen::default();
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    drive(&mut stream, &mut seen, Duration::from_secs(60), |s| {
        s.snapshot_done
    })
    .await;
    (stream, seen)
}

/// `INSERT … SELECT` of ids `from..to` with 200-byte values, on an open transaction.
fn insert_sql(table: &str, from: i64, to: i64) -> String {
    format!(
        "INSERT INTO {table} (id, v) SELECT i, repeat('x', 200) FROM generate_series({from}, {}) i",
        to - 1
    )
}

fn range(from: i64, to: i64) -> Vec<i64> {
    (from..to).collect()
}

/// Open spill files of this process in `dir` (unlinked at creation: `… (deleted)`).
fn open_spill_files(dir: &Path) -> usize {
    let dir = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc/self/fd")
        .map(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with(&dir))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_transaction_is_delivered_whole_at_its_commit_in_order() {
    let Some(w) = started().await else { return };
    let t = w.table();
    let source = w.source_with(w.stream_options());
    let (mut stream, mut seen) = started_after_snapshot(&source).await;

    let big = open_streamed(&w, &mut stream, &mut seen, 5_000).await;
    // A small transaction committed while the big one is open comes first.
    w.client()
        .await
        .unwrap()
        .batch_execute(&format!(
            "INSERT INTO {t} (id, v) VALUES (1000000, 'small')"
        ))
        .await
        .unwrap();
    drive(&mut stream, &mut seen, Duration::from_secs(30), |s| {
        !s.committed.is_empty()
    })
    .await;
    assert_eq!(
        seen.committed,
        [vec![1_000_000]],
        "only the small one so far"
    );
    big.batch_execute(&format!("{}; COMMIT;", insert_sql(&t, 5_000, 10_000)))
        .await
        .unwrap();
    converge(&source, &mut stream, &mut seen).await;
    assert_eq!(seen.txn_starting_at(0), range(0, 10_000).as_slice());
    assert_eq!(seen.all_ids().len(), 10_001);
}

/// A column added in the middle of a streamed transaction (spilled, so replayed from the
/// file): the rows before it have the old shape, the rows after it the new one, each with
/// its own values. The replay decodes rows ahead of the session from the transaction's own
/// Relation messages; this is the case where the shape changes under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_transaction_with_a_column_added_midway_replays_each_shape() {
    let Some(w) = started().await else { return };
    let t = w.table();
    let spill = tempfile::tempdir().unwrap();
    let source = spilling_source(&w, 0, spill.path());
    let (mut stream, mut seen) = started_after_snapshot(&source).await;

    let big = open_streamed(&w, &mut stream, &mut seen, 3_000).await;
    big.batch_execute(&format!(
        "ALTER TABLE {t} ADD COLUMN n bigint; \
         INSERT INTO {t} (id, v, n) SELECT i, 'after', i * 2 FROM generate_series(3000, 5999) i; \
         COMMIT;"
    ))
    .await
    .unwrap();
    converge(&source, &mut stream, &mut seen).await;
    assert_eq!(seen.committed, [range(0, 6_000)]);
    assert_eq!(
        seen.rows[&0],
        [Value::Integer(0), Value::Text("x".repeat(200))]
    );
    assert_eq!(
        seen.rows[&2_999],
        [Value::Integer(2_999), Value::Text("x".repeat(200))]
    );
    for id in [3_000i64, 4_321, 5_999] {
        assert_eq!(
            seen.rows[&id],
            [
                Value::Integer(id),
                Value::Text("after".into()),
                Value::Integer(id * 2)
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_transaction_aborted_is_never_seen() {
    let Some(w) = started().await else { return };
    let t = w.table();
    let source = w.source_with(w.stream_options());
    let (mut stream, mut seen) = started_after_snapshot(&source).await;

    let big = open_streamed(&w, &mut stream, &mut seen, 5_000).await;
    big.batch_execute("ROLLBACK").await.unwrap();
    w.client()
        .await
        .unwrap()
        .batch_execute(&format!("BEGIN; {}; COMMIT;", insert_sql(&t, 7_000, 7_010)))
        .await
        .unwrap();
    converge(&source, &mut stream, &mut seen).await;
    assert_eq!(seen.committed, [range(7_000, 7_010)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_subtransaction_abort_drops_only_its_rows() {
    let Some(w) = started().await else { return };
    let t = w.table();
    let source = w.source_with(w.stream_options());
    let (mut stream, mut seen) = started_after_snapshot(&source).await;

    let big = w.client().await.unwrap();
    big.batch_execute(&format!("BEGIN; {};", insert_sql(&t, 0, 2_000)))
        .await
        .unwrap();
    let before = stream_bytes(&w).await;
    wait_streamed(&w, &mut stream, &mut seen, before).await;
    // A subtransaction streamed, then rolled back (with a nested one inside it).
    big.batch_execute(&format!(
        "SAVEPOINT a; {}; SAVEPOINT b; {};",
        insert_sql(&t, 2_000, 3_000),
        insert_sql(&t, 3_000, 4_000)
    ))
    .await
    .unwrap();
    let before = stream_bytes(&w).await;
    wait_streamed(&w, &mut stream, &mut seen, before).await;
    big.batch_execute("ROLLBACK TO SAVEPOINT a").await.unwrap();
    // A subtransaction that is kept (released), and the top level again.
    big.batch_execute(&format!(
        "SAVEPOINT c; {}; RELEASE SAVEPOINT c; {}; COMMIT;",
        insert_sql(&t, 4_000, 5_000),
        insert_sql(&t, 5_000, 6_000)
    ))
    .await
    .unwrap();
    converge(&source, &mut stream, &mut seen).await;
    let mut expect = range(0, 2_000);
    expect.extend(range(4_000, 6_000));
    assert_eq!(seen.committed, [expect]);
}

/// Linux only: the open (unlinked) spill file is seen through `/proc/self/fd`.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_transaction_over_the_memory_budget_spills_to_a_file() {
    let Some(w) = started().await else { return };
    let t = w.table();
    let spill = tempfile::tempdir().unwrap();
    let source = spilling_source(&w, 0, spill.path());
    let (mut stream, mut seen) = started_after_snapshot(&source).await;

    let big = open_streamed(&w, &mut stream, &mut seen, 5_000).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_spill_files(spill.path()) == 0 {
        assert!(Instant::now() < deadline, "no spill file was opened");
        read_for(&mut stream, &mut seen, Duration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read_dir(spill.path()).unwrap().count(),
        0,
        "spill files are unlinked at creation"
    );
    big.batch_execute(&format!("{}; COMMIT;", insert_sql(&t, 5_000, 8_000)))
        .await
        .unwrap();
    converge(&source, &mut stream, &mut seen).await;
    assert_eq!(seen.committed, [range(0, 8_000)]);
    assert_eq!(open_spill_files(spill.path()), 0, "closed at the commit");
}

/// The walsender killed while a streamed transaction is open (the stream reconnects by
/// itself), then the host stops and resumes from its last checkpoint while the transaction
/// is still open: the transaction arrives once, whole, after its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_in_a_streamed_transaction_then_resume_delivers_it_once() {
    let Some(w) = started().await else { return };
    let t = w.table();
    let spill = tempfile::tempdir().unwrap();
    let source = spilling_source(&w, 16, spill.path());
    let (mut stream, mut seen) = started_after_snapshot(&source).await;
    let client = w.client().await.unwrap();
    client
        .batch_execute(&format!(
            "BEGIN; {}; COMMIT;",
            insert_sql(&t, 100_000, 100_010)
        ))
        .await
        .unwrap();

    let big = open_streamed(&w, &mut stream, &mut seen, 3_000).await;
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots \
             WHERE slot_name = $1 AND active_pid IS NOT NULL",
            &[&w.slot()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    big.batch_execute(&insert_sql(&t, 3_000, 6_000))
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "BEGIN; {}; COMMIT;",
            insert_sql(&t, 200_000, 200_010)
        ))
        .await
        .unwrap();
    drive(&mut stream, &mut seen, Duration::from_secs(60), |s| {
        s.committed.len() >= 2
    })
    .await;
    // The host "crashes" with the big transaction open: its spill file goes with the stream.
    let resume = seen.last_checkpoint.clone().unwrap();
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_spill_files(spill.path()) > 0 {
        assert!(Instant::now() < deadline, "spill file still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    big.batch_execute(&insert_sql(&t, 6_000, 9_000))
        .await
        .unwrap();
    let mut stream = source.start(StartFrom::Checkpoint(resume)).await.unwrap();
    read_for(&mut stream, &mut seen, Duration::from_millis(500)).await;
    big.batch_execute("COMMIT").await.unwrap();
    converge(&source, &mut stream, &mut seen).await;
    assert_eq!(
        seen.committed,
        [
            range(100_000, 100_010),
            range(200_000, 200_010),
            range(0, 9_000)
        ]
    );
    assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0);
}

/// The connector sets `logical_decoding_work_mem` for its own walsender (default 4MB): a
/// transaction of ~6 MB is streamed although the server keeps its default of 64 MB, and
/// with `logical_decoding_work_mem=server` the same transaction is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_session_work_mem_streams_below_the_servers_setting() {
    powersync_source_testkit::init_tracing();
    let Some(w) = PgWorkload::start(None).await else {
        return;
    };
    for (session, streams) in [(Some("4MB"), true), (None, false)] {
        w.reset().await.unwrap();
        let t = w.table();
        let source = PostgresSource::new(w.config().with_decoding_work_mem(session).unwrap())
            .with_options(w.options())
            .with_stream_options(w.stream_options());
        let (mut stream, mut seen) = started_after_snapshot(&source).await;
        let big = w.client().await.unwrap();
        big.batch_execute(&format!("BEGIN; {};", insert_sql(&t, 0, 30_000)))
            .await
            .unwrap();
        // Long enough for the walsender to decode what was written.
        read_for(&mut stream, &mut seen, Duration::from_secs(2)).await;
        big.batch_execute("COMMIT").await.unwrap();
        converge(&source, &mut stream, &mut seen).await;
        assert_eq!(seen.committed, [range(0, 30_000)], "session {session:?}");
        let streamed = stream_bytes(&w).await;
        assert_eq!(
            streamed > 0,
            streams,
            "session {session:?}: {streamed} bytes streamed"
        );
    }
}

/// A transactional logical message inside a savepoint that is rolled back, in a streamed
/// transaction: pgoutput tags it with the top-level xid (`pgoutput_message`: `if
/// (in_streaming) xid = txn->xid`), so only its position inside the subtransaction tells it
/// was rolled back. It must not be observed, as it is not with `streaming=off` (the server
/// discards the subtransaction's changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_rolled_back_savepoint_drops_its_logical_message() {
    let Some(w) = started().await else { return };
    let t = w.table();
    let source = w.source_with(w.stream_options());
    let (mut stream, mut seen) = started_after_snapshot(&source).await;

    let big = w.client().await.unwrap();
    big.batch_execute(&format!("BEGIN; {};", insert_sql(&t, 0, 2_000)))
        .await
        .unwrap();
    // The rolled-back marker names an LSN no write checkpoint will ever have.
    big.batch_execute(&format!(
        "SAVEPOINT a; {}; SELECT pg_logical_emit_message(true, 'powersync', 'FF/FF'); {};",
        insert_sql(&t, 2_000, 3_000),
        insert_sql(&t, 3_000, 4_000)
    ))
    .await
    .unwrap();
    let before = stream_bytes(&w).await;
    wait_streamed(&w, &mut stream, &mut seen, before).await;
    big.batch_execute(&format!(
        "ROLLBACK TO SAVEPOINT a; {}; COMMIT;",
        insert_sql(&t, 4_000, 5_000)
    ))
    .await
    .unwrap();
    converge(&source, &mut stream, &mut seen).await;
    let mut expect = range(0, 2_000);
    expect.extend(range(4_000, 5_000));
    assert_eq!(seen.committed, [expect]);
    use powersync_source_core::position::{PgLsn, Position};
    let rolled_back: Checkpoint = "FF/FF".parse::<PgLsn>().unwrap().to_checkpoint();
    assert!(
        !seen.observed.contains(&rolled_back),
        "a marker of a rolled-back savepoint was observed: {:?}",
        seen.observed
    );
}

/// The spill directory disappears while streaming: the spill fails, the stream goes on
/// without streaming in-progress transactions (the server keeps them until their commit)
/// instead of failing the same way on every retry, and delivers the transaction once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spill_failure_falls_back_to_transactions_sent_at_commit() {
    let Some(w) = started().await else { return };
    let t = w.table();
    let spill = tempfile::tempdir().unwrap();
    let spill_dir = spill.path().join("gone");
    std::fs::create_dir(&spill_dir).unwrap();
    let source = spilling_source(&w, 0, &spill_dir);
    let (mut stream, mut seen) = started_after_snapshot(&source).await;
    std::fs::remove_dir(&spill_dir).unwrap();

    let big = w.client().await.unwrap();
    big.batch_execute(&format!("BEGIN; {};", insert_sql(&t, 0, 3_000)))
        .await
        .unwrap();
    read_for(&mut stream, &mut seen, Duration::from_secs(2)).await;
    big.batch_execute(&format!("{}; COMMIT;", insert_sql(&t, 3_000, 4_000)))
        .await
        .unwrap();
    converge(&source, &mut stream, &mut seen).await;
    assert_eq!(seen.committed, [range(0, 4_000)]);
    // Later transactions too, without streaming.
    big.batch_execute(&format!("BEGIN; {}; COMMIT;", insert_sql(&t, 4_000, 6_000)))
        .await
        .unwrap();
    converge(&source, &mut stream, &mut seen).await;
    assert_eq!(seen.committed, [range(0, 4_000), range(4_000, 6_000)]);
    seen.all_ids();
}
