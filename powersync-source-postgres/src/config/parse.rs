//! The two text forms of a configuration, as `(parameter, value)` pairs in order of
//! precedence (a later pair wins): `postgres://` URLs (on the `url` and `percent-encoding`
//! crates) and libpq's key-value strings (no crate reads those without tokio-postgres'
//! `Config`, which rejects this connector's own parameters).

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use powersync_source_core::SourceError;
use url::{Host, ParseError, Url};

/// What [`encode_component`] leaves alone: RFC 3986's unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The parameters of a URL (`postgres://` or `postgresql://`, any case) or a key-value string.
pub(super) fn pairs(s: &str) -> Result<Vec<(String, String)>, SourceError> {
    let trimmed = s.trim();
    match trimmed.find("://") {
        Some(idx) => {
            let scheme = &trimmed[..idx];
            if scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
            {
                parse_url(trimmed, idx + 3)
            } else if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            {
                Err(SourceError::config(format!(
                    "unsupported URL scheme \"{scheme}\": use postgres:// or postgresql://, or a \
                     key-value string such as \"host=... user=...\""
                )))
            } else {
                parse_key_values(trimmed)
            }
        }
        None => parse_key_values(trimmed),
    }
}

/// A URL's parameters: user, password, host, port, database, then the query parameters
/// (which win over the URL parts). `authority_at` is where the part after `://` starts.
fn parse_url(s: &str, authority_at: usize) -> Result<Vec<(String, String)>, SourceError> {
    let authority_end = s[authority_at..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| authority_at + i);
    if s[authority_at..authority_end]
        .rsplit('@')
        .next()
        .is_some_and(|hosts| hosts.contains(','))
    {
        return Err(SourceError::config(
            "multiple hosts in the URL are not supported: give one host",
        ));
    }
    // The errors name the part, never the text (it may hold the password).
    let url = Url::parse(s).map_err(|e| {
        let what = match e {
            ParseError::InvalidPort => "invalid port in the URL: expected a number from 1 to 65535",
            ParseError::InvalidIpv6Address => "invalid URL: malformed IPv6 address in brackets",
            ParseError::EmptyHost => "invalid URL: empty host",
            _ => "invalid URL",
        };
        SourceError::config(what).with_source(e)
    })?;
    if url.fragment().is_some() {
        return Err(SourceError::config(
            "invalid URL: '#' must be percent-encoded (%23)",
        ));
    }
    let mut pairs = Vec::new();
    if !url.username().is_empty() {
        pairs.push(("user".to_string(), decode(url.username(), "user name")?));
    }
    match url.password() {
        Some(password) => pairs.push(("password".to_string(), decode(password, "password")?)),
        // `user:@host`: an empty password, which the URL standard drops (libpq keeps it).
        None if s[authority_at..authority_end]
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':')) =>
        {
            pairs.push(("password".to_string(), String::new()));
        }
        None => {}
    }
    match url.host() {
        Some(Host::Ipv6(addr)) => pairs.push(("host".to_string(), addr.to_string())),
        Some(Host::Ipv4(addr)) => pairs.push(("host".to_string(), addr.to_string())),
        // A non-special scheme keeps its host percent-encoded (`%2Frun%2Fpostgresql` is
        // the directory of a Unix socket).
        Some(Host::Domain(host)) if !host.is_empty() => {
            pairs.push(("host".to_string(), decode(host, "host")?));
        }
        _ => {}
    }
    if let Some(port) = url.port() {
        pairs.push(("port".to_string(), port.to_string()));
    }
    let path = url.path().strip_prefix('/').unwrap_or(url.path());
    if !path.is_empty() {
        pairs.push(("dbname".to_string(), decode(path, "database name")?));
    }
    // Split by hand: form decoding (`query_pairs`) would read `+` as a space, libpq does not.
    for part in url.query().unwrap_or_default().split('&') {
        if part.is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Err(SourceError::config(format!(
                "invalid URL query parameter \"{}\": expected key=value",
                decode(part, "query parameter")?
            )));
        };
        let key = decode(k, "query parameter name")?;
        let what = if key == "password" {
            "password"
        } else {
            "query parameter value"
        };
        let value = decode(v, what)?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Percent-decodes one URL part (`what` names it in the error, which never quotes it). A `%`
/// not followed by two hex digits is an error (decoding would keep it, hiding a typo in a
/// password).
fn decode(s: &str, what: &str) -> Result<String, SourceError> {
    let bytes = s.as_bytes();
    let escapes_ok = s.match_indices('%').all(|(i, _)| {
        bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_ok {
        return Err(SourceError::config(format!(
            "invalid percent-encoding in the {what} of the URL: '%' must be followed by two hex \
             digits"
        )));
    }
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            SourceError::config(format!(
                "invalid percent-encoding in the {what} of the URL: not UTF-8"
            ))
        })
}

/// Percent-encodes one URL part (everything but RFC 3986's unreserved characters).
pub(super) fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Parses libpq's `key = value key2='quoted \' value'` syntax.
fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, SourceError> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(SourceError::config(format!(
                "invalid connection string: missing \"=\" after \"{key}\" (expected \
                 key=value pairs or a postgres:// URL)"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(e) => value.push(e),
                        None => break,
                    },
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(SourceError::config(format!(
                    "invalid connection string: unterminated quoted value for \"{key}\""
                )));
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(SourceError::config(format!(
                    "invalid connection string: missing space after the quoted value of \"{key}\""
                )));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(e) = chars.next() {
                        value.push(e);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if key.is_empty() {
            return Err(SourceError::config(
                "invalid connection string: empty parameter name before \"=\"",
            ));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}
