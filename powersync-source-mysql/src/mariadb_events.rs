//! MariaDB binlog events `mysql_common` does not decode, read from their raw payload (event
//! header and checksum already removed). Layouts from MariaDB's `log_event.h`:
//!
//! - `ANNOTATE_ROWS_EVENT` (160): the statement text.
//! - `BINLOG_CHECKPOINT_EVENT` (161): `u32` name length, file name.
//! - `GTID_EVENT` (162): `u64` sequence, `u32` domain, `u8` flags, then (flag
//!   `FL_GROUP_COMMIT_ID`) a `u64` commit id, and XA data; the server id is the header's.
//! - `GTID_LIST_EVENT` (163): `u32` count (low 28 bits) and flags (high 4), then per entry
//!   `u32` domain, `u32` server id, `u64` sequence.

use mysql_common::io::ParseBuf;

/// `ANNOTATE_ROWS_EVENT`.
pub(crate) const ANNOTATE_ROWS: u8 = 160;
/// `BINLOG_CHECKPOINT_EVENT`.
pub(crate) const BINLOG_CHECKPOINT: u8 = 161;
/// `GTID_EVENT`.
pub(crate) const GTID: u8 = 162;
/// `GTID_LIST_EVENT`.
pub(crate) const GTID_LIST: u8 = 163;
/// `START_ENCRYPTION_EVENT`: encrypted binlogs are not readable by a client.
pub(crate) const START_ENCRYPTION: u8 = 164;

/// `GTID_EVENT` flag: the event group has no BEGIN/COMMIT (a DDL statement).
pub(crate) const FL_STANDALONE: u8 = 1;
const FL_GROUP_COMMIT_ID: u8 = 2;

/// A decoded MariaDB `GTID_EVENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MariaGtid {
    pub seq: u64,
    pub domain: u32,
    pub flags: u8,
    pub commit_id: Option<u64>,
}

impl MariaGtid {
    /// Whether the group is a single statement without BEGIN/COMMIT (DDL).
    pub fn standalone(&self) -> bool {
        self.flags & FL_STANDALONE != 0
    }
}

/// Decodes a `GTID_EVENT` payload.
pub(crate) fn gtid(payload: &[u8]) -> Result<MariaGtid, String> {
    let short = || format!("GTID event of {} bytes is too short", payload.len());
    let mut buf = ParseBuf(payload);
    let seq = buf.checked_eat_u64_le().ok_or_else(short)?;
    let domain = buf.checked_eat_u32_le().ok_or_else(short)?;
    let flags = buf.checked_eat_u8().ok_or_else(short)?;
    let commit_id = if flags & FL_GROUP_COMMIT_ID != 0 {
        Some(buf.checked_eat_u64_le().ok_or_else(short)?)
    } else {
        None
    };
    Ok(MariaGtid {
        seq,
        domain,
        flags,
        commit_id,
    })
}

/// Decodes a `GTID_LIST_EVENT` payload into `(domain, server, seq)` entries.
pub(crate) fn gtid_list(payload: &[u8]) -> Result<Vec<(u32, u32, u64)>, String> {
    let mut buf = ParseBuf(payload);
    let head = buf
        .checked_eat_u32_le()
        .ok_or("GTID list event shorter than 4 bytes")?;
    let count = (head & 0x0fff_ffff) as usize;
    let short = || {
        format!(
            "GTID list event announces {count} entries but holds {} bytes",
            payload.len()
        )
    };
    // Checked before allocating: the count comes from the event.
    if buf.len() / 16 < count {
        return Err(short());
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let domain = buf.checked_eat_u32_le().ok_or_else(short)?;
        let server = buf.checked_eat_u32_le().ok_or_else(short)?;
        let seq = buf.checked_eat_u64_le().ok_or_else(short)?;
        out.push((domain, server, seq));
    }
    Ok(out)
}

/// Decodes a `BINLOG_CHECKPOINT_EVENT` payload into the binlog file name.
pub(crate) fn binlog_checkpoint(payload: &[u8]) -> Result<String, String> {
    let name = ParseBuf(payload)
        .checked_eat_u32_str()
        .ok_or("binlog checkpoint event is truncated")?;
    String::from_utf8(name.to_vec()).map_err(|_| "binlog checkpoint file name is not UTF-8".into())
}

/// Decodes an `ANNOTATE_ROWS_EVENT` payload (the statement, lossily as UTF-8).
pub(crate) fn annotate_rows(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_gtid() {
        let mut p = 42u64.to_le_bytes().to_vec();
        p.extend_from_slice(&7u32.to_le_bytes());
        p.push(FL_GROUP_COMMIT_ID | FL_STANDALONE);
        p.extend_from_slice(&9u64.to_le_bytes());
        let g = gtid(&p).unwrap();
        assert_eq!((g.seq, g.domain, g.commit_id), (42, 7, Some(9)));
        assert!(g.standalone());
        assert!(gtid(&p[..12]).is_err());
        assert!(gtid(&p[..14]).is_err());
    }

    #[test]
    fn decodes_gtid_list_and_checkpoint() {
        let mut p = 2u32.to_le_bytes().to_vec();
        for (d, s, q) in [(0u32, 1u32, 5u64), (1, 2, 9)] {
            p.extend_from_slice(&d.to_le_bytes());
            p.extend_from_slice(&s.to_le_bytes());
            p.extend_from_slice(&q.to_le_bytes());
        }
        assert_eq!(gtid_list(&p).unwrap(), vec![(0, 1, 5), (1, 2, 9)]);
        assert!(gtid_list(&p[..20]).is_err());
        let mut c = 10u32.to_le_bytes().to_vec();
        c.extend_from_slice(b"bin.000001");
        assert_eq!(binlog_checkpoint(&c).unwrap(), "bin.000001");
        assert!(binlog_checkpoint(&c[..8]).is_err());
    }
}
