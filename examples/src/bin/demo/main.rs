//! `demo`: the whole story in one command, on a throwaway PostgreSQL.
//!
//! 1. starts a private PostgreSQL (the core test kit's starter: Debian's PostgreSQL 15 or
//!    `$POWERSYNC_PG_BIN`), creates a publication `powersync` FOR ALL TABLES and two tables
//!    covering the common types, and loads `--rows` rows;
//! 2. runs a pgbench-like workload of `--updates` random transactions (updates, some touching
//!    the key, inserts, deletes, appends) while the `mirror` binary (next to this one) copies
//!    the database into a SQLite file;
//! 3. SIGKILLs the mirror in the middle of the snapshot and again in the middle of streaming,
//!    restarting it each time;
//! 4. once the workload is done, lets the mirror catch up (`--exit-when-idle`), then compares
//!    every row of every table on both sides through one canonical text form per type, and
//!    prints a summary. Exit status 0 only when there is no mismatch.

#![allow(clippy::print_stdout)]

mod compare;
mod error;

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use examples::progress::Summary;
use powersync_source_testkit::PostgresServer;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_postgres::{Client, NoTls};

use crate::compare::compare;
use crate::error::{fail, Context, DemoError};

/// Mirror a live PostgreSQL database into SQLite, crash the mirror twice, and prove the copy
/// is exact.
#[derive(Debug, Parser)]
#[command(name = "demo", version)]
struct Args {
    /// Rows loaded into `items` before the mirror starts.
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// Random write transactions run while the mirror runs.
    #[arg(long, default_value_t = 20_000)]
    updates: u64,
    /// Keep the SQLite file here instead of a temporary directory.
    #[arg(long, value_name = "PATH")]
    sqlite: Option<PathBuf>,
    /// Do not kill the mirror during the snapshot (only during streaming).
    #[arg(long)]
    no_snapshot_kill: bool,
    /// Rows per snapshot chunk (the snapshot resumes from the last finished chunk).
    #[arg(long, default_value_t = 20_000)]
    chunk_rows: u64,
    /// Seconds without changes after which the final mirror run exits.
    #[arg(long, default_value_t = 2.0)]
    idle_seconds: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    examples::cli::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        match run(args).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("demo: {e}");
                ExitCode::from(e.status)
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

/// The columns of `items` as the load and the workload generate them, from `g`.
const ITEM_COLUMNS: &str =
    "id, qty, name, code, active, score, price, updated_at, day, ref, attrs, payload, tags, doc";
const ITEM_VALUES: &str = "g, \
     CASE WHEN g % 17 = 0 THEN NULL ELSE (g * 7919 % 100000)::int END, \
     'item ' || g || ' ' || md5(g::text), \
     'C-' || (g % 1000), \
     CASE WHEN g % 13 = 0 THEN NULL ELSE g % 2 = 0 END, \
     CASE WHEN g % 11 = 0 THEN NULL ELSE g * 1.25 + random() END, \
     round((random() * 100000)::numeric, 2), \
     timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second 1234 microseconds', \
     date '2000-01-01' + (g % 9000)::int, \
     gen_random_uuid(), \
     jsonb_build_object('g', g, 'even', g % 2 = 0, 'tags', jsonb_build_array('x', g % 7, 'ü')), \
     decode(md5(g::text) || md5((g + 1)::text), 'hex'), \
     ARRAY['t' || (g % 5), 'quote\"' || (g % 3), NULL], \
     CASE WHEN g % 100 = 0 THEN \
        (SELECT string_agg(md5(g::text || ':' || i), '') FROM generate_series(1, 250) i) END";

const SCHEMA_SQL: &str = "
CREATE TABLE items (
    id         bigint PRIMARY KEY,
    qty        integer,
    name       text,
    code       varchar(20),
    active     boolean,
    score      double precision,
    price      numeric(12,2),
    updated_at timestamptz,
    day        date,
    ref        uuid,
    attrs      jsonb,
    payload    bytea,
    tags       text[],
    doc        text
);
CREATE TABLE events (
    id      bigserial PRIMARY KEY,
    item_id bigint,
    kind    text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now(),
    note    text
);
CREATE PUBLICATION powersync FOR ALL TABLES;
";

async fn run(args: Args) -> Result<ExitCode, DemoError> {
    let mirror_bin = mirror_binary()?;
    println!("demo: starting a throwaway PostgreSQL…");
    let pg = PostgresServer::builder()
        .setting("max_wal_size", "1GB")
        .start()
        .await
        .map_err(|e| DemoError {
            status: if e.is_missing() { 2 } else { 1 },
            message: format!("cannot start PostgreSQL: {e}"),
        })?;
    println!(
        "demo: PostgreSQL {} on port {} (data in {})",
        pg.major_version(),
        pg.port(),
        pg.temp_dir().display()
    );
    let client = connect(&pg.url()).await?;
    client
        .batch_execute(SCHEMA_SQL)
        .await
        .context("creating the schema")?;

    let load_started = Instant::now();
    let batch = 50_000u64;
    let mut from = 1u64;
    while from <= args.rows {
        let to = (from + batch - 1).min(args.rows);
        client
            .execute(
                &format!(
                    "INSERT INTO items ({ITEM_COLUMNS}) SELECT {ITEM_VALUES} \
                     FROM generate_series($1::bigint, $2::bigint) g"
                ),
                &[&(from as i64), &(to as i64)],
            )
            .await
            .context("loading items")?;
        client
            .execute(
                "INSERT INTO events (item_id, kind, note) \
                 SELECT g, 'created', 'loaded' FROM generate_series($1::bigint, $2::bigint, 10) g",
                &[&(from as i64), &(to as i64)],
            )
            .await
            .context("loading events")?;
        from = to + 1;
    }
    client.batch_execute("ANALYZE").await.context("ANALYZE")?;
    println!(
        "demo: loaded {} rows in {:.1} s",
        args.rows,
        load_started.elapsed().as_secs_f64()
    );

    let tmp = tempfile::Builder::new()
        .prefix("powersync-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let sqlite = args
        .sqlite
        .clone()
        .unwrap_or_else(|| tmp.path().join("mirror.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", sqlite.display()));
    }
    let url = format!(
        "{}?snapshot_chunk_rows={}",
        pg.url(),
        args.chunk_rows.max(1)
    );
    println!("demo: mirroring into {}", sqlite.display());

    // The workload runs from the start: during the snapshot, across both kills, until done.
    let workload = Workload::start(&pg.url(), args.rows, args.updates).await?;
    let started = Instant::now();
    let mut runs = 0u32;
    let mut summaries: Vec<Summary> = Vec::new();

    // Run 1: killed during the snapshot (once a chunk is stored).
    let mut mirror = MirrorRun::spawn(&mirror_bin, &url, &sqlite, None, &mut runs)?;
    let mut snapshot_killed = false;
    if !args.no_snapshot_kill {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            match stored_position(&sqlite) {
                Some(p) if p.starts_with("snapshot:") => {
                    mirror.kill().await;
                    snapshot_killed = true;
                    println!(
                        "demo: killed the mirror (SIGKILL) during the snapshot; restarting it"
                    );
                    break;
                }
                Some(_) => {
                    println!("demo: the snapshot finished before it could be interrupted");
                    break;
                }
                None => {}
            }
            if let Some(status) = mirror.try_exit()? {
                return Err(fail(format!("the mirror exited early ({status})")));
            }
            if Instant::now() > deadline {
                return Err(fail("the snapshot did not store a chunk within 300 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if snapshot_killed {
        summaries.extend(mirror.summary());
        mirror = MirrorRun::spawn(&mirror_bin, &url, &sqlite, None, &mut runs)?;
    }

    // Killed again while streaming, once half of the workload is done.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let streaming = stored_position(&sqlite).is_some_and(|p| p.starts_with("postgres:"));
        if streaming && workload.done() * 2 >= args.updates {
            break;
        }
        if let Some(status) = mirror.try_exit()? {
            return Err(fail(format!("the mirror exited early ({status})")));
        }
        if Instant::now() > deadline {
            return Err(fail("the mirror did not reach streaming within 600 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mirror.kill().await;
    summaries.extend(mirror.summary());
    println!(
        "demo: killed the mirror (SIGKILL) while streaming ({} of {} transactions written); \
         restarting it in 2 s",
        workload.done(),
        args.updates
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let final_started = Instant::now();
    let mut mirror = MirrorRun::spawn(
        &mirror_bin,
        &url,
        &sqlite,
        Some(args.idle_seconds),
        &mut runs,
    )?;

    let written = workload.finish().await?;
    println!(
        "demo: workload done: {} transactions ({} row changes) in {:.1} s",
        written.transactions,
        written.rows,
        started.elapsed().as_secs_f64()
    );
    let status = tokio::time::timeout(Duration::from_secs(600), mirror.child.wait())
        .await
        .map_err(|_| fail("the mirror did not catch up within 600 s"))?
        .context("waiting for the mirror")?;
    mirror.drain().await;
    if !status.success() {
        return Err(fail(format!("the mirror failed ({status})")));
    }
    let final_summary = mirror.summary();
    summaries.extend(final_summary);
    let catch_up = final_started.elapsed().as_secs_f64();

    println!("demo: comparing PostgreSQL and SQLite row by row…");
    let report = compare(&client, &sqlite).await?;
    let snapshot = summaries
        .iter()
        .filter(|s| s.snapshot_rows > 0 && s.snapshot_seconds > 0.0)
        .max_by(|a, b| a.snapshot_rate().total_cmp(&b.snapshot_rate()))
        .copied()
        .unwrap_or_default();
    let stream = final_summary.unwrap_or_default();

    println!();
    println!("summary");
    for (table, rows) in &report.rows {
        println!("  {table:<12} {rows} rows");
    }
    println!(
        "  snapshot     {} rows in {:.1} s: {:.0} rows/s{}",
        snapshot.snapshot_rows,
        snapshot.snapshot_seconds,
        snapshot.snapshot_rate(),
        if snapshot_killed {
            " (run resumed after a kill)"
        } else {
            ""
        }
    );
    let peak = if stream.peak_stream_rows_per_second > stream.stream_rate() {
        format!(", {:.0} rows/s at best", stream.peak_stream_rows_per_second)
    } else {
        String::new()
    };
    println!(
        "  streaming    {} rows in {} transactions: {:.0} rows/s{peak} (final run: the backlog \
         after the kill, then the live workload; idle {:.1} s after the restart)",
        stream.stream_rows,
        stream.stream_transactions,
        stream.stream_rate(),
        catch_up
    );
    println!(
        "  lag          max {:.2} s (while catching up), last {:.2} s",
        stream.max_lag_seconds, stream.last_lag_seconds
    );
    println!("  mirror runs  {runs} (killed with SIGKILL: {})", runs - 1);
    println!("  mismatches   {}", report.mismatches);
    if report.mismatches == 0 {
        println!("demo: the SQLite mirror equals PostgreSQL row for row");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("demo: MISMATCH — see the differences above");
        Ok(ExitCode::from(1))
    }
}

/// The `mirror` binary next to this executable.
fn mirror_binary() -> Result<PathBuf, DemoError> {
    let exe = std::env::current_exe().context("locating the demo executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| fail("the demo executable has no directory"))?;
    let mirror = dir.join(format!("mirror{}", std::env::consts::EXE_SUFFIX));
    if !mirror.exists() {
        return Err(DemoError {
            status: 2,
            message: format!(
                "{} not found: build all the example binaries (`cargo build --release -p examples --bins`)",
                mirror.display()
            ),
        });
    }
    Ok(mirror)
}

async fn connect(url: &str) -> Result<Client, DemoError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection closed: {e}");
        }
    });
    Ok(client)
}

/// The position the mirror stored, read without disturbing it (WAL readers don't block).
fn stored_position(sqlite: &Path) -> Option<String> {
    if !sqlite.exists() {
        return None;
    }
    let conn = rusqlite::Connection::open_with_flags(
        sqlite,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    let _ = conn.busy_timeout(Duration::from_secs(2));
    conn.query_row(
        "SELECT value FROM _powersync_mirror_state WHERE key = 'checkpoint'",
        [],
        |r| r.get::<_, String>(0),
    )
    .ok()
}

/// One run of the mirror as a child process; its stderr is forwarded with a prefix and its
/// summary lines are kept.
struct MirrorRun {
    child: Child,
    summary: Arc<Mutex<Option<Summary>>>,
    forward: Option<tokio::task::JoinHandle<()>>,
}

impl MirrorRun {
    fn spawn(
        bin: &Path,
        url: &str,
        sqlite: &Path,
        idle: Option<f64>,
        runs: &mut u32,
    ) -> Result<MirrorRun, DemoError> {
        *runs += 1;
        let run = *runs;
        let mut cmd = Command::new(bin);
        cmd.arg(url)
            .arg(sqlite)
            .args(["--progress-interval", "2"])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(idle) = idle {
            cmd.arg("--exit-when-idle").arg(idle.to_string());
        }
        let mut child = cmd.spawn().context("starting the mirror")?;
        println!(
            "demo: mirror run {run} started (pid {})",
            child.id().unwrap_or(0)
        );
        let summary = Arc::new(Mutex::new(None));
        let forward = child.stderr.take().map(|stderr| {
            let summary = summary.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(json) = line.strip_prefix("mirror: summary ") {
                        if let Ok(s) = serde_json::from_str::<SummaryJson>(json) {
                            if let Ok(mut slot) = summary.lock() {
                                *slot = Some(s.into());
                            }
                        }
                    }
                    eprintln!("  mirror#{run} | {line}");
                }
            })
        });
        Ok(MirrorRun {
            child,
            summary,
            forward,
        })
    }

    fn try_exit(&mut self) -> Result<Option<std::process::ExitStatus>, DemoError> {
        self.child.try_wait().context("checking the mirror")
    }

    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.drain().await;
    }

    async fn drain(&mut self) {
        if let Some(f) = self.forward.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), f).await;
        }
    }

    fn summary(&self) -> Option<Summary> {
        self.summary.lock().ok().and_then(|s| *s)
    }
}

#[derive(serde::Deserialize)]
struct SummaryJson {
    snapshot_rows: u64,
    snapshot_seconds: f64,
    stream_rows: u64,
    stream_transactions: u64,
    stream_seconds: f64,
    #[serde(default)]
    peak_stream_rows_per_second: f64,
    max_lag_seconds: f64,
    last_lag_seconds: f64,
}

impl From<SummaryJson> for Summary {
    fn from(s: SummaryJson) -> Self {
        Summary {
            snapshot_rows: s.snapshot_rows,
            snapshot_seconds: s.snapshot_seconds,
            stream_rows: s.stream_rows,
            stream_transactions: s.stream_transactions,
            stream_seconds: s.stream_seconds,
            peak_stream_rows_per_second: s.peak_stream_rows_per_second,
            max_lag_seconds: s.max_lag_seconds,
            last_lag_seconds: s.last_lag_seconds,
        }
    }
}

/// The pgbench-like writer.
struct Workload {
    done: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<Written, DemoError>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Written {
    transactions: u64,
    rows: u64,
}

impl Workload {
    async fn start(url: &str, rows: u64, transactions: u64) -> Result<Workload, DemoError> {
        let mut client = connect(url).await?;
        let done = Arc::new(AtomicU64::new(0));
        let done2 = done.clone();
        let task = tokio::spawn(async move {
            let update = client
                .prepare(
                    "UPDATE items SET qty = coalesce(qty, 0) + 1, score = $2, \
                     price = $3::text::numeric, updated_at = now(), \
                     attrs = coalesce(attrs, '{}'::jsonb) || jsonb_build_object('n', $4::int), \
                     tags = tags || $5::text WHERE id = $1",
                )
                .await
                .context("preparing the workload")?;
            let touch = client
                .prepare("UPDATE items SET active = NOT coalesce(active, false) WHERE id = $1")
                .await
                .context("preparing the workload")?;
            let set_doc = client
                .prepare("UPDATE items SET doc = $2, payload = NULL WHERE id = $1")
                .await
                .context("preparing the workload")?;
            let rekey = client
                .prepare("UPDATE items SET id = $2 WHERE id = $1")
                .await
                .context("preparing the workload")?;
            let insert = client
                .prepare(&format!(
                    "INSERT INTO items ({ITEM_COLUMNS}) SELECT {ITEM_VALUES} \
                     FROM (SELECT $1::bigint AS g) s"
                ))
                .await
                .context("preparing the workload")?;
            let delete = client
                .prepare("DELETE FROM items WHERE id = $1")
                .await
                .context("preparing the workload")?;
            let event = client
                .prepare("INSERT INTO events (item_id, kind, note) VALUES ($1, $2, $3)")
                .await
                .context("preparing the workload")?;
            let mut rng = rand::rngs::StdRng::from_entropy();
            let mut next_id = rows as i64 + 1;
            let mut written = Written::default();
            for _ in 0..transactions {
                let tx = client.transaction().await.context("workload BEGIN")?;
                let statements = rng.gen_range(1..=4);
                for _ in 0..statements {
                    let id = if next_id > 1 {
                        rng.gen_range(1..next_id)
                    } else {
                        1
                    };
                    let n = match rng.gen_range(0..100) {
                        0..=49 => {
                            let score: f64 = rng.gen::<f64>() * 1e4;
                            let price = format!(
                                "{}.{:02}",
                                rng.gen_range(0..100_000),
                                rng.gen_range(0..100)
                            );
                            let tag = format!("w{}", rng.gen_range(0..10));
                            tx.execute(
                                &update,
                                &[&id, &score, &price, &rng.gen_range(0..1000i32), &tag],
                            )
                            .await
                        }
                        50..=59 => tx.execute(&touch, &[&id]).await,
                        60..=61 => {
                            let doc = format!("rewritten {}", rng.gen::<u64>());
                            tx.execute(&set_doc, &[&id, &doc]).await
                        }
                        62..=63 => {
                            next_id += 1;
                            tx.execute(&rekey, &[&id, &(next_id - 1)]).await
                        }
                        64..=79 => {
                            next_id += 1;
                            tx.execute(&insert, &[&(next_id - 1)]).await
                        }
                        80..=89 => tx.execute(&delete, &[&id]).await,
                        _ => {
                            let note = format!("note {}", rng.gen::<u32>());
                            tx.execute(&event, &[&id, &"touched", &note]).await
                        }
                    }
                    .context("workload statement")?;
                    written.rows += n;
                }
                tx.commit().await.context("workload COMMIT")?;
                written.transactions += 1;
                done2.fetch_add(1, Ordering::Relaxed);
            }
            Ok(written)
        });
        Ok(Workload { done, task })
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    async fn finish(self) -> Result<Written, DemoError> {
        self.task.await.context("workload task")?
    }
}
