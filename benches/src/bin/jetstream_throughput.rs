//! Rows/s through NATS JetStream (`publish`) against `tail` to /dev/null on the same workload
//! and the same throwaway PostgreSQL in the same run, plus `consume` (stream → SQLite). The
//! example binaries run as child processes, as users run them, so this runner does not link
//! NATS.
//!
//! ```text
//! cargo build --release -p examples --features jetstream --bin tail --bin publish --bin consume
//! cargo run --release -p benches --bin jetstream_throughput -- [--rows N] [--tx-rows N]
//!     [--one-row-tx N] [--runs K] [--baseline-publish PATH] [--publish-arg ARG]...
//! ```
//!
//! Three phases, each timed from process start to the end of its work (the
//! `--exit-when-idle` wait is subtracted): the initial snapshot of `--rows` rows; a backlog of
//! `--rows` rows inserted in transactions of `--tx-rows` while the binaries were stopped; a
//! backlog of `--one-row-tx` one-row transactions. Each binary reads through its own
//! replication slot, so all read the same WAL. `--baseline-publish` runs another `publish`
//! binary (e.g. one built from an older commit) on every phase too, into its own stream, for
//! before/after ratios in the same run. CPU seconds are the binary's (user + system, reaped
//! child) and nats-server's during the binary's run. Needs `nats-server` (on `PATH`, or
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

#[derive(Parser, Debug)]
#[command(about = "Rows/s through NATS JetStream against tail to /dev/null")]
struct Args {
    /// Rows of the snapshot, and of the backlog of multi-row transactions.
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// Rows per transaction of the multi-row backlog.
    #[arg(long, default_value_t = 1000)]
    tx_rows: u64,
    /// One-row transactions of the last backlog.
    #[arg(long, default_value_t = 20_000)]
    one_row_tx: u64,
    /// Runs of each phase (fresh slots and stream each time); the median is reported.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Directory of the `tail`, `publish` and `consume` binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Another `publish` binary to measure on every phase too (a baseline build).
    #[arg(long, value_name = "PATH")]
    baseline_publish: Option<PathBuf>,
    /// An extra argument for the measured `publish` (repeat for several, e.g.
    /// `--publish-arg=--rows-per-message --publish-arg=1`).
    #[arg(long = "publish-arg", value_name = "ARG", allow_hyphen_values = true)]
    publish_args: Vec<String>,
    /// `--exit-when-idle` of every measured binary, subtracted from its elapsed time (raise
    /// it when the binaries run slowly, e.g. under valgrind: a binary that sees no change
    /// for this long after starting exits before the backlog arrives, which the runner then
    /// reports as an error).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.5)]
    idle: f64,
    /// `--exit-when-idle` of `consume` (subtracted likewise): applying a large snapshot unit
    /// keeps it from reading for a while, after which the next messages may take longer than
    /// `--idle` to arrive.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    consume_idle: f64,
}

/// What a phase moves.
#[derive(Debug, Clone, Copy)]
struct Phase {
    name: &'static str,
    rows: u64,
    transactions: Option<u64>,
}

/// The binaries measured in each phase, in run order.
const TAIL: usize = 0;
const PUBLISH: usize = 1;
const BASELINE: usize = 2;
const CONSUME: usize = 3;
const BINARIES: [&str; 4] = [
    "tail > /dev/null",
    "publish → JetStream",
    "baseline publish → JetStream",
    "consume JetStream → SQLite",
];

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
    if let Some(b) = &args.baseline_publish {
        if !b.exists() {
            return Err(format!("--baseline-publish {} not found", b.display()).into());
        }
    }
    let pg = PostgresServer::start().await?;
    let work = std::env::temp_dir().join(format!("jetstream-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = bench(&args, &bin_dir, &pg, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    let (phases, table) = result?;
    println!("machine: {}", machine());
    println!(
        "workload: `{TABLE}` (bigint key, int, text, float8, timestamptz, numeric); snapshot of \
         {} rows, then {} rows in transactions of {}, then {} one-row transactions; median of \
         {} run(s); publish args: {:?}",
        args.rows, args.rows, args.tx_rows, args.one_row_tx, args.runs, args.publish_args
    );
    println!(
        "{:<22} {:<30} {:>8} {:>10} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "phase", "binary", "seconds", "rows/s", "tx/s", "× tail", "bin CPU", "µs/row", "nats CPU"
    );
    for (phase, row) in phases.iter().zip(&table) {
        let tail = row[TAIL].as_ref().map(|x| x.elapsed.as_secs_f64());
        for (b, sample) in row.iter().enumerate() {
            let Some(x) = sample else { continue };
            let secs = x.elapsed.as_secs_f64().max(1e-9);
            let tx = phase
                .transactions
                .map_or_else(|| "-".to_string(), |t| format!("{:.0}", t as f64 / secs));
            let ratio = tail.map_or(f64::NAN, |t| t / secs);
            println!(
                "{:<22} {:<30} {:>8.2} {:>10.0} {:>9} {:>6.2}× {:>8.2}s {:>9.2} {:>8.2}s",
                phase.name,
                BINARIES[b],
                secs,
                phase.rows as f64 / secs,
                tx,
                ratio,
                x.client_cpu,
                x.client_cpu * 1e6 / phase.rows.max(1) as f64,
                x.nats_cpu
            );
        }
    }
    Ok(())
}

async fn bench(
    args: &Args,
    bin_dir: &Path,
    pg: &PostgresServer,
    work: &Path,
) -> Result<(Vec<Phase>, Vec<Vec<Option<Sample>>>)> {
    let phases = vec![
        Phase {
            name: "snapshot",
            rows: args.rows,
            transactions: None,
        },
        Phase {
            name: "multi-row tx",
            rows: args.rows,
            transactions: Some(args.rows.div_ceil(args.tx_rows.max(1))),
        },
        Phase {
            name: "one-row tx",
            rows: args.one_row_tx,
            transactions: Some(args.one_row_tx),
        },
    ];
    // samples[phase][binary] = one sample per run.
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); BINARIES.len()]; phases.len()];
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
        let slots = [
            format!("bench_tail_{run}"),
            format!("bench_publish_{run}"),
            format!("bench_baseline_{run}"),
        ];
        let checkpoint = work.join(format!("tail-{run}.checkpoint"));
        let db = work.join(format!("consume-{run}.sqlite"));
        let stream = format!("BENCH{run}");
        let idle = format!("{}", args.idle);
        let source = |slot: &str| -> Vec<String> {
            vec![
                pg.url(),
                "--publication".into(),
                PUBLICATION.into(),
                "--slot".into(),
                slot.into(),
                "--exit-when-idle".into(),
                idle.clone(),
            ]
        };
        let mut tail = source(&slots[0]);
        tail.extend(["--checkpoint-file".into(), checkpoint.display().to_string()]);
        let publish_to = |slot: &str, stream: &str| -> Vec<String> {
            let mut a = source(slot);
            a.extend([
                "--nats".into(),
                nats.url(),
                "--stream".into(),
                stream.into(),
            ]);
            a
        };
        let mut publish = publish_to(&slots[1], &stream);
        publish.extend(args.publish_args.iter().cloned());
        let mut baseline = publish_to(&slots[2], &format!("BASE{run}"));
        baseline.extend(["--subject-prefix".into(), "baseline".into()]);
        let consume = vec![
            "--nats".into(),
            nats.url(),
            "--stream".into(),
            stream.clone(),
            "--db".into(),
            db.display().to_string(),
            "--exit-when-idle".into(),
            format!("{}", args.consume_idle),
        ];
        let mut next = args.rows + 1;
        for (p, phase_samples) in samples.iter_mut().enumerate() {
            match p {
                0 => {}
                1 => {
                    // The backlog: every slot holds it while the binaries are stopped.
                    let end = next + args.rows - 1;
                    while next <= end {
                        let to = (next + args.tx_rows.max(1) - 1).min(end);
                        client
                            .batch_execute(&insert_rows_sql(TABLE, next, to))
                            .await?;
                        next = to + 1;
                    }
                }
                _ => {
                    let end = next + args.one_row_tx - 1;
                    while next <= end {
                        let to = (next + 999).min(end);
                        // One simple query, many explicit transactions of one row each.
                        let sql: String = (next..=to)
                            .map(|i| format!("BEGIN; {}; COMMIT;", insert_rows_sql(TABLE, i, i)))
                            .collect();
                        client.batch_execute(&sql).await?;
                        next = to + 1;
                    }
                }
            }
            let pause = Duration::from_secs_f64(args.idle);
            let expected = phases[p].rows;
            phase_samples[TAIL].push(timed(&bin_dir.join("tail"), &tail, true, &nats, pause)?.0);
            phase_samples[PUBLISH]
                .push(timed(&bin_dir.join("publish"), &publish, false, &nats, pause)?.0);
            if let Some(b) = &args.baseline_publish {
                let (sample, stderr) = timed(b, &baseline, false, &nats, pause)?;
                // One message per row (version 1): fewer means it stopped early.
                let stored = summary_after(&stderr, "published: ");
                if stored < expected {
                    return Err(format!(
                        "{}: the baseline publish stored {stored} messages for {expected} rows \
                         (it stopped before the backlog arrived? raise --idle)",
                        phases[p].name
                    )
                    .into());
                }
                phase_samples[BASELINE].push(sample);
            }
            let consume_pause = Duration::from_secs_f64(args.consume_idle);
            let (sample, stderr) = timed(
                &bin_dir.join("consume"),
                &consume,
                false,
                &nats,
                consume_pause,
            )?;
            // Every row through publish and consume: neither stopped early.
            let applied = summary_after(&stderr, "units, ");
            if applied != expected {
                return Err(format!(
                    "{}: consume applied {applied} of {expected} rows (publish or consume \
                     stopped before the backlog arrived? raise --idle); its log:\n{stderr}",
                    phases[p].name
                )
                .into());
            }
            phase_samples[CONSUME].push(sample);
        }
        let drops: String = slots
            .iter()
            .map(|s| {
                format!(
                    "SELECT pg_drop_replication_slot('{s}') FROM pg_replication_slots \
                     WHERE slot_name = '{s}';"
                )
            })
            .collect();
        let _ = client.batch_execute(&drops).await;
        let _ = std::fs::remove_file(&checkpoint);
        drop(nats);
    }
    let table = samples
        .into_iter()
        .map(|per_binary| {
            per_binary
                .into_iter()
                .map(|s| {
                    if s.is_empty() {
                        return None;
                    }
                    // The run with the median elapsed time, with its CPU figures.
                    let m = median(s.iter().map(|x| x.elapsed).collect());
                    s.iter().find(|x| x.elapsed == m).copied()
                })
                .collect()
        })
        .collect();
    Ok((phases, table))
}

/// One measured run: the elapsed time minus the idle wait, and the CPU seconds of the binary
/// and of nats-server meanwhile.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    elapsed: Duration,
    client_cpu: f64,
    nats_cpu: f64,
}

/// The number right after `marker` in the summary line of a binary's stderr (0 if none).
fn summary_after(stderr: &str, marker: &str) -> u64 {
    stderr
        .lines()
        .rev()
        .find_map(|l| {
            let rest = &l[l.find(marker)? + marker.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

/// Runs a binary to completion; its sample and its stderr (summary lines at `info`).
fn timed(
    bin: &Path,
    args: &[String],
    stdout_to_null: bool,
    nats: &NatsServer,
    idle: Duration,
) -> Result<(Sample, String)> {
    let nats_pid = nats.child.id().to_string();
    let before = (cpu_ticks("self"), cpu_ticks(&nats_pid));
    let started = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn,publish=info,consume=info")
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
    let sample = Sample {
        elapsed: elapsed.saturating_sub(idle),
        // Reaped children of this process: the binary just run.
        client_cpu: seconds(before.0.map(|t| t.1), after.0.map(|t| t.1)),
        nats_cpu: seconds(before.1.map(|t| t.0), after.1.map(|t| t.0)),
    };
    Ok((sample, String::from_utf8_lossy(&out.stderr).into_owned()))
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
