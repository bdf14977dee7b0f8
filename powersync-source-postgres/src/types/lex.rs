//! Shared lexing of values: the bounds-checked reader of binary values and the tokenizers of
//! the text forms of arrays, composites and ranges (`array_in`, `record_in`, `range_in`).

use super::Res;
use crate::cursor::{Cursor, Short};

/// Skips ASCII whitespace from `b[i]`; returns the index of the next other byte.
pub(crate) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Where a quoted-or-not item of `record_out` / `range_out` text ended up.
pub(crate) enum Item {
    /// `b[start..end]` unchanged.
    Slice(usize, usize),
    /// Unescaped into the scratch buffer.
    Scratch,
}

/// Reads one item as `record_in`/`range_in` do, starting at `b[i]`, up to an unquoted byte
/// for which `is_end` holds: double quotes group (a doubled `""` inside is one `"`),
/// backslash escapes the next byte. Returns the item and the index of the end byte.
pub(crate) fn quoted_item(
    b: &[u8],
    i: usize,
    is_end: impl Fn(u8) -> bool,
    scratch: &mut Vec<u8>,
) -> Res<(Item, usize)> {
    // Fast paths: a plain run, or one quoted run without escapes.
    if b.get(i) == Some(&b'"') {
        if let Some(q) = b[i + 1..].iter().position(|&c| c == b'"' || c == b'\\') {
            let close = i + 1 + q;
            if b[close] == b'"' && b.get(close + 1).is_some_and(|&c| is_end(c)) {
                return Ok((Item::Slice(i + 1, close), close + 1));
            }
        }
    } else {
        let mut j = i;
        while j < b.len() && !is_end(b[j]) && b[j] != b'"' && b[j] != b'\\' {
            j += 1;
        }
        if j < b.len() && is_end(b[j]) {
            return Ok((Item::Slice(i, j), j));
        }
    }
    scratch.clear();
    let mut in_quotes = false;
    let mut j = i;
    loop {
        let Some(&c) = b.get(j) else {
            return Err("unterminated value".to_owned());
        };
        match c {
            b'\\' => {
                let Some(&next) = b.get(j + 1) else {
                    return Err("value ends after a backslash".to_owned());
                };
                scratch.push(next);
                j += 2;
            }
            b'"' if in_quotes && b.get(j + 1) == Some(&b'"') => {
                scratch.push(b'"');
                j += 2;
            }
            b'"' => {
                in_quotes = !in_quotes;
                j += 1;
            }
            c if !in_quotes && is_end(c) => return Ok((Item::Scratch, j)),
            c => {
                scratch.push(c);
                j += 1;
            }
        }
    }
}

/// A binary value read through the crate's [`Cursor`]; a short read is an error saying how
/// many bytes were missing where.
pub(crate) struct Reader<'a> {
    cur: Cursor<'a>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Reader {
            cur: Cursor::new(b),
        }
    }

    #[cold]
    fn short(&self, n: usize) -> String {
        format!(
            "value ends early: needs {n} more bytes at offset {} of {}",
            self.cur.offset(),
            self.cur.len()
        )
    }

    pub(crate) fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        self.cur.bytes(n).map_err(|Short| self.short(n))
    }

    pub(crate) fn u8(&mut self) -> Res<u8> {
        self.cur.u8().map_err(|Short| self.short(1))
    }
    pub(crate) fn u16(&mut self) -> Res<u16> {
        self.cur.u16().map_err(|Short| self.short(2))
    }
    pub(crate) fn i32(&mut self) -> Res<i32> {
        self.cur.i32().map_err(|Short| self.short(4))
    }
    pub(crate) fn u32(&mut self) -> Res<u32> {
        self.cur.u32().map_err(|Short| self.short(4))
    }

    /// Bytes up to a zero byte (consumed, not returned).
    pub(crate) fn cstring(&mut self) -> Res<&'a [u8]> {
        self.cur
            .until_nul()
            .map_err(|Short| "unterminated string".to_owned())
    }

    /// A length-prefixed value: `-1` is NULL.
    pub(crate) fn value(&mut self) -> Res<Option<&'a [u8]>> {
        match self.i32()? {
            -1 => Ok(None),
            n if n < 0 => Err(format!("invalid value length {n}")),
            n => self.take(n as usize).map(Some),
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.cur.rest().len()
    }

    /// Errors unless every byte was read.
    pub(crate) fn finish(&self, what: &str) -> Res<()> {
        if self.cur.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes after the {what}",
                self.remaining()
            ))
        }
    }
}
