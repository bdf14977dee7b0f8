use std::fmt::Write;

use super::{parse_dec_fixed, Position};

/// A Convex streaming-export cursor: nanoseconds, non-negative `i64`. Checkpoint body: 19
/// decimal digits, zero-padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConvexCursor(i64);

impl ConvexCursor {
    /// A cursor; `None` for negative values, which Convex never issues.
    pub fn new(nanos: i64) -> Option<Self> {
        (nanos >= 0).then_some(ConvexCursor(nanos))
    }
    /// The cursor value.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl Position for ConvexCursor {
    const SOURCE: &'static str = "convex";

    fn encode_body(&self, out: &mut String) {
        let _ = write!(out, "{:019}", self.0);
    }

    fn decode_body(body: &str) -> Result<Self, String> {
        let v = parse_dec_fixed(body, 19, "Convex cursor")?;
        i64::try_from(v)
            .map(ConvexCursor)
            .map_err(|_| format!("Convex cursor {v} exceeds i64"))
    }
}
