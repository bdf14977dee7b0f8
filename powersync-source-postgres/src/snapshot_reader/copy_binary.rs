//! PostgreSQL's binary `COPY` format, parsed incrementally from the chunks the server sends.
//!
//! Tuples are handed on as slices of the chunk they arrived in (the receive buffer): only a
//! tuple split across two chunks is copied, into a small carry-over buffer. The field
//! offsets of a tuple go to a vector reused for every tuple.

/// Incremental parser of PostgreSQL's binary COPY format (header, then tuples of
/// length-prefixed fields, then the -1 trailer).
pub(crate) struct CopyBinaryParser {
    /// The start of a tuple (or of the header) whose end has not arrived yet.
    carry: Vec<u8>,
    header_done: bool,
    trailer_seen: bool,
    expected_fields: usize,
    /// `(offset in the tuple, length or -1 for NULL)` of each field of the current tuple.
    fields: Vec<(usize, i32)>,
}

/// Why [`CopyBinaryParser::feed`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FeedError<E> {
    /// The bytes are not valid binary COPY data.
    Format(String),
    /// The tuple callback failed.
    Tuple(E),
}

/// One tuple: its fields borrowed from the chunk (or the carry-over buffer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuple<'a> {
    data: &'a [u8],
    fields: &'a [(usize, i32)],
}

impl<'a> Tuple<'a> {
    /// Field `i` (`None` = SQL NULL, or `i` out of range).
    #[inline]
    pub(crate) fn field(&self, i: usize) -> Option<&'a [u8]> {
        let &(at, len) = self.fields.get(i)?;
        let len = usize::try_from(len).ok()?;
        self.data.get(at..at + len)
    }

    /// Number of fields.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.fields.len()
    }
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Signature, flags (u32) and header extension length (u32).
const HEADER_LEN: usize = SIGNATURE.len() + 8;

impl CopyBinaryParser {
    pub(crate) fn new(columns: usize, extra: usize) -> Self {
        CopyBinaryParser {
            carry: Vec::new(),
            header_done: false,
            trailer_seen: false,
            expected_fields: columns + extra,
            fields: Vec::with_capacity(columns + extra),
        }
    }

    /// Parses the next chunk of the COPY stream and calls `on_tuple` for every tuple it
    /// completes, in order. A tuple split across chunks is kept and completed by the next
    /// call. Every length is checked before it is used: malformed data is a
    /// [`FeedError::Format`], never a panic or an out-of-bounds read.
    pub(crate) fn feed<E>(
        &mut self,
        chunk: &[u8],
        mut on_tuple: impl FnMut(Tuple<'_>) -> Result<(), E>,
    ) -> Result<(), FeedError<E>> {
        if self.carry.is_empty() {
            let used = self.parse(chunk, &mut on_tuple)?;
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            let mut carry = std::mem::take(&mut self.carry);
            carry.extend_from_slice(chunk);
            let used = self.parse(&carry, &mut on_tuple);
            let used = match used {
                Ok(n) => n,
                Err(e) => {
                    self.carry = carry;
                    return Err(e);
                }
            };
            carry.drain(..used);
            self.carry = carry;
        }
        Ok(())
    }

    /// Parses every complete item of `buf`; returns how many bytes it used.
    fn parse<E>(
        &mut self,
        buf: &[u8],
        on_tuple: &mut impl FnMut(Tuple<'_>) -> Result<(), E>,
    ) -> Result<usize, FeedError<E>> {
        let mut pos = 0;
        if !self.header_done {
            if buf.len() < HEADER_LEN {
                return Ok(0);
            }
            if &buf[..SIGNATURE.len()] != SIGNATURE {
                return Err(FeedError::Format("bad COPY BINARY signature".into()));
            }
            let ext = u32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]) as usize;
            let Some(end) = HEADER_LEN.checked_add(ext).filter(|&end| end <= buf.len()) else {
                return Ok(0);
            };
            pos = end;
            self.header_done = true;
        }
        loop {
            let rest = &buf[pos..];
            if rest.is_empty() {
                return Ok(pos);
            }
            if self.trailer_seen {
                return Err(FeedError::Format("data after the COPY trailer".into()));
            }
            let Some(count) = rest.first_chunk::<2>() else {
                return Ok(pos);
            };
            let count = i16::from_be_bytes(*count);
            if count == -1 {
                self.trailer_seen = true;
                pos += 2;
                continue;
            }
            if count < 0 || count as usize != self.expected_fields {
                return Err(FeedError::Format(format!(
                    "tuple has {count} fields, expected {}",
                    self.expected_fields
                )));
            }
            // Walk the whole tuple before handing it on: it may not be complete yet.
            self.fields.clear();
            let mut at = 2;
            for _ in 0..count {
                let Some(len) = rest.get(at..at + 4) else {
                    return Ok(pos);
                };
                let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                at += 4;
                if len >= 0 {
                    self.fields.push((at, len));
                    at += len as usize;
                    if at > rest.len() {
                        return Ok(pos);
                    }
                } else if len == -1 {
                    self.fields.push((at, -1));
                } else {
                    return Err(FeedError::Format(format!("negative field length {len}")));
                }
            }
            on_tuple(Tuple {
                data: &rest[..at],
                fields: &self.fields,
            })
            .map_err(FeedError::Tuple)?;
            pos += at;
        }
    }

    /// Checks that the stream ended where it may: after the trailer, with nothing left over.
    pub(crate) fn finish(&self) -> Result<(), String> {
        if !self.trailer_seen {
            return Err("COPY data ended without its trailer".into());
        }
        if !self.carry.is_empty() {
            return Err("COPY data ended inside a tuple".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for f in row {
                match f {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        out.extend_from_slice(b);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn parse_all(
        data: &[u8],
        splits: &[usize],
        fields: usize,
    ) -> Result<Vec<Vec<Option<Vec<u8>>>>, String> {
        let mut p = CopyBinaryParser::new(fields, 0);
        let mut out = Vec::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = splits.iter().map(|s| s % (data.len() + 1)).collect();
        cuts.push(data.len());
        cuts.sort_unstable();
        for cut in cuts {
            p.feed(&data[start..cut.max(start)], |t| {
                out.push(
                    (0..t.len())
                        .map(|i| t.field(i).map(<[u8]>::to_vec))
                        .collect(),
                );
                Ok::<(), ()>(())
            })
            .map_err(|e| match e {
                FeedError::Format(e) => e,
                FeedError::Tuple(()) => unreachable!("the callback never fails"),
            })?;
            start = cut.max(start);
        }
        p.finish()?;
        Ok(out)
    }

    proptest! {
        #[test]
        fn round_trips_across_any_split(
            rows in proptest::collection::vec(proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)), 3), 0..20),
            splits in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let data = encode(&rows);
            prop_assert_eq!(parse_all(&data, &splits, 3).unwrap(), rows);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(data in proptest::collection::vec(any::<u8>(), 0..200), splits in proptest::collection::vec(any::<usize>(), 0..5)) {
            let _ = parse_all(&data, &splits, 3);
            let mut valid = encode(&[vec![Some(vec![1, 2]), None, Some(vec![])]]);
            for (i, b) in data.iter().enumerate().take(8) {
                let at = (*b as usize + i * 7) % valid.len();
                valid[at] ^= b | 1;
            }
            let _ = parse_all(&valid, &splits, 3);
        }
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let data = encode(&[vec![Some(vec![1]), None, None]]);
        assert!(parse_all(&data[..data.len() - 2], &[], 3).is_err());
        assert!(parse_all(&data, &[], 2).is_err());
    }

    #[test]
    fn tuple_errors_stop_the_feed_and_trailing_data_is_refused() {
        let data = encode(&[vec![Some(vec![1])], vec![Some(vec![2])]]);
        let mut p = CopyBinaryParser::new(1, 0);
        let mut seen = 0;
        let r = p.feed(&data, |t| {
            seen += 1;
            if t.field(0) == Some(&[2u8][..]) {
                Err("stop")
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err(FeedError::Tuple("stop")));
        assert_eq!(seen, 2);

        let mut extra = encode(&[vec![None]]);
        extra.extend_from_slice(&[0, 1]);
        let mut p = CopyBinaryParser::new(1, 0);
        let r = p.feed(&extra, |_| Ok::<(), ()>(()));
        assert!(matches!(r, Err(FeedError::Format(_))), "{r:?}");
    }
}
