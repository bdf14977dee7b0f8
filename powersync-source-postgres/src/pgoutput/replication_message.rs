//! The streaming replication protocol's CopyData payloads
//! (<https://www.postgresql.org/docs/current/protocol-replication.html>): XLogData (`w`) and
//! primary keepalive (`k`) from the server, standby status update (`r`) from the client.

use bytes::BufMut;
use powersync_source_core::position::PgLsn;

use super::error::{DecodeError, DecodeErrorKind};
use super::logical_message::PgOutputMessage;
use super::reader::{Fail, Reader};
use super::PgTimestamp;

/// A CopyData payload sent by the server during `START_REPLICATION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicationMessage<'a> {
    /// `w`: WAL data, here one pgoutput message.
    XLogData(XLogData<'a>),
    /// `k`: keepalive, possibly asking for a status update.
    PrimaryKeepalive(PrimaryKeepalive),
}

impl<'a> ReplicationMessage<'a> {
    /// Decodes a CopyData payload (without the CopyData framing). Offsets in errors are
    /// relative to `payload`.
    #[inline]
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, "replication");
        Self::read(&mut r).map_err(|Fail| r.into_error())
    }

    #[inline(always)]
    fn read(r: &mut Reader<'a>) -> Result<Self, Fail> {
        match r.u8()? {
            b'w' => {
                r.context = "XLogData";
                Ok(ReplicationMessage::XLogData(XLogData {
                    wal_start: r.lsn()?,
                    wal_end: r.lsn()?,
                    send_time: r.timestamp()?,
                    data: r.take_rest(),
                }))
            }
            b'k' => {
                r.context = "Primary keepalive";
                let m = PrimaryKeepalive {
                    wal_end: r.lsn()?,
                    send_time: r.timestamp()?,
                    reply_requested: r.u8()? != 0,
                };
                r.finish()?;
                Ok(ReplicationMessage::PrimaryKeepalive(m))
            }
            other => Err(r.fail_at(DecodeErrorKind::UnknownMessageType(other), 0)),
        }
    }
}

/// `w`: a chunk of WAL data; with pgoutput, exactly one pgoutput message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct XLogData<'a> {
    /// The starting point of the WAL data in this message.
    pub wal_start: PgLsn,
    /// The current end of WAL on the server.
    pub wal_end: PgLsn,
    /// The server's clock at the time of transmission.
    pub send_time: PgTimestamp,
    /// The WAL data (the pgoutput message), borrowed from the payload. To keep it beyond the
    /// payload's lifetime without copying, use [`bytes::Bytes::slice_ref`] on the frame.
    pub data: &'a [u8],
}

impl<'a> XLogData<'a> {
    /// Byte offset of [`XLogData::data`] within the payload.
    pub const HEADER_LEN: usize = 25;

    /// Decodes [`XLogData::data`] as a pgoutput message, see [`PgOutputMessage::decode`].
    /// Offsets in errors are relative to `data`.
    #[inline]
    pub fn pgoutput(&self, in_stream: bool) -> Result<PgOutputMessage<'a>, DecodeError> {
        PgOutputMessage::decode(self.data, in_stream)
    }
}

/// `k`: primary keepalive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrimaryKeepalive {
    /// The current end of WAL on the server.
    pub wal_end: PgLsn,
    /// The server's clock at the time of transmission.
    pub send_time: PgTimestamp,
    /// True when the server asks for a status update soon, to avoid a timeout disconnect.
    pub reply_requested: bool,
}

/// `r`: the standby status update a client sends to report its progress.
///
/// The server may release WAL up to `flush_lsn` (the slot's `confirmed_flush_lsn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StandbyStatusUpdate {
    /// The last WAL byte + 1 received and written.
    pub write_lsn: PgLsn,
    /// The last WAL byte + 1 durably stored downstream.
    pub flush_lsn: PgLsn,
    /// The last WAL byte + 1 applied.
    pub apply_lsn: PgLsn,
    /// The client's clock at the time of transmission.
    pub client_time: PgTimestamp,
    /// True to ask the server to reply immediately (with a keepalive).
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    /// Length of the encoded payload: `r`, three LSNs, a timestamp and the reply flag.
    pub const ENCODED_LEN: usize = 34;

    /// The payload bytes (to send inside a CopyData message).
    #[inline]
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0] = b'r';
        out[1..9].copy_from_slice(&self.write_lsn.0.to_be_bytes());
        out[9..17].copy_from_slice(&self.flush_lsn.0.to_be_bytes());
        out[17..25].copy_from_slice(&self.apply_lsn.0.to_be_bytes());
        out[25..33].copy_from_slice(&self.client_time.0.to_be_bytes());
        out[33] = self.reply_requested as u8;
        out
    }

    /// Appends the payload (34 bytes) to `out` (a `BytesMut`, a `Vec<u8>`, ...).
    #[inline]
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_slice(&self.to_bytes());
    }

    /// Appends the whole CopyData frontend message (`d`, `Int32` length 38, payload) to `out`.
    #[inline]
    pub fn encode_copy_data<B: BufMut>(&self, out: &mut B) {
        out.put_u8(b'd');
        out.put_i32(4 + Self::ENCODED_LEN as i32);
        out.put_slice(&self.to_bytes());
    }

    /// Decodes a payload produced by [`StandbyStatusUpdate::encode`] (for tests and fakes).
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        fn read(r: &mut Reader<'_>) -> Result<StandbyStatusUpdate, Fail> {
            match r.u8()? {
                b'r' => {}
                other => return Err(r.fail_at(DecodeErrorKind::UnknownMessageType(other), 0)),
            }
            r.context = "Standby status update";
            let m = StandbyStatusUpdate {
                write_lsn: r.lsn()?,
                flush_lsn: r.lsn()?,
                apply_lsn: r.lsn()?,
                client_time: r.timestamp()?,
                reply_requested: r.u8()? != 0,
            };
            r.finish()?;
            Ok(m)
        }
        let mut r = Reader::new(payload, "replication");
        read(&mut r).map_err(|Fail| r.into_error())
    }
}
