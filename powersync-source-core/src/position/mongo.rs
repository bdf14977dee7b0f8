use std::cmp::Ordering;
use std::fmt::Write;

use super::{parse_hex_fixed, Position};

/// A MongoDB change stream position: the cluster time of the event (seconds, increment) and
/// the resume token to hand back to the server. Checkpoint body:
/// `<seconds hex 8><increment hex 8>:<resume token>`; the token is opaque and last, so it may
/// contain any character.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MongoPosition {
    /// Cluster time seconds.
    pub seconds: u32,
    /// Cluster time increment.
    pub increment: u32,
    /// The resume token's `_data` string (opaque).
    pub resume_token: String,
}

impl Ord for MongoPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.seconds, self.increment, &self.resume_token).cmp(&(
            other.seconds,
            other.increment,
            &other.resume_token,
        ))
    }
}

impl PartialOrd for MongoPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Position for MongoPosition {
    const SOURCE: &'static str = "mongodb";

    fn encode_body(&self, out: &mut String) {
        let _ = write!(
            out,
            "{:08X}{:08X}:{}",
            self.seconds, self.increment, self.resume_token
        );
    }

    fn decode_body(body: &str) -> Result<Self, String> {
        let (time, token) = body
            .split_once(':')
            .ok_or_else(|| format!("expected `<cluster time>:<resume token>`, got `{body}`"))?;
        if time.len() != 16 {
            return Err(format!(
                "cluster time must be 16 upper-case hex digits, got `{time}`"
            ));
        }
        let seconds = parse_hex_fixed(&time[..8], 8, "cluster time seconds")? as u32;
        let increment = parse_hex_fixed(&time[8..], 8, "cluster time increment")? as u32;
        Ok(MongoPosition {
            seconds,
            increment,
            resume_token: token.to_string(),
        })
    }
}
