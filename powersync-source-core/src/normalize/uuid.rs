//! UUIDs as lowercase canonical text: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// 16 bytes in RFC 9562 (network, big-endian) order → lowercase canonical text.
/// For PostgreSQL `uuid`, MySQL `BINARY(16)` UUIDs, MongoDB binary subtype 4.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0x0f) as usize] as char);
    }
    out
}

/// Like [`format_uuid`] for a slice, which must be exactly 16 bytes long.
pub fn uuid_from_slice(bytes: &[u8]) -> Result<String, String> {
    <&[u8; 16]>::try_from(bytes)
        .map(format_uuid)
        .map_err(|_| format!("a UUID has 16 bytes, got {}", bytes.len()))
}

/// 16 bytes in Microsoft GUID order → canonical text: the first three groups are stored
/// little-endian (SQL Server `uniqueidentifier`, .NET `Guid.ToByteArray()`, MongoDB binary
/// subtype 3 written by the legacy C# driver). Bytes `33 22 11 00 55 44 77 66 88 99 …` print
/// `00112233-4455-6677-8899-…`.
pub fn format_guid_mixed_endian(bytes: &[u8; 16]) -> String {
    let mut b = *bytes;
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    format_uuid(&b)
}

/// Parses UUID text into its 16 bytes. Accepts the canonical form in any letter case, 32 hex
/// digits without dashes, either of those in braces (`{…}`, SQL Server style) or after
/// `urn:uuid:`, and surrounding whitespace.
pub fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    let err = |why: &str| {
        let shown: String = s.chars().take(64).collect();
        format!("invalid UUID {shown:?}: {why}")
    };
    let mut t = s.trim_matches(|c: char| c.is_ascii_whitespace()).as_bytes();
    if t.len() >= 9 && t[..9].eq_ignore_ascii_case(b"urn:uuid:") {
        t = &t[9..];
    }
    if let [b'{', inner @ .., b'}'] = t {
        t = inner;
    }
    let dashed = match t.len() {
        36 => true,
        32 => false,
        n => return Err(err(&format!("expected 32 hex digits, got {n} characters"))),
    };
    let mut out = [0u8; 16];
    let mut n = 0;
    for (i, &c) in t.iter().enumerate() {
        if dashed && matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return Err(err("expected '-' between the groups 8-4-4-4-12"));
            }
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err(err("not a hex digit")),
        };
        out[n / 2] |= if n % 2 == 0 { v << 4 } else { v };
        n += 1;
    }
    Ok(out)
}

/// Validates UUID text (the forms of [`parse_uuid`]) and returns the lowercase canonical form:
/// `{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}` → `a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`.
pub fn uuid_text(s: &str) -> Result<String, String> {
    parse_uuid(s).map(|b| format_uuid(&b))
}
