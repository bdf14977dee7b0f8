//! The ordinary SQL connection: `tokio_postgres::Client` with this crate's TLS and errors.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use powersync_source_core::SourceError;
use tokio_postgres::config::SslMode as TpSslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::tls::{self, MakeRustlsConnect};
use super::{ConnKind, ServerError, Target};
use crate::config::{PostgresConfig, SslMode};

/// Opens an SQL connection and spawns its connection task on the current tokio runtime
/// (the task ends when the `Client` is dropped; a connection failure after startup is logged
/// with `tracing` and surfaces as errors from the `Client`).
///
/// Applies `connect_timeout` (TCP connect and the whole startup), `application_name`,
/// `client_encoding=UTF8` (tokio-postgres' default) and the TLS policy of `sslmode`:
/// `allow` connects in plain and retries with TLS if the server rejects plain; `prefer`
/// retries in plain when the TLS handshake itself fails, as libpq does.
pub(crate) async fn connect(cfg: &PostgresConfig) -> Result<Client, SourceError> {
    let target = Target::new(cfg);
    let attempt = async {
        if cfg.is_unix_socket() {
            // No TLS over Unix sockets, whatever sslmode says (as libpq).
            return connect_once(cfg, &target, TpSslMode::Disable).await;
        }
        match cfg.ssl_mode() {
            SslMode::Allow => match connect_once(cfg, &target, TpSslMode::Disable).await {
                Err(Attempt::Server(e)) if rejects_plain(&e) => {
                    connect_once(cfg, &target, TpSslMode::Require).await
                }
                r => r,
            },
            SslMode::Prefer => match connect_once(cfg, &target, TpSslMode::Prefer).await {
                Err(Attempt::Tls(_)) => connect_once(cfg, &target, TpSslMode::Disable).await,
                r => r,
            },
            SslMode::Disable => connect_once(cfg, &target, TpSslMode::Disable).await,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                connect_once(cfg, &target, TpSslMode::Require).await
            }
        }
    };
    let result = match cfg.connect_timeout() {
        Some(t) => tokio::time::timeout(t, attempt)
            .await
            .map_err(|_| super::timeout_error(&target, t.as_secs()))?,
        None => attempt.await,
    };
    result.map_err(|a| a.into_error(&target))
}

/// One failed attempt, kept structured so the caller can decide to retry differently.
enum Attempt {
    Server(ServerError),
    Tls(SourceError),
    Other(SourceError),
}

impl Attempt {
    fn into_error(self, target: &Target) -> SourceError {
        match self {
            Attempt::Server(e) => super::server_error(target, ConnKind::Sql, "connecting to", &e),
            Attempt::Tls(e) | Attempt::Other(e) => e,
        }
    }
}

fn rejects_plain(e: &ServerError) -> bool {
    e.state() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        && e.message.contains("pg_hba.conf")
        && (e.message.contains("no encryption") || e.message.contains("SSL off"))
}

async fn connect_once(
    cfg: &PostgresConfig,
    target: &Target,
    mode: TpSslMode,
) -> Result<Client, Attempt> {
    let mut tp = tokio_postgres::Config::new();
    if cfg.is_unix_socket() {
        tp.host_path(cfg.host());
    } else {
        tp.host(cfg.host());
    }
    tp.port(cfg.port())
        .user(cfg.user())
        .dbname(cfg.dbname())
        .application_name(cfg.application_name())
        .ssl_mode(mode);
    if let Some(p) = cfg.password() {
        tp.password(p.expose());
    }
    if let Some(t) = cfg.connect_timeout() {
        tp.connect_timeout(t);
    }
    tp.keepalives(true).keepalives_idle(Duration::from_secs(60));

    let tls_config = match mode {
        TpSslMode::Disable => None,
        _ => tls::client_config(cfg).map_err(Attempt::Other)?,
    };
    match tls_config {
        None => {
            let (client, conn) = tp
                .connect(NoTls)
                .await
                .map_err(|e| classify(cfg, target, e))?;
            spawn_connection(target, conn);
            Ok(client)
        }
        Some(config) => {
            let (client, conn) = tp
                .connect(MakeRustlsConnect::new(config))
                .await
                .map_err(|e| classify(cfg, target, e))?;
            spawn_connection(target, conn);
            Ok(client)
        }
    }
}

fn spawn_connection<S, T>(target: &Target, conn: tokio_postgres::Connection<S, T>)
where
    tokio_postgres::Connection<S, T>:
        std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    let where_ = target.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            let e = super::ClientError(e);
            tracing::warn!(target: "powersync_source_postgres", "SQL connection to {where_} ended: {e}");
        }
    });
}

/// Classifies a tokio-postgres connect error.
fn classify(cfg: &PostgresConfig, target: &Target, e: tokio_postgres::Error) -> Attempt {
    if let Some(db) = e.as_db_error() {
        return Attempt::Server(ServerError::from(db));
    }
    // Walk the cause chain for a rustls or io error.
    let mut cause: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(c) = cause {
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return Attempt::Tls(tls::tls_error(target, tls));
        }
        if let Some(io) = c.downcast_ref::<io::Error>() {
            if let Some(t) = tls::tls_error_from_io(target, io) {
                return Attempt::Tls(t);
            }
            // tokio-postgres wraps handshake I/O failures as "error performing TLS handshake".
            let in_tls = e.to_string().contains("TLS");
            let err = super::io_error(
                target,
                "connecting to",
                io::Error::new(io.kind(), io.to_string()),
            );
            return if in_tls {
                Attempt::Tls(err)
            } else {
                Attempt::Other(err)
            };
        }
        cause = c.source();
    }
    // The whole chain: tokio-postgres' Display leaves the cause out.
    let mut text = e.to_string();
    let mut cause: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    if text.contains("server does not support TLS") {
        return Attempt::Other(tls::no_tls_error(target, cfg.ssl_mode()));
    }
    if text.contains("password missing") {
        return Attempt::Other(SourceError::auth(format!(
            "connecting to {target}: the server asks for a password and none is configured"
        )));
    }
    if text.contains("TLS") {
        return Attempt::Tls(SourceError::connection(format!(
            "connecting to {target}: {text}"
        )));
    }
    if e.is_closed() {
        return Attempt::Other(super::eof_error(target, "connecting to"));
    }
    // tokio-postgres errors never contain the password; keep its text as the message.
    Attempt::Other(SourceError::connection(format!(
        "connecting to {target}: {text}"
    )))
}
