//! Connection settings: libpq-style URL and key-value strings.
//!
//! [`PostgresConfig`] is parsed from either form libpq accepts:
//!
//! ```text
//! postgres://user:p%40ss@db.example.com:5432/app?sslmode=verify-full&publication=powersync
//! host=db.example.com port=5432 user=user password='p@ss word' dbname=app sslmode=require
//! ```
//!
//! # Parameters
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `host` | `localhost` | host name or IP address; a value starting with `/` is the directory of a Unix socket (no TLS there, as in libpq) |
//! | `port` | `5432` | TCP port (also names the Unix socket `.s.PGSQL.<port>`) |
//! | `user` | `postgres` | role to log in as |
//! | `password` | none | kept as a [`Secret`]: never shown by `Debug`, `Display` or [`PostgresConfig::display_url`] |
//! | `dbname` | the user name | database (`replication=database` connections are bound to it) |
//! | `sslmode` | `prefer` | `disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full` (see [`SslMode`]) |
//! | `sslrootcert` | none | PEM file of trusted root certificates; `system` means the bundled Mozilla roots (webpki-roots) and implies `verify-full` unless `sslmode` says otherwise |
//! | `sslcert`, `sslkey` | none | client certificate chain and private key (PEM); both or neither |
//! | `connect_timeout` | none | seconds to wait for the TCP connection and the whole startup; `0` means wait indefinitely |
//! | `application_name` | `powersync-source` | shown in `pg_stat_activity` and `pg_stat_replication` |
//! | `publication` | `powersync` | connector: publication to replicate |
//! | `slot` | `powersync_<dbname>` | connector: replication slot name (`[a-z0-9_]`, at most 63 bytes); the default is the database name lower-cased, other characters replaced by `_`, cut to 63 bytes |
//! | `snapshot_parallelism` | `2` | connector: tables (or chunks) copied at once during the initial snapshot, at least 1 |
//! | `snapshot_chunk_rows` | `100000` | connector: rows per key-ordered snapshot chunk, at least 1 |
//! | `streaming` | `on` | connector: receive large transactions while they are still in progress (pgoutput `streaming`, PostgreSQL 14+; ignored before 14): `on` or `off` (also `true`/`false`, `1`/`0`) |
//! | `streaming_memory_kb` | `32768` | connector: KiB of in-progress transactions kept in memory (all of them together) before the largest is moved to a temporary file; `0` moves every one to a file at once |
//! | `logical_decoding_work_mem` | `4MB` | connector, with `streaming` on PostgreSQL 14+: the setting for the connector's own walsender session (`SET` before `START_REPLICATION`; the server's setting is untouched): a transaction is streamed once its changes pass it, so the server does not spill large transactions to its disk (except where it cannot stream yet: before its decoding is consistent, or for changes before the resume point) and has little left to send after the commit. A PostgreSQL memory value (`64kB` or more: `512kB`, `4MB`, `1GB`), or `server` to keep the server's setting |
//! | `spill_dir` | the system temporary directory | connector: where those temporary files go; each is unlinked as soon as it is created, so it disappears with the process, on commit, abort or restart |
//!
//! In a URL, user, password, host and database are percent-decoded, and every parameter above
//! may also be given as a query parameter (`?sslmode=require&slot=s1`); query parameters win over
//! the URL parts. In the key-value form values may be single-quoted (`password='a b'`) with `\'`
//! and `\\` escapes. A parameter given twice keeps its last value, as in libpq.
//!
//! Differences from libpq, on purpose: environment variables (`PGHOST`, `PGUSER`, ...) and
//! `~/.pgpass` / `~/.postgresql/*` files are not read, so a configuration means the same thing on
//! every machine; the default user is `postgres` rather than the operating-system user name;
//! only one host is accepted; any parameter not listed above is rejected with an
//! [`ErrorKind::Config`](powersync_source_core::ErrorKind::Config) error naming it, rather than
//! ignored.
//!
//! # Building in code
//!
//! ```
//! use powersync_source_postgres::config::{PostgresConfig, SslMode};
//! let cfg = PostgresConfig::new()
//!     .with_host("db.internal")
//!     .with_user("replicator")
//!     .with_password("s3cret")
//!     .with_dbname("app")
//!     .with_ssl_mode(SslMode::VerifyFull);
//! assert_eq!(cfg.slot(), "powersync_app");
//! assert!(!format!("{cfg:?}").contains("s3cret"));
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use powersync_source_core::{Secret, SourceError};

mod parse;

/// Default publication name.
pub const DEFAULT_PUBLICATION: &str = "powersync";
/// Default application name reported to the server.
pub const DEFAULT_APPLICATION_NAME: &str = "powersync-source";
/// Default number of tables (or chunks) copied at once during a snapshot.
pub const DEFAULT_SNAPSHOT_PARALLELISM: usize = 2;
/// Default number of rows per snapshot chunk.
pub const DEFAULT_SNAPSHOT_CHUNK_ROWS: u64 = 100_000;
/// Default memory budget for streamed in-progress transactions, in KiB (32 MiB).
pub const DEFAULT_STREAMING_MEMORY_KB: u64 = 32 * 1024;
/// Default `logical_decoding_work_mem` of the connector's walsender session.
pub const DEFAULT_DECODING_WORK_MEM: &str = "4MB";
/// PostgreSQL's limit on identifier (and replication slot name) length, in bytes.
pub const MAX_SLOT_NAME_LEN: usize = 63;

/// Every parameter name accepted in a URL query or a key-value string.
pub const PARAMETERS: &[&str] = &[
    "host",
    "port",
    "user",
    "password",
    "dbname",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
    "publication",
    "slot",
    "snapshot_parallelism",
    "snapshot_chunk_rows",
    "streaming",
    "streaming_memory_kb",
    "logical_decoding_work_mem",
    "spill_dir",
];

/// TLS policy, with libpq's meaning for each value.
///
/// | mode | TLS | certificate chain | host name |
/// |---|---|---|---|
/// | `disable` | never | – | – |
/// | `allow` | only if the server insists (plain first, TLS when the server rejects plain) | verified only if `sslrootcert` is set | no |
/// | `prefer` (default) | if the server supports it, else plain | verified only if `sslrootcert` is set | no |
/// | `require` | always | verified only if `sslrootcert` is set (libpq: then like `verify-ca`) | no |
/// | `verify-ca` | always | verified | no |
/// | `verify-full` | always | verified | verified |
///
/// Roots come from `sslrootcert` when given, else from the Mozilla root set bundled with
/// webpki-roots (libpq instead fails without a root file; a server certificate issued by a
/// public CA therefore works here with no file at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// Plain first; TLS only if the server refuses a plain connection.
    Allow,
    /// TLS if the server supports it, plain otherwise.
    #[default]
    Prefer,
    /// TLS; the certificate is not checked unless `sslrootcert` is given.
    Require,
    /// TLS with the certificate chain verified against the roots; host name not checked.
    VerifyCa,
    /// TLS with the chain verified and the certificate valid for the host name.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling (`verify-full`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a plain (unencrypted) connection is never acceptable.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, SourceError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(SourceError::config(format!(
                    "invalid sslmode \"{other}\": allowed values are disable, allow, prefer, \
                     require, verify-ca, verify-full"
                )))
            }
        })
    }
}

/// PostgreSQL connection settings plus the connector's own options.
///
/// Fields are private; read them with the getters (`host()`, `slot()`, ...) and set them with
/// the consuming `with_*` builders. `Debug` and `Display` never show the password
/// (`Display` is [`PostgresConfig::display_url`]).
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    host: String,
    port: u16,
    user: String,
    password: Option<Secret>,
    dbname: Option<String>,
    ssl_mode: SslMode,
    ssl_root_cert: Option<PathBuf>,
    ssl_cert: Option<PathBuf>,
    ssl_key: Option<PathBuf>,
    connect_timeout: Option<Duration>,
    application_name: String,
    publication: String,
    slot: Option<String>,
    snapshot_parallelism: usize,
    snapshot_chunk_rows: u64,
    streaming: bool,
    streaming_memory_kb: u64,
    decoding_work_mem: Option<String>,
    spill_dir: Option<PathBuf>,
}

/// The former name of [`PostgresConfig`], kept so existing code compiles.
pub type PgConfig = PostgresConfig;

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            host: "localhost".to_string(),
            port: 5432,
            user: "postgres".to_string(),
            password: None,
            dbname: None,
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
            ssl_cert: None,
            ssl_key: None,
            connect_timeout: None,
            application_name: DEFAULT_APPLICATION_NAME.to_string(),
            publication: DEFAULT_PUBLICATION.to_string(),
            slot: None,
            snapshot_parallelism: DEFAULT_SNAPSHOT_PARALLELISM,
            snapshot_chunk_rows: DEFAULT_SNAPSHOT_CHUNK_ROWS,
            streaming: true,
            streaming_memory_kb: DEFAULT_STREAMING_MEMORY_KB,
            decoding_work_mem: Some(DEFAULT_DECODING_WORK_MEM.to_string()),
            spill_dir: None,
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("dbname", &self.dbname())
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("ssl_cert", &self.ssl_cert)
            .field("ssl_key", &self.ssl_key)
            .field("connect_timeout", &self.connect_timeout)
            .field("application_name", &self.application_name)
            .field("publication", &self.publication)
            .field("slot", &self.slot())
            .field("snapshot_parallelism", &self.snapshot_parallelism)
            .field("snapshot_chunk_rows", &self.snapshot_chunk_rows)
            .field("streaming", &self.streaming)
            .field("streaming_memory_kb", &self.streaming_memory_kb)
            .field("logical_decoding_work_mem", &self.decoding_work_mem)
            .field("spill_dir", &self.spill_dir)
            .finish()
    }
}

impl fmt::Display for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_url())
    }
}

impl FromStr for PostgresConfig {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, SourceError> {
        PostgresConfig::parse(s)
    }
}

impl PostgresConfig {
    /// All defaults: `localhost:5432`, user `postgres`, no password, `sslmode=prefer`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a `postgres://` / `postgresql://` URL or a libpq key-value string.
    ///
    /// Errors are [`ErrorKind::Config`](powersync_source_core::ErrorKind::Config) and never
    /// quote the password.
    pub fn parse(s: &str) -> Result<Self, SourceError> {
        let pairs = parse::pairs(s)?;
        let mut cfg = PostgresConfig::default();
        let mut ssl_mode_given = false;
        for (key, value) in pairs {
            if key == "sslmode" {
                ssl_mode_given = true;
            }
            cfg.set(&key, value)?;
        }
        if cfg.ssl_root_cert.as_deref() == Some(Path::new("system")) {
            // libpq 16: sslrootcert=system defaults to (and insists on) verify-full.
            if !ssl_mode_given {
                cfg.ssl_mode = SslMode::VerifyFull;
            } else if cfg.ssl_mode != SslMode::VerifyFull {
                return Err(SourceError::config(format!(
                    "sslrootcert=system requires sslmode=verify-full (got sslmode={})",
                    cfg.ssl_mode
                )));
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Sets one parameter by its libpq name, with the same checks as [`PostgresConfig::parse`].
    pub fn set(&mut self, key: &str, value: String) -> Result<(), SourceError> {
        match key {
            "host" => self.host = value,
            "port" => self.port = parse_port(&value)?,
            "user" => self.user = value,
            "password" => self.password = Some(Secret::new(value)),
            "dbname" => self.dbname = non_empty(value),
            "sslmode" => self.ssl_mode = value.parse()?,
            "sslrootcert" => self.ssl_root_cert = non_empty(value).map(PathBuf::from),
            "sslcert" => self.ssl_cert = non_empty(value).map(PathBuf::from),
            "sslkey" => self.ssl_key = non_empty(value).map(PathBuf::from),
            "connect_timeout" => {
                let secs: u64 = value.trim().parse().map_err(|_| {
                    SourceError::config(format!(
                        "invalid connect_timeout \"{value}\": expected a whole number of seconds \
                         (0 = wait indefinitely)"
                    ))
                })?;
                self.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs));
            }
            "application_name" => self.application_name = value,
            "publication" => {
                if value.is_empty() {
                    return Err(SourceError::config("publication must not be empty"));
                }
                self.publication = value
            }
            "slot" => {
                validate_slot_name(&value)?;
                self.slot = Some(value)
            }
            "snapshot_parallelism" => {
                self.snapshot_parallelism = parse_positive(key, &value)? as usize;
            }
            "snapshot_chunk_rows" => self.snapshot_chunk_rows = parse_positive(key, &value)?,
            "streaming" => self.streaming = parse_on_off(key, &value)?,
            "streaming_memory_kb" => {
                self.streaming_memory_kb = value.trim().parse().map_err(|_| {
                    SourceError::config(format!(
                        "invalid streaming_memory_kb \"{value}\": expected a whole number of KiB \
                         (0 = keep nothing in memory)"
                    ))
                })?
            }
            "logical_decoding_work_mem" => self.decoding_work_mem = parse_memory(key, &value)?,
            "spill_dir" => self.spill_dir = non_empty(value).map(PathBuf::from),
            other => {
                return Err(SourceError::config(format!(
                    "unknown connection parameter \"{other}\" (accepted: {})",
                    PARAMETERS.join(", ")
                )))
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), SourceError> {
        if self.host.is_empty() {
            return Err(SourceError::config("host must not be empty"));
        }
        if self.host.contains(',') {
            return Err(SourceError::config(format!(
                "multiple hosts (\"{}\") are not supported: give one host",
                self.host
            )));
        }
        if self.user.is_empty() {
            return Err(SourceError::config("user must not be empty"));
        }
        match (&self.ssl_cert, &self.ssl_key) {
            (Some(_), None) => Err(SourceError::config(
                "sslcert is set but sslkey is not: give both the client certificate and its key",
            )),
            (None, Some(_)) => Err(SourceError::config(
                "sslkey is set but sslcert is not: give both the client certificate and its key",
            )),
            _ => Ok(()),
        }
    }

    /// The URL form with the password replaced by `***`, for logs and messages.
    pub fn display_url(&self) -> String {
        let mut out = String::from("postgres://");
        out.push_str(&parse::encode_component(&self.user));
        if self.password.is_some() {
            out.push_str(":***");
        }
        out.push('@');
        if self.host.contains(':') && !self.host.starts_with('/') {
            out.push('[');
            out.push_str(&self.host);
            out.push(']');
        } else {
            out.push_str(&parse::encode_component(&self.host));
        }
        out.push(':');
        out.push_str(&self.port.to_string());
        out.push('/');
        out.push_str(&parse::encode_component(self.dbname()));
        let mut params: Vec<(&str, String)> = Vec::new();
        if self.ssl_mode != SslMode::Prefer {
            params.push(("sslmode", self.ssl_mode.to_string()));
        }
        for (k, v) in [
            ("sslrootcert", &self.ssl_root_cert),
            ("sslcert", &self.ssl_cert),
            ("sslkey", &self.ssl_key),
        ] {
            if let Some(p) = v {
                params.push((k, p.display().to_string()));
            }
        }
        if let Some(t) = self.connect_timeout {
            params.push(("connect_timeout", t.as_secs().to_string()));
        }
        if self.application_name != DEFAULT_APPLICATION_NAME {
            params.push(("application_name", self.application_name.clone()));
        }
        if self.publication != DEFAULT_PUBLICATION {
            params.push(("publication", self.publication.clone()));
        }
        if let Some(slot) = &self.slot {
            params.push(("slot", slot.clone()));
        }
        if self.snapshot_parallelism != DEFAULT_SNAPSHOT_PARALLELISM {
            params.push((
                "snapshot_parallelism",
                self.snapshot_parallelism.to_string(),
            ));
        }
        if self.snapshot_chunk_rows != DEFAULT_SNAPSHOT_CHUNK_ROWS {
            params.push(("snapshot_chunk_rows", self.snapshot_chunk_rows.to_string()));
        }
        if !self.streaming {
            params.push(("streaming", "off".to_string()));
        }
        if self.streaming_memory_kb != DEFAULT_STREAMING_MEMORY_KB {
            params.push(("streaming_memory_kb", self.streaming_memory_kb.to_string()));
        }
        if self.decoding_work_mem.as_deref() != Some(DEFAULT_DECODING_WORK_MEM) {
            params.push((
                "logical_decoding_work_mem",
                self.decoding_work_mem
                    .clone()
                    .unwrap_or_else(|| "server".to_string()),
            ));
        }
        if let Some(dir) = &self.spill_dir {
            params.push(("spill_dir", dir.display().to_string()));
        }
        for (i, (k, v)) in params.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(k);
            out.push('=');
            out.push_str(&parse::encode_component(v));
        }
        out
    }

    /// `host:port` (IPv6 in brackets; a socket directory as is), for messages.
    pub fn endpoint(&self) -> String {
        if self.is_unix_socket() {
            format!("{}/.s.PGSQL.{}", self.host.trim_end_matches('/'), self.port)
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether `host` names a Unix-socket directory (starts with `/`).
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    // ---- getters ----

    /// Host name, IP address, or Unix-socket directory.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Role name.
    pub fn user(&self) -> &str {
        &self.user
    }
    /// Password, if any.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }
    /// Database name (defaults to the user name).
    pub fn dbname(&self) -> &str {
        self.dbname.as_deref().unwrap_or(&self.user)
    }
    /// TLS policy.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }
    /// Root certificate file (`system` = bundled webpki roots).
    pub fn ssl_root_cert(&self) -> Option<&Path> {
        self.ssl_root_cert.as_deref()
    }
    /// Client certificate file.
    pub fn ssl_cert(&self) -> Option<&Path> {
        self.ssl_cert.as_deref()
    }
    /// Client private key file.
    pub fn ssl_key(&self) -> Option<&Path> {
        self.ssl_key.as_deref()
    }
    /// Connect timeout; `None` waits indefinitely.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }
    /// `application_name` reported to the server.
    pub fn application_name(&self) -> &str {
        &self.application_name
    }
    /// Publication to replicate.
    pub fn publication(&self) -> &str {
        &self.publication
    }
    /// Replication slot name: the configured one, or `powersync_<dbname>` sanitized.
    pub fn slot(&self) -> String {
        match &self.slot {
            Some(s) => s.clone(),
            None => default_slot_name(self.dbname()),
        }
    }
    /// Tables (or chunks) copied at once during the snapshot.
    pub fn snapshot_parallelism(&self) -> usize {
        self.snapshot_parallelism
    }
    /// Rows per snapshot chunk.
    pub fn snapshot_chunk_rows(&self) -> u64 {
        self.snapshot_chunk_rows
    }

    /// Whether large transactions are received while still in progress (PostgreSQL 14+).
    pub fn streaming(&self) -> bool {
        self.streaming
    }
    /// Bytes of in-progress transactions kept in memory before spilling to a file.
    pub fn streaming_memory_bytes(&self) -> u64 {
        self.streaming_memory_kb.saturating_mul(1024)
    }
    /// `logical_decoding_work_mem` for the connector's walsender session when streaming
    /// (`None`: the server's setting).
    pub fn decoding_work_mem(&self) -> Option<&str> {
        self.decoding_work_mem.as_deref()
    }
    /// Directory of the spill files of in-progress transactions (the system temporary
    /// directory unless set).
    pub fn spill_dir(&self) -> PathBuf {
        self.spill_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    // ---- builders ----

    /// Sets the host (name, IP address, or Unix-socket directory starting with `/`).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }
    /// Sets the port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// Sets the user.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }
    /// Sets the password.
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret::new(password));
        self
    }
    /// Removes the password.
    pub fn without_password(mut self) -> Self {
        self.password = None;
        self
    }
    /// Sets the database.
    pub fn with_dbname(mut self, dbname: impl Into<String>) -> Self {
        self.dbname = non_empty(dbname.into());
        self
    }
    /// Sets the TLS policy.
    pub fn with_ssl_mode(mut self, mode: SslMode) -> Self {
        self.ssl_mode = mode;
        self
    }
    /// Sets the root certificate file (PEM; `system` = bundled webpki roots).
    pub fn with_ssl_root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssl_root_cert = Some(path.into());
        self
    }
    /// Sets the client certificate and key files (PEM).
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.ssl_cert = Some(cert.into());
        self.ssl_key = Some(key.into());
        self
    }
    /// Sets the connect timeout (`None` = wait indefinitely).
    pub fn with_connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout.filter(|t| !t.is_zero());
        self
    }
    /// Sets `application_name`.
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }
    /// Sets the publication.
    pub fn with_publication(mut self, publication: impl Into<String>) -> Self {
        self.publication = publication.into();
        self
    }
    /// Sets the slot name. Checked when used; see [`validate_slot_name`].
    pub fn with_slot(mut self, slot: impl Into<String>) -> Self {
        self.slot = Some(slot.into());
        self
    }
    /// Sets the snapshot parallelism (values below 1 become 1).
    pub fn with_snapshot_parallelism(mut self, n: usize) -> Self {
        self.snapshot_parallelism = n.max(1);
        self
    }
    /// Sets the rows per snapshot chunk (values below 1 become 1).
    pub fn with_snapshot_chunk_rows(mut self, n: u64) -> Self {
        self.snapshot_chunk_rows = n.max(1);
        self
    }
    /// Turns the streaming of in-progress transactions on (default) or off.
    pub fn with_streaming(mut self, on: bool) -> Self {
        self.streaming = on;
        self
    }
    /// Sets the memory budget of in-progress transactions, in KiB (`0`: spill at once).
    pub fn with_streaming_memory_kb(mut self, kb: u64) -> Self {
        self.streaming_memory_kb = kb;
        self
    }
    /// Sets `logical_decoding_work_mem` of the connector's walsender session (a PostgreSQL
    /// memory value such as `4MB`), or `None` to keep the server's. Checked as
    /// [`PostgresConfig::parse`] checks it.
    pub fn with_decoding_work_mem(mut self, value: Option<&str>) -> Result<Self, SourceError> {
        self.decoding_work_mem = match value {
            Some(v) => parse_memory("logical_decoding_work_mem", v)?,
            None => None,
        };
        Ok(self)
    }
    /// Sets the directory of the spill files of in-progress transactions.
    pub fn with_spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }
}

/// The default slot name for a database: `powersync_<dbname>`, lower-cased, every character
/// outside `[a-z0-9_]` replaced by `_`, cut to 63 bytes.
pub fn default_slot_name(dbname: &str) -> String {
    let mut s: String = format!("powersync_{dbname}")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(MAX_SLOT_NAME_LEN);
    s
}

/// Checks a replication slot name the way PostgreSQL does: 1 to 63 characters from
/// `[a-z0-9_]`.
pub fn validate_slot_name(name: &str) -> Result<(), SourceError> {
    if name.is_empty() || name.len() > MAX_SLOT_NAME_LEN {
        return Err(SourceError::config(format!(
            "invalid slot name \"{name}\": must be 1 to {MAX_SLOT_NAME_LEN} characters long"
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(SourceError::config(format!(
            "invalid slot name \"{name}\": character '{bad}' not allowed; use lower-case \
             letters, digits and underscores"
        )));
    }
    Ok(())
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn parse_port(value: &str) -> Result<u16, SourceError> {
    match value.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(SourceError::config(format!(
            "invalid port \"{value}\": expected a number from 1 to 65535"
        ))),
    }
}

/// A PostgreSQL memory value (`512kB`, `4MB`, `1GB`, or a number of kB) of at least 64 kB,
/// normalized to `<n><unit>`; `server` means none (keep the server's).
fn parse_memory(key: &str, value: &str) -> Result<Option<String>, SourceError> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("server") {
        return Ok(None);
    }
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = v.split_at(digits);
    let kb_per_unit: u64 = match unit.trim() {
        "" | "kB" => 1,
        "MB" => 1024,
        "GB" => 1024 * 1024,
        _ => 0,
    };
    match n.parse::<u64>() {
        Ok(n) if kb_per_unit > 0 && n.saturating_mul(kb_per_unit) >= 64 => Ok(Some(format!(
            "{n}{}",
            if unit.trim().is_empty() {
                "kB"
            } else {
                unit.trim()
            }
        ))),
        _ => Err(SourceError::config(format!(
            "invalid {key} \"{value}\": expected a memory value of at least 64kB (e.g. 512kB, \
             4MB, 1GB), or server"
        ))),
    }
}

fn parse_on_off(key: &str, value: &str) -> Result<bool, SourceError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(SourceError::config(format!(
            "invalid {key} \"{value}\": expected on or off"
        ))),
    }
}

fn parse_positive(key: &str, value: &str) -> Result<u64, SourceError> {
    match value.trim().parse::<u64>() {
        Ok(n) if n > 0 && n <= usize::MAX as u64 => Ok(n),
        _ => Err(SourceError::config(format!(
            "invalid {key} \"{value}\": expected a whole number of at least 1"
        ))),
    }
}

#[cfg(test)]
mod streaming_tests {
    use super::*;

    #[test]
    fn streaming_parameters_parse_and_round_trip() {
        let cfg = PostgresConfig::parse("postgres://u@h/d").unwrap();
        assert!(cfg.streaming());
        assert_eq!(cfg.decoding_work_mem(), Some(DEFAULT_DECODING_WORK_MEM));
        assert_eq!(cfg.streaming_memory_bytes(), 32 * 1024 * 1024);

        let url = "postgres://u@h/d?streaming=off&streaming_memory_kb=0\
                   &logical_decoding_work_mem=512kB&spill_dir=/var/tmp";
        let cfg = PostgresConfig::parse(url).unwrap();
        assert!(!cfg.streaming());
        assert_eq!(cfg.streaming_memory_bytes(), 0);
        assert_eq!(cfg.decoding_work_mem(), Some("512kB"));
        assert_eq!(cfg.spill_dir(), PathBuf::from("/var/tmp"));
        assert_eq!(PostgresConfig::parse(&cfg.display_url()).unwrap(), cfg);

        let cfg =
            PostgresConfig::parse("postgres://u@h/d?logical_decoding_work_mem=server").unwrap();
        assert_eq!(cfg.decoding_work_mem(), None);
        assert_eq!(PostgresConfig::parse(&cfg.display_url()).unwrap(), cfg);
        for (v, want) in [("64", "64kB"), ("4MB", "4MB"), ("1GB", "1GB")] {
            let cfg = PostgresConfig::new()
                .with_decoding_work_mem(Some(v))
                .unwrap();
            assert_eq!(cfg.decoding_work_mem(), Some(want));
        }
        for bad in ["63kB", "4mb", "x", "", "4 TB", "1'; DROP"] {
            let url = format!("postgres://u@h/d?logical_decoding_work_mem={bad}");
            assert!(PostgresConfig::parse(&url).is_err(), "{bad}");
        }
        assert!(PostgresConfig::parse("postgres://u@h/d?streaming=maybe").is_err());
    }
}
