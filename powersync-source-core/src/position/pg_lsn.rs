use std::fmt::{self, Write};
use std::str::FromStr;

use super::{parse_hex_fixed, Position};

/// A PostgreSQL WAL position (LSN). Checkpoint body: `XXXXXXXX/XXXXXXXX`, upper hex,
/// zero-padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PgLsn(pub u64);

impl PgLsn {
    /// The invalid/zero LSN.
    pub const ZERO: PgLsn = PgLsn(0);
}

impl fmt::Display for PgLsn {
    /// PostgreSQL's own rendering (`16/B374D848`, not padded).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for PgLsn {
    type Err = String;
    /// Parses PostgreSQL's rendering (padded or not, any case).
    fn from_str(s: &str) -> Result<Self, String> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not an LSN"))?;
        let part = |p: &str| {
            if p.is_empty() || p.len() > 8 {
                return Err(format!("`{s}` is not an LSN"));
            }
            u32::from_str_radix(p, 16).map_err(|_| format!("`{s}` is not an LSN"))
        };
        Ok(PgLsn(((part(hi)? as u64) << 32) | part(lo)? as u64))
    }
}

impl Position for PgLsn {
    const SOURCE: &'static str = "postgres";

    fn encode_body(&self, out: &mut String) {
        let _ = write!(out, "{:08X}/{:08X}", self.0 >> 32, self.0 & 0xFFFF_FFFF);
    }

    fn decode_body(body: &str) -> Result<Self, String> {
        let (hi, lo) = body
            .split_once('/')
            .ok_or_else(|| format!("expected `XXXXXXXX/XXXXXXXX`, got `{body}`"))?;
        let hi = parse_hex_fixed(hi, 8, "LSN high word")?;
        let lo = parse_hex_fixed(lo, 8, "LSN low word")?;
        Ok(PgLsn((hi << 32) | lo))
    }
}
