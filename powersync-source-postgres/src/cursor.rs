//! The crate's one bounds-checked, big-endian cursor over bytes received from the server
//! (pgoutput messages, protocol messages, binary values). Every byte is untrusted: no read
//! panics, and a read that fails leaves the cursor where it was.
//!
//! Reads fail with the zero-sized [`Short`] so the hot path passes values in registers; each
//! user turns it into its own error once, with the context it knows (the pgoutput decoder's
//! `DecodeError`, the replication connection's `SourceError`, a value decoder's reason).

/// Not enough bytes for a read (or no NUL ending a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Short;

/// A cursor over a borrowed byte slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'a> {
    rest: &'a [u8],
    len: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    #[inline(always)]
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor {
            rest: buf,
            len: buf.len(),
        }
    }

    /// Offset of the next unread byte from the start.
    #[inline(always)]
    pub(crate) fn offset(&self) -> usize {
        self.len - self.rest.len()
    }

    /// Length of the whole input.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The unread bytes.
    #[inline(always)]
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Whether every byte was read.
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Moves the cursor to `rest`, which must be a suffix of the unread bytes.
    #[inline(always)]
    pub(crate) fn set_rest(&mut self, rest: &'a [u8]) {
        debug_assert!(rest.len() <= self.rest.len());
        self.rest = rest;
    }

    /// The next `N` bytes.
    #[inline(always)]
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let (head, tail) = self.rest.split_first_chunk::<N>().ok_or(Short)?;
        self.rest = tail;
        Ok(*head)
    }

    #[inline(always)]
    pub(crate) fn u8(&mut self) -> Result<u8, Short> {
        let (&b, tail) = self.rest.split_first().ok_or(Short)?;
        self.rest = tail;
        Ok(b)
    }

    #[inline(always)]
    pub(crate) fn u16(&mut self) -> Result<u16, Short> {
        self.array().map(u16::from_be_bytes)
    }

    #[inline(always)]
    pub(crate) fn i16(&mut self) -> Result<i16, Short> {
        self.array().map(i16::from_be_bytes)
    }

    #[inline(always)]
    pub(crate) fn i32(&mut self) -> Result<i32, Short> {
        self.array().map(i32::from_be_bytes)
    }

    #[inline(always)]
    pub(crate) fn u32(&mut self) -> Result<u32, Short> {
        self.array().map(u32::from_be_bytes)
    }

    #[inline(always)]
    pub(crate) fn i64(&mut self) -> Result<i64, Short> {
        self.array().map(i64::from_be_bytes)
    }

    #[inline(always)]
    pub(crate) fn u64(&mut self) -> Result<u64, Short> {
        self.array().map(u64::from_be_bytes)
    }

    /// The next `n` bytes.
    #[inline(always)]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if n > self.rest.len() {
            return Err(Short);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Everything that is left.
    #[inline(always)]
    pub(crate) fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// The bytes up to the next NUL; the NUL is consumed, not returned.
    #[inline]
    pub(crate) fn until_nul(&mut self) -> Result<&'a [u8], Short> {
        let nul = self.rest.iter().position(|&b| b == 0).ok_or(Short)?;
        let (raw, tail) = self.rest.split_at(nul);
        self.rest = tail.get(1..).unwrap_or_default();
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_reads_big_endian_and_stays_put_on_failure() {
        let buf = [1, 0, 2, 0xff, 0xfe, 0, 0, 0, 3, b'a', 0, b'b'];
        let mut c = Cursor::new(&buf);
        assert_eq!(c.u8(), Ok(1));
        assert_eq!(c.u16(), Ok(2));
        assert_eq!(c.i16(), Ok(-2));
        assert_eq!(c.u32(), Ok(3));
        assert_eq!(c.offset(), 9);
        assert_eq!(c.u64(), Err(Short));
        assert_eq!(c.bytes(usize::MAX), Err(Short));
        assert_eq!(c.offset(), 9, "a failed read does not move the cursor");
        assert_eq!(c.until_nul(), Ok(&b"a"[..]));
        assert_eq!(c.until_nul(), Err(Short));
        assert_eq!(c.rest(), b"b");
        assert_eq!(c.take_rest(), b"b");
        assert!(c.is_empty());
        assert_eq!(c.len(), buf.len());
    }
}
