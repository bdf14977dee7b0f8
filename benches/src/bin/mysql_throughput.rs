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

fn source(server: &MariaDbServer) -> Result<MySqlSource> {
    Ok(MySqlSource::new(MySqlConfig::parse(&format!(
        "mariadb://root@127.0.0.1:{}/test?server_id=777",
        server.port()
    ))?)
    .with_tables(vec![TableName::new("test", "bench_rows")]))
}

/// The connector's snapshot: rows and time until `Done`, and the checkpoint it ends at.
async fn connector_snapshot(server: &MariaDbServer) -> Result<(u64, Duration, Checkpoint)> {
    let source = source(server)?;
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
}

/// The connector streaming `want` rows from `from`.
async fn connector_stream(
    server: &MariaDbServer,
    from: &Checkpoint,
    want: u64,
) -> Result<Duration> {
    let source = source(server)?;
    let started = Instant::now();
    let mut stream = source.start(StartFrom::Checkpoint(from.clone())).await?;
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
}

/// CPU time so far, from `/proc/self/stat`: (this process's user + system, its waited-for
/// children's user + system).
fn cpu_times() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime is field 14 (index 11 here).
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).copied().unwrap_or(0);
    let tick = Duration::from_secs(1) / clock_ticks();
    (
        tick * (ticks(11) + ticks(12)) as u32,
        tick * (ticks(13) + ticks(14)) as u32,
    )
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

/// Runs a tool to completion: wall time and the child's CPU time.
/// The driver alone reading the table with the text protocol (`query_iter`) or the binary
/// protocol (`exec_iter`, what the snapshot uses), rows dropped unconverted: which protocol
/// costs the client less per row. Returns the CPU time.
async fn driver_read(server: &MariaDbServer, binary: bool) -> Result<Duration> {
    use powersync_source_mysql::mysql_async::prelude::Queryable;
    let config = MySqlConfig::parse(&format!("mariadb://root@127.0.0.1:{}/test", server.port()))?;
    let mut conn = powersync_source_mysql::connect_sql(&config).await?;
    let sql = "SELECT * FROM test.bench_rows";
    let before = cpu_times().0;
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
    Ok(cpu)
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let server = MariaDbServer::start().await?;
    let port = server.port().to_string();
    server.sql(DDL).await?;
    let mut at = 1;
    while at <= args.rows {
        let end = (at + 49_999).min(args.rows);
        server.sql(&insert_sql(at, end)).await?;
        at = end + 1;
    }

    // Snapshot.
    let mut conn_times = Vec::new();
    let mut conn_cpu = Vec::new();
    let mut dump_times = Vec::new();
    let mut dump_cpu = Vec::new();
    let mut checkpoint = None;
    for _ in 0..args.runs {
        let ((rows, t, c), cpu) = timed_cpu(connector_snapshot(&server)).await?;
        if rows != args.rows {
            return Err(format!("snapshot read {rows} rows, expected {}", args.rows).into());
        }
        conn_times.push(t);
        conn_cpu.push(cpu);
        checkpoint = Some(c);
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
                .arg(&port)
                .args(["--quick", "-N", "-B", "-e", "SELECT * FROM test.bench_rows"]),
        )?;
        dump_times.push(t);
        dump_cpu.push(cpu);
    }
    let checkpoint = checkpoint.ok_or("no run")?;
    let snap_conn = median(conn_times);
    let snap_dump = median(dump_times);
    let snap_conn_cpu = median(conn_cpu);
    let snap_dump_cpu = median(dump_cpu);
    let mut text_cpu = Vec::new();
    let mut binary_cpu = Vec::new();
    for _ in 0..args.runs {
        text_cpu.push(driver_read(&server, false).await?);
        binary_cpu.push(driver_read(&server, true).await?);
    }
    let text_cpu = median(text_cpu);
    let binary_cpu = median(binary_cpu);

    // Streaming backlog after the checkpoint, in a fresh binlog file: a GTID resume makes the
    // server scan the file holding the GTID from its start, a one-time cost per connection
    // that would otherwise be counted against the streamed rows.
    let pos = BinlogPosition::from_checkpoint(&checkpoint)?;
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
    let mut tool_times = Vec::new();
    let mut tool_cpu = Vec::new();
    let mut verbose_times = Vec::new();
    let mut verbose_cpu = Vec::new();
    for _ in 0..args.runs {
        let (t, cpu) = timed_cpu(connector_stream(&server, &checkpoint, args.rows)).await?;
        conn_times.push(t);
        conn_cpu.push(cpu);
        let (t, cpu) = run_tool(
            Command::new("mariadb-binlog")
                .args([
                    "--no-defaults",
                    "--read-from-remote-server",
                    "-v",
                    "--base64-output=DECODE-ROWS",
                    "-h",
                    "127.0.0.1",
                    "-u",
                    "root",
                    "-P",
                ])
                .arg(&port)
                .arg(format!("--start-position={}", pos.offset))
                .arg("--to-last-log")
                .arg(pos.file_name()),
        )?;
        verbose_times.push(t);
        verbose_cpu.push(cpu);
        let (t, cpu) = run_tool(
            Command::new("mariadb-binlog")
                .args([
                    "--no-defaults",
                    "--read-from-remote-server",
                    "-h",
                    "127.0.0.1",
                    "-u",
                    "root",
                    "-P",
                ])
                .arg(&port)
                .arg(format!("--start-position={}", pos.offset))
                .arg("--to-last-log")
                .arg(pos.file_name()),
        )?;
        tool_times.push(t);
        tool_cpu.push(cpu);
    }
    let stream_conn = median(conn_times);
    let stream_conn_cpu = median(conn_cpu);
    let stream_tool_cpu = median(tool_cpu);
    let stream_verbose_cpu = median(verbose_cpu);
    let stream_tool = median(tool_times);
    let stream_verbose = median(verbose_times);

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let per_row = |d: Duration| d.as_secs_f64() * 1e9 / args.rows as f64;
    println!("machine: {}", machine());
    println!(
        "rows: {} (streamed in transactions of {}), runs: {} (median), connector and tools alternating",
        args.rows, args.tx_rows, args.runs
    );
    println!(
        "snapshot : connector {:>10.0} rows/s | mariadb --quick {:>10.0} rows/s | ratio {:.2}",
        rate(args.rows, snap_conn),
        rate(args.rows, snap_dump),
        rate(args.rows, snap_conn) / rate(args.rows, snap_dump)
    );
    println!(
        "           CPU per row: connector {:.0} ns | mariadb --quick {:.0} ns",
        per_row(snap_conn_cpu),
        per_row(snap_dump_cpu)
    );
    println!(
        "           driver alone, rows unconverted: text protocol {:.0} ns/row | binary protocol {:.0} ns/row",
        per_row(text_cpu),
        per_row(binary_cpu)
    );
    println!(
        "streaming: connector {:>10.0} rows/s | mariadb-binlog -v {:>10.0} rows/s | ratio {:.2}",
        rate(args.rows, stream_conn),
        rate(args.rows, stream_verbose),
        rate(args.rows, stream_conn) / rate(args.rows, stream_verbose)
    );
    println!(
        "           (mariadb-binlog without -v, raw events, no row decoding: {:.0} rows/s, ratio {:.2})",
        rate(args.rows, stream_tool),
        rate(args.rows, stream_conn) / rate(args.rows, stream_tool)
    );
    println!(
        "           CPU per row: connector {:.0} ns | mariadb-binlog -v {:.0} ns | mariadb-binlog {:.0} ns",
        per_row(stream_conn_cpu),
        per_row(stream_verbose_cpu),
        per_row(stream_tool_cpu)
    );
    Ok(())
}
