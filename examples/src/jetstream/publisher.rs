//! `publish`: a change stream into a JetStream stream (the contract is in
//! [`crate::jetstream`]).
//!
//! One session = connect, ensure the stream, read the last commit marker, start the source
//! from its position, publish. Rows are packed into messages ([`PublishOptions::packing`],
//! [`super::pack`]). Publishes are pipelined: up to [`PublishOptions::max_in_flight`] messages
//! (and [`PublishOptions::max_in_flight_bytes`]) await their JetStream ack at once, across
//! transaction boundaries; acks are handled in publish order, and the source is acknowledged
//! when a marker's ack arrives. Markers wait in a queue until every message published before
//! their unit ended, and the previous marker, were acked; the markers that became ready
//! meanwhile go out as one batch ([`super::pipeline`]). When the window is full the session
//! waits for acks and stops reading the source: a slow or full stream slows the connector
//! down, it never drops a change. Any failure ends the session; the next one starts over from
//! the last marker stored in the stream (nothing is kept in memory across sessions), after a
//! backoff.

use std::future::IntoFuture;
use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::HeaderMap;
use futures::stream::FuturesOrdered;
use futures::{Future, StreamExt};
use powersync_source_core::{
    AckHandle, ChangeEvent, ChangeSource, Checkpoint, ErrorKind, RetryPolicy, SourceError,
    StartFrom,
};
use tokio::time::Instant;

use super::connection::{self, StreamSettings, StreamTarget};
use super::framing::{Framer, Outgoing, PackLimits};
use super::ids;
use super::marker::{self, Marker};
use super::pipeline::{Pipeline, Window};

/// How `publish` runs.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Stream settings used when creating it.
    pub settings: StreamSettings,
    /// Messages awaiting their JetStream ack at most.
    pub max_in_flight: usize,
    /// Payload bytes awaiting their JetStream ack at most.
    pub max_in_flight_bytes: usize,
    /// Which rows share a message.
    pub packing: PackLimits,
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
            max_in_flight_bytes: 16 * 1024 * 1024,
            packing: PackLimits::default(),
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
    /// Units (transactions, snapshot chunks, keepalives) closed by a stored commit marker.
    pub markers: u64,
    /// Commit-marker messages stored (one closes several units when they queued up).
    pub marker_messages: u64,
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

/// What an ack in flight is for.
enum Sent {
    /// A data (or schema) message of `bytes` payload bytes.
    Data { bytes: usize },
    /// A marker message closing `units` units; the source is acknowledged with `checkpoint`
    /// (the last of its markers that has one) once it is stored.
    Markers {
        bytes: usize,
        units: u64,
        checkpoint: Option<Checkpoint>,
    },
}

type AckResult = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>;
type AckFuture = Pin<Box<dyn Future<Output = (AckResult, Sent)> + Send>>;

struct Session<'a> {
    source: &'a dyn ChangeSource,
    target: &'a StreamTarget,
    options: &'a PublishOptions,
    totals: &'a mut Totals,
    progressed: &'a mut bool,
}

/// The publishing half of a session: the JetStream context, the acks in flight and the
/// pipeline that decides when markers go.
struct Publishing {
    js: jetstream::Context,
    inflight: FuturesOrdered<AckFuture>,
    pipe: Pipeline,
    window: Window,
    commit_subject: String,
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
        let acks = changes.ack_handle();
        let mut framer = Framer::new(
            &self.target.prefix,
            &base,
            &from,
            self.options.keepalive_interval,
        )
        .with_packing(self.options.packing);
        let max_in_flight = self.options.max_in_flight.max(1);
        let mut p = Publishing {
            js,
            inflight: FuturesOrdered::new(),
            pipe: Pipeline::new(),
            window: Window {
                messages: max_in_flight,
                bytes: self.options.max_in_flight_bytes.max(1),
                queued_markers: max_in_flight,
            },
            commit_subject: ids::commit_subject(&self.target.prefix),
        };
        let mut out: Vec<Outgoing> = Vec::with_capacity(1024);
        let idle = self.options.exit_when_idle;
        let mut idle_deadline = Instant::now() + idle.unwrap_or_default();
        let mut last_report = Instant::now();
        let mut reported = self.totals.stored;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

        loop {
            let can_idle_exit = idle.is_some() && !framer.snapshot_running() && p.pipe.is_idle();
            tokio::select! {
                biased;
                Some((result, sent)) = p.inflight.next(), if !p.inflight.is_empty() => {
                    self.settle(&mut p, result, sent, &acks)?;
                    p.send_ready_markers().await?;
                }
                batch = changes.next() => {
                    let batch = match batch {
                        None => {
                            self.drain(&mut p, &acks).await?;
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
                            self.submit(&mut p, msg, &acks).await?;
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
                        self.submit(&mut p, msg, &acks).await?;
                    }
                    if last_report.elapsed() >= REPORT_EVERY && self.totals.stored != reported {
                        reported = self.totals.stored;
                        last_report = Instant::now();
                        tracing::info!(
                            "{} messages stored ({} units closed by {} marker messages, {} duplicates dropped), {} awaiting their ack, at {}",
                            self.totals.stored,
                            self.totals.markers,
                            self.totals.marker_messages,
                            self.totals.duplicates,
                            p.pipe.in_flight(),
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

    /// Hands one message of the framer to the pipeline: a data message is published (first
    /// waiting for acks while the window is full), a marker is queued and sent once allowed.
    async fn submit(
        &mut self,
        p: &mut Publishing,
        msg: Outgoing,
        acks: &AckHandle,
    ) -> Result<(), SourceError> {
        match msg.marker {
            Some(marker) => {
                while !p.pipe.can_queue_marker(&p.window) {
                    self.settle_next(p, acks).await?;
                }
                p.pipe.queue_marker(marker);
                p.send_ready_markers().await
            }
            None => {
                while !p.pipe.has_room(&p.window) {
                    self.settle_next(p, acks).await?;
                }
                p.publish_data(msg).await
            }
        }
    }

    /// Waits for the oldest ack in flight and handles it.
    async fn settle_next(
        &mut self,
        p: &mut Publishing,
        acks: &AckHandle,
    ) -> Result<(), SourceError> {
        if let Some((result, sent)) = p.inflight.next().await {
            self.settle(p, result, sent, acks)?;
        }
        p.send_ready_markers().await
    }

    /// Handles one ack (in publish order): counts it, acknowledges the source after markers.
    fn settle(
        &mut self,
        p: &mut Publishing,
        result: AckResult,
        sent: Sent,
        acks: &AckHandle,
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
        match sent {
            Sent::Data { bytes } => p.pipe.data_acked(bytes),
            Sent::Markers {
                bytes,
                units,
                checkpoint,
            } => {
                p.pipe.markers_acked(bytes);
                self.totals.markers += units;
                self.totals.marker_messages += 1;
                *self.progressed = true;
                if let Some(c) = checkpoint {
                    acks.ack(&c)?;
                }
            }
        }
        Ok(())
    }

    /// Waits until every message is acked and every marker stored.
    async fn drain(&mut self, p: &mut Publishing, acks: &AckHandle) -> Result<(), SourceError> {
        p.send_ready_markers().await?;
        while !p.pipe.is_idle() {
            let Some((result, sent)) = p.inflight.next().await else {
                // Unreachable by the pipeline's rules (a queued marker becomes ready once
                // everything in flight is acked); fail the session rather than spin.
                return Err(SourceError::connection(
                    "JetStream: commit markers queued with nothing in flight",
                ));
            };
            self.settle(p, result, sent, acks)?;
            p.send_ready_markers().await?;
        }
        Ok(())
    }
}

impl Publishing {
    /// Publishes a data or schema message.
    async fn publish_data(&mut self, msg: Outgoing) -> Result<(), SourceError> {
        let mut headers = HeaderMap::new();
        headers.insert(ids::HEADER_MSG_ID, msg.id.as_str());
        headers.insert(ids::HEADER_BASE, msg.base.as_str());
        headers.insert(ids::HEADER_INDEX, msg.index.to_string());
        if let Some(count) = msg.packed {
            headers.insert(ids::HEADER_FORMAT, "2");
            headers.insert(ids::HEADER_COUNT, count.to_string());
        }
        let bytes = msg.payload.len();
        self.publish(msg.subject, headers, msg.payload, Sent::Data { bytes })
            .await?;
        self.pipe.data_sent(bytes);
        Ok(())
    }

    /// Sends the markers that may go now, as one message.
    async fn send_ready_markers(&mut self) -> Result<(), SourceError> {
        let Some(markers) = self.pipe.ready_markers() else {
            return Ok(());
        };
        let (Some(first), Some(last)) = (markers.first(), markers.last()) else {
            return Ok(());
        };
        let refs: Vec<&Marker> = markers.iter().collect();
        let payload = marker::payload(&refs);
        let mut headers = HeaderMap::new();
        headers.insert(
            ids::HEADER_MSG_ID,
            ids::marker_id(&first.base, &last.position).as_str(),
        );
        headers.insert(ids::HEADER_BASE, first.base.as_str());
        headers.insert(ids::HEADER_INDEX, first.messages.to_string());
        let bytes = payload.len();
        let sent = Sent::Markers {
            bytes,
            units: markers.len() as u64,
            checkpoint: markers.iter().rev().find_map(Marker::ack_checkpoint),
        };
        let subject = self.commit_subject.clone();
        self.publish(subject, headers, payload, sent).await?;
        self.pipe.markers_sent(bytes);
        Ok(())
    }

    async fn publish(
        &mut self,
        subject: String,
        headers: HeaderMap,
        payload: Vec<u8>,
        sent: Sent,
    ) -> Result<(), SourceError> {
        let size = payload.len();
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .headers(headers);
        let ack = self
            .js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| match e.kind() {
                PublishErrorKind::MaxPayloadExceeded => SourceError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "a message for {subject} is {size} bytes, more than the NATS server's \
                         max_payload"
                    ),
                )
                .with_hint(
                    "raise max_payload in the nats-server configuration, or lower \
                     --message-bytes",
                ),
                _ => connection::transient("publishing", e),
            })?;
        self.inflight
            .push_back(Box::pin(async move { (ack.into_future().await, sent) }));
        Ok(())
    }
}
