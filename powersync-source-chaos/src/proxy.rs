//! A TCP proxy between the connector and the source server that injects network faults:
//! dropped connections, a black hole (half-open connections), a trickle, and refused
//! connections.
//!
//! The connector is given the proxy's address instead of the server's; the workload and the
//! checkers talk to the server directly, so only the system under test sees the faults.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the proxy treats traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything as it comes.
    Pass,
    /// Forward nothing in either direction and close nothing: both ends see a silent but open
    /// connection. New connections are accepted and are silent too.
    BlackHole,
    /// Forward at most `chunk` bytes at a time, waiting `delay` after each.
    Trickle {
        /// Bytes per write.
        chunk: usize,
        /// Wait after each write.
        delay: Duration,
    },
    /// Close new connections as soon as they are accepted (with a reset); open ones go on.
    Refuse,
}

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    accepted: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
}

impl ProxyCounters {
    /// Connections forwarded to the server.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    /// Connections closed at once because the proxy was refusing.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// Connections closed by [`Proxy::drop_all`] (and black holes ending).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A running proxy. Dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    /// Bumped to close every connection open at that moment.
    epoch: watch::Sender<u64>,
    counters: Arc<ProxyCounters>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(ProxyMode::Pass);
        let (epoch, _) = watch::channel(0u64);
        let counters = Arc::new(ProxyCounters::default());
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            mode.subscribe(),
            epoch.clone(),
            counters.clone(),
        ));
        Ok(Proxy {
            addr,
            mode,
            epoch,
            counters,
            task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches the mode for open and new connections.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        *self.mode.borrow()
    }

    /// Closes every open connection (both sides see the connection end).
    pub fn drop_all(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// What the proxy did so far.
    pub fn counters(&self) -> &ProxyCounters {
        &self.counters
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.drop_all();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<ProxyMode>,
    epoch: watch::Sender<u64>,
    counters: Arc<ProxyCounters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if *mode.borrow() == ProxyMode::Refuse {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            // Linger 0: the close is a reset, like a port nobody listens on. (Deprecated
            // because a non-zero linger blocks the thread on drop; zero never blocks.)
            #[allow(deprecated)]
            let _ = client.set_linger(Some(Duration::ZERO));
            drop(client);
            continue;
        }
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let mode = mode.clone();
        let epoch_rx = epoch.subscribe();
        let counters = counters.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                // The server is down: the client sees its connection closed.
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            connection(client, server, mode, epoch_rx, &counters).await;
        });
    }
}

/// Forwards one connection until either side closes or the epoch changes.
async fn connection(
    client: TcpStream,
    server: TcpStream,
    mode: watch::Receiver<ProxyMode>,
    mut epoch: watch::Receiver<u64>,
    counters: &ProxyCounters,
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, mode.clone());
    let down = pump(server_read, client_write, mode);
    // The sockets close when this returns (the halves are dropped).
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = epoch.changed() => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Copies one direction, following the mode. Returns when the reader ends or a write fails.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<ProxyMode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        wait_while_black_hole(&mut mode).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut sent = 0;
        while sent < n {
            // Bytes read just before a black hole started are held, not delivered.
            wait_while_black_hole(&mut mode).await;
            let current = *mode.borrow();
            let (end, delay) = match current {
                ProxyMode::Trickle { chunk, delay } => ((sent + chunk.max(1)).min(n), delay),
                _ => (n, Duration::ZERO),
            };
            if to.write_all(&buf[sent..end]).await.is_err() {
                return;
            }
            sent = end;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn wait_while_black_hole(mode: &mut watch::Receiver<ProxyMode>) {
    while *mode.borrow_and_update() == ProxyMode::BlackHole {
        if mode.changed().await.is_err() {
            // The proxy is gone: stay silent until this task is dropped.
            std::future::pending::<()>().await;
        }
    }
}
