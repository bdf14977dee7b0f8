//! The CopyBoth stream after `START_REPLICATION`: raw `CopyData` payloads in, standby status
//! updates out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes};
use postgres_protocol::message::frontend;
use powersync_source_core::position::PgLsn;
use powersync_source_core::SourceError;
use tokio::io::AsyncWriteExt;

use super::wire::{split_message, unexpected, Wire};

/// Microseconds between 1970-01-01 and 2000-01-01 (the PostgreSQL epoch).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Streaming,
    /// The server sent CopyDone (or ended the command): `recv` returns `None`.
    Ended,
    /// The server sent an ErrorResponse: `recv` keeps failing; reconnect.
    Failed,
}

/// The CopyBoth stream after `START_REPLICATION`.
///
/// [`recv`](Self::recv) returns each CopyData payload as a zero-copy [`Bytes`] slice of a
/// large read buffer (one socket read and at most one allocation per 256 KiB of traffic, not
/// per message).
///
/// # Cancel safety
/// `recv` is cancel-safe: its only await point is a read into the connection's own buffer,
/// and a message is split off that buffer only when it is complete and returned in the same
/// poll. Dropping a pending `recv` (e.g. the losing branch of `tokio::select!` with a
/// timer) loses nothing; the next `recv` continues where it was. `send_status` queues its
/// frame in an internal write buffer before writing; if it is cancelled midway the rest
/// stays queued and is sent first by the next `send_status`, so frames are never torn or
/// duplicated (but a cancelled status update may be sent late).
pub(crate) struct ReplicationStream {
    wire: Wire,
    state: StreamState,
}

impl std::fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("target", &self.wire.target.to_string())
            .field("state", &self.state)
            .field("bytes_received", &self.wire.bytes_received)
            .finish()
    }
}

impl ReplicationStream {
    /// The stream on a connection whose `START_REPLICATION` was answered with
    /// CopyBothResponse.
    pub(super) fn new(wire: Wire) -> Self {
        ReplicationStream {
            wire,
            state: StreamState::Streaming,
        }
    }

    /// The next CopyData payload (`w` XLogData or `k` primary keepalive, first byte
    /// included), or `None` once the server has ended the copy (CopyDone / CommandComplete).
    /// After a server ErrorResponse (returned as the error it maps to, e.g. `HistoryLost` for
    /// an invalidated slot, `Connection` for a terminated walsender) every later call fails
    /// with a `Connection` error; I/O errors and EOF are `Connection` errors.
    pub(crate) async fn recv(&mut self) -> Result<Option<Bytes>, SourceError> {
        const DOING: &str = "streaming from";
        loop {
            match self.state {
                StreamState::Streaming => {}
                StreamState::Ended => return Ok(None),
                StreamState::Failed => {
                    return Err(SourceError::connection(format!(
                        "{DOING} {}: the replication stream already failed; reconnect",
                        self.wire.target
                    )))
                }
            }
            let buf = &mut self.wire.rbuf;
            if buf.len() >= 5 {
                let tag = buf[0];
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if tag == b'd' && len >= 4 && buf.len() > len {
                    // Hot path: one CopyData, split off without copying.
                    let mut frame = buf.split_to(len + 1);
                    frame.advance(5);
                    return Ok(Some(frame.freeze()));
                }
                if let Some((tag, body)) = split_message(buf)
                    .map_err(|e| e.context(format!("{DOING} {}", self.wire.target)))?
                {
                    match tag {
                        b'd' => return Ok(Some(body.freeze())),
                        b'c' | b'C' | b'Z' => {
                            self.state = StreamState::Ended;
                            return Ok(None);
                        }
                        b'E' => {
                            self.state = StreamState::Failed;
                            return Err(self.wire.server_error(DOING, &body));
                        }
                        b'N' => self.wire.log_notice(&body),
                        b'S' | b'A' => {}
                        other => return Err(unexpected(&self.wire.target, DOING, other)),
                    }
                    continue;
                }
            }
            self.wire.fill(DOING).await?;
        }
    }

    /// Sends a standby status update (`r`): the positions written, flushed (durable: the
    /// server may release WAL up to here) and applied, and whether the server should answer
    /// at once with a keepalive. Flushed before returning.
    pub(crate) async fn send_status(
        &mut self,
        write: PgLsn,
        flush: PgLsn,
        apply: PgLsn,
        reply_requested: bool,
    ) -> Result<(), SourceError> {
        let buf = &mut self.wire.wbuf;
        // CopyData header + 'r' + 3 × u64 + i64 + u8.
        buf.reserve(1 + 4 + 34);
        buf.put_u8(b'd');
        buf.put_u32(4 + 34);
        buf.put_u8(b'r');
        buf.put_u64(write.0);
        buf.put_u64(flush.0);
        buf.put_u64(apply.0);
        buf.put_i64(pg_now_micros());
        buf.put_u8(u8::from(reply_requested));
        self.wire.flush("sending a status update to").await
    }

    /// Ends the copy from our side (CopyDone) and closes the connection (Terminate).
    pub(crate) async fn close(mut self) -> Result<(), SourceError> {
        frontend::copy_done(&mut self.wire.wbuf);
        frontend::terminate(&mut self.wire.wbuf);
        self.wire.flush("closing").await?;
        let _ = self.wire.stream.shutdown().await;
        Ok(())
    }

    /// Bytes read from the socket since the connection opened (after TLS decryption;
    /// protocol framing included).
    #[cfg(test)]
    pub(crate) fn bytes_received(&self) -> u64 {
        self.wire.bytes_received
    }
}

/// Microseconds since 2000-01-01 00:00 UTC, the clock field of status updates.
pub(crate) fn pg_now_micros() -> i64 {
    let since_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    since_unix.as_micros() as i64 - PG_EPOCH_OFFSET_MICROS
}
