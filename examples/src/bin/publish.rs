//! `publish`: a database's changes into a NATS JetStream stream, effectively once.
//!
//! ```text
//! publish <SOURCE-URL> --nats nats://host:4222 [--stream NAME] [--subject-prefix P]
//!         [--table NAME]... [--replicas N] [--duplicate-window SECONDS] [--max-bytes N]
//!         [--rows-per-message N] [--message-bytes BYTES] [--max-in-flight N]
//!         [--max-in-flight-bytes BYTES] [--exit-when-idle SECONDS] [--publication NAME]
//!         [--slot NAME] [--metrics-addr HOST:PORT]
//! ```
//!
//! Creates the stream if missing (file storage, subjects `P.>`), publishes each transaction's
//! changes on `P.<schema>.<table>` (the JSON lines of `tail`, packed several rows to a
//! message) followed by a commit marker on `P._commit`, acknowledges the source once
//! JetStream stored them, and resumes from the last marker in the stream after a restart. The delivery contract is in
//! `examples::jetstream`. Exit statuses: `examples::cli`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use examples::cli::{self, AppError, MetricsArgs, SourceArgs};
use examples::jetstream::connection::{StreamSettings, StreamTarget};
use examples::jetstream::framing::PackLimits;
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
    /// Most rows in one message (rows of one transaction and one table); 1 writes one row per
    /// message in line format version 1, as publishers before packing did.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    rows_per_message: u64,
    /// Most bytes of rows in one message (a larger row gets a message of its own); keep it
    /// well below the NATS server's max_payload (default 1 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = 65_536)]
    message_bytes: usize,
    /// Messages awaiting their JetStream ack at most (1 to 10000).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_in_flight: usize,
    /// Payload bytes awaiting their JetStream ack at most.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    max_in_flight_bytes: usize,
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
    if args.max_in_flight == 0 || args.max_in_flight > 10_000 {
        // Consumers drop a base that waited for STALE_AFTER_UNITS units as a leftover; a
        // publisher's window must stay far below that.
        return Err(SourceError::config("--max-in-flight must be between 1 and 10000").into());
    }
    if args.rows_per_message == 0 || args.message_bytes == 0 {
        return Err(
            SourceError::config("--rows-per-message and --message-bytes must be positive").into(),
        );
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
        max_in_flight: args.max_in_flight,
        max_in_flight_bytes: args.max_in_flight_bytes.max(1),
        packing: PackLimits {
            rows: args.rows_per_message,
            bytes: args.message_bytes,
        },
        exit_when_idle: args.exit_when_idle,
        ..PublishOptions::default()
    };
    let (outcome, totals) = publisher::run(source.as_ref(), &target, &options).await?;
    tracing::info!(
        "published: {} messages stored, {} duplicates dropped by JetStream, {} units closed by {} commit-marker messages, {} restarts",
        totals.stored,
        totals.duplicates,
        totals.markers,
        totals.marker_messages,
        totals.restarts
    );
    Ok(match outcome {
        Outcome::Idle | Outcome::Ended => ExitCode::SUCCESS,
        Outcome::Interrupted => ExitCode::from(130),
    })
}
