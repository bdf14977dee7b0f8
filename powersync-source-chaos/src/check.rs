//! The checkers: what must hold at every committed state of the copy, and at the end.
//!
//! - **atomicity**: the bank total of every committed state equals the source's total (which
//!   every source transaction preserves), so a torn transaction shows as a wrong total;
//! - **no going back**: a row's version never decreases from one state to the next, and an id
//!   that left the copy never comes back (ids are never reused at the source), so a replayed
//!   old change shows;
//! - **anchored changes**: rows never change while the stored checkpoint stays the same (rows
//!   committed apart from their checkpoint would be applied twice after a crash);
//! - **monotonic checkpoints**: the stored checkpoint never moves backwards (checkpoints of one
//!   source compare as strings like their positions);
//! - **convergence**: once faults and writes stop, the copy equals the source row for row.
//!
//! States taken during the initial snapshot (no checkpoint yet, or a snapshot resume token)
//! are partial by design and are counted but not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::bank::AccountRow;

/// One committed state of the copy: the stored checkpoint and the accounts, ordered by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorState {
    /// The stored position (`None` before the first commit).
    pub checkpoint: Option<String>,
    /// The accounts, ordered by id.
    pub rows: Vec<AccountRow>,
}

impl MirrorState {
    /// Whether this state is a whole snapshot of the source at a checkpoint (rather than a
    /// partial snapshot).
    pub fn is_streaming(&self) -> bool {
        self.checkpoint
            .as_deref()
            .is_some_and(|c| !c.trim_start().starts_with("snapshot:"))
    }

    /// The bank total. Saturating: a copy holding NULL balances (read as `i64::MIN`) must
    /// give a wrong total, not an overflow.
    pub fn total(&self) -> i64 {
        self.rows
            .iter()
            .fold(0i64, |sum, r| sum.saturating_add(r.balance))
    }
}

/// Something that must never happen, with what is needed to understand it.
#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    /// A committed state whose total differs from the source's: a torn transaction, or a change
    /// applied twice.
    WrongTotal {
        /// The state's checkpoint.
        checkpoint: String,
        /// The state's total.
        total: i64,
        /// The source's total.
        expected: i64,
    },
    /// A row's version decreased between two states.
    VersionWentBack {
        /// The row.
        id: i64,
        /// Its version before.
        from: i64,
        /// Its version after.
        to: i64,
        /// The checkpoint of the later state.
        checkpoint: String,
    },
    /// An id left the copy and came back.
    Resurrected {
        /// The row.
        id: i64,
        /// The checkpoint of the state it reappeared in.
        checkpoint: String,
    },
    /// Rows changed while the stored checkpoint did not.
    UnanchoredChange {
        /// The unchanged checkpoint.
        checkpoint: String,
        /// The first rows that changed (`id: before -> after`).
        changed: Vec<String>,
    },
    /// The stored checkpoint moved backwards.
    CheckpointWentBack {
        /// The earlier checkpoint.
        from: String,
        /// The later, smaller one.
        to: String,
    },
    /// The copy did not become equal to the source within the bound.
    NotConverged {
        /// Seconds waited.
        waited_secs: f64,
        /// The first differences.
        differences: Vec<String>,
    },
    /// The system under test exited with status 0 although nothing asked it to stop: its
    /// change stream ended, which a stream must never do on its own.
    StreamEnded {
        /// The last lines of its log.
        log_tail: String,
    },
    /// The source's own total is wrong: the workload (not the system under test) is broken.
    SourceTotal {
        /// The source's total.
        total: i64,
        /// The expected one.
        expected: i64,
    },
}

impl Violation {
    /// A short name of the violated property.
    pub fn property(&self) -> &'static str {
        match self {
            Violation::WrongTotal { .. } => "atomicity",
            Violation::VersionWentBack { .. } | Violation::Resurrected { .. } => "no-going-back",
            Violation::UnanchoredChange { .. } => "anchored-changes",
            Violation::CheckpointWentBack { .. } => "monotonic-checkpoints",
            Violation::NotConverged { .. } => "convergence",
            Violation::StreamEnded { .. } => "liveness",
            Violation::SourceTotal { .. } => "workload",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ", self.property())?;
        match self {
            Violation::WrongTotal {
                checkpoint,
                total,
                expected,
            } => write!(
                f,
                "the state at {checkpoint} totals {total}, the source {expected} (off by {})",
                total - expected
            ),
            Violation::VersionWentBack {
                id,
                from,
                to,
                checkpoint,
            } => write!(
                f,
                "row {id} went from version {from} back to {to} at {checkpoint}"
            ),
            Violation::Resurrected { id, checkpoint } => {
                write!(f, "row {id} left the copy and came back at {checkpoint}")
            }
            Violation::UnanchoredChange {
                checkpoint,
                changed,
            } => write!(
                f,
                "rows changed while the checkpoint stayed {checkpoint}: {}",
                changed.join("; ")
            ),
            Violation::CheckpointWentBack { from, to } => {
                write!(f, "the stored checkpoint went back from {from} to {to}")
            }
            Violation::NotConverged {
                waited_secs,
                differences,
            } => write!(
                f,
                "the copy still differs from the source after {waited_secs:.1} s: {}",
                differences.join("; ")
            ),
            Violation::StreamEnded { log_tail } => write!(
                f,
                "the mirror exited with status 0 on its own (its stream ended); its last lines:\n{log_tail}"
            ),
            Violation::SourceTotal { total, expected } => write!(
                f,
                "the source itself totals {total}, expected {expected} (workload bug)"
            ),
        }
    }
}

/// Checks a sequence of committed states of one copy.
#[derive(Debug)]
pub struct StateChecker {
    expected_total: i64,
    check_totals: bool,
    previous: Option<MirrorState>,
    last_checkpoint: Option<String>,
    versions: BTreeMap<i64, i64>,
    gone: BTreeSet<i64>,
    states: u64,
    checked: u64,
}

/// At most this many changed rows are listed in one violation.
const LISTED: usize = 5;

impl StateChecker {
    /// A checker for a bank whose total is `expected_total`.
    pub fn new(expected_total: i64) -> Self {
        StateChecker {
            expected_total,
            check_totals: true,
            previous: None,
            last_checkpoint: None,
            versions: BTreeMap::new(),
            gone: BTreeSet::new(),
            states: 0,
            checked: 0,
        }
    }

    /// Skips the atomicity check of intermediate states, for a source whose change events do
    /// not carry the row as of the change (SecantusDB's post-images are looked up when the
    /// event is read, so a copy may hold a later state of some rows of a transaction). The
    /// other checks, and convergence, still apply.
    pub fn without_totals(mut self) -> Self {
        self.check_totals = false;
        self
    }

    /// Distinct states seen (a state equal to the previous one is not counted).
    pub fn states(&self) -> u64 {
        self.states
    }

    /// Distinct states checked (streaming states).
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Checks `state` against the states before it; returns the violations it shows.
    pub fn observe(&mut self, state: MirrorState) -> Vec<Violation> {
        if self.previous.as_ref() == Some(&state) {
            return Vec::new();
        }
        self.states += 1;
        let mut found = Vec::new();
        if let (Some(last), Some(now)) = (&self.last_checkpoint, &state.checkpoint) {
            // A snapshot token and a checkpoint do not compare as strings; a checkpoint
            // followed by a snapshot token is a step back (the copy started over).
            let is_token = |c: &str| c.trim_start().starts_with("snapshot:");
            let back = match (is_token(last), is_token(now)) {
                (false, false) => now < last,
                (false, true) => true,
                (true, _) => false,
            };
            if back {
                found.push(Violation::CheckpointWentBack {
                    from: last.clone(),
                    to: now.clone(),
                });
            }
        }
        if !state.is_streaming() {
            if state.checkpoint.is_some() {
                self.last_checkpoint.clone_from(&state.checkpoint);
            }
            self.previous = Some(state);
            return found;
        }
        self.checked += 1;
        let checkpoint = state.checkpoint.clone().unwrap_or_default();

        let total = state.total();
        if self.check_totals && total != self.expected_total {
            found.push(Violation::WrongTotal {
                checkpoint: checkpoint.clone(),
                total,
                expected: self.expected_total,
            });
        }

        if let Some(previous) = self.previous.as_ref().filter(|p| p.is_streaming()) {
            if previous.checkpoint == state.checkpoint {
                let changed = differences(&previous.rows, &state.rows, LISTED);
                if !changed.is_empty() {
                    found.push(Violation::UnanchoredChange {
                        checkpoint: checkpoint.clone(),
                        changed,
                    });
                }
            }
            // Ids of the previous state missing now have left the copy.
            let now: BTreeSet<i64> = state.rows.iter().map(|r| r.id).collect();
            for row in &previous.rows {
                if !now.contains(&row.id) {
                    self.gone.insert(row.id);
                }
            }
        }

        for row in &state.rows {
            if self.gone.remove(&row.id) {
                found.push(Violation::Resurrected {
                    id: row.id,
                    checkpoint: checkpoint.clone(),
                });
            }
            if let Some(&before) = self.versions.get(&row.id) {
                if row.version < before {
                    found.push(Violation::VersionWentBack {
                        id: row.id,
                        from: before,
                        to: row.version,
                        checkpoint: checkpoint.clone(),
                    });
                }
            }
            let entry = self.versions.entry(row.id).or_insert(row.version);
            *entry = (*entry).max(row.version);
        }

        self.last_checkpoint = state.checkpoint.clone();
        self.previous = Some(state);
        found
    }
}

/// Row-by-row differences between two ordered account lists (`expected` first), at most
/// `limit` of them, each as `id: expected -> actual`.
pub fn differences(expected: &[AccountRow], actual: &[AccountRow], limit: usize) -> Vec<String> {
    let left: BTreeMap<i64, &AccountRow> = expected.iter().map(|r| (r.id, r)).collect();
    let right: BTreeMap<i64, &AccountRow> = actual.iter().map(|r| (r.id, r)).collect();
    let ids: BTreeSet<i64> = left.keys().chain(right.keys()).copied().collect();
    let mut out = Vec::new();
    for id in ids {
        let line = match (left.get(&id), right.get(&id)) {
            (Some(a), Some(b)) if rows_equal(a, b) => continue,
            (Some(a), Some(b)) => format!("{id}: {a} -> {b}"),
            (Some(a), None) => format!("{id}: {a} -> missing"),
            (None, Some(b)) => format!("{id}: missing -> {b}"),
            (None, None) => continue,
        };
        out.push(line);
        if out.len() >= limit {
            out.push("…".to_owned());
            break;
        }
    }
    out
}

/// Equal, treating an unread payload (`None`) as matching anything.
fn rows_equal(a: &AccountRow, b: &AccountRow) -> bool {
    a.id == b.id
        && a.balance == b.balance
        && a.version == b.version
        && match (&a.payload, &b.payload) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::PayloadDigest;

    fn row(id: i64, balance: i64, version: i64) -> AccountRow {
        AccountRow {
            id,
            balance,
            version,
            payload: None,
        }
    }

    fn state(checkpoint: &str, rows: &[(i64, i64, i64)]) -> MirrorState {
        MirrorState {
            checkpoint: Some(checkpoint.to_owned()),
            rows: rows.iter().map(|&(i, b, v)| row(i, b, v)).collect(),
        }
    }

    #[test]
    fn consistent_states_pass() {
        let mut c = StateChecker::new(200);
        assert!(c
            .observe(state("p:1", &[(1, 100, 1), (2, 100, 1)]))
            .is_empty());
        assert!(c
            .observe(state("p:2", &[(1, 50, 2), (2, 150, 2)]))
            .is_empty());
        // A rekey of 2 to 3 and a close of 1 into 3.
        assert!(c
            .observe(state("p:3", &[(1, 50, 2), (3, 150, 3)]))
            .is_empty());
        assert!(c.observe(state("p:4", &[(3, 200, 4)])).is_empty());
        // The same state again is not a new state.
        assert!(c.observe(state("p:4", &[(3, 200, 4)])).is_empty());
        assert_eq!(c.states(), 4);
        assert_eq!(c.checked(), 4);
    }

    #[test]
    fn torn_transfer_shows_as_a_wrong_total() {
        let mut c = StateChecker::new(200);
        c.observe(state("p:1", &[(1, 100, 1), (2, 100, 1)]));
        let v = c.observe(state("p:2", &[(1, 50, 2), (2, 100, 1)]));
        assert_eq!(
            v,
            vec![Violation::WrongTotal {
                checkpoint: "p:2".into(),
                total: 150,
                expected: 200
            }]
        );
        assert!(v[0].to_string().contains("off by -50"));
    }

    #[test]
    fn lost_values_are_reported_not_overflowed() {
        // The reader turns NULL into i64::MIN (a copy whose columns were dropped and re-added).
        let mut c = StateChecker::new(200);
        c.observe(state("p:1", &[(1, 100, 3), (2, 100, 3)]));
        let v = c.observe(state(
            "p:2",
            &[(1, i64::MIN, i64::MIN), (2, i64::MIN, i64::MIN)],
        ));
        let properties: Vec<&str> = v.iter().map(|v| v.property()).collect();
        assert_eq!(
            properties,
            vec!["atomicity", "no-going-back", "no-going-back"],
            "{v:?}"
        );
    }

    #[test]
    fn totals_can_be_left_unchecked() {
        let mut c = StateChecker::new(200).without_totals();
        c.observe(state("p:1", &[(1, 100, 1), (2, 100, 1)]));
        assert!(c
            .observe(state("p:2", &[(1, 50, 2), (2, 100, 1)]))
            .is_empty());
        // Versions are still checked.
        assert!(!c
            .observe(state("p:3", &[(1, 50, 1), (2, 100, 1)]))
            .is_empty());
    }

    #[test]
    fn version_going_back_is_caught() {
        let mut c = StateChecker::new(200);
        c.observe(state("p:1", &[(1, 100, 3), (2, 100, 3)]));
        let v = c.observe(state("p:2", &[(1, 100, 2), (2, 100, 3)]));
        assert!(matches!(
            v.as_slice(),
            [Violation::VersionWentBack {
                id: 1,
                from: 3,
                to: 2,
                ..
            }]
        ));
    }

    #[test]
    fn resurrection_is_caught() {
        let mut c = StateChecker::new(200);
        c.observe(state("p:1", &[(1, 100, 1), (2, 100, 1)]));
        c.observe(state("p:2", &[(2, 200, 2)]));
        let v = c.observe(state("p:3", &[(1, 100, 1), (2, 100, 3)]));
        assert!(v
            .iter()
            .any(|v| matches!(v, Violation::Resurrected { id: 1, .. })));
    }

    #[test]
    fn checkpoint_going_back_is_caught() {
        let mut c = StateChecker::new(100);
        c.observe(state("postgres:v1:00000000/00000020", &[(1, 100, 1)]));
        let v = c.observe(state("postgres:v1:00000000/00000010", &[(1, 100, 1)]));
        assert!(matches!(
            v.as_slice(),
            [Violation::CheckpointWentBack { .. }]
        ));
    }

    #[test]
    fn rows_changing_under_one_checkpoint_are_caught() {
        let mut c = StateChecker::new(200);
        c.observe(state("p:1", &[(1, 100, 1), (2, 100, 1)]));
        // Half a transfer committed without its checkpoint: both the total and the anchor.
        let v = c.observe(state("p:1", &[(1, 90, 2), (2, 100, 1)]));
        let properties: Vec<&str> = v.iter().map(|v| v.property()).collect();
        assert_eq!(properties, vec!["atomicity", "anchored-changes"]);
    }

    #[test]
    fn snapshot_states_are_counted_not_checked() {
        let mut c = StateChecker::new(200);
        let partial = MirrorState {
            checkpoint: Some("snapshot:v1:{}".into()),
            rows: vec![row(1, 100, 1)],
        };
        assert!(c.observe(partial).is_empty());
        assert!(c
            .observe(MirrorState {
                checkpoint: None,
                rows: vec![]
            })
            .is_empty());
        assert!(c
            .observe(state("p:1", &[(1, 100, 1), (2, 100, 1)]))
            .is_empty());
        assert_eq!((c.states(), c.checked()), (3, 1));
    }

    #[test]
    fn differences_name_rows_and_payloads() {
        let digest = |s: &str| Some(PayloadDigest::of(s.as_bytes()));
        let a = vec![
            AccountRow {
                payload: digest("x"),
                ..row(1, 10, 1)
            },
            row(2, 10, 1),
        ];
        let b = vec![
            AccountRow {
                payload: digest("y"),
                ..row(1, 10, 1)
            },
            row(3, 10, 1),
        ];
        let d = differences(&a, &b, 10);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("1: "));
        assert!(d[1].contains("-> missing"));
        assert!(d[2].starts_with("3: missing"));
        assert!(differences(&a, &a, 10).is_empty());
        // An unread payload matches anything.
        assert!(differences(&[row(1, 10, 1)], &a[..1], 10).is_empty());
    }
}
