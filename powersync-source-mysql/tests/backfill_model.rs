//! The host side of the backfill tests: an in-memory replica that applies a stream's events
//! in order (a transaction at its commit, as a sink does), checks that no row's `version`
//! ever goes backwards in apply order, and records the backfill progress events; and a
//! writer that keeps changing the source during a backfill.
//!
//! Every table of these tests has the columns `id BIGINT PRIMARY KEY, version BIGINT NOT
//! NULL, payload VARCHAR(64)`; every update bumps `version`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeStream, Checkpoint, Op, RowChange, SnapshotProgress, Value,
};
use powersync_source_mysql::mysql_async::prelude::Queryable;
use powersync_source_mysql::mysql_async::{self, Conn};
use powersync_source_testkit::MariaDbServer;

use crate::workload::PASSWORD;

/// `(version, payload)` per id, per table name.
pub type Tables = BTreeMap<String, BTreeMap<i64, (i64, String)>>;

/// Backfill progress events as received.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Started {
        table: String,
        id: String,
    },
    Chunk {
        id: String,
        rows_done: u64,
    },
    Done {
        table: String,
        id: String,
        rows: u64,
    },
    Failed {
        table: String,
        id: String,
        error: String,
    },
}

/// The replica.
#[derive(Debug, Default)]
pub struct Model {
    pub tables: Tables,
    /// The highest version applied per (table, id), deleted rows included.
    ever: HashMap<(String, i64), i64>,
    /// Rows of the open transaction.
    pending: Vec<RowChange>,
    in_txn: bool,
    /// Versions that went backwards: (table, id, held, applied).
    pub regressions: Vec<(String, i64, i64, i64)>,
    /// The last commit's checkpoint (what a host would have stored).
    pub last_commit: Option<Checkpoint>,
    pub snapshot_done: bool,
    pub observed: Vec<Checkpoint>,
    pub progress: Vec<Progress>,
    /// Streamed (not backfilled) commits that touched `other`.
    pub other_commits: u64,
    /// `other_commits` at each `BackfillChunk`.
    pub other_commits_at_chunk: Vec<u64>,
    /// Backfilled rows applied per table, and the ids of the backfilled rows in apply order.
    pub backfilled: HashMap<String, Vec<i64>>,
    /// The highest id of a backfilled row (the writer aims just past it).
    pub frontier: Arc<AtomicI64>,
    /// The column names of the last `Schema` event per table.
    pub last_schema: HashMap<String, Vec<String>>,
    /// Events of a batch received but not applied yet ([`drive`] stopped in its middle).
    leftover: VecDeque<ChangeEvent>,
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v {
        Some(Value::Integer(i)) => Some(*i),
        _ => None,
    }
}

impl Model {
    /// Applies one event; returns whether it was a `BackfillChunk`.
    pub fn apply(&mut self, event: ChangeEvent) -> bool {
        match event {
            ChangeEvent::Begin(_) => {
                self.in_txn = true;
                self.pending.clear();
            }
            ChangeEvent::Row(r) => {
                if self.in_txn {
                    self.pending.push(r);
                } else {
                    // Initial snapshot rows come without a transaction around them.
                    self.apply_row(r);
                }
            }
            ChangeEvent::Truncate(t) => {
                for table in t.tables {
                    self.tables.remove(&table.name);
                }
            }
            ChangeEvent::Abort => {
                self.pending.clear();
                self.in_txn = false;
            }
            ChangeEvent::Commit(c) => {
                let rows = std::mem::take(&mut self.pending);
                let touches_other = rows
                    .iter()
                    .any(|r| !r.snapshot && r.table.name.name == "other");
                for r in rows {
                    self.apply_row(r);
                }
                if touches_other {
                    self.other_commits += 1;
                }
                self.in_txn = false;
                self.last_commit = Some(c.checkpoint);
            }
            ChangeEvent::Snapshot(p) => match p {
                SnapshotProgress::Done { .. } => self.snapshot_done = true,
                SnapshotProgress::BackfillStarted { table, id } => {
                    self.progress.push(Progress::Started {
                        table: table.name,
                        id,
                    })
                }
                SnapshotProgress::BackfillChunk { id, rows_done, .. } => {
                    self.other_commits_at_chunk.push(self.other_commits);
                    self.progress.push(Progress::Chunk { id, rows_done });
                    return true;
                }
                SnapshotProgress::BackfillDone { table, id, rows } => {
                    self.progress.push(Progress::Done {
                        table: table.name,
                        id,
                        rows,
                    })
                }
                SnapshotProgress::BackfillFailed { table, id, error } => {
                    self.progress.push(Progress::Failed {
                        table: table.name,
                        id,
                        error,
                    })
                }
                _ => {}
            },
            ChangeEvent::CheckpointObserved(c) => self.observed.push(c),
            ChangeEvent::Schema(s) => {
                self.last_schema.insert(
                    s.name.name.clone(),
                    s.columns.iter().map(|c| c.name.clone()).collect(),
                );
            }
            ChangeEvent::Keepalive(_) => {}
        }
        false
    }

    fn apply_row(&mut self, r: RowChange) {
        let table = r.table.name.name.clone();
        let (Some(id_at), Some(version_at), Some(payload_at)) = (
            r.table.column_index("id"),
            r.table.column_index("version"),
            r.table.column_index("payload"),
        ) else {
            panic!("row of unexpected table {}: {:?}", r.table.name, r.table);
        };
        match r.op {
            Op::Delete => {
                if let Some(id) = r.old.as_ref().and_then(|o| int(o.get(id_at))) {
                    if let Some(t) = self.tables.get_mut(&table) {
                        t.remove(&id);
                    }
                }
            }
            Op::Insert | Op::Update => {
                let Some(new) = r.new.as_ref() else {
                    panic!("insert/update without a new image: {r:?}");
                };
                let id = int(new.get(id_at)).expect("id");
                let version = int(new.get(version_at)).expect("version");
                let payload = match new.get(payload_at) {
                    Some(Value::Text(t)) => t.to_string(),
                    other => panic!("payload {other:?}"),
                };
                let ever = self.ever.entry((table.clone(), id)).or_insert(version);
                if version < *ever {
                    self.regressions.push((table.clone(), id, *ever, version));
                }
                *ever = (*ever).max(version);
                if r.snapshot && self.snapshot_done {
                    self.backfilled.entry(table.clone()).or_default().push(id);
                    if table == "big" || table == "late" {
                        self.frontier.fetch_max(id, Ordering::Relaxed);
                    }
                }
                self.tables
                    .entry(table)
                    .or_default()
                    .insert(id, (version, payload));
            }
        }
    }

    /// Drops the open transaction and what was received after it (the host restarts from
    /// its stored checkpoint).
    pub fn restart(&mut self) {
        self.leftover.clear();
        self.pending.clear();
        self.in_txn = false;
    }

    pub fn done(&self, id: &str) -> Option<u64> {
        self.progress.iter().find_map(|p| match p {
            Progress::Done { id: i, rows, .. } if i == id => Some(*rows),
            _ => None,
        })
    }

    pub fn chunks(&self) -> usize {
        self.progress
            .iter()
            .filter(|p| matches!(p, Progress::Chunk { .. }))
            .count()
    }

    /// Chunk intervals (between consecutive `BackfillChunk`s) and how many of them saw a
    /// streamed commit of `other`.
    pub fn other_between_chunks(&self) -> (usize, usize) {
        let c = &self.other_commits_at_chunk;
        let intervals = c.len().saturating_sub(1);
        let with = c.windows(2).filter(|w| w[1] > w[0]).count();
        (intervals, with)
    }
}

/// Reads batches into `model` until `until` holds after some event (the rest of that batch
/// is kept for the next call), or panics after `timeout`.
pub async fn drive(
    stream: &mut ChangeStream,
    model: &mut Model,
    timeout: Duration,
    mut until: impl FnMut(&Model) -> bool,
) {
    let deadline = Instant::now() + timeout;
    if until(model) {
        return;
    }
    while let Some(event) = model.leftover.pop_front() {
        model.apply(event);
        if until(model) {
            return;
        }
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "condition not reached within {timeout:?}; progress so far: {:?}",
            model.progress.iter().rev().take(5).collect::<Vec<_>>()
        );
        let batch = match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(batch))) => batch,
            Ok(Some(Err(e))) => panic!("stream error: {e}"),
            Ok(None) => panic!("the stream ended"),
            Err(_) => continue,
        };
        let mut events = VecDeque::from(batch.events);
        while let Some(event) = events.pop_front() {
            model.apply(event);
            if until(model) {
                model.leftover = events;
                return;
            }
        }
        if let Some(c) = &model.last_commit {
            let _ = stream.ack(c);
        }
    }
}

/// A throwaway MariaDB with the user `rep` (all rights); commits are not flushed to disk one
/// by one, so the writer reaches hundreds of transactions per second.
pub async fn start_server() -> Option<MariaDbServer> {
    let server = powersync_source_testkit::or_skip(
        MariaDbServer::builder()
            .setting("innodb_flush_log_at_trx_commit", "2")
            .start()
            .await,
    )?;
    server
        .sql(&format!(
            "CREATE USER 'rep'@'%' IDENTIFIED BY '{PASSWORD}'; GRANT ALL PRIVILEGES ON *.* TO 'rep'@'%';"
        ))
        .await
        .expect("creating the user");
    Some(server)
}

pub async fn connect(port: u16) -> Conn {
    let opts = mysql_async::Opts::from_url(&format!("mysql://root@127.0.0.1:{port}/test")).unwrap();
    Conn::new(opts).await.expect("connect")
}

/// Creates `test.<name>` with `rows` rows (ids 1..=rows, version 0).
pub async fn create_table(conn: &mut Conn, name: &str, rows: i64) {
    conn.query_drop(format!(
        "CREATE TABLE test.{name} (id BIGINT PRIMARY KEY, version BIGINT NOT NULL, payload VARCHAR(64) NOT NULL)"
    ))
    .await
    .expect("create");
    fill(conn, &format!("test.{name}"), 1, rows).await;
}

/// Inserts ids `from..from+n` into `table` (version 0), 1000 rows per statement.
pub async fn fill(conn: &mut Conn, table: &str, from: i64, n: i64) {
    let mut id = from;
    while id < from + n {
        let end = (id + 1000).min(from + n);
        let values: Vec<String> = (id..end).map(|i| format!("({i}, 0, 'p{i}')")).collect();
        conn.query_drop(format!(
            "INSERT INTO {table} (id, version, payload) VALUES {}",
            values.join(",")
        ))
        .await
        .expect("fill");
        id = end;
    }
}

/// The source's rows of `tables`.
pub async fn read_source(conn: &mut Conn, tables: &[&str]) -> Tables {
    let mut out = Tables::new();
    for t in tables {
        let rows: Vec<(i64, i64, String)> = conn
            .query(format!("SELECT id, version, payload FROM test.{t}"))
            .await
            .expect("read");
        out.insert(
            (*t).to_owned(),
            rows.into_iter().map(|(i, v, p)| (i, (v, p))).collect(),
        );
    }
    out
}

/// Keeps changing the source from a task of its own: each round updates a random row of
/// `target` (half of the time just past the backfill's frontier, where the chunk in flight
/// is read) and a random row of `other`, and now and then deletes a `target` row or inserts
/// a new one; one autocommit transaction per statement.
pub struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Writer {
    pub fn start(port: u16, target: &str, rows: i64, frontier: Arc<AtomicI64>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let target = target.to_owned();
        let task = tokio::spawn(async move {
            let mut conn = connect(port).await;
            let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut next = move |n: i64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % n.max(1) as u64) as i64
            };
            let mut fresh = rows + 1_000_000;
            let mut statements = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let f = frontier.load(Ordering::Relaxed);
                let id = if next(2) == 0 {
                    f + 1 + next(600)
                } else {
                    1 + next(rows)
                };
                let sql = match next(40) {
                    0 => format!("DELETE FROM test.{target} WHERE id = {id}"),
                    1 => {
                        fresh += 1;
                        format!(
                            "INSERT INTO test.{target} (id, version, payload) VALUES ({fresh}, 0, 'n{fresh}')"
                        )
                    }
                    _ => format!(
                        "UPDATE test.{target} SET version = version + 1, payload = CONCAT('u', version + 1) WHERE id = {id}"
                    ),
                };
                conn.query_drop(sql).await.expect("writer");
                let o = 1 + next(100);
                conn.query_drop(format!(
                    "UPDATE test.other SET version = version + 1, payload = CONCAT('u', version + 1) WHERE id = {o}"
                ))
                .await
                .expect("writer other");
                statements += 2;
                if statements.is_multiple_of(8) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            statements
        });
        Writer { stop, task }
    }

    /// Stops the writer; returns how many statements it ran.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer task")
    }
}
