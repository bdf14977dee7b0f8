//! TLS for the snapshot reader's connection, with the same checks as the connector's other
//! connections (mysql_async with rustls): the Mozilla roots of `webpki-roots`; `ssl-mode=
//! verify_identity` checks the chain and the host name, `required`/`verify_ca` the chain only.

use std::sync::Arc;

use powersync_source_core::tls::{web_pki_roots, CertCheck, CertVerifier};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::config::SslMode;

/// The rustls configuration for `mode`, or `None` when TLS is off.
pub(crate) fn client_config(mode: SslMode) -> Result<Option<Arc<ClientConfig>>, rustls::Error> {
    let check = match mode {
        SslMode::Disabled => return Ok(None),
        SslMode::VerifyCa => CertCheck::Chain,
        SslMode::VerifyIdentity => CertCheck::ChainAndName,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = CertVerifier::new(check, web_pki_roots(), Vec::new(), provider.clone())
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

/// The TLS server name for `host` (an IP address or a DNS name).
pub(crate) fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_string()).ok()
}
