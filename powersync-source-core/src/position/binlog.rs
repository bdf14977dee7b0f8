use std::cmp::Ordering;
use std::fmt::Write;

use super::{parse_dec_fixed, Position};

/// The GTID data a binlog position carries so a resume also works on another server after a
/// failover.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GtidState {
    /// GTIDs off (file + offset only).
    None,
    /// MySQL executed GTID set, e.g. `3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5`.
    MySql(String),
    /// MariaDB GTID position, e.g. `0-1-100,1-2-7`.
    MariaDb(String),
}

/// A MySQL/MariaDB binlog position: file index (the numeric suffix of the binlog file), offset,
/// the file's base name and the GTID state after the transaction. Checkpoint body:
/// `<index 10 digits>:<offset 20 digits>:<basename>:<n|m|g>:<gtid>`; the base name is
/// percent-escaped for `:` and `%`.
///
/// The order is (index, offset) and then the encoded remainder, which is exactly string order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BinlogPosition {
    /// Numeric suffix of the binlog file (`mysql-bin.000042` → 42).
    pub file_index: u64,
    /// Byte offset within the file (64-bit: files can exceed 4 GiB).
    pub offset: u64,
    /// Binlog base name (`mysql-bin`).
    pub basename: String,
    /// GTID data to resume by GTID.
    pub gtid: GtidState,
}

impl BinlogPosition {
    /// The binlog file name, e.g. `mysql-bin.000042` (at least six digits, as servers write).
    pub fn file_name(&self) -> String {
        format!("{}.{:06}", self.basename, self.file_index)
    }

    /// Splits a binlog file name into base name and index.
    pub fn split_file_name(name: &str) -> Option<(&str, u64)> {
        let (base, idx) = name.rsplit_once('.')?;
        if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((base, idx.parse().ok()?))
    }

    fn tail(&self) -> String {
        let mut s = String::new();
        self.write_tail(&mut s);
        s
    }

    fn write_tail(&self, out: &mut String) {
        for c in self.basename.chars() {
            match c {
                '%' => out.push_str("%25"),
                ':' => out.push_str("%3A"),
                c => out.push(c),
            }
        }
        match &self.gtid {
            GtidState::None => out.push_str(":n:"),
            GtidState::MySql(g) => {
                out.push_str(":m:");
                out.push_str(g);
            }
            GtidState::MariaDb(g) => {
                out.push_str(":g:");
                out.push_str(g);
            }
        }
    }
}

impl Ord for BinlogPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.file_index, self.offset)
            .cmp(&(other.file_index, other.offset))
            .then_with(|| self.tail().cmp(&other.tail()))
    }
}

impl PartialOrd for BinlogPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Position for BinlogPosition {
    const SOURCE: &'static str = "mysql";

    fn encode_body(&self, out: &mut String) {
        let _ = write!(out, "{:010}:{:020}:", self.file_index, self.offset);
        self.write_tail(out);
    }

    fn decode_body(body: &str) -> Result<Self, String> {
        let mut parts = body.splitn(5, ':');
        let (Some(idx), Some(off), Some(base), Some(flavour), Some(gtid)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(format!(
                "expected `<file index>:<offset>:<basename>:<n|m|g>:<gtid>`, got `{body}`"
            ));
        };
        let file_index = parse_dec_fixed(idx, 10, "binlog file index")?;
        let offset = parse_dec_fixed(off, 20, "binlog offset")?;
        let basename = unescape(base)?;
        let gtid = match flavour {
            "n" if gtid.is_empty() => GtidState::None,
            "m" => GtidState::MySql(gtid.to_string()),
            "g" => GtidState::MariaDb(gtid.to_string()),
            _ => {
                return Err(format!(
                    "unknown GTID flavour `{flavour}` (expected n, m or g)"
                ))
            }
        };
        Ok(BinlogPosition {
            file_index,
            offset,
            basename,
            gtid,
        })
    }
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("%25") => out.push('%'),
            Some("%3A") => out.push(':'),
            _ => return Err(format!("bad escape in binlog base name `{s}`")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}
