//! Mapping errors of the ordinary SQL connection to error kinds.

use powersync_source_core::{ErrorKind, SourceError};

use crate::connection::kind_for_sqlstate;

/// Maps a `tokio-postgres` error from doing `what` to a [`SourceError`] whose kind follows the
/// shared SQLSTATE table ([`kind_for_sqlstate`]); an error without a server code (closed
/// connection, I/O) is a retryable `Connection` error.
pub(crate) fn sql_error(e: tokio_postgres::Error, what: &str) -> SourceError {
    let kind = match e.code() {
        Some(code) => kind_for_sqlstate(code.code()),
        None => ErrorKind::Connection,
    };
    let detail = match e.as_db_error() {
        Some(db) => format!("{} [SQLSTATE {}]", db.message(), db.code().code()),
        None => e.to_string(),
    };
    SourceError::new(kind, format!("{what}: {detail}"))
}
