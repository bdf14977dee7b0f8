use std::fmt::{self, Write};

use super::Position;

/// A SQL Server log sequence number: 10 bytes, compared as big-endian bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MssqlLsn(pub [u8; 10]);

impl MssqlLsn {
    /// The LSN from a `binary(10)` column value; `None` if the length is wrong.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 10]>::try_from(b).ok().map(MssqlLsn)
    }
    /// The next LSN (what `sys.fn_cdc_increment_lsn` returns); saturates at the maximum.
    pub fn increment(self) -> Self {
        let mut b = self.0;
        for byte in b.iter_mut().rev() {
            if *byte == 0xFF {
                *byte = 0;
            } else {
                *byte += 1;
                return MssqlLsn(b);
            }
        }
        MssqlLsn([0xFF; 10])
    }
    fn write_hex(&self, out: &mut String) {
        for b in self.0 {
            let _ = write!(out, "{b:02X}");
        }
    }
    fn parse_hex(s: &str, what: &str) -> Result<Self, String> {
        if s.len() != 20
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            return Err(format!(
                "{what} must be 20 upper-case hex digits, got `{s}`"
            ));
        }
        let mut out = [0u8; 10];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(MssqlLsn(out))
    }
}

impl fmt::Debug for MssqlLsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(22);
        s.push_str("0x");
        self.write_hex(&mut s);
        f.write_str(&s)
    }
}

/// A SQL Server CDC position: the commit LSN (`__$start_lsn`) and the sequence value
/// (`__$seqval`) inside it. A position at a transaction boundary has `seqval` all `0xFF`
/// ([`MssqlPosition::after_transaction`]). Checkpoint body: `<lsn hex 20>:<seqval hex 20>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MssqlPosition {
    /// Commit LSN.
    pub lsn: MssqlLsn,
    /// Sequence value within the transaction.
    pub seqval: MssqlLsn,
}

impl MssqlPosition {
    /// The position after every change of the transaction committed at `lsn`.
    pub fn after_transaction(lsn: MssqlLsn) -> Self {
        MssqlPosition {
            lsn,
            seqval: MssqlLsn([0xFF; 10]),
        }
    }
    /// Whether the position is at a transaction boundary.
    pub fn is_transaction_boundary(&self) -> bool {
        self.seqval.0 == [0xFF; 10]
    }
}

impl Position for MssqlPosition {
    const SOURCE: &'static str = "mssql";

    fn encode_body(&self, out: &mut String) {
        self.lsn.write_hex(out);
        out.push(':');
        self.seqval.write_hex(out);
    }

    fn decode_body(body: &str) -> Result<Self, String> {
        let (lsn, seq) = body
            .split_once(':')
            .ok_or_else(|| format!("expected `<lsn>:<seqval>`, got `{body}`"))?;
        Ok(MssqlPosition {
            lsn: MssqlLsn::parse_hex(lsn, "LSN")?,
            seqval: MssqlLsn::parse_hex(seq, "sequence value")?,
        })
    }
}
