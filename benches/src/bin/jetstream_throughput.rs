//! Rows/s through NATS JetStream (`publish`) against `tail` to /dev/null on the same workload
//! and the same throwaway PostgreSQL, plus `consume` (stream → SQLite). The example binaries
//! run as child processes, as users run them, so this runner does not link NATS.
//!
//! ```text
//! cargo build --release -p examples --features jetstream --bin tail --bin publish --bin consume
//! cargo run --release -p benches --bin jetstream_throughput -- [--rows N] [--tx-rows N] [--runs K]
//! ```
//!
//! Phases, each timed from process start to the end of its work (the `--exit-when-idle` wait
//! is subtracted): the initial snapshot of `--rows` rows, then the catch-up on a backlog of
//! `--rows` rows inserted in transactions of `--tx-rows` while the binaries were stopped. Each
//! binary reads through its own replication slot. Needs `nats-server` (on `PATH`, or
//! `/usr/sbin/nats-server`).

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use benches::{cpu_ticks, insert_rows_sql, machine, median, rows_table_ddl, TICKS_PER_SECOND};
use clap::Parser;
use powersync_source_testkit::{self as testkit, PostgresServer};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const TABLE: &str = "bench_rows";
const PUBLICATION: &str = "bench_pub";
/// `--exit-when-idle` of every measured run; subtracted from the elapsed time.
const IDLE: Duration = Duration::from_millis(500);

#[derive(Parser, Debug)]
#[command(about = "Rows/s through NATS JetStream against tail to /dev/null")]
struct Args {
    /// Rows of the snapshot, and of the streamed backlog.
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// Rows per streamed transaction.
    #[arg(long, default_value_t = 1000)]
    tx_rows: u64,
    /// Runs of each phase (fresh slots and stream each time); the median is reported.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Directory of the `tail`, `publish` and `consume` binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .ok_or("no directory for the binaries")?,
    };
    for bin in ["tail", "publish", "consume"] {
        if !bin_dir.join(bin).exists() {
            return Err(format!(
                "{} not found; build it with `cargo build --release -p examples --features \
                 jetstream --bin tail --bin publish --bin consume`",
                bin_dir.join(bin).display()
            )
            .into());
        }
    }
    let pg = PostgresServer::start().await?;
    let work = std::env::temp_dir().join(format!("jetstream-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = bench(&args, &bin_dir, &pg, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    let table = result?;
    println!("machine: {}", machine());
    println!(
        "workload: {} rows of `{TABLE}` (bigint key, int, text, float8, timestamptz, numeric); \
         streamed in transactions of {} rows; median of {} run(s)",
        args.rows, args.tx_rows, args.runs
    );
    println!(
        "{:<46} {:>9} {:>10} {:>11} {:>11}",
        "phase", "seconds", "rows/s", "binary CPU", "nats CPU"
    );
    for (name, x) in table {
        println!(
            "{name:<46} {:>9.2} {:>10.0} {:>10.2}s {:>10.2}s",
            x.elapsed.as_secs_f64(),
            args.rows as f64 / x.elapsed.as_secs_f64().max(1e-9),
            x.client_cpu,
            x.nats_cpu
        );
    }
    Ok(())
}

async fn bench(
    args: &Args,
    bin_dir: &Path,
    pg: &PostgresServer,
    work: &Path,
) -> Result<Vec<(String, Sample)>> {
    let names = [
        "snapshot: tail > /dev/null",
        "snapshot: publish → JetStream",
        "snapshot: consume JetStream → SQLite",
        "streaming backlog: tail > /dev/null",
        "streaming backlog: publish → JetStream",
        "streaming backlog: consume JetStream → SQLite",
    ];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); names.len()];
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    for run in 0..args.runs {
        let nats = NatsServer::start(&work.join(format!("nats-{run}")))?;
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {TABLE}; DROP PUBLICATION IF EXISTS {PUBLICATION};
                 {}; CREATE PUBLICATION {PUBLICATION} FOR TABLE {TABLE}; {};",
                rows_table_ddl(TABLE),
                insert_rows_sql(TABLE, 1, args.rows)
            ))
            .await?;
        let tail_slot = format!("bench_tail_{run}");
        let publish_slot = format!("bench_publish_{run}");
        let checkpoint = work.join(format!("tail-{run}.checkpoint"));
        let db = work.join(format!("consume-{run}.sqlite"));
        let stream = format!("BENCH{run}");
        let tail = |slot: &str| -> Vec<String> {
            vec![
                pg.url(),
                "--publication".into(),
                PUBLICATION.into(),
                "--slot".into(),
                slot.into(),
                "--checkpoint-file".into(),
                checkpoint.display().to_string(),
                "--exit-when-idle".into(),
                format!("{}", IDLE.as_secs_f64()),
            ]
        };
        let publish = vec![
            pg.url(),
            "--publication".into(),
            PUBLICATION.into(),
            "--slot".into(),
            publish_slot.clone(),
            "--nats".into(),
            nats.url(),
            "--stream".into(),
            stream.clone(),
            "--exit-when-idle".into(),
            format!("{}", IDLE.as_secs_f64()),
        ];
        let consume = vec![
            "--nats".into(),
            nats.url(),
            "--stream".into(),
            stream.clone(),
            "--db".into(),
            db.display().to_string(),
            "--exit-when-idle".into(),
            format!("{}", IDLE.as_secs_f64()),
        ];
        samples[0].push(timed(
            &bin_dir.join("tail"),
            &tail(&tail_slot),
            true,
            &nats,
        )?);
        samples[1].push(timed(&bin_dir.join("publish"), &publish, false, &nats)?);
        samples[2].push(timed(&bin_dir.join("consume"), &consume, false, &nats)?);
        // The backlog: both slots hold it while the binaries are stopped.
        let mut from = args.rows + 1;
        let end = 2 * args.rows;
        while from <= end {
            let to = (from + args.tx_rows.max(1) - 1).min(end);
            client
                .batch_execute(&insert_rows_sql(TABLE, from, to))
                .await?;
            from = to + 1;
        }
        samples[3].push(timed(
            &bin_dir.join("tail"),
            &tail(&tail_slot),
            true,
            &nats,
        )?);
        samples[4].push(timed(&bin_dir.join("publish"), &publish, false, &nats)?);
        samples[5].push(timed(&bin_dir.join("consume"), &consume, false, &nats)?);
        let _ = client
            .batch_execute(&format!(
                "SELECT pg_drop_replication_slot('{tail_slot}');
                 SELECT pg_drop_replication_slot('{publish_slot}');"
            ))
            .await;
        let _ = std::fs::remove_file(&checkpoint);
        drop(nats);
    }
    Ok(names
        .iter()
        .zip(samples)
        .map(|(n, s)| {
            // The run with the median elapsed time, with its CPU figures.
            let m = median(s.iter().map(|x| x.elapsed).collect());
            let pick = s
                .iter()
                .find(|x| x.elapsed == m)
                .copied()
                .unwrap_or_default();
            (n.to_string(), pick)
        })
        .collect())
}

/// One measured run: the elapsed time minus the idle wait, and the CPU seconds of the binary
/// and of nats-server meanwhile.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    elapsed: Duration,
    client_cpu: f64,
    nats_cpu: f64,
}

/// Runs a binary to completion.
fn timed(bin: &Path, args: &[String], stdout_to_null: bool, nats: &NatsServer) -> Result<Sample> {
    let nats_pid = nats.child.id().to_string();
    let before = (cpu_ticks("self"), cpu_ticks(&nats_pid));
    let started = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(if stdout_to_null {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stderr(Stdio::piped())
        .output()?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let after = (cpu_ticks("self"), cpu_ticks(&nats_pid));
    let seconds = |b: Option<u64>, a: Option<u64>| match (b, a) {
        (Some(b), Some(a)) => a.saturating_sub(b) as f64 / TICKS_PER_SECOND,
        _ => f64::NAN,
    };
    Ok(Sample {
        elapsed: elapsed.saturating_sub(IDLE),
        // Reaped children of this process: the binary just run.
        client_cpu: seconds(before.0.map(|t| t.1), after.0.map(|t| t.1)),
        nats_cpu: seconds(before.1.map(|t| t.0), after.1.map(|t| t.0)),
    })
}

/// A throwaway `nats-server -js` (killed on drop).
struct NatsServer {
    child: Child,
    port: u16,
}

impl NatsServer {
    fn start(dir: &Path) -> Result<NatsServer> {
        let port = testkit::free_port()?;
        let bin = ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run nats-server: {e}"))?;
        let mut server = NatsServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("nats-server exited: {status}").into());
            }
            if Instant::now() > deadline {
                return Err("nats-server did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
