//! Typed positions, one per source, and their checkpoint encodings.
//!
//! Each position type is totally ordered and encodes to a fixed-width body, so that
//! [`Checkpoint`]s of one source order as strings exactly as the positions order (proved by
//! property tests in `tests/position.rs`).

mod binlog;
mod convex;
mod mongo;
mod mssql;
mod pg_lsn;

pub use binlog::{BinlogPosition, GtidState};
pub use convex::ConvexCursor;
pub use mongo::MongoPosition;
pub use mssql::{MssqlLsn, MssqlPosition};
pub use pg_lsn::PgLsn;

use std::fmt::Debug;

use crate::checkpoint::Checkpoint;
use crate::error::SourceError;

/// A source's position in its change history.
///
/// The order is the source's commit order. Encodings are fixed-width so checkpoint strings
/// order like positions.
pub trait Position: Clone + Ord + Debug + Send + Sync + 'static {
    /// The source tag written into checkpoints.
    const SOURCE: &'static str;
    /// The encoding version written into checkpoints.
    const VERSION: u32 = 1;

    /// Appends the fixed-width body encoding.
    fn encode_body(&self, out: &mut String);

    /// Parses a body produced by [`Position::encode_body`]; the error says what is wrong.
    fn decode_body(body: &str) -> Result<Self, String>;

    /// The checkpoint for this position.
    fn to_checkpoint(&self) -> Checkpoint {
        let mut body = String::with_capacity(48);
        self.encode_body(&mut body);
        Checkpoint::from_parts(Self::SOURCE, Self::VERSION, &body)
    }

    /// The position a checkpoint names. A checkpoint of another source, or a body that does
    /// not parse, is a [`crate::ErrorKind::Config`] error.
    fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self, SourceError> {
        if checkpoint.source() != Self::SOURCE {
            return Err(SourceError::config(format!(
                "checkpoint `{checkpoint}` belongs to a {} source, not {}",
                checkpoint.source(),
                Self::SOURCE
            )));
        }
        Self::decode_body(checkpoint.body()).map_err(|why| {
            SourceError::config(format!("checkpoint `{checkpoint}` is corrupt: {why}"))
        })
    }

    /// Parses a checkpoint string straight to a position.
    fn parse_checkpoint(s: &str) -> Result<Self, SourceError> {
        Self::from_checkpoint(&Checkpoint::parse(s)?)
    }
}

/// Parses exactly `width` upper-case hex digits.
pub(crate) fn parse_hex_fixed(s: &str, width: usize, what: &str) -> Result<u64, String> {
    if s.len() != width
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return Err(format!(
            "{what} must be {width} upper-case hex digits, got `{s}`"
        ));
    }
    u64::from_str_radix(s, 16).map_err(|e| format!("{what}: {e}"))
}

/// Parses exactly `width` decimal digits.
pub(crate) fn parse_dec_fixed(s: &str, width: usize, what: &str) -> Result<u64, String> {
    if s.len() != width || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} must be {width} decimal digits, got `{s}`"));
    }
    s.parse().map_err(|e| format!("{what}: {e}"))
}
