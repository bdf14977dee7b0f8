//! `tail`: watch a database's changes as JSON lines.
//!
//! ```text
//! tail <SOURCE-URL> [--table NAME]... [--checkpoint-file PATH] [--exit-when-idle SECONDS]
//!      [--publication NAME] [--slot NAME] [--deploy-key KEY] [--metrics-addr HOST:PORT]
//! ```
//!
//! One JSON object per line on stdout (format: `examples::json_lines`), logs on stderr
//! (`RUST_LOG`, default `info`). With `--checkpoint-file`, the position after the last line
//! written is stored there (atomically) and used on the next start. Every stored position is
//! acknowledged to the source only after its lines have been flushed. Exit statuses:
//! `examples::cli`.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use examples::cli::{self, AppError, MetricsArgs, SourceArgs};
use examples::{checkpoint_file, json_lines};
use futures::StreamExt;
use powersync_source::{ChangeEvent, Checkpoint, SnapshotProgress, StartFrom};
use tokio::time::Instant;

/// Watch a database's changes as JSON lines on stdout.
// No `Debug`: the arguments hold the source URL, which may carry a password.
#[derive(Parser)]
#[command(name = "tail", version)]
struct Args {
    /// The source: postgres://user:password@host:port/dbname, mysql:// or mariadb://,
    /// mongodb:// or mongodb+srv://, sqlserver://, convex+https:// (any scheme this build
    /// has a connector for).
    #[arg(value_name = "SOURCE-URL")]
    url: String,
    #[command(flatten)]
    source: SourceArgs,
    /// Resume from the position stored in this file (if it exists), and store the position
    /// after every flushed line there.
    #[arg(long, value_name = "PATH")]
    checkpoint_file: Option<PathBuf>,
    /// Exit with status 0 once the snapshot is done and no change has arrived for this many
    /// seconds (keepalives do not count).
    #[arg(long, value_name = "SECONDS", value_parser = cli::parse_seconds)]
    exit_when_idle: Option<Duration>,
    #[command(flatten)]
    metrics: MetricsArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_tracing();
    cli::run_main("tail", run(args))
}

/// The position to store after the lines written so far.
enum Stored {
    Checkpoint(Checkpoint),
    Token(String),
}

async fn run(args: Args) -> Result<ExitCode, AppError> {
    args.metrics.install()?;
    let source = powersync_source::open(&args.url, &args.source.options())?;
    let stored = match &args.checkpoint_file {
        Some(path) => checkpoint_file::read(path).map_err(|e| {
            AppError::Other(format!("reading checkpoint file {}: {e}", path.display()))
        })?,
        None => None,
    };
    let from = checkpoint_file::start_from(stored.as_deref())?;
    match &from {
        StartFrom::Beginning => tracing::info!("starting from the beginning (snapshot)"),
        StartFrom::Checkpoint(c) => tracing::info!("resuming from {c}"),
        StartFrom::Snapshot(_) => tracing::info!("resuming the interrupted snapshot"),
    }
    // `start()` runs `check()`: an unready source fails there with every problem and its
    // fix, and warnings are logged.
    let mut stream = source.start(from.clone()).await?;

    let mut snapshot_done = matches!(from, StartFrom::Checkpoint(_));
    let idle = args.exit_when_idle;
    let mut idle_deadline = Instant::now() + idle.unwrap_or(Duration::ZERO);
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    loop {
        let batch = tokio::select! {
            batch = stream.next() => batch,
            _ = tokio::time::sleep_until(idle_deadline), if idle.is_some() && snapshot_done => {
                tracing::info!("no change for {:?}; exiting", idle.unwrap_or_default());
                return Ok(ExitCode::SUCCESS);
            }
            _ = &mut ctrl_c => {
                let _ = out.flush();
                return Ok(ExitCode::from(130));
            }
        };
        let batch = match batch {
            None => {
                tracing::info!("the change stream ended");
                return Ok(ExitCode::SUCCESS);
            }
            Some(Err(e)) => {
                let _ = out.flush();
                return Err(e.into());
            }
            Some(Ok(batch)) => batch,
        };
        let mut store: Option<Stored> = None;
        let mut active = false;
        for event in &batch.events {
            match event {
                ChangeEvent::Keepalive(c) => store = Some(Stored::Checkpoint(c.clone())),
                ChangeEvent::CheckpointObserved(_) => {}
                ChangeEvent::Commit(c) => {
                    active = true;
                    store = Some(Stored::Checkpoint(c.checkpoint.clone()));
                }
                ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint }) => {
                    active = true;
                    snapshot_done = true;
                    store = Some(Stored::Checkpoint(checkpoint.clone()));
                }
                ChangeEvent::Snapshot(SnapshotProgress::ChunkDone {
                    table,
                    rows_done,
                    resume,
                    ..
                }) => {
                    tracing::debug!(%table, rows_done, "snapshot chunk done");
                    active = true;
                    if !snapshot_done {
                        store = Some(Stored::Token(resume.to_token()));
                    }
                }
                ChangeEvent::Snapshot(p) => {
                    tracing::debug!("snapshot progress: {p:?}");
                    active = true;
                }
                _ => active = true,
            }
            if let Err(e) = json_lines::write_event(&mut out, event) {
                return stdout_error(e);
            }
        }
        if let Err(e) = out.flush() {
            return stdout_error(e);
        }
        if active {
            if let Some(idle) = idle {
                idle_deadline = Instant::now() + idle;
            }
        }
        if let Some(store) = store {
            let text = match &store {
                Stored::Checkpoint(c) => c.as_str(),
                Stored::Token(t) => t.as_str(),
            };
            if let Some(path) = &args.checkpoint_file {
                checkpoint_file::write_atomic(path, text).map_err(|e| {
                    AppError::Other(format!("writing checkpoint file {}: {e}", path.display()))
                })?;
            }
            if let Stored::Checkpoint(c) = &store {
                stream.ack(c)?;
            }
        }
    }
}

/// A closed stdout (`tail … | head`) ends the program quietly; other errors are errors.
fn stdout_error(e: io::Error) -> Result<ExitCode, AppError> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(AppError::Other(format!("writing to stdout: {e}")))
    }
}
