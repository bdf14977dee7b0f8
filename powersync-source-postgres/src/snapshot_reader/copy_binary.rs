//! PostgreSQL's binary `COPY` format, parsed incrementally from the chunks the server sends.

use bytes::{Buf, BytesMut};

/// Incremental parser of PostgreSQL's binary COPY format (header, then tuples of
/// length-prefixed fields, then the -1 trailer).
pub(crate) struct CopyBinaryParser {
    buf: BytesMut,
    header_done: bool,
    trailer_seen: bool,
    expected_fields: usize,
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl CopyBinaryParser {
    pub(crate) fn new(columns: usize, extra: usize) -> Self {
        CopyBinaryParser {
            buf: BytesMut::new(),
            header_done: false,
            trailer_seen: false,
            expected_fields: columns + extra,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete, validated tuple (its fields, without the count), or `None` if more
    /// data is needed. Read the fields with [`tuple_fields`].
    pub(crate) fn next_tuple(&mut self) -> Result<Option<bytes::Bytes>, String> {
        if !self.header_done {
            if self.buf.len() < SIGNATURE.len() + 8 {
                return Ok(None);
            }
            if &self.buf[..SIGNATURE.len()] != SIGNATURE {
                return Err("bad COPY BINARY signature".into());
            }
            let ext = u32::from_be_bytes([self.buf[15], self.buf[16], self.buf[17], self.buf[18]])
                as usize;
            if self.buf.len() < 19 + ext {
                return Ok(None);
            }
            self.buf.advance(19 + ext);
            self.header_done = true;
        }
        if self.trailer_seen || self.buf.len() < 2 {
            return Ok(None);
        }
        let count = i16::from_be_bytes([self.buf[0], self.buf[1]]);
        if count == -1 {
            self.trailer_seen = true;
            self.buf.advance(2);
            return Ok(None);
        }
        if count < 0 || count as usize != self.expected_fields {
            return Err(format!(
                "tuple has {count} fields, expected {}",
                self.expected_fields
            ));
        }
        // Check the whole tuple is buffered before consuming anything.
        let mut pos = 2;
        for _ in 0..count {
            if self.buf.len() < pos + 4 {
                return Ok(None);
            }
            let len = i32::from_be_bytes([
                self.buf[pos],
                self.buf[pos + 1],
                self.buf[pos + 2],
                self.buf[pos + 3],
            ]);
            pos += 4;
            if len >= 0 {
                pos += len as usize;
                if self.buf.len() < pos {
                    return Ok(None);
                }
            } else if len != -1 {
                return Err(format!("negative field length {len}"));
            }
        }
        let mut tuple = self.buf.split_to(pos).freeze();
        tuple.advance(2);
        Ok(Some(tuple))
    }

    pub(crate) fn finish(&self) -> Result<(), String> {
        if !self.trailer_seen && (self.header_done || !self.buf.is_empty()) {
            return Err("COPY data ended without its trailer".into());
        }
        Ok(())
    }
}

/// The fields of a tuple returned by [`CopyBinaryParser::next_tuple`] (`None` = SQL NULL).
/// The tuple was validated when it was split off, so this never reads out of bounds.
pub(crate) fn tuple_fields(tuple: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    let mut rest = tuple;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = i32::from_be_bytes(*len);
        if len < 0 {
            rest = tail;
            return Some(None);
        }
        let len = (len as usize).min(tail.len());
        let (field, tail) = tail.split_at(len);
        rest = tail;
        Some(Some(field))
    })
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
            p.push(&data[start..cut.max(start)]);
            start = cut.max(start);
            while let Some(t) = p.next_tuple()? {
                out.push(tuple_fields(&t).map(|f| f.map(<[u8]>::to_vec)).collect());
            }
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
}
