//! One replication session: connect (unless given a connection), `START_REPLICATION` from
//! the last emitted boundary, pass messages through, report the acknowledged position, and
//! detect a silent (half-open) connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use powersync_source_core::position::PgLsn;
use powersync_source_core::runtime::{Emitter, Reconnect, Step, Stop};
use powersync_source_core::{AckReceiver, ChangeEvent, ErrorKind, Position, SourceError};
use tokio_postgres::error::SqlState;

use super::{replay_ahead, streamed, Replicator};
use crate::connection::publication_names;
use crate::connection::replication::ReplicationConnection;
use crate::connection::stream::ReplicationStream;
use crate::pgoutput::{PgOutputMessage, ReplicationMessage, StreamCommit};

/// How long a partly filled batch waits for more of an open transaction before it is handed
/// over: long enough for the next messages of a transaction already on its way, short enough
/// to add no noticeable latency.
const LINGER: Duration = Duration::from_millis(1);

/// Messages between two checks of the status interval while data keeps arriving (reading the
/// clock per message would cost more than the check is worth).
const STATUS_CHECK_EVERY: u32 = 512;

impl Replicator {
    /// Streams until the host drops the stream (`Ok`) or the session fails. Calls
    /// [`Reconnect::healthy`] once the server delivered its first message.
    pub(super) async fn session(
        &mut self,
        repl: Option<ReplicationConnection>,
        out: &mut Emitter,
        acks: &AckReceiver,
        reconnect: &mut Reconnect,
    ) -> Step<()> {
        let silence = self.stream.silence_timeout;
        let slot = self.config.slot();
        let repl = match repl {
            Some(r) => r,
            None => {
                // Bounded: a server that stopped answering must not hang the reconnect.
                let connect = async {
                    crate::slot::check_resumable(&self.sql, &slot, self.last_emitted).await?;
                    ReplicationConnection::connect(&self.config).await
                };
                tokio::time::timeout(silence, connect).await.map_err(|_| {
                    SourceError::connection(format!(
                        "reconnecting to {}: no answer within {silence:?}",
                        self.config.endpoint()
                    ))
                })??
            }
        };
        self.server_version = repl.server_version_num();
        self.enable_backfill(out)?;
        let mut repl = repl;
        if self.streamed.take_spill_failure() && !self.spill_fallback {
            self.spill_fallback = true;
            tracing::warn!(
                target: "powersync_source_postgres",
                "a spill file of a streamed transaction failed (spill_dir {}); this stream \
                 continues without streaming in-progress transactions: the server keeps large \
                 transactions until their commit",
                self.config.spill_dir().display()
            );
        }
        if self.streaming() && self.server_version >= 140_000 {
            if let Some(mem) = self.config.decoding_work_mem() {
                // This walsender only: transactions past it are streamed early and in small
                // blocks, so the server does not spill them and has little left after the
                // commit. The value was checked when the configuration was parsed.
                let set = format!("SET logical_decoding_work_mem = '{mem}'");
                tokio::time::timeout(silence, repl.simple_query(&set))
                    .await
                    .map_err(|_| {
                        SourceError::connection(format!(
                            "setting logical_decoding_work_mem on {}: no answer within {silence:?}",
                            self.config.endpoint()
                        ))
                    })??;
            }
        }
        // A new session: the server streams every uncommitted transaction again from its start.
        self.streamed.clear();
        self.binary = self.options.binary
            && self.server_version >= 140_000
            && self
                .relations
                .values()
                .all(|r| r.types.iter().all(|t| self.registry.supports_binary(t.oid)));
        let options = self.start_options();
        let start = tokio::time::timeout(
            silence,
            repl.start_replication(&slot, self.last_emitted, &options),
        )
        .await
        .unwrap_or_else(|_| {
            Err(SourceError::connection(format!(
                "starting replication on {}: no answer within {silence:?}",
                self.config.endpoint()
            )))
        });
        let stream = match start {
            Ok(s) => s,
            Err(e) => return Err(self.start_failed(e, &slot).await),
        };
        tracing::info!(target: "powersync_source_postgres", "streaming from slot `{slot}` at {} (binary: {})", self.last_emitted, self.binary);
        self.pass_through(stream, out, acks, reconnect).await
    }

    /// The error to retry or report when `START_REPLICATION` failed with `e`.
    async fn start_failed(&mut self, e: SourceError, slot: &str) -> Stop {
        let code = e.code().map(SqlState::from_code);
        if code == Some(SqlState::OBJECT_IN_USE) {
            // A walsender from a dead connection still holds the slot: end it and retry.
            return match crate::slot::terminate_holder(&self.sql, slot).await {
                Ok(terminated) => {
                    tracing::warn!(target: "powersync_source_postgres", "slot `{slot}` was held by another walsender (terminated: {terminated})");
                    Stop::Failed(e)
                }
                Err(other) => Stop::Failed(other),
            };
        }
        // The slot cannot serve this stream any more (dropped, or invalidated: 55000 carries
        // the reason only in its detail on some versions): the host must resnapshot.
        let lost = code == Some(SqlState::UNDEFINED_OBJECT)
            || code == Some(SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
        if lost && e.kind() != ErrorKind::HistoryLost {
            let code = e.code().map(str::to_owned);
            let lost = SourceError::history_lost(format!(
                "replication slot `{slot}` can no longer be streamed from"
            ))
            .with_hint("the slot is gone or was invalidated; start from scratch (snapshot)");
            let lost = match code {
                Some(code) => lost.with_code(code),
                None => lost,
            };
            return Stop::Failed(lost.with_source(e));
        }
        Stop::Failed(e)
    }

    /// Passes the server's messages to the host until the host leaves or the session fails.
    async fn pass_through(
        &mut self,
        mut stream: ReplicationStream,
        out: &mut Emitter,
        acks: &AckReceiver,
        reconnect: &mut Reconnect,
    ) -> Step<()> {
        let silence = self.stream.silence_timeout;
        let status_interval = self.options.status_interval;
        let half_silence = silence / 2;
        let mut acked = acked(acks);
        let mut received = self.last_emitted;
        let mut last_status = Instant::now();
        let mut last_message = Instant::now();
        let mut asked_reply = false;
        let mut counter = 0u32;
        // Inside a stream block (Stream Start … Stop): the top-level xid it belongs to.
        let mut block: Option<u32> = None;
        loop {
            let frame = match stream.recv().now_or_never() {
                Some(frame) => frame?,
                None => {
                    // Nothing buffered. The server writes one message per send, so inside a
                    // transaction more usually follows within microseconds: linger briefly so
                    // batches fill up, then hand over what we have and wait.
                    let linger = out.pending() > 0
                        && self.in_transaction
                        && out.pending() < out.batch_events() / 2;
                    let lingered = if linger {
                        tokio::select! {
                            frame = stream.recv() => Some(frame),
                            _ = tokio::time::sleep(LINGER) => None,
                        }
                    } else {
                        None
                    };
                    if let Some(frame) = lingered {
                        frame?
                    } else {
                        out.flush().await?;
                        let wait = if asked_reply { silence } else { half_silence };
                        let deadline = last_message + wait;
                        // A read waiting for the stream to pass a position asks for
                        // keepalives (status updates between transactions request a reply)
                        // more often.
                        let status_at =
                            last_status + self.publication_status_interval(status_interval);
                        tokio::select! {
                            frame = stream.recv() => frame?,
                            // The host dropped the stream: end the session (and free the slot).
                            _ = out.closed() => {
                                let _ = stream.close().await;
                                return Ok(());
                            }
                            _ = tokio::time::sleep_until(status_at.into()) => {
                                acked = acked_now(acks, acked);
                                stream.send_status(received, acked, acked, !self.in_transaction).await?;
                                last_status = Instant::now();
                                continue;
                            }
                            _ = tokio::time::sleep_until(deadline.into()) => {
                                if asked_reply {
                                    return Err(Stop::Failed(SourceError::connection(format!(
                                        "no message from {} for {silence:?}: connection presumed dead (half-open)",
                                        self.config.endpoint()
                                    ))));
                                }
                                stream.send_status(received, acked, acked, true).await?;
                                last_status = Instant::now();
                                asked_reply = true;
                                continue;
                            }
                        }
                    }
                }
            };
            let Some(frame) = frame else {
                return Err(Stop::Failed(SourceError::connection(format!(
                    "{} ended the replication stream",
                    self.config.endpoint()
                ))));
            };
            if counter == 0 {
                // The first message of this connection: the outage (if any) is over.
                reconnect.healthy();
            }
            last_message = Instant::now();
            asked_reply = false;
            counter = counter.wrapping_add(1);
            if counter.is_multiple_of(STATUS_CHECK_EVERY)
                && last_status.elapsed() >= status_interval
            {
                acked = acked_now(acks, acked);
                stream.send_status(received, acked, acked, false).await?;
                last_status = Instant::now();
            }
            match ReplicationMessage::decode(&frame)
                .map_err(|e| SourceError::decode("replication message").with_source(e))?
            {
                ReplicationMessage::XLogData(x) => {
                    received = received.max(x.wal_end);
                    let msg = x
                        .pgoutput(block.is_some())
                        .map_err(|e| SourceError::decode("pgoutput message").with_source(e))?;
                    match (msg, block) {
                        (PgOutputMessage::StreamStart(s), _) => {
                            self.streamed.start_block(s.xid, s.first_segment)?;
                            block = Some(s.xid);
                        }
                        (PgOutputMessage::StreamStop, _) => block = None,
                        (PgOutputMessage::StreamAbort(a), _) => {
                            self.streamed.abort(a.xid, a.subxact_xid)?
                        }
                        (PgOutputMessage::StreamCommit(c), _) => {
                            let mut status = Status {
                                received,
                                acked,
                                last: last_status,
                            };
                            self.replay_streamed(c, &mut stream, acks, &mut status, out)
                                .await?;
                            (acked, last_status) = (status.acked, status.last);
                            // The replay read nothing from the server: not a silence.
                            last_message = Instant::now();
                        }
                        (msg, Some(top)) => {
                            let sub = streamed::message_xid(&msg).unwrap_or(top);
                            self.streamed.append(top, sub, x.data)?;
                        }
                        (msg, None) => self.apply(msg, out).await?,
                    }
                }
                ReplicationMessage::PrimaryKeepalive(k) => {
                    received = received.max(k.wal_end);
                    acked = acked_now(acks, acked);
                    out.stats()
                        .set_lag_bytes(k.wal_end.0.saturating_sub(acked.0));
                    if !self.in_transaction && k.wal_end > self.last_emitted {
                        self.last_emitted = k.wal_end;
                        out.stats().record_idle();
                        out.push(ChangeEvent::Keepalive(k.wal_end.to_checkpoint()))
                            .await?;
                    }
                    if k.reply_requested {
                        stream.send_status(received, acked, acked, false).await?;
                        last_status = Instant::now();
                    }
                }
            }
            out.stats().add_bytes(frame.len() as u64 + 5);
            if self.check_publication(out).await? {
                stream.send_status(received, acked, acked, true).await?;
                last_status = Instant::now();
            }
        }
    }

    /// A Stream Commit: the transaction's kept messages, replayed in order between its Begin
    /// and Commit as if it had been sent whole at its commit. A long replay reads nothing
    /// from the server, so it keeps sending status updates (the server ends a connection
    /// silent for `wal_sender_timeout`).
    async fn replay_streamed(
        &mut self,
        c: StreamCommit,
        stream: &mut ReplicationStream,
        acks: &AckReceiver,
        status: &mut Status,
        out: &mut Emitter,
    ) -> Step<()> {
        let replay = self.streamed.commit(c.xid)?;
        tracing::debug!(
            target: "powersync_source_postgres",
            "streamed transaction {} committed; replaying (spilled by this stream so far: {} bytes)",
            c.xid,
            self.streamed.spilled_bytes()
        );
        self.in_transaction = true;
        self.pending_begin = Some(powersync_source_core::Begin {
            xid: Some(u64::from(c.xid)),
            commit_time: Some(powersync_source_core::UnixMicros(
                c.commit_time.unix_micros(),
            )),
        });
        let relations = self
            .relations
            .iter()
            .map(|(&oid, r)| (oid, Arc::from(&r.types[..])))
            .collect();
        let mut batches = replay_ahead::spawn(replay, relations, self.registry.clone());
        let mut counter = 0u32;
        while let Some(batch) = batches.recv().await {
            let mut batch = batch?;
            for (bytes, decoded) in batch.messages() {
                let msg = PgOutputMessage::decode(bytes, true)
                    .map_err(|e| SourceError::decode("streamed pgoutput message").with_source(e))?;
                self.apply_decoded(msg, decoded, out).await?;
                counter = counter.wrapping_add(1);
                if counter.is_multiple_of(STATUS_CHECK_EVERY)
                    && status.last.elapsed() >= self.options.status_interval
                {
                    status.acked = acked_now(acks, status.acked);
                    stream
                        .send_status(status.received, status.acked, status.acked, false)
                        .await?;
                    status.last = Instant::now();
                }
            }
        }
        self.commit(c.end_lsn, c.commit_time, out).await
    }

    /// Whether this session asks for in-progress transactions: as configured, unless a spill
    /// file failed earlier in this stream.
    fn streaming(&self) -> bool {
        self.config.streaming() && !self.spill_fallback
    }

    /// pgoutput's options for this server version and value format.
    fn start_options(&self) -> Vec<(&'static str, String)> {
        let proto = match self.server_version {
            v if v >= 160_000 => 4,
            v if v >= 150_000 => 3,
            v if v >= 140_000 => 2,
            _ => 1,
        };
        let mut options = vec![
            ("proto_version", proto.to_string()),
            (
                "publication_names",
                publication_names(&[self.config.publication()]),
            ),
        ];
        if self.server_version >= 140_000 {
            options.push(("messages", "true".to_string()));
            if self.binary {
                options.push(("binary", "true".to_string()));
            }
            if self.streaming() {
                options.push(("streaming", "on".to_string()));
            }
        }
        options
    }
}

/// What the session reported to the server, carried through a replay.
struct Status {
    received: PgLsn,
    acked: PgLsn,
    last: Instant,
}

/// The position the host acknowledged last (durably stored), `0/0` before any.
fn acked(acks: &AckReceiver) -> PgLsn {
    acked_now(acks, PgLsn::ZERO)
}

/// The host's latest acknowledgement, or `previous` when it has none or it does not parse
/// (the host handed back a checkpoint of another source: never report more than we know).
fn acked_now(acks: &AckReceiver, previous: PgLsn) -> PgLsn {
    acks.latest()
        .and_then(|c| PgLsn::from_checkpoint(&c).ok())
        .unwrap_or(previous)
}
