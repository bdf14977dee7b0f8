//! The mirror's apply log for the backfill tests: SQLite triggers that record every image the
//! mirror applies (with the mirror process's run number and the time), the checks on it, and
//! the stored backfill cursor.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use powersync_source_core::Checkpoint;

use crate::common::{mirror_position, sqlite_rows, Proc};

/// Rows per backfill chunk in these tests (the binaries' default).
pub const CHUNK: u64 = 4096;

/// The backfill cursor the mirror stored: rows emitted and the last key, if one is running.
pub fn stored_cursor(db: &Path) -> Option<(u64, String)> {
    let position = mirror_position(db)?;
    let checkpoint = Checkpoint::parse(&position).ok()?;
    let state = checkpoint.backfill().ok()??;
    let task = state.tasks.first()?;
    Some((task.rows, task.after.clone().unwrap_or_default()))
}

/// The integer key inside a stored cursor (the connector's own encoding, e.g. `[40960]`).
pub fn cursor_key(after: &str) -> i64 {
    after
        .trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or_else(|_| panic!("cursor `{after}`"))
}

/// Logs every image the mirror applies to `tables`, with the run number (the mirror process)
/// and the time.
pub fn install_log(db: &Path, tables: &[&str]) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut sql = String::from(
        "CREATE TABLE IF NOT EXISTS run (n INTEGER);
         CREATE TABLE IF NOT EXISTS apply_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT,
             op TEXT, id INTEGER, version INTEGER, run INTEGER, at REAL);",
    );
    for table in tables {
        for op in ["INSERT", "UPDATE"] {
            sql.push_str(&format!(
                "CREATE TRIGGER IF NOT EXISTS log_{table}_{op} AFTER {op} ON {table} BEGIN
                   INSERT INTO apply_log (tbl, op, id, version, run, at)
                   VALUES ('{table}', '{op}', new.id, new.version, (SELECT max(n) FROM run),
                           julianday('now') * 86400.0);
                 END;"
            ));
        }
    }
    conn.execute_batch(&sql).unwrap();
}

/// SQLite's clock as the log triggers read it.
pub fn sqlite_now(db: &Path) -> f64 {
    let now = sqlite_rows(db, "SELECT julianday('now') * 86400.0");
    now[0][0].trim_start_matches("real:").parse().unwrap()
}

pub fn set_run(db: &Path, n: i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute("INSERT INTO run VALUES (?1)", [n]).unwrap();
}

/// Waits (bounded) until `pred` holds, failing at once if the mirror exits.
pub async fn wait_until(what: &str, mirror: &mut Proc, mut pred: impl FnMut(&Proc) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while !pred(mirror) {
        if let Some(status) = mirror.exited() {
            panic!(
                "mirror exited ({status}) before {what}; stderr:\n{}",
                mirror.stderr()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} within 300 s; stderr:\n{}",
            mirror.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn table_exists(db: &Path, name: &str) -> bool {
    !sqlite_rows(
        db,
        &format!("SELECT name FROM sqlite_master WHERE type = 'table' AND name = '{name}'"),
    )
    .is_empty()
}

/// Per row, the versions in apply order never decrease; returns the first violations.
pub fn versions_going_back(db: &Path, table: &str) -> Vec<String> {
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut bad = Vec::new();
    for r in sqlite_rows(
        db,
        &format!("SELECT id, version, op, run FROM apply_log WHERE tbl = '{table}' ORDER BY seq"),
    ) {
        let v: i64 = r[1].trim_start_matches("int:").parse().unwrap();
        if let Some(prev) = last.insert(r[0].clone(), v) {
            if v < prev && bad.len() < 5 {
                bad.push(format!(
                    "{table} {}: {prev} then {v} ({} in run {})",
                    r[0], r[2], r[3]
                ));
            }
        }
    }
    bad
}
