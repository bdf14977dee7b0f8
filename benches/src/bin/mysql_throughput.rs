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

fn run_tool(cmd: &mut Command) -> Result<Duration> {
    let started = Instant::now();
    let status = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    if !status.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&status.stderr)
        )
        .into());
    }
    Ok(started.elapsed())
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
    let mut dump_times = Vec::new();
    let mut checkpoint = None;
    for _ in 0..args.runs {
        let (rows, t, c) = connector_snapshot(&server).await?;
        if rows != args.rows {
            return Err(format!("snapshot read {rows} rows, expected {}", args.rows).into());
        }
        conn_times.push(t);
        checkpoint = Some(c);
        dump_times.push(run_tool(
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
        )?);
    }
    let checkpoint = checkpoint.ok_or("no run")?;
    let snap_conn = median(conn_times);
    let snap_dump = median(dump_times);

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
    let mut tool_times = Vec::new();
    let mut verbose_times = Vec::new();
    for _ in 0..args.runs {
        conn_times.push(connector_stream(&server, &checkpoint, args.rows).await?);
        verbose_times.push(run_tool(
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
        )?);
        tool_times.push(run_tool(
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
        )?);
    }
    let stream_conn = median(conn_times);
    let stream_tool = median(tool_times);
    let stream_verbose = median(verbose_times);

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    println!("machine: {}", machine());
    println!(
        "rows: {} (streamed in transactions of {}), runs: {} (median)",
        args.rows, args.tx_rows, args.runs
    );
    println!(
        "snapshot : connector {:>10.0} rows/s | mariadb --quick {:>10.0} rows/s | ratio {:.2}",
        rate(args.rows, snap_conn),
        rate(args.rows, snap_dump),
        rate(args.rows, snap_conn) / rate(args.rows, snap_dump)
    );
    println!(
        "streaming: connector {:>10.0} rows/s | mariadb-binlog  {:>10.0} rows/s | ratio {:.2}",
        rate(args.rows, stream_conn),
        rate(args.rows, stream_tool),
        rate(args.rows, stream_conn) / rate(args.rows, stream_tool)
    );
    println!(
        "           (mariadb-binlog -v, rows decoded to pseudo-SQL: {:.0} rows/s, ratio {:.2})",
        rate(args.rows, stream_verbose),
        rate(args.rows, stream_conn) / rate(args.rows, stream_verbose)
    );
    Ok(())
}
