//! Opening connections and turning driver errors into [`SourceError`]s of the right kind.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use powersync_source_core::SourceError;

use crate::config::{MySqlConfig, SslMode};

/// Server error codes the connector reacts to.
pub(crate) mod codes {
    /// ER_DBACCESS_DENIED_ERROR
    pub const DB_ACCESS_DENIED: u16 = 1044;
    /// ER_ACCESS_DENIED_ERROR
    pub const ACCESS_DENIED: u16 = 1045;
    /// ER_BAD_DB_ERROR
    pub const BAD_DB: u16 = 1049;
    /// ER_NO_SUCH_TABLE
    pub const NO_SUCH_TABLE: u16 = 1146;
    /// ER_TABLEACCESS_DENIED_ERROR
    pub const TABLE_ACCESS_DENIED: u16 = 1142;
    /// ER_SPECIFIC_ACCESS_DENIED_ERROR
    pub const SPECIFIC_ACCESS_DENIED: u16 = 1227;
    /// ER_MASTER_FATAL_ERROR_READING_BINLOG
    pub const FATAL_READING_BINLOG: u16 = 1236;
    /// ER_SERVER_SHUTDOWN
    pub const SERVER_SHUTDOWN: u16 = 1053;
    /// ER_QUERY_INTERRUPTED
    pub const QUERY_INTERRUPTED: u16 = 1317;
    /// ER_CONNECTION_KILLED (MariaDB) / ER_CONNECTION_KILLED
    pub const CONNECTION_KILLED: u16 = 1927;
    /// ER_LOCK_WAIT_TIMEOUT
    pub const LOCK_WAIT_TIMEOUT: u16 = 1205;
    /// ER_LOCK_DEADLOCK
    pub const LOCK_DEADLOCK: u16 = 1213;
    /// ER_CON_COUNT_ERROR (too many connections)
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
    /// ER_HOST_IS_BLOCKED
    pub const HOST_BLOCKED: u16 = 1129;
    /// CR_SERVER_GONE_ERROR
    pub const SERVER_GONE: u16 = 2006;
    /// CR_SERVER_LOST
    pub const SERVER_LOST: u16 = 2013;
}

/// Driver options for `config`, with `database` as default database (or none).
pub(crate) fn opts(config: &MySqlConfig, database: Option<&str>) -> OptsBuilder {
    let mut b = OptsBuilder::default()
        .ip_or_hostname(config.host.clone())
        .tcp_port(config.port)
        .user(Some(config.user.clone()))
        .pass(config.password.as_ref().map(|p| p.expose().to_owned()))
        .db_name(database.filter(|d| !d.is_empty()).map(str::to_owned))
        .prefer_socket(false)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(Duration::from_secs(10)))
        .stmt_cache_size(32)
        // Every connection speaks UTC and utf8mb4 so TIMESTAMP values and text arrive the same
        // way on the snapshot path as they are normalized on the binlog path.
        .init(vec![
            "SET NAMES utf8mb4".to_owned(),
            "SET time_zone = '+00:00'".to_owned(),
        ]);
    let ssl = match &config.ssl_ca {
        // Only the named roots, as the snapshot reader's connection (client::tls).
        Some(ca) => SslOpts::default()
            .with_root_certs(vec![ca.clone().into()])
            .with_disable_built_in_roots(true),
        None => SslOpts::default(),
    };
    match config.ssl_mode {
        SslMode::Disabled => {}
        SslMode::VerifyCa => b = b.ssl_opts(ssl.with_danger_skip_domain_validation(true)),
        SslMode::VerifyIdentity => b = b.ssl_opts(ssl),
    }
    b
}

/// Connects with the URL's database as default database.
pub(crate) async fn connect(config: &MySqlConfig) -> Result<Conn, SourceError> {
    connect_to(config, Some(&config.database)).await
}

/// Connects with `database` as default database (or none).
pub(crate) async fn connect_to(
    config: &MySqlConfig,
    database: Option<&str>,
) -> Result<Conn, SourceError> {
    let opts = opts(config, database);
    match tokio::time::timeout(config.connect_timeout, Conn::new(opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(sql_error(
            e,
            &format!("connecting to {}", config.endpoint()),
        )),
        Err(_) => Err(SourceError::connection(format!(
            "connecting to {} timed out after {:?}",
            config.endpoint(),
            config.connect_timeout
        ))),
    }
}

/// A driver error as a [`SourceError`] of the kind a host acts on: the message says where it
/// happened (`context`), the driver error is attached as the cause, and a server error's
/// number is the error's [`code`](SourceError::code) (`1045`, `1236`, …). Driver messages carry
/// no credentials (the connector builds its connection options without a URL).
pub(crate) fn sql_error(e: mysql_async::Error, context: &str) -> SourceError {
    use mysql_async::Error as E;
    let error = match &e {
        E::Server(s) => {
            let msg = context.to_owned();
            let error = match s.code {
                codes::ACCESS_DENIED => {
                    SourceError::auth(msg).with_hint("check the user name and password in the URL")
                }
                codes::DB_ACCESS_DENIED => SourceError::auth(msg)
                    .with_hint("GRANT SELECT ON the database TO the replication user"),
                codes::BAD_DB => SourceError::config(msg)
                    .with_hint("the URL names a database that does not exist"),
                codes::TABLE_ACCESS_DENIED | codes::SPECIFIC_ACCESS_DENIED => {
                    SourceError::prerequisite(msg).with_hint(
                        "GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO the user \
                         (MariaDB 10.5+: also BINLOG MONITOR)",
                    )
                }
                codes::NO_SUCH_TABLE => SourceError::schema(msg),
                codes::FATAL_READING_BINLOG => binlog_read_error(msg, &s.message),
                codes::SERVER_SHUTDOWN
                | codes::QUERY_INTERRUPTED
                | codes::CONNECTION_KILLED
                | codes::LOCK_WAIT_TIMEOUT
                | codes::LOCK_DEADLOCK
                | codes::TOO_MANY_CONNECTIONS
                | codes::HOST_BLOCKED
                | codes::SERVER_GONE
                | codes::SERVER_LOST => SourceError::connection(msg),
                _ => SourceError::decode(msg),
            };
            error.with_code(s.code.to_string())
        }
        E::Url(_) => SourceError::config(context),
        E::Io(io) if is_tls_setup_problem(io) => SourceError::config(context).with_hint(
            "the server's TLS certificate is not trusted (or not for this host), or ssl-ca is \
             unusable: check ssl-ca and ssl-mode",
        ),
        E::Io(_) | E::Driver(_) | E::Other(_) => SourceError::connection(context),
    };
    error.with_source(e)
}

/// Whether a connection failed on something a retry cannot fix: an untrusted or wrong-host
/// server certificate, or an unusable `ssl-ca` (from either the driver or the snapshot
/// reader's connection; tokio-rustls reports handshake failures as an `io::Error` around the
/// rustls error).
fn is_tls_setup_problem(e: &mysql_async::IoError) -> bool {
    match e {
        mysql_async::IoError::Tls(_) => true,
        mysql_async::IoError::Io(io) => io.get_ref().is_some_and(|inner| {
            inner
                .downcast_ref::<crate::client::TlsSetupError>()
                .is_some()
                || matches!(
                    inner.downcast_ref::<rustls::Error>(),
                    Some(rustls::Error::InvalidCertificate(_))
                )
        }),
    }
}

/// Error 1236 means the server cannot serve the requested binlog position: purged files and
/// unknown GTIDs are history lost; anything else (e.g. a duplicate server id) stays a
/// connection problem worth retrying.
fn binlog_read_error(msg: String, server_message: &str) -> SourceError {
    let m = server_message.to_ascii_lowercase();
    let lost = m.contains("purged")
        || m.contains("could not find")
        || m.contains("not find first log")
        || m.contains("gtid")
        || m.contains("log event entry exceeded")
        || m.contains("binary log is not open");
    if lost {
        SourceError::history_lost(msg).with_hint(
            "the server no longer has the binlog this stream must resume from; start again \
             from the beginning (resnapshot) and raise binlog_expire_logs_seconds / \
             expire_logs_days",
        )
    } else {
        SourceError::connection(msg)
    }
}

/// Runs `sql` and maps the error.
pub(crate) async fn exec_drop(
    conn: &mut Conn,
    sql: &str,
    context: &str,
) -> Result<(), SourceError> {
    conn.query_drop(sql)
        .await
        .map_err(|e| sql_error(e, context))
}

/// Quotes an identifier with backticks.
pub(crate) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a string literal (for values that cannot be bound, e.g. in `SET @x = …`).
pub(crate) fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::ServerError;
    use powersync_source_core::ErrorKind;

    fn server(code: u16, message: &str) -> mysql_async::Error {
        mysql_async::Error::Server(ServerError {
            code,
            message: message.to_owned(),
            state: "HY000".to_owned(),
        })
    }

    /// The server's error number is the error's code, the kind follows it, and the driver's
    /// error is the cause (its text after the context), not copied into the message.
    #[test]
    fn server_errors_carry_their_number() {
        let e = sql_error(server(1045, "Access denied for user 'rep'"), "connecting");
        assert_eq!((e.kind(), e.code()), (ErrorKind::Auth, Some("1045")));
        assert_eq!(e.message(), "connecting");
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.to_string().contains("Access denied"), "{e}");

        let e = sql_error(
            server(
                1236,
                "Could not find first log file name in binary log index file",
            ),
            "starting the binlog dump",
        );
        assert_eq!((e.kind(), e.code()), (ErrorKind::HistoryLost, Some("1236")));
        let e = sql_error(server(1236, "A slave with the same server_uuid"), "dump");
        assert_eq!(e.kind(), ErrorKind::Connection);
        let e = sql_error(server(2013, "Lost connection"), "reading the binlog");
        assert!(e.is_retryable());
        assert_eq!(e.code(), Some("2013"));
    }
}
