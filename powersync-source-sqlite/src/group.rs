//! The group-commit policy: consecutive source transactions share one SQLite transaction
//! (one fsync) until the group is old or large enough.

use std::time::{Duration, Instant};

/// When the sink commits the open group of source transactions.
///
/// A group is committed at the first transaction boundary where any of these holds:
/// - the initial snapshot reached a chunk end, a table end or its end (so the stored resume
///   token or checkpoint advances exactly there);
/// - the group holds at least [`GroupPolicy::max_rows`] rows (while streaming) or
///   [`GroupPolicy::snapshot_max_rows`] rows (during the initial snapshot);
/// - the group is older than [`GroupPolicy::max_age`] (while streaming) or
///   [`GroupPolicy::snapshot_max_age`] (during the snapshot, if set).
///
/// Larger groups mean fewer fsyncs and higher throughput; smaller ones mean a sooner
/// acknowledgement to the source. A group never ends inside a source transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPolicy {
    /// Longest time a group of streamed transactions stays uncommitted (default 200 ms).
    pub max_age: Duration,
    /// Most rows in one group while streaming (default 20,000).
    pub max_rows: u64,
    /// Most rows in one group during the initial snapshot, for sources that report chunk ends
    /// rarely (default 200,000).
    pub snapshot_max_rows: u64,
    /// Longest time a group stays uncommitted during the initial snapshot; `None` (the
    /// default) commits snapshot groups by chunk ends and rows only.
    pub snapshot_max_age: Option<Duration>,
}

impl Default for GroupPolicy {
    fn default() -> Self {
        GroupPolicy {
            max_age: Duration::from_millis(200),
            max_rows: 20_000,
            snapshot_max_rows: 200_000,
            snapshot_max_age: None,
        }
    }
}

impl GroupPolicy {
    /// Commit streamed transactions at least every `age`.
    pub fn with_max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }
    /// Commit once a streaming group holds `rows` rows (at least 1).
    pub fn with_max_rows(mut self, rows: u64) -> Self {
        self.max_rows = rows.max(1);
        self
    }
    /// Commit once a snapshot group holds `rows` rows (at least 1).
    pub fn with_snapshot_max_rows(mut self, rows: u64) -> Self {
        self.snapshot_max_rows = rows.max(1);
        self
    }
    /// Also commit snapshot groups at least every `age`.
    pub fn with_snapshot_max_age(mut self, age: Option<Duration>) -> Self {
        self.snapshot_max_age = age;
        self
    }

    fn max_age_in(&self, snapshot: bool) -> Option<Duration> {
        if snapshot {
            self.snapshot_max_age
        } else {
            Some(self.max_age)
        }
    }

    fn max_rows_in(&self, snapshot: bool) -> u64 {
        if snapshot {
            self.snapshot_max_rows
        } else {
            self.max_rows
        }
    }
}

/// The open group: whether a SQLite transaction is open, since when, what it holds.
#[derive(Debug, Default)]
pub(crate) struct Group {
    /// A SQLite transaction is open.
    pub(crate) open: bool,
    /// When the group (or the pending position) started.
    started: Option<Instant>,
    /// Rows applied in the group.
    rows: u64,
    /// Rows of the open source transaction (taken back by an abort).
    tx_rows: u64,
    /// The snapshot reached a point whose position must be stored now.
    commit_requested: bool,
}

impl Group {
    /// Marks the group as started (the first change or position of a group).
    pub(crate) fn touch(&mut self) {
        self.started.get_or_insert_with(Instant::now);
    }

    pub(crate) fn begin_transaction(&mut self) {
        self.tx_rows = 0;
    }

    pub(crate) fn add_row(&mut self) {
        self.rows += 1;
        self.tx_rows += 1;
    }

    /// The open source transaction was rolled back: its rows no longer count.
    pub(crate) fn abort_transaction(&mut self) {
        self.rows = self.rows.saturating_sub(self.tx_rows);
        self.tx_rows = 0;
    }

    pub(crate) fn request_commit(&mut self) {
        self.commit_requested = true;
    }

    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// The group was committed: the next one starts empty.
    pub(crate) fn committed(&mut self) {
        self.open = false;
        self.started = None;
        self.rows = 0;
        self.tx_rows = 0;
        self.commit_requested = false;
    }

    /// Whether the policy wants the group committed now (the caller checks that there is
    /// something to commit and that no source transaction is open).
    /// Reads the clock only when an age limit applies (it runs after every snapshot row).
    pub(crate) fn due(&self, policy: &GroupPolicy, snapshot: bool) -> bool {
        self.commit_requested
            || self.rows >= policy.max_rows_in(snapshot)
            || self
                .deadline(policy, snapshot)
                .is_some_and(|d| Instant::now() >= d)
    }

    /// When the group becomes too old.
    pub(crate) fn deadline(&self, policy: &GroupPolicy, snapshot: bool) -> Option<Instant> {
        self.started?.checked_add(policy.max_age_in(snapshot)?)
    }
}
