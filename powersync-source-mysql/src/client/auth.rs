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
    let tls_config = tls::client_config(config).map_err(io::Error::other)?;
    let database = Some(config.database.as_bytes()).filter(|d| !d.is_empty());
    let mut caps = hello.capabilities() & CLIENT_CAPS;
    if database.is_some() {
        // Announced in the SSL request as in the handshake response (which sets it too).
        caps |= CapabilityFlags::CLIENT_CONNECT_WITH_DB;
    }
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

/// The exchanges against a scripted server. Each script follows the MySQL manual's connection
/// phase
/// (<https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html>):
/// the greeting (HandshakeV10) names the server's default plugin and carries a 20-byte
/// scramble; an AuthSwitchRequest (0xFE, plugin name, new scramble with a NUL) restarts with
/// another plugin; caching_sha2_password answers the client's scramble with 0x01 0x03 (fast
/// authentication done) or 0x01 0x04 (full authentication), after which a client on a plain
/// connection asks for the server's RSA key with 0x02 and gets 0x01 + the PEM key
/// (<https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html>).
/// Expected scrambles are computed here from the manual's formulas, not by the library the
/// client uses: mysql_native_password is SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password)))
/// (<https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_authentication_methods_native_password_authentication.html>),
/// caching_sha2_password is SHA256(password) XOR SHA256(SHA256(SHA256(password)) + scramble).
#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::constants::StatusFlags;
    use mysql_common::packets::HandshakePacket;
    use sha1::Digest as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const PASSWORD: &str = "p\u{e4}ss-w0rd";
    /// A 2048-bit RSA public key (SubjectPublicKeyInfo PEM, as the server sends it).
    const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAmuK8a5XNv+A4VgReA9a6
hpcpogfqUO8e3DsyH+F8GCJO82tolks1+1Of2CRy/p4s+CqHZbtmK8kp/ugrFnUq
HR6kUxu/0dHlfhe4cBkDbGeICOquK5odrqEqEaxlk5nw5jvlIXf7T4FZh7TlV3Cl
3a7puFELFaCHuggBopnzxZ0i4ss+uHbZNZmeDXaBKgXiDo1PSYhHl5MoGhrjrnCU
v8m8f1sM2YY99OnQrmDyqKJzs2CeePCX0ctAb+VLHuOmbIspBi2XSDdfwJgpummf
z7Bf7KFMvWaJBVHv0mL+0Y9z+s0i8cfpMxCjZ7t9wCDN8ahyCy4gPEM+QaYS7cTu
hQIDAQAB
-----END PUBLIC KEY-----\n";

    fn native(password: &[u8], scramble: &[u8]) -> Vec<u8> {
        let p1 = sha1::Sha1::digest(password);
        let p2 = sha1::Sha1::digest(p1);
        let mut h = sha1::Sha1::new();
        h.update(scramble);
        h.update(p2);
        let x = h.finalize();
        p1.iter().zip(x.iter()).map(|(a, b)| a ^ b).collect()
    }

    fn sha2(password: &[u8], scramble: &[u8]) -> Vec<u8> {
        let p1 = sha2::Sha256::digest(password);
        let p2 = sha2::Sha256::digest(p1);
        let mut h = sha2::Sha256::new();
        h.update(p2);
        h.update(scramble);
        let x = h.finalize();
        p1.iter().zip(x.iter()).map(|(a, b)| a ^ b).collect()
    }

    struct Peer {
        s: TcpStream,
        seq: u8,
    }

    impl Peer {
        async fn send(&mut self, payload: &[u8]) {
            let mut p = (payload.len() as u32).to_le_bytes()[..3].to_vec();
            p.push(self.seq);
            p.extend_from_slice(payload);
            self.s.write_all(&p).await.unwrap();
            self.seq = self.seq.wrapping_add(1);
        }

        async fn recv(&mut self) -> Option<Vec<u8>> {
            let mut h = [0u8; 4];
            self.s.read_exact(&mut h).await.ok()?;
            assert_eq!(h[3], self.seq, "client sequence id");
            self.seq = self.seq.wrapping_add(1);
            let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
            let mut p = vec![0; len];
            self.s.read_exact(&mut p).await.ok()?;
            Some(p)
        }
    }

    const SCRAMBLE: [u8; 20] = *b"abcdefgh01234567890A";

    fn greeting(plugin: &[u8]) -> Vec<u8> {
        let caps = CLIENT_CAPS | CapabilityFlags::CLIENT_CONNECT_WITH_DB;
        let mut second = SCRAMBLE[8..].to_vec();
        second.push(0);
        let mut out = Vec::new();
        HandshakePacket::new(
            10,
            &b"8.0.36"[..],
            7,
            SCRAMBLE[..8].try_into().unwrap(),
            Some(second),
            caps,
            45,
            StatusFlags::empty(),
            Some(plugin),
        )
        .serialize(&mut out);
        out
    }

    /// The auth response at the end of a HandshakeResponse41 (protocol 4.1, lenenc auth data).
    fn auth_response(packet: &[u8], user: &str) -> Vec<u8> {
        // caps(4) max packet(4) charset(1) filler(23) user NUL, then lenenc auth data.
        let rest = &packet[32..];
        assert_eq!(&rest[..user.len()], user.as_bytes());
        let rest = &rest[user.len() + 1..];
        let n = usize::from(rest[0]);
        rest[1..1 + n].to_vec()
    }

    async fn scripted<F, Fut>(script: F) -> Result<(Framed, CapabilityFlags), Error>
    where
        F: FnOnce(Peer) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            script(Peer { s, seq: 0 }).await;
        });
        let config =
            MySqlConfig::parse(&format!("mysql://app:p%C3%A4ss-w0rd@127.0.0.1:{port}/shop"))
                .unwrap();
        let result = open(&config).await;
        server.await.unwrap();
        result
    }

    #[tokio::test]
    async fn switch_to_native_password() {
        let result = scripted(|mut p| async move {
            p.send(&greeting(b"caching_sha2_password")).await;
            let response = p.recv().await.unwrap();
            assert_eq!(
                auth_response(&response, "app"),
                sha2(PASSWORD.as_bytes(), &SCRAMBLE)
            );
            let fresh = *b"ZYXWVUTSRQ9876543210";
            let mut switch = vec![0xFE];
            switch.extend_from_slice(b"mysql_native_password\0");
            switch.extend_from_slice(&fresh);
            switch.push(0);
            p.send(&switch).await;
            let answer = p.recv().await.unwrap();
            assert_eq!(answer, native(PASSWORD.as_bytes(), &fresh));
            p.send(&[0x00, 0, 0, 2, 0, 0, 0]).await;
        })
        .await;
        result.expect("authenticated");
    }

    #[tokio::test]
    async fn caching_sha2_full_authentication_encrypts_with_the_server_key() {
        let result = scripted(|mut p| async move {
            p.send(&greeting(b"caching_sha2_password")).await;
            p.recv().await.unwrap();
            p.send(&[0x01, 0x04]).await;
            // A plain connection: the client asks for the key, never sends the password.
            assert_eq!(p.recv().await.unwrap(), vec![0x02]);
            let mut key = vec![0x01];
            key.extend_from_slice(PUBLIC_KEY.as_bytes());
            p.send(&key).await;
            let sealed = p.recv().await.unwrap();
            assert_eq!(sealed.len(), 256, "one RSA-2048 block");
            assert!(!sealed
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()));
            p.send(&[0x00, 0, 0, 2, 0, 0, 0]).await;
        })
        .await;
        result.expect("authenticated");
    }

    #[tokio::test]
    async fn an_unusable_server_key_is_an_error() {
        let result = scripted(|mut p| async move {
            p.send(&greeting(b"caching_sha2_password")).await;
            p.recv().await.unwrap();
            p.send(&[0x01, 0x04]).await;
            assert_eq!(p.recv().await.unwrap(), vec![0x02]);
            p.send(b"\x01-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
                .await;
            assert_eq!(p.recv().await, None, "no password sent");
        })
        .await;
        let e = result.err().expect("refused").to_string();
        assert!(e.contains("RSA public key"), "{e}");
    }

    #[tokio::test]
    async fn fast_authentication_then_ok() {
        let result = scripted(|mut p| async move {
            p.send(&greeting(b"caching_sha2_password")).await;
            p.recv().await.unwrap();
            p.send(&[0x01, 0x03]).await;
            p.send(&[0x00, 0, 0, 2, 0, 0, 0]).await;
        })
        .await;
        result.expect("authenticated");
    }

    #[tokio::test]
    async fn access_denied_and_refused_plugins() {
        let denied = scripted(|mut p| async move {
            p.send(&greeting(b"mysql_native_password")).await;
            let response = p.recv().await.unwrap();
            assert_eq!(
                auth_response(&response, "app"),
                native(PASSWORD.as_bytes(), &SCRAMBLE)
            );
            let mut err = vec![0xFF, 0x15, 0x04, b'#'];
            err.extend_from_slice(b"28000Access denied for user 'app'@'localhost'");
            p.send(&err).await;
        })
        .await;
        let e = crate::connection::sql_error(denied.err().expect("denied"), "connecting");
        assert_eq!(e.kind(), powersync_source_core::ErrorKind::Auth, "{e}");
        assert_eq!(e.code(), Some("1045"));

        // mysql_clear_password would put the password on the wire as is.
        let refused = scripted(|mut p| async move {
            p.send(&greeting(b"mysql_native_password")).await;
            p.recv().await.unwrap();
            p.send(b"\xFEmysql_clear_password\0").await;
            assert_eq!(p.recv().await, None, "nothing after the switch request");
        })
        .await;
        let e = refused.err().expect("refused").to_string();
        assert!(e.contains("mysql_clear_password"), "{e}");
        assert!(!e.contains(PASSWORD), "{e}");
    }
}
