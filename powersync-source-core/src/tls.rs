//! Server certificate checks for the connectors' TLS connections (rustls with the ring
//! provider), one verifier for every connector's modes: PostgreSQL's `sslmode` and MySQL's
//! `ssl-mode` differ in names and defaults, not in what a check is.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertCheck {
    /// Encryption only: any certificate (handshake signatures are still verified).
    Nothing,
    /// The chain up to a trusted root; a certificate issued for another host name passes.
    Chain,
    /// The chain and the host name (subjectAltName; webpki ignores the common name).
    ChainAndName,
}

/// The Mozilla roots bundled by `webpki-roots`.
pub fn web_pki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// A [`ServerCertVerifier`] for a [`CertCheck`]: webpki's verification against `roots`, with
/// a name mismatch forgiven under [`CertCheck::Chain`], and `pinned` certificates trusted as
/// end entities when the server presents one of them (a self-signed server certificate
/// listed as a root, which webpki alone rejects as a CA used as an end entity); a pinned
/// certificate's host name is still checked under [`CertCheck::ChainAndName`].
pub struct CertVerifier {
    check: CertCheck,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl CertVerifier {
    /// A verifier for `check` with the trust anchors `roots` (unused under
    /// [`CertCheck::Nothing`]). Fails when `roots` is empty for a checking mode.
    pub fn new(
        check: CertCheck,
        roots: RootCertStore,
        pinned: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, rustls::client::VerifierBuilderError> {
        let webpki = match check {
            CertCheck::Nothing => None,
            _ => Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()?,
            ),
        };
        Ok(CertVerifier {
            check,
            webpki,
            pinned,
            provider,
        })
    }
}

impl fmt::Debug for CertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertVerifier")
            .field("check", &self.check)
            .field("pinned", &self.pinned.len())
            .finish()
    }
}

impl ServerCertVerifier for CertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Ok(v) => Ok(v),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.check == CertCheck::Chain => Ok(ServerCertVerified::assertion()),
            Err(e) => {
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref())
                {
                    if self.check == CertCheck::ChainAndName {
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
