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

use postgres_protocol::escape::escape_identifier;
use postgres_protocol::message::frontend;
use powersync_source_core::position::PgLsn;
use powersync_source_core::SourceError;
use tokio_postgres::error::SqlState;

use super::auth::authenticate;
use super::socket::{negotiate_tls, open_socket, Failure, Negotiate};
use super::stream::ReplicationStream;
use super::wire::{self, unexpected, Wire};
use super::{ServerError, Target};
use crate::config::{PostgresConfig, SslMode};

/// The answer to `IDENTIFY_SYSTEM` (the protocol tests check the connection with it).
#[cfg(test)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotSnapshot {
    /// Export a snapshot other sessions can use with `SET TRANSACTION SNAPSHOT '<name>'`,
    /// valid until this connection runs its next command.
    Export,
    /// No snapshot.
    #[cfg(test)]
    NoExport,
    /// Use the snapshot for the current transaction of this connection (which must be in
    /// `BEGIN ISOLATION LEVEL REPEATABLE READ` and have run no query yet).
    #[cfg(test)]
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
        let attempt = connect_with_fallbacks(cfg, &target, Session::Replication);
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

    #[cfg(test)]
    /// A `ParameterStatus` value reported by the server (`server_version`, `TimeZone`, ...).
    pub(crate) fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    #[cfg(test)]
    /// The backend process id (`pg_stat_replication.pid`, `pg_replication_slots.active_pid`).
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
                    .map_err(|e| SourceError::decode("encoding CopyFail").with_source(e))?;
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
    #[cfg(test)]
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
                    return Ok(ReplicationStream::new(self.wire));
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
    #[cfg(test)]
    pub(crate) async fn close(mut self) -> Result<(), SourceError> {
        use tokio::io::AsyncWriteExt;
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
    let name = escape_identifier(name);
    if server_version_num >= 150000 {
        let s = match snapshot {
            SlotSnapshot::Export => "export",
            #[cfg(test)]
            SlotSnapshot::NoExport => "nothing",
            #[cfg(test)]
            SlotSnapshot::Use => "use",
        };
        format!("CREATE_REPLICATION_SLOT {name}{temp} LOGICAL pgoutput (SNAPSHOT '{s}')")
    } else {
        let s = match snapshot {
            SlotSnapshot::Export => "EXPORT_SNAPSHOT",
            #[cfg(test)]
            SlotSnapshot::NoExport => "NOEXPORT_SNAPSHOT",
            #[cfg(test)]
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
        escape_identifier(slot),
        start.0 >> 32,
        start.0 & 0xFFFF_FFFF
    );
    if !options.is_empty() {
        let opts: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("{} {}", escape_identifier(k), command_literal(v)))
            .collect();
        sql.push_str(" (");
        sql.push_str(&opts.join(", "));
        sql.push(')');
    }
    sql
}

/// A string in a replication command (`'it''s'`). Not `escape_literal`: the walsender's
/// command grammar knows no `E'…'` strings and reads backslashes literally.
fn command_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
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

/// Which backend a connection starts: a walsender (`replication=database`) or an ordinary
/// backend (the snapshot readers' [`super::copy::CopySession`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Session {
    Replication,
    Sql,
}

async fn connect_with_fallbacks(
    cfg: &PostgresConfig,
    target: &Target,
    session: Session,
) -> Result<ReplicationConnection, SourceError> {
    match cfg.ssl_mode() {
        SslMode::Allow => match connect_once(cfg, target, Negotiate::Plain, session).await {
            Err(Failure::Server(e)) if rejects_plain(&e) => {
                connect_once(cfg, target, Negotiate::Required, session).await
            }
            r => r,
        },
        SslMode::Prefer => match connect_once(cfg, target, Negotiate::Preferred, session).await {
            Err(Failure::Tls(_)) => connect_once(cfg, target, Negotiate::Plain, session).await,
            r => r,
        },
        SslMode::Disable => connect_once(cfg, target, Negotiate::Plain, session).await,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            connect_once(cfg, target, Negotiate::Required, session).await
        }
    }
    .map_err(|f| f.into_error(target))
}

/// An ordinary (non-replication) backend on this crate's own protocol code, with the same
/// TLS, authentication, session settings and `connect_timeout` as
/// [`ReplicationConnection::connect`]; returns its framed wire, ready for queries.
pub(super) async fn connect_sql_wire(cfg: &PostgresConfig) -> Result<Wire, SourceError> {
    let target = Target::new(cfg);
    let attempt = connect_with_fallbacks(cfg, &target, Session::Sql);
    let conn = match cfg.connect_timeout() {
        Some(t) => tokio::time::timeout(t, attempt)
            .await
            .map_err(|_| super::timeout_error(&target, t.as_secs()))?,
        None => attempt.await,
    }?;
    Ok(conn.wire)
}

fn rejects_plain(e: &ServerError) -> bool {
    e.state() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        && e.message.contains("pg_hba.conf")
        && (e.message.contains("no encryption") || e.message.contains("SSL off"))
}

async fn connect_once(
    cfg: &PostgresConfig,
    target: &Target,
    how: Negotiate,
    session: Session,
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
    // An ordinary backend: every parameter but `replication`.
    let params = params
        .iter()
        .copied()
        .filter(|(k, _)| session == Session::Replication || *k != "replication");
    frontend::startup_message(params, &mut wire.wbuf)
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
