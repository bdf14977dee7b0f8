//! A bounds-checked big-endian cursor over a borrowed message. Every read either returns a
//! value or a [`DecodeError`] naming the message and the byte offset; nothing here panics.

use powersync_source_core::position::PgLsn;

use super::error::{DecodeError, DecodeErrorKind};
use super::PgTimestamp;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    len: usize,
    /// The message being decoded, for errors.
    pub(crate) context: &'static str,
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn new(buf: &'a [u8], context: &'static str) -> Self {
        Reader {
            rest: buf,
            len: buf.len(),
            context,
        }
    }

    /// Offset of the next unread byte from the start of the message.
    #[inline]
    pub(crate) fn offset(&self) -> usize {
        self.len - self.rest.len()
    }

    /// The unread bytes.
    #[inline]
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    #[inline]
    pub(crate) fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(self.context, kind, self.offset())
    }

    #[inline]
    pub(crate) fn error_at(&self, kind: DecodeErrorKind, offset: usize) -> DecodeError {
        DecodeError::new(self.context, kind, offset)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        match self.rest.split_first_chunk::<N>() {
            Some((head, tail)) => {
                self.rest = tail;
                Ok(*head)
            }
            None => Err(self.error(DecodeErrorKind::Truncated)),
        }
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        match self.rest.split_first() {
            Some((&b, tail)) => {
                self.rest = tail;
                Ok(b)
            }
            None => Err(self.error(DecodeErrorKind::Truncated)),
        }
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    #[inline]
    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    #[inline]
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_be_bytes)
    }

    #[inline]
    pub(crate) fn lsn(&mut self) -> Result<PgLsn, DecodeError> {
        self.u64().map(PgLsn)
    }

    #[inline]
    pub(crate) fn timestamp(&mut self) -> Result<PgTimestamp, DecodeError> {
        self.i64().map(PgTimestamp)
    }

    /// The next `n` bytes.
    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() {
            return Err(self.error(DecodeErrorKind::Truncated));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// An `Int32` length that must not be negative, then that many bytes.
    #[inline]
    pub(crate) fn len_prefixed(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let at = self.offset();
        let len = self.i32()?;
        if len < 0 {
            return Err(self.error_at(DecodeErrorKind::NegativeLength { field, value: len }, at));
        }
        self.bytes(len as usize)
    }

    /// Everything that is left.
    #[inline]
    pub(crate) fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// A NUL-terminated UTF-8 string (the NUL is consumed, not returned).
    #[inline]
    pub(crate) fn cstr(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let at = self.offset();
        let Some(nul) = self.rest.iter().position(|&b| b == 0) else {
            return Err(self.error(DecodeErrorKind::UnterminatedString { field }));
        };
        let raw = &self.rest[..nul];
        let s = std::str::from_utf8(raw)
            .map_err(|_| self.error_at(DecodeErrorKind::InvalidUtf8 { field }, at))?;
        self.rest = &self.rest[nul + 1..];
        Ok(s)
    }

    /// Fails unless every byte was consumed.
    #[inline]
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.error(DecodeErrorKind::TrailingBytes(self.rest.len())))
        }
    }
}
