//! `mirror`: keep a SQLite file in sync with a database.
//!
//! ```text
//! mirror <SOURCE-URL> <SQLITE-FILE> [--table NAME]... [--exit-when-idle SECONDS]
//!        [--publication NAME] [--slot NAME] [--deploy-key KEY] [--durable]
//!        [--metrics-addr HOST:PORT]
//! ```
//!
//! The file's layout and the consistency rules are in `powersync_source_sqlite`. Progress goes
//! to stderr; at the end of the snapshot and at exit, a line `mirror: summary {json}` gives the
//! run's totals so far (`examples::progress::Summary`). Exit statuses: `examples::cli`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use examples::cli::{self, AppError, MetricsArgs, SourceArgs};
use examples::progress::Progress;
use futures::StreamExt;
use powersync_source::{ChangeEvent, ChangeStream, SnapshotProgress, StartFrom};
use powersync_source_sqlite::{Committed, GroupPolicy, Mirror, MirrorOptions};
use tokio::time::Instant;

/// Keep a SQLite file in sync with a database.
// No `Debug`: the arguments hold the source URL, which may carry a password.
#[derive(Parser)]
#[command(name = "mirror", version)]
struct Args {
    /// The source: postgres://user:password@host:port/dbname, mysql:// or mariadb://,
    /// mongodb:// or mongodb+srv://, sqlserver://, convex+https:// (any scheme this build
    /// has a connector for).
    #[arg(value_name = "SOURCE-URL")]
    url: String,
    /// The SQLite file (created if missing; resumes from the position stored in it).
    #[arg(value_name = "SQLITE-FILE")]
    sqlite: PathBuf,
    #[command(flatten)]
    source: SourceArgs,
    /// Exit with status 0 once the snapshot is done and no change has arrived for this many
    /// seconds (keepalives do not count).
    #[arg(long, value_name = "SECONDS", value_parser = cli::parse_seconds)]
    exit_when_idle: Option<Duration>,
    /// `synchronous=FULL`: acknowledged changes survive a power loss, not only a crash.
    #[arg(long)]
    durable: bool,
    /// Ignore the stored position and start over with a fresh snapshot (e.g. after the
    /// source lost the history needed to resume).
    #[arg(long)]
    resnapshot: bool,
    /// Seconds between progress log lines when stderr is not a terminal.
    #[arg(long, value_name = "SECONDS", value_parser = cli::parse_seconds, default_value = "10")]
    progress_interval: Duration,
    /// Group consecutive source transactions into one SQLite transaction for at most this
    /// many milliseconds...
    #[arg(long, value_name = "MS", default_value_t = 200)]
    group_ms: u64,
    /// ...or this many rows.
    #[arg(long, value_name = "ROWS", default_value_t = 20_000)]
    group_rows: u64,
    #[command(flatten)]
    metrics: MetricsArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_tracing();
    cli::run_main("mirror", run(args))
}

async fn run(args: Args) -> Result<ExitCode, AppError> {
    args.metrics.install()?;
    let source = powersync_source::open(&args.url, &args.source.options())?;
    // Snapshot groups end at the source's chunk ends (and every 200,000 rows, the policy's
    // default, for sources that report chunk ends rarely), not by time.
    let policy = GroupPolicy::default()
        .with_max_age(Duration::from_millis(args.group_ms))
        .with_max_rows(args.group_rows);
    let mut mirror = Mirror::open(
        &args.sqlite,
        &MirrorOptions::default()
            .with_durable(args.durable)
            .with_group_policy(policy),
    )?;
    let from = if args.resnapshot {
        StartFrom::Beginning
    } else {
        mirror.start_from()?
    };
    match &from {
        StartFrom::Beginning => tracing::info!("starting from the beginning (snapshot)"),
        StartFrom::Checkpoint(c) => tracing::info!("resuming from {c}"),
        StartFrom::Snapshot(_) => tracing::info!("resuming the interrupted snapshot"),
    }
    // `start()` runs `check()`: an unready source fails there with every problem and its
    // fix, and warnings are logged.
    let selected = source.discover().await?;
    mirror.plan_names(&selected);
    mirror.begin_run(&from)?;
    let mut stream = source.start(from.clone()).await?;

    let mut progress = Progress::new(args.progress_interval);
    if matches!(from, StartFrom::Checkpoint(_)) {
        progress.streaming_started();
    }
    let result = stream_loop(&args, &mut mirror, &mut stream, &mut progress).await;
    print_summary(&mut progress, &stream);
    result
}

/// One machine-readable line with the run's totals (at the end of the snapshot and at exit).
fn print_summary(progress: &mut Progress, stream: &ChangeStream) {
    progress.clear_line();
    let summary = progress.summary(&stream.stats().snapshot());
    eprintln!(
        "mirror: summary {}",
        serde_json::to_string(&summary).unwrap_or_default()
    );
}

async fn stream_loop(
    args: &Args,
    mirror: &mut Mirror,
    stream: &mut ChangeStream,
    progress: &mut Progress,
) -> Result<ExitCode, AppError> {
    let idle = args.exit_when_idle;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut idle_deadline = Instant::now() + idle.unwrap_or(Duration::ZERO);
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    loop {
        // The sink's group policy says when an open group is old enough to commit.
        let commit_deadline = mirror.commit_deadline().map_or(far, Instant::from_std);
        let batch = tokio::select! {
            batch = stream.next() => batch,
            _ = tokio::time::sleep_until(commit_deadline), if commit_deadline < far => {
                acknowledge(mirror.commit()?, stream)?;
                continue;
            }
            _ = tokio::time::sleep_until(idle_deadline),
                if idle.is_some() && !mirror.in_snapshot_phase() && mirror.at_boundary() => {
                acknowledge(mirror.commit()?, stream)?;
                tracing::info!("no change for {:?}; exiting", idle.unwrap_or_default());
                return Ok(ExitCode::SUCCESS);
            }
            _ = ticker.tick() => {
                progress.tick(&stream.stats().snapshot());
                continue;
            }
            _ = &mut ctrl_c => {
                mirror.abort_transaction()?;
                acknowledge(mirror.commit()?, stream)?;
                return Ok(ExitCode::from(130));
            }
        };
        let batch = match batch {
            None => {
                mirror.abort_transaction()?;
                acknowledge(mirror.commit()?, stream)?;
                tracing::info!("the change stream ended");
                return Ok(ExitCode::SUCCESS);
            }
            Some(Err(e)) => {
                // Keep what is complete; the half-applied transaction will be resent.
                mirror.abort_transaction()?;
                acknowledge(mirror.commit()?, stream)?;
                return Err(e.into());
            }
            Some(Ok(batch)) => batch,
        };
        let mut active = false;
        for event in &batch.events {
            progress.on_event(event);
            if !matches!(
                event,
                ChangeEvent::Keepalive(_) | ChangeEvent::CheckpointObserved(_)
            ) {
                active = true;
            }
            acknowledge(mirror.feed(event)?, stream)?;
            if let ChangeEvent::Snapshot(SnapshotProgress::Done { .. }) = event {
                print_summary(progress, stream);
            }
        }
        if active {
            if let Some(idle) = idle {
                idle_deadline = Instant::now() + idle;
            }
        }
    }
}

/// Acknowledges the checkpoint of a SQLite commit to the source: it is durable now.
fn acknowledge(committed: Option<Committed>, stream: &ChangeStream) -> Result<(), AppError> {
    if let Some(checkpoint) = committed.and_then(|c| c.checkpoint) {
        stream.ack(&checkpoint)?;
    }
    Ok(())
}
