//! `publish`: a change stream into a JetStream stream (the contract is in
//! [`crate::jetstream`]).
//!
//! One session = connect, ensure the stream, read the last commit marker, start the source
//! from its position, publish. Publishes are pipelined: up to
//! [`PublishOptions::max_in_flight`] messages await their JetStream ack at once, acks are
//! handled in publish order, and the source is acknowledged when a marker's ack arrives. A
//! marker itself is sent only after every message before it was acked (one round trip per
//! transaction): individual pipelined publishes can fail while later ones succeed, and a
//! marker must never be stored after a gap. When the window is full the session waits for acks
//! and stops reading the source: a slow or full stream slows the connector down, it never
//! drops a change. Any failure ends the session; the next one starts over from the last
//! marker stored in the stream (nothing is kept in memory across sessions), after a backoff.

use std::future::IntoFuture;
use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::HeaderMap;
use futures::stream::FuturesOrdered;
use futures::{Future, StreamExt};
use powersync_source_core::{
    ChangeEvent, ChangeSource, Checkpoint, ErrorKind, RetryPolicy, SourceError, StartFrom,
};
use tokio::time::Instant;

use super::connection::{self, StreamSettings, StreamTarget};
use super::framing::{Framer, Outgoing};
use super::ids;

/// How `publish` runs.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Stream settings used when creating it.
    pub settings: StreamSettings,
    /// Messages awaiting their JetStream ack at most.
    pub max_in_flight: usize,
    /// Minimum time between keepalive markers while the source is idle.
    pub keepalive_interval: Duration,
    /// Exit once the snapshot is done, every ack arrived and no change came for this long.
    pub exit_when_idle: Option<Duration>,
    /// Backoff between sessions (JetStream or source unavailable).
    pub retry: RetryPolicy,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            settings: StreamSettings {
                replicas: 1,
                duplicate_window: Duration::from_secs(20 * 60),
                max_bytes: None,
            },
            max_in_flight: 4096,
            keepalive_interval: Duration::from_secs(10),
            exit_when_idle: None,
            retry: RetryPolicy {
                // JetStream may be down for maintenance for a long time: keep trying.
                give_up_after: None,
                ..RetryPolicy::default()
            },
        }
    }
}

/// Why `publish` stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `exit_when_idle` elapsed.
    Idle,
    /// The source's change stream ended.
    Ended,
    /// Ctrl-C.
    Interrupted,
}

/// Totals of a run (logged at exit).
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Messages JetStream stored.
    pub stored: u64,
    /// Messages JetStream dropped as duplicates (republished after a restart).
    pub duplicates: u64,
    /// Commit markers stored.
    pub markers: u64,
    /// Sessions started after a failure.
    pub restarts: u64,
}

/// Publishes `source` into the stream until `exit_when_idle`, the end of the source, Ctrl-C,
/// or a permanent error. Transient failures restart the session after a backoff.
pub async fn run(
    source: &dyn ChangeSource,
    target: &StreamTarget,
    options: &PublishOptions,
) -> Result<(Outcome, Totals), SourceError> {
    let mut totals = Totals::default();
    let mut backoff = options.retry.backoff();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let mut progressed = false;
        let session = Session {
            source,
            target,
            options,
            totals: &mut totals,
            progressed: &mut progressed,
        };
        let result = tokio::select! {
            r = session.run() => r,
            _ = &mut ctrl_c => return Ok((Outcome::Interrupted, totals)),
        };
        let error = match result {
            Ok(outcome) => return Ok((outcome, totals)),
            Err(e) => e,
        };
        if progressed {
            backoff = options.retry.backoff();
        }
        let Some(delay) = backoff.next_delay(&error) else {
            return Err(error);
        };
        totals.restarts += 1;
        tracing::warn!(
            "{error}; retrying in {:.1} s from the stream's last commit marker",
            delay.as_secs_f64()
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut ctrl_c => return Ok((Outcome::Interrupted, totals)),
        }
    }
}

/// Time between progress log lines.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// A position for logs (snapshot tokens are long).
fn short(position: &str) -> &str {
    match position.char_indices().nth(60) {
        Some((i, _)) => &position[..i],
        None => position,
    }
}

type AckFuture = Pin<
    Box<
        dyn Future<
                Output = (
                    Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
                    Option<Checkpoint>,
                    bool,
                ),
            > + Send,
    >,
>;

struct Session<'a> {
    source: &'a dyn ChangeSource,
    target: &'a StreamTarget,
    options: &'a PublishOptions,
    totals: &'a mut Totals,
    progressed: &'a mut bool,
}

impl Session<'_> {
    async fn run(mut self) -> Result<Outcome, SourceError> {
        let client = connection::connect(&self.target.url, "powersync-publish").await?;
        let mut js = jetstream::new(client);
        js.set_timeout(Duration::from_secs(10));
        let stream = connection::ensure_stream(&js, self.target, &self.options.settings).await?;
        let last = connection::last_marker(&stream, &self.target.prefix).await?;
        let (from, base) = match &last {
            Some((seq, marker)) => {
                let from = marker.start_from()?;
                match &from {
                    StartFrom::Snapshot(_) => tracing::info!(
                        "resuming the snapshot after the commit marker at stream sequence {seq}"
                    ),
                    _ => tracing::info!(
                        "resuming from {} (commit marker at stream sequence {seq})",
                        marker.position
                    ),
                }
                (from, marker.position.clone())
            }
            None => {
                tracing::info!(
                    "no commit marker in the stream: starting from the beginning (snapshot)"
                );
                (StartFrom::Beginning, ids::START.to_owned())
            }
        };
        // `start()` runs `check()` (every problem with its fix; warnings logged).
        let mut changes = self.source.start(from.clone()).await?;
        let mut framer = Framer::new(
            &self.target.prefix,
            &base,
            &from,
            self.options.keepalive_interval,
        );
        let mut inflight: FuturesOrdered<AckFuture> = FuturesOrdered::new();
        let mut out: Vec<Outgoing> = Vec::with_capacity(1024);
        let idle = self.options.exit_when_idle;
        let mut idle_deadline = Instant::now() + idle.unwrap_or_default();
        let mut last_report = Instant::now();
        let mut reported = self.totals.stored;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

        loop {
            let can_idle_exit = idle.is_some() && !framer.snapshot_running() && inflight.is_empty();
            tokio::select! {
                biased;
                Some((result, checkpoint, marker)) = inflight.next(), if !inflight.is_empty() => {
                    self.settle(result, checkpoint, marker, &changes)?;
                }
                batch = changes.next() => {
                    let batch = match batch {
                        None => {
                            self.drain(&mut inflight, &changes).await?;
                            tracing::info!("the change stream ended");
                            return Ok(Outcome::Ended);
                        }
                        Some(Err(e)) => return Err(e),
                        Some(Ok(batch)) => batch,
                    };
                    let mut active = false;
                    for event in &batch.events {
                        if !matches!(event, ChangeEvent::Keepalive(_) | ChangeEvent::CheckpointObserved(_)) {
                            active = true;
                        }
                        framer.on_event(event, &mut out);
                        for msg in out.drain(..) {
                            self.send(&js, &mut inflight, msg, &changes).await?;
                        }
                    }
                    if active {
                        if let Some(idle) = idle {
                            idle_deadline = Instant::now() + idle;
                        }
                    }
                }
                _ = tick.tick() => {
                    if let Some(msg) = framer.due_keepalive() {
                        self.send(&js, &mut inflight, msg, &changes).await?;
                    }
                    if last_report.elapsed() >= REPORT_EVERY && self.totals.stored != reported {
                        reported = self.totals.stored;
                        last_report = Instant::now();
                        tracing::info!(
                            "{} messages stored ({} commit markers, {} duplicates dropped), {} awaiting their ack, at {}",
                            self.totals.stored,
                            self.totals.markers,
                            self.totals.duplicates,
                            inflight.len(),
                            short(framer.base_position())
                        );
                    }
                }
                _ = tokio::time::sleep_until(idle_deadline), if can_idle_exit => {
                    tracing::info!("no change for {:?}; exiting", idle.unwrap_or_default());
                    return Ok(Outcome::Idle);
                }
            }
        }
    }

    /// Publishes one message, first waiting for acks while the window is full.
    async fn send(
        &mut self,
        js: &jetstream::Context,
        inflight: &mut FuturesOrdered<AckFuture>,
        msg: Outgoing,
        changes: &powersync_source_core::ChangeStream,
    ) -> Result<(), SourceError> {
        // A marker is sent only once every message before it is stored: pipelined publishes
        // can fail one by one (a full stream rejects a message a smaller one after it fits
        // in; a reconnect loses what was on the dead connection but sends what was still
        // buffered), and a marker stored after such a gap would hide it from the restart.
        let window = if msg.marker.is_some() {
            1
        } else {
            self.options.max_in_flight.max(1)
        };
        while inflight.len() >= window {
            match inflight.next().await {
                Some((result, checkpoint, marker)) => {
                    self.settle(result, checkpoint, marker, changes)?
                }
                None => break,
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert(ids::HEADER_MSG_ID, msg.id.as_str());
        headers.insert(ids::HEADER_BASE, msg.base.as_str());
        headers.insert(ids::HEADER_INDEX, msg.index.to_string());
        let checkpoint = msg.marker.as_ref().and_then(|m| m.ack_checkpoint());
        let is_marker = msg.marker.is_some();
        let size = msg.payload.len();
        let publish = jetstream::message::PublishMessage::build()
            .payload(msg.payload.into())
            .headers(headers);
        let ack = js
            .send_publish(msg.subject.clone(), publish)
            .await
            .map_err(|e| match e.kind() {
                PublishErrorKind::MaxPayloadExceeded => SourceError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "a message for {} is {size} bytes, more than the NATS server's max_payload",
                        msg.subject
                    ),
                )
                .with_hint("raise max_payload in the nats-server configuration"),
                _ => connection::transient("publishing", e),
            })?;
        inflight.push_back(Box::pin(async move {
            (ack.into_future().await, checkpoint, is_marker)
        }));
        Ok(())
    }

    /// Handles one ack (in publish order): counts it, acknowledges the source after a marker.
    fn settle(
        &mut self,
        result: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
        checkpoint: Option<Checkpoint>,
        marker: bool,
        changes: &powersync_source_core::ChangeStream,
    ) -> Result<(), SourceError> {
        let ack = result.map_err(|e| {
            let text = e.to_string();
            if text.contains("maximum") {
                connection::transient(
                    "the stream is full (publishing waits until it has room; raise its limits \
                     or let retention free space)",
                    e,
                )
            } else {
                connection::transient("waiting for a publish ack", e)
            }
        })?;
        if ack.duplicate {
            if self.totals.duplicates == 0 {
                tracing::info!(
                    "JetStream dropped a republished message (stream sequence {}): an earlier run \
                     had stored it before it stopped",
                    ack.sequence
                );
            }
            self.totals.duplicates += 1;
        } else {
            self.totals.stored += 1;
        }
        if marker {
            self.totals.markers += 1;
            *self.progressed = true;
            if let Some(c) = checkpoint {
                changes.ack(&c)?;
            }
        }
        Ok(())
    }

    async fn drain(
        &mut self,
        inflight: &mut FuturesOrdered<AckFuture>,
        changes: &powersync_source_core::ChangeStream,
    ) -> Result<(), SourceError> {
        while let Some((result, checkpoint, marker)) = inflight.next().await {
            self.settle(result, checkpoint, marker, changes)?;
        }
        Ok(())
    }
}
