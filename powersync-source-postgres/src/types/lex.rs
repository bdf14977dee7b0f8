//! Shared lexing of values: the bounds-checked reader of binary values and the tokenizers of
//! the text forms of arrays, composites and ranges (`array_in`, `record_in`, `range_in`).

use super::Res;

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

/// Reads big-endian fields from a value's bytes; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        match end {
            Some(end) => {
                let s = &self.b[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "value ends early: needs {n} more bytes at offset {} of {}",
                self.pos,
                self.b.len()
            )),
        }
    }

    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Res<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Res<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn i32(&mut self) -> Res<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Res<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Bytes up to a zero byte (consumed, not returned).
    pub(crate) fn cstring(&mut self) -> Res<&'a [u8]> {
        let rest = &self.b[self.pos..];
        let Some(n) = rest.iter().position(|&c| c == 0) else {
            return Err("unterminated string".to_owned());
        };
        self.pos += n + 1;
        Ok(&rest[..n])
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
        self.b.len() - self.pos
    }

    /// Errors unless every byte was read.
    pub(crate) fn finish(&self, what: &str) -> Res<()> {
        if self.pos == self.b.len() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes after the {what}",
                self.b.len() - self.pos
            ))
        }
    }
}
