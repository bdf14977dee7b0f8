//! The stream runtime every connector runs on: one copy of the machinery behind
//! [`crate::ChangeSource::start`], so a fix to shared behaviour lands in every source.
//!
//! - [`spawn_stream`] spawns a connector's stream task, turns a panic in it into an
//!   [`crate::ErrorKind::Internal`] error the host receives (never a silent end), and adapts
//!   its channel into a [`ChangeStream`].
//! - [`Emitter`] batches events (bounded by [`StreamOptions::batch_events`]), counts rows and
//!   commits, tracks whether a transaction is open, and reports a host that dropped the
//!   stream as [`Stop::Closed`].
//! - [`Reconnect`] owns the retry budget of one outage: it is reset by the first successful
//!   read after a failure, so a stream that has been healthy for hours gets the full budget
//!   again at its next blip.
//! - [`SnapshotBook`] turns a resume map into the four [`crate::SnapshotProgress`] events.
//!
//! A connector keeps only its source-specific loop body.

mod emitter;
mod failpoint;
mod reconnect;
mod snapshot_book;

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

pub use emitter::{Emitter, Step, Stop};
pub use reconnect::Reconnect;
pub use snapshot_book::{SnapshotBook, TableStart};

use crate::error::SourceError;
use crate::options::StreamOptions;
use crate::stream::{AckHandle, AckReceiver, ChangeStream, StreamStats};

/// Batches in flight between a stream task and the host: the backpressure.
const CHANNEL_DEPTH: usize = 4;

/// Spawns a connector's stream task on the current Tokio runtime and returns the stream the
/// host reads.
///
/// `task` receives the [`Emitter`] to push events into and the [`AckReceiver`] carrying the
/// host's acknowledgements. However it ends, the events it pushed reach the host (also those
/// not yet flushed), in order, and then:
/// - `Ok(())` or `Err(Stop::Closed)`: the stream ends;
/// - `Err(Stop::Failed(e))`: `e`, final for this stream;
/// - a panic: an [`crate::ErrorKind::Internal`] error naming the panic.
pub fn spawn_stream<F, Fut>(source: &'static str, options: &StreamOptions, task: F) -> ChangeStream
where
    F: FnOnce(Emitter, AckReceiver) -> Fut,
    Fut: Future<Output = Step<()>> + Send + 'static,
{
    let (acks, ack_rx) = AckHandle::channel(source);
    let stats = StreamStats::for_source(source);
    let (tx, mut rx) = mpsc::channel(CHANNEL_DEPTH);
    let finals = tx.clone();
    let mut emitter = Emitter::new(tx, options.batch_events, stats.clone());
    emitter.set_failpoint(
        options
            .panic_after_rows
            .or_else(failpoint::panic_after_rows),
    );
    let (requests_tx, requests_rx) = mpsc::unbounded_channel();
    emitter.set_requests(requests_rx);
    let (leftover_tx, leftover_rx) = oneshot::channel();
    emitter.set_leftover(leftover_tx);
    let body = task(emitter, ack_rx);
    let handle = tokio::spawn(body);
    tokio::spawn(async move {
        let outcome = handle.await;
        // The task's emitter is gone (returned or unwound): what it still held goes first.
        if let Ok(batch) = leftover_rx.await {
            if finals.send(Ok(batch)).await.is_err() {
                return;
            }
        }
        let error = match outcome {
            Ok(Ok(())) | Ok(Err(Stop::Closed)) => return,
            Ok(Err(Stop::Failed(e))) => e,
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_string());
                SourceError::internal(format!("the {source} stream task panicked: {what}"))
                    .with_hint("this is a bug in the connector; please report it with the log")
            }
            // Cancelled: only when the runtime shuts down.
            Err(_) => return,
        };
        let _ = finals.send(Err(error)).await;
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    ChangeStream::new(stream, acks, stats).with_backfill_channel(requests_tx)
}
