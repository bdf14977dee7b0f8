//! Error kinds, retryability and secret redaction.

use powersync_source_core::secret::redact_url;
use powersync_source_core::{ErrorKind, RetryPolicy, Secret, SourceError};

#[test]
fn only_connection_errors_are_retryable() {
    use ErrorKind::*;
    for kind in [
        Config,
        Auth,
        Prerequisite,
        HistoryLost,
        Schema,
        Decode,
        Unsupported,
    ] {
        assert!(!SourceError::new(kind, "x").is_retryable(), "{kind:?}");
    }
    assert!(SourceError::connection("reset").is_retryable());
}

#[test]
fn display_has_kind_message_cause_and_hint() {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    let e = SourceError::connection("connecting to 127.0.0.1:5432")
        .with_source(io)
        .with_hint("is the server running?")
        .context("replication");
    assert_eq!(
        e.to_string(),
        "connection error: replication: connecting to 127.0.0.1:5432: refused (hint: is the server running?)"
    );
    assert!(std::error::Error::source(&e).is_some());
    let d = SourceError::decode_value("public.t", "c", "numeric", "bad digit");
    assert_eq!(
        d.message(),
        "column c (numeric) of table public.t: bad digit"
    );
}

#[test]
fn passwords_never_leak() {
    let url =
        "postgres://alice:s3cr%40t-pw@db.example.com:5432/app?sslmode=require&password=s3cr%40t-pw";
    let redacted = redact_url(url);
    assert!(!redacted.contains("s3cr"), "{redacted}");
    assert!(redacted.contains("alice:***@db.example.com"), "{redacted}");
    let kv = "host=db user=alice password='s3cr et' dbname=app";
    let r = redact_url(kv);
    assert!(!r.contains("s3cr"), "{r}");
    assert!(r.contains("dbname=app"), "{r}");
    assert_eq!(
        redact_url("mysql://root@h:3306/db"),
        "mysql://root@h:3306/db"
    );
    // Unescaped `/`, `?`, `#` in a password end the authority early; still redacted.
    for pw in ["hunter2#x", "hunt/er2", "hun?ter2"] {
        let r = redact_url(&format!("mysql://u:{pw}@h:3306/db"));
        assert!(!r.contains("hunt") && !r.contains("ter2"), "{r}");
        assert!(r.ends_with("@h:3306/db"), "{r}");
    }

    let secret = Secret::new("s3cr@t-pw");
    assert_eq!(format!("{secret:?} {secret}"), "*** ***");
    let e = SourceError::auth(format!(
        "password authentication failed for {}",
        redact_url(url)
    ));
    assert!(!format!("{e} {e:?}").contains("s3cr"));
}

#[test]
fn backoff_grows_caps_and_gives_up() {
    let policy = RetryPolicy {
        initial_delay: std::time::Duration::from_millis(100),
        max_delay: std::time::Duration::from_millis(800),
        multiplier: 2.0,
        jitter: 0.0,
        max_attempts: Some(5),
        give_up_after: None,
    };
    let mut b = policy.backoff();
    let err = SourceError::connection("x");
    let delays: Vec<u128> = std::iter::from_fn(|| b.next_delay(&err))
        .map(|d| d.as_millis())
        .collect();
    assert_eq!(delays, vec![100, 200, 400, 800, 800]);
    assert_eq!(policy.backoff().next_delay(&SourceError::auth("no")), None);
    assert_eq!(RetryPolicy::never().backoff().next_delay(&err), None);
}
