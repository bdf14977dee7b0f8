//! TupleData: the row images carried by Insert, Update and Delete messages.
//!
//! Layout: `Int16` column count, then per column a kind byte: `n` (null), `u` (unchanged TOASTed
//! value, not sent), `t` (text) or `b` (binary), the last two followed by an `Int32` length and
//! that many bytes. A [`TupleData`] is validated once when its message is decoded and then
//! iterated without allocating: every [`ColumnValue`] borrows from the message.

use std::fmt;
use std::iter::FusedIterator;

use super::error::{DecodeError, DecodeErrorKind};
use super::reader::{Fail, Reader};

/// One column of a [`TupleData`], borrowing from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnValue<'a> {
    /// SQL NULL (`n`).
    Null,
    /// An unchanged TOASTed value the server did not send (`u`): the column keeps its old value,
    /// which is unknown here.
    UnchangedToast,
    /// The value in the type's text output format (`t`), in the connection's client encoding.
    Text(&'a [u8]),
    /// The value in the type's binary send format (`b`, with `binary 'true'`).
    Binary(&'a [u8]),
}

impl<'a> ColumnValue<'a> {
    /// True for [`ColumnValue::Null`].
    #[inline]
    pub fn is_null(&self) -> bool {
        matches!(self, ColumnValue::Null)
    }

    /// True for [`ColumnValue::UnchangedToast`].
    #[inline]
    pub fn is_unchanged_toast(&self) -> bool {
        matches!(self, ColumnValue::UnchangedToast)
    }

    /// The value's bytes for [`ColumnValue::Text`] and [`ColumnValue::Binary`], else `None`.
    #[inline]
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match *self {
            ColumnValue::Text(b) | ColumnValue::Binary(b) => Some(b),
            ColumnValue::Null | ColumnValue::UnchangedToast => None,
        }
    }
}

/// A validated row image: iterate it (or call [`TupleData::iter`]) to get its [`ColumnValue`]s.
///
/// Copying it is cheap (a slice and a count); iterating never fails and never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TupleData<'a> {
    count: u16,
    /// Exactly the column bytes (after the count).
    data: &'a [u8],
}

impl<'a> TupleData<'a> {
    /// Reads and validates a TupleData at the reader's position.
    #[inline]
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, Fail> {
        let count = r.u16()?;
        let start = r.rest();
        let Some(after) = skip_columns(start, count) else {
            return Err(column_error(r, count));
        };
        let Some(data) = start.get(..start.len() - after.len()) else {
            return Err(Fail); // unreachable: `after` is a suffix of `start`
        };
        r.set_rest(after);
        Ok(TupleData { count, data })
    }

    /// Decodes a standalone TupleData (count, then columns) that must fill `buf` exactly.
    /// Offsets in errors are relative to `buf`.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        fn whole<'a>(r: &mut Reader<'a>) -> Result<TupleData<'a>, Fail> {
            let t = TupleData::read(r)?;
            r.finish()?;
            Ok(t)
        }
        let mut r = Reader::new(buf, "TupleData");
        whole(&mut r).map_err(|Fail| r.into_error())
    }

    /// Number of columns.
    #[inline]
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when the tuple has no columns.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The columns, in table order (generated columns are not sent).
    #[inline]
    pub fn iter(&self) -> TupleIter<'a> {
        TupleIter {
            remaining: self.count,
            rest: self.data,
        }
    }

    /// The raw column bytes (without the leading count), e.g. to keep them with
    /// [`bytes::Bytes::slice_ref`].
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.data
    }
}

/// Skips `count` columns, returning what follows them, or `None` if they are malformed.
#[inline(always)]
fn skip_columns(mut rest: &[u8], count: u16) -> Option<&[u8]> {
    for _ in 0..count {
        let (&kind, tail) = rest.split_first()?;
        rest = tail;
        if kind == b't' || kind == b'b' {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = i32::from_be_bytes(*len);
            if len < 0 {
                return None;
            }
            rest = tail.get(len as usize..)?;
        } else if kind != b'n' && kind != b'u' {
            return None;
        }
    }
    Some(rest)
}

/// The slow path of [`TupleData::read`] for malformed columns: walks them again with the reader
/// to record exactly what failed and where.
#[cold]
#[inline(never)]
fn column_error(r: &mut Reader<'_>, count: u16) -> Fail {
    for _ in 0..count {
        let kind = match r.u8() {
            Ok(k) => k,
            Err(f) => return f,
        };
        match kind {
            b'n' | b'u' => {}
            b't' | b'b' => {
                if let Err(f) = r.len_prefixed("column") {
                    return f;
                }
            }
            kind => {
                let at = r.offset() - 1;
                return r.fail_at(DecodeErrorKind::UnknownColumnKind(kind), at);
            }
        }
    }
    Fail // unreachable: the fast path found an error
}

impl fmt::Debug for TupleData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for TupleData<'a> {
    type Item = ColumnValue<'a>;
    type IntoIter = TupleIter<'a>;
    #[inline]
    fn into_iter(self) -> TupleIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &TupleData<'a> {
    type Item = ColumnValue<'a>;
    type IntoIter = TupleIter<'a>;
    #[inline]
    fn into_iter(self) -> TupleIter<'a> {
        self.iter()
    }
}

/// Iterator over the [`ColumnValue`]s of a [`TupleData`].
#[derive(Debug, Clone)]
pub struct TupleIter<'a> {
    remaining: u16,
    rest: &'a [u8],
}

impl<'a> TupleIter<'a> {
    #[inline]
    fn next_value(&mut self) -> Option<ColumnValue<'a>> {
        let (&kind, tail) = self.rest.split_first()?;
        let value = match kind {
            b'n' => {
                self.rest = tail;
                ColumnValue::Null
            }
            b'u' => {
                self.rest = tail;
                ColumnValue::UnchangedToast
            }
            _ => {
                // Validated by `TupleData::read`: a non-negative length that fits.
                let (len, tail) = tail.split_first_chunk::<4>()?;
                let len = u32::from_be_bytes(*len) as usize;
                if len > tail.len() {
                    return None;
                }
                let (bytes, tail) = tail.split_at(len);
                self.rest = tail;
                if kind == b't' {
                    ColumnValue::Text(bytes)
                } else {
                    ColumnValue::Binary(bytes)
                }
            }
        };
        Some(value)
    }
}

impl<'a> Iterator for TupleIter<'a> {
    type Item = ColumnValue<'a>;

    #[inline]
    fn next(&mut self) -> Option<ColumnValue<'a>> {
        if self.remaining == 0 {
            return None;
        }
        match self.next_value() {
            Some(v) => {
                self.remaining -= 1;
                Some(v)
            }
            None => {
                self.remaining = 0;
                None
            }
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

impl ExactSizeIterator for TupleIter<'_> {}
impl FusedIterator for TupleIter<'_> {}
