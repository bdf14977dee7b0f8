//! Authentication of the replication connection: trust, cleartext password, MD5 and
//! SCRAM-SHA-256 (messages and SCRAM from `postgres-protocol`).

use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use powersync_source_core::SourceError;

use super::socket::Failure;
use super::wire::{self, unexpected, Wire};
use crate::config::PostgresConfig;

/// Runs the authentication exchange until AuthenticationOk.
pub(super) async fn authenticate(cfg: &PostgresConfig, wire: &mut Wire) -> Result<(), Failure> {
    let doing = "authenticating to";
    let target = wire.target.clone();
    let password = || {
        cfg.password()
            .map(|p| p.expose().as_bytes())
            .ok_or_else(|| {
                Failure::Other(SourceError::auth(format!(
                    "{doing} {target}: the server asks for a password and none is configured"
                )))
            })
    };
    loop {
        let (tag, body) = wire.next_message(doing).await?;
        match tag {
            b'E' => return Err(Failure::Server(wire::parse_error_fields(&body))),
            b'N' => wire.log_notice(&body),
            b'v' => {}
            b'R' => {
                let mut r = wire::Reader::new(&body, "Authentication");
                match r.i32()? {
                    0 => return Ok(()),
                    3 => {
                        frontend::password_message(password()?, &mut wire.wbuf)
                            .map_err(|e| SourceError::config("invalid password").with_source(e))?;
                        wire.flush(doing).await?;
                    }
                    5 => {
                        let salt = r.take(4)?;
                        let hash = md5_hash(
                            cfg.user().as_bytes(),
                            password()?,
                            [salt[0], salt[1], salt[2], salt[3]],
                        );
                        frontend::password_message(hash.as_bytes(), &mut wire.wbuf).map_err(
                            |e| SourceError::decode("encoding the MD5 password").with_source(e),
                        )?;
                        wire.flush(doing).await?;
                    }
                    10 => scram(wire, r.rest(), password()?).await?,
                    code => {
                        let method = match code {
                            2 => "Kerberos V5",
                            6 => "SCM credentials",
                            7 | 8 => "GSSAPI",
                            9 => "SSPI",
                            _ => "an unknown method",
                        };
                        return Err(SourceError::unsupported(format!(
                            "{doing} {target}: the server asks for {method} authentication \
                             (code {code}); supported: trust, password, md5, scram-sha-256"
                        ))
                        .into());
                    }
                }
            }
            other => return Err(unexpected(&target, doing, other).into()),
        }
    }
}

/// SCRAM-SHA-256 (without channel binding) after AuthenticationSASL.
async fn scram(wire: &mut Wire, mechanisms: &[u8], password: &[u8]) -> Result<(), Failure> {
    let doing = "authenticating (SCRAM) to";
    let target = wire.target.clone();
    let mut offered = Vec::new();
    let mut r = wire::Reader::new(mechanisms, "AuthenticationSASL");
    while !r.is_empty() {
        let m = r.cstr()?;
        if m.is_empty() {
            break;
        }
        offered.push(m);
    }
    if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
        return Err(SourceError::unsupported(format!(
            "{doing} {target}: the server offers SASL mechanisms {offered:?}; supported: {}",
            sasl::SCRAM_SHA_256
        ))
        .into());
    }
    let mut scram = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut wire.wbuf)
        .map_err(|e| SourceError::decode("encoding the SASL initial response").with_source(e))?;
    wire.flush(doing).await?;

    let continue_data = expect_auth(wire, doing, 11).await?;
    scram.update(&continue_data).map_err(|e| {
        SourceError::auth(format!("{doing} {target}: invalid SCRAM server message")).with_source(e)
    })?;
    frontend::sasl_response(scram.message(), &mut wire.wbuf)
        .map_err(|e| SourceError::decode("encoding the SASL response").with_source(e))?;
    wire.flush(doing).await?;

    let final_data = expect_auth(wire, doing, 12).await?;
    scram.finish(&final_data).map_err(|e| {
        SourceError::auth(format!(
            "{doing} {target}: the server's SCRAM signature did not verify"
        ))
        .with_source(e)
        .with_hint("the server may not be who it claims to be")
    })?;
    Ok(())
}

/// Waits for an Authentication message of `code` and returns its data.
async fn expect_auth(wire: &mut Wire, doing: &str, code: i32) -> Result<Vec<u8>, Failure> {
    loop {
        let (tag, body) = wire.next_message(doing).await?;
        match tag {
            b'E' => return Err(Failure::Server(wire::parse_error_fields(&body))),
            b'N' => wire.log_notice(&body),
            b'R' => {
                let mut r = wire::Reader::new(&body, "Authentication");
                let got = r.i32()?;
                if got != code {
                    return Err(SourceError::decode(format!(
                        "{doing} {}: expected authentication message {code}, got {got}",
                        wire.target
                    ))
                    .into());
                }
                return Ok(r.rest().to_vec());
            }
            other => return Err(unexpected(&wire.target, doing, other).into()),
        }
    }
}
