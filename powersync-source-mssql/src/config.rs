//! `MssqlConfig`: the connection URL and its options.

use std::fmt;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use powersync_source_core::{Secret, SourceError};
use url::{Host, Url};

/// Default port of SQL Server.
pub const DEFAULT_PORT: u16 = 1433;

/// How the TDS connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encrypt {
    /// TLS for the whole connection (`encrypt=true`, the default; Azure SQL requires it).
    Required,
    /// TLS for the login packet only, as SQL Server does when a client asks for no encryption
    /// (`encrypt=false`).
    Off,
    /// No TLS at all, not even for the login (`encrypt=none`; only for servers without a
    /// certificate on a trusted network: the password crosses the wire in clear).
    NotSupported,
}

/// Connection settings and polling options of a SQL Server source.
///
/// Parsed from `sqlserver://user:password@host:1433/database?option=value&…` (the scheme
/// `mssql://` is accepted too). User and password are percent-decoded. Options:
///
/// | option | default | meaning |
/// |---|---|---|
/// | `encrypt` | `true` | `true` (TLS for the whole connection), `false` (TLS for the login only), `none` (no TLS) |
/// | `trust_server_certificate` | `false` | accept any server certificate (self-signed test servers); never in production |
/// | `polling_interval_ms` | `1000` | pause between two polls of the change tables once caught up |
/// | `polling_batch_size` | `10` | most transactions (rows of `cdc.lsn_time_mapping`) read per poll window |
/// | `snapshot_chunk_rows` | `10000` | rows per primary-key chunk of the snapshot |
/// | `page_rows` | `5000` | change rows fetched per query of one capture instance (bounds memory inside big transactions) |
/// | `connect_timeout_ms` | `15000` | TCP connect and login timeout |
/// | `application_name` | `powersync` | shown in `sys.dm_exec_sessions` |
///
/// `Debug` and [`MssqlConfig::redacted_url`] never show the password.
#[derive(Clone)]
pub struct MssqlConfig {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database whose CDC tables are read.
    pub database: String,
    /// SQL login.
    pub user: String,
    /// Its password.
    pub password: Secret,
    /// TLS mode.
    pub encrypt: Encrypt,
    /// Accept any server certificate.
    pub trust_server_certificate: bool,
    /// Pause between polls once caught up.
    pub polling_interval: Duration,
    /// Most transactions per poll window.
    pub polling_batch_size: u32,
    /// Rows per snapshot chunk.
    pub snapshot_chunk_rows: u32,
    /// Change rows fetched per query of one capture instance.
    pub page_rows: u32,
    /// Connect and login timeout.
    pub connect_timeout: Duration,
    /// Application name sent at login.
    pub application_name: String,
}

impl fmt::Debug for MssqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MssqlConfig")
            .field("url", &self.redacted_url())
            .field("polling_interval", &self.polling_interval)
            .field("polling_batch_size", &self.polling_batch_size)
            .finish()
    }
}

impl MssqlConfig {
    /// Parses a `sqlserver://` URL (see the type docs for the options). Every problem is a
    /// [`powersync_source_core::ErrorKind::Config`] error that never shows the password.
    pub fn parse(url: &str) -> Result<MssqlConfig, SourceError> {
        let url = url.trim();
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("sqlserver" | "mssql")) {
            return Err(SourceError::config(
                "a SQL Server URL starts with `sqlserver://` (sqlserver://user:password@host:1433/database)",
            ));
        }
        // Only the shape is reported: url's messages never repeat the input, but the input
        // holds the password.
        let parsed = Url::parse(url).map_err(|e| {
            SourceError::config(
                "the SQL Server URL is malformed (sqlserver://user:password@host:1433/database)",
            )
            .with_source(e)
        })?;
        if parsed.username().is_empty() {
            return Err(SourceError::config(
                "the URL has no `user:password@` part; SQL logins need both",
            ));
        }
        let user = decode(parsed.username(), "user")?;
        let password = decode(parsed.password().unwrap_or_default(), "password")?;
        let host = match parsed.host() {
            Some(Host::Domain(h)) if !h.is_empty() => decode(h, "host")?,
            Some(Host::Ipv4(a)) => a.to_string(),
            Some(Host::Ipv6(a)) => a.to_string(),
            _ => return Err(SourceError::config("the URL names no host")),
        };
        let port = match parsed.port() {
            None => DEFAULT_PORT,
            Some(0) => {
                return Err(SourceError::config(
                    "port `0` is not a number from 1 to 65535",
                ))
            }
            Some(p) => p,
        };
        let database = decode(parsed.path().trim_matches('/'), "database")?;
        if database.is_empty() {
            return Err(SourceError::config(
                "the URL names no database (sqlserver://user:password@host:1433/DATABASE): CDC is enabled per database",
            ));
        }
        let mut config = MssqlConfig {
            host,
            port,
            database,
            user,
            password: Secret::new(password),
            encrypt: Encrypt::Required,
            trust_server_certificate: false,
            polling_interval: Duration::from_millis(1000),
            polling_batch_size: 10,
            snapshot_chunk_rows: 10_000,
            page_rows: 5000,
            connect_timeout: Duration::from_secs(15),
            application_name: "powersync".into(),
        };
        for (key, value) in parsed.query_pairs() {
            config.set_option(&key, &value)?;
        }
        Ok(config)
    }

    fn set_option(&mut self, key: &str, value: &str) -> Result<(), SourceError> {
        match key {
            "encrypt" => {
                self.encrypt = match value.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "required" | "strict" => Encrypt::Required,
                    "false" | "no" | "off" => Encrypt::Off,
                    "none" | "not_supported" => Encrypt::NotSupported,
                    _ => {
                        return Err(SourceError::config(format!(
                            "encrypt={value}: expected true, false or none"
                        )))
                    }
                }
            }
            "trust_server_certificate" | "trustservercertificate" => {
                self.trust_server_certificate = parse_bool(key, value)?
            }
            "polling_interval_ms" => {
                self.polling_interval = Duration::from_millis(parse_num(key, value, 1, 3_600_000)?)
            }
            "polling_batch_size" => {
                self.polling_batch_size = parse_num(key, value, 1, 1_000_000)? as u32
            }
            "snapshot_chunk_rows" => {
                self.snapshot_chunk_rows = parse_num(key, value, 1, 10_000_000)? as u32
            }
            "page_rows" => self.page_rows = parse_num(key, value, 1, 10_000_000)? as u32,
            "connect_timeout_ms" => {
                self.connect_timeout = Duration::from_millis(parse_num(key, value, 1, 3_600_000)?)
            }
            "application_name" => self.application_name = value.to_string(),
            other => {
                return Err(SourceError::config(format!(
                    "unknown option `{other}`; known: encrypt, trust_server_certificate, polling_interval_ms, polling_batch_size, snapshot_chunk_rows, page_rows, connect_timeout_ms, application_name"
                )))
            }
        }
        Ok(())
    }

    /// The URL without the password (for logs and errors).
    pub fn redacted_url(&self) -> String {
        format!(
            "sqlserver://{}:***@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, SourceError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(SourceError::config(format!(
            "{key}={v}: expected true or false"
        ))),
    }
}

fn parse_num(key: &str, v: &str, min: u64, max: u64) -> Result<u64, SourceError> {
    v.parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            SourceError::config(format!("{key}={v}: expected a number from {min} to {max}"))
        })
}

/// Percent-decodes one part of the URL. A `%` not followed by two hex digits is refused
/// (`percent-encoding` would keep it as is, silently changing a password); the error never
/// repeats the text, which may be the password.
fn decode(s: &str, what: &str) -> Result<String, SourceError> {
    let bytes = s.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(SourceError::config(format!(
            "the {what} in the URL has a bad %-escape"
        )));
    }
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| SourceError::config(format!("the {what} in the URL is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_url() {
        let c = MssqlConfig::parse("sqlserver://sa:p%40ss@db.example:1444/shop?encrypt=true&trust_server_certificate=false&polling_interval_ms=250&polling_batch_size=7").unwrap();
        assert_eq!(c.host, "db.example");
        assert_eq!(c.port, 1444);
        assert_eq!(c.database, "shop");
        assert_eq!(c.user, "sa");
        assert_eq!(c.password.expose(), "p@ss");
        assert_eq!(c.encrypt, Encrypt::Required);
        assert_eq!(c.polling_interval, Duration::from_millis(250));
        assert_eq!(c.polling_batch_size, 7);
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn passwords_ipv6_hosts_and_escaped_names() {
        // An unescaped `@` in the password: the last `@` ends the user info.
        let c = MssqlConfig::parse("mssql://sa:p@ss%2Fw%3Ard@[::1]/my%20db").unwrap();
        assert_eq!(c.password.expose(), "p@ss/w:rd");
        assert_eq!(c.host, "::1");
        assert_eq!(c.port, 1433);
        assert_eq!(c.database, "my db");
        let c =
            MssqlConfig::parse("sqlserver://u:secret@[2001:db8::1]:1500/db?application_name=a%26b")
                .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("2001:db8::1", 1500));
        assert_eq!(c.application_name, "a&b");
    }

    #[test]
    fn defaults_and_errors() {
        let c = MssqlConfig::parse("sqlserver://u:secret@h/db").unwrap();
        assert_eq!(c.port, 1433);
        assert_eq!(c.polling_batch_size, 10);
        assert_eq!(c.polling_interval, Duration::from_secs(1));
        for bad in [
            "postgres://u:p@h/db",
            "sqlserver://u:secret@h",
            "sqlserver://h/db",
            "sqlserver://u:secret@h:0/db",
            "sqlserver://u:secret@h/db?polling_batch_size=0",
            "sqlserver://u:secret@h/db?nope=1",
            "sqlserver://u:sec%zzret@h/db",
            "sqlserver://u:secret@h:70000/db",
            "sqlserver://u:secret@/db",
            "sqlserver://u:sec%ffret@h/db",
        ] {
            let e = MssqlConfig::parse(bad).unwrap_err();
            assert_eq!(e.kind(), powersync_source_core::ErrorKind::Config, "{bad}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
    }
}
