//! Splitting a `mongodb://` or `mongodb+srv://` connection string into the parts this connector
//! reads, checking its percent escapes, and rendering it for the driver and, without secrets,
//! for messages.
//!
//! The `url` crate cannot parse these strings (a host list such as `h1:27017,h2` is no URL
//! authority), so the string is split as MongoDB's Connection String specification says:
//! scheme, `userinfo@` (up to the last `@` before the first `/`), host list, `/database`,
//! `?options`. Escapes are decoded with the `percent-encoding` crate after checking that every
//! `%` starts a two-hex-digit escape: that crate passes a malformed escape through unchanged,
//! which would hand the driver (or the database name) something the user did not write.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use powersync_source_core::SourceError;

const SCHEMES: [&str; 2] = ["mongodb://", "mongodb+srv://"];

/// Characters the specification requires to be percent-encoded inside a user name or password.
const RESERVED_IN_USERINFO: [char; 6] = ['/', '?', '#', '[', ']', '@'];

/// One connection string, split. Fields borrow the raw (still encoded) text.
#[derive(Debug)]
pub(crate) struct ConnectionString<'a> {
    scheme: &'a str,
    /// `user` or `user:password`, still encoded.
    userinfo: Option<&'a str>,
    hosts: &'a str,
    /// The database as written (encoded).
    database_raw: &'a str,
    /// The database, decoded.
    pub database: String,
    /// `key=value` pairs as written (encoded), in order.
    pub options: Vec<UrlOption<'a>>,
}

/// One `key=value` of the query, as written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UrlOption<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

impl UrlOption<'_> {
    /// The decoded key.
    pub fn name(&self) -> Result<Cow<'_, str>, SourceError> {
        decode(self.key).map_err(|e| e.at(&format!("the name of option `{}`", self.key)))
    }

    /// The decoded value. The message of a failure names the key, never the value (it may be
    /// a secret).
    pub fn decoded(&self) -> Result<Cow<'_, str>, SourceError> {
        decode(self.value).map_err(|e| e.at(&format!("the value of option `{}`", self.key)))
    }

    /// Whether the value is a secret and must not appear in messages.
    fn is_secret(&self) -> bool {
        let key = self.key.to_ascii_lowercase();
        ["password", "secret", "token"]
            .iter()
            .any(|s| key.contains(s))
            // May carry AWS_SESSION_TOKEN.
            || key == "authmechanismproperties"
    }
}

impl<'a> ConnectionString<'a> {
    /// Splits `url` (already trimmed). Errors are
    /// [`ErrorKind::Config`](powersync_source_core::ErrorKind::Config) and never quote the user
    /// name, password or a secret option.
    pub fn split(url: &'a str) -> Result<Self, SourceError> {
        let (scheme, rest) = SCHEMES
            .iter()
            .find_map(|s| url.strip_prefix(s).map(|rest| (&url[..s.len()], rest)))
            .ok_or_else(|| {
                SourceError::config(
                    "not a MongoDB URL: expected mongodb://host/database or mongodb+srv://host/database",
                )
            })?;
        let (before_slash, after_slash) = match rest.find('/') {
            Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
            None => (rest, None),
        };
        let (userinfo, hosts) = match before_slash.rfind('@') {
            Some(at) => (Some(&before_slash[..at]), &before_slash[at + 1..]),
            None => (None, before_slash),
        };
        if let Some(userinfo) = userinfo {
            if userinfo.contains(RESERVED_IN_USERINFO) || userinfo.matches(':').count() > 1 {
                return Err(unescaped_userinfo());
            }
            decode(userinfo).map_err(|e| e.at("the user name or password"))?;
        }
        if hosts.is_empty() {
            return Err(SourceError::config("the URL names no host"));
        }
        if hosts.contains('?') {
            // `mongodb://host?opt=1` (no `/`), or a `?` in a password cut the authority short.
            return Err(SourceError::config(
                "the URL names no database: the database to replicate is the URL path",
            )
            .with_hint("e.g. mongodb://user:pass@host:27017/app?replicaSet=rs0"));
        }
        decode(hosts).map_err(|e| e.at("the host list"))?;
        let after_slash = after_slash.unwrap_or("");
        let (database_raw, query) = match after_slash.split_once('?') {
            Some((path, query)) => (path, query),
            None => (after_slash, ""),
        };
        if userinfo.is_none() && database_raw.contains('@') {
            // `mongodb://user:pa/ss@host/db`: the password's `/` ended the authority.
            return Err(unescaped_userinfo());
        }
        let database = decode(database_raw)
            .map_err(|e| e.at("the database name"))?
            .into_owned();
        let options = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                UrlOption { key, value }
            })
            .collect::<Vec<_>>();
        for option in &options {
            option.name()?;
            option.decoded()?;
        }
        Ok(ConnectionString {
            scheme,
            userinfo,
            hosts,
            database_raw,
            database,
            options,
        })
    }

    /// The connection string with only `options`, as written: what the driver gets.
    pub fn render<'o>(&self, options: impl IntoIterator<Item = &'o UrlOption<'o>>) -> String
    where
        'a: 'o,
    {
        self.render_with(options, false)
    }

    /// [`render`](Self::render) with the password and secret option values replaced by `***`.
    pub fn render_redacted<'o>(
        &self,
        options: impl IntoIterator<Item = &'o UrlOption<'o>>,
    ) -> String
    where
        'a: 'o,
    {
        self.render_with(options, true)
    }

    fn render_with<'o>(
        &self,
        options: impl IntoIterator<Item = &'o UrlOption<'o>>,
        redact: bool,
    ) -> String
    where
        'a: 'o,
    {
        let mut out = String::from(self.scheme);
        if let Some(userinfo) = self.userinfo {
            match userinfo.split_once(':') {
                Some((user, _)) if redact => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                _ => out.push_str(userinfo),
            }
            out.push('@');
        }
        out.push_str(self.hosts);
        out.push('/');
        out.push_str(self.database_raw);
        for (i, option) in options.into_iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(option.key);
            out.push('=');
            out.push_str(if redact && option.is_secret() {
                "***"
            } else {
                option.value
            });
        }
        out
    }
}

fn unescaped_userinfo() -> SourceError {
    SourceError::config(
        "the URL's user name or password contains an unescaped `/`, `?`, `#`, `[`, `]`, `@` or a second `:`",
    )
    .with_hint("percent-encode them in the URL (e.g. `/` as %2F, `@` as %40, `:` as %3A)")
}

/// Why a part of the URL could not be decoded.
enum Malformed {
    /// A `%` that does not start a two-hex-digit escape.
    Escape,
    /// Escapes that decode to bytes that are not UTF-8.
    Utf8,
}

impl Malformed {
    fn at(self, place: &str) -> SourceError {
        match self {
            Malformed::Escape => SourceError::config(format!(
                "{place} in the URL has a malformed percent escape: `%` must be followed by two hex digits"
            ))
            .with_hint("write a literal `%` as %25"),
            Malformed::Utf8 => SourceError::config(format!(
                "{place} in the URL is not valid UTF-8 once its percent escapes are decoded"
            )),
        }
    }
}

/// Percent-decodes `s`, refusing malformed escapes and escapes that decode to invalid UTF-8.
fn decode(s: &str) -> Result<Cow<'_, str>, Malformed> {
    let bytes = s.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(Malformed::Escape);
        }
    }
    percent_decode_str(s)
        .decode_utf8()
        .map_err(|_| Malformed::Utf8)
}
