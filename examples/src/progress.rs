//! Progress on stderr: snapshot rows against the estimate and rows/s, then streaming rows/s
//! and lag.
//!
//! On a terminal the line is redrawn in place (`\r`) a few times a second; otherwise (a pipe,
//! a log file) a log line is written every `interval`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use powersync_source_core::{ChangeEvent, SnapshotProgress, StatsSnapshot, TableName};
use serde::Serialize;

/// Whether an in-place progress line is on the terminal (so a log line must clear it first).
static LINE_OPEN: AtomicBool = AtomicBool::new(false);

/// Clears the in-place progress line, if one is shown, so that the next text starts on a
/// clean line. Log writers call this before writing (see [`crate::cli::init_tracing`]).
pub fn clear_progress_line(out: &mut impl Write) {
    if LINE_OPEN.swap(false, Ordering::Relaxed) {
        let _ = out.write_all(b"\r\x1b[K");
    }
}

/// What a run did, for the summary printed at exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Snapshot rows applied by this run.
    pub snapshot_rows: u64,
    /// Seconds from the first snapshot event to the end of the snapshot (0 if none).
    pub snapshot_seconds: f64,
    /// Streamed rows applied by this run.
    pub stream_rows: u64,
    /// Streamed transactions applied by this run.
    pub stream_transactions: u64,
    /// Seconds from the start of streaming to the last streamed change.
    pub stream_seconds: f64,
    /// Best streamed rows per second over one second.
    pub peak_stream_rows_per_second: f64,
    /// Largest lag seen while streaming (seconds between a commit at the source and its
    /// arrival).
    pub max_lag_seconds: f64,
    /// Lag at the end.
    pub last_lag_seconds: f64,
}

impl Summary {
    /// Snapshot rows per second.
    pub fn snapshot_rate(&self) -> f64 {
        rate(self.snapshot_rows, self.snapshot_seconds)
    }
    /// Streamed rows per second while streaming was busy.
    pub fn stream_rate(&self) -> f64 {
        rate(self.stream_rows, self.stream_seconds)
    }
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

#[derive(Debug, Default)]
struct TableState {
    rows: u64,
    estimate: Option<u64>,
    done: bool,
}

/// Tracks events and prints progress.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    interval: Duration,
    last_print: Instant,
    snapshot_started: Option<Instant>,
    snapshot_finished: Option<Instant>,
    snapshot_rows: u64,
    tables: BTreeMap<TableName, TableState>,
    current_table: Option<TableName>,
    stream_started: Option<Instant>,
    stream_rows: u64,
    stream_txs: u64,
    last_activity: Option<Instant>,
    window_start: Instant,
    window_rows: u64,
    max_lag: f64,
    last_lag: f64,
    bucket_start: Instant,
    bucket_rows: u64,
    peak_rate: f64,
}

impl Progress {
    /// Progress on stderr: in-place on a terminal, else a log line every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self::with_tty(std::io::stderr().is_terminal(), interval)
    }

    /// Like [`Progress::new`], saying whether stderr is a terminal.
    pub fn with_tty(tty: bool, interval: Duration) -> Self {
        let now = Instant::now();
        Progress {
            tty,
            interval: if tty {
                Duration::from_millis(250)
            } else {
                interval
            },
            last_print: now,
            snapshot_started: None,
            snapshot_finished: None,
            snapshot_rows: 0,
            tables: BTreeMap::new(),
            current_table: None,
            stream_started: None,
            stream_rows: 0,
            stream_txs: 0,
            last_activity: None,
            window_start: now,
            window_rows: 0,
            max_lag: 0.0,
            last_lag: 0.0,
            bucket_start: now,
            bucket_rows: 0,
            peak_rate: 0.0,
        }
    }

    /// Streaming starts now (when a run resumes from a checkpoint there is no snapshot).
    pub fn streaming_started(&mut self) {
        if self.stream_started.is_none() {
            self.stream_started = Some(Instant::now());
        }
    }

    /// Whether the snapshot is still running (started and not done).
    pub fn in_snapshot(&self) -> bool {
        self.snapshot_started.is_some() && self.snapshot_finished.is_none()
    }

    /// Counts an event.
    pub fn on_event(&mut self, event: &ChangeEvent) {
        match event {
            ChangeEvent::Row(r) if r.snapshot && self.stream_started.is_none() => {
                self.snapshot_rows += 1;
                self.window_rows += 1;
                if let Some(t) = self.tables.get_mut(&r.table.name) {
                    t.rows += 1;
                }
            }
            ChangeEvent::Row(_) => {
                self.stream_rows += 1;
                self.window_rows += 1;
                self.last_activity = Some(Instant::now());
            }
            ChangeEvent::Commit(_) => {
                self.stream_txs += 1;
                self.last_activity = Some(Instant::now());
            }
            ChangeEvent::Snapshot(p) => self.on_snapshot(p),
            _ => {}
        }
    }

    fn on_snapshot(&mut self, p: &SnapshotProgress) {
        match p {
            SnapshotProgress::BackfillStarted { table, id } => {
                tracing::info!(%table, id, "backfill started");
                return;
            }
            SnapshotProgress::BackfillChunk {
                table,
                id,
                rows_done,
            } => {
                tracing::debug!(%table, id, rows_done, "backfill chunk done");
                return;
            }
            SnapshotProgress::BackfillDone { table, id, rows } => {
                tracing::info!(%table, id, rows, "backfill done");
                return;
            }
            SnapshotProgress::BackfillFailed { table, id, error } => {
                tracing::warn!(%table, id, error, "backfill failed");
                return;
            }
            _ => {}
        }
        if self.stream_started.is_some() {
            // A table first seen while streaming: its rows count as streamed.
            return;
        }
        self.snapshot_started.get_or_insert_with(Instant::now);
        match p {
            SnapshotProgress::TableStarted {
                table,
                estimated_rows,
            } => {
                tracing::debug!(%table, ?estimated_rows, "snapshot of table started");
                let t = self.tables.entry(table.clone()).or_default();
                t.estimate = *estimated_rows;
                self.current_table = Some(table.clone());
            }
            SnapshotProgress::ChunkDone {
                table,
                rows_done,
                estimated_rows,
                ..
            } => {
                tracing::debug!(%table, rows_done, "snapshot chunk done");
                let t = self.tables.entry(table.clone()).or_default();
                // After a resume, the source's count includes rows of earlier runs.
                t.rows = t.rows.max(*rows_done);
                if estimated_rows.is_some() {
                    t.estimate = *estimated_rows;
                }
            }
            SnapshotProgress::TableDone { table, rows } => {
                tracing::debug!(%table, rows, "snapshot of table done");
                let t = self.tables.entry(table.clone()).or_default();
                t.rows = t.rows.max(*rows);
                t.done = true;
            }
            SnapshotProgress::BackfillStarted { .. }
            | SnapshotProgress::BackfillChunk { .. }
            | SnapshotProgress::BackfillDone { .. }
            | SnapshotProgress::BackfillFailed { .. } => {}
            SnapshotProgress::Done { checkpoint } => {
                tracing::debug!(%checkpoint, "snapshot done");
                self.snapshot_finished = Some(Instant::now());
                self.stream_started = Some(Instant::now());
                self.window_rows = 0;
                self.window_start = Instant::now();
                self.clear_line();
                let s = self.summary(&StatsSnapshot::default());
                tracing::info!(
                    "snapshot done: {} rows in {:.1} s ({:.0} rows/s)",
                    s.snapshot_rows,
                    s.snapshot_seconds,
                    s.snapshot_rate()
                );
            }
        }
    }

    /// Prints a progress line if one is due.
    pub fn tick(&mut self, stats: &StatsSnapshot) {
        if self.stream_started.is_some() {
            self.last_lag = stats.lag_seconds;
            self.max_lag = self.max_lag.max(stats.lag_seconds);
        }
        let now = Instant::now();
        let bucket = now.duration_since(self.bucket_start).as_secs_f64();
        if bucket >= 1.0 {
            if self.stream_started.is_some() {
                let r = rate(self.stream_rows - self.bucket_rows, bucket);
                self.peak_rate = self.peak_rate.max(r);
            }
            self.bucket_start = now;
            self.bucket_rows = self.stream_rows;
        }
        if now.duration_since(self.last_print) < self.interval {
            return;
        }
        let window = now.duration_since(self.window_start).as_secs_f64();
        let rate = rate(self.window_rows, window);
        self.window_rows = 0;
        self.window_start = now;
        self.last_print = now;
        let line = if self.in_snapshot() {
            let done: u64 = self.tables.values().map(|t| t.rows).sum();
            let estimate: u64 = self
                .tables
                .values()
                .map(|t| t.estimate.unwrap_or(0).max(t.rows))
                .sum();
            let pct = if estimate > 0 {
                format!(" ({:.0}%)", 100.0 * done as f64 / estimate as f64)
            } else {
                String::new()
            };
            let table = self
                .current_table
                .as_ref()
                .map(|t| format!(", {t}"))
                .unwrap_or_default();
            format!("snapshot: {done} / ~{estimate} rows{pct}, {rate:.0} rows/s{table}")
        } else if self.stream_started.is_some() {
            format!(
                "streaming: {} rows in {} transactions, {rate:.0} rows/s, lag {:.1} s",
                self.stream_rows, self.stream_txs, stats.lag_seconds
            )
        } else {
            return;
        };
        if self.tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K{line}");
            let _ = err.flush();
            LINE_OPEN.store(true, Ordering::Relaxed);
        } else {
            tracing::info!("{line}");
        }
    }

    /// Ends an in-place line so that logs start on a fresh line.
    pub fn clear_line(&mut self) {
        let mut err = std::io::stderr().lock();
        clear_progress_line(&mut err);
        let _ = err.flush();
    }

    /// The run's totals so far.
    pub fn summary(&self, stats: &StatsSnapshot) -> Summary {
        let snapshot_seconds = match (self.snapshot_started, self.snapshot_finished) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            (Some(a), None) => a.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        let stream_seconds = match (self.stream_started, self.last_activity) {
            (Some(a), Some(b)) if b > a => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        Summary {
            snapshot_rows: self.snapshot_rows,
            snapshot_seconds,
            stream_rows: self.stream_rows,
            stream_transactions: self.stream_txs,
            stream_seconds,
            peak_stream_rows_per_second: self.peak_rate,
            max_lag_seconds: self.max_lag.max(stats.lag_seconds),
            last_lag_seconds: stats.lag_seconds,
        }
    }
}
