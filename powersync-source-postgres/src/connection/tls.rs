//! TLS with rustls (ring provider) and libpq's `sslmode` semantics.
//!
//! | `sslmode` | certificate check |
//! |---|---|
//! | `allow`, `prefer`, `require` without `sslrootcert` | none (encryption only), as libpq |
//! | `allow`, `prefer`, `require` with `sslrootcert` | chain, not host name (libpq: "like verify-ca") |
//! | `verify-ca` | chain, not host name |
//! | `verify-full` | chain and host name (subjectAltName; webpki ignores the CN) |
//!
//! Roots: the `sslrootcert` PEM file (every certificate in it), or, without one or with
//! `sslrootcert=system`, the Mozilla roots bundled by `webpki-roots`. A server certificate that
//! is itself listed in `sslrootcert` is trusted as is (the self-signed recipe of the
//! PostgreSQL manual: `cp server.crt root.crt`), which webpki alone would reject as a CA
//! certificate used as an end entity; its host name is still checked under `verify-full`.
//! A client certificate and key (`sslcert`, `sslkey`, PEM) are presented when configured.
//! ALPN `postgresql` is offered (PostgreSQL 17 accepts it, older servers ignore it).
//!
//! Errors: unreadable or empty PEM files and untrusted / wrong-host / expired server
//! certificates are `Config` errors (a retry cannot help); other handshake failures are
//! `Connection` errors.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use powersync_source_core::tls::{web_pki_roots, CertCheck, CertVerifier};
use powersync_source_core::SourceError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Target;
use crate::config::{PostgresConfig, SslMode};

/// The rustls client configuration for `cfg`, or `None` under `sslmode=disable`.
pub(crate) fn client_config(
    cfg: &PostgresConfig,
) -> Result<Option<Arc<ClientConfig>>, SourceError> {
    if cfg.ssl_mode() == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let root_file = cfg.ssl_root_cert().filter(|p| *p != Path::new("system"));
    let check = match cfg.ssl_mode() {
        SslMode::VerifyFull => CertCheck::ChainAndName,
        SslMode::VerifyCa => CertCheck::Chain,
        // libpq: with a root certificate, the weaker modes verify the chain too.
        _ if cfg.ssl_root_cert().is_some() => CertCheck::Chain,
        _ => CertCheck::Nothing,
    };
    let (roots, pinned) = match (check, root_file) {
        (CertCheck::Nothing, _) => (RootCertStore::empty(), Vec::new()),
        (_, Some(path)) => {
            let certs = read_certs(path, "sslrootcert")?;
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(certs.iter().cloned());
            if added == 0 {
                return Err(SourceError::config(format!(
                    "sslrootcert {}: no usable certificate in the file",
                    path.display()
                )));
            }
            (store, certs)
        }
        (_, None) => (web_pki_roots(), Vec::new()),
    };
    let verifier = Arc::new(
        CertVerifier::new(check, roots, pinned, provider.clone()).map_err(|e| {
            SourceError::config("could not set up TLS certificate checks").with_source(e)
        })?,
    );
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SourceError::config("could not set up TLS").with_source(e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (cfg.ssl_cert(), cfg.ssl_key()) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "sslcert")?;
            if chain.is_empty() {
                return Err(SourceError::config(format!(
                    "sslcert {}: no certificate in the file",
                    cert.display()
                )));
            }
            let key = read_key(key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                SourceError::config(format!(
                    "sslcert/sslkey ({}): unusable client certificate or key",
                    cert.display()
                ))
                .with_source(e)
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The TLS server name for `host` (an IP address or a DNS name).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, SourceError> {
    ServerName::try_from(host.to_string()).map_err(|_| {
        SourceError::config(format!(
            "host \"{host}\" is not a valid DNS name or IP address for TLS"
        ))
    })
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, SourceError> {
    let data = std::fs::read(path).map_err(|e| {
        SourceError::config(format!("{what} {}: cannot read file", path.display())).with_source(e)
    })?;
    rustls_pemfile::certs(&mut &data[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            SourceError::config(format!("{what} {}: invalid PEM", path.display())).with_source(e)
        })
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, SourceError> {
    let data = std::fs::read(path).map_err(|e| {
        SourceError::config(format!("sslkey {}: cannot read file", path.display())).with_source(e)
    })?;
    // Never echo the key material: only the path and the parser's error kind.
    rustls_pemfile::private_key(&mut &data[..])
        .map_err(|_| SourceError::config(format!("sslkey {}: invalid PEM", path.display())))?
        .ok_or_else(|| {
            SourceError::config(format!(
                "sslkey {}: no unencrypted private key (PKCS#8, PKCS#1 or SEC1 PEM) in the file",
                path.display()
            ))
        })
}

/// Turns a TLS failure hidden in an `io::Error` (as tokio-rustls reports them) into a
/// `Config` error (certificate problems) or `Connection` error (anything else).
/// `None` if `err` does not carry a rustls error.
pub(crate) fn tls_error_from_io(target: &Target, err: &io::Error) -> Option<SourceError> {
    let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(tls_error(target, tls))
}

pub(crate) fn tls_error(target: &Target, err: &rustls::Error) -> SourceError {
    let msg = format!("TLS handshake with {target} failed: {err}");
    match err {
        rustls::Error::InvalidCertificate(_) => SourceError::config(msg).with_hint(
            "the server certificate is not trusted for this host: set sslrootcert to the CA \
             that issued it, use verify-ca to skip the host-name check, or check the host name",
        ),
        rustls::Error::PeerIncompatible(_) | rustls::Error::NoCertificatesPresented => {
            SourceError::config(msg)
        }
        _ => SourceError::connection(msg),
    }
}

/// The error for a server that answers `N` to SSLRequest when TLS is required.
pub(crate) fn no_tls_error(target: &Target, mode: SslMode) -> SourceError {
    SourceError::config(format!(
        "server {target} does not support TLS, but sslmode={mode} requires it"
    ))
    .with_hint("enable ssl on the server, or use sslmode=prefer / disable")
}

// ---- tokio-postgres glue ----

/// `tokio_postgres::tls::MakeTlsConnect` over the rustls configuration above.
#[derive(Clone)]
pub(crate) struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for MakeRustlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MakeRustlsConnect")
    }
}

impl MakeRustlsConnect {
    pub(crate) fn new(config: Arc<ClientConfig>) -> Self {
        MakeRustlsConnect { config }
    }
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        // An empty domain (Unix socket) never reaches the handshake.
        Ok(RustlsConnect {
            config: self.config.clone(),
            domain: domain.to_string(),
        })
    }
}

/// One TLS handshake for tokio-postgres.
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
    domain: String,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = ServerName::try_from(self.domain)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

/// A TLS stream for tokio-postgres.
pub(crate) struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        // SCRAM-SHA-256-PLUS is not offered: tokio-postgres then uses SCRAM-SHA-256.
        tokio_postgres::tls::ChannelBinding::none()
    }
}
