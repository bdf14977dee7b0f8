//! Backend message framing and the few message bodies the replication connection reads.
//!
//! Every byte here comes from the server and is untrusted: lengths are checked, nothing
//! panics, and a malformed message becomes a `Decode` error.

use bytes::{Buf, BytesMut};
use powersync_source_core::SourceError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::socket::PgStream;
use super::{ConnKind, ServerError, Target};
use crate::cursor::{Cursor, Short};

/// Largest backend message accepted (PostgreSQL never allocates more than 1 GiB for one).
pub(crate) const MAX_MESSAGE_LEN: usize = (1 << 30) + (1 << 16);

/// Splits one complete backend message off the front of `buf`: `(tag, body)` without the
/// 5-byte header. `Ok(None)` when `buf` holds only part of a message; then `buf` has been
/// given room for the rest of it.
pub(crate) fn split_message(buf: &mut BytesMut) -> Result<Option<(u8, BytesMut)>, SourceError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if !(4..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(SourceError::decode(format!(
            "invalid backend message (tag {:?}): length {len} out of range",
            tag as char
        )));
    }
    let total = len + 1;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut msg = buf.split_to(total);
    msg.advance(5);
    Ok(Some((tag, msg)))
}

/// A message body read through the crate's [`Cursor`]; a short read is a `Decode` error
/// naming the message.
pub(crate) struct Reader<'a> {
    cur: Cursor<'a>,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader {
            cur: Cursor::new(buf),
            what,
        }
    }

    fn short(&self) -> SourceError {
        SourceError::decode(format!("truncated {} message from the server", self.what))
    }

    pub fn is_empty(&self) -> bool {
        self.cur.is_empty()
    }

    pub fn u8(&mut self) -> Result<u8, SourceError> {
        self.cur.u8().map_err(|Short| self.short())
    }

    pub fn i16(&mut self) -> Result<i16, SourceError> {
        self.cur.i16().map_err(|Short| self.short())
    }

    pub fn i32(&mut self) -> Result<i32, SourceError> {
        self.cur.i32().map_err(|Short| self.short())
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], SourceError> {
        self.cur.bytes(n).map_err(|Short| self.short())
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.cur.take_rest()
    }

    /// A NUL-terminated string, lossily decoded (server texts are UTF-8 with
    /// `client_encoding=UTF8`, but an error must never hide behind a decode failure).
    pub fn cstr(&mut self) -> Result<String, SourceError> {
        let raw = self.cur.until_nul().map_err(|Short| self.short())?;
        Ok(String::from_utf8_lossy(raw).into_owned())
    }
}

/// Parses an `ErrorResponse` / `NoticeResponse` body.
pub(crate) fn parse_error_fields(body: &[u8]) -> ServerError {
    let mut r = Reader::new(body, "ErrorResponse");
    let mut e = ServerError::default();
    let mut severity_nonlocalized = None;
    while let Ok(t) = r.u8() {
        if t == 0 {
            break;
        }
        let Ok(v) = r.cstr() else { break };
        match t {
            b'S' => e.severity = v,
            b'V' => severity_nonlocalized = Some(v),
            b'C' => e.code = v,
            b'M' => e.message = v,
            b'D' => e.detail = Some(v),
            b'H' => e.hint = Some(v),
            _ => {}
        }
    }
    if let Some(v) = severity_nonlocalized {
        e.severity = v;
    }
    if e.code.is_empty() {
        e.code = "XX000".to_string();
    }
    if e.message.is_empty() {
        e.message = "server sent an error without a message".to_string();
    }
    e
}

/// Parses a `DataRow` body into text columns.
pub(crate) fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>, SourceError> {
    let mut r = Reader::new(body, "DataRow");
    let n = r.i16()?;
    if n < 0 {
        return Err(SourceError::decode("DataRow with a negative column count"));
    }
    let mut row = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = r.i32()?;
        if len < 0 {
            row.push(None);
        } else {
            let bytes = r.take(len as usize)?;
            let s = std::str::from_utf8(bytes).map_err(|_| {
                SourceError::decode("DataRow column is not valid UTF-8 (client_encoding=UTF8)")
            })?;
            row.push(Some(s.to_string()));
        }
    }
    Ok(row)
}

/// Parses a `ParameterStatus` body.
pub(crate) fn parse_parameter_status(body: &[u8]) -> Result<(String, String), SourceError> {
    let mut r = Reader::new(body, "ParameterStatus");
    Ok((r.cstr()?, r.cstr()?))
}

/// `server_version` (`15.20 (Debian ...)`, `9.6.24`, `17beta1`) as `server_version_num`
/// (`150020`, `90624`, `170000`). `None` if it does not start with a number.
pub(crate) fn parse_server_version(v: &str) -> Option<u32> {
    let numeric: String = v
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').filter(|p| !p.is_empty());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if major >= 10 {
        Some(major * 10000 + minor.min(9999))
    } else {
        let patch: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(major * 10000 + minor.min(99) * 100 + patch.min(99))
    }
}

/// Bytes asked of the socket per read on the hot path (one allocation per this many bytes
/// of CopyData, amortized; never one per message).
const READ_CHUNK: usize = 256 * 1024;
/// Below this much free room, the next read first grows the buffer by [`READ_CHUNK`].
const MIN_READ_ROOM: usize = 16 * 1024;

/// The framed protocol state shared by the connection and the stream.
pub(super) struct Wire {
    pub(super) stream: PgStream,
    pub(super) rbuf: BytesMut,
    pub(super) wbuf: BytesMut,
    pub(super) target: Target,
    pub(super) bytes_received: u64,
}

impl Wire {
    pub(super) fn new(stream: PgStream, target: Target) -> Self {
        Wire {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(256),
            target,
            bytes_received: 0,
        }
    }

    /// Reads more bytes into `rbuf`; EOF is a `Connection` error. Cancel-safe.
    pub(super) async fn fill(&mut self, doing: &str) -> Result<(), SourceError> {
        if self.rbuf.capacity() - self.rbuf.len() < MIN_READ_ROOM {
            self.rbuf.reserve(READ_CHUNK);
        }
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) => Err(super::eof_error(&self.target, doing)),
            Ok(n) => {
                self.bytes_received += n as u64;
                Ok(())
            }
            Err(e) => Err(super::io_error(&self.target, doing, e)),
        }
    }

    /// The next whole backend message.
    pub(super) async fn next_message(
        &mut self,
        doing: &str,
    ) -> Result<(u8, BytesMut), SourceError> {
        loop {
            if let Some(m) = split_message(&mut self.rbuf)
                .map_err(|e| e.context(format!("{doing} {}", self.target)))?
            {
                return Ok(m);
            }
            self.fill(doing).await?;
        }
    }

    /// Writes everything queued in `wbuf` and flushes. A cancelled call leaves the unsent
    /// rest queued for the next call: nothing is sent twice or torn.
    pub(super) async fn flush(&mut self, doing: &str) -> Result<(), SourceError> {
        while !self.wbuf.is_empty() {
            let n = self
                .stream
                .write(&self.wbuf)
                .await
                .map_err(|e| super::io_error(&self.target, doing, e))?;
            if n == 0 {
                return Err(super::eof_error(&self.target, doing));
            }
            self.wbuf.advance(n);
        }
        self.stream
            .flush()
            .await
            .map_err(|e| super::io_error(&self.target, doing, e))
    }

    pub(super) fn server_error(&self, doing: &str, body: &[u8]) -> SourceError {
        let e = parse_error_fields(body);
        super::server_error(&self.target, ConnKind::Replication, doing, &e)
    }

    pub(super) fn log_notice(&self, body: &[u8]) {
        let n = parse_error_fields(body);
        log_notice(&self.target, &n);
    }
}

fn log_notice(target: &Target, n: &ServerError) {
    match n.severity.as_str() {
        "WARNING" => tracing::warn!(
            target: "powersync_source_postgres",
            code = %n.code,
            "server {}: {}: {}", target, n.severity, n.message
        ),
        _ => tracing::info!(
            target: "powersync_source_postgres",
            code = %n.code,
            "server {}: {}: {}", target, n.severity, n.message
        ),
    }
}

/// A message the protocol does not allow at this point.
pub(super) fn unexpected(target: &Target, doing: &str, tag: u8) -> SourceError {
    SourceError::decode(format!(
        "{doing} {target}: unexpected message type {:?} from the server",
        tag as char
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_server_version("15.20 (Debian 15.20-0+deb12u1)"),
            Some(150020)
        );
        assert_eq!(parse_server_version("9.6.24"), Some(90624));
        assert_eq!(parse_server_version("17beta1"), Some(170000));
        assert_eq!(parse_server_version("16.4"), Some(160004));
        assert_eq!(parse_server_version("x"), None);
    }

    #[test]
    fn framing() {
        let mut buf = BytesMut::from(&b"d\0\0\0\x07abcZ\0\0\0\x05I"[..]);
        let (t, body) = split_message(&mut buf).unwrap().unwrap();
        assert_eq!((t, &body[..]), (b'd', &b"abc"[..]));
        let (t, body) = split_message(&mut buf).unwrap().unwrap();
        assert_eq!((t, &body[..]), (b'Z', &b"I"[..]));
        assert!(split_message(&mut buf).unwrap().is_none());
        let mut partial = BytesMut::from(&b"d\0\0\0\x07ab"[..]);
        assert!(split_message(&mut partial).unwrap().is_none());
        assert_eq!(partial.len(), 7);
        let mut bad = BytesMut::from(&b"d\0\0\0\x01"[..]);
        assert!(split_message(&mut bad).is_err());
        let mut huge = BytesMut::from(&b"d\x7f\xff\xff\xff"[..]);
        assert!(split_message(&mut huge).is_err());
    }

    #[test]
    fn data_rows_and_errors() {
        let body = b"\0\x02\0\0\0\x02hi\xff\xff\xff\xff";
        assert_eq!(
            parse_data_row(body).unwrap(),
            vec![Some("hi".to_string()), None]
        );
        assert!(parse_data_row(b"\0\x01\0\0\0\x09hi").is_err());
        let e = parse_error_fields(b"SERROR\0VERROR\0C42704\0Mno slot\0Dmore\0\0");
        assert_eq!(e.code, "42704");
        assert_eq!(e.message, "no slot");
        assert_eq!(e.detail.as_deref(), Some("more"));
        let e = parse_error_fields(b"Sjunk");
        assert_eq!(e.code, "XX000");
    }
}
