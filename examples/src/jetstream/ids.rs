//! Subjects, message ids and headers: how a change lands in the stream.
//!
//! - A table's changes go to `<prefix>.<schema>.<name>` (each token escaped, see
//!   [`subject_token`]); commit markers to `<prefix>._commit` (two tokens, so no table subject
//!   can collide with it).
//! - Every message carries [`HEADER_BASE`] (the id of the position of the commit marker before
//!   it, see [`position_id`]) and [`HEADER_INDEX`] (its index among the data messages after that
//!   marker). `Nats-Msg-Id` is built from both, so a republished message has the same id as
//!   the first copy and JetStream's duplicate window drops it.

/// Header naming the position the message's unit (transaction or snapshot chunk) starts at.
pub const HEADER_BASE: &str = "Powersync-Base";
/// Header with the message's index among the unit's data messages (for a schema message: the
/// index of the data message it comes before).
pub const HEADER_INDEX: &str = "Powersync-Index";
/// Header `2` on packed messages ([`super::pack`]); absent on version 1 (one row per message).
pub const HEADER_FORMAT: &str = "Powersync-Format";
/// Header with the number of data items (rows, truncates) in a packed message.
pub const HEADER_COUNT: &str = "Powersync-Count";
/// The JetStream de-duplication header.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// The position before the first unit ever published (nothing before it). The first units'
/// base is [`start_base`]: `start:` and a random nonce per attempt.
pub const START: &str = "start";

/// The base of the units of a snapshot started from the beginning: unique per attempt,
/// because two snapshots from the beginning are read at different points in time (a row a
/// killed attempt read may be deleted before the next attempt's consistent point, and no
/// streamed change would delete it again), so a consumer must never mix their messages.
pub fn start_base(nonce: u64) -> String {
    format!("{START}:{nonce:016x}")
}

/// Whether `base` is a [`start_base`].
pub fn is_start_base(base: &str) -> bool {
    base.strip_prefix(START)
        .is_some_and(|rest| rest.starts_with(':'))
}
/// Last token of the commit marker subject.
pub const COMMIT_TOKEN: &str = "_commit";

/// Positions longer than this are hashed in ids (headers stay small).
const MAX_RAW_POSITION: usize = 64;

/// The id of a position (checkpoint, snapshot token or [`START`]) in message ids and headers:
/// the position itself when short and plain, else `h:` and its FNV-1a 128 hash.
pub fn position_id(position: &str) -> String {
    let plain = position
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'#' && b != b'>');
    if plain && position.len() <= MAX_RAW_POSITION {
        position.to_owned()
    } else {
        format!("h:{:032x}", fnv1a_128(position.as_bytes()))
    }
}

/// The id of a data message (row or truncate): `<base>#<index>`. Snapshot rows add a hash of
/// the payload: a re-read chunk may hold other rows at the same index (rows changed between
/// the two reads), and those must not be mistaken for duplicates.
pub fn data_id(base: &str, index: u64, payload_hash: Option<u128>) -> String {
    match payload_hash {
        None => format!("{base}#{index}"),
        Some(h) => format!("{base}#{index}#{:032x}", h),
    }
}

/// The id of a packed message ([`super::pack`]): `<base>#<first>+<count>`, plus
/// `#<hash of the payload>` for snapshot rows. The `+<count>` keeps it apart from a version 1
/// row's id (`<base>#<first>`): a publisher restarted with another packing must not have its
/// pack dropped as a duplicate of a single row. Packing is a function of the unit's rows and
/// the limits, so a restarted publisher with the same limits builds the same packs and ids.
pub fn pack_id(base: &str, first: u64, count: u64, payload_hash: Option<u128>) -> String {
    match payload_hash {
        None => format!("{base}#{first}+{count}"),
        Some(h) => format!("{base}#{first}+{count}#{h:032x}"),
    }
}

/// The id of a schema message: `<base>#<index>s<hash of the payload>`.
pub fn schema_id(base: &str, index: u64, payload: &[u8]) -> String {
    format!("{base}#{index}s{:032x}", fnv1a_128(payload))
}

/// The id of a commit marker: `<base>><position id>`.
pub fn marker_id(base: &str, position: &str) -> String {
    format!("{base}>{}", position_id(position))
}

/// The subject of a table's messages.
pub fn table_subject(prefix: &str, table: &powersync_source_core::TableName) -> String {
    format!(
        "{prefix}.{}.{}",
        subject_token(&table.schema),
        subject_token(&table.name)
    )
}

/// The subject of the commit markers.
pub fn commit_subject(prefix: &str) -> String {
    format!("{prefix}.{COMMIT_TOKEN}")
}

/// The subjects the stream must capture.
pub fn stream_subjects(prefix: &str) -> String {
    format!("{prefix}.>")
}

/// A name as one subject token: ASCII letters, digits, `_` and `-` stay, every other byte
/// becomes `%XX` (so `.`, `*`, `>` and spaces cannot split or widen a subject); the empty name
/// becomes `%`.
pub fn subject_token(name: &str) -> String {
    if name.is_empty() {
        return "%".to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks a subject prefix: one or more tokens of printable ASCII without wildcards.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("the subject prefix must not be empty".into());
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return Err(format!("subject prefix `{prefix}` has an empty token"));
        }
        if token == "*" || token == ">" || token.contains(['*', '>']) {
            return Err(format!(
                "subject prefix `{prefix}` must not contain wildcards"
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "subject prefix `{prefix}` must be printable ASCII without spaces"
            ));
        }
    }
    Ok(())
}

/// FNV-1a with 128 bits: stable across Rust versions and platforms (unlike `std`'s hasher),
/// which ids need because a restarted publisher must compute the same ones.
pub fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for &b in bytes {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

#[cfg(test)]
mod tests {
    use powersync_source_core::TableName;

    use super::*;

    #[test]
    fn ids_are_stable_and_short() {
        assert_eq!(
            position_id("postgres:v1:00000000/0000002A"),
            "postgres:v1:00000000/0000002A"
        );
        let long = format!("snapshot:v1:{}", "x".repeat(200));
        let id = position_id(&long);
        assert!(id.starts_with("h:") && id.len() == 34, "{id}");
        assert_eq!(id, position_id(&long));
        assert_ne!(position_id("a#b"), "a#b");
        assert_eq!(data_id("b", 3, None), "b#3");
        assert_eq!(pack_id("b", 3, 2, None), "b#3+2");
        assert_eq!(pack_id("b", 3, 2, Some(1)), format!("b#3+2#{:032x}", 1));
        assert!(is_start_base(&start_base(7)));
        assert!(!is_start_base(START));
        assert!(!is_start_base("startx"));
        assert_eq!(fnv1a_128(b""), 0x6c62272e07bb014262b821756295c58d);
        // Known FNV-1a 128 vector.
        assert_eq!(fnv1a_128(b"a"), 0xd228cb696f1a8caf78912b704e4a8964);
    }

    #[test]
    fn subjects() {
        let t = TableName::new("public", "order items.v2");
        assert_eq!(table_subject("cdc", &t), "cdc.public.order%20items%2Ev2");
        assert_eq!(table_subject("cdc", &TableName::new("", "x")), "cdc.%.x");
        assert_eq!(commit_subject("a.b"), "a.b._commit");
        assert!(validate_prefix("cdc.db1").is_ok());
        assert!(validate_prefix("cdc.>").is_err());
        assert!(validate_prefix("cdc..x").is_err());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("a b").is_err());
    }
}
