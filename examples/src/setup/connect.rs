//! The administrative SQL connection: tokio-postgres with rustls and libpq's `sslmode`.
//!
//! The connector's own connection code is private to it, so this is a small copy of its policy:
//!
//! | `sslmode` | TLS | certificate |
//! |---|---|---|
//! | `disable` | never | – |
//! | `allow`, `prefer` | when the server offers it, else plain | checked only with `sslrootcert` (chain) |
//! | `require` | always | checked only with `sslrootcert` (chain) |
//! | `verify-ca` | always | chain |
//! | `verify-full` | always | chain and host name |
//!
//! Roots: `sslrootcert` (a PEM file; a certificate listed there is also trusted as the server's
//! own), else the Mozilla roots of webpki-roots. `sslcert`/`sslkey` give a client certificate.
//! Unix sockets never use TLS. Errors never show the password.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use powersync_source_core::SourceError;
use powersync_source_postgres::{PgConfig, SslMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode as TpSslMode;
use tokio_postgres::{Client, NoTls};

/// Opens the SQL connection `cfg` describes; its connection task runs on the current runtime.
pub async fn connect(cfg: &PgConfig) -> Result<Client, SourceError> {
    let attempt = async {
        if cfg.is_unix_socket() {
            return connect_once(cfg, TpSslMode::Disable).await;
        }
        match cfg.ssl_mode() {
            SslMode::Disable => connect_once(cfg, TpSslMode::Disable).await,
            SslMode::Allow | SslMode::Prefer => match connect_once(cfg, TpSslMode::Prefer).await {
                Err(Failure::Tls(_)) => connect_once(cfg, TpSslMode::Disable).await,
                r => r,
            },
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                connect_once(cfg, TpSslMode::Require).await
            }
        }
    };
    let result = match cfg.connect_timeout() {
        Some(t) => tokio::time::timeout(t, attempt).await.map_err(|_| {
            SourceError::connection(format!(
                "connecting to {}: no answer within {} s",
                cfg.endpoint(),
                t.as_secs()
            ))
        })?,
        None => attempt.await,
    };
    result.map_err(Failure::into_error)
}

enum Failure {
    Tls(SourceError),
    Other(SourceError),
}

impl Failure {
    fn into_error(self) -> SourceError {
        match self {
            Failure::Tls(e) | Failure::Other(e) => e,
        }
    }
}

async fn connect_once(cfg: &PgConfig, mode: TpSslMode) -> Result<Client, Failure> {
    let mut tp = tokio_postgres::Config::new();
    if cfg.is_unix_socket() {
        tp.host_path(cfg.host());
    } else {
        tp.host(cfg.host());
    }
    tp.port(cfg.port())
        .user(cfg.user())
        .dbname(cfg.dbname())
        .application_name("powersync-setup")
        .ssl_mode(mode)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(60));
    if let Some(p) = cfg.password() {
        tp.password(p.expose());
    }
    if let Some(t) = cfg.connect_timeout() {
        tp.connect_timeout(t);
    }
    let endpoint = cfg.endpoint();
    if mode == TpSslMode::Disable {
        let (client, conn) = tp
            .connect(NoTls)
            .await
            .map_err(|e| classify(cfg, &endpoint, e))?;
        spawn(conn);
        Ok(client)
    } else {
        let config = client_config(cfg).map_err(Failure::Other)?;
        let (client, conn) = tp
            .connect(MakeRustls { config })
            .await
            .map_err(|e| classify(cfg, &endpoint, e))?;
        spawn(conn);
        Ok(client)
    }
}

fn spawn<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    tokio_postgres::Connection<S, T>:
        Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("admin connection ended: {e}");
        }
    });
}

/// A connect error as a [`SourceError`] of the right kind: rejected credentials are `Auth`,
/// a missing database or TLS policy problems `Config`, the rest `Connection`.
fn classify(cfg: &PgConfig, endpoint: &str, e: tokio_postgres::Error) -> Failure {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let msg = format!("connecting to {endpoint} as {}: {}", cfg.user(), db.message());
        let err = match code {
            "28P01" | "28000" => SourceError::auth(msg).with_hint(
                "check the user name and password in the URL (and pg_hba.conf / the provider's \
                 network rules)",
            ),
            "3D000" => SourceError::config(msg),
            "42501" => SourceError::auth(msg),
            _ => SourceError::connection(msg),
        };
        return Failure::Other(err);
    }
    let mut text = e.to_string();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    let mut is_tls = false;
    while let Some(c) = cause {
        if c.downcast_ref::<rustls::Error>().is_some() {
            is_tls = true;
        }
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    if text.contains("server does not support TLS") {
        return Failure::Other(
            SourceError::config(format!(
                "server {endpoint} does not support TLS, but sslmode={} requires it",
                cfg.ssl_mode()
            ))
            .with_hint("use sslmode=prefer or disable, or enable ssl on the server"),
        );
    }
    if text.contains("password missing") {
        return Failure::Other(SourceError::auth(format!(
            "connecting to {endpoint}: the server asks for a password and the URL has none"
        )));
    }
    let err = SourceError::connection(format!("connecting to {endpoint}: {text}"));
    if is_tls || text.contains("TLS") || text.contains("certificate") {
        if text.contains("certificate") || text.contains("InvalidCertificate") {
            return Failure::Other(SourceError::config(format!(
                "connecting to {endpoint}: {text}"
            )).with_hint(
                "the server certificate is not trusted for this host: set sslrootcert to the \
                 CA that issued it, or use sslmode=verify-ca / require",
            ));
        }
        return Failure::Tls(err);
    }
    Failure::Other(err)
}

// ---- rustls configuration ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

fn client_config(cfg: &PgConfig) -> Result<Arc<ClientConfig>, SourceError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let root_file = cfg.ssl_root_cert().filter(|p| *p != Path::new("system"));
    let check = match cfg.ssl_mode() {
        SslMode::VerifyFull => Check::ChainAndName,
        SslMode::VerifyCa => Check::Chain,
        _ if cfg.ssl_root_cert().is_some() => Check::Chain,
        _ => Check::Nothing,
    };
    let (webpki, pinned) = if check == Check::Nothing {
        (None, Vec::new())
    } else {
        let (roots, pinned) = match root_file {
            Some(path) => {
                let certs = read_certs(path, "sslrootcert")?;
                let mut store = RootCertStore::empty();
                let (added, _) = store.add_parsable_certificates(certs.iter().cloned());
                if added == 0 {
                    return Err(SourceError::config(format!(
                        "sslrootcert {}: no usable certificate in the file",
                        path.display()
                    )));
                }
                (store, certs)
            }
            None => (
                RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
                Vec::new(),
            ),
        };
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| SourceError::config(format!("cannot set up TLS checks: {e}")))?;
        (Some(verifier), pinned)
    };
    let verifier = Arc::new(Verifier {
        check,
        webpki,
        pinned,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SourceError::config(format!("cannot set up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (cfg.ssl_cert(), cfg.ssl_key()) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "sslcert")?;
            let key = read_key(key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                SourceError::config(format!(
                    "sslcert/sslkey ({}): unusable client certificate or key: {e}",
                    cert.display()
                ))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, SourceError> {
    let data = std::fs::read(path).map_err(|e| {
        SourceError::config(format!("{what} {}: cannot read file: {e}", path.display()))
    })?;
    rustls_pemfile::certs(&mut &data[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SourceError::config(format!("{what} {}: invalid PEM: {e}", path.display())))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, SourceError> {
    let data = std::fs::read(path).map_err(|e| {
        SourceError::config(format!("sslkey {}: cannot read file: {e}", path.display()))
    })?;
    rustls_pemfile::private_key(&mut &data[..])
        .map_err(|_| SourceError::config(format!("sslkey {}: invalid PEM", path.display())))?
        .ok_or_else(|| {
            SourceError::config(format!(
                "sslkey {}: no unencrypted private key in the file",
                path.display()
            ))
        })
}

struct Verifier {
    check: Check,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier").field("check", &self.check).finish()
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(v) => Ok(v),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.check == Check::Chain => Ok(ServerCertVerified::assertion()),
            Err(e) => {
                if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
                    if self.check == Check::ChainAndName {
                        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                        rustls::client::verify_server_name(&parsed, server_name)?;
                    }
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(e)
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// ---- tokio-postgres glue ----

#[derive(Clone)]
struct MakeRustls {
    config: Arc<ClientConfig>,
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        Ok(RustlsConnect {
            config: self.config.clone(),
            domain: domain.to_string(),
        })
    }
}

struct RustlsConnect {
    config: Arc<ClientConfig>,
    domain: String,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = ServerName::try_from(self.domain)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await?;
            Ok(TlsStream(Box::new(tls)))
        })
    }
}

struct TlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
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
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}
