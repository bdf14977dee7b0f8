//! `publish`: a database's changes into a NATS JetStream stream, effectively once.
//!
//! ```text
//! publish <SOURCE-URL> --nats nats://host:4222 [--stream NAME] [--subject-prefix P]
//!         [--table NAME]... [--replicas N] [--duplicate-window SECONDS] [--max-bytes N]
//!         [--max-in-flight N] [--exit-when-idle SECONDS] [--publication NAME] [--slot NAME]
//!         [--metrics-addr HOST:PORT]
//! ```
//!
//! Creates the stream if missing (file storage, subjects `P.>`), publishes each transaction's
//! changes on `P.<schema>.<table>` (the JSON shape of `tail`) followed by a commit marker on
//! `P._commit`, acknowledges the source once JetStream stored them, and resumes from the last
//! marker in the stream after a restart. The delivery contract is in
//! `examples::jetstream`. Exit statuses: `examples::cli`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use examples::cli::{self, AppError, MetricsArgs, SourceArgs};
use examples::jetstream::connection::{StreamSettings, StreamTarget};
use examples::jetstream::ids;
use examples::jetstream::publisher::{self, Outcome, PublishOptions};
use powersync_source::SourceError;

/// Publish a database's changes into a NATS JetStream stream.
// No `Debug`: the arguments hold the source URL, which may carry a password.
#[derive(Parser)]
#[command(name = "publish", version)]
struct Args {
    /// The source: postgres://user:password@host:port/dbname, or any other scheme this build
    /// has a connector for.
    #[arg(value_name = "SOURCE-URL")]
    url: String,
    /// The NATS server, `nats://host:port` (credentials: `nats://user:password@host:port`).
    #[arg(long, value_name = "URL")]
    nats: String,
    /// The JetStream stream (created if missing).
    #[arg(long, value_name = "NAME", default_value = "POWERSYNC")]
    stream: String,
    /// Subject prefix P: changes go to `P.<schema>.<table>`, commit markers to `P._commit`.
    #[arg(long, value_name = "P", default_value = "powersync")]
    subject_prefix: String,
    #[command(flatten)]
    source: SourceArgs,
    /// Replicas of a newly created stream (a JetStream cluster: 3 or 5).
    #[arg(long, value_name = "N", default_value_t = 1)]
    replicas: usize,
    /// Duplicate window of a newly created stream: a publisher restarting within it never
    /// stores a message twice (consumers de-duplicate anyway).
    #[arg(long, value_name = "SECONDS", value_parser = cli::parse_seconds, default_value = "1200")]
    duplicate_window: Duration,
    /// Size limit of a newly created stream in bytes; when full, publishing waits.
    #[arg(long, value_name = "BYTES")]
    max_bytes: Option<i64>,
    /// Messages awaiting their JetStream ack at most.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_in_flight: usize,
    /// Exit with status 0 once the snapshot is done, everything is acked and no change has
    /// arrived for this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = cli::parse_seconds)]
    exit_when_idle: Option<Duration>,
    #[command(flatten)]
    metrics: MetricsArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_tracing();
    cli::run_main("publish", run(args))
}

async fn run(args: Args) -> Result<ExitCode, AppError> {
    args.metrics.install()?;
    ids::validate_prefix(&args.subject_prefix)
        .map_err(|e| AppError::Source(SourceError::config(format!("--subject-prefix: {e}"))))?;
    if args.replicas == 0 || args.replicas > 5 {
        return Err(SourceError::config("--replicas must be between 1 and 5").into());
    }
    if args.duplicate_window < Duration::from_secs(1) {
        return Err(SourceError::config("--duplicate-window must be at least 1 second").into());
    }
    let source = powersync_source::open(&args.url, &args.source.options())?;
    let target = StreamTarget {
        url: args.nats.clone(),
        stream: args.stream.clone(),
        prefix: args.subject_prefix.clone(),
    };
    let options = PublishOptions {
        settings: StreamSettings {
            replicas: args.replicas,
            duplicate_window: args.duplicate_window,
            max_bytes: args.max_bytes,
        },
        max_in_flight: args.max_in_flight.max(1),
        exit_when_idle: args.exit_when_idle,
        ..PublishOptions::default()
    };
    let (outcome, totals) = publisher::run(source.as_ref(), &target, &options).await?;
    tracing::info!(
        "published: {} messages stored, {} duplicates dropped by JetStream, {} commit markers, {} restarts",
        totals.stored,
        totals.duplicates,
        totals.markers,
        totals.restarts
    );
    Ok(match outcome {
        Outcome::Idle | Outcome::Ended => ExitCode::SUCCESS,
        Outcome::Interrupted => ExitCode::from(130),
    })
}
