//! Connections: TLS, ordinary SQL and the replication protocol.
//!
//! - [`sql::connect`]: a `tokio_postgres::Client` for catalog queries and snapshot reads.
//! - [`replication::ReplicationConnection`]: a `replication=database` walsender connection
//!   built directly on `postgres-protocol`, for `IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`
//!   and `START_REPLICATION` (whose CopyBoth stream `tokio-postgres` cannot carry).
//! - [`tls`]: the rustls setup both use, with libpq's `sslmode` semantics.
//!
//! # Errors
//!
//! Every error is a [`SourceError`] whose message names the endpoint (`host:port`), the user
//! and the database, and never the password. A server `ErrorResponse` is rendered as
//! `<what we were doing> <where>: <server message> [SQLSTATE xxxxx]` (plus `; detail: ...`
//! when the server sent one), so the code survives [`SourceError::context`]; read it back with
//! [`sqlstate`]. Kinds (the codes without a special case come from [`kind_for_sqlstate`],
//! which query errors share):
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

use powersync_source_core::{ErrorKind, SourceError};

use crate::config::PgConfig;

pub(crate) mod replication;
pub(crate) mod sql;
pub(crate) mod tls;
mod wire;

#[cfg(test)]
mod tests;

/// The SQLSTATE code carried by an error built from a server `ErrorResponse`
/// (`[SQLSTATE 42704]` in its message), e.g. `Some("42704")`.
pub(crate) fn sqlstate(err: &SourceError) -> Option<&str> {
    sqlstate_in(err.message())
}

fn sqlstate_in(message: &str) -> Option<&str> {
    const TAG: &str = "[SQLSTATE ";
    let start = message.rfind(TAG)? + TAG.len();
    let code = message.get(start..start + 5)?;
    (message.as_bytes().get(start + 5) == Some(&b']')
        && code.bytes().all(|b| b.is_ascii_alphanumeric()))
    .then_some(code)
}

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

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [SQLSTATE {}]", self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        Ok(())
    }
}

/// Who we talk to, for messages: `127.0.0.1:5432 as user "x" (database "d")`.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub endpoint: String,
    pub user: String,
    pub dbname: String,
}

impl Target {
    pub fn new(cfg: &PgConfig) -> Self {
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

/// Maps a server `ErrorResponse` to a [`SourceError`] (see the module docs for the table).
pub(crate) fn server_error(
    target: &Target,
    kind: ConnKind,
    doing: &str,
    err: &ServerError,
) -> SourceError {
    let code = err.code.as_str();
    let msg = format!("{doing} {target}: {err}");
    let class = code.get(..2).unwrap_or("");
    let lower = err.message.to_ascii_lowercase();
    let user = &target.user;
    let server_hint = err.hint.clone();
    let e =
        match code {
            "28P01" => SourceError::auth(format!(
            "{doing} {target}: password authentication failed for user \"{user}\" [SQLSTATE {code}]"
        ))
            .with_hint("check the password configured for this user"),
            "28000" if lower.contains("pg_hba.conf") => {
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
                SourceError::prerequisite(msg).with_hint(format!(
                    "allow this client in pg_hba.conf, e.g. add the line \
                 `{encryption} {db} {user} {addr}/{mask} scram-sha-256` and reload the server \
                 (SELECT pg_reload_conf())"
                ))
            }
            "28000" => SourceError::auth(msg),
            _ if class == "28" => SourceError::auth(msg),
            "3D000" => SourceError::config(msg).with_hint(format!(
                "check dbname, or create the database (CREATE DATABASE \"{}\")",
                target.dbname
            )),
            "42501" => {
                let replication = kind == ConnKind::Replication
                    && (lower.contains("wal sender")
                        || lower.contains("walsender")
                        || lower.contains("replication"));
                if replication {
                    SourceError::prerequisite(msg).with_hint(format!(
                        "grant the REPLICATION attribute: ALTER ROLE \"{user}\" WITH REPLICATION;"
                    ))
                } else {
                    SourceError::prerequisite(msg).with_hint(server_hint.unwrap_or_else(|| {
                        format!("grant the missing privilege to role \"{user}\"")
                    }))
                }
            }
            _ if lower.contains("has already been removed")
                || lower.contains("can no longer get changes")
                || lower.contains("invalidated") =>
            {
                SourceError::history_lost(msg).with_hint(
                    "the replication slot can no longer provide the changes needed: drop it and \
                 start from a new snapshot",
                )
            }
            "42704" if lower.contains("replication slot") => SourceError::history_lost(msg)
                .with_hint("the replication slot is gone: start from a new snapshot"),
            "42704" if lower.contains("publication") => SourceError::prerequisite(msg).with_hint(
                "create the publication: CREATE PUBLICATION ... FOR TABLE ... (or FOR ALL TABLES)",
            ),
            "55006" => SourceError::connection(msg).with_hint(
                "another process is using the replication slot (see active_pid in \
             pg_replication_slots); retry once it has disconnected",
            ),
            "55000" if lower.contains("wal_level") => SourceError::prerequisite(msg)
                .with_hint("set wal_level = logical in postgresql.conf and restart the server"),
            "53400" => {
                SourceError::prerequisite(msg).with_hint(server_hint.clone().unwrap_or_else(|| {
                    "raise the server limit (max_replication_slots / max_wal_senders)".into()
                }))
            }
            _ => SourceError::new(kind_for_sqlstate(code), msg),
        };
    match (e.hint().is_none(), err.hint.as_deref()) {
        (true, Some(h)) => e.with_hint(h.to_string()),
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
    let class = code.get(..2).unwrap_or("");
    match code {
        "3D000" => ErrorKind::Config,
        "42501" | "53400" => ErrorKind::Prerequisite,
        "0A000" | "42601" | "42883" => ErrorKind::Unsupported,
        _ => match class {
            "28" => ErrorKind::Auth,
            "42" => ErrorKind::Schema,
            "08" | "53" | "57" | "58" | "40" | "XX" => ErrorKind::Connection,
            "22" => ErrorKind::Decode,
            _ => ErrorKind::Prerequisite,
        },
    }
}

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

/// Double-quotes an identifier for SQL and replication commands (`"a""b"`).
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Single-quotes a string literal (`'it''s'`).
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The value of pgoutput's `publication_names` option for these publications: a
/// comma-separated list of quoted identifiers (`"a","b"`), to be passed as an option value
/// to [`replication::ReplicationConnection::start_replication`] (which literal-quotes it).
pub(crate) fn publication_names(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| quote_ident(n))
        .collect::<Vec<_>>()
        .join(",")
}
