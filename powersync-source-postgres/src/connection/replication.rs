//! The replication-protocol connection (`replication=database`), on `postgres-protocol`.
//!
//! [`ReplicationConnection::connect`] opens a walsender connection (TCP, TLS per `sslmode`,
//! or a Unix socket), authenticates (trust, cleartext password, MD5, SCRAM-SHA-256) and
//! answers replication commands through [`ReplicationConnection::simple_query`].
//! [`ReplicationConnection::start_replication`] turns it into a [`ReplicationStream`] of raw
//! `CopyData` payloads (`w` XLogData, `k` keepalive), the hot path of the connector.
//!
//! Errors follow the table in the [module docs](super); the SQLSTATE of a server error is its
//! [`SourceError::code`](powersync_source_core::SourceError::code).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use powersync_source_core::position::PgLsn;
use powersync_source_core::SourceError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;

use super::wire::{self, split_message};
use super::{quote_ident, quote_literal, tls, ConnKind, ServerError, Target};
use crate::config::{PostgresConfig, SslMode};

/// Bytes asked of the socket per read on the hot path (one allocation per this many bytes
/// of CopyData, amortized; never one per message).
const READ_CHUNK: usize = 256 * 1024;
/// Below this much free room, the next read first grows the buffer by [`READ_CHUNK`].
const MIN_READ_ROOM: usize = 16 * 1024;

/// Microseconds between 1970-01-01 and 2000-01-01 (the PostgreSQL epoch).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The answer to `IDENTIFY_SYSTEM`.
#[allow(dead_code)] // connector API, not every caller needs it yet
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentifySystem {
    /// The cluster's system identifier (a decimal u64, kept as the server's text).
    pub system_id: String,
    /// Current timeline.
    pub timeline: u32,
    /// Current WAL flush position.
    pub xlogpos: PgLsn,
    /// Database of this connection (`None` for physical replication connections).
    pub dbname: Option<String>,
}

/// What `CREATE_REPLICATION_SLOT ... LOGICAL` does with a snapshot.
#[allow(dead_code)] // connector API, not every caller needs it yet
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotSnapshot {
    /// Export a snapshot other sessions can use with `SET TRANSACTION SNAPSHOT '<name>'`,
    /// valid until this connection runs its next command.
    Export,
    /// No snapshot.
    NoExport,
    /// Use the snapshot for the current transaction of this connection (which must be in
    /// `BEGIN ISOLATION LEVEL REPEATABLE READ` and have run no query yet).
    Use,
}

/// The answer to `CREATE_REPLICATION_SLOT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CreatedSlot {
    /// Slot name, as the server reports it.
    pub slot_name: String,
    /// The LSN from which the slot's changes start (the snapshot's point).
    pub consistent_point: PgLsn,
    /// Exported snapshot name (with [`SlotSnapshot::Export`]).
    pub snapshot_name: Option<String>,
}

/// The socket under a connection: plain TCP, TLS over TCP, or a Unix socket.
enum PgStream {
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

/// The framed protocol state shared by the connection and the stream.
struct Wire {
    stream: PgStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    target: Target,
    bytes_received: u64,
}

impl Wire {
    fn new(stream: PgStream, target: Target) -> Self {
        Wire {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(256),
            target,
            bytes_received: 0,
        }
    }

    /// Reads more bytes into `rbuf`; EOF is a `Connection` error. Cancel-safe.
    async fn fill(&mut self, doing: &str) -> Result<(), SourceError> {
        if self.rbuf.capacity() - self.rbuf.len() < MIN_READ_ROOM {
            self.rbuf.reserve(READ_CHUNK);
        }
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) => Err(super::eof_error(&self.target, doing)),
            Ok(n) => {
                self.bytes_received += n as u64;
                Ok(())
            }
            Err(e) => Err(super::io_error(&self.target, doing, e)),
        }
    }

    /// The next whole backend message.
    async fn next_message(&mut self, doing: &str) -> Result<(u8, BytesMut), SourceError> {
        loop {
            if let Some(m) = split_message(&mut self.rbuf)
                .map_err(|e| e.context(format!("{doing} {}", self.target)))?
            {
                return Ok(m);
            }
            self.fill(doing).await?;
        }
    }

    /// Writes everything queued in `wbuf` and flushes. A cancelled call leaves the unsent
    /// rest queued for the next call: nothing is sent twice or torn.
    async fn flush(&mut self, doing: &str) -> Result<(), SourceError> {
        while !self.wbuf.is_empty() {
            let n = self
                .stream
                .write(&self.wbuf)
                .await
                .map_err(|e| super::io_error(&self.target, doing, e))?;
            if n == 0 {
                return Err(super::eof_error(&self.target, doing));
            }
            self.wbuf.advance(n);
        }
        self.stream
            .flush()
            .await
            .map_err(|e| super::io_error(&self.target, doing, e))
    }

    fn server_error(&self, doing: &str, body: &[u8]) -> SourceError {
        let e = wire::parse_error_fields(body);
        super::server_error(&self.target, ConnKind::Replication, doing, &e)
    }

    fn log_notice(&self, body: &[u8]) {
        let n = wire::parse_error_fields(body);
        log_notice(&self.target, &n);
    }
}

fn log_notice(target: &Target, n: &ServerError) {
    match n.severity.as_str() {
        "WARNING" => tracing::warn!(
            target: "powersync_source_postgres",
            code = %n.code,
            "server {}: {}: {}", target, n.severity, n.message
        ),
        _ => tracing::info!(
            target: "powersync_source_postgres",
            code = %n.code,
            "server {}: {}: {}", target, n.severity, n.message
        ),
    }
}

/// A `replication=database` connection, ready for replication commands.
pub(crate) struct ReplicationConnection {
    wire: Wire,
    params: HashMap<String, String>,
    server_version_num: u32,
    backend_pid: i32,
}

impl std::fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("target", &self.wire.target.to_string())
            .field("server_version_num", &self.server_version_num)
            .field("backend_pid", &self.backend_pid)
            .finish()
    }
}

impl ReplicationConnection {
    /// Connects, negotiates TLS per `sslmode`, authenticates and waits for ReadyForQuery.
    /// `connect_timeout` bounds the whole of it.
    pub(crate) async fn connect(
        cfg: &PostgresConfig,
    ) -> Result<ReplicationConnection, SourceError> {
        let target = Target::new(cfg);
        let attempt = connect_with_fallbacks(cfg, &target);
        match cfg.connect_timeout() {
            Some(t) => tokio::time::timeout(t, attempt)
                .await
                .map_err(|_| super::timeout_error(&target, t.as_secs()))?,
            None => attempt.await,
        }
    }

    /// `server_version_num` of the server (e.g. `150019`), from its `server_version`.
    pub(crate) fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// A `ParameterStatus` value reported by the server (`server_version`, `TimeZone`, ...).
    #[allow(dead_code)]
    pub(crate) fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The backend process id (`pg_stat_replication.pid`, `pg_replication_slots.active_pid`).
    #[allow(dead_code)]
    pub(crate) fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Runs `sql` with the simple query protocol and returns the rows of every statement as
    /// text columns. A server error is returned after the server is ready again, so the
    /// connection stays usable.
    pub(crate) async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        let doing = "running a query on";
        frontend::query(sql, &mut self.wire.wbuf).map_err(|e| {
            SourceError::config("invalid query (contains a NUL byte?)").with_source(e)
        })?;
        self.wire.flush(doing).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.wire.next_message(doing).await?;
            match tag {
                b'T' | b'C' | b'I' => {}
                b'D' => {
                    if error.is_none() {
                        rows.push(wire::parse_data_row(&body)?);
                    }
                }
                b'E' => {
                    if error.is_none() {
                        error = Some(self.wire.server_error(doing, &body));
                    }
                }
                b'N' => self.wire.log_notice(&body),
                b'S' => self.note_parameter(&body),
                b'A' => {}
                b'G' => {
                    // CopyInResponse: refuse, the server answers with an error and 'Z'.
                    frontend::copy_fail(
                        "COPY FROM STDIN is not supported here",
                        &mut self.wire.wbuf,
                    )
                    .map_err(|e| SourceError::decode(e.to_string()))?;
                    self.wire.flush(doing).await?;
                }
                b'H' | b'W' => {
                    return Err(SourceError::unsupported(format!(
                        "{doing} {}: the command started a COPY; use start_replication for \
                         START_REPLICATION",
                        self.wire.target
                    )))
                }
                b'Z' => break,
                other => return Err(unexpected(&self.wire.target, doing, other)),
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// `IDENTIFY_SYSTEM`.
    #[allow(dead_code)]
    pub(crate) async fn identify_system(&mut self) -> Result<IdentifySystem, SourceError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = single_row(&self.wire.target, "IDENTIFY_SYSTEM", &rows, 3)?;
        let system_id = row[0].clone().unwrap_or_default();
        let timeline = row[1]
            .as_deref()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| SourceError::decode("IDENTIFY_SYSTEM: invalid timeline"))?;
        let xlogpos = parse_lsn("IDENTIFY_SYSTEM xlogpos", row[2].as_deref())?;
        let dbname = row.get(3).cloned().flatten();
        Ok(IdentifySystem {
            system_id,
            timeline,
            xlogpos,
            dbname,
        })
    }

    /// `CREATE_REPLICATION_SLOT name [TEMPORARY] LOGICAL pgoutput ...` with the option syntax
    /// of the server (parenthesised from PostgreSQL 15, keywords before).
    pub(crate) async fn create_logical_slot(
        &mut self,
        name: &str,
        temporary: bool,
        snapshot: SlotSnapshot,
    ) -> Result<CreatedSlot, SourceError> {
        let sql = create_slot_command(name, temporary, snapshot, self.server_version_num);
        let rows = self
            .simple_query(&sql)
            .await
            .map_err(|e| e.context(format!("creating replication slot \"{name}\"")))?;
        let row = single_row(&self.wire.target, "CREATE_REPLICATION_SLOT", &rows, 3)?;
        Ok(CreatedSlot {
            slot_name: row[0].clone().unwrap_or_else(|| name.to_string()),
            consistent_point: parse_lsn(
                "CREATE_REPLICATION_SLOT consistent_point",
                row[1].as_deref(),
            )?,
            snapshot_name: row[2].clone(),
        })
    }

    /// `START_REPLICATION SLOT "slot" LOGICAL <start> ("k" 'v', ...)`: option names are
    /// identifier-quoted and values literal-quoted here (pass `publication_names` as
    /// [`super::publication_names`] builds it). On success the server has answered
    /// CopyBothResponse and the stream is live.
    pub(crate) async fn start_replication(
        mut self,
        slot: &str,
        start: PgLsn,
        options: &[(&str, String)],
    ) -> Result<ReplicationStream, SourceError> {
        let sql = start_replication_command(slot, start, options);
        let doing = "starting replication on";
        frontend::query(&sql, &mut self.wire.wbuf)
            .map_err(|e| SourceError::config("invalid START_REPLICATION").with_source(e))?;
        self.wire.flush(doing).await?;
        let mut error: Option<SourceError> = None;
        loop {
            // CopyBothResponse ('W') is framed here: postgres-protocol does not know it.
            let (tag, body) = self.wire.next_message(doing).await?;
            match tag {
                b'W' if error.is_none() => {
                    tracing::debug!(
                        target: "powersync_source_postgres",
                        "replication started on {} from slot {slot} at {start}",
                        self.wire.target
                    );
                    return Ok(ReplicationStream {
                        wire: self.wire,
                        state: StreamState::Streaming,
                    });
                }
                b'E' => {
                    if error.is_none() {
                        error = Some(
                            self.wire
                                .server_error(doing, &body)
                                .context(format!("replication slot \"{slot}\"")),
                        );
                    }
                }
                b'N' => self.wire.log_notice(&body),
                b'S' => self.note_parameter(&body),
                b'Z' => {
                    return Err(error.unwrap_or_else(|| {
                        SourceError::decode(format!(
                            "{doing} {}: server ended START_REPLICATION without streaming",
                            self.wire.target
                        ))
                    }))
                }
                b'C' | b'T' | b'D' | b'I' | b'W' => {}
                other => return Err(unexpected(&self.wire.target, doing, other)),
            }
        }
    }

    /// Sends Terminate and closes the socket.
    #[allow(dead_code)]
    pub(crate) async fn close(mut self) -> Result<(), SourceError> {
        frontend::terminate(&mut self.wire.wbuf);
        self.wire.flush("closing").await?;
        let _ = self.wire.stream.shutdown().await;
        Ok(())
    }

    fn note_parameter(&mut self, body: &[u8]) {
        if let Ok((k, v)) = wire::parse_parameter_status(body) {
            if k == "server_version" {
                if let Some(n) = wire::parse_server_version(&v) {
                    self.server_version_num = n;
                }
            }
            self.params.insert(k, v);
        }
    }
}

/// Builds `CREATE_REPLICATION_SLOT` for the server version.
pub(crate) fn create_slot_command(
    name: &str,
    temporary: bool,
    snapshot: SlotSnapshot,
    server_version_num: u32,
) -> String {
    let temp = if temporary { " TEMPORARY" } else { "" };
    let name = quote_ident(name);
    if server_version_num >= 150000 {
        let s = match snapshot {
            SlotSnapshot::Export => "export",
            SlotSnapshot::NoExport => "nothing",
            SlotSnapshot::Use => "use",
        };
        format!("CREATE_REPLICATION_SLOT {name}{temp} LOGICAL pgoutput (SNAPSHOT '{s}')")
    } else {
        let s = match snapshot {
            SlotSnapshot::Export => "EXPORT_SNAPSHOT",
            SlotSnapshot::NoExport => "NOEXPORT_SNAPSHOT",
            SlotSnapshot::Use => "USE_SNAPSHOT",
        };
        format!("CREATE_REPLICATION_SLOT {name}{temp} LOGICAL pgoutput {s}")
    }
}

/// Builds `START_REPLICATION SLOT "slot" LOGICAL X/X ("k" 'v', ...)`.
pub(crate) fn start_replication_command(
    slot: &str,
    start: PgLsn,
    options: &[(&str, String)],
) -> String {
    let mut sql = format!(
        "START_REPLICATION SLOT {} LOGICAL {:X}/{:X}",
        quote_ident(slot),
        start.0 >> 32,
        start.0 & 0xFFFF_FFFF
    );
    if !options.is_empty() {
        let opts: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("{} {}", quote_ident(k), quote_literal(v)))
            .collect();
        sql.push_str(" (");
        sql.push_str(&opts.join(", "));
        sql.push(')');
    }
    sql
}

fn single_row<'a>(
    target: &Target,
    command: &str,
    rows: &'a [Vec<Option<String>>],
    min_cols: usize,
) -> Result<&'a [Option<String>], SourceError> {
    match rows {
        [row] if row.len() >= min_cols => Ok(row),
        _ => Err(SourceError::decode(format!(
            "{command} on {target}: expected one row of at least {min_cols} columns, got {} rows",
            rows.len()
        ))),
    }
}

fn parse_lsn(what: &str, v: Option<&str>) -> Result<PgLsn, SourceError> {
    let v = v.ok_or_else(|| SourceError::decode(format!("{what}: missing")))?;
    v.parse::<PgLsn>()
        .map_err(|_| SourceError::decode(format!("{what}: invalid LSN \"{v}\"")))
}

fn unexpected(target: &Target, doing: &str, tag: u8) -> SourceError {
    SourceError::decode(format!(
        "{doing} {target}: unexpected message type {:?} from the server",
        tag as char
    ))
}

// ---- connecting ----

async fn connect_with_fallbacks(
    cfg: &PostgresConfig,
    target: &Target,
) -> Result<ReplicationConnection, SourceError> {
    match cfg.ssl_mode() {
        SslMode::Allow => match connect_once(cfg, target, Negotiate::Plain).await {
            Err(Failure::Server(e)) if rejects_plain(&e) => {
                connect_once(cfg, target, Negotiate::Required).await
            }
            r => r,
        },
        SslMode::Prefer => match connect_once(cfg, target, Negotiate::Preferred).await {
            Err(Failure::Tls(_)) => connect_once(cfg, target, Negotiate::Plain).await,
            r => r,
        },
        SslMode::Disable => connect_once(cfg, target, Negotiate::Plain).await,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            connect_once(cfg, target, Negotiate::Required).await
        }
    }
    .map_err(|f| f.into_error(target))
}

fn rejects_plain(e: &ServerError) -> bool {
    e.state() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        && e.message.contains("pg_hba.conf")
        && (e.message.contains("no encryption") || e.message.contains("SSL off"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Negotiate {
    Plain,
    Preferred,
    Required,
}

enum Failure {
    /// The server's ErrorResponse during startup.
    Server(ServerError),
    /// The TLS handshake failed (under `prefer`, libpq then retries in plain).
    Tls(SourceError),
    Other(SourceError),
}

impl Failure {
    fn into_error(self, target: &Target) -> SourceError {
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

async fn open_socket(cfg: &PostgresConfig, target: &Target) -> Result<PgStream, SourceError> {
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

async fn negotiate_tls(
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

async fn connect_once(
    cfg: &PostgresConfig,
    target: &Target,
    how: Negotiate,
) -> Result<ReplicationConnection, Failure> {
    let stream = open_socket(cfg, target).await?;
    let stream = negotiate_tls(cfg, target, stream, how).await?;
    let mut wire = Wire::new(stream, target.clone());
    let doing = "connecting to";

    // The text format of pgoutput values follows these session settings: pin the ones the
    // value decoders expect (see the `types` module docs), whatever the server defaults are.
    let params: [(&str, &str); 8] = [
        ("user", cfg.user()),
        ("database", cfg.dbname()),
        ("replication", "database"),
        ("application_name", cfg.application_name()),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("IntervalStyle", "postgres"),
        ("extra_float_digits", "1"),
    ];
    frontend::startup_message(params.iter().copied(), &mut wire.wbuf)
        .map_err(|e| SourceError::config("invalid startup parameter").with_source(e))?;
    wire.flush(doing).await?;

    authenticate(cfg, &mut wire).await?;

    let mut conn = ReplicationConnection {
        wire,
        params: HashMap::new(),
        server_version_num: 0,
        backend_pid: 0,
    };
    loop {
        let (tag, body) = conn.wire.next_message(doing).await?;
        match tag {
            b'S' => conn.note_parameter(&body),
            b'K' => {
                let mut r = wire::Reader::new(&body, "BackendKeyData");
                conn.backend_pid = r.i32()?;
            }
            b'N' => conn.wire.log_notice(&body),
            b'E' => return Err(Failure::Server(wire::parse_error_fields(&body))),
            b'Z' => break,
            b'v' => {} // NegotiateProtocolVersion: we ask for nothing optional
            other => return Err(unexpected(target, doing, other).into()),
        }
    }
    if conn.server_version_num == 0 {
        return Err(SourceError::decode(format!(
            "{doing} {target}: the server did not report a usable server_version"
        ))
        .into());
    }
    Ok(conn)
}

/// Runs the authentication exchange until AuthenticationOk.
async fn authenticate(cfg: &PostgresConfig, wire: &mut Wire) -> Result<(), Failure> {
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
                        frontend::password_message(hash.as_bytes(), &mut wire.wbuf)
                            .map_err(|e| SourceError::decode(e.to_string()))?;
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
        .map_err(|e| SourceError::decode(e.to_string()))?;
    wire.flush(doing).await?;

    let continue_data = expect_auth(wire, doing, 11).await?;
    scram.update(&continue_data).map_err(|e| {
        SourceError::auth(format!(
            "{doing} {target}: invalid SCRAM server message: {e}"
        ))
    })?;
    frontend::sasl_response(scram.message(), &mut wire.wbuf)
        .map_err(|e| SourceError::decode(e.to_string()))?;
    wire.flush(doing).await?;

    let final_data = expect_auth(wire, doing, 12).await?;
    scram.finish(&final_data).map_err(|e| {
        SourceError::auth(format!(
            "{doing} {target}: the server's SCRAM signature did not verify ({e}); the server \
             may not be who it claims to be"
        ))
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

// ---- streaming ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Streaming,
    /// The server sent CopyDone (or ended the command): `recv` returns `None`.
    Ended,
    /// The server sent an ErrorResponse: `recv` keeps failing; reconnect.
    Failed,
}

/// The CopyBoth stream after `START_REPLICATION`.
///
/// [`recv`](Self::recv) returns each CopyData payload as a zero-copy [`Bytes`] slice of a
/// large read buffer (one socket read and at most one allocation per 256 KiB of traffic, not
/// per message).
///
/// # Cancel safety
/// `recv` is cancel-safe: its only await point is a read into the connection's own buffer,
/// and a message is split off that buffer only when it is complete and returned in the same
/// poll. Dropping a pending `recv` (e.g. the losing branch of `tokio::select!` with a
/// timer) loses nothing; the next `recv` continues where it was. `send_status` queues its
/// frame in an internal write buffer before writing; if it is cancelled midway the rest
/// stays queued and is sent first by the next `send_status`, so frames are never torn or
/// duplicated (but a cancelled status update may be sent late).
pub(crate) struct ReplicationStream {
    wire: Wire,
    state: StreamState,
}

impl std::fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("target", &self.wire.target.to_string())
            .field("state", &self.state)
            .field("bytes_received", &self.wire.bytes_received)
            .finish()
    }
}

impl ReplicationStream {
    /// The next CopyData payload (`w` XLogData or `k` primary keepalive, first byte
    /// included), or `None` once the server has ended the copy (CopyDone / CommandComplete).
    /// After a server ErrorResponse (returned as the error it maps to, e.g. `HistoryLost` for
    /// an invalidated slot, `Connection` for a terminated walsender) every later call fails
    /// with a `Connection` error; I/O errors and EOF are `Connection` errors.
    pub(crate) async fn recv(&mut self) -> Result<Option<Bytes>, SourceError> {
        const DOING: &str = "streaming from";
        loop {
            match self.state {
                StreamState::Streaming => {}
                StreamState::Ended => return Ok(None),
                StreamState::Failed => {
                    return Err(SourceError::connection(format!(
                        "{DOING} {}: the replication stream already failed; reconnect",
                        self.wire.target
                    )))
                }
            }
            let buf = &mut self.wire.rbuf;
            if buf.len() >= 5 {
                let tag = buf[0];
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if tag == b'd' && len >= 4 && buf.len() > len {
                    // Hot path: one CopyData, split off without copying.
                    let mut frame = buf.split_to(len + 1);
                    frame.advance(5);
                    return Ok(Some(frame.freeze()));
                }
                if let Some((tag, body)) = split_message(buf)
                    .map_err(|e| e.context(format!("{DOING} {}", self.wire.target)))?
                {
                    match tag {
                        b'd' => return Ok(Some(body.freeze())),
                        b'c' | b'C' | b'Z' => {
                            self.state = StreamState::Ended;
                            return Ok(None);
                        }
                        b'E' => {
                            self.state = StreamState::Failed;
                            return Err(self.wire.server_error(DOING, &body));
                        }
                        b'N' => self.wire.log_notice(&body),
                        b'S' | b'A' => {}
                        other => return Err(unexpected(&self.wire.target, DOING, other)),
                    }
                    continue;
                }
            }
            self.wire.fill(DOING).await?;
        }
    }

    /// Sends a standby status update (`r`): the positions written, flushed (durable: the
    /// server may release WAL up to here) and applied, and whether the server should answer
    /// at once with a keepalive. Flushed before returning.
    pub(crate) async fn send_status(
        &mut self,
        write: PgLsn,
        flush: PgLsn,
        apply: PgLsn,
        reply_requested: bool,
    ) -> Result<(), SourceError> {
        let buf = &mut self.wire.wbuf;
        // CopyData header + 'r' + 3 × u64 + i64 + u8.
        buf.reserve(1 + 4 + 34);
        buf.put_u8(b'd');
        buf.put_u32(4 + 34);
        buf.put_u8(b'r');
        buf.put_u64(write.0);
        buf.put_u64(flush.0);
        buf.put_u64(apply.0);
        buf.put_i64(pg_now_micros());
        buf.put_u8(u8::from(reply_requested));
        self.wire.flush("sending a status update to").await
    }

    /// Ends the copy from our side (CopyDone) and closes the connection (Terminate).
    #[allow(dead_code)]
    pub(crate) async fn close(mut self) -> Result<(), SourceError> {
        frontend::copy_done(&mut self.wire.wbuf);
        frontend::terminate(&mut self.wire.wbuf);
        self.wire.flush("closing").await?;
        let _ = self.wire.stream.shutdown().await;
        Ok(())
    }

    /// Bytes read from the socket since the connection opened (after TLS decryption;
    /// protocol framing included).
    #[allow(dead_code)]
    pub(crate) fn bytes_received(&self) -> u64 {
        self.wire.bytes_received
    }
}

/// Microseconds since 2000-01-01 00:00 UTC, the clock field of status updates.
pub(crate) fn pg_now_micros() -> i64 {
    let since_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    since_unix.as_micros() as i64 - PG_EPOCH_OFFSET_MICROS
}
