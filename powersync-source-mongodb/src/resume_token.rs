//! Reading the cluster time out of a post-batch resume token.
//!
//! Resume tokens are opaque to clients, and events carry their `clusterTime` separately, so
//! event positions never look inside a token. An *idle* batch, though, brings only a post-batch
//! resume token; to turn it into an ordered checkpoint (cluster time + token) its time must come
//! from the token. Two encodings are known and read here; any other token is simply not used
//! for idle advance (the position then advances with the next event instead):
//!
//! - MongoDB (4.2+): `_data` is the hex of a KeyString whose first byte is `0x82` (type
//!   Timestamp) followed by the 8-byte big-endian timestamp (seconds, then increment).
//! - SecantusDB: `_data` is the hex of a BSON document with the timestamp in field `t`.

use mongodb::bson::raw::{RawBsonRef, RawDocument};

/// `(seconds, increment)` of a resume token's `_data`, if its encoding is known.
pub fn token_cluster_time(data: &str) -> Option<(u32, u32)> {
    let bytes = hex_bytes(data)?;
    if bytes.first() == Some(&0x82) && bytes.len() >= 9 {
        let seconds = u32::from_be_bytes(bytes[1..5].try_into().ok()?);
        let increment = u32::from_be_bytes(bytes[5..9].try_into().ok()?);
        return Some((seconds, increment));
    }
    let doc = RawDocument::from_bytes(&bytes).ok()?;
    match doc.get("t").ok()?? {
        RawBsonRef::Timestamp(ts) => Some((ts.time, ts.increment)),
        _ => None,
    }
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 || s.is_empty() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mongodb_keystring_token() {
        // A MongoDB 6.0 event token (from the manual's examples): 0x82, then 0x6470A12B/0x00000001.
        let data = "826470A12B000000012B022C0100296E5A1004AB1154ACACD849B48C61755E6BE8E9D346645F6964006470A12B4B8D4F8E3FBD4D3B0004";
        assert_eq!(token_cluster_time(data), Some((0x6470A12B, 1)));
    }

    #[test]
    fn secantus_bson_token() {
        let data = "3400000010730014000000117400080000007ca9076b026e000500000074332e6100036b000e000000105f696400010000000000";
        assert_eq!(token_cluster_time(data), Some((1795664252, 8)));
    }

    #[test]
    fn unknown_tokens_give_nothing() {
        for data in ["", "zz", "01", "8200", "abc"] {
            assert_eq!(token_cluster_time(data), None, "{data}");
        }
    }
}
