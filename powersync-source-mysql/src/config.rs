//! Connection settings: `mysql://` / `mariadb://` URLs and their query options.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use powersync_source_core::{Secret, SourceError};
use url::{Host, Url};

/// TLS on the connections (option `ssl-mode`; the trusted roots: option `ssl-ca`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP (`disabled`, the default).
    Disabled,
    /// TLS required, certificate chain checked (against `ssl-ca`, else the web PKI roots) but
    /// the host name not (`required` / `verify_ca`).
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
/// | `binlog_check_interval` | `10` (seconds) | how often a separate connection sums the binlog from the stream's position to the head (`SHOW BINARY LOGS`) for the `powersync_source_retained_bytes` gauge |
/// | `chunk_rows` | `10000` | rows per snapshot chunk (primary-key ranges) |
/// | `batch_events` | [`StreamOptions::batch_events`](powersync_source_core::StreamOptions::batch_events) | events per batch handed to the host; overrides the stream option |
/// | `databases` | none | comma-separated schemas read whole (with the URL's database) when no table is named: `mysql://h/?databases=shop,billing` |
/// | `checkpoint_table` | `_powersync_checkpoints` | table written by `write_checkpoint`: in the URL's database (else the first of `databases`), or `db.table` |
/// | `ssl-mode` | `disabled` (`verify_ca` with `ssl-ca`) | `disabled`, `required`/`verify_ca`, `verify_identity` |
/// | `ssl-ca` | the Mozilla roots of `webpki-roots` | PEM file of the certificates that anchor the server's chain (e.g. a managed service's CA bundle); a server certificate listed in it is trusted as is (self-signed); read when connecting |
#[derive(Clone, PartialEq)]
pub struct MySqlConfig {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<Secret>,
    pub(crate) database: String,
    /// The `databases=` list: schemas read whole (with the URL's) when no table is named.
    pub(crate) databases: Vec<String>,
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
    /// The `ssl-ca` file: trusted roots instead of the web PKI's.
    pub(crate) ssl_ca: Option<PathBuf>,
    /// How often a separate connection measures the binlog between the stream's position and
    /// the head (`powersync_source_retained_bytes`).
    pub(crate) binlog_check_interval: Duration,
}

impl fmt::Debug for MySqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .field("databases", &self.databases)
            .field("server_id", &self.server_id)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_ca", &self.ssl_ca)
            .finish_non_exhaustive()
    }
}

impl MySqlConfig {
    /// Parses a `mysql://` or `mariadb://` URL (see the type docs for the options). A malformed
    /// URL or an unknown option is a [`Config`](powersync_source_core::ErrorKind::Config)
    /// error; the password never appears in the message.
    pub fn parse(url: &str) -> Result<MySqlConfig, SourceError> {
        let shown = redacted(url);
        let bad = |what: String| {
            SourceError::config(format!("MySQL URL `{shown}`: {what}")).with_hint(
                "expected mysql://user:password@host:3306/database?server_id=4242 (or mariadb://)",
            )
        };
        let text = url.trim();
        // `url` passes malformed escapes through; a `%` that is not an escape is an error
        // here, as in a password it would otherwise silently change the secret.
        check_escapes(text).map_err(bad)?;
        let parsed = Url::parse(text).map_err(|e| bad("not a URL".into()).with_source(e))?;
        if !matches!(parsed.scheme(), "mysql" | "mariadb") {
            return Err(bad("the scheme must be mysql:// or mariadb://".into()));
        }
        if parsed.fragment().is_some() {
            return Err(bad(
                "`#` starts a fragment: write it as %23 (also in a password)".into(),
            ));
        }
        let user = match decode(parsed.username()).map_err(bad)? {
            u if u.is_empty() => "root".to_owned(),
            u => u,
        };
        let password = match parsed.password() {
            Some(p) => {
                Some(Secret::new(decode(p).map_err(|_| {
                    bad("the password is not UTF-8 once %-decoded".into())
                })?))
            }
            None => None,
        };
        let host = match parsed.host() {
            None => String::new(),
            Some(Host::Domain(d)) => decode(d).map_err(bad)?,
            Some(Host::Ipv4(a)) => a.to_string(),
            Some(Host::Ipv6(a)) => a.to_string(),
        };
        let host = if host.is_empty() {
            "127.0.0.1".to_owned()
        } else {
            host
        };
        let port = match parsed.port() {
            None => 3306,
            Some(0) => return Err(bad("port 0 is not 1..65535".into())),
            Some(p) => p,
        };
        let path = parsed.path();
        let database =
            decode(path.strip_prefix('/').unwrap_or(path).trim_end_matches('/')).map_err(bad)?;
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
            databases: Vec::new(),
            heartbeat: Duration::from_secs(5),
            silence_timeout: None,
            connect_timeout: Duration::from_secs(10),
            chunk_rows: 10_000,
            batch_events: None,
            checkpoint_table: (None, "_powersync_checkpoints".to_owned()),
            ssl_mode: SslMode::Disabled,
            ssl_ca: None,
            binlog_check_interval: Duration::from_secs(10),
        };
        let mut server_id = None;
        let mut ssl_mode_given = false;
        for (k, v) in parsed.query_pairs() {
            let (k, v) = (k.as_ref(), v.into_owned());
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
                "databases" => {
                    for db in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                        if db.contains('/') {
                            return Err(bad(format!("`{db}` is not a database name")));
                        }
                        if !config.databases.iter().any(|d| d == db) {
                            config.databases.push(db.to_owned());
                        }
                    }
                }
                "silence_timeout" => config.silence_timeout = Some(secs(&v)?),
                "connect_timeout" => config.connect_timeout = secs(&v)?,
                "binlog_check_interval" => config.binlog_check_interval = secs(&v)?,
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
                "ssl-ca" | "ssl_ca" | "sslca" => {
                    if v.is_empty() {
                        return Err(bad("`ssl-ca` names no file".to_owned()));
                    }
                    config.ssl_ca = Some(PathBuf::from(v));
                }
                "ssl-mode" | "ssl_mode" | "sslmode" => {
                    ssl_mode_given = true;
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
                        "unknown option `{other}` (known: server_id, heartbeat, databases, silence_timeout, connect_timeout, binlog_check_interval, chunk_rows, batch_events, checkpoint_table, ssl-mode, ssl-ca)"
                    )))
                }
            }
        }
        if config.ssl_ca.is_some() && config.ssl_mode == SslMode::Disabled {
            if ssl_mode_given {
                return Err(bad(
                    "`ssl-ca` needs TLS: drop `ssl-mode=disabled` or use verify_ca / verify_identity"
                        .to_owned(),
                ));
            }
            // As the mysql client: a CA file alone asks for a verified chain.
            config.ssl_mode = SslMode::VerifyCa;
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

    /// The `databases=` list (schemas read whole, with the URL's, when no table is named).
    pub fn databases(&self) -> &[String] {
        &self.databases
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

    /// The same settings with another interval between two measures of the binlog the stream
    /// has not read yet (the `powersync_source_retained_bytes` gauge; URL option
    /// `binlog_check_interval`, default 10 s). The measure runs on its own connection, never on
    /// the replication connection.
    pub fn with_binlog_check_interval(mut self, interval: Duration) -> Self {
        self.binlog_check_interval = interval.max(Duration::from_millis(10));
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
                .or_else(|| (!self.database.is_empty()).then(|| self.database.clone()))
                .or_else(|| self.databases.first().cloned())
                .unwrap_or_default(),
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
        .chain(c.databases.iter().flat_map(|d| d.bytes()))
        .chain(c.user.bytes())
    {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    1_000_000_000 + h % 1_000_000_000
}

/// The URL for messages, without its password. The core's redaction ends the user info at the
/// first `/`, `?` or `#`; here the user info ends at the last `@`, so a password holding one of
/// those unescaped (a URL this parser refuses) is hidden too.
fn redacted(url: &str) -> String {
    let hidden = match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end + 3 => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    powersync_source_core::secret::redact_url(&hidden)
}

/// Checks that every `%` in `s` starts a two-digit hex escape.
fn check_escapes(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    for (i, _) in s.match_indices('%') {
        let ok = b
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if !ok {
            return Err("malformed %-escape (write a literal % as %25)".to_owned());
        }
    }
    Ok(())
}

/// A %-decoded URL component.
fn decode(s: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "a %-escape is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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
    fn several_databases() {
        let c = MySqlConfig::parse("mysql://u@h/?databases=shop,%20billing,shop").unwrap();
        assert_eq!(c.database(), "");
        assert_eq!(c.databases(), ["shop", "billing"]);
        // The checkpoint table goes to the first listed schema without a URL database.
        assert_eq!(
            c.checkpoint_table(),
            ("shop".into(), "_powersync_checkpoints".into())
        );
        let one = MySqlConfig::parse("mysql://u@h/app?databases=billing").unwrap();
        assert_eq!(one.checkpoint_table().0, "app");
        // Another selection is another replica: its own default server id.
        assert_ne!(
            c.server_id(),
            MySqlConfig::parse("mysql://u@h/").unwrap().server_id()
        );
        assert!(MySqlConfig::parse("mysql://u@h/?databases=a/b").is_err());
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
    fn hosts_escapes_and_options() {
        let c = MySqlConfig::parse(
            "mysql://u:a%25b%40c@[::1]:3310/my%20db?checkpoint_table=ops.marks&ssl-mode=REQUIRED",
        )
        .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 3310));
        assert_eq!(c.password.as_ref().unwrap().expose(), "a%b@c");
        assert_eq!(c.database, "my db");
        assert_eq!(c.checkpoint_table(), ("ops".into(), "marks".into()));
        assert_eq!(c.ssl_mode, SslMode::VerifyCa);
        // The last `@` ends the user info.
        let c = MySqlConfig::parse("mariadb://u:p@ss@db/app").unwrap();
        assert_eq!((c.host.as_str(), c.user.as_str()), ("db", "u"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "p@ss");
        for url in [
            "mysql://u:hun%zzter2@h/db",
            "mysql://u:hunter2#x@h/db",
            "mysql://u:hunter2@h/a/b",
            "mysql://u:hunter2@h:0/db",
            "mysql://u:hunter2@h/db?heartbeat=5&silence_timeout=5",
            "mysql://u:hunter2@h/db?batch_events=0",
        ] {
            let e = MySqlConfig::parse(url).unwrap_err();
            assert_eq!(e.kind(), powersync_source_core::ErrorKind::Config, "{url}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn ssl_ca() {
        let c = MySqlConfig::parse("mysql://h/db?ssl-ca=/etc/ssl/rds.pem").unwrap();
        assert_eq!(c.ssl_ca.as_deref(), Some(Path::new("/etc/ssl/rds.pem")));
        // A CA file alone asks for a verified chain, as the mysql client does.
        assert_eq!(c.ssl_mode, SslMode::VerifyCa);
        let c = MySqlConfig::parse("mysql://h/db?ssl-ca=%2Ftmp%2Fca.pem&ssl-mode=verify_identity")
            .unwrap();
        assert_eq!(c.ssl_mode, SslMode::VerifyIdentity);
        assert_eq!(c.ssl_ca.as_deref(), Some(Path::new("/tmp/ca.pem")));
        for bad in [
            "mysql://h/db?ssl-ca=/x.pem&ssl-mode=disabled",
            "mysql://h/db?ssl-ca=",
        ] {
            let e = MySqlConfig::parse(bad).unwrap_err();
            assert_eq!(e.kind(), powersync_source_core::ErrorKind::Config, "{e}");
            assert!(e.to_string().contains("ssl-ca"), "{e}");
        }
    }

    #[test]
    fn defaults() {
        let c = MySqlConfig::parse("mysql://127.0.0.1/test").unwrap();
        assert_eq!(c.port, 3306);
        assert_eq!(c.user, "root");
        assert!((1_000_000_000..2_000_000_000).contains(&c.server_id));
        // Batch size and silence timeout come from the stream options unless the URL sets them.
        assert_eq!((c.batch_events, c.silence_timeout), (None, None));
        let c = MySqlConfig::parse("mysql:///test?batch_events=9&silence_timeout=12").unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.batch_events, Some(9));
        assert_eq!(c.silence_timeout, Some(Duration::from_secs(12)));
        assert_eq!(
            c.checkpoint_table(),
            ("test".into(), "_powersync_checkpoints".into())
        );
    }
}
