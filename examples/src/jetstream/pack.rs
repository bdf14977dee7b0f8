//! Packed messages (line format version 2): several rows of one unit and one table in one
//! JetStream message, so that a message's fixed cost (client and server CPU, one ack) is
//! shared by many rows.
//!
//! A packed payload is UTF-8 text: a header line, then one `tail` line per row (or truncate),
//! each ending with `\n`:
//!
//! ```text
//! {"format":"powersync-rows","version":2,"table":"public.t","base":"postgres:v1:…","first":12,"count":3,"snapshot":false}
//! {"kind":"row","op":"insert","table":"public.t",…}
//! {"kind":"row","op":"update","table":"public.t",…}
//! {"kind":"truncate","tables":["public.t"]}
//! ```
//!
//! - `base` is the unit's base (the [`position_id`](super::ids::position_id) of the commit
//!   marker before it, as in the `Powersync-Base` header); `first` is the index of the first
//!   line among the unit's data items, the following lines have the next indexes; `count` is
//!   the number of lines. So every row keeps the index it has in version 1 (one row per
//!   message), and a consumer can tell rows apart whatever the packing.
//! - `snapshot` is true when the lines are snapshot rows (a pack never mixes snapshot and
//!   streamed rows).
//! - The message also carries the headers `Powersync-Format: 2`, `Powersync-Base`,
//!   `Powersync-Index` (= `first`) and `Powersync-Count` (= `count`).
//!
//! Version 1 is one `tail` line per message without header line and without
//! `Powersync-Format`; `publish --rows-per-message 1` writes it, consumers read both.

use serde::{Deserialize, Serialize};

/// The `format` value of a pack header.
pub const FORMAT: &str = "powersync-rows";
/// The packed line format's version.
pub const VERSION: u32 = 2;

/// A pack's header line (see the module docs). `S` is `String` when read, `&str` when
/// written (no copies of the names on the publisher's hot path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackHeader<S = String> {
    /// Always [`FORMAT`].
    pub format: S,
    /// [`VERSION`] (readers reject versions they do not know).
    pub version: u32,
    /// The table of every line, `schema.name` as in `tail`'s lines.
    pub table: S,
    /// The unit's base (position id of the previous commit marker).
    pub base: S,
    /// Index of the first line among the unit's data items.
    pub first: u64,
    /// Number of lines.
    pub count: u64,
    /// Whether the lines are snapshot rows.
    pub snapshot: bool,
}

/// Builds the payload of a pack: the header line, then `lines` (each already ending with
/// `\n`).
pub fn encode<S: Serialize + AsRef<str>>(header: &PackHeader<S>, lines: &[u8]) -> Vec<u8> {
    let head = 120 + header.table.as_ref().len() + header.base.as_ref().len();
    let mut payload = Vec::with_capacity(head + lines.len());
    // Strings, numbers and a bool into a Vec: serializing cannot fail.
    let _ = serde_json::to_writer(&mut payload, header);
    payload.push(b'\n');
    payload.extend_from_slice(lines);
    payload
}

/// A pack read back: its header and its lines (without the `\n`), in order.
#[derive(Debug)]
pub struct Pack<'a> {
    /// The header line.
    pub header: PackHeader,
    /// One `tail` line per data item, `header.count` of them.
    pub lines: Vec<&'a [u8]>,
}

/// Parses a packed payload. Checks the format, the version and that the number of lines is
/// the header's `count`: the payload came over the network.
pub fn decode(payload: &[u8]) -> Result<Pack<'_>, String> {
    let mut parts = payload.split(|&b| b == b'\n');
    let head = parts.next().unwrap_or_default();
    let header: PackHeader =
        serde_json::from_slice(head).map_err(|e| format!("not a packed message header: {e}"))?;
    if header.format != FORMAT {
        return Err(format!(
            "packed message of format `{}`, expected `{FORMAT}`",
            header.format
        ));
    }
    if header.version != VERSION {
        return Err(format!(
            "packed message of version {} (this consumer reads version {VERSION}): upgrade it",
            header.version
        ));
    }
    let lines: Vec<&[u8]> = parts.filter(|l| !l.is_empty()).collect();
    if lines.len() as u64 != header.count {
        return Err(format!(
            "packed message says {} lines and holds {}",
            header.count,
            lines.len()
        ));
    }
    Ok(Pack { header, lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(count: u64) -> PackHeader {
        PackHeader {
            format: FORMAT.into(),
            version: VERSION,
            table: "public.t".into(),
            base: "postgres:v1:00000000/0000002A".into(),
            first: 4,
            count,
            snapshot: false,
        }
    }

    #[test]
    fn roundtrip_and_exact_shape() {
        let payload = encode(&header(2), b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(
            String::from_utf8(payload.clone()).unwrap(),
            "{\"format\":\"powersync-rows\",\"version\":2,\"table\":\"public.t\",\
             \"base\":\"postgres:v1:00000000/0000002A\",\"first\":4,\"count\":2,\
             \"snapshot\":false}\n{\"a\":1}\n{\"b\":2}\n"
        );
        let pack = decode(&payload).unwrap();
        assert_eq!(pack.header, header(2));
        assert_eq!(pack.lines, vec![&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"").is_err());
        assert!(decode(b"\xff\n").is_err());
        assert!(decode(b"{\"kind\":\"row\"}").is_err());
        let wrong_count = encode(&header(3), b"{}\n");
        assert!(decode(&wrong_count).unwrap_err().contains("3 lines"));
        let mut future = header(0);
        future.version = 3;
        assert!(decode(&encode(&future, b""))
            .unwrap_err()
            .contains("version 3"));
        let mut other = header(0);
        other.format = "x".into();
        assert!(decode(&encode(&other, b"")).is_err());
    }
}
