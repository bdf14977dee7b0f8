//! Conformance scenarios every connector's tests run against a real (or faithful) server.
//!
//! A connector's test suite implements [`Workload`] (DDL/DML in its source's dialect, a fresh
//! read of the source, fault injection) and calls the scenario functions. The oracle applies
//! the emitted events to an in-memory table keyed by row identity ([`Oracle`]) and compares it
//! with a fresh read of the source. In strict mode the oracle also fails on a duplicate insert
//! of a key it already holds, which is how "repeats nothing" is checked: workloads only ever
//! insert fresh ids.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;

use powersync_source_core::{
    ChangeEvent, ChangeSource, ChangeStream, Checkpoint, ErrorKind, OldImage, Op, Result,
    SnapshotProgress, SourceError, StartFrom, Value,
};

/// One statement of a conformance workload on the conformance table (`id` bigint key, `v`
/// text, plus columns added by [`Workload::add_column`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Dml {
    /// Insert a fresh id.
    Insert {
        /// Key.
        id: i64,
        /// Text value.
        v: String,
    },
    /// Update `v` of an existing id.
    Update {
        /// Key.
        id: i64,
        /// New text value.
        v: String,
    },
    /// Delete an id.
    Delete {
        /// Key.
        id: i64,
    },
    /// Empty the table.
    Truncate,
}

/// The source side of the conformance scenarios, implemented once per connector.
#[async_trait]
pub trait Workload: Send + Sync {
    /// A source selecting only the conformance table, with a fresh replication state name
    /// (slot, …) per call of [`Workload::reset`].
    fn source(&self) -> Arc<dyn ChangeSource>;
    /// The same source with a wrong password.
    fn source_with_wrong_password(&self) -> Arc<dyn ChangeSource>;
    /// A source missing one prerequisite, and the name of the setting the error must mention.
    async fn source_missing_prerequisite(&self) -> Result<(Arc<dyn ChangeSource>, String)>;
    /// (Re)creates the empty conformance table and forgets replication state.
    async fn reset(&self) -> Result<()>;
    /// Runs the statements as one transaction.
    async fn apply(&self, txn: &[Dml]) -> Result<()>;
    /// Adds a text column.
    async fn add_column(&self, name: &str) -> Result<()>;
    /// Sets a column of one row.
    async fn set_column(&self, id: i64, name: &str, value: &str) -> Result<()>;
    /// Drops a column.
    async fn drop_column(&self, name: &str) -> Result<()>;
    /// A fresh read of the table: id → column name → value (text columns as `Text`).
    async fn read(&self) -> Result<BTreeMap<i64, BTreeMap<String, Value>>>;
    /// Kills the server (SIGKILL) and starts it again.
    async fn kill_and_restart(&self) -> Result<()>;
    /// Makes the source forget the history after `checkpoint` (drop a slot, purge logs…).
    async fn lose_history(&self) -> Result<()>;
}

/// The in-memory replica the scenarios compare with the source.
#[derive(Debug, Default)]
pub struct Oracle {
    /// Applied state: key (the `id` value) → column → value.
    pub rows: BTreeMap<i64, BTreeMap<String, Value>>,
    pending: Vec<ChangeEvent>,
    in_snapshot_table: bool,
    /// Fail on an insert of a key that exists (outside the snapshot replay window).
    pub strict: bool,
    /// Last checkpoint seen on a commit, keepalive or snapshot done.
    pub last_checkpoint: Option<Checkpoint>,
    /// Commits applied.
    pub commits: u64,
    /// Checkpoints observed from `write_checkpoint`.
    pub observed: Vec<Checkpoint>,
    /// Whether the snapshot finished.
    pub snapshot_done: bool,
    /// Largest batch seen, in events.
    pub max_batch: usize,
}

impl Oracle {
    /// A strict oracle.
    pub fn strict() -> Self {
        Oracle {
            strict: true,
            ..Default::default()
        }
    }

    /// Applies one batch; commits are applied atomically, aborts discard the open transaction.
    pub fn apply_batch(&mut self, events: Vec<ChangeEvent>) -> Result<()> {
        self.max_batch = self.max_batch.max(events.len());
        for event in events {
            match event {
                ChangeEvent::Begin(_) => self.pending.clear(),
                ChangeEvent::Abort => self.pending.clear(),
                ChangeEvent::Commit(c) => {
                    let pending = std::mem::take(&mut self.pending);
                    for e in pending {
                        self.apply_now(e)?;
                    }
                    self.commits += 1;
                    self.last_checkpoint = Some(c.checkpoint);
                }
                ChangeEvent::Keepalive(c) => self.last_checkpoint = Some(c),
                ChangeEvent::CheckpointObserved(c) => self.observed.push(c),
                ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint }) => {
                    self.snapshot_done = true;
                    self.last_checkpoint = Some(checkpoint);
                }
                ChangeEvent::Snapshot(SnapshotProgress::TableStarted { .. }) => {
                    self.in_snapshot_table = true
                }
                ChangeEvent::Snapshot(SnapshotProgress::TableDone { .. }) => {
                    self.in_snapshot_table = false
                }
                ChangeEvent::Row(r) if r.snapshot => self.apply_now(ChangeEvent::Row(r))?,
                e @ (ChangeEvent::Row(_) | ChangeEvent::Truncate(_)) => self.pending.push(e),
                _ => {}
            }
        }
        Ok(())
    }

    fn apply_now(&mut self, event: ChangeEvent) -> Result<()> {
        match event {
            ChangeEvent::Truncate(_) => self.rows.clear(),
            ChangeEvent::Row(r) => {
                let key_of = |row: &powersync_source_core::Row| -> Result<i64> {
                    let i = r.table.column_index("id").ok_or_else(|| {
                        SourceError::schema("conformance table has no `id` column")
                    })?;
                    match row.get(i) {
                        Some(Value::Integer(id)) => Ok(*id),
                        other => Err(SourceError::decode(format!("id is {other:?}"))),
                    }
                };
                match r.op {
                    Op::Insert | Op::Update => {
                        let new = r
                            .new
                            .as_ref()
                            .ok_or_else(|| SourceError::decode("no new image"))?;
                        let id = key_of(new)?;
                        if r.op == Op::Update && r.old_image != OldImage::None {
                            if let Some(old) = &r.old {
                                let old_id = key_of(old)?;
                                if old_id != id {
                                    self.rows.remove(&old_id);
                                }
                            }
                        }
                        if r.op == Op::Insert
                            && !r.snapshot
                            && self.strict
                            && self.rows.contains_key(&id)
                        {
                            return Err(SourceError::decode(format!(
                                "duplicate insert of id {id}: a change was delivered twice"
                            )));
                        }
                        let entry = self.rows.entry(id).or_default();
                        if r.op == Op::Insert {
                            entry.clear();
                        }
                        for (name, value) in r
                            .table
                            .columns
                            .iter()
                            .map(|c| c.name.as_str())
                            .zip(new.values())
                        {
                            if !value.is_unchanged() {
                                entry.insert(name.to_string(), value.clone());
                            }
                        }
                        // Columns no longer in the schema are gone.
                        entry.retain(|k, _| r.table.column_index(k).is_some());
                    }
                    Op::Delete => {
                        let old = r
                            .old
                            .as_ref()
                            .ok_or_else(|| SourceError::decode("delete without old image"))?;
                        self.rows.remove(&key_of(old)?);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Compares with a fresh read, over the columns the read has.
    pub fn diff(&self, source: &BTreeMap<i64, BTreeMap<String, Value>>) -> Option<String> {
        if self.rows.len() != source.len() {
            let missing: Vec<_> = source
                .keys()
                .filter(|k| !self.rows.contains_key(k))
                .take(5)
                .collect();
            let extra: Vec<_> = self
                .rows
                .keys()
                .filter(|k| !source.contains_key(k))
                .take(5)
                .collect();
            return Some(format!(
                "{} rows replicated, {} in the source (missing e.g. {missing:?}, extra e.g. {extra:?})",
                self.rows.len(),
                source.len()
            ));
        }
        for (id, cols) in source {
            let mine = &self.rows[id];
            for (name, value) in cols {
                if mine.get(name).unwrap_or(&Value::Null) != value {
                    return Some(format!(
                        "row {id} column {name}: replicated {:?}, source {value:?}",
                        mine.get(name)
                    ));
                }
            }
        }
        None
    }
}

/// Reads from `stream` into `oracle` until `until` holds or `timeout` passes.
pub async fn drive(
    stream: &mut ChangeStream,
    oracle: &mut Oracle,
    timeout: Duration,
    mut until: impl FnMut(&Oracle) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !until(oracle) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SourceError::connection(format!(
                "condition not reached within {timeout:?}"
            )));
        }
        match tokio::time::timeout(left.min(Duration::from_millis(500)), stream.next()).await {
            Ok(Some(batch)) => {
                let batch = batch?;
                oracle.apply_batch(batch.events)?;
                if let Some(c) = &oracle.last_checkpoint {
                    stream.ack(c)?;
                }
            }
            Ok(None) => return Err(SourceError::connection("stream ended")),
            Err(_) => {}
        }
    }
    Ok(())
}

/// Starts `source` from the beginning and reads until its snapshot is done.
pub async fn start_through_snapshot(
    source: &dyn ChangeSource,
    oracle: &mut Oracle,
) -> Result<ChangeStream> {
    let mut stream = source.start(StartFrom::Beginning).await?;
    drive(&mut stream, oracle, Duration::from_secs(60), |o| {
        o.snapshot_done
    })
    .await?;
    Ok(stream)
}

/// Waits until the stream has passed everything committed so far (a write checkpoint is
/// observed), then compares the oracle with a fresh read.
pub async fn converge<W: Workload + ?Sized>(
    w: &W,
    stream: &mut ChangeStream,
    oracle: &mut Oracle,
) -> Result<()> {
    let source = w.source();
    let marker = source.write_checkpoint().await?;
    drive(stream, oracle, Duration::from_secs(60), |o| {
        o.observed.iter().any(|c| c == &marker) && o.pending.is_empty()
    })
    .await
    .map_err(|e| e.context("waiting for the write checkpoint"))?;
    // The marker's transaction commit follows the marker; let it through.
    drive(stream, oracle, Duration::from_secs(30), |o| {
        o.pending.is_empty()
    })
    .await?;
    let read = w.read().await?;
    match oracle.diff(&read) {
        None => Ok(()),
        Some(d) => Err(SourceError::decode(format!(
            "replica differs from the source: {d}"
        ))),
    }
}

fn inserts(from: i64, n: i64) -> Vec<Dml> {
    (from..from + n)
        .map(|id| Dml::Insert {
            id,
            v: format!("v{id}"),
        })
        .collect()
}

/// Mixed DML over ids `base..base+n`: updates and deletes of earlier rows, fresh inserts.
fn mixed(round: i64, base: i64, n: i64) -> Vec<Dml> {
    let mut out = Vec::new();
    for i in 0..n {
        let id = base + i;
        out.push(Dml::Insert {
            id,
            v: format!("r{round}-{id}"),
        });
        if i % 3 == 0 && id > 1 {
            out.push(Dml::Update {
                id: id / 2,
                v: format!("u{round}-{id}"),
            });
        }
        if i % 7 == 0 && id > 3 {
            out.push(Dml::Delete { id: id / 3 });
        }
    }
    out
}

/// Snapshot while writes continue converges.
pub async fn snapshot_while_writing<W: Workload + ?Sized>(w: &W) -> Result<()> {
    w.reset().await?;
    for chunk in 0..4 {
        w.apply(&inserts(chunk * 500, 500)).await?;
    }
    let source = w.source();
    let mut stream = source.start(StartFrom::Beginning).await?;
    let mut oracle = Oracle::default();
    for round in 0..20 {
        w.apply(&mixed(round, 10_000 + round * 50, 50)).await?;
        if round % 5 == 0 {
            drive(&mut stream, &mut oracle, Duration::from_millis(200), |_| {
                false
            })
            .await
            .ok();
        }
    }
    drive(&mut stream, &mut oracle, Duration::from_secs(60), |o| {
        o.snapshot_done
    })
    .await?;
    converge(w, &mut stream, &mut oracle).await
}

/// Stop and resume from the last acknowledged checkpoint loses nothing and repeats nothing.
pub async fn resume_from_checkpoint<W: Workload + ?Sized>(w: &W) -> Result<()> {
    w.reset().await?;
    w.apply(&inserts(0, 100)).await?;
    let source = w.source();
    let mut oracle = Oracle::strict();
    let mut stream = start_through_snapshot(source.as_ref(), &mut oracle).await?;
    for round in 0..5 {
        w.apply(&inserts(1000 + round * 10, 10)).await?;
    }
    drive(&mut stream, &mut oracle, Duration::from_secs(30), |o| {
        o.commits >= 3
    })
    .await?;
    let resume = oracle
        .last_checkpoint
        .clone()
        .ok_or_else(|| SourceError::decode("no checkpoint"))?;
    drop(stream);
    for round in 5..10 {
        w.apply(&inserts(1000 + round * 10, 10)).await?;
    }
    let mut stream = source.start(StartFrom::Checkpoint(resume)).await?;
    converge(w, &mut stream, &mut oracle).await
}

/// The server killed and restarted mid-stream: the stream reconnects by itself and converges
/// without duplicates.
pub async fn server_restart<W: Workload + ?Sized>(w: &W) -> Result<()> {
    w.reset().await?;
    w.apply(&inserts(0, 100)).await?;
    let source = w.source();
    let mut oracle = Oracle::strict();
    let mut stream = start_through_snapshot(source.as_ref(), &mut oracle).await?;
    w.apply(&inserts(1000, 50)).await?;
    drive(&mut stream, &mut oracle, Duration::from_secs(30), |o| {
        o.commits >= 1
    })
    .await?;
    w.kill_and_restart().await?;
    for round in 0..5 {
        w.apply(&inserts(2000 + round * 10, 10)).await?;
    }
    converge(w, &mut stream, &mut oracle).await
}

/// A large transaction converges and batches stay bounded.
pub async fn large_transaction<W: Workload + ?Sized>(
    w: &W,
    rows: i64,
    max_batch: usize,
) -> Result<()> {
    w.reset().await?;
    let source = w.source();
    let mut oracle = Oracle::strict();
    let mut stream = start_through_snapshot(source.as_ref(), &mut oracle).await?;
    let big: Vec<Dml> = (0..rows)
        .map(|id| Dml::Insert {
            id,
            v: "x".repeat(200),
        })
        .collect();
    w.apply(&big).await?;
    converge(w, &mut stream, &mut oracle).await?;
    if oracle.max_batch > max_batch {
        return Err(SourceError::decode(format!(
            "a batch held {} events, more than the bound {max_batch}",
            oracle.max_batch
        )));
    }
    Ok(())
}

/// Truncate empties the replica.
pub async fn truncate<W: Workload + ?Sized>(w: &W) -> Result<()> {
    w.reset().await?;
    w.apply(&inserts(0, 50)).await?;
    let source = w.source();
    let mut oracle = Oracle::default();
    let mut stream = start_through_snapshot(source.as_ref(), &mut oracle).await?;
    w.apply(&[Dml::Truncate]).await?;
    w.apply(&inserts(100, 5)).await?;
    converge(w, &mut stream, &mut oracle).await
}

/// Adding and dropping a column mid-stream is followed.
pub async fn add_drop_column<W: Workload + ?Sized>(w: &W) -> Result<()> {
    w.reset().await?;
    w.apply(&inserts(0, 10)).await?;
    let source = w.source();
    let mut oracle = Oracle::default();
    let mut stream = start_through_snapshot(source.as_ref(), &mut oracle).await?;
    w.add_column("extra").await?;
    w.apply(&inserts(100, 3)).await?;
    w.set_column(100, "extra", "hello").await?;
    converge(w, &mut stream, &mut oracle).await?;
    w.drop_column("extra").await?;
    w.apply(&[Dml::Update {
        id: 1,
        v: "after-drop".into(),
    }])
    .await?;
    converge(w, &mut stream, &mut oracle).await
}

/// A write checkpoint on an idle source is observed within `bound`.
pub async fn idle_write_checkpoint<W: Workload + ?Sized>(w: &W, bound: Duration) -> Result<()> {
    w.reset().await?;
    let source = w.source();
    let mut oracle = Oracle::default();
    let mut stream = start_through_snapshot(source.as_ref(), &mut oracle).await?;
    let marker = source.write_checkpoint().await?;
    let started = Instant::now();
    drive(&mut stream, &mut oracle, bound, |o| {
        o.observed.contains(&marker)
    })
    .await?;
    tracing::info!(
        "idle write checkpoint observed after {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Resuming from a checkpoint whose history is gone is `HistoryLost`.
pub async fn history_lost<W: Workload + ?Sized>(w: &W) -> Result<()> {
    w.reset().await?;
    let source = w.source();
    let mut oracle = Oracle::default();
    let stream = start_through_snapshot(source.as_ref(), &mut oracle).await?;
    let checkpoint = oracle
        .last_checkpoint
        .clone()
        .ok_or_else(|| SourceError::decode("no checkpoint"))?;
    drop(stream);
    w.lose_history().await?;
    let result = match source.start(StartFrom::Checkpoint(checkpoint)).await {
        Err(e) => Err(e),
        Ok(mut stream) => match stream.next().await {
            Some(Err(e)) => Err(e),
            other => Ok(other.map(|b| b.map(|b| b.len()))),
        },
    };
    match result {
        Err(e) if e.kind() == ErrorKind::HistoryLost => Ok(()),
        Err(e) => Err(SourceError::decode(format!(
            "expected HistoryLost, got {e}"
        ))),
        Ok(_) => Err(SourceError::decode(
            "expected HistoryLost, the stream started",
        )),
    }
}

/// Bad credentials are `Auth` (and the password is not in the message).
pub async fn bad_credentials<W: Workload + ?Sized>(w: &W, password: &str) -> Result<()> {
    match w.source_with_wrong_password().check().await {
        Err(e) if e.kind() == ErrorKind::Auth => {
            let text = format!("{e} {e:?}");
            if !password.is_empty() && text.contains(password) {
                return Err(SourceError::decode("the error shows the password"));
            }
            Ok(())
        }
        Err(e) => Err(SourceError::decode(format!("expected Auth, got {e}"))),
        Ok(_) => Err(SourceError::decode("expected Auth, the check passed")),
    }
}

/// A missing prerequisite is `Prerequisite` and names the setting.
pub async fn missing_prerequisite<W: Workload + ?Sized>(w: &W) -> Result<()> {
    let (source, setting) = w.source_missing_prerequisite().await?;
    let err = match source.check().await {
        Ok(report) => match report.into_result() {
            Ok(_) => return Err(SourceError::decode("expected a prerequisite problem")),
            Err(e) => e,
        },
        Err(e) => e,
    };
    if err.kind() != ErrorKind::Prerequisite {
        return Err(SourceError::decode(format!(
            "expected Prerequisite, got {err}"
        )));
    }
    if !err.to_string().contains(&setting) {
        return Err(SourceError::decode(format!(
            "the error does not name `{setting}`: {err}"
        )));
    }
    Ok(())
}

/// One scenario of the conformance suite, for [`Suite::skip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// [`bad_credentials`].
    BadCredentials,
    /// [`missing_prerequisite`].
    MissingPrerequisite,
    /// [`snapshot_while_writing`].
    SnapshotWhileWriting,
    /// [`resume_from_checkpoint`].
    ResumeFromCheckpoint,
    /// [`truncate`].
    Truncate,
    /// [`add_drop_column`].
    AddDropColumn,
    /// [`idle_write_checkpoint`].
    IdleWriteCheckpoint,
    /// [`large_transaction`].
    LargeTransaction,
    /// [`history_lost`].
    HistoryLost,
    /// [`server_restart`].
    ServerRestart,
}

/// Every scenario in one run, with the few knobs connectors differ in. Failures are collected
/// (each logged with its time and the workload's diagnostics) rather than stopping at the
/// first, so one run shows everything a change broke.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The wrong password (or key) [`bad_credentials`] must never see echoed.
    pub wrong_password: String,
    /// How long [`idle_write_checkpoint`] may take.
    pub write_checkpoint_bound: Duration,
    /// Rows of [`large_transaction`].
    pub large_rows: i64,
    /// The largest batch [`large_transaction`] accepts.
    pub max_batch: usize,
    /// Scenarios the source cannot run (say why where the suite is called).
    pub skip: Vec<Scenario>,
}

impl Default for Suite {
    fn default() -> Self {
        Suite {
            wrong_password: "wrong-Secret-77".into(),
            write_checkpoint_bound: Duration::from_secs(5),
            large_rows: 20_000,
            max_batch: 1000,
            skip: Vec::new(),
        }
    }
}

impl Suite {
    /// Runs every scenario not skipped against `w`, in a fixed order (fault scenarios last),
    /// and returns the failures as `name: error`. `diagnostics` is appended to a failure's log
    /// line (e.g. the tail of the server log).
    pub async fn run<W: Workload + ?Sized>(
        &self,
        w: &W,
        diagnostics: &(dyn Fn() -> String + Send + Sync),
    ) -> Vec<String> {
        let mut failures = Vec::new();
        let order = [
            (Scenario::BadCredentials, "bad credentials give Auth"),
            (
                Scenario::MissingPrerequisite,
                "missing prerequisite names the setting",
            ),
            (
                Scenario::SnapshotWhileWriting,
                "snapshot while writing converges",
            ),
            (Scenario::ResumeFromCheckpoint, "resume from checkpoint"),
            (Scenario::Truncate, "truncate"),
            (Scenario::AddDropColumn, "add/drop column"),
            (Scenario::IdleWriteCheckpoint, "idle write checkpoint"),
            (Scenario::LargeTransaction, "large transaction"),
            (Scenario::HistoryLost, "history lost"),
            (Scenario::ServerRestart, "server killed and restarted"),
        ];
        for (scenario, name) in order {
            if self.skip.contains(&scenario) {
                eprintln!("conformance {name}: skipped for this source");
                continue;
            }
            let started = Instant::now();
            let result = match scenario {
                Scenario::BadCredentials => bad_credentials(w, &self.wrong_password).await,
                Scenario::MissingPrerequisite => missing_prerequisite(w).await,
                Scenario::SnapshotWhileWriting => snapshot_while_writing(w).await,
                Scenario::ResumeFromCheckpoint => resume_from_checkpoint(w).await,
                Scenario::Truncate => truncate(w).await,
                Scenario::AddDropColumn => add_drop_column(w).await,
                Scenario::IdleWriteCheckpoint => {
                    idle_write_checkpoint(w, self.write_checkpoint_bound).await
                }
                Scenario::LargeTransaction => {
                    large_transaction(w, self.large_rows, self.max_batch).await
                }
                Scenario::HistoryLost => history_lost(w).await,
                Scenario::ServerRestart => server_restart(w).await,
            };
            match result {
                Ok(()) => eprintln!("conformance {name}: ok ({:?})", started.elapsed()),
                Err(e) => {
                    eprintln!("conformance {name}: FAILED: {e}\n{}", diagnostics());
                    failures.push(format!("{name}: {e}"));
                }
            }
        }
        failures
    }

    /// [`Suite::run`], then panics listing every failure.
    pub async fn assert_passes<W: Workload + ?Sized>(
        &self,
        w: &W,
        diagnostics: &(dyn Fn() -> String + Send + Sync),
    ) {
        let failures = self.run(w, diagnostics).await;
        assert!(
            failures.is_empty(),
            "conformance failures:\n{}",
            failures.join("\n")
        );
    }
}
