//! The trait every connector implements.

use std::fmt;

use async_trait::async_trait;

use crate::checkpoint::Checkpoint;
use crate::error::{Result, SourceError};
use crate::provision::Fix;
use crate::schema::TableSchema;
use crate::snapshot::SnapshotResume;
use crate::stream::ChangeStream;

/// Where a stream starts.
#[derive(Debug, Clone, PartialEq)]
pub enum StartFrom {
    /// Snapshot every selected table, then stream from the snapshot's consistent point.
    Beginning,
    /// Stream everything committed after this checkpoint (from a commit, keepalive or snapshot
    /// done). A checkpoint older than the source's retained history is
    /// [`crate::ErrorKind::HistoryLost`], never a silent skip.
    Checkpoint(Checkpoint),
    /// Finish an interrupted snapshot, then stream from its consistent point.
    Snapshot(SnapshotResume),
}

impl StartFrom {
    /// Parses what a host stored: a checkpoint or a snapshot resume token.
    pub fn parse(stored: &str) -> Result<StartFrom> {
        if SnapshotResume::is_token(stored) {
            SnapshotResume::parse_token(stored).map(StartFrom::Snapshot)
        } else {
            Checkpoint::parse(stored).map(StartFrom::Checkpoint)
        }
    }
}

/// How bad a prerequisite problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Replication works but something is risky or slow.
    Warning,
    /// Replication cannot work until this is fixed.
    Error,
}

/// One problem found by [`ChangeSource::check`], with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Whether replication can work anyway.
    pub severity: Severity,
    /// The setting, right or object concerned (e.g. `wal_level`, `REPLICATION`,
    /// `publication powersync`).
    pub setting: String,
    /// What is wrong.
    pub what: String,
    /// How to fix it, for a person: the SQL to run or the setting to change (and whether a
    /// restart is needed).
    pub fix: String,
    /// The same fix in structured form, as a connector's `provision` module (and `setup
    /// --apply`) carries it out: SQL to run, SQL that must run alone, or a manual step.
    /// [`CheckReport::error`] and [`CheckReport::warning`] make it a manual step holding
    /// `fix`; [`Problem::with_remedy`] sets a precise one.
    pub remedy: Fix,
}

impl Problem {
    /// An error-level problem whose remedy is the manual step `fix`.
    pub fn error(
        setting: impl Into<String>,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Problem {
        Problem::new(Severity::Error, setting.into(), what.into(), fix.into())
    }

    /// A warning whose remedy is the manual step `fix`.
    pub fn warning(
        setting: impl Into<String>,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Problem {
        Problem::new(Severity::Warning, setting.into(), what.into(), fix.into())
    }

    fn new(severity: Severity, setting: String, what: String, fix: String) -> Problem {
        Problem {
            severity,
            setting,
            what,
            remedy: Fix::manual(fix.clone()),
            fix,
        }
    }

    /// Sets the structured remedy (the text of [`Problem::fix`] stays as it is).
    pub fn with_remedy(mut self, remedy: Fix) -> Problem {
        self.remedy = remedy;
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{sev}: {} [{}]; fix: {}",
            self.what, self.setting, self.fix
        )
    }
}

/// The result of a prerequisite check: every problem found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckReport {
    /// Server product and version, as the server reports it.
    pub server_version: Option<String>,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Records an error-level problem.
    pub fn error(
        &mut self,
        setting: impl Into<String>,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.problems.push(Problem::error(setting, what, fix));
    }
    /// Records a warning.
    pub fn warning(
        &mut self,
        setting: impl Into<String>,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.problems.push(Problem::warning(setting, what, fix));
    }
    /// Records a problem built with [`Problem::error`] or [`Problem::warning`] (and
    /// usually [`Problem::with_remedy`]).
    pub fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }
    /// Whether replication can start (no error-level problem).
    pub fn is_ready(&self) -> bool {
        self.problems.iter().all(|p| p.severity != Severity::Error)
    }
    /// The error-level problems.
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }
    /// `Ok(self)` when ready, else one [`crate::ErrorKind::Prerequisite`] error listing every
    /// error-level problem with its fix. Warnings are logged (`tracing`, level WARN) either way,
    /// so a host that only calls [`ChangeSource::start`] (which runs this) still sees them.
    pub fn into_result(self) -> Result<CheckReport> {
        for warning in self
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
        {
            tracing::warn!("{warning}");
        }
        if self.is_ready() {
            return Ok(self);
        }
        let list: Vec<String> = self.errors().map(|p| p.to_string()).collect();
        Err(SourceError::prerequisite(format!(
            "{} problem(s): {}",
            list.len(),
            list.join("; ")
        )))
    }
}

/// A database this SDK replicates from. One implementation per source; object-safe so hosts
/// can hold `Box<dyn ChangeSource>`.
///
/// # Contract
/// - **Ordering**: the stream delivers changes in the source's commit order, each streamed
///   transaction framed by begin and commit events; a batch is a slice of that sequence
///   (it can split a transaction).
/// - **Positions**: commit, keepalive and snapshot-done events carry a [`Checkpoint`] at a
///   transaction boundary. A position is safe to acknowledge once the host has durably stored
///   every event before it; starting from it later yields every later change exactly once.
/// - **Acknowledgement**: only acknowledged positions are confirmed to the source (and release
///   its resources); the source keeps the history after the last acknowledgement.
/// - **Reconnects**: transient failures are retried inside the stream and resumed from the last
///   emitted boundary; errors reaching the host are final for that stream.
#[async_trait]
pub trait ChangeSource: Send + Sync + fmt::Debug {
    /// The source tag used in checkpoints (`postgres`, `mysql`, …).
    fn kind(&self) -> &'static str;

    /// Checks every prerequisite and reports every problem found with its fix. Fails only when
    /// the check itself cannot run (bad URL, unreachable server, bad credentials).
    async fn check(&self) -> Result<CheckReport>;

    /// The selected tables with their current schema.
    async fn discover(&self) -> Result<Vec<TableSchema>>;

    /// Starts replication: snapshot then stream, or resume.
    ///
    /// Every connector runs [`ChangeSource::check`] first: an unready source fails here with
    /// one [`crate::ErrorKind::Prerequisite`] error listing every problem and its fix, and
    /// warnings are logged ([`CheckReport::into_result`]). The stream itself runs on the core
    /// [`crate::runtime`]: a panic inside it reaches the host as an
    /// [`crate::ErrorKind::Internal`] error, and transient failures are retried with a budget
    /// per outage.
    async fn start(&self, from: StartFrom) -> Result<ChangeStream>;

    /// Makes the source write a marker that a running stream will pass, and returns the
    /// checkpoint the stream reports with [`crate::ChangeEvent::CheckpointObserved`] when it
    /// does. On an idle source the marker is observed within a few seconds.
    async fn write_checkpoint(&self) -> Result<Checkpoint>;
}
