//! `consume`: a SQLite mirror built from a JetStream stream written by `publish`.
//!
//! ```text
//! consume --nats nats://host:4222 --db mirror.sqlite [--stream NAME] [--subject-prefix P]
//!         [--exit-when-idle SECONDS] [--durable] [--metrics-addr HOST:PORT]
//! ```
//!
//! The SQLite layout is `mirror`'s (`powersync_source_sqlite`); the stream sequence of the
//! last applied commit marker is stored in the same file, in the same transaction as the
//! rows, under the state key `jetstream`. Exit statuses: `examples::cli`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use examples::cli::{self, AppError, MetricsArgs};
use examples::jetstream::connection::StreamTarget;
use examples::jetstream::consumer::{self, ConsumeOptions};
use examples::jetstream::ids;
use examples::jetstream::publisher::Outcome;
use powersync_source_core::SourceError;

/// Build a SQLite mirror from a JetStream stream written by `publish`.
// No `Debug`: the arguments hold the source URL, which may carry a password.
#[derive(Parser)]
#[command(name = "consume", version)]
struct Args {
    /// The NATS server, `nats://host:port` (credentials: `nats://user:password@host:port`).
    #[arg(long, value_name = "URL")]
    nats: String,
    /// The JetStream stream.
    #[arg(long, value_name = "NAME", default_value = "POWERSYNC")]
    stream: String,
    /// The subject prefix `publish` used.
    #[arg(long, value_name = "P", default_value = "powersync")]
    subject_prefix: String,
    /// The SQLite file (created if missing; resumes from the stream position stored in it).
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// Exit with status 0 once no message has arrived for this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = cli::parse_seconds)]
    exit_when_idle: Option<Duration>,
    /// `synchronous=FULL`: applied changes survive a power loss, not only a crash.
    #[arg(long)]
    durable: bool,
    /// Seconds between progress log lines.
    #[arg(long, value_name = "SECONDS", value_parser = cli::parse_seconds, default_value = "10")]
    progress_interval: Duration,
    #[command(flatten)]
    metrics: MetricsArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_tracing();
    cli::run_main("consume", run(args))
}

async fn run(args: Args) -> Result<ExitCode, AppError> {
    args.metrics.install()?;
    ids::validate_prefix(&args.subject_prefix)
        .map_err(|e| AppError::Source(SourceError::config(format!("--subject-prefix: {e}"))))?;
    let target = StreamTarget {
        url: args.nats.clone(),
        stream: args.stream.clone(),
        prefix: args.subject_prefix.clone(),
    };
    let options = ConsumeOptions {
        durable: args.durable,
        exit_when_idle: args.exit_when_idle,
        progress_interval: args.progress_interval,
        ..ConsumeOptions::default()
    };
    let (outcome, totals) = consumer::run(&target, &args.db, &options).await?;
    tracing::info!(
        "consumed: {} units, {} messages applied, {} repeated and {} leftover messages skipped",
        totals.units,
        totals.messages,
        totals.repeated,
        totals.stale
    );
    Ok(match outcome {
        Outcome::Idle | Outcome::Ended => ExitCode::SUCCESS,
        Outcome::Interrupted => ExitCode::from(130),
    })
}
