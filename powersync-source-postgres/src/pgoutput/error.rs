//! The decoding error: what was being decoded, what went wrong, and at which byte.

use std::fmt;

/// Why a replication or pgoutput message could not be decoded.
///
/// Offsets are relative to the start of the slice handed to the decoding function (for a
/// pgoutput message carried by XLogData, the start of [`XLogData::data`](super::XLogData::data)).
/// Displayed as, e.g., `truncated Relation message at byte 17`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    /// The message being decoded (`"Relation"`, `"XLogData"`, ...), or `"pgoutput"` /
    /// `"replication"` when the message type itself could not be read.
    pub context: &'static str,
    /// What went wrong.
    pub kind: DecodeErrorKind,
    /// Byte offset of the field that could not be decoded.
    pub offset: usize,
}

/// What went wrong while decoding, see [`DecodeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ended in the middle of a field.
    Truncated,
    /// The message type byte is not one this decoder knows.
    UnknownMessageType(u8),
    /// A length field was negative.
    NegativeLength {
        /// Which length (`"column"`, `"content"`).
        field: &'static str,
        /// The value received.
        value: i32,
    },
    /// A tuple column kind other than `n`, `u`, `t`, `b`.
    UnknownColumnKind(u8),
    /// A tuple marker (`N`, `K`, `O`) was expected but another byte was found.
    UnexpectedTupleMarker(u8),
    /// A replica identity other than `d`, `n`, `f`, `i`.
    UnknownReplicaIdentity(u8),
    /// A C string without its terminating NUL byte.
    UnterminatedString {
        /// Which string (`"namespace"`, `"prefix"`, ...).
        field: &'static str,
    },
    /// A string that is not UTF-8.
    InvalidUtf8 {
        /// Which string (`"namespace"`, `"prefix"`, ...).
        field: &'static str,
    },
    /// The message has bytes left over after its last field.
    TrailingBytes(usize),
}

impl DecodeError {
    #[cold]
    #[inline(never)]
    pub(crate) fn new(context: &'static str, kind: DecodeErrorKind, offset: usize) -> Self {
        DecodeError {
            context,
            kind,
            offset,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ctx, at) = (self.context, self.offset);
        match self.kind {
            DecodeErrorKind::Truncated => write!(f, "truncated {ctx} message at byte {at}"),
            DecodeErrorKind::UnknownMessageType(t) => {
                write!(f, "unknown {ctx} message type 0x{t:02X}")?;
                if t.is_ascii_graphic() {
                    write!(f, " ('{}')", t as char)?;
                }
                write!(f, " at byte {at}")
            }
            DecodeErrorKind::NegativeLength { field, value } => {
                write!(
                    f,
                    "negative {field} length {value} in {ctx} message at byte {at}"
                )
            }
            DecodeErrorKind::UnknownColumnKind(k) => {
                write!(
                    f,
                    "unknown tuple column kind 0x{k:02X} in {ctx} message at byte {at}"
                )
            }
            DecodeErrorKind::UnexpectedTupleMarker(m) => {
                write!(
                    f,
                    "unexpected tuple marker 0x{m:02X} in {ctx} message at byte {at}"
                )
            }
            DecodeErrorKind::UnknownReplicaIdentity(r) => {
                write!(
                    f,
                    "unknown replica identity 0x{r:02X} in {ctx} message at byte {at}"
                )
            }
            DecodeErrorKind::UnterminatedString { field } => {
                write!(
                    f,
                    "unterminated {field} string in {ctx} message at byte {at}"
                )
            }
            DecodeErrorKind::InvalidUtf8 { field } => {
                write!(f, "invalid UTF-8 in {field} of {ctx} message at byte {at}")
            }
            DecodeErrorKind::TrailingBytes(n) => {
                write!(f, "{n} trailing bytes after {ctx} message at byte {at}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}
