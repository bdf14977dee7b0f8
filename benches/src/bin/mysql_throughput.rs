//! End-to-end throughput of the MariaDB connector against the server's own tools on the same
//! throwaway server and the same rows, printed as ratios:
//!
//! - **snapshot**: the connector's `start(Beginning)` until its snapshot is done, against
//!   `mariadb --quick -N -B -e "SELECT * FROM …" > /dev/null` (unbuffered text dump of the same
//!   rows);
//! - **streaming**: the connector resuming from a checkpoint and reading `--rows` inserted
//!   rows, against `mariadb-binlog --read-from-remote-server` reading the same binlog range to
//!   `/dev/null` (raw events, rows left as base64 `BINLOG` statements: no value decoding), and,
//!   for reference, `mariadb-binlog -v --base64-output=DECODE-ROWS`, which decodes every row
//!   value to text as the connector does.
//!
//! Each measurement alternates connector and tool runs in the same sitting. Besides rows/s it
//! prints CPU time per row: the connector's (this process's user + system time while it runs,
//! i.e. the connector and the loop counting its rows) and each tool's (the child's user +
//! system time), from `/proc` (clock ticks, so figures under ~20 ms of CPU are coarse).
//!
//! ```text
//! cargo run --release -p benches --features mysql --bin mysql-throughput -- [--rows N] [--runs K]
//!     [--phases snapshot,streaming]
//! ```

#![allow(clippy::print_stdout)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use benches::{machine, median};
use clap::Parser;
use futures::StreamExt;
use powersync_source_core::position::BinlogPosition;
use powersync_source_core::{
    ChangeEvent, ChangeSource, Checkpoint, Position, SnapshotProgress, StartFrom, TableName,
};
use powersync_source_mysql::{MySqlConfig, MySqlSource};
use powersync_source_testkit::MariaDbServer;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Parser, Debug)]
#[command(about = "MariaDB connector throughput against mariadb / mariadb-binlog")]
struct Args {
    /// Rows snapshotted, and rows streamed.
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// Rows per streamed transaction.
    #[arg(long, default_value_t = 1000)]
    tx_rows: u64,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Phases to run, comma-separated (`streaming` alone still takes one untimed snapshot for
    /// its starting checkpoint).
    #[arg(long, value_delimiter = ',', default_value = "snapshot,streaming")]
    phases: Vec<String>,
}

const DDL: &str = "CREATE TABLE test.bench_rows (id BIGINT PRIMARY KEY, n INT NOT NULL, \
    s VARCHAR(64) NOT NULL, f DOUBLE NULL, ts DATETIME(6) NOT NULL, amount DECIMAL(12,2) NOT NULL)";

/// Rows `from..to` (1-based sequence numbers from MariaDB's sequence engine).
fn insert_sql(from: u64, to: u64) -> String {
    format!(
        "INSERT INTO test.bench_rows SELECT seq, seq % 100000, MD5(seq), \
         IF(seq % 50 = 0, NULL, seq * 1.25), TIMESTAMP('2024-01-01') + INTERVAL seq SECOND, \
         seq / 100 FROM test.seq_{from}_to_{to}"
    )
}

fn source(port: u16) -> Result<MySqlSource> {
    Ok(MySqlSource::new(MySqlConfig::parse(&format!(
        "mariadb://root@127.0.0.1:{port}/test?server_id=777"
    ))?)
    .with_tables(vec![TableName::new("test", "bench_rows")]))
}

/// Where the host's loop (the code taking batches off the stream) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    /// A task spawned on the runtime's workers, as the PostgreSQL runner's null sink: the
    /// stream's task and the loop usually share a worker, so a row is freed on the thread that
    /// allocated it.
    Task,
    /// The body of `#[tokio::main]` (`block_on` on the main thread, outside the workers): every
    /// batch crosses threads, and with glibc's allocator every row is freed on another thread
    /// than the one that allocated it.
    Main,
}

/// Runs `f` where `host` says.
async fn on<T: Send + 'static>(
    host: Host,
    f: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    match host {
        Host::Task => tokio::spawn(f).await?,
        Host::Main => f.await,
    }
}

/// The connector's snapshot: rows and time until `Done`, and the checkpoint it ends at.
async fn connector_snapshot(port: u16, host: Host) -> Result<(u64, Duration, Checkpoint)> {
    on(host, async move {
        let source = source(port)?;
        let started = Instant::now();
        let mut stream = source.start(StartFrom::Beginning).await?;
        let mut rows = 0;
        loop {
            let batch = tokio::time::timeout(TIMEOUT, stream.next())
                .await?
                .ok_or("stream ended")??;
            for e in batch.events {
                match e {
                    ChangeEvent::Row(_) => rows += 1,
                    ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint }) => {
                        return Ok((rows, started.elapsed(), checkpoint))
                    }
                    _ => {}
                }
            }
        }
    })
    .await
}

/// The connector streaming `want` rows from `from`.
async fn connector_stream(port: u16, from: Checkpoint, want: u64, host: Host) -> Result<Duration> {
    on(host, async move {
        let source = source(port)?;
        let started = Instant::now();
        let mut stream = source.start(StartFrom::Checkpoint(from)).await?;
        let mut rows = 0;
        while rows < want {
            let batch = tokio::time::timeout(TIMEOUT, stream.next())
                .await?
                .ok_or("stream ended")??;
            rows += batch
                .events
                .iter()
                .filter(|e| matches!(e, ChangeEvent::Row(_)))
                .count() as u64;
        }
        Ok(started.elapsed())
    })
    .await
}

/// CPU time so far, from `/proc/self/stat`: (this process's user + system, its waited-for
/// children's user + system).
fn cpu_times() -> (Duration, Duration) {
    let times = stat_times("self");
    (times[0] + times[1], times[2] + times[3])
}

/// utime, stime, cutime and cstime of `/proc/<pid>/stat` (fields 14–17), zero where unreadable.
fn stat_times(pid: &str) -> [Duration; 4] {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime is field 14 (index 11 here).
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let tick = Duration::from_secs(1) / clock_ticks();
    std::array::from_fn(|i| tick * fields.get(11 + i).copied().unwrap_or(0) as u32)
}

/// The server's CPU time so far (user + system), from `/proc/<pid>/stat` of the `mariadbd`
/// whose command line names the throwaway server's data directory; zero if it is not found.
fn server_cpu(server: &MariaDbServer) -> Duration {
    static PID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let pid = PID.get_or_init(|| {
        let dir = server.data_dir().to_string_lossy().into_owned();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("mariadbd") || cmdline.contains("mysqld"))
                .then_some(())
                .filter(|_| cmdline.contains(&dir))
                .map(|_| name)
        })
    });
    let Some(pid) = pid else {
        return Duration::ZERO;
    };
    let times = stat_times(pid);
    times[0] + times[1]
}

/// `sysconf(_SC_CLK_TCK)` (through `getconf`; 100 on Linux unless it says otherwise).
fn clock_ticks() -> u32 {
    static TICKS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Wall time and this process's CPU time of `f`.
async fn timed_cpu<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<(T, Duration)> {
    let before = cpu_times().0;
    let out = f.await?;
    Ok((out, cpu_times().0.saturating_sub(before)))
}

/// mysql_async alone reading the table with the text protocol (`query_iter`) or the binary
/// protocol (`exec_iter`), rows dropped unconverted: which protocol costs a client less per
/// row, and what the driver alone costs next to the connector's own snapshot reader
/// (`src/client`, binary protocol), which converts every value too. Returns the CPU time.
async fn driver_read(server: &MariaDbServer, binary: bool) -> Result<(Duration, Duration)> {
    use powersync_source_mysql::mysql_async::prelude::Queryable;
    let config = MySqlConfig::parse(&format!("mariadb://root@127.0.0.1:{}/test", server.port()))?;
    let mut conn = powersync_source_mysql::connect_sql(&config).await?;
    let sql = "SELECT * FROM test.bench_rows";
    let before = cpu_times().0;
    let started = Instant::now();
    let mut rows = 0u64;
    if binary {
        let mut result = conn.exec_iter(sql, ()).await?;
        while let Some(row) = result.next().await? {
            std::hint::black_box(row);
            rows += 1;
        }
    } else {
        let mut result = conn.query_iter(sql).await?;
        while let Some(row) = result.next().await? {
            std::hint::black_box(row);
            rows += 1;
        }
    }
    let cpu = cpu_times().0.saturating_sub(before);
    std::hint::black_box(rows);
    Ok((started.elapsed(), cpu))
}

fn run_tool(cmd: &mut Command) -> Result<(Duration, Duration)> {
    let cpu_before = cpu_times().1;
    let started = Instant::now();
    let status = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    if !status.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&status.stderr)
        )
        .into());
    }
    let wall = started.elapsed();
    Ok((wall, cpu_times().1.saturating_sub(cpu_before)))
}

/// Medians of the snapshot phase.
struct SnapshotFigures {
    connector: Duration,
    connector_cpu: Duration,
    dump: Duration,
    dump_cpu: Duration,
    /// (wall, CPU) of the driver alone.
    text: (Duration, Duration),
    binary: (Duration, Duration),
    /// The server's CPU while the connector read, and while `mariadb --quick` read.
    server_cpu: (Duration, Duration),
    /// (wall, CPU) of the connector with [`Host::Main`].
    main_host: (Duration, Duration),
}

/// Medians of the streaming phase.
struct StreamFigures {
    connector: Duration,
    connector_cpu: Duration,
    verbose: Duration,
    verbose_cpu: Duration,
    raw: Duration,
    raw_cpu: Duration,
    /// The server's CPU while the connector read, and while `mariadb-binlog -v` read.
    server_cpu: (Duration, Duration),
    /// (wall, CPU) of the connector with [`Host::Main`].
    main_host: (Duration, Duration),
}

/// The snapshot phase: connector and `mariadb --quick` alternating, then the driver alone.
async fn snapshot_phase(
    args: &Args,
    server: &MariaDbServer,
    port: &str,
) -> Result<(SnapshotFigures, Checkpoint)> {
    let mut conn_times = Vec::new();
    let mut conn_cpu = Vec::new();
    let mut dump_times = Vec::new();
    let mut dump_cpu = Vec::new();
    let mut checkpoint = None;
    let mut server_conn = Vec::new();
    let mut server_dump = Vec::new();
    let (mut main_times, mut main_cpu) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let server_before = server_cpu(server);
        let ((rows, t, c), cpu) = timed_cpu(connector_snapshot(server.port(), Host::Task)).await?;
        server_conn.push(server_cpu(server).saturating_sub(server_before));
        if rows != args.rows {
            return Err(format!("snapshot read {rows} rows, expected {}", args.rows).into());
        }
        conn_times.push(t);
        conn_cpu.push(cpu);
        checkpoint = Some(c);
        let server_before = server_cpu(server);
        let (t, cpu) = run_tool(
            Command::new("mariadb")
                .args([
                    "--no-defaults",
                    "--protocol=TCP",
                    "-h",
                    "127.0.0.1",
                    "-u",
                    "root",
                    "-P",
                ])
                .arg(port)
                .args(["--quick", "-N", "-B", "-e", "SELECT * FROM test.bench_rows"]),
        )?;
        server_dump.push(server_cpu(server).saturating_sub(server_before));
        dump_times.push(t);
        dump_cpu.push(cpu);
        let ((rows, t, _), cpu) = timed_cpu(connector_snapshot(server.port(), Host::Main)).await?;
        if rows != args.rows {
            return Err(format!("snapshot read {rows} rows, expected {}", args.rows).into());
        }
        main_times.push(t);
        main_cpu.push(cpu);
    }
    let checkpoint = checkpoint.ok_or("no run")?;
    let (mut text_wall, mut text_cpu) = (Vec::new(), Vec::new());
    let (mut binary_wall, mut binary_cpu) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let (wall, cpu) = driver_read(server, false).await?;
        text_wall.push(wall);
        text_cpu.push(cpu);
        let (wall, cpu) = driver_read(server, true).await?;
        binary_wall.push(wall);
        binary_cpu.push(cpu);
    }
    Ok((
        SnapshotFigures {
            connector: median(conn_times),
            connector_cpu: median(conn_cpu),
            dump: median(dump_times),
            dump_cpu: median(dump_cpu),
            text: (median(text_wall), median(text_cpu)),
            binary: (median(binary_wall), median(binary_cpu)),
            server_cpu: (median(server_conn), median(server_dump)),
            main_host: (median(main_times), median(main_cpu)),
        },
        checkpoint,
    ))
}

/// The streaming phase: `--rows` rows inserted after `checkpoint`, then the connector and both
/// `mariadb-binlog` modes alternating over that backlog.
async fn streaming_phase(
    args: &Args,
    server: &MariaDbServer,
    port: &str,
    checkpoint: &Checkpoint,
) -> Result<StreamFigures> {
    // Streaming backlog after the checkpoint, in a fresh binlog file: a GTID resume makes the
    // server scan the file holding the GTID from its start, a one-time cost per connection
    // that would otherwise be counted against the streamed rows.
    let pos = BinlogPosition::from_checkpoint(checkpoint)?;
    server.sql("FLUSH BINARY LOGS").await?;
    let base = args.rows;
    let mut at = 1;
    while at <= args.rows {
        let end = (at + args.tx_rows - 1).min(args.rows);
        server.sql(&insert_sql(base + at, base + end)).await?;
        at = end + 1;
    }
    let mut conn_times = Vec::new();
    let mut conn_cpu = Vec::new();
    let mut raw_times = Vec::new();
    let mut raw_cpu = Vec::new();
    let mut verbose_times = Vec::new();
    let mut verbose_cpu = Vec::new();
    let binlog = |verbose: bool| {
        let mut cmd = Command::new("mariadb-binlog");
        cmd.args(["--no-defaults", "--read-from-remote-server"]);
        if verbose {
            cmd.args(["-v", "--base64-output=DECODE-ROWS"]);
        }
        cmd.args(["-h", "127.0.0.1", "-u", "root", "-P"])
            .arg(port)
            .arg(format!("--start-position={}", pos.offset))
            .arg("--to-last-log")
            .arg(pos.file_name());
        cmd
    };
    let mut server_conn = Vec::new();
    let mut server_verbose = Vec::new();
    let (mut main_times, mut main_cpu) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let server_before = server_cpu(server);
        let stream = connector_stream(server.port(), checkpoint.clone(), args.rows, Host::Task);
        let (t, cpu) = timed_cpu(stream).await?;
        server_conn.push(server_cpu(server).saturating_sub(server_before));
        conn_times.push(t);
        conn_cpu.push(cpu);
        let server_before = server_cpu(server);
        let (t, cpu) = run_tool(&mut binlog(true))?;
        server_verbose.push(server_cpu(server).saturating_sub(server_before));
        verbose_times.push(t);
        verbose_cpu.push(cpu);
        let (t, cpu) = run_tool(&mut binlog(false))?;
        raw_times.push(t);
        raw_cpu.push(cpu);
        let stream = connector_stream(server.port(), checkpoint.clone(), args.rows, Host::Main);
        let (t, cpu) = timed_cpu(stream).await?;
        main_times.push(t);
        main_cpu.push(cpu);
    }
    Ok(StreamFigures {
        connector: median(conn_times),
        connector_cpu: median(conn_cpu),
        verbose: median(verbose_times),
        verbose_cpu: median(verbose_cpu),
        raw: median(raw_times),
        raw_cpu: median(raw_cpu),
        server_cpu: (median(server_conn), median(server_verbose)),
        main_host: (median(main_times), median(main_cpu)),
    })
}

/// The "host loop on the main thread" line: `(wall, CPU)` of that placement, its ratio to the
/// tool's `baseline` wall time.
fn main_host_line(rows: u64, (wall, cpu): (Duration, Duration), baseline: Duration) {
    println!(
        "           host loop on the main thread instead: {:>10.0} rows/s, ratio {:.2}, CPU per row {:.0} ns",
        rows as f64 / wall.as_secs_f64().max(1e-9),
        baseline.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        cpu.as_secs_f64() * 1e9 / rows as f64
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let want = |p: &str| args.phases.iter().any(|x| x == p);
    let server = MariaDbServer::start().await?;
    let port = server.port().to_string();
    server.sql(DDL).await?;
    let mut at = 1;
    while at <= args.rows {
        let end = (at + 49_999).min(args.rows);
        server.sql(&insert_sql(at, end)).await?;
        at = end + 1;
    }

    let (snapshot, checkpoint) = if want("snapshot") {
        let (figures, checkpoint) = snapshot_phase(&args, &server, &port).await?;
        (Some(figures), checkpoint)
    } else {
        let (rows, _, checkpoint) = connector_snapshot(server.port(), Host::Task).await?;
        if rows != args.rows {
            return Err(format!("snapshot read {rows} rows, expected {}", args.rows).into());
        }
        (None, checkpoint)
    };
    let streaming = if want("streaming") {
        Some(streaming_phase(&args, &server, &port, &checkpoint).await?)
    } else {
        None
    };

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let per_row = |d: Duration| d.as_secs_f64() * 1e9 / args.rows as f64;
    println!("machine: {}", machine());
    println!(
        "rows: {} (streamed in transactions of {}), runs: {} (median), connector and tools alternating",
        args.rows, args.tx_rows, args.runs
    );
    if let Some(s) = snapshot {
        println!(
            "snapshot : connector {:>10.0} rows/s | mariadb --quick {:>10.0} rows/s | ratio {:.2}",
            rate(args.rows, s.connector),
            rate(args.rows, s.dump),
            rate(args.rows, s.connector) / rate(args.rows, s.dump)
        );
        println!(
            "           CPU per row: connector {:.0} ns | mariadb --quick {:.0} ns",
            per_row(s.connector_cpu),
            per_row(s.dump_cpu)
        );
        main_host_line(args.rows, s.main_host, s.dump);
        println!(
            "           server CPU per row: while the connector read {:.0} ns | while mariadb --quick read {:.0} ns",
            per_row(s.server_cpu.0),
            per_row(s.server_cpu.1)
        );
        println!(
            "           mysql_async alone, rows unconverted: text protocol {:.0} ns/row, {:.0} rows/s | binary protocol {:.0} ns/row, {:.0} rows/s",
            per_row(s.text.1),
            rate(args.rows, s.text.0),
            per_row(s.binary.1),
            rate(args.rows, s.binary.0)
        );
    }
    if let Some(s) = streaming {
        println!(
            "streaming: connector {:>10.0} rows/s | mariadb-binlog -v {:>10.0} rows/s | ratio {:.2}",
            rate(args.rows, s.connector),
            rate(args.rows, s.verbose),
            rate(args.rows, s.connector) / rate(args.rows, s.verbose)
        );
        println!(
            "           (mariadb-binlog without -v, raw events, no row decoding: {:.0} rows/s, ratio {:.2})",
            rate(args.rows, s.raw),
            rate(args.rows, s.connector) / rate(args.rows, s.raw)
        );
        println!(
            "           CPU per row: connector {:.0} ns | mariadb-binlog -v {:.0} ns | mariadb-binlog {:.0} ns",
            per_row(s.connector_cpu),
            per_row(s.verbose_cpu),
            per_row(s.raw_cpu)
        );
        main_host_line(args.rows, s.main_host, s.verbose);
        println!(
            "           server CPU per row: while the connector read {:.0} ns | while mariadb-binlog -v read {:.0} ns",
            per_row(s.server_cpu.0),
            per_row(s.server_cpu.1)
        );
    }
    Ok(())
}
