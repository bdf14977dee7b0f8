//! Mapping errors of the ordinary SQL connection to error kinds.

use powersync_source_core::{ErrorKind, SourceError};

/// Maps a `tokio-postgres` error from doing `what` to a [`SourceError`] whose kind follows the
/// SQLSTATE class: 28 → Auth, 3D000 → Config, 42501 → Prerequisite, 08/53/57 and closed
/// connections → Connection (retryable), anything else → Connection when there is no server
/// error, else Schema for 42xxx (an object changed under us) and Unsupported otherwise.
pub(crate) fn sql_error(e: tokio_postgres::Error, what: &str) -> SourceError {
    let kind = match e.code() {
        Some(code) => {
            let c = code.code();
            if c.starts_with("28") {
                ErrorKind::Auth
            } else if c == "3D000" {
                ErrorKind::Config
            } else if c == "42501" {
                ErrorKind::Prerequisite
            } else if c.starts_with("08") || c.starts_with("53") || c.starts_with("57") {
                ErrorKind::Connection
            } else if c.starts_with("42") {
                ErrorKind::Schema
            } else {
                ErrorKind::Unsupported
            }
        }
        None => ErrorKind::Connection,
    };
    let detail = match e.as_db_error() {
        Some(db) => format!("{} [SQLSTATE {}]", db.message(), db.code().code()),
        None => e.to_string(),
    };
    SourceError::new(kind, format!("{what}: {detail}"))
}
