//! The pgoutput decoder's reader: the crate's [`Cursor`] plus what failed and where.
//!
//! Reads return `Result<T, Fail>` with a zero-sized [`Fail`] so that the hot path passes values
//! in registers; the reader itself remembers what failed and where, and
//! [`Reader::into_error`] turns that into a [`DecodeError`] once, on the way out. A read that
//! fails for lack of bytes does not move the cursor, so a truncation needs no bookkeeping: it is
//! reported at the cursor.

use powersync_source_core::position::PgLsn;

use crate::cursor::{Cursor, Short};

use super::error::{DecodeError, DecodeErrorKind};
use super::PgTimestamp;

/// A failed read; the details are in the [`Reader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fail;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    cur: Cursor<'a>,
    /// The message being decoded, for errors.
    pub(crate) context: &'static str,
    /// A failure other than truncation at the cursor: what and where.
    failure: Option<(DecodeErrorKind, usize)>,
}

impl<'a> Reader<'a> {
    #[inline(always)]
    pub(crate) fn new(buf: &'a [u8], context: &'static str) -> Self {
        Reader {
            cur: Cursor::new(buf),
            context,
            failure: None,
        }
    }

    /// Offset of the next unread byte from the start of the message.
    #[inline(always)]
    pub(crate) fn offset(&self) -> usize {
        self.cur.offset()
    }

    /// The unread bytes.
    #[inline(always)]
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.cur.rest()
    }

    /// Moves the cursor to `rest`, which must be a suffix of the unread bytes.
    #[inline(always)]
    pub(crate) fn set_rest(&mut self, rest: &'a [u8]) {
        self.cur.set_rest(rest);
    }

    /// Records a failure of `kind` at `offset`.
    #[cold]
    #[inline(never)]
    pub(crate) fn fail_at(&mut self, kind: DecodeErrorKind, offset: usize) -> Fail {
        self.failure = Some((kind, offset));
        Fail
    }

    /// The error for the last failed read.
    #[cold]
    #[inline(never)]
    pub(crate) fn into_error(self) -> DecodeError {
        let (kind, offset) = self
            .failure
            .unwrap_or((DecodeErrorKind::Truncated, self.offset()));
        DecodeError::new(self.context, kind, offset)
    }

    #[inline(always)]
    pub(crate) fn u8(&mut self) -> Result<u8, Fail> {
        self.cur.u8().map_err(|Short| Fail)
    }

    #[inline(always)]
    pub(crate) fn u16(&mut self) -> Result<u16, Fail> {
        self.cur.u16().map_err(|Short| Fail)
    }

    #[inline(always)]
    pub(crate) fn i32(&mut self) -> Result<i32, Fail> {
        self.cur.i32().map_err(|Short| Fail)
    }

    #[inline(always)]
    pub(crate) fn u32(&mut self) -> Result<u32, Fail> {
        self.cur.u32().map_err(|Short| Fail)
    }

    #[inline(always)]
    pub(crate) fn u64(&mut self) -> Result<u64, Fail> {
        self.cur.u64().map_err(|Short| Fail)
    }

    #[inline(always)]
    pub(crate) fn i64(&mut self) -> Result<i64, Fail> {
        self.cur.i64().map_err(|Short| Fail)
    }

    #[inline(always)]
    pub(crate) fn lsn(&mut self) -> Result<PgLsn, Fail> {
        self.u64().map(PgLsn)
    }

    #[inline(always)]
    pub(crate) fn timestamp(&mut self) -> Result<PgTimestamp, Fail> {
        self.i64().map(PgTimestamp)
    }

    /// The next `n` bytes.
    #[inline(always)]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Fail> {
        self.cur.bytes(n).map_err(|Short| Fail)
    }

    /// An `Int32` length that must not be negative, then that many bytes.
    #[inline(always)]
    pub(crate) fn len_prefixed(&mut self, field: &'static str) -> Result<&'a [u8], Fail> {
        let len = self.i32()?;
        if len < 0 {
            let at = self.offset() - 4;
            return Err(self.fail_at(DecodeErrorKind::NegativeLength { field, value: len }, at));
        }
        self.bytes(len as usize)
    }

    /// Everything that is left.
    #[inline(always)]
    pub(crate) fn take_rest(&mut self) -> &'a [u8] {
        self.cur.take_rest()
    }

    /// A NUL-terminated UTF-8 string (the NUL is consumed, not returned).
    #[inline]
    pub(crate) fn cstr(&mut self, field: &'static str) -> Result<&'a str, Fail> {
        let at = self.offset();
        let mut cur = self.cur;
        let Ok(raw) = cur.until_nul() else {
            return Err(self.fail_at(DecodeErrorKind::UnterminatedString { field }, at));
        };
        let Ok(s) = std::str::from_utf8(raw) else {
            return Err(self.fail_at(DecodeErrorKind::InvalidUtf8 { field }, at));
        };
        self.cur = cur;
        Ok(s)
    }

    /// Fails unless every byte was consumed.
    #[inline(always)]
    pub(crate) fn finish(&mut self) -> Result<(), Fail> {
        if self.cur.is_empty() {
            Ok(())
        } else {
            let (n, at) = (self.cur.rest().len(), self.offset());
            Err(self.fail_at(DecodeErrorKind::TrailingBytes(n), at))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Reader<'_>) -> (DecodeErrorKind, usize) {
        let e = r.into_error();
        (e.kind, e.offset)
    }

    #[test]
    fn pgoutput_reader_reads_big_endian_and_reports_truncation_at_cursor() {
        let buf = [1, 0, 2, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xfe, 9];
        let mut r = Reader::new(&buf, "Test");
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(2));
        assert_eq!(r.u32(), Ok(3));
        assert_eq!(r.i32(), Ok(-2));
        assert_eq!(r.offset(), 11);
        assert_eq!(r.u64(), Err(Fail));
        assert_eq!(r.offset(), 11, "a failed read does not move the cursor");
        assert_eq!(err(r), (DecodeErrorKind::Truncated, 11));
        assert_eq!(r.into_error().context, "Test");
    }

    #[test]
    fn pgoutput_reader_strings() {
        let mut r = Reader::new(b"ab\0\0c", "Test");
        assert_eq!(r.cstr("x"), Ok("ab"));
        assert_eq!(r.cstr("x"), Ok(""));
        assert_eq!(r.cstr("y"), Err(Fail));
        assert_eq!(
            err(r),
            (DecodeErrorKind::UnterminatedString { field: "y" }, 4)
        );

        let mut r = Reader::new(b"\xc3\x28\0", "Test");
        assert_eq!(r.cstr("z"), Err(Fail));
        assert_eq!(err(r), (DecodeErrorKind::InvalidUtf8 { field: "z" }, 0));
    }

    #[test]
    fn pgoutput_reader_lengths() {
        let mut r = Reader::new(&[0, 0, 0, 2, b'h', b'i', 0xff, 0xff, 0xff, 0xff], "Test");
        assert_eq!(r.len_prefixed("content"), Ok(&b"hi"[..]));
        assert_eq!(r.len_prefixed("content"), Err(Fail));
        let neg = DecodeErrorKind::NegativeLength {
            field: "content",
            value: -1,
        };
        assert_eq!(err(r), (neg, 6));

        let mut r = Reader::new(&[0x7f, 0xff, 0xff, 0xff, 1], "Test");
        assert_eq!(r.len_prefixed("column"), Err(Fail));
        assert_eq!(err(r), (DecodeErrorKind::Truncated, 4));

        let mut r = Reader::new(b"abc", "Test");
        assert_eq!(r.bytes(usize::MAX), Err(Fail));
        assert_eq!(r.bytes(2), Ok(&b"ab"[..]));
        assert_eq!(r.finish(), Err(Fail));
        assert_eq!(err(r), (DecodeErrorKind::TrailingBytes(1), 2));
        assert_eq!(r.take_rest(), b"c");
        assert_eq!(r.finish(), Ok(()));
    }
}
