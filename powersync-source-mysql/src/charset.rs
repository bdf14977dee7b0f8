//! Column character sets → UTF-8. The binlog carries character data in the column's own
//! charset (the snapshot reads it converted to utf8mb4 by the server), so the binlog path
//! converts it here to give the same text.

/// A column character set the connector can convert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Charset {
    /// utf8mb4, utf8mb3 / utf8 (a subset of UTF-8).
    Utf8,
    /// ascii.
    Ascii,
    /// latin1: MySQL's latin1 is Windows-1252 (with the five undefined bytes mapped to the C1
    /// controls, as MySQL does).
    Latin1,
    /// ucs2 / utf16: big-endian UTF-16.
    Utf16Be,
    /// utf16le.
    Utf16Le,
    /// utf32: big-endian UTF-32.
    Utf32,
    /// Any other charset, by name: decoded only if the bytes are ASCII.
    Other(String),
}

/// Windows-1252 0x80..=0x9F.
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

impl Charset {
    /// From `information_schema.COLUMNS.CHARACTER_SET_NAME`.
    pub fn from_name(name: &str) -> Charset {
        match name.to_ascii_lowercase().as_str() {
            "utf8mb4" | "utf8mb3" | "utf8" => Charset::Utf8,
            "ascii" => Charset::Ascii,
            "latin1" => Charset::Latin1,
            "ucs2" | "utf16" => Charset::Utf16Be,
            "utf16le" => Charset::Utf16Le,
            "utf32" => Charset::Utf32,
            other => Charset::Other(other.to_owned()),
        }
    }

    /// Converts `bytes` to UTF-8 text; the error says why it cannot.
    pub fn decode(&self, bytes: &[u8]) -> Result<String, String> {
        match self {
            Charset::Utf8 | Charset::Ascii => match std::str::from_utf8(bytes) {
                Ok(s) => Ok(s.to_owned()),
                Err(e) => Err(format!("not valid UTF-8: {e}")),
            },
            Charset::Latin1 => Ok(bytes
                .iter()
                .map(|&b| match b {
                    0x80..=0x9F => char::from_u32(CP1252_HIGH[(b - 0x80) as usize] as u32)
                        .unwrap_or(char::REPLACEMENT_CHARACTER),
                    b => b as char,
                })
                .collect()),
            Charset::Utf16Be | Charset::Utf16Le => {
                if !bytes.chunks_exact(2).remainder().is_empty() {
                    return Err("odd number of bytes for UTF-16".into());
                }
                let units = bytes.chunks_exact(2).map(|c| {
                    if *self == Charset::Utf16Be {
                        u16::from_be_bytes([c[0], c[1]])
                    } else {
                        u16::from_le_bytes([c[0], c[1]])
                    }
                });
                char::decode_utf16(units)
                    .collect::<Result<String, _>>()
                    .map_err(|e| format!("invalid UTF-16: {e}"))
            }
            Charset::Utf32 => {
                if !bytes.chunks_exact(4).remainder().is_empty() {
                    return Err("length not a multiple of 4 for UTF-32".into());
                }
                bytes
                    .chunks_exact(4)
                    .map(|c| {
                        char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                            .ok_or_else(|| "invalid UTF-32 code point".to_owned())
                    })
                    .collect()
            }
            Charset::Other(name) => {
                if bytes.is_ascii() {
                    // Every charset MySQL supports is ASCII-compatible except the UCS ones above.
                    Ok(String::from_utf8_lossy(bytes).into_owned())
                } else {
                    Err(format!(
                        "character set {name} is not converted by this connector for binlog values; \
                         convert the column to utf8mb4"
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts() {
        assert_eq!(Charset::Latin1.decode(b"caf\xe9 \x80").unwrap(), "café €");
        assert_eq!(
            Charset::Utf16Be
                .decode(&[0, 0x41, 0xd8, 0x3d, 0xde, 0x00])
                .unwrap(),
            "A😀"
        );
        assert_eq!(Charset::Utf32.decode(&[0, 1, 0xf6, 0x00]).unwrap(), "😀");
        assert!(Charset::Utf8.decode(b"\xff").is_err());
        assert!(Charset::Other("sjis".into()).decode(b"\x82\xa0").is_err());
    }
}
