//! End-to-end throughput of the PostgreSQL connector against the physical limits measured in
//! the same run on the same throwaway server: `pg_recvlogical` (raw pgoutput, no decoding) for
//! streaming, `COPY … TO STDOUT` for the snapshot. See `benches/README.md`.
//!
//! ```text
//! cargo run --release -p benches --bin throughput -- --source postgres \
//!     [--rows N] [--runs K] [--big-transaction-mb M] [--small-txns N] \
//!     [--work-mem 64MB,1GB] [--phases streaming,spread,small,snapshot,big]
//! ```
//!
//! Phases: `streaming` (one statement of N rows in one transaction, at each
//! `logical_decoding_work_mem` of `--work-mem`), `spread` (the same N rows written by 100
//! statements over ~10 s inside one transaction, at the server default 64 MB), `small`
//! (catch-up of `--small-txns` one-row transactions), `snapshot`, `big` (peak memory of one
//! big transaction at the server default, so the connector receives it streamed). Streaming
//! figures also report the walsender's CPU per million rows and the slot's spill bytes
//! (`pg_stat_replication_slots`) for the connector and for `pg_recvlogical`.

#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use benches::{
    cpu_ticks, insert_rows_sql, io_field, median, rows_table_ddl, status_kb, tree_cpu_ticks,
    RssSampler, TICKS_PER_SECOND,
};
use clap::Parser;
use futures::StreamExt;
use powersync_source_core::StreamOptions;
use powersync_source_core::{
    ChangeEvent, ChangeSource, ChangeStream, Checkpoint, SnapshotProgress, StartFrom,
};
use powersync_source_postgres::{PostgresConfig, PostgresOptions, PostgresSource};
use powersync_source_testkit::PostgresServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const TABLE: &str = "bench_rows";
const PUBLICATION: &str = "bench_pub";
const BIG_TABLE: &str = "bench_big";
const BIG_PUBLICATION: &str = "bench_big_pub";
/// Longest wait for one measurement before it is reported as a failure.
const TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Parser, Debug)]
#[command(about = "End-to-end throughput of a connector against its source's own tools")]
struct Args {
    /// Source to benchmark (only `postgres` so far).
    #[arg(long, default_value = "postgres")]
    source: String,
    /// Rows of the streamed transaction and of the snapshotted table.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Size of the big transaction (rows of ~1 KB text) streamed for peak memory; 0 skips it.
    #[arg(long, default_value_t = 1024)]
    big_transaction_mb: u64,
    /// `StreamOptions::batch_events` for the connector (default: the connector's default).
    #[arg(long)]
    batch_events: Option<usize>,
    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "streaming,spread,small,snapshot,big"
    )]
    phases: Vec<String>,
    /// `logical_decoding_work_mem` values of the `streaming` phase (64MB is the server default).
    #[arg(long, value_delimiter = ',', default_value = "64MB,1GB")]
    work_mem: Vec<String>,
    /// One-row transactions of the `small` phase.
    #[arg(long, default_value_t = 20_000)]
    small_txns: u64,
    /// Seconds over which the `spread` phase writes its transaction (100 statements).
    #[arg(long, default_value_t = 10.0)]
    spread_seconds: f64,
}

/// The server's default `logical_decoding_work_mem`.
const DEFAULT_WORK_MEM: &str = "64MB";

/// How a streaming measurement writes its rows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Workload {
    /// One `INSERT … SELECT` of all rows in one transaction.
    OneStatement,
    /// 100 `INSERT … SELECT` statements in one transaction, paced over this many seconds.
    Spread(f64),
}

/// One measured run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    elapsed: Duration,
    /// Bytes for the MB/s figure (WAL bytes of the transaction, or heap bytes of the table).
    bytes: u64,
    /// (RSS at start, peak RSS) in KiB of the measured process.
    rss: Option<(u64, u64)>,
    /// CPU seconds during the clocked interval: (client process, PostgreSQL server).
    cpu: (f64, f64),
    /// Batches and events the null sink received (streaming).
    batches: Option<(u64, u64)>,
    /// CPU seconds of the walsender serving the slot, from the start of the workload to the
    /// last row (streaming).
    walsender_cpu: Option<f64>,
    /// `pg_stat_replication_slots` of the slot after the run: (spill_bytes, stream_bytes).
    slot_stats: Option<(i64, i64)>,
}

#[derive(Debug, Default)]
struct Series {
    samples: Vec<Sample>,
}

impl Series {
    fn median(&self) -> Duration {
        median(self.samples.iter().map(|s| s.elapsed).collect())
    }
    fn bytes(&self) -> u64 {
        self.samples.first().map_or(0, |s| s.bytes)
    }
    fn peak_rss(&self) -> Option<(u64, u64)> {
        let start = self
            .samples
            .iter()
            .filter_map(|s| s.rss)
            .map(|r| r.0)
            .min()?;
        let peak = self
            .samples
            .iter()
            .filter_map(|s| s.rss)
            .map(|r| r.1)
            .max()?;
        Some((start, peak))
    }
    fn cpu(&self) -> (f64, f64) {
        let m = self.median();
        self.samples
            .iter()
            .find(|s| s.elapsed == m)
            .map_or((0.0, 0.0), |s| s.cpu)
    }
    /// Average events per batch the sink received, per run.
    fn events_per_batch(&self) -> String {
        let v: Vec<String> = self
            .samples
            .iter()
            .filter_map(|s| s.batches)
            .map(|(b, e)| format!("{:.1}", e as f64 / b.max(1) as f64))
            .collect();
        v.join(", ")
    }
    /// Walsender CPU seconds per million rows, in the median run.
    fn walsender_per_million(&self, rows: u64) -> Option<f64> {
        let m = self.median();
        let cpu = self
            .samples
            .iter()
            .find(|s| s.elapsed == m)?
            .walsender_cpu?;
        Some(cpu * 1e6 / rows as f64)
    }
    /// Largest (spill_bytes, stream_bytes) over the runs.
    fn slot_stats(&self) -> Option<(i64, i64)> {
        let v: Vec<(i64, i64)> = self.samples.iter().filter_map(|s| s.slot_stats).collect();
        if v.is_empty() {
            return None;
        }
        Some((
            v.iter().map(|x| x.0).max().unwrap_or(0),
            v.iter().map(|x| x.1).max().unwrap_or(0),
        ))
    }
    fn runs(&self) -> String {
        let v: Vec<String> = self
            .samples
            .iter()
            .map(|s| format!("{:.3}", s.elapsed.as_secs_f64()))
            .collect();
        v.join(", ")
    }
}

struct Bench {
    server: PostgresServer,
    /// Connector options shared by every measurement.
    options: PostgresOptions,
    /// Stream options (batch size) shared by every measurement.
    stream: StreamOptions,
    postmaster: u32,
    ctl: tokio_postgres::Client,
    rows: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.source != "postgres" {
        return Err(format!("unknown source `{}` (supported: postgres)", args.source).into());
    }
    let command = format!(
        "cargo run --release -p benches --bin throughput -- {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let load_at_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let want = |p: &str| args.phases.iter().any(|x| x == p);

    eprintln!("starting PostgreSQL…");
    let server = PostgresServer::builder()
        .setting("shared_buffers", "1GB")
        .setting("wal_buffers", "64MB")
        .setting("max_wal_size", "32GB")
        .setting("min_wal_size", "1GB")
        .setting("checkpoint_timeout", "1d")
        .setting("full_page_writes", "off")
        .setting("autovacuum", "off")
        // Not logical_decoding_work_mem: a command-line setting would override the ALTER
        // SYSTEM each phase uses to choose it.
        .setting("wal_sender_timeout", "0")
        .start()
        .await?;
    let (ctl, conn) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let pid_file = std::fs::read_to_string(server.data_dir().join("postmaster.pid"))?;
    let postmaster: u32 = pid_file.lines().next().unwrap_or_default().trim().parse()?;
    let options = PostgresOptions::default();
    let mut stream = StreamOptions::default();
    if let Some(n) = args.batch_events {
        stream = stream.with_batch_events(n);
    }
    let bench = Bench {
        server,
        options,
        stream,
        postmaster,
        ctl,
        rows: args.rows,
    };
    let version: String = bench
        .ctl
        .query_one("SHOW server_version", &[])
        .await?
        .get(0);
    bench.sql(&rows_table_ddl(TABLE)).await?;
    bench
        .sql(&format!(
            "CREATE PUBLICATION {PUBLICATION} FOR TABLE {TABLE}"
        ))
        .await?;

    let mut table = Vec::<String>::new();
    let mut notes = Vec::<String>::new();
    let n = args.rows;

    let what = "pg_recvlogical (pgoutput proto 1, text tuples)";
    let mut expected_cache = None;
    if want("streaming") || want("spread") {
        eprintln!("streaming: measuring the baseline's output size…");
        expected_cache = Some(bench.recvlogical_output_bytes(None).await?);
    }
    if want("streaming") {
        let expected = expected_cache.unwrap_or_default();
        for mem in &args.work_mem {
            bench.set_work_mem(mem).await?;
            let mut conn = Series::default();
            let mut base = Series::default();
            let mut base_hwm = 0u64;
            for run in 0..args.runs {
                for k in 0..2 {
                    if (run + k) % 2 == 0 {
                        conn.samples
                            .push(bench.stream_connector(true, Workload::OneStatement).await?);
                    } else {
                        let (s, hwm) = bench
                            .stream_recvlogical(expected, Workload::OneStatement)
                            .await?;
                        base_hwm = base_hwm.max(hwm);
                        base.samples.push(s);
                    }
                }
                eprintln!(
                    "  work_mem {mem} run {run}: connector [{}] pg_recvlogical [{}]",
                    conn.runs(),
                    base.runs()
                );
            }
            table.push(row(
                &format!(
                    "Streaming {} rows, one statement, one txn, logical_decoding_work_mem {mem}",
                    group(n)
                ),
                n,
                &conn,
                &base,
                what,
                "WAL",
            ));
            notes.push(format!(
                "streaming at {mem}: runs (s) connector [{}], pg_recvlogical [{}]; pg_recvlogical peak RSS (VmHWM) {}; connector events per batch [{}] (batch_events = {})",
                conn.runs(),
                base.runs(),
                mb_kib(base_hwm),
                conn.events_per_batch(),
                bench.stream.batch_events
            ));
        }
        notes.push(format!(
            "pg_recvlogical end = its write() byte count (/proc/PID/io wchar, polled every 1 ms) reaches {} bytes, the pgoutput output of the transaction plus one newline per message, measured beforehand with pg_logical_slot_get_binary_changes on a scratch slot",
            group(expected)
        ));
    }

    if want("spread") {
        let expected = expected_cache.unwrap_or_default();
        bench.set_work_mem(DEFAULT_WORK_MEM).await?;
        let workload = Workload::Spread(args.spread_seconds);
        let mut conn = Series::default();
        let mut base = Series::default();
        for run in 0..args.runs {
            for k in 0..2 {
                if (run + k) % 2 == 0 {
                    conn.samples
                        .push(bench.stream_connector(true, workload).await?);
                } else {
                    base.samples
                        .push(bench.stream_recvlogical(expected, workload).await?.0);
                }
            }
            eprintln!(
                "  spread run {run}: connector [{}] pg_recvlogical [{}]",
                conn.runs(),
                base.runs()
            );
        }
        table.push(row(
            &format!(
                "Streaming {} rows written over ~{:.0} s (100 statements, one txn), commit → last row, logical_decoding_work_mem {DEFAULT_WORK_MEM}",
                group(n),
                args.spread_seconds
            ),
            n,
            &conn,
            &base,
            what,
            "WAL",
        ));
        notes.push(format!(
            "spread: runs (s, commit → last row) connector [{}], pg_recvlogical [{}]; walsender CPU counted from the first statement",
            conn.runs(),
            base.runs()
        ));
    }

    if want("small") && args.small_txns > 0 {
        bench.set_work_mem(DEFAULT_WORK_MEM).await?;
        let txns = args.small_txns;
        let expected = bench.recvlogical_output_bytes(Some(txns)).await?;
        let mut conn = Series::default();
        let mut base = Series::default();
        for run in 0..args.runs {
            for k in 0..2 {
                if (run + k) % 2 == 0 {
                    conn.samples.push(bench.small_connector(txns).await?);
                } else {
                    base.samples
                        .push(bench.small_recvlogical(txns, expected).await?);
                }
            }
            eprintln!(
                "  small run {run}: connector [{}] pg_recvlogical [{}]",
                conn.runs(),
                base.runs()
            );
        }
        table.push(row(
            &format!(
                "Catch-up of {} one-row transactions (written before the reader starts)",
                group(txns)
            ),
            txns,
            &conn,
            &base,
            what,
            "WAL",
        ));
        notes.push(format!(
            "small: runs (s, reader start → last row) connector [{}], pg_recvlogical [{}]",
            conn.runs(),
            base.runs()
        ));
    }

    if want("snapshot") {
        bench.ensure_rows().await?;
        let heap = bench
            .query_u64(&format!("SELECT pg_relation_size('{TABLE}')::int8"))
            .await?;
        let mut copy = Series::default();
        let mut p1 = Series::default();
        let mut p2 = Series::default();
        for run in 0..args.runs {
            for k in 0..3 {
                match (run + k) % 3 {
                    0 => copy.samples.push(bench.snapshot_copy(heap).await?),
                    1 => p1.samples.push(bench.snapshot_connector(1, heap).await?),
                    _ => p2.samples.push(bench.snapshot_connector(2, heap).await?),
                }
            }
            eprintln!(
                "  run {run}: p1 [{}] p2 [{}] COPY [{}]",
                p1.runs(),
                p2.runs(),
                copy.runs()
            );
        }
        let what = "COPY bench_rows TO STDOUT (text), drained by tokio-postgres";
        table.push(row(
            &format!("Snapshot {} rows, snapshot_parallelism 1", group(n)),
            n,
            &p1,
            &copy,
            what,
            "heap",
        ));
        table.push(row(
            &format!("Snapshot {} rows, snapshot_parallelism 2", group(n)),
            n,
            &p2,
            &copy,
            what,
            "heap",
        ));
        notes.push(format!(
            "snapshot runs (s): parallelism 1 [{}], parallelism 2 [{}], COPY [{}]; connector clock = start(Beginning) (check, slot creation) to SnapshotProgress::Done, COPY clock = connect to last byte",
            p1.runs(),
            p2.runs(),
            copy.runs()
        ));
    }

    if want("big") && args.big_transaction_mb > 0 {
        bench.set_work_mem(DEFAULT_WORK_MEM).await?;
        let rows = args.big_transaction_mb * 1024;
        let s = bench.big_transaction(rows).await?;
        let series = Series { samples: vec![s] };
        table.push(format!(
            "| Big transaction: {} MB ({} rows of 1 KB text), binary tuples, logical_decoding_work_mem {DEFAULT_WORK_MEM} | {} | — | — | {} | {} | {} | {} |",
            args.big_transaction_mb,
            group(rows),
            figure(rows, &series, "WAL"),
            rss_cell(&series),
            cpu_cell(&series),
            series
                .walsender_per_million(rows)
                .map_or("—".into(), |c| format!("{c:.2}")),
            slot_cell(&series)
        ));
        notes.push(format!(
            "big transaction: {:.3} s, events per batch received by the sink: {}",
            s.elapsed.as_secs_f64(),
            series.events_per_batch()
        ));
    }

    let mut out = String::new();
    let _ = writeln!(out, "\n## powersync-source throughput: postgres\n");
    let _ = writeln!(out, "- command: `{command}`");
    let _ = writeln!(
        out,
        "- date: {}",
        powersync_source_core::UnixMicros::now().to_rfc3339()
    );
    let _ = writeln!(
        out,
        "- machine: {} (load average at start: {})",
        benches::machine(),
        load_at_start.trim()
    );
    let _ = writeln!(
        out,
        "- server: PostgreSQL {version} (testkit; fsync=off, shared_buffers=1GB, max_wal_size=32GB, full_page_writes=off, autovacuum=off; logical_decoding_work_mem per row); the connector with its defaults (binary tuples, streaming on, 32 MiB streaming memory)"
    );
    let _ = writeln!(out, "- median of {} runs, connector and baseline alternated, never concurrent; MB = 10^6 bytes\n", args.runs);
    let _ = writeln!(
        out,
        "| Figure | Connector | Baseline | Ratio (connector/baseline, >1 = faster) | Connector process peak RSS (growth) | CPU s while clocked, client + server: connector / baseline | Walsender CPU s per 1M rows: connector / baseline | Slot spill bytes (stream bytes): connector / baseline |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in &table {
        let _ = writeln!(out, "{r}");
    }
    let _ = writeln!(out);
    for n in &notes {
        let _ = writeln!(out, "- {n}");
    }
    println!("{out}");
    Ok(())
}

/// One table row: connector vs baseline.
fn row(name: &str, rows: u64, conn: &Series, base: &Series, base_what: &str, unit: &str) -> String {
    let ratio = base.median().as_secs_f64() / conn.median().as_secs_f64();
    let walsender = match (
        conn.walsender_per_million(rows),
        base.walsender_per_million(rows),
    ) {
        (Some(c), Some(b)) => format!("{c:.2} / {b:.2} (**{:.2}×**)", c / b),
        _ => "—".into(),
    };
    format!(
        "| {name} | {} | {base_what}: {} | **{ratio:.2}×** | {} | {} / {} | {walsender} | {} / {} |",
        figure(rows, conn, unit),
        figure(rows, base, unit),
        rss_cell(conn),
        cpu_cell(conn),
        cpu_cell(base),
        slot_cell(conn),
        slot_cell(base)
    )
}

fn slot_cell(s: &Series) -> String {
    match s.slot_stats() {
        Some((spill, stream)) => format!("{} ({})", group(spill as u64), group(stream as u64)),
        None => "—".into(),
    }
}

fn cpu_cell(s: &Series) -> String {
    let (client, server) = s.cpu();
    format!("{client:.2} + {server:.2}")
}

fn figure(rows: u64, s: &Series, unit: &str) -> String {
    let t = s.median().as_secs_f64();
    format!(
        "{} rows/s, {:.1} MB/s {unit} ({t:.3} s)",
        group((rows as f64 / t) as u64),
        s.bytes() as f64 / t / 1e6
    )
}

fn rss_cell(s: &Series) -> String {
    match s.peak_rss() {
        Some((start, peak)) => {
            format!("{} (+{})", mb_kib(peak), mb_kib(peak.saturating_sub(start)))
        }
        None => "—".into(),
    }
}

fn mb_kib(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 * 1024.0 / 1e6)
}

/// 1234567 → `1,234,567`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn parse_lsn(s: &str) -> Result<u64> {
    let (hi, lo) = s.split_once('/').ok_or_else(|| format!("bad LSN {s}"))?;
    Ok((u64::from_str_radix(hi, 16)? << 32) | u64::from_str_radix(lo, 16)?)
}

/// What the null sink saw.
struct SinkHandle {
    task: JoinHandle<Result<()>>,
    snapshot_done: oneshot::Receiver<(Instant, u64, Checkpoint)>,
    /// When the target was reached, with the batches and events received so far.
    rows_done: oneshot::Receiver<(Instant, u64, u64)>,
}

/// The null sink: consumes batches, counts row events, acknowledges every checkpoint.
/// Reports when the snapshot is done and when `target` row events have arrived.
fn null_sink(mut stream: ChangeStream, target: u64) -> SinkHandle {
    let (snap_tx, snapshot_done) = oneshot::channel();
    let (rows_tx, rows_done) = oneshot::channel();
    let task = tokio::spawn(async move {
        let acks = stream.ack_handle();
        let mut snap_tx = Some(snap_tx);
        let mut rows_tx = Some(rows_tx);
        let mut rows = 0u64;
        let (mut batches, mut events) = (0u64, 0u64);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            batches += 1;
            events += batch.events.len() as u64;
            for event in batch.events {
                match event {
                    ChangeEvent::Row(_) => rows += 1,
                    ChangeEvent::Commit(c) => acks.ack(&c.checkpoint)?,
                    ChangeEvent::Keepalive(c) => acks.ack(&c)?,
                    ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint }) => {
                        acks.ack(&checkpoint)?;
                        if let Some(tx) = snap_tx.take() {
                            let _ = tx.send((Instant::now(), rows, checkpoint));
                        }
                    }
                    _ => {}
                }
            }
            if rows >= target {
                if let Some(tx) = rows_tx.take() {
                    let _ = tx.send((Instant::now(), batches, events));
                }
            }
        }
        Err("the change stream ended".into())
    });
    SinkHandle {
        task,
        snapshot_done,
        rows_done,
    }
}

/// Waits for a sink signal; a sink that failed reports its error instead.
async fn wait<T>(
    rx: oneshot::Receiver<T>,
    task: &mut JoinHandle<Result<()>>,
    what: &str,
) -> Result<T> {
    tokio::select! {
        r = rx => r.map_err(|_| format!("{what}: the sink stopped").into()),
        r = &mut *task => Err(format!("{what}: sink ended: {:?}", r.map(|r| r.map_err(|e| e.to_string()))).into()),
        _ = tokio::time::sleep(TIMEOUT) => Err(format!("{what}: timed out").into()),
    }
}

impl Bench {
    async fn sql(&self, sql: &str) -> Result<()> {
        self.ctl
            .batch_execute(sql)
            .await
            .map_err(|e| format!("{sql}: {e}").into())
    }

    async fn query_u64(&self, sql: &str) -> Result<u64> {
        let v: i64 = self.ctl.query_one(sql, &[]).await?.get(0);
        Ok(v as u64)
    }

    async fn lsn(&self, expr: &str) -> Result<u64> {
        let s: String = self
            .ctl
            .query_one(&format!("SELECT ({expr})::text"), &[])
            .await?
            .get(0);
        parse_lsn(&s)
    }

    /// CPU ticks so far of a client process (`self` or a pid) and of the server.
    fn cpu_now(&self, client: &str) -> (u64, u64) {
        (
            cpu_ticks(client).map_or(0, |c| c.0),
            tree_cpu_ticks(self.postmaster),
        )
    }

    /// CPU seconds since `cpu_now`.
    fn cpu_since(&self, client: &str, start: (u64, u64)) -> (f64, f64) {
        let end = self.cpu_now(client);
        (
            end.0.saturating_sub(start.0) as f64 / TICKS_PER_SECOND,
            end.1.saturating_sub(start.1) as f64 / TICKS_PER_SECOND,
        )
    }

    fn config(&self, publication: &str, slot: &str) -> Result<PostgresConfig> {
        Ok(PostgresConfig::parse(&self.server.url())?
            .with_publication(publication)
            .with_slot(slot))
    }

    /// Drops a slot once its walsender has gone (terminating it after 5 s).
    async fn drop_slot(&self, slot: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            let row = self
                .ctl
                .query_opt(
                    "SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await?;
            let Some(row) = row else { return Ok(()) };
            let (active, pid): (bool, Option<i32>) = (row.get(0), row.get(1));
            if !active {
                let _ = self
                    .ctl
                    .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                    .await;
            } else if started.elapsed() > Duration::from_secs(5) {
                let _ = self
                    .ctl
                    .execute("SELECT pg_terminate_backend($1)", &[&pid])
                    .await;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("slot {slot} could not be dropped").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a walsender streams from `slot`, then lets it settle.
    async fn wait_active(&self, slot: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            let active: Option<bool> = self
                .ctl
                .query_opt(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await?
                .map(|r| r.get(0));
            if active == Some(true) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("slot {slot} never became active").into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }

    /// An empty table, no slots, a fresh checkpoint.
    async fn reset(&self, table: &str) -> Result<()> {
        for slot in [
            "bench_conn",
            "bench_recv",
            "bench_calib",
            "bench_snap",
            "bench_big_conn",
        ] {
            self.drop_slot(slot).await?;
        }
        self.sql(&format!("TRUNCATE {table}")).await?;
        self.sql("CHECKPOINT").await
    }

    /// Runs `sql` in one transaction; returns when COMMIT returned and the WAL bytes written.
    async fn workload(&self, sql: &str) -> Result<(Instant, u64)> {
        let before = self.lsn("pg_current_wal_insert_lsn()").await?;
        self.sql("BEGIN").await?;
        self.sql(sql).await?;
        self.sql("COMMIT").await?;
        let committed = Instant::now();
        let after = self.lsn("pg_current_wal_insert_lsn()").await?;
        Ok((committed, after - before))
    }

    /// Bytes `pg_recvlogical -f` writes for the workload (one transaction of all rows, or
    /// `small` one-row transactions): every pgoutput message plus a newline.
    async fn recvlogical_output_bytes(&self, small: Option<u64>) -> Result<u64> {
        self.reset(TABLE).await?;
        self.sql("SELECT pg_create_logical_replication_slot('bench_calib', 'pgoutput')")
            .await?;
        match small {
            Some(txns) => {
                self.small_workload(txns).await?;
            }
            None => {
                self.workload(&insert_rows_sql(TABLE, 1, self.rows)).await?;
            }
        }
        let row = self
            .ctl
            .query_one(
                &format!(
                    "SELECT count(*)::int8, coalesce(sum(octet_length(data)), 0)::int8 \
                     FROM pg_logical_slot_get_binary_changes('bench_calib', NULL, NULL, \
                     'proto_version', '1', 'publication_names', '{PUBLICATION}')"
                ),
                &[],
            )
            .await?;
        let (count, bytes): (i64, i64) = (row.get(0), row.get(1));
        self.drop_slot("bench_calib").await?;
        Ok((count + bytes) as u64)
    }

    /// Sets the server's `logical_decoding_work_mem` (walsenders started after it use it).
    async fn set_work_mem(&self, mem: &str) -> Result<()> {
        // ALTER SYSTEM refuses to run in a (multi-statement, implicit) transaction block.
        self.sql(&format!(
            "ALTER SYSTEM SET logical_decoding_work_mem = '{mem}'"
        ))
        .await?;
        self.sql("SELECT pg_reload_conf()").await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now: String = self
            .ctl
            .query_one("SHOW logical_decoding_work_mem", &[])
            .await?
            .get(0);
        let want = mem.to_ascii_lowercase().replace(' ', "");
        if now.to_ascii_lowercase() != want {
            return Err(format!("logical_decoding_work_mem is {now} after setting {mem}").into());
        }
        eprintln!("logical_decoding_work_mem = {now}");
        Ok(())
    }

    /// The pid of the walsender serving `slot`.
    async fn walsender_pid(&self, slot: &str) -> Result<String> {
        let pid: Option<i32> = self
            .ctl
            .query_one(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?
            .get(0);
        Ok(pid
            .ok_or_else(|| format!("slot {slot} has no walsender"))?
            .to_string())
    }

    /// CPU seconds of a process since `start` ticks.
    fn process_cpu_since(pid: &str, start: u64) -> f64 {
        cpu_ticks(pid).map_or(0, |c| c.0).saturating_sub(start) as f64 / TICKS_PER_SECOND
    }

    /// `pg_stat_replication_slots` (spill_bytes, stream_bytes) of `slot`, once its counters
    /// settled.
    async fn slot_stats(&self, slot: &str) -> Result<(i64, i64)> {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let row = self
            .ctl
            .query_opt(
                "SELECT spill_bytes, stream_bytes FROM pg_stat_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?;
        Ok(row.map_or((0, 0), |r| (r.get(0), r.get(1))))
    }

    /// Runs the streaming workload; returns when COMMIT returned and the WAL bytes written.
    async fn run_workload(&self, workload: Workload) -> Result<(Instant, u64)> {
        match workload {
            Workload::OneStatement => self.workload(&insert_rows_sql(TABLE, 1, self.rows)).await,
            Workload::Spread(seconds) => {
                let before = self.lsn("pg_current_wal_insert_lsn()").await?;
                let statements = 100u64;
                let per = (self.rows / statements).max(1);
                self.sql("BEGIN").await?;
                let started = Instant::now();
                for i in 0..statements {
                    let from = 1 + i * per;
                    let to = if i + 1 == statements {
                        self.rows
                    } else {
                        (i + 1) * per
                    };
                    if from <= to {
                        self.sql(&insert_rows_sql(TABLE, from, to)).await?;
                    }
                    let pace =
                        Duration::from_secs_f64(seconds * (i + 1) as f64 / statements as f64);
                    tokio::time::sleep_until((started + pace).into()).await;
                }
                self.sql("COMMIT").await?;
                let committed = Instant::now();
                let after = self.lsn("pg_current_wal_insert_lsn()").await?;
                Ok((committed, after - before))
            }
        }
    }

    /// The connector, streaming before the workload; commit → last row event in the sink.
    async fn stream_connector(&self, binary: bool, workload: Workload) -> Result<Sample> {
        self.reset(TABLE).await?;
        let rss = RssSampler::start();
        let options = PostgresOptions {
            binary,
            ..self.options.clone()
        };
        let source = PostgresSource::new(self.config(PUBLICATION, "bench_conn")?)
            .with_options(options)
            .with_stream_options(self.stream.clone());
        let stream = source.start(StartFrom::Beginning).await?;
        let mut sink = null_sink(stream, self.rows);
        wait(sink.snapshot_done, &mut sink.task, "empty snapshot").await?;
        self.wait_active("bench_conn").await?;
        let walsender = self.walsender_pid("bench_conn").await?;
        let ws_start = cpu_ticks(&walsender).map_or(0, |c| c.0);
        let (committed, wal) = self.run_workload(workload).await?;
        let cpu = self.cpu_now("self");
        let (done, batches, events) = wait(sink.rows_done, &mut sink.task, "streamed rows").await?;
        let cpu = self.cpu_since("self", cpu);
        let walsender_cpu = Self::process_cpu_since(&walsender, ws_start);
        let rss = rss.finish();
        let slot_stats = self.slot_stats("bench_conn").await?;
        sink.task.abort();
        let _ = sink.task.await;
        self.drop_slot("bench_conn").await?;
        Ok(Sample {
            elapsed: done - committed,
            bytes: wal,
            rss: Some(rss),
            cpu,
            batches: Some((batches, events)),
            walsender_cpu: Some(walsender_cpu),
            slot_stats: Some(slot_stats),
        })
    }

    /// Starts `pg_recvlogical` on slot `bench_recv` (which must exist), writing to /dev/null.
    fn spawn_recvlogical(&self) -> Result<tokio::process::Child> {
        let bin: PathBuf = self.server.bin_dir().join("pg_recvlogical");
        tokio::process::Command::new(&bin)
            .args(["-d", &self.server.url(), "--slot", "bench_recv", "--start"])
            .args([
                "-o",
                "proto_version=1",
                "-o",
                &format!("publication_names={PUBLICATION}"),
            ])
            .args(["-f", "/dev/null"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()).into())
    }

    /// Waits until `pg_recvlogical` (pid) wrote `expected` bytes more than `before`.
    async fn recvlogical_done(
        &self,
        pid: u32,
        before: u64,
        expected: u64,
        since: Instant,
    ) -> Result<Instant> {
        loop {
            let written = io_field(pid, "wchar").ok_or("pg_recvlogical exited")?;
            if written - before >= expected {
                return Ok(Instant::now());
            }
            if since.elapsed() > TIMEOUT {
                return Err(format!(
                    "pg_recvlogical wrote {} of {expected} bytes",
                    written - before
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// `pg_recvlogical` on its own slot; commit → its written bytes reach `expected`.
    async fn stream_recvlogical(&self, expected: u64, workload: Workload) -> Result<(Sample, u64)> {
        self.reset(TABLE).await?;
        self.sql("SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')")
            .await?;
        let mut child = self.spawn_recvlogical()?;
        let pid = child.id().ok_or("pg_recvlogical exited")?;
        self.wait_active("bench_recv").await?;
        let walsender = self.walsender_pid("bench_recv").await?;
        let ws_start = cpu_ticks(&walsender).map_or(0, |c| c.0);
        let before = io_field(pid, "wchar").ok_or("cannot read /proc/PID/io of pg_recvlogical")?;
        let (committed, wal) = self.run_workload(workload).await?;
        let client = pid.to_string();
        let cpu = self.cpu_now(&client);
        let done = self
            .recvlogical_done(pid, before, expected, committed)
            .await?;
        let cpu = self.cpu_since(&client, cpu);
        let walsender_cpu = Self::process_cpu_since(&walsender, ws_start);
        let hwm = status_kb(&client, "VmHWM").unwrap_or(0);
        let slot_stats = self.slot_stats("bench_recv").await?;
        let _ = child.kill().await;
        self.drop_slot("bench_recv").await?;
        Ok((
            Sample {
                elapsed: done - committed,
                bytes: wal,
                rss: None,
                cpu,
                batches: None,
                walsender_cpu: Some(walsender_cpu),
                slot_stats: Some(slot_stats),
            },
            hwm,
        ))
    }

    /// `txns` one-row transactions (a server-side loop: the client's round trips stay out).
    async fn small_workload(&self, txns: u64) -> Result<u64> {
        let before = self.lsn("pg_current_wal_insert_lsn()").await?;
        let insert =
            insert_rows_sql(TABLE, 0, 0).replace("generate_series(0, 0)", "generate_series(i, i)");
        self.sql(&format!(
            "DO $$ BEGIN FOR i IN 1..{txns} LOOP {insert}; COMMIT; END LOOP; END $$"
        ))
        .await?;
        let after = self.lsn("pg_current_wal_insert_lsn()").await?;
        Ok(after - before)
    }

    /// The connector catching up on `txns` one-row transactions written while it was away:
    /// start(Checkpoint) → last row.
    async fn small_connector(&self, txns: u64) -> Result<Sample> {
        self.reset(TABLE).await?;
        let source = PostgresSource::new(self.config(PUBLICATION, "bench_conn")?)
            .with_options(self.options.clone())
            .with_stream_options(self.stream.clone());
        let stream = source.start(StartFrom::Beginning).await?;
        let mut sink = null_sink(stream, u64::MAX);
        let (_, _, checkpoint) = wait(sink.snapshot_done, &mut sink.task, "empty snapshot").await?;
        sink.task.abort();
        let _ = sink.task.await;
        self.wait_inactive("bench_conn").await?;
        let wal = self.small_workload(txns).await?;
        let rss = RssSampler::start();
        let cpu = self.cpu_now("self");
        let started = Instant::now();
        let stream = source.start(StartFrom::Checkpoint(checkpoint)).await?;
        let mut sink = null_sink(stream, txns);
        let (done, batches, events) =
            wait(sink.rows_done, &mut sink.task, "small transactions").await?;
        let cpu = self.cpu_since("self", cpu);
        let rss = rss.finish();
        sink.task.abort();
        let _ = sink.task.await;
        let slot_stats = self.slot_stats("bench_conn").await?;
        self.drop_slot("bench_conn").await?;
        Ok(Sample {
            elapsed: done - started,
            bytes: wal,
            rss: Some(rss),
            cpu,
            batches: Some((batches, events)),
            walsender_cpu: None,
            slot_stats: Some(slot_stats),
        })
    }

    /// `pg_recvlogical` catching up on `txns` one-row transactions: start → `expected` bytes.
    async fn small_recvlogical(&self, txns: u64, expected: u64) -> Result<Sample> {
        self.reset(TABLE).await?;
        self.sql("SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')")
            .await?;
        let wal = self.small_workload(txns).await?;
        let started = Instant::now();
        let mut child = self.spawn_recvlogical()?;
        let pid = child.id().ok_or("pg_recvlogical exited")?;
        let client = pid.to_string();
        let cpu = self.cpu_now(&client);
        let done = self.recvlogical_done(pid, 0, expected, started).await?;
        let cpu = self.cpu_since(&client, cpu);
        let slot_stats = self.slot_stats("bench_recv").await?;
        let _ = child.kill().await;
        self.drop_slot("bench_recv").await?;
        Ok(Sample {
            elapsed: done - started,
            bytes: wal,
            rss: None,
            cpu,
            batches: None,
            walsender_cpu: None,
            slot_stats: Some(slot_stats),
        })
    }

    /// Waits until no walsender holds `slot`.
    async fn wait_inactive(&self, slot: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            let active: Option<bool> = self
                .ctl
                .query_opt(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await?
                .map(|r| r.get(0));
            if active != Some(true) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("slot {slot} stayed active").into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The table holds exactly `rows` rows, vacuumed (hint bits set, visibility map).
    async fn ensure_rows(&self) -> Result<()> {
        let count = self
            .query_u64(&format!("SELECT count(*)::int8 FROM {TABLE}"))
            .await?;
        if count != self.rows {
            self.reset(TABLE).await?;
            self.sql(&insert_rows_sql(TABLE, 1, self.rows)).await?;
        }
        for slot in ["bench_conn", "bench_recv"] {
            self.drop_slot(slot).await?;
        }
        self.sql(&format!("VACUUM (FREEZE, ANALYZE) {TABLE}"))
            .await?;
        self.sql("CHECKPOINT").await
    }

    async fn snapshot_copy(&self, heap: u64) -> Result<Sample> {
        let rss = RssSampler::start();
        let cpu = self.cpu_now("self");
        let started = Instant::now();
        let (client, conn) =
            tokio_postgres::connect(&self.server.url(), tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(conn);
        let stream = client.copy_out(&format!("COPY {TABLE} TO STDOUT")).await?;
        futures::pin_mut!(stream);
        let mut bytes = 0usize;
        while let Some(chunk) = stream.next().await {
            bytes += chunk?.len();
        }
        let elapsed = started.elapsed();
        let cpu = self.cpu_since("self", cpu);
        drop(client);
        let _ = conn.await;
        if bytes == 0 {
            return Err("COPY returned nothing".into());
        }
        Ok(Sample {
            elapsed,
            bytes: heap,
            rss: Some(rss.finish()),
            cpu,
            batches: None,
            walsender_cpu: None,
            slot_stats: None,
        })
    }

    async fn snapshot_connector(&self, parallelism: usize, heap: u64) -> Result<Sample> {
        self.drop_slot("bench_snap").await?;
        let rss = RssSampler::start();
        let config = self
            .config(PUBLICATION, "bench_snap")?
            .with_snapshot_parallelism(parallelism);
        let source = PostgresSource::new(config)
            .with_options(self.options.clone())
            .with_stream_options(self.stream.clone());
        let cpu = self.cpu_now("self");
        let started = Instant::now();
        let stream = source.start(StartFrom::Beginning).await?;
        let mut sink = null_sink(stream, u64::MAX);
        let (done, rows, _) = wait(sink.snapshot_done, &mut sink.task, "snapshot").await?;
        let cpu = self.cpu_since("self", cpu);
        let rss = rss.finish();
        sink.task.abort();
        let _ = sink.task.await;
        self.drop_slot("bench_snap").await?;
        if rows != self.rows {
            return Err(format!("snapshot emitted {rows} rows, expected {}", self.rows).into());
        }
        Ok(Sample {
            elapsed: done - started,
            bytes: heap,
            rss: Some(rss),
            cpu,
            batches: None,
            walsender_cpu: None,
            slot_stats: None,
        })
    }

    /// One transaction of `rows` rows of 1 KB text through the connector.
    async fn big_transaction(&self, rows: u64) -> Result<Sample> {
        eprintln!("big transaction: {rows} rows of 1 KB…");
        self.sql(&format!(
            "CREATE TABLE IF NOT EXISTS {BIG_TABLE} (id bigint PRIMARY KEY, payload text)"
        ))
        .await?;
        let exists = self
            .ctl
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&BIG_PUBLICATION],
            )
            .await?
            .is_some();
        if !exists {
            self.sql(&format!(
                "CREATE PUBLICATION {BIG_PUBLICATION} FOR TABLE {BIG_TABLE}"
            ))
            .await?;
        }
        self.reset(BIG_TABLE).await?;
        let rss = RssSampler::start();
        let source = PostgresSource::new(self.config(BIG_PUBLICATION, "bench_big_conn")?)
            .with_options(self.options.clone())
            .with_stream_options(self.stream.clone());
        let stream = source.start(StartFrom::Beginning).await?;
        let mut sink = null_sink(stream, rows);
        wait(sink.snapshot_done, &mut sink.task, "empty snapshot").await?;
        self.wait_active("bench_big_conn").await?;
        let walsender = self.walsender_pid("bench_big_conn").await?;
        let ws_start = cpu_ticks(&walsender).map_or(0, |c| c.0);
        let sql = format!(
            "INSERT INTO {BIG_TABLE} SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, {rows}) AS g"
        );
        let (committed, wal) = self.workload(&sql).await?;
        let cpu = self.cpu_now("self");
        let (done, batches, events) =
            wait(sink.rows_done, &mut sink.task, "big transaction").await?;
        let cpu = self.cpu_since("self", cpu);
        let walsender_cpu = Self::process_cpu_since(&walsender, ws_start);
        let rss = rss.finish();
        let slot_stats = self.slot_stats("bench_big_conn").await?;
        sink.task.abort();
        let _ = sink.task.await;
        self.drop_slot("bench_big_conn").await?;
        self.sql(&format!("TRUNCATE {BIG_TABLE}")).await?;
        Ok(Sample {
            elapsed: done - committed,
            bytes: wal,
            rss: Some(rss),
            cpu,
            batches: Some((batches, events)),
            walsender_cpu: Some(walsender_cpu),
            slot_stats: Some(slot_stats),
        })
    }
}
