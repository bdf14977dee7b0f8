//! The connection phase: the server's greeting, the TLS upgrade, the handshake response and
//! the authentication exchange
//! (<https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html>,
//! caching_sha2_password: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html>).

use std::io;
use std::time::Duration;

use mysql_async::Error;
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    AuthPlugin, AuthSwitchRequest, HandshakePacket, HandshakeResponse, SslRequest,
};
use mysql_common::proto::MySerialize;
use tokio::net::TcpStream;

use super::framing::{invalid, Framed};
use super::{server_error, tls};
use crate::config::MySqlConfig;

/// What the client asks for; the session gets what the server also offers.
const CLIENT_CAPS: CapabilityFlags = CapabilityFlags::CLIENT_PROTOCOL_41
    .union(CapabilityFlags::CLIENT_SECURE_CONNECTION)
    .union(CapabilityFlags::CLIENT_LONG_PASSWORD)
    .union(CapabilityFlags::CLIENT_LONG_FLAG)
    .union(CapabilityFlags::CLIENT_TRANSACTIONS)
    .union(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA);
const MAX_PACKET: u32 = 16 * 1024 * 1024;
/// utf8mb4_general_ci: the connection character set until `SET NAMES utf8mb4`.
const UTF8MB4_GENERAL_CI: u8 = 45;

/// Opens a TCP connection and authenticates; returns the framed stream and the session's
/// capabilities.
pub(super) async fn open(config: &MySqlConfig) -> Result<(Framed, CapabilityFlags), Error> {
    let tcp = TcpStream::connect((config.host.as_str(), config.port)).await?;
    tcp.set_nodelay(true)?;
    // A server that vanishes mid-snapshot is noticed like on the driver's connections.
    socket2::SockRef::from(&tcp)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(10)))?;
    let mut framed = Framed::new(Box::new(tcp));

    let greeting = framed.read_packet().await?;
    if greeting.first() == Some(&0xFF) {
        // Too many connections, host blocked, …: sent before any capability is agreed.
        return Err(server_error(greeting, CapabilityFlags::empty()));
    }
    let hello: HandshakePacket<'_> = ParseBuf(greeting).parse(())?;
    let mut nonce = hello.scramble_1_ref().to_vec();
    nonce.extend_from_slice(hello.scramble_2_ref().unwrap_or_default());
    // The scramble is 20 bytes; the greeting's second part carries a terminating NUL.
    nonce.resize(20, 0);
    let version = hello
        .maria_db_server_version_parsed()
        .or_else(|| hello.server_version_parsed())
        .unwrap_or((0, 0, 0));
    let mut plugin = match hello.auth_plugin() {
        Some(AuthPlugin::CachingSha2Password) => AuthPlugin::CachingSha2Password,
        _ => AuthPlugin::MysqlNativePassword,
    };
    let tls_config = tls::client_config(config.ssl_mode).map_err(io::Error::other)?;
    let mut caps = hello.capabilities() & CLIENT_CAPS;
    if let Some(tls_config) = &tls_config {
        if !hello.capabilities().contains(CapabilityFlags::CLIENT_SSL) {
            return Err(invalid("ssl-mode asks for TLS but the server does not offer it").into());
        }
        caps |= CapabilityFlags::CLIENT_SSL;
        let mut request = Vec::new();
        SslRequest::new(caps, MAX_PACKET, UTF8MB4_GENERAL_CI).serialize(&mut request);
        framed.write_packet(&request).await?;
        let name = tls::server_name(&config.host)
            .ok_or_else(|| invalid("the host is not a valid name for TLS"))?;
        let plain = framed.take_io()?;
        let secure = tokio_rustls::TlsConnector::from(tls_config.clone())
            .connect(name, plain)
            .await?;
        framed.set_io(Box::new(secure));
    }
    let secure = tls_config.is_some();

    let password = config.password.as_ref().map(|p| p.expose());
    let auth_data = plugin.gen_data(password, &nonce);
    let database = Some(config.database.as_bytes()).filter(|d| !d.is_empty());
    let response = HandshakeResponse::new(
        auth_data.as_ref().map(|d| {
            let mut b = Vec::new();
            d.serialize(&mut b);
            b
        }),
        version,
        Some(config.user.as_bytes()),
        database,
        Some(plugin.clone()),
        caps,
        None,
        MAX_PACKET,
    );
    let mut body = Vec::new();
    response.serialize(&mut body);
    framed.write_packet(&body).await?;

    let mut switched = false;
    loop {
        let packet = framed.read_packet().await?;
        match packet.first() {
            Some(0x00) => return Ok((framed, caps)),
            Some(0xFF) => return Err(server_error(packet, caps)),
            Some(0xFE) if !switched => {
                // Authentication switch: another plugin, a new scramble.
                switched = true;
                let switch: AuthSwitchRequest<'_> = ParseBuf(packet).parse(())?;
                plugin = match switch.auth_plugin() {
                    AuthPlugin::MysqlNativePassword => AuthPlugin::MysqlNativePassword,
                    AuthPlugin::CachingSha2Password => AuthPlugin::CachingSha2Password,
                    other => {
                        return Err(invalid(&format!(
                            "the server asks for the authentication plugin {}, which the \
                             snapshot reader does not speak",
                            String::from_utf8_lossy(other.as_bytes())
                        ))
                        .into())
                    }
                };
                nonce = switch.plugin_data().to_vec();
                let mut data = Vec::new();
                if let Some(d) = plugin.gen_data(password, &nonce) {
                    d.serialize(&mut data);
                }
                framed.write_packet(&data).await?;
            }
            Some(0x01) if matches!(plugin, AuthPlugin::CachingSha2Password) => {
                match packet.get(1) {
                    // Fast authentication succeeded; the OK packet follows.
                    Some(0x03) => {}
                    // Full authentication: the password itself, never in clear on a plain
                    // connection.
                    Some(0x04) => {
                        let mut secret = password.unwrap_or_default().as_bytes().to_vec();
                        secret.push(0);
                        if secure {
                            framed.write_packet(&secret).await?;
                        } else {
                            framed.write_packet(&[0x02]).await?;
                            let key = framed.read_packet().await?;
                            let key = key
                                .get(1..)
                                .filter(|_| key.first() == Some(&0x01))
                                .ok_or_else(|| invalid("malformed public key packet"))?
                                .to_vec();
                            for (i, b) in secret.iter_mut().enumerate() {
                                *b ^= nonce[i % nonce.len()];
                            }
                            // mysql_common panics on a key it cannot parse or use: that is
                            // the server's input, so it becomes an error here.
                            let sealed = std::panic::catch_unwind(|| {
                                mysql_common::crypto::encrypt(&secret, &key)
                            })
                            .map_err(|_| invalid("the server's RSA public key is unusable"))?;
                            framed.write_packet(&sealed).await?;
                        }
                    }
                    _ => return Err(invalid("unexpected caching_sha2_password packet").into()),
                }
            }
            _ => return Err(invalid("unexpected packet during authentication").into()),
        }
    }
}
