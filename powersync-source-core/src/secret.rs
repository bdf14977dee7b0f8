//! Keeping passwords and keys out of errors, logs and `Debug` output.

use std::fmt;

/// A secret string (password, deploy key). `Debug` and `Display` print `***`; only
/// [`Secret::expose`] gives the value, and only connection code should call it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret value, for sending to the server and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Returns `url` with the password of its userinfo (and any `password=`/`key=`-like query
/// parameter) replaced by `***`, for use in messages. Works on any `scheme://user:pass@host`
/// string and on libpq key-value strings; never fails.
pub fn redact_url(url: &str) -> String {
    let mut out = if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        // The userinfo normally ends at the last `@` of the authority; a password holding an
        // unescaped `/`, `?` or `#` ends the authority early, so then take the last `@` of the
        // whole string (over-redacting a rare `@` in a query beats showing a password).
        let at = rest[..authority_end].rfind('@').or_else(|| rest.rfind('@'));
        match at {
            Some(at) => {
                let userinfo = &rest[..at];
                let user = match userinfo.find(':') {
                    Some(colon) => format!("{}:***", &userinfo[..colon]),
                    None => userinfo.to_string(),
                };
                format!("{}{}{}", &url[..scheme_end + 3], user, &rest[at..])
            }
            None => url.to_string(),
        }
    } else {
        url.to_string()
    };
    for key in [
        "password",
        "passwd",
        "pwd",
        "sslpassword",
        "deploy_key",
        "key",
        "token",
    ] {
        out = redact_param(&out, key);
    }
    out
}

fn redact_param(s: &str, key: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(found) = lower[i..].find(key) {
        let start = i + found;
        let boundary_ok =
            start == 0 || matches!(s.as_bytes()[start - 1], b'?' | b'&' | b' ' | b';');
        let mut eq = start + key.len();
        while eq < s.len() && s.as_bytes()[eq] == b' ' {
            eq += 1;
        }
        if !boundary_ok || eq >= s.len() || s.as_bytes()[eq] != b'=' {
            out.push_str(&s[i..start + key.len()]);
            i = start + key.len();
            continue;
        }
        let mut v = eq + 1;
        while v < s.len() && s.as_bytes()[v] == b' ' {
            v += 1;
        }
        let end = if v < s.len() && s.as_bytes()[v] == b'\'' {
            // libpq quoted value: up to the closing unescaped quote.
            let mut j = v + 1;
            while j < s.len() {
                match s.as_bytes()[j] {
                    b'\\' => j += 2,
                    b'\'' => {
                        j += 1;
                        break;
                    }
                    _ => j += 1,
                }
            }
            j.min(s.len())
        } else {
            s[v..].find(['&', ' ', ';', '#']).map_or(s.len(), |e| v + e)
        };
        out.push_str(&s[i..eq + 1]);
        out.push_str("***");
        i = end;
    }
    out.push_str(&s[i..]);
    out
}
