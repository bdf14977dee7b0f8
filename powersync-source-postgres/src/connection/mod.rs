//! Connections: TLS, ordinary SQL and the replication protocol.
//!
//! - [`sql::connect`]: a `tokio_postgres::Client` for catalog queries.
//! - [`copy::CopySession`]: an ordinary session on this crate's own protocol code, for the
//!   snapshot readers' `COPY … TO STDOUT` (decoded straight from the receive buffer).
//! - [`replication::ReplicationConnection`]: a `replication=database` walsender connection
//!   built directly on `postgres-protocol`, for `IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`
//!   and `START_REPLICATION` (whose CopyBoth stream `tokio-postgres` cannot carry).
//! - [`tls`]: the rustls setup both use, with libpq's `sslmode` semantics.
//!
//! # Errors
//!
//! Every error is a [`SourceError`] whose message names the endpoint (`host:port`), the user
//! and the database, and never the password. A server `ErrorResponse` becomes
//! `<what we were doing> <where>` with the server's message (and detail) attached as the
//! cause, and its SQLSTATE as [`SourceError::code`] (it survives [`SourceError::context`]).
//! Kinds (the codes without a special case come from [`kind_for_sqlstate`], which query
//! errors share):
//!
//! | cause | kind |
//! |---|---|
//! | 28P01, 28000 (bad password, unknown role) | `Auth` (the message says "password authentication failed for user ...") |
//! | 28000 "no pg_hba.conf entry" / "pg_hba.conf rejects" | `Prerequisite`, hint = the `pg_hba.conf` line to add |
//! | 3D000 (database does not exist) | `Config` |
//! | 42501 (e.g. role lacks REPLICATION) | `Prerequisite`, hint = `ALTER ROLE ... WITH REPLICATION` |
//! | 42704 on a replication slot; 55000 "can no longer get changes" / invalidated; "has already been removed" | `HistoryLost` |
//! | 42704 on a publication; 55000 (e.g. `wal_level` not logical); 53400 (all slots in use) | `Prerequisite` |
//! | 55006 (slot active for another process) | `Connection` (retry: the other walsender usually exits) |
//! | classes 08, 53 (except 53400), 57, 58 (except WAL removed), 40, XX | `Connection` |
//! | 0A000, 42601, 42883 | `Unsupported` |
//! | other class 42 (42P01, 42703, … an object missing or changed) | `Schema` |
//! | class 22 | `Decode` |
//! | anything else | `Prerequisite` |
//! | refused / reset / EOF / timeout / DNS failure | `Connection` |
//! | TLS: certificate not trusted / wrong host / unreadable `sslrootcert`/`sslcert`/`sslkey`; server without TLS under `sslmode>=require` | `Config` (a retry cannot help) |
//! | TLS: any other handshake failure (reset, alert, protocol) | `Connection` |

use std::fmt;
use std::io;

use postgres_protocol::escape::escape_identifier;
use powersync_source_core::{ErrorKind, SourceError};
use tokio_postgres::error::SqlState;

use crate::config::PostgresConfig;

mod auth;
pub(crate) mod copy;
pub(crate) mod replication;
mod socket;
pub(crate) mod sql;
pub(crate) mod stream;
pub(crate) mod tls;
mod wire;

#[cfg(test)]
mod tests;

/// The fields of a server `ErrorResponse` / `NoticeResponse` this crate uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServerError {
    /// `ERROR`, `FATAL`, `PANIC`, `WARNING`, `NOTICE`, ...
    pub severity: String,
    /// SQLSTATE code.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// Detail, if any.
    pub detail: Option<String>,
    /// Server's hint, if any.
    pub hint: Option<String>,
}

impl ServerError {
    /// The SQLSTATE as `tokio-postgres`' type, to compare with its named constants.
    pub fn state(&self) -> SqlState {
        SqlState::from_code(&self.code)
    }
}

/// The server's words: message, then detail (the SQLSTATE travels in
/// [`SourceError::code`], not in the text).
impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// Who we talk to, for messages: `127.0.0.1:5432 as user "x" (database "d")`.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub endpoint: String,
    pub user: String,
    pub dbname: String,
}

impl Target {
    pub fn new(cfg: &PostgresConfig) -> Self {
        Target {
            endpoint: cfg.endpoint(),
            user: cfg.user().to_string(),
            dbname: cfg.dbname().to_string(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} as user \"{}\" (database \"{}\")",
            self.endpoint, self.user, self.dbname
        )
    }
}

/// What connection an error happened on; changes some hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnKind {
    Sql,
    Replication,
}

/// Maps a server `ErrorResponse` to a [`SourceError`] (see the module docs for the table):
/// the SQLSTATE becomes [`SourceError::code`], the server's message and detail the cause, and
/// the server's hint the hint when this table has none of its own.
pub(crate) fn server_error(
    target: &Target,
    kind: ConnKind,
    doing: &str,
    err: &ServerError,
) -> SourceError {
    let state = err.state();
    let class = err.code.get(..2).unwrap_or("");
    let lower = err.message.to_ascii_lowercase();
    let detail = err.detail.as_deref().unwrap_or("").to_ascii_lowercase();
    let user = &target.user;
    let server_hint = err.hint.clone();
    let msg = format!("{doing} {target}");
    let with_cause = |e: SourceError| e.with_source(err.clone());
    let e = if state == SqlState::INVALID_PASSWORD {
        // The server's own text is the same; saying it here keeps the user name in front.
        SourceError::auth(format!(
            "{doing} {target}: password authentication failed for user \"{user}\""
        ))
        .with_hint("check the password configured for this user")
    } else if state == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        && lower.contains("pg_hba.conf")
    {
        let addr = quoted_after(&err.message, "host \"").unwrap_or("<client address>");
        let mask = if addr.contains(':') { 128 } else { 32 };
        let encryption = if lower.contains("no encryption") || lower.contains("ssl off") {
            "host"
        } else {
            "hostssl"
        };
        // Logical replication connections (replication=database) match ordinary
        // pg_hba.conf lines for their database, not the `replication` keyword.
        let db = if lower.contains("replication connection") {
            "replication"
        } else {
            target.dbname.as_str()
        };
        with_cause(SourceError::prerequisite(msg)).with_hint(format!(
            "allow this client in pg_hba.conf, e.g. add the line \
             `{encryption} {db} {user} {addr}/{mask} scram-sha-256` and reload the server \
             (SELECT pg_reload_conf())"
        ))
    } else if class == "28" {
        with_cause(SourceError::auth(msg))
    } else if state == SqlState::INVALID_CATALOG_NAME {
        with_cause(SourceError::config(msg)).with_hint(format!(
            "check dbname, or create the database (CREATE DATABASE \"{}\")",
            target.dbname
        ))
    } else if state == SqlState::INSUFFICIENT_PRIVILEGE {
        let replication = kind == ConnKind::Replication
            && (lower.contains("wal sender")
                || lower.contains("walsender")
                || lower.contains("replication"));
        let hint = if replication {
            format!("grant the REPLICATION attribute: ALTER ROLE \"{user}\" WITH REPLICATION;")
        } else {
            server_hint
                .clone()
                .unwrap_or_else(|| format!("grant the missing privilege to role \"{user}\""))
        };
        with_cause(SourceError::prerequisite(msg)).with_hint(hint)
    } else if lower.contains("has already been removed")
        || lower.contains("can no longer get changes")
        || lower.contains("invalidated")
        || detail.contains("invalidated")
    {
        // A removed WAL segment (58P01) or an invalidated slot (55000): the server cannot
        // produce the changes any more, whatever the code's class says.
        with_cause(SourceError::history_lost(msg)).with_hint(
            "the replication slot can no longer provide the changes needed: drop it and \
             start from a new snapshot",
        )
    } else if state == SqlState::UNDEFINED_OBJECT && lower.contains("replication slot") {
        with_cause(SourceError::history_lost(msg))
            .with_hint("the replication slot is gone: start from a new snapshot")
    } else if state == SqlState::UNDEFINED_OBJECT && lower.contains("publication") {
        with_cause(SourceError::prerequisite(msg)).with_hint(
            "create the publication: CREATE PUBLICATION ... FOR TABLE ... (or FOR ALL TABLES)",
        )
    } else if state == SqlState::OBJECT_IN_USE {
        with_cause(SourceError::connection(msg)).with_hint(
            "another process is using the replication slot (see active_pid in \
             pg_replication_slots); retry once it has disconnected",
        )
    } else if state == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE && lower.contains("wal_level") {
        with_cause(SourceError::prerequisite(msg))
            .with_hint("set wal_level = logical in postgresql.conf and restart the server")
    } else if state == SqlState::CONFIGURATION_LIMIT_EXCEEDED {
        with_cause(SourceError::prerequisite(msg)).with_hint(server_hint.clone().unwrap_or_else(
            || "raise the server limit (max_replication_slots / max_wal_senders)".into(),
        ))
    } else {
        with_cause(SourceError::new(kind_for_sqlstate(&err.code), msg))
    };
    let e = e.with_code(err.code.clone());
    match (e.hint().is_none(), server_hint) {
        (true, Some(h)) => e.with_hint(h),
        _ => e,
    }
}

/// The one SQLSTATE → error kind table, for connection, replication and query errors alike;
/// [`server_error`] adds hints (and finer kinds) for the codes it knows more about.
///
/// Class 28 → Auth; 3D000 (no such database) → Config; 42501 (privilege) and 53400 (limits) →
/// Prerequisite; 0A000/42601/42883 (feature, syntax or function the server lacks) →
/// Unsupported; other class 42 (an object missing or changed under us) → Schema; classes
/// 08/53/57/58/40/XX (connection, resources, shutdown, I/O, serialization, internal) →
/// Connection, retryable; class 22 (data exception) → Decode; anything else → Prerequisite
/// (the server refused for a reason the operator must look at).
pub(crate) fn kind_for_sqlstate(code: &str) -> ErrorKind {
    let state = SqlState::from_code(code);
    if state == SqlState::INVALID_CATALOG_NAME {
        return ErrorKind::Config;
    }
    if state == SqlState::INSUFFICIENT_PRIVILEGE || state == SqlState::CONFIGURATION_LIMIT_EXCEEDED
    {
        return ErrorKind::Prerequisite;
    }
    if state == SqlState::FEATURE_NOT_SUPPORTED
        || state == SqlState::SYNTAX_ERROR
        || state == SqlState::UNDEFINED_FUNCTION
    {
        return ErrorKind::Unsupported;
    }
    match code.get(..2).unwrap_or("") {
        "28" => ErrorKind::Auth,
        "42" => ErrorKind::Schema,
        "08" | "53" | "57" | "58" | "40" | "XX" => ErrorKind::Connection,
        "22" => ErrorKind::Decode,
        _ => ErrorKind::Prerequisite,
    }
}

/// Maps a `tokio-postgres` error from doing `what` to a [`SourceError`] whose kind follows
/// [`kind_for_sqlstate`] and whose [`SourceError::code`] is the SQLSTATE; an error without a
/// server code (closed connection, I/O) is a retryable `Connection` error. The server's
/// message (or the client error's cause chain) is attached as the cause; neither names the
/// password or the connection string.
pub(crate) fn sql_error(e: tokio_postgres::Error, what: &str) -> SourceError {
    match e.as_db_error() {
        Some(db) => {
            let server = ServerError::from(db);
            SourceError::new(kind_for_sqlstate(&server.code), what)
                .with_code(server.code.clone())
                .with_source(server)
        }
        None => SourceError::connection(what).with_source(ClientError(e)),
    }
}

impl From<&tokio_postgres::error::DbError> for ServerError {
    fn from(db: &tokio_postgres::error::DbError) -> Self {
        ServerError {
            severity: db.severity().to_string(),
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            hint: db.hint().map(str::to_string),
        }
    }
}

/// A `tokio-postgres` client error with its cause chain in `Display` (its own `Display` leaves
/// the cause out: "error communicating with the server", "connection closed").
#[derive(Debug)]
pub(crate) struct ClientError(pub tokio_postgres::Error);

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = std::error::Error::source(&self.0);
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// No `source()`: `Display` already carries the whole chain.
impl std::error::Error for ClientError {}

/// The text between `prefix` and the next `"` in `s`.
fn quoted_after<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let start = s.find(prefix)? + prefix.len();
    let end = s[start..].find('"')? + start;
    Some(&s[start..end])
}

/// Maps an I/O failure (refused, reset, EOF, DNS) to a retryable `Connection` error.
pub(crate) fn io_error(target: &Target, doing: &str, err: io::Error) -> SourceError {
    if let Some(e) = tls::tls_error_from_io(target, &err) {
        return e;
    }
    let what = match err.kind() {
        io::ErrorKind::UnexpectedEof => "server closed the connection unexpectedly".to_string(),
        _ => err.to_string(),
    };
    SourceError::connection(format!("{doing} {target}: {what}"))
}

/// The connection was closed by the server (EOF) while we expected a message.
pub(crate) fn eof_error(target: &Target, doing: &str) -> SourceError {
    SourceError::connection(format!(
        "{doing} {target}: server closed the connection unexpectedly"
    ))
}

/// `connect_timeout` elapsed.
pub(crate) fn timeout_error(target: &Target, secs: u64) -> SourceError {
    SourceError::connection(format!(
        "connecting to {target}: timed out after {secs} s (connect_timeout)"
    ))
}

/// The value of pgoutput's `publication_names` option for these publications: a
/// comma-separated list of quoted identifiers (`"a","b"`), to be passed as an option value
/// to [`replication::ReplicationConnection::start_replication`] (which literal-quotes it).
pub(crate) fn publication_names(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| escape_identifier(n))
        .collect::<Vec<_>>()
        .join(",")
}
