//! What the binaries share on the command line: source options, the idle timeout, logging,
//! errors and exit statuses.
//!
//! # Exit statuses
//! | status | meaning |
//! |---|---|
//! | 0 | success; `--exit-when-idle` elapsed; stdout closed by the reader (`tail … \| head`) |
//! | 1 | anything else: connection lost for good, replication history lost, schema change the stream cannot follow, SQLite or I/O failure |
//! | 2 | a configuration problem: bad command line or URL ([`ErrorKind::Config`]), source not set up for replication ([`ErrorKind::Prerequisite`]), credentials rejected ([`ErrorKind::Auth`]), connector not available ([`ErrorKind::Unsupported`]) |
//! | 130 | interrupted (Ctrl-C) |
//!
//! Auth and Unsupported count as configuration problems too: like a bad URL, retrying without a
//! change cannot help. The message (the error's `Display`, with its hint) goes to stderr.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use powersync_source::{ErrorKind, Options, SourceError};
use powersync_source_sqlite::SinkError;

/// Source options every binary accepts. `Debug` never shows the deploy key.
#[derive(Clone, Default, clap::Args)]
pub struct SourceArgs {
    /// A table to replicate, `schema.name` or `name`; repeat for several. Without a dot the
    /// schema is `public` (PostgreSQL), `dbo` (SQL Server), `convex` (Convex) or the URL's
    /// database (MySQL/MariaDB: `database.table`; MongoDB: `database.collection`). Default:
    /// every table the source publishes.
    #[arg(long = "table", value_name = "NAME")]
    pub tables: Vec<String>,
    /// PostgreSQL: the publication to replicate (default `powersync`; overrides the URL's
    /// `publication` parameter).
    #[arg(long, value_name = "NAME")]
    pub publication: Option<String>,
    /// PostgreSQL: the replication slot (default `powersync_<dbname>`; overrides the URL's
    /// `slot` parameter).
    #[arg(long, value_name = "NAME")]
    pub slot: Option<String>,
    /// Convex: the deploy key (or the `CONVEX_DEPLOY_KEY` environment variable, which keeps it
    /// out of the process list).
    #[arg(
        long,
        value_name = "KEY",
        env = "CONVEX_DEPLOY_KEY",
        hide_env_values = true
    )]
    pub deploy_key: Option<String>,
    /// Rows per backfill chunk (PostgreSQL, MySQL/MariaDB, MongoDB): a backfill — requested by
    /// inserting a row into the source's `_powersync_signals` table, or for a table that
    /// enters the selection while streaming — reads this many rows between two watermarks and
    /// applies them as one transaction. Default 4096.
    #[arg(long, value_name = "ROWS", value_parser = clap::value_parser!(u64).range(1..))]
    pub backfill_chunk_rows: Option<u64>,
}

impl fmt::Debug for SourceArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceArgs")
            .field("tables", &self.tables)
            .field("publication", &self.publication)
            .field("slot", &self.slot)
            .field("deploy_key", &self.deploy_key.as_ref().map(|_| "***"))
            .field("backfill_chunk_rows", &self.backfill_chunk_rows)
            .finish()
    }
}

impl SourceArgs {
    /// The options for [`powersync_source::open`].
    pub fn options(&self) -> Options {
        let mut options = Options::new().with_tables(self.tables.iter().cloned());
        if let Some(publication) = &self.publication {
            options = options.with_publication(publication.clone());
        }
        if let Some(slot) = &self.slot {
            options = options.with_slot(slot.clone());
        }
        if let Some(key) = &self.deploy_key {
            options = options.with_deploy_key(key.clone());
        }
        if let Some(rows) = self.backfill_chunk_rows {
            let stream = options
                .stream_options()
                .clone()
                .with_backfill_chunk_rows(rows as usize);
            options = options.with_stream_options(stream);
        }
        options
    }
}

/// `--metrics-addr`, which `tail`, `mirror`, `publish` and `consume` accept.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct MetricsArgs {
    /// Serve metrics in the Prometheus text format over HTTP on this address (`HOST:PORT`,
    /// e.g. `127.0.0.1:9464`; any path answers, `/metrics` by convention). The names are in
    /// the README's "Monitoring" section. Bind to a loopback or private address: the endpoint
    /// has no authentication (it shows table names, never credentials).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_socket_addr)]
    pub metrics_addr: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Starts the exporter when `--metrics-addr` was given. Call it inside the Tokio runtime
    /// and before opening the source: a stream binds its metrics when it starts, and metrics
    /// bound before a recorder exists stay silent.
    pub fn install(&self) -> Result<(), AppError> {
        let Some(addr) = self.metrics_addr else {
            return Ok(());
        };
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| AppError::Other(format!("--metrics-addr {addr}: {e}")))?;
        powersync_source_core::telemetry::describe();
        tracing::info!("serving metrics on http://{addr}/metrics");
        Ok(())
    }
}

/// Parses `HOST:PORT` (a host name is resolved once, at start; its first address is used).
fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("`{s}` is not HOST:PORT: {e}"))?
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}

/// Parses `--exit-when-idle` seconds (fractions allowed).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// stderr for log lines: clears an in-place progress line first.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        crate::progress::clear_progress_line(&mut err);
        err.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Why a binary stopped.
#[derive(Debug)]
pub enum AppError {
    /// From the source (or a source-side configuration problem).
    Source(SourceError),
    /// Reading or writing a file or stdout.
    Io(std::io::Error),
    /// The SQLite mirror.
    Sink(SinkError),
    /// Anything else, already worded for the user.
    Other(String),
}

impl AppError {
    /// The process exit status for this error (see the module docs).
    pub fn exit_status(&self) -> u8 {
        match self {
            AppError::Source(e) => exit_status_for(e.kind()),
            _ => 1,
        }
    }
}

/// 2 for configuration problems (Config, Prerequisite, Auth, Unsupported), 1 otherwise.
pub fn exit_status_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Config | ErrorKind::Prerequisite | ErrorKind::Auth | ErrorKind::Unsupported => 2,
        _ => 1,
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Source(e) => e.fmt(f),
            AppError::Io(e) => write!(f, "I/O error: {e}"),
            AppError::Sink(e) => e.fmt(f),
            AppError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for AppError {}

impl From<SourceError> for AppError {
    fn from(e: SourceError) -> Self {
        AppError::Source(e)
    }
}

impl From<std::io::Error> for AppError {
    fn from(e: std::io::Error) -> Self {
        AppError::Io(e)
    }
}

impl From<SinkError> for AppError {
    fn from(e: SinkError) -> Self {
        match e {
            // An unreadable stored position keeps its kind (a configuration error, status 2).
            SinkError::Position(e) => AppError::Source(e),
            e => AppError::Sink(e),
        }
    }
}

#[cfg(feature = "jetstream")]
impl From<crate::jetstream::consumer::ConsumeError> for AppError {
    fn from(e: crate::jetstream::consumer::ConsumeError) -> Self {
        use crate::jetstream::consumer::ConsumeError;
        match e {
            ConsumeError::Source(e) => AppError::Source(e),
            ConsumeError::Sink(e) => e.into(),
            e @ ConsumeError::Stream { .. } => AppError::Other(e.to_string()),
        }
    }
}

/// Runs `fut` on a multi-threaded Tokio runtime and turns its outcome into an exit status,
/// printing the error (prefixed by the program name) on stderr.
///
/// The program runs as a task on the runtime's workers, not on the thread that started the
/// runtime: the loop taking batches off a change stream then mostly shares a worker with the
/// stream's task, so a row is freed on the thread that allocated it. On the starting thread
/// every row crosses threads, which glibc's allocator makes cost about as much CPU again as
/// the connector's own work (`mysql-throughput` prints both placements).
pub fn run_main<F>(program: &str, fut: F) -> ExitCode
where
    F: std::future::Future<Output = Result<ExitCode, AppError>> + Send + 'static,
{
    run(program, async {
        match tokio::spawn(fut).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(AppError::Other(format!("the program's task stopped: {e}"))),
        }
    })
}

/// [`run_main`] for a program that reads no change stream and whose future is not `Send`
/// (it holds the locked stdout across awaits): it runs on the starting thread.
pub fn run_main_local<F>(program: &str, fut: F) -> ExitCode
where
    F: std::future::Future<Output = Result<ExitCode, AppError>>,
{
    run(program, fut)
}

fn run<F>(program: &str, fut: F) -> ExitCode
where
    F: std::future::Future<Output = Result<ExitCode, AppError>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(fut);
    // Connector tasks may still hold connections; don't wait for them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::from(e.exit_status())
        }
    }
}
