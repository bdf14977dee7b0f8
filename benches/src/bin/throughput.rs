//! End-to-end throughput of the PostgreSQL connector against the physical limits measured in
//! the same run on the same throwaway server: `pg_recvlogical` (raw pgoutput, no decoding) for
//! streaming, `COPY … TO STDOUT` for the snapshot. See `benches/README.md`.
//!
//! ```text
//! cargo run --release -p benches --bin throughput -- --source postgres \
//!     [--rows N] [--runs K] [--big-transaction-mb M] [--phases streaming,snapshot,big]
//! ```

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
use powersync_source_core::{ChangeEvent, ChangeSource, ChangeStream, SnapshotProgress, StartFrom};
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
    #[arg(long, value_delimiter = ',', default_value = "streaming,snapshot,big")]
    phases: Vec<String>,
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
        .setting("logical_decoding_work_mem", "1GB")
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

    if want("streaming") {
        eprintln!("streaming: measuring the baseline's output size…");
        let expected = bench.recvlogical_output_bytes().await?;
        let mut conn_bin = Series::default();
        let mut conn_text = Series::default();
        let mut base = Series::default();
        let mut base_hwm = 0u64;
        for run in 0..args.runs {
            for k in 0..3 {
                match (run + k) % 3 {
                    0 => conn_bin.samples.push(bench.stream_connector(true).await?),
                    1 => conn_text.samples.push(bench.stream_connector(false).await?),
                    _ => {
                        let (s, hwm) = bench.stream_recvlogical(expected).await?;
                        base_hwm = base_hwm.max(hwm);
                        base.samples.push(s);
                    }
                }
                eprintln!(
                    "  run {run}: binary [{}] text [{}] pg_recvlogical [{}]",
                    conn_bin.runs(),
                    conn_text.runs(),
                    base.runs()
                );
            }
        }
        let what = "pg_recvlogical (pgoutput proto 1, text tuples)";
        table.push(row(
            &format!("Streaming {} rows, one txn, binary tuples", group(n)),
            n,
            &conn_bin,
            &base,
            what,
            "WAL",
        ));
        table.push(row(
            &format!("Streaming {} rows, one txn, text tuples", group(n)),
            n,
            &conn_text,
            &base,
            what,
            "WAL",
        ));
        notes.push(format!(
            "pg_recvlogical peak RSS (VmHWM): {}",
            mb_kib(base_hwm)
        ));
        notes.push(format!(
            "connector events per batch received by the sink, per run: binary [{}], text [{}] (batch_events = {}, size_of::<ChangeEvent>() = {} bytes)",
            conn_bin.events_per_batch(),
            conn_text.events_per_batch(),
            bench.stream.batch_events,
            std::mem::size_of::<ChangeEvent>()
        ));
        notes.push(format!(
            "streaming runs (s): binary [{}], text [{}], pg_recvlogical [{}]",
            conn_bin.runs(),
            conn_text.runs(),
            base.runs()
        ));
        notes.push(format!(
            "pg_recvlogical end = its write() byte count (/proc/PID/io wchar, polled every 1 ms) reaches {} bytes, the pgoutput output of the transaction plus one newline per message, measured beforehand with pg_logical_slot_get_binary_changes on a scratch slot",
            group(expected)
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
        let rows = args.big_transaction_mb * 1024;
        let s = bench.big_transaction(rows).await?;
        let series = Series { samples: vec![s] };
        table.push(format!(
            "| Big transaction: {} MB ({} rows of 1 KB text), binary tuples | {} | — | — | {} | {} |",
            args.big_transaction_mb,
            group(rows),
            figure(rows, &series, "WAL"),
            rss_cell(&series),
            cpu_cell(&series)
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
        "- server: PostgreSQL {version} (testkit; fsync=off, shared_buffers=1GB, max_wal_size=32GB, full_page_writes=off, autovacuum=off, logical_decoding_work_mem=1GB)"
    );
    let _ = writeln!(out, "- median of {} runs, connector and baseline alternated, never concurrent; MB = 10^6 bytes\n", args.runs);
    let _ = writeln!(
        out,
        "| Figure | Connector | Baseline | Ratio (connector/baseline, >1 = faster) | Connector process peak RSS (growth) | CPU s while clocked, client + server: connector / baseline |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
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
    format!(
        "| {name} | {} | {base_what}: {} | **{ratio:.2}×** | {} | {} / {} |",
        figure(rows, conn, unit),
        figure(rows, base, unit),
        rss_cell(conn),
        cpu_cell(conn),
        cpu_cell(base)
    )
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
    snapshot_done: oneshot::Receiver<(Instant, u64)>,
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
                            let _ = tx.send((Instant::now(), rows));
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

    /// Bytes `pg_recvlogical -f` writes for the workload: every pgoutput message plus a newline.
    async fn recvlogical_output_bytes(&self) -> Result<u64> {
        self.reset(TABLE).await?;
        self.sql("SELECT pg_create_logical_replication_slot('bench_calib', 'pgoutput')")
            .await?;
        self.workload(&insert_rows_sql(TABLE, 1, self.rows)).await?;
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

    /// The connector, streaming before the workload; commit → last row event in the sink.
    async fn stream_connector(&self, binary: bool) -> Result<Sample> {
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
        let (committed, wal) = self.workload(&insert_rows_sql(TABLE, 1, self.rows)).await?;
        let cpu = self.cpu_now("self");
        let (done, batches, events) = wait(sink.rows_done, &mut sink.task, "streamed rows").await?;
        let cpu = self.cpu_since("self", cpu);
        let rss = rss.finish();
        sink.task.abort();
        let _ = sink.task.await;
        self.drop_slot("bench_conn").await?;
        Ok(Sample {
            elapsed: done - committed,
            bytes: wal,
            rss: Some(rss),
            cpu,
            batches: Some((batches, events)),
        })
    }

    /// `pg_recvlogical` on its own slot; commit → its written bytes reach `expected`.
    async fn stream_recvlogical(&self, expected: u64) -> Result<(Sample, u64)> {
        self.reset(TABLE).await?;
        self.sql("SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')")
            .await?;
        let bin: PathBuf = self.server.bin_dir().join("pg_recvlogical");
        let mut child = tokio::process::Command::new(&bin)
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
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let pid = child.id().ok_or("pg_recvlogical exited")?;
        self.wait_active("bench_recv").await?;
        let before = io_field(pid, "wchar").ok_or("cannot read /proc/PID/io of pg_recvlogical")?;
        let (committed, wal) = self.workload(&insert_rows_sql(TABLE, 1, self.rows)).await?;
        let client = pid.to_string();
        let cpu = self.cpu_now(&client);
        let done = loop {
            let written = io_field(pid, "wchar").ok_or("pg_recvlogical exited")?;
            if written - before >= expected {
                break Instant::now();
            }
            if committed.elapsed() > TIMEOUT {
                return Err(format!(
                    "pg_recvlogical wrote {} of {expected} bytes",
                    written - before
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let cpu = self.cpu_since(&client, cpu);
        let hwm = status_kb(&client, "VmHWM").unwrap_or(0);
        let _ = child.kill().await;
        self.drop_slot("bench_recv").await?;
        Ok((
            Sample {
                elapsed: done - committed,
                bytes: wal,
                rss: None,
                cpu,
                batches: None,
            },
            hwm,
        ))
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
        let (done, rows) = wait(sink.snapshot_done, &mut sink.task, "snapshot").await?;
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
        let sql = format!(
            "INSERT INTO {BIG_TABLE} SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, {rows}) AS g"
        );
        let (committed, wal) = self.workload(&sql).await?;
        let cpu = self.cpu_now("self");
        let (done, batches, events) =
            wait(sink.rows_done, &mut sink.task, "big transaction").await?;
        let cpu = self.cpu_since("self", cpu);
        let rss = rss.finish();
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
        })
    }
}
