//! The fault proxy in front of an echo server.

use std::time::{Duration, Instant};

use powersync_source_chaos::proxy::{Proxy, ProxyMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on a free port; returns its address.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if socket.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn roundtrip(stream: &mut TcpStream, data: &[u8], within: Duration) -> Option<Vec<u8>> {
    stream.write_all(data).await.ok()?;
    let mut got = vec![0u8; data.len()];
    tokio::time::timeout(within, stream.read_exact(&mut got))
        .await
        .ok()?
        .ok()?;
    Some(got)
}

/// Whether the peer closed the connection (EOF or reset) within `within`.
async fn closed(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn passes_bytes_through() {
    let proxy = Proxy::start(echo_server().await).await.unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    let got = roundtrip(&mut c, b"hello", Duration::from_secs(2)).await;
    assert_eq!(got.as_deref(), Some(&b"hello"[..]));
    assert_eq!(proxy.counters().accepted(), 1);
}

#[tokio::test]
async fn drop_all_closes_open_connections_and_accepts_new_ones() {
    let proxy = Proxy::start(echo_server().await).await.unwrap();
    let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(roundtrip(&mut a, b"x", Duration::from_secs(2))
        .await
        .is_some());
    assert!(roundtrip(&mut b, b"y", Duration::from_secs(2))
        .await
        .is_some());
    proxy.drop_all();
    assert!(closed(&mut a, Duration::from_secs(2)).await);
    assert!(closed(&mut b, Duration::from_secs(2)).await);
    assert_eq!(proxy.counters().dropped(), 2);
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(roundtrip(&mut c, b"z", Duration::from_secs(2))
        .await
        .is_some());
}

#[tokio::test]
async fn black_hole_is_silent_without_closing_and_holds_the_bytes() {
    let proxy = Proxy::start(echo_server().await).await.unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(roundtrip(&mut c, b"before", Duration::from_secs(2))
        .await
        .is_some());
    proxy.set_mode(ProxyMode::BlackHole);
    c.write_all(b"lost?").await.unwrap();
    let mut got = [0u8; 5];
    // Nothing comes back, and the connection is not closed either (a read just times out).
    let read = tokio::time::timeout(Duration::from_millis(500), c.read(&mut got)).await;
    assert!(read.is_err(), "the black hole answered or closed: {read:?}");
    // New connections are accepted and silent too.
    let mut d = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(roundtrip(&mut d, b"new", Duration::from_millis(300))
        .await
        .is_none());
    // Healing delivers what was held.
    proxy.set_mode(ProxyMode::Pass);
    tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"lost?");
}

#[tokio::test]
async fn trickle_slows_transfers_down() {
    let proxy = Proxy::start(echo_server().await).await.unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    let data = vec![7u8; 200];
    let started = Instant::now();
    assert!(roundtrip(&mut c, &data, Duration::from_secs(2))
        .await
        .is_some());
    let fast = started.elapsed();
    proxy.set_mode(ProxyMode::Trickle {
        chunk: 20,
        delay: Duration::from_millis(20),
    });
    let started = Instant::now();
    let got = roundtrip(&mut c, &data, Duration::from_secs(10)).await;
    let slow = started.elapsed();
    assert_eq!(got.as_deref(), Some(&data[..]));
    // 200 bytes in 20-byte pieces 20 ms apart: at least 10 pieces one way.
    assert!(slow >= Duration::from_millis(180), "{slow:?}");
    assert!(slow > fast * 3, "trickle {slow:?} vs pass {fast:?}");
}

#[tokio::test]
async fn refuse_closes_new_connections_but_keeps_open_ones() {
    let proxy = Proxy::start(echo_server().await).await.unwrap();
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(roundtrip(&mut open, b"a", Duration::from_secs(2))
        .await
        .is_some());
    proxy.set_mode(ProxyMode::Refuse);
    // The kernel completes the handshake before the proxy can refuse; the proxy then resets
    // the connection.
    if let Ok(mut refused) = TcpStream::connect(proxy.addr()).await {
        assert!(closed(&mut refused, Duration::from_secs(2)).await);
    }
    assert!(roundtrip(&mut open, b"b", Duration::from_secs(2))
        .await
        .is_some());
    proxy.set_mode(ProxyMode::Pass);
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(roundtrip(&mut again, b"c", Duration::from_secs(2))
        .await
        .is_some());
    assert_eq!(proxy.counters().refused(), 1);
}
