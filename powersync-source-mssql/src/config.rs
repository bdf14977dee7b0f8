//! `MssqlConfig`: the connection URL and its options.

use std::fmt;
use std::time::Duration;

use powersync_source_core::{Secret, SourceError};

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
        let rest = url
            .strip_prefix("sqlserver://")
            .or_else(|| url.strip_prefix("mssql://"))
            .ok_or_else(|| {
                SourceError::config(
                    "a SQL Server URL starts with `sqlserver://` (sqlserver://user:password@host:1433/database)",
                )
            })?;
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        // The password may contain `@` or `/` only percent-encoded; the last `@` splits.
        let (userinfo, hostpart) = main.rsplit_once('@').ok_or_else(|| {
            SourceError::config("the URL has no `user:password@` part; SQL logins need both")
        })?;
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (decode(u, "user")?, decode(p, "password")?),
            None => (decode(userinfo, "user")?, String::new()),
        };
        if user.is_empty() {
            return Err(SourceError::config("the URL names no user"));
        }
        let (hostport, database) = match hostpart.split_once('/') {
            Some((h, d)) => (h, decode(d.trim_end_matches('/'), "database")?),
            None => (hostpart, String::new()),
        };
        if database.is_empty() {
            return Err(SourceError::config(
                "the URL names no database (sqlserver://user:password@host:1433/DATABASE): CDC is enabled per database",
            ));
        }
        let (host, port) = split_host_port(hostport)?;
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
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value, key)?;
            config.set_option(key, &value)?;
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

fn split_host_port(s: &str) -> Result<(String, u16), SourceError> {
    if s.is_empty() {
        return Err(SourceError::config("the URL names no host"));
    }
    // `[::1]:1433` for IPv6 literals.
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest
            .split_once(']')
            .ok_or_else(|| SourceError::config(format!("`{s}`: unclosed `[` in the host")))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => parse_port(p)?,
            None if tail.is_empty() => DEFAULT_PORT,
            None => return Err(SourceError::config(format!("`{s}` is not host:port"))),
        };
        return Ok((h.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), parse_port(p)?)),
        None => Ok((s.to_string(), DEFAULT_PORT)),
    }
}

fn parse_port(p: &str) -> Result<u16, SourceError> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| SourceError::config(format!("port `{p}` is not a number from 1 to 65535")))
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

/// Percent-decoding; the error never repeats the text (it may be the password).
fn decode(s: &str, what: &str) -> Result<String, SourceError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    SourceError::config(format!("the {what} in the URL has a bad %-escape"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
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
        ] {
            let e = MssqlConfig::parse(bad).unwrap_err();
            assert_eq!(e.kind(), powersync_source_core::ErrorKind::Config, "{bad}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
    }
}
