//! The socket under a connection (TCP, TLS over TCP, Unix) and the TLS negotiation of
//! `sslmode`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use powersync_source_core::SourceError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{tls, ConnKind, ServerError, Target};
use crate::config::PostgresConfig;

/// The socket under a connection: plain TCP, TLS over TCP, or a Unix socket.
pub(super) enum PgStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            #[cfg(unix)]
            PgStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            #[cfg(unix)]
            PgStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            #[cfg(unix)]
            PgStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            #[cfg(unix)]
            PgStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// How to ask for TLS on a TCP connection (from `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Negotiate {
    Plain,
    Preferred,
    Required,
}

/// Why one connection attempt failed, kept structured so `sslmode` `allow`/`prefer` can retry
/// differently.
pub(super) enum Failure {
    /// The server's ErrorResponse during startup.
    Server(ServerError),
    /// The TLS handshake failed (under `prefer`, libpq then retries in plain).
    Tls(SourceError),
    Other(SourceError),
}

impl Failure {
    pub(super) fn into_error(self, target: &Target) -> SourceError {
        match self {
            Failure::Server(e) => {
                super::server_error(target, ConnKind::Replication, "connecting to", &e)
            }
            Failure::Tls(e) | Failure::Other(e) => e,
        }
    }
}

impl From<SourceError> for Failure {
    fn from(e: SourceError) -> Self {
        Failure::Other(e)
    }
}
/// Opens the TCP or Unix socket.
pub(super) async fn open_socket(
    cfg: &PostgresConfig,
    target: &Target,
) -> Result<PgStream, SourceError> {
    let doing = "connecting to";
    if cfg.is_unix_socket() {
        #[cfg(unix)]
        {
            let path = cfg.endpoint();
            return tokio::net::UnixStream::connect(&path)
                .await
                .map(PgStream::Unix)
                .map_err(|e| super::io_error(target, doing, e));
        }
        #[cfg(not(unix))]
        return Err(SourceError::config(
            "Unix sockets are not available on this platform",
        ));
    }
    let tcp = TcpStream::connect((cfg.host(), cfg.port()))
        .await
        .map_err(|e| super::io_error(target, doing, e))?;
    let _ = tcp.set_nodelay(true);
    Ok(PgStream::Plain(tcp))
}

/// Sends SSLRequest and runs the TLS handshake when `how` asks for it (never on a Unix socket).
pub(super) async fn negotiate_tls(
    cfg: &PostgresConfig,
    target: &Target,
    stream: PgStream,
    how: Negotiate,
) -> Result<PgStream, Failure> {
    let tcp = match stream {
        PgStream::Plain(tcp) if how != Negotiate::Plain => tcp,
        other => return Ok(other), // plain by choice, or a Unix socket (never TLS, as libpq)
    };
    let Some(config) = tls::client_config(cfg)? else {
        return Ok(PgStream::Plain(tcp));
    };
    let doing = "negotiating TLS with";
    let mut tcp = tcp;
    let mut req = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut req);
    tcp.write_all(&req)
        .await
        .map_err(|e| super::io_error(target, doing, e))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| super::io_error(target, doing, e))?;
    match answer[0] {
        b'S' => {}
        b'N' if how == Negotiate::Preferred => return Ok(PgStream::Plain(tcp)),
        b'N' => return Err(Failure::Other(tls::no_tls_error(target, cfg.ssl_mode()))),
        b'E' => {
            return Err(Failure::Other(SourceError::unsupported(format!(
                "{doing} {target}: the server rejected the SSLRequest (server too old?)"
            ))))
        }
        other => {
            return Err(Failure::Other(SourceError::decode(format!(
                "{doing} {target}: unexpected answer {other:#04x} to SSLRequest"
            ))))
        }
    }
    let name = tls::server_name(cfg.host())?;
    match tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    {
        Ok(s) => Ok(PgStream::Tls(Box::new(s))),
        Err(e) => Err(Failure::Tls(super::io_error(target, doing, e))),
    }
}
