//! Helpers shared by the binary tests: a throwaway PostgreSQL, child processes whose stdout
//! lines are collected as they come, SQLite reads.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use powersync_source_testkit::{self as testkit, PostgresServer};
use serde_json::Value as Json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub const TAIL: &str = env!("CARGO_BIN_EXE_tail");
pub const MIRROR: &str = env!("CARGO_BIN_EXE_mirror");

/// Starts a PostgreSQL server, or `None` (after one `SKIPPED:` line) when PostgreSQL is not
/// installed.
pub async fn server() -> Option<PostgresServer> {
    testkit::init_tracing();
    testkit::or_skip(PostgresServer::start().await)
}

/// Runs SQL through psql, panicking with the error.
pub async fn sql(pg: &PostgresServer, sql: &str) -> String {
    match pg.psql(sql).await {
        Ok(out) => out,
        Err(e) => panic!("psql failed: {e}\n{sql}"),
    }
}

/// A tokio-postgres client on the server.
pub async fn client(pg: &PostgresServer) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A running binary: stdout lines are collected as they come, stderr is kept.
pub struct Proc {
    child: Child,
    rx: mpsc::UnboundedReceiver<String>,
    /// Stdout lines received so far.
    pub lines: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

/// How a binary ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub lines: Vec<String>,
    pub stderr: String,
}

impl Finished {
    /// The stdout lines parsed as JSON.
    pub fn json(&self) -> Vec<Json> {
        self.lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The exit code (panics if killed by a signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal; stderr:\n{}", self.stderr))
    }
}

impl Proc {
    pub fn spawn(bin: &str, args: &[&str]) -> Proc {
        Proc::spawn_with_env(bin, args, &[])
    }

    /// Like [`Proc::spawn`], with extra environment variables (e.g. fault injection).
    pub fn spawn_with_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let (tx, rx) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout");
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc {
            child,
            rx,
            lines: Vec::new(),
            stderr,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until a stdout line (parsed as JSON) satisfies `pred`; returns it.
    pub async fn wait_line(&mut self, what: &str, pred: impl Fn(&Json) -> bool) -> Json {
        if let Some(found) = self
            .lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Json>(l).ok())
            .find(|j| pred(j))
        {
            return found;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(line)) => {
                    self.lines.push(line.clone());
                    let json: Json = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    if pred(&json) {
                        return json;
                    }
                }
                Ok(None) => panic!(
                    "exited before printing {what}; lines:\n{}\nstderr:\n{}",
                    self.lines.join("\n"),
                    self.stderr()
                ),
                Err(_) => panic!(
                    "no {what} within 60 s; lines:\n{}\nstderr:\n{}",
                    self.lines.join("\n"),
                    self.stderr()
                ),
            }
        }
    }

    /// Waits (bounded) for the process to exit and collects everything it printed.
    pub async fn finish(mut self) -> Finished {
        let status = match tokio::time::timeout(Duration::from_secs(120), self.child.wait()).await {
            Ok(s) => s.expect("wait"),
            Err(_) => panic!(
                "did not exit within 120 s; lines:\n{}\nstderr:\n{}",
                self.lines.join("\n"),
                self.stderr()
            ),
        };
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(5), self.rx.recv()).await
        {
            self.lines.push(line);
        }
        // Let the stderr reader catch up.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Finished {
            status,
            lines: self.lines.clone(),
            stderr: self.stderr(),
        }
    }

    /// SIGKILL, like a crash.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Whether it has exited already.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Runs a binary to completion.
pub async fn run(bin: &str, args: &[&str]) -> Finished {
    Proc::spawn(bin, args).finish().await
}

/// The position a mirror stored in its SQLite file.
pub fn mirror_position(path: &Path) -> Option<String> {
    if !path.exists() {
        return None;
    }
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    let _ = conn.busy_timeout(Duration::from_secs(2));
    conn.query_row(
        "SELECT value FROM _powersync_mirror_state WHERE key = 'checkpoint'",
        [],
        |r| r.get(0),
    )
    .ok()
}

/// Waits until the mirror's stored position satisfies `pred`.
pub async fn wait_position(proc: &mut Proc, path: &Path, pred: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(p) = mirror_position(path) {
            if pred(&p) {
                return p;
            }
        }
        if let Some(status) = proc.exited() {
            panic!("mirror exited ({status}); stderr:\n{}", proc.stderr());
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "mirror position not reached in 60 s; stderr:\n{}",
                proc.stderr()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every row of a SQLite query, each value rendered as `typeof:value` (blobs in hex).
pub fn sqlite_rows(path: &Path, query: &str) -> Vec<Vec<String>> {
    let conn = rusqlite::Connection::open(path).expect("open sqlite");
    let mut stmt = conn.prepare(query).expect("prepare");
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                    rusqlite::types::Value::Null => "null".to_string(),
                    rusqlite::types::Value::Integer(v) => format!("int:{v}"),
                    rusqlite::types::Value::Real(v) => format!("real:{v:?}"),
                    rusqlite::types::Value::Text(v) => format!("text:{v}"),
                    rusqlite::types::Value::Blob(v) => {
                        format!(
                            "blob:{}",
                            v.iter().map(|b| format!("{b:02x}")).collect::<String>()
                        )
                    }
                })
            })
            .collect()
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// The column names of a SQLite table.
pub fn sqlite_columns(path: &Path, table: &str) -> Vec<String> {
    sqlite_rows(
        path,
        &format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
    )
    .into_iter()
    .map(|r| r[0].trim_start_matches("text:").to_string())
    .collect()
}
