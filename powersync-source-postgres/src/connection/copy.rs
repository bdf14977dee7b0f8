//! An ordinary SQL session on this crate's own protocol code, for the snapshot readers:
//! simple queries and `COPY … TO STDOUT`, whose `CopyData` payloads are handed to the caller
//! straight from the receive buffer.
//!
//! Why not `tokio_postgres::Client::copy_out`: it moves every `CopyData` message (one per row
//! for `COPY TO`) through a channel from its connection task and wraps it in a `Bytes`, which
//! costs more client CPU per row than decoding the row. Here one socket read of up to 256 KiB
//! is followed by a synchronous pass over every complete message in it.

use bytes::Buf;
use postgres_protocol::message::frontend;
use powersync_source_core::SourceError;

use super::wire::{self, unexpected, Wire, MAX_MESSAGE_LEN};
use super::{ConnKind, Target};
use crate::config::PostgresConfig;

/// An ordinary (non-replication) backend connection: TLS, authentication, `connect_timeout`
/// and session settings (`client_encoding=UTF8`, `DateStyle=ISO`, `IntervalStyle=postgres`,
/// `extra_float_digits=1`) as the replication connection's.
///
/// Errors follow the table in the [module docs](super). After an error returned by
/// [`CopyOut`] (other than the server's own error at the end of the command) the session's
/// protocol state is unknown: drop it.
pub(crate) struct CopySession {
    wire: Wire,
}

impl std::fmt::Debug for CopySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopySession")
            .field("target", &self.wire.target.to_string())
            .finish()
    }
}

impl CopySession {
    /// Connects and authenticates (see [`CopySession`]).
    pub(crate) async fn connect(cfg: &PostgresConfig) -> Result<CopySession, SourceError> {
        Ok(CopySession {
            wire: super::replication::connect_sql_wire(cfg).await?,
        })
    }

    /// Runs `sql` (one or more statements) with the simple query protocol and discards any
    /// rows; a server error is returned once the server is ready again, as
    /// `<doing> <target>` with the server's message as the cause.
    pub(crate) async fn execute(&mut self, sql: &str, doing: &str) -> Result<(), SourceError> {
        self.send_query(sql).await?;
        let mut error = None;
        loop {
            let (tag, body) = self.wire.next_message(doing).await?;
            match tag {
                b'T' | b'D' | b'C' | b'I' | b'S' | b'A' => {}
                b'E' => {
                    error.get_or_insert_with(|| server_error(&self.wire.target, doing, &body));
                }
                b'N' => self.wire.log_notice(&body),
                b'Z' => break,
                // A COPY started by `sql`: not what this method is for.
                b'G' | b'H' | b'W' => {
                    return Err(SourceError::unsupported(format!(
                        "{doing} {}: the statement started a COPY; use copy_out",
                        self.wire.target
                    )))
                }
                other => return Err(unexpected(&self.wire.target, doing, other)),
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends `copy` (a `COPY … TO STDOUT` statement) and waits for the server's
    /// CopyOutResponse; the data then comes through the returned [`CopyOut`]. A server error
    /// (a bad query, a missing table) is returned once the server is ready again.
    pub(crate) async fn copy_out<'s>(
        &'s mut self,
        copy: &str,
        doing: &'s str,
    ) -> Result<CopyOut<'s>, SourceError> {
        self.send_query(copy).await?;
        let mut error = None;
        loop {
            let (tag, body) = self.wire.next_message(doing).await?;
            match tag {
                b'H' if error.is_none() => {
                    return Ok(CopyOut {
                        wire: &mut self.wire,
                        doing,
                        error: None,
                        want: 0,
                    })
                }
                b'E' => {
                    error.get_or_insert_with(|| server_error(&self.wire.target, doing, &body));
                }
                b'N' => self.wire.log_notice(&body),
                b'S' | b'A' => {}
                b'Z' => {
                    return Err(error.unwrap_or_else(|| {
                        SourceError::decode(format!(
                            "{doing} {}: the statement did not start a COPY",
                            self.wire.target
                        ))
                    }))
                }
                other => return Err(unexpected(&self.wire.target, doing, other)),
            }
        }
    }

    async fn send_query(&mut self, sql: &str) -> Result<(), SourceError> {
        frontend::query(sql, &mut self.wire.wbuf).map_err(|e| {
            SourceError::config("invalid query (contains a NUL byte?)").with_source(e)
        })?;
        self.wire.flush("sending a query to").await
    }
}

/// A `COPY … TO STDOUT` in progress on a [`CopySession`].
///
/// Read it by alternating [`CopyOut::drain`] (every complete message already received, no
/// waiting) and [`CopyOut::receive`] (one socket read) until `drain` reports the end.
pub(crate) struct CopyOut<'s> {
    wire: &'s mut Wire,
    doing: &'s str,
    /// The server's error, returned at ReadyForQuery (the data after it is not handed on).
    error: Option<SourceError>,
    /// Bytes of the incomplete message at the front of the buffer, to make room for.
    want: usize,
}

/// What [`CopyOut::drain`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Every complete message was handed on; more data may come: [`CopyOut::receive`],
    /// then drain again.
    More,
    /// `on_data` asked to pause: messages may still be buffered; drain again (no receive).
    Paused,
    /// The COPY finished (CopyDone, CommandComplete, ReadyForQuery all received).
    Done,
}

impl CopyOut<'_> {
    /// Hands the payload of every complete `CopyData` message already received to
    /// `on_data`, in order, straight from the receive buffer (no copy, no allocation), and
    /// consumes them. A payload is one slice of the COPY's byte stream: its boundaries carry
    /// no meaning. `on_data` returns whether to go on: `false` stops after that message
    /// ([`Drained::Paused`]), so the caller can hand on what it has before reading more.
    /// Returns [`Drained::Done`] at the end of the command, or the server's error then (the
    /// session is then usable again); an error from `on_data` or a malformed message is
    /// returned at once.
    pub(crate) fn drain(
        &mut self,
        mut on_data: impl FnMut(&[u8]) -> Result<bool, SourceError>,
    ) -> Result<Drained, SourceError> {
        let buf = &self.wire.rbuf[..];
        let mut pos = 0;
        let mut done = false;
        let mut paused = false;
        self.want = 0;
        while buf.len() - pos >= 5 {
            let tag = buf[pos];
            let len = u32::from_be_bytes([buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]])
                as usize;
            if !(4..=MAX_MESSAGE_LEN).contains(&len) {
                return Err(SourceError::decode(format!(
                    "{} {}: invalid backend message (tag {:?}): length {len} out of range",
                    self.doing, self.wire.target, tag as char
                )));
            }
            let end = pos + 1 + len;
            if end > buf.len() {
                self.want = end - pos;
                break;
            }
            let body = &buf[pos + 5..end];
            match tag {
                b'd' => {
                    if self.error.is_none() && !on_data(body)? {
                        paused = true;
                    }
                }
                // CopyDone, then CommandComplete: the end comes with ReadyForQuery.
                b'c' | b'C' | b'S' | b'A' => {}
                b'E' => {
                    if self.error.is_none() {
                        self.error = Some(server_error(&self.wire.target, self.doing, body));
                    }
                }
                b'N' => self.wire.log_notice(body),
                b'Z' => {
                    pos = end;
                    done = true;
                    break;
                }
                other => return Err(unexpected(&self.wire.target, self.doing, other)),
            }
            pos = end;
            if paused {
                break;
            }
        }
        self.wire.rbuf.advance(pos);
        if paused {
            return Ok(Drained::Paused);
        }
        if !done {
            return Ok(Drained::More);
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(Drained::Done),
        }
    }

    /// Waits for more bytes from the server (one socket read); a closed connection is a
    /// `Connection` error. Cancel-safe.
    pub(crate) async fn receive(&mut self) -> Result<(), SourceError> {
        let rbuf = &mut self.wire.rbuf;
        // A message bigger than the buffer's free room: make room for all of it at once.
        if self.want > rbuf.len() {
            rbuf.reserve(self.want - rbuf.len());
        }
        self.wire.fill(self.doing).await
    }
}

/// A server `ErrorResponse` on an SQL session (see the [module docs](super)).
fn server_error(target: &Target, doing: &str, body: &[u8]) -> SourceError {
    let e = wire::parse_error_fields(body);
    super::server_error(target, ConnKind::Sql, doing, &e)
}
