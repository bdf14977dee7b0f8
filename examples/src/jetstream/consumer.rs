//! `consume`: a SQLite mirror built from a JetStream stream written by `publish`, so that a
//! mirror can run on another machine than the connector.
//!
//! The stream is read with an ordered consumer. Messages (one row each, or packed, see
//! [`super::pack`]) are collected by an [`Assembler`] until their marker; each unit a marker
//! message closes (one, or a batch) is then applied to the [`Mirror`] (a transaction inside a
//! savepoint, as `mirror` does), and the marker's stream sequence and position are staged in
//! the state table under [`STATE_KEY`] in the same SQLite transaction, with the sequence of
//! the oldest message still waiting for a later marker (the publisher sends later units'
//! messages before an earlier marker). After a crash the file holds whole units: the next run
//! reads again from that oldest waiting message, skips the markers it already applied (and
//! their units' messages), and applies nothing twice. Consecutive units are grouped into one SQLite transaction by the sink's
//! [`GroupPolicy`]: for up to [`ConsumeOptions::group`] (time) or
//! [`ConsumeOptions::group_rows`] rows, during the snapshot too.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use futures::StreamExt;
use powersync_source_core::{
    Begin, ChangeEvent, Checkpoint, Commit, ErrorKind, RetryPolicy, SnapshotProgress, SourceError,
    StartFrom,
};
use powersync_source_sqlite::{GroupPolicy, Mirror, MirrorOptions, SinkError};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::assembler::{unpack, Assembler, Received, Unit};
use super::connection::{self, StreamTarget};
use super::decode::Decoder;
use super::ids;
use super::marker::MarkerKind;
use super::publisher::Outcome;

/// State key of the stored stream position.
pub const STATE_KEY: &str = "jetstream";

/// What the SQLite file stores under [`STATE_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPosition {
    /// The stream mirrored.
    pub stream: String,
    /// Stream sequence of the last applied commit marker.
    pub sequence: u64,
    /// That marker's position (checkpoint or snapshot token).
    pub position: String,
    /// Stream sequence of the oldest message that was waiting for a later marker, if any:
    /// reading resumes there (else after `sequence`). Absent in files written before
    /// publishers interleaved units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_sequence: Option<u64>,
}

/// How `consume` runs.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// `synchronous=FULL` in SQLite.
    pub durable: bool,
    /// Exit once no message came for this long (after committing).
    pub exit_when_idle: Option<Duration>,
    /// Longest time a group of units stays uncommitted.
    pub group: Duration,
    /// Most rows in one SQLite transaction (checked at unit ends).
    pub group_rows: u64,
    /// Time between progress log lines.
    pub progress_interval: Duration,
    /// Backoff while JetStream is unavailable.
    pub retry: RetryPolicy,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions {
            durable: false,
            exit_when_idle: None,
            group: Duration::from_millis(200),
            group_rows: 20_000,
            progress_interval: Duration::from_secs(10),
            retry: RetryPolicy {
                give_up_after: None,
                ..RetryPolicy::default()
            },
        }
    }
}

/// Why `consume` stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConsumeError {
    /// JetStream (connection, stream, consumer) or a position that does not parse. Retried
    /// inside [`run`] when transient.
    Source(SourceError),
    /// The SQLite mirror.
    Sink(SinkError),
    /// The stream or the SQLite file holds something this consumer cannot apply (a broken
    /// marker chain, a message it cannot decode, a corrupt stored position).
    Stream {
        /// What is wrong and where.
        message: String,
    },
}

impl ConsumeError {
    fn stream(message: impl Into<String>) -> Self {
        ConsumeError::Stream {
            message: message.into(),
        }
    }
}

impl fmt::Display for ConsumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsumeError::Source(e) => e.fmt(f),
            ConsumeError::Sink(e) => e.fmt(f),
            ConsumeError::Stream { message } => f.write_str(message),
        }
    }
}

impl std::error::Error for ConsumeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConsumeError::Source(e) => Some(e),
            ConsumeError::Sink(e) => Some(e),
            ConsumeError::Stream { .. } => None,
        }
    }
}

impl From<SourceError> for ConsumeError {
    fn from(e: SourceError) -> Self {
        ConsumeError::Source(e)
    }
}

impl From<SinkError> for ConsumeError {
    fn from(e: SinkError) -> Self {
        ConsumeError::Sink(e)
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsumeTotals {
    /// Units (transactions, snapshot chunks, markers) applied.
    pub units: u64,
    /// Data items (rows, truncates) applied.
    pub messages: u64,
    /// Repeated messages skipped (republished after the duplicate window).
    pub repeated: u64,
    /// Leftover messages of interrupted publisher attempts skipped.
    pub stale: u64,
}

/// Builds/updates the SQLite mirror at `sqlite` from the stream until idle, Ctrl-C or a
/// permanent error.
pub async fn run(
    target: &StreamTarget,
    sqlite: &Path,
    options: &ConsumeOptions,
) -> Result<(Outcome, ConsumeTotals), ConsumeError> {
    // Units arrive whole, so every unit end is a boundary; snapshot units are grouped like
    // streamed ones (their markers carry the resume position the host stages itself).
    let policy = GroupPolicy::default()
        .with_max_age(options.group)
        .with_max_rows(options.group_rows)
        .with_snapshot_max_rows(options.group_rows)
        .with_snapshot_max_age(Some(options.group));
    let mut mirror = Mirror::open(
        sqlite,
        &MirrorOptions::default()
            .with_durable(options.durable)
            .with_group_policy(policy),
    )?;
    let stored = match mirror.state(STATE_KEY)? {
        None => None,
        Some(text) => Some(serde_json::from_str::<StoredPosition>(&text).map_err(|e| {
            ConsumeError::stream(format!(
                "{} holds a corrupt `{STATE_KEY}` position ({e}); delete the file to start over",
                sqlite.display()
            ))
        })?),
    };
    let mut at = match stored {
        Some(s) if s.stream != target.stream => {
            return Err(SourceError::config(format!(
                "{} mirrors stream `{}`, not `{}`",
                sqlite.display(),
                s.stream,
                target.stream
            ))
            .with_hint("use another SQLite file, or the stream it was built from")
            .into())
        }
        Some(s) => {
            let from = StartFrom::parse(&s.position)?;
            tracing::info!(
                "resuming after stream sequence {} (position {})",
                s.sequence,
                short(&s.position)
            );
            mirror.begin_run(&from)?;
            s
        }
        None => {
            tracing::info!(
                "new mirror: reading stream `{}` from its start",
                target.stream
            );
            mirror.begin_run(&StartFrom::Beginning)?;
            StoredPosition {
                stream: target.stream.clone(),
                sequence: 0,
                position: ids::START.to_owned(),
                resume_sequence: None,
            }
        }
    };
    let mut decoder = Decoder::new(mirror.stored_tables()?.into_iter().map(|t| t.schema));
    let mut totals = ConsumeTotals::default();
    let mut backoff = options.retry.backoff();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let before = totals.units;
        let result = session(
            target,
            options,
            &mut mirror,
            &mut decoder,
            &mut at,
            &mut totals,
            &mut ctrl_c,
        )
        .await;
        // Whole units only: what is applied is consistent, keep it. (No checkpoint to
        // acknowledge: the stream position is staged in the file itself.)
        let _ = mirror.commit()?;
        let error = match result {
            Ok(outcome) => return Ok((outcome, totals)),
            Err(ConsumeError::Source(e)) => e,
            Err(other) => return Err(other),
        };
        if totals.units > before {
            backoff = options.retry.backoff();
        }
        let Some(delay) = backoff.next_delay(&error) else {
            return Err(error.into());
        };
        tracing::warn!("{error}; retrying in {:.1} s", delay.as_secs_f64());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut ctrl_c => return Ok((Outcome::Interrupted, totals)),
        }
    }
}

async fn session(
    target: &StreamTarget,
    options: &ConsumeOptions,
    mirror: &mut Mirror,
    decoder: &mut Decoder,
    at: &mut StoredPosition,
    totals: &mut ConsumeTotals,
    ctrl_c: &mut std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
) -> Result<Outcome, ConsumeError> {
    let client = connection::connect(&target.url, "powersync-consume").await?;
    let js = jetstream::new(client);
    let stream = js.get_stream(&target.stream).await.map_err(|e| {
        connection::transient(
            &format!("opening stream `{}` (not created yet?)", target.stream),
            e,
        )
    })?;
    let start_sequence = at
        .resume_sequence
        .unwrap_or(at.sequence + 1)
        .min(at.sequence + 1);
    let deliver_policy = if start_sequence <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence { start_sequence }
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: ids::stream_subjects(&target.prefix),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| connection::transient("creating an ordered consumer", e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| connection::transient("reading the stream", e))?;
    let commit_subject = ids::commit_subject(&target.prefix);
    let mut assembler = Assembler::new(&at.position);
    let idle = options.exit_when_idle;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut idle_deadline = Instant::now() + idle.unwrap_or_default();
    let mut progress =
        tokio::time::interval(options.progress_interval.max(Duration::from_millis(100)));
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    progress.tick().await;
    let mut warned_foreign = false;

    // Whether the last iteration handled a message: the idle time counts from the end of
    // its processing (applying a large unit may take longer than the idle time).
    let mut handled = false;
    loop {
        if std::mem::take(&mut handled) {
            if let Some(idle) = idle {
                idle_deadline = Instant::now() + idle;
            }
        }
        let commit_deadline = mirror.commit_deadline().map_or(far, Instant::from_std);
        // Biased, idle last: "idle" means no message is waiting, never a message that
        // arrived while a large unit was being applied (the deadline may have passed
        // meanwhile). The rarely ready branches go before the messages so that a continuous
        // flow cannot starve Ctrl-C, group commits or progress lines.
        tokio::select! {
            biased;
            _ = &mut *ctrl_c => {
                let _ = mirror.commit()?;
                return Ok(Outcome::Interrupted);
            }
            _ = tokio::time::sleep_until(commit_deadline), if commit_deadline < far => {
                let _ = mirror.commit()?;
            }
            _ = progress.tick() => {
                tracing::info!(
                    "applied {} units ({} messages) up to stream sequence {}; {} waiting for their commit marker",
                    totals.units, totals.messages, at.sequence, assembler.pending()
                );
            }
            msg = messages.next() => {
                let msg = match msg {
                    None => return Err(connection::transient("reading the stream", "the consumer ended").into()),
                    Some(Err(e)) => return Err(connection::transient("reading the stream", e).into()),
                    Some(Ok(msg)) => msg,
                };
                handled = true;
                let sequence = msg
                    .info()
                    .map(|i| i.stream_sequence)
                    .map_err(|e| connection::transient("reading message metadata", e))?;
                if msg.subject.as_str() == commit_subject {
                    let markers = super::marker::parse_markers(&msg.payload).map_err(|e| {
                        ConsumeError::stream(format!("stream sequence {sequence}: {e}"))
                    })?;
                    if sequence <= at.sequence {
                        // Applied before this run: read again only for the messages of
                        // later units that were interleaved before it.
                        for marker in &markers {
                            assembler.forget(marker);
                        }
                        continue;
                    }
                    for marker in markers {
                        let unit = assembler
                            .close(marker)
                            .map_err(|e| ConsumeError::stream(format!("stream sequence {sequence}: {e}")))?;
                        apply_unit(mirror, decoder, &unit, sequence, totals)?;
                        at.position = unit.marker.position;
                    }
                    at.sequence = sequence;
                    at.resume_sequence = assembler.resume_sequence();
                    let json = serde_json::to_string(&*at).unwrap_or_default();
                    // Staged before the commit decision: the unit's rows and its sequence
                    // become durable together.
                    mirror.stage_state(STATE_KEY, &json)?;
                    let _ = mirror.commit_if_due()?;
                    continue;
                }
                let headers = msg.headers.as_ref();
                let header = |name: &str| {
                    headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_owned())
                };
                let (Some(id), Some(base), Some(index)) = (
                    header(ids::HEADER_MSG_ID),
                    header(ids::HEADER_BASE),
                    header(ids::HEADER_INDEX).and_then(|i| i.parse::<u64>().ok()),
                ) else {
                    if !warned_foreign {
                        tracing::warn!(
                            "ignoring message {sequence} on {}: not written by publish (no {} headers)",
                            msg.subject, ids::HEADER_BASE
                        );
                        warned_foreign = true;
                    }
                    continue;
                };
                let packed = match header(ids::HEADER_FORMAT).as_deref() {
                    None | Some("1") => false,
                    Some("2") => true,
                    Some(other) => {
                        return Err(ConsumeError::stream(format!(
                            "stream sequence {sequence}: line format version {other} (this \
                             consumer reads 1 and 2): upgrade it"
                        )))
                    }
                };
                let items = unpack(Received {
                    sequence,
                    id: &id,
                    base: &base,
                    index,
                    packed,
                    payload: &msg.payload,
                })
                .map_err(|e| ConsumeError::stream(format!("stream sequence {sequence}: {e}")))?;
                for item in items {
                    assembler.push(item);
                }
            }
            _ = tokio::time::sleep_until(idle_deadline), if idle.is_some() => {
                let _ = mirror.commit()?;
                tracing::info!(
                    "no message for {:?}; exiting at stream sequence {}",
                    idle.unwrap_or_default(),
                    at.sequence
                );
                return Ok(Outcome::Idle);
            }
        }
    }
}

/// Applies one unit to the mirror (inside the open group, without committing).
fn apply_unit(
    mirror: &mut Mirror,
    decoder: &mut Decoder,
    unit: &Unit,
    sequence: u64,
    totals: &mut ConsumeTotals,
) -> Result<(), ConsumeError> {
    let marker = &unit.marker;
    let checkpoint = || -> Result<Checkpoint, ConsumeError> {
        Ok(Checkpoint::parse(&marker.position).map_err(|e| {
            SourceError::new(
                ErrorKind::Decode,
                format!("commit marker at stream sequence {sequence}: {e}"),
            )
        })?)
    };
    if unit.stale > 0 || unit.repeated > 0 {
        tracing::debug!(
            stale = unit.stale,
            repeated = unit.repeated,
            "skipped leftovers of an interrupted publisher"
        );
    }
    totals.stale += unit.stale as u64;
    totals.repeated += unit.repeated as u64;
    let is_tx = marker.kind == MarkerKind::Commit;
    if is_tx {
        mirror.apply(&ChangeEvent::Begin(Begin {
            xid: None,
            commit_time: None,
        }))?;
    }
    for m in &unit.messages {
        let event = decoder
            .decode(&m.payload)
            .map_err(|e| ConsumeError::stream(format!("stream sequence {}: {e}", m.sequence)));
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                mirror.abort_transaction()?;
                return Err(e);
            }
        };
        if let Some(event) = event {
            mirror.apply(&event)?;
            if !m.schema {
                totals.messages += 1;
            }
        }
    }
    totals.units += 1;
    match marker.kind {
        MarkerKind::Commit => mirror.apply(&ChangeEvent::Commit(Commit {
            checkpoint: checkpoint()?,
            commit_time: None,
        }))?,
        MarkerKind::Keepalive => mirror.apply(&ChangeEvent::Keepalive(checkpoint()?))?,
        MarkerKind::SnapshotDone => {
            mirror.apply(&ChangeEvent::Snapshot(SnapshotProgress::Done {
                checkpoint: checkpoint()?,
            }))?
        }
        MarkerKind::SnapshotChunk => {}
    }
    Ok(())
}

/// A position for logs (snapshot tokens are long).
fn short(position: &str) -> &str {
    match position.char_indices().nth(60) {
        Some((i, _)) => &position[..i],
        None => position,
    }
}
