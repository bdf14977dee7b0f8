//! Connection settings: `mysql://` / `mariadb://` URLs and their query options.

use std::fmt;
use std::time::Duration;

use powersync_source_core::{Secret, SourceError};

/// TLS on the connections (option `ssl-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP (`disabled`, the default).
    Disabled,
    /// TLS required, certificate chain checked against the web PKI roots but the host name not
    /// (`required` / `verify_ca`).
    VerifyCa,
    /// TLS with chain and host name checked (`verify_identity`).
    VerifyIdentity,
}

/// Settings of a MySQL or MariaDB source, parsed from a URL with [`MySqlConfig::parse`].
///
/// `mysql://user:password@host:3306/database?server_id=4242&heartbeat=5`. The scheme may also
/// be `mariadb://`; the flavour is detected from the server, not from the scheme. Query options:
///
/// | option | default | meaning |
/// |---|---|---|
/// | `server_id` | derived from the host name, database and port, in 1 000 000 000..2 000 000 000 | the replica server id announced to the server; two streams with the same id make the server drop the older one |
/// | `heartbeat` | `5` (seconds) | heartbeat period the server sends on an idle binlog connection |
/// | `silence_timeout` | [`StreamOptions::silence_timeout`](powersync_source_core::StreamOptions::silence_timeout) | seconds; a binlog connection that sends nothing (not even a heartbeat) this long is treated as dead and reconnected; overrides the stream option |
/// | `connect_timeout` | `10` (seconds) | TCP connect + handshake timeout |
/// | `chunk_rows` | `10000` | rows per snapshot chunk (primary-key ranges) |
/// | `batch_events` | [`StreamOptions::batch_events`](powersync_source_core::StreamOptions::batch_events) | events per batch handed to the host; overrides the stream option |
/// | `checkpoint_table` | `_powersync_checkpoints` | table (in the URL's database, or `db.table`) written by `write_checkpoint` |
/// | `ssl-mode` | `disabled` | `disabled`, `required`/`verify_ca`, `verify_identity` |
#[derive(Clone, PartialEq)]
pub struct MySqlConfig {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<Secret>,
    pub(crate) database: String,
    pub(crate) server_id: u32,
    pub(crate) heartbeat: Duration,
    /// Set by the URL; otherwise the stream option applies.
    pub(crate) silence_timeout: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    pub(crate) chunk_rows: u64,
    /// Set by the URL; otherwise the stream option applies.
    pub(crate) batch_events: Option<usize>,
    pub(crate) checkpoint_table: (Option<String>, String),
    pub(crate) ssl_mode: SslMode,
}

impl fmt::Debug for MySqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .field("server_id", &self.server_id)
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

impl MySqlConfig {
    /// Parses a `mysql://` or `mariadb://` URL (see the type docs for the options). A malformed
    /// URL or an unknown option is a [`Config`](powersync_source_core::ErrorKind::Config)
    /// error; the password never appears in the message.
    pub fn parse(url: &str) -> Result<MySqlConfig, SourceError> {
        let shown = powersync_source_core::secret::redact_url(url);
        let bad = |what: String| {
            SourceError::config(format!("MySQL URL `{shown}`: {what}")).with_hint(
                "expected mysql://user:password@host:3306/database?server_id=4242 (or mariadb://)",
            )
        };
        let rest = url
            .trim()
            .strip_prefix("mysql://")
            .or_else(|| url.trim().strip_prefix("mariadb://"))
            .ok_or_else(|| bad("the scheme must be mysql:// or mariadb://".into()))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => ("root".to_owned(), None),
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (
                    percent_decode(u).map_err(bad)?,
                    Some(Secret::new(percent_decode(p).map_err(|_| {
                        bad("the password has a malformed %-escape".into())
                    })?)),
                ),
                None => (percent_decode(u).map_err(bad)?, None),
            },
        };
        let (host, port) = split_host_port(hostport).map_err(bad)?;
        let database = percent_decode(path.trim_end_matches('/')).map_err(bad)?;
        if database.contains('/') {
            return Err(bad(format!("`{database}` is not a database name")));
        }
        let mut config = MySqlConfig {
            server_id: 0,
            host,
            port,
            user,
            password,
            database,
            heartbeat: Duration::from_secs(5),
            silence_timeout: None,
            connect_timeout: Duration::from_secs(10),
            chunk_rows: 10_000,
            batch_events: None,
            checkpoint_table: (None, "_powersync_checkpoints".to_owned()),
            ssl_mode: SslMode::Disabled,
        };
        let mut server_id = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).map_err(bad)?;
            let secs = |v: &str| -> Result<Duration, SourceError> {
                let f: f64 = v
                    .parse()
                    .map_err(|_| bad(format!("`{k}` must be a number of seconds, got `{v}`")))?;
                if !(f > 0.0 && f < 86_400.0) {
                    return Err(bad(format!("`{k}` must be between 0 and 86400 seconds")));
                }
                Ok(Duration::from_secs_f64(f))
            };
            match k {
                "server_id" | "server-id" => {
                    let id: u32 = v.parse().map_err(|_| {
                        bad(format!("`server_id` must be 1..4294967295, got `{v}`"))
                    })?;
                    if id == 0 {
                        return Err(bad("`server_id` must not be 0".into()));
                    }
                    server_id = Some(id);
                }
                "heartbeat" => config.heartbeat = secs(&v)?,
                "silence_timeout" => config.silence_timeout = Some(secs(&v)?),
                "connect_timeout" => config.connect_timeout = secs(&v)?,
                "chunk_rows" => {
                    config.chunk_rows = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(format!("`chunk_rows` must be a positive integer, got `{v}`")))?
                }
                "batch_events" => {
                    config.batch_events = Some(v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(format!("`batch_events` must be a positive integer, got `{v}`")))?)
                }
                "checkpoint_table" => {
                    config.checkpoint_table = match v.split_once('.') {
                        Some((db, t)) if !db.is_empty() && !t.is_empty() => {
                            (Some(db.to_owned()), t.to_owned())
                        }
                        None if !v.is_empty() => (None, v.clone()),
                        _ => return Err(bad(format!("`checkpoint_table` `{v}` is not `table` or `db.table`"))),
                    }
                }
                "ssl-mode" | "ssl_mode" | "sslmode" => {
                    config.ssl_mode = match v.to_ascii_lowercase().as_str() {
                        "disabled" | "disable" => SslMode::Disabled,
                        "required" | "require" | "verify_ca" | "verify-ca" => SslMode::VerifyCa,
                        "verify_identity" | "verify-identity" | "verify-full" => {
                            SslMode::VerifyIdentity
                        }
                        _ => {
                            return Err(bad(format!(
                                "`ssl-mode` must be disabled, required, verify_ca or verify_identity, got `{v}`"
                            )))
                        }
                    }
                }
                other => {
                    return Err(bad(format!(
                        "unknown option `{other}` (known: server_id, heartbeat, silence_timeout, connect_timeout, chunk_rows, batch_events, checkpoint_table, ssl-mode)"
                    )))
                }
            }
        }
        if let Some(silence) = config.silence_timeout.filter(|s| *s <= config.heartbeat) {
            return Err(bad(format!(
                "`silence_timeout` ({silence:?}) must be longer than `heartbeat` ({:?})",
                config.heartbeat
            )));
        }
        config.server_id = server_id.unwrap_or_else(|| default_server_id(&config));
        Ok(config)
    }

    /// The database of the URL (empty when the URL names none).
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The replica server id announced on binlog connections.
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// The same settings with another user name.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The same settings with another password (e.g. from a secret store).
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret::new(password));
        self
    }

    /// The same settings with another replica server id.
    pub fn with_server_id(mut self, id: u32) -> Self {
        self.server_id = id.max(1);
        self
    }

    /// The same settings with another snapshot chunk size (rows).
    pub fn with_chunk_rows(mut self, rows: u64) -> Self {
        self.chunk_rows = rows.max(1);
        self
    }

    /// The same settings with another heartbeat period and silence timeout (at least twice
    /// the heartbeat; it overrides [`StreamOptions::silence_timeout`](powersync_source_core::StreamOptions::silence_timeout)).
    pub fn with_heartbeat(mut self, heartbeat: Duration, silence_timeout: Duration) -> Self {
        self.heartbeat = heartbeat;
        self.silence_timeout = Some(silence_timeout.max(heartbeat * 2));
        self
    }

    /// The same settings with another batch size (events; it overrides
    /// [`StreamOptions::batch_events`](powersync_source_core::StreamOptions::batch_events)).
    pub fn with_batch_events(mut self, events: usize) -> Self {
        self.batch_events = Some(events.max(1));
        self
    }

    /// `(database, table)` of the checkpoint table.
    pub(crate) fn checkpoint_table(&self) -> (String, String) {
        (
            self.checkpoint_table
                .0
                .clone()
                .unwrap_or_else(|| self.database.clone()),
            self.checkpoint_table.1.clone(),
        )
    }

    /// `host:port` for messages.
    pub(crate) fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A stable id per (host, port, database): stable so a restarted process replaces its own
/// old dump thread instead of leaving two, distinct per database so two hosts replicating
/// different databases of one server do not evict each other.
fn default_server_id(c: &MySqlConfig) -> u32 {
    // FNV-1a: tiny, deterministic across builds (std's hasher is not).
    let mut h: u32 = 0x811c_9dc5;
    for b in c
        .host
        .bytes()
        .chain(c.port.to_le_bytes())
        .chain(c.database.bytes())
        .chain(c.user.bytes())
    {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    1_000_000_000 + h % 1_000_000_000
}

fn split_host_port(s: &str) -> Result<(String, u16), String> {
    if s.is_empty() {
        return Ok(("127.0.0.1".into(), 3306));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed `[` in the host".to_owned())?;
        (h.to_owned(), after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (s.to_owned(), None),
        }
    };
    let port = match port {
        None | Some("") => 3306,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port `{p}` is not 1..65535"))?,
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    Ok((host, port))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "malformed %-escape".to_owned())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escape is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let c = MySqlConfig::parse(
            "mariadb://rep%40l:p%3Ass@db.example:3307/app?server_id=42&heartbeat=2&chunk_rows=5",
        )
        .unwrap();
        assert_eq!(c.user, "rep@l");
        assert_eq!(c.password.as_ref().unwrap().expose(), "p:ss");
        assert_eq!((c.host.as_str(), c.port), ("db.example", 3307));
        assert_eq!(c.database, "app");
        assert_eq!(c.server_id, 42);
        assert_eq!(c.heartbeat, Duration::from_secs(2));
        assert_eq!(c.chunk_rows, 5);
        assert!(!format!("{c:?}").contains("p:ss"));
    }

    #[test]
    fn rejects_garbage_without_showing_the_password() {
        for url in [
            "postgres://u:hunter2@h/db",
            "mysql://u:hunter2@h:99999/db",
            "mysql://u:hunter2@h/db?bogus=1",
            "mysql://u:hunter2@h/db?server_id=0",
        ] {
            let e = MySqlConfig::parse(url).unwrap_err();
            assert_eq!(e.kind(), powersync_source_core::ErrorKind::Config, "{url}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn defaults() {
        let c = MySqlConfig::parse("mysql://127.0.0.1/test").unwrap();
        assert_eq!(c.port, 3306);
        assert_eq!(c.user, "root");
        assert!((1_000_000_000..2_000_000_000).contains(&c.server_id));
        assert_eq!(
            c.checkpoint_table(),
            ("test".into(), "_powersync_checkpoints".into())
        );
    }
}
