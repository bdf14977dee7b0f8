//! The checkers bite: a bank workload on a real PostgreSQL, streamed by the PostgreSQL
//! connector into tiny in-test SQLite sinks. A correct sink (each source transaction and its
//! checkpoint in one SQLite transaction) passes every check; a sink that applies a
//! transaction's rows in separate SQLite transactions, and one that replays from an older
//! checkpoint after a "restart", are reported.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use powersync_source_chaos::bank::{Bank, BankSettings, Outcome, Planner, PostgresBank};
use powersync_source_chaos::check::{StateChecker, Violation};
use powersync_source_chaos::mirror_file::MirrorFile;
use powersync_source_core::{
    ChangeEvent, ChangeSource, Op, RowChange, SnapshotProgress, StartFrom, StreamOptions,
    TableName, Value,
};
use powersync_source_postgres::{PostgresConfig, PostgresSource};
use powersync_source_testkit::PostgresServer;
use rusqlite::{params, Connection};

/// How the in-test sink is broken.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Flaw {
    /// Not broken.
    None,
    /// Every row in its own SQLite transaction; the checkpoint in another.
    SplitTransactions,
    /// After the 10th streamed transaction, "restarts" from the checkpoint three
    /// transactions back and applies those three again.
    ReplayFromOlderCheckpoint,
}

struct Sink {
    conn: Connection,
    flaw: Flaw,
    /// Streamed transactions: their rows and checkpoints (for the replay flaw).
    history: Vec<(Vec<RowChange>, String)>,
    current: Vec<RowChange>,
}

impl Sink {
    fn open(path: &Path, flaw: Flaw) -> Sink {
        let conn = Connection::open(path).unwrap();
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .unwrap();
        conn.execute_batch(
            "CREATE TABLE _powersync_mirror_state (key TEXT PRIMARY KEY, value TEXT);
             CREATE TABLE accounts (id PRIMARY KEY, balance, version, payload);",
        )
        .unwrap();
        Sink {
            conn,
            flaw,
            history: Vec::new(),
            current: Vec::new(),
        }
    }

    fn apply(&self, change: &RowChange) {
        let schema = &change.table;
        let int = |row: &powersync_source_core::Row, name: &str| {
            row.get_by_name(schema, name).and_then(Value::as_integer)
        };
        let text = |row: &powersync_source_core::Row| {
            row.get_by_name(schema, "payload")
                .and_then(|v| v.as_text())
                .map(str::to_owned)
        };
        let key = change
            .key_values()
            .into_iter()
            .find(|(name, _)| *name == "id")
            .and_then(|(_, v)| v.as_integer());
        match (change.op, &change.new) {
            (Op::Insert, Some(new)) => {
                self.conn
                    .execute(
                        "INSERT OR REPLACE INTO accounts VALUES (?1, ?2, ?3, ?4)",
                        params![
                            int(new, "id"),
                            int(new, "balance"),
                            int(new, "version"),
                            text(new)
                        ],
                    )
                    .unwrap();
            }
            (Op::Update, Some(new)) => {
                self.conn
                    .execute(
                        "UPDATE accounts SET id = ?1, balance = ?2, version = ?3, \
                         payload = coalesce(?4, payload) WHERE id = ?5",
                        params![
                            int(new, "id"),
                            int(new, "balance"),
                            int(new, "version"),
                            text(new),
                            key
                        ],
                    )
                    .unwrap();
            }
            (Op::Delete, _) => {
                self.conn
                    .execute("DELETE FROM accounts WHERE id = ?1", params![key])
                    .unwrap();
            }
            _ => panic!("unexpected row change {change:?}"),
        }
    }

    fn store_checkpoint(&self, checkpoint: &str) {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO _powersync_mirror_state VALUES ('checkpoint', ?1)",
                [checkpoint],
            )
            .unwrap();
    }

    /// Feeds one event; calls `committed` after every SQLite commit.
    fn feed(&mut self, event: &ChangeEvent, committed: &mut dyn FnMut()) {
        match event {
            ChangeEvent::Row(change) if change.snapshot => {
                self.apply(change);
                committed();
            }
            ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint }) => {
                self.store_checkpoint(checkpoint.as_str());
                committed();
            }
            ChangeEvent::Begin(_) => {
                self.current.clear();
                if self.flaw != Flaw::SplitTransactions {
                    self.conn.execute_batch("BEGIN").unwrap();
                }
            }
            ChangeEvent::Row(change) => {
                self.apply(change);
                self.current.push(change.clone());
                if self.flaw == Flaw::SplitTransactions {
                    committed();
                }
            }
            ChangeEvent::Commit(commit) => {
                self.store_checkpoint(commit.checkpoint.as_str());
                if self.flaw != Flaw::SplitTransactions {
                    self.conn.execute_batch("COMMIT").unwrap();
                }
                committed();
                self.history.push((
                    std::mem::take(&mut self.current),
                    commit.checkpoint.to_string(),
                ));
                if self.flaw == Flaw::ReplayFromOlderCheckpoint && self.history.len() == 10 {
                    // "Restart" from the checkpoint before the last three transactions and
                    // apply them again, each atomically with its own checkpoint.
                    let replay: Vec<_> = self.history[6..9].to_vec();
                    for (rows, checkpoint) in replay {
                        self.conn.execute_batch("BEGIN").unwrap();
                        for row in &rows {
                            self.apply(row);
                        }
                        self.store_checkpoint(&checkpoint);
                        self.conn.execute_batch("COMMIT").unwrap();
                        committed();
                    }
                }
            }
            ChangeEvent::Abort => panic!("no connection faults in this test"),
            _ => {}
        }
    }
}

/// Runs the bank workload into a sink with `flaw`; returns the checker's violations and the
/// number of states it checked.
async fn run(flaw: Flaw) -> Option<(Vec<Violation>, u64)> {
    let pg = PostgresServer::start().await;
    let pg = match powersync_source_testkit::or_skip(pg) {
        Some(pg) => pg,
        None => return None,
    };
    let settings = BankSettings {
        accounts: 8,
        big_value: (3_000, 10_000),
    };
    let mut bank = Bank::Postgres(PostgresBank::connect(&pg.url()).await.unwrap());
    bank.create(&settings).await.unwrap();

    let source = PostgresSource::new(PostgresConfig::parse(&pg.url()).unwrap())
        .with_stream_options(
            StreamOptions::default().with_tables(vec![TableName::new("public", "accounts")]),
        );
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();

    // 60 committed transactions of every kind.
    let mut planner = Planner::new(7, settings.clone());
    let mut committed_ops = 0;
    while committed_ops < 60 {
        let op = planner.next_op();
        if bank.apply(&op).await.unwrap() == Outcome::Committed {
            planner.committed(&op);
            committed_ops += 1;
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.sqlite");
    let mut sink = Sink::open(&path, flaw);
    let mut reader = MirrorFile::new(&path);
    let mut checker = StateChecker::new(settings.total());
    let mut violations = Vec::new();
    let mut commits = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while commits < committed_ops {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the stream delivered every transaction within 60 s")
            .expect("the stream did not end")
            .expect("no stream error");
        for event in &batch.events {
            if matches!(event, ChangeEvent::Commit(_)) {
                commits += 1;
            }
            sink.feed(event, &mut || {
                let state = reader
                    .read(false)
                    .unwrap()
                    .expect("the sink's tables exist");
                violations.extend(checker.observe(state));
            });
        }
    }
    Some((violations, checker.checked()))
}

fn properties(violations: &[Violation]) -> Vec<&'static str> {
    let mut p: Vec<&'static str> = violations.iter().map(Violation::property).collect();
    p.sort_unstable();
    p.dedup();
    p
}

#[tokio::test]
async fn a_correct_sink_passes_every_check() {
    let Some((violations, checked)) = run(Flaw::None).await else {
        return;
    };
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(
        checked >= 60,
        "every transaction is a checked state: {checked}"
    );
}

#[tokio::test]
async fn a_sink_that_splits_transactions_is_caught() {
    let Some((violations, _)) = run(Flaw::SplitTransactions).await else {
        return;
    };
    let found = properties(&violations);
    assert!(found.contains(&"atomicity"), "{violations:#?}");
    assert!(found.contains(&"anchored-changes"), "{violations:#?}");
}

#[tokio::test]
async fn a_sink_that_replays_from_an_older_checkpoint_is_caught() {
    let Some((violations, _)) = run(Flaw::ReplayFromOlderCheckpoint).await else {
        return;
    };
    let found = properties(&violations);
    assert!(found.contains(&"monotonic-checkpoints"), "{violations:#?}");
    assert!(found.contains(&"no-going-back"), "{violations:#?}");
}
