//! Connection settings: URL and key-value parsing, defaults, errors, secrecy.
//!
//! The tests that need a server (authentication methods, TLS, replication) use crate-private
//! API and live in `src/connection/tests.rs` (`cargo test -p powersync-source-postgres --lib
//! connection`).

use std::path::Path;
use std::time::Duration;

use powersync_source_core::ErrorKind;
use powersync_source_postgres::config::{default_slot_name, PostgresConfig, SslMode};

fn parse(s: &str) -> PostgresConfig {
    PostgresConfig::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn parse_err(s: &str) -> powersync_source_core::SourceError {
    match PostgresConfig::parse(s) {
        Ok(c) => panic!("{s} parsed: {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn defaults() {
    let c = parse("");
    assert_eq!(c.host(), "localhost");
    assert_eq!(c.port(), 5432);
    assert_eq!(c.user(), "postgres");
    assert!(c.password().is_none());
    assert_eq!(c.dbname(), "postgres");
    assert_eq!(c.ssl_mode(), SslMode::Prefer);
    assert_eq!(c.ssl_root_cert(), None);
    assert_eq!(c.ssl_cert(), None);
    assert_eq!(c.ssl_key(), None);
    assert_eq!(c.connect_timeout(), None);
    assert_eq!(c.application_name(), "powersync-source");
    assert_eq!(c.publication(), "powersync");
    assert_eq!(c.slot(), "powersync_postgres");
    assert_eq!(c.snapshot_parallelism(), 2);
    assert_eq!(c.snapshot_chunk_rows(), 100_000);
    assert_eq!(c, PostgresConfig::new());
    assert_eq!(parse("postgres://"), PostgresConfig::new());
}

#[test]
fn dbname_defaults_to_user() {
    let c = parse("postgres://alice@h");
    assert_eq!(c.dbname(), "alice");
    assert_eq!(c.slot(), "powersync_alice");
    let c = parse("user=bob");
    assert_eq!(c.dbname(), "bob");
}

#[test]
fn url_every_part() {
    let c = parse(
        "postgresql://rep%40user:p%3Ass%2Fw%20rd@db.example.com:6543/my%20db?sslmode=verify-full\
         &sslrootcert=/etc/ca.pem&sslcert=/c.pem&sslkey=/k.pem&connect_timeout=7\
         &application_name=my%20app&publication=pub1&slot=slot_1&snapshot_parallelism=4\
         &snapshot_chunk_rows=5000",
    );
    assert_eq!(c.user(), "rep@user");
    assert_eq!(c.password().unwrap().expose(), "p:ss/w rd");
    assert_eq!(c.host(), "db.example.com");
    assert_eq!(c.port(), 6543);
    assert_eq!(c.dbname(), "my db");
    assert_eq!(c.ssl_mode(), SslMode::VerifyFull);
    assert_eq!(c.ssl_root_cert(), Some(Path::new("/etc/ca.pem")));
    assert_eq!(c.ssl_cert(), Some(Path::new("/c.pem")));
    assert_eq!(c.ssl_key(), Some(Path::new("/k.pem")));
    assert_eq!(c.connect_timeout(), Some(Duration::from_secs(7)));
    assert_eq!(c.application_name(), "my app");
    assert_eq!(c.publication(), "pub1");
    assert_eq!(c.slot(), "slot_1");
    assert_eq!(c.snapshot_parallelism(), 4);
    assert_eq!(c.snapshot_chunk_rows(), 5000);
}

#[test]
fn url_scheme_variants_and_hosts() {
    assert_eq!(parse("postgres://h").host(), "h");
    assert_eq!(parse("POSTGRESQL://h").host(), "h");
    let c = parse("postgres://[::1]:5433/db");
    assert_eq!((c.host(), c.port(), c.dbname()), ("::1", 5433, "db"));
    assert_eq!(c.endpoint(), "[::1]:5433");
    let c = parse("postgres://[fe80::1]/db");
    assert_eq!((c.host(), c.port()), ("fe80::1", 5432));
    let c = parse("postgres://%2Fvar%2Frun%2Fpostgresql:5433/db");
    assert_eq!(c.host(), "/var/run/postgresql");
    assert!(c.is_unix_socket());
    assert_eq!(c.endpoint(), "/var/run/postgresql/.s.PGSQL.5433");
    // user without password, password empty, no user.
    let c = parse("postgres://u@h");
    assert_eq!(c.user(), "u");
    assert!(c.password().is_none());
    let c = parse("postgres://u:@h");
    assert_eq!(c.password().unwrap().expose(), "");
    let c = parse("postgres://:pw@h");
    assert_eq!(c.user(), "postgres");
    assert_eq!(c.password().unwrap().expose(), "pw");
    // '@' in the password, unencoded: the last '@' separates the host.
    let c = parse("postgres://u:a@b@h/d");
    assert_eq!(c.password().unwrap().expose(), "a@b");
    assert_eq!(c.host(), "h");
    // query parameters override URL parts; later wins.
    let c = parse("postgres://u:pw@h:1/d?host=h2&port=2&user=u2&password=p2&dbname=d2&port=3");
    assert_eq!(
        (c.host(), c.port(), c.user(), c.dbname()),
        ("h2", 3, "u2", "d2")
    );
    assert_eq!(c.password().unwrap().expose(), "p2");
    // '+' is not a space (libpq does not decode it).
    assert_eq!(parse("postgres://h/a+b").dbname(), "a+b");
    // empty query parts are ignored.
    assert_eq!(
        parse("postgres://h/d?&&sslmode=disable&").ssl_mode(),
        SslMode::Disable
    );
}

#[test]
fn key_value_every_option_and_quoting() {
    let c = parse(
        "host=db.example.com port = 6543 user=rep password='p a\\'ss\\\\w' dbname=app \
         sslmode=verify-ca sslrootcert='/etc/my ca.pem' sslcert=/c.pem sslkey=/k.pem \
         connect_timeout=0 application_name=x publication=p slot=s snapshot_parallelism=1 \
         snapshot_chunk_rows=10",
    );
    assert_eq!(c.host(), "db.example.com");
    assert_eq!(c.port(), 6543);
    assert_eq!(c.user(), "rep");
    assert_eq!(c.password().unwrap().expose(), "p a'ss\\w");
    assert_eq!(c.dbname(), "app");
    assert_eq!(c.ssl_mode(), SslMode::VerifyCa);
    assert_eq!(c.ssl_root_cert(), Some(Path::new("/etc/my ca.pem")));
    assert_eq!(c.connect_timeout(), None, "0 = wait indefinitely");
    assert_eq!(c.application_name(), "x");
    assert_eq!(c.publication(), "p");
    assert_eq!(c.slot(), "s");
    assert_eq!(c.snapshot_parallelism(), 1);
    assert_eq!(c.snapshot_chunk_rows(), 10);
    // unquoted backslash escape, empty quoted value, tabs and newlines as separators.
    let c = parse("password=a\\ b\tapplication_name=''\nhost=h");
    assert_eq!(c.password().unwrap().expose(), "a b");
    assert_eq!(c.application_name(), "");
    assert_eq!(c.host(), "h");
    assert!(parse_err("user=''").message().contains("user"));
}

#[test]
fn every_sslmode() {
    for (s, m) in [
        ("disable", SslMode::Disable),
        ("allow", SslMode::Allow),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ] {
        assert_eq!(parse(&format!("sslmode={s}")).ssl_mode(), m);
        assert_eq!(m.as_str(), s);
        assert_eq!(
            m.requires_tls(),
            matches!(s, "require" | "verify-ca" | "verify-full")
        );
    }
}

#[test]
fn sslrootcert_system() {
    let c = parse("sslrootcert=system");
    assert_eq!(c.ssl_mode(), SslMode::VerifyFull);
    let c = parse("sslrootcert=system sslmode=verify-full");
    assert_eq!(c.ssl_mode(), SslMode::VerifyFull);
    let e = parse_err("sslrootcert=system sslmode=require");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.message().contains("verify-full"), "{e}");
}

#[test]
fn slot_default_is_sanitized() {
    assert_eq!(default_slot_name("My-DB.x"), "powersync_my_db_x");
    assert_eq!(default_slot_name("données"), "powersync_donn_es");
    let long = "a".repeat(100);
    let s = default_slot_name(&long);
    assert_eq!(s.len(), 63);
    assert!(s.starts_with("powersync_aaa"));
    assert_eq!(parse("dbname=Shop-1").slot(), "powersync_shop_1");
}

#[test]
fn errors() {
    let cases: &[(&str, &[&str])] = &[
        (
            "bogus=1",
            &["unknown connection parameter", "\"bogus\"", "sslmode"],
        ),
        (
            "postgres://h/d?bogus=1",
            &["unknown connection parameter", "\"bogus\""],
        ),
        ("port=abc", &["invalid port", "\"abc\"", "1 to 65535"]),
        ("port=0", &["invalid port"]),
        ("port=70000", &["invalid port"]),
        ("postgres://h:x/d", &["invalid port"]),
        (
            "sslmode=on",
            &[
                "invalid sslmode",
                "\"on\"",
                "disable, allow, prefer, require, verify-ca, verify-full",
            ],
        ),
        ("postgres://h/d?sslmode=VERIFY", &["invalid sslmode"]),
        ("connect_timeout=-1", &["connect_timeout"]),
        ("connect_timeout=1.5", &["connect_timeout"]),
        (
            "snapshot_parallelism=0",
            &["snapshot_parallelism", "at least 1"],
        ),
        ("snapshot_chunk_rows=x", &["snapshot_chunk_rows"]),
        ("slot=Bad-Name", &["invalid slot name", "'B'"]),
        ("slot=''", &["invalid slot name"]),
        (
            "slot=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            &["invalid slot name", "63"],
        ),
        ("publication=''", &["publication"]),
        ("sslcert=/c.pem", &["sslkey"]),
        ("sslkey=/k.pem", &["sslcert"]),
        ("host=a,b", &["multiple hosts"]),
        ("postgres://a:1,b:2/d", &["multiple hosts"]),
        ("host", &["missing \"=\""]),
        ("host h", &["missing \"=\""]),
        ("=x", &["empty parameter name"]),
        ("password='abc", &["unterminated"]),
        ("password='a'b", &["missing space"]),
        ("mysql://u@h/d", &["unsupported URL scheme", "mysql"]),
        ("postgres://h/%zz", &["percent-encoding", "database name"]),
        ("postgres://u:%ff@h/d", &["percent-encoding", "password"]),
        ("postgres://[::1/d", &["IPv6"]),
        ("postgres://[::1]x/d", &["IPv6"]),
        ("postgres://h/d?sslmode", &["expected key=value"]),
    ];
    for (input, needles) in cases {
        let e = parse_err(input);
        assert_eq!(e.kind(), ErrorKind::Config, "{input}: {e}");
        for n in *needles {
            assert!(e.message().contains(n), "{input}: {e} lacks {n}");
        }
    }
}

#[test]
fn password_never_shown() {
    let secret = "Sup3r$ecret";
    let url = format!("postgres://alice:{secret}@h/d?sslmode=require");
    let kv = format!("host=h user=alice password='{secret}' sslmode=require");
    let qp = format!("postgres://alice@h/d?password={secret}");
    for input in [url.as_str(), kv.as_str(), qp.as_str()] {
        let c = parse(input);
        assert_eq!(c.password().unwrap().expose(), secret);
        for shown in [
            format!("{c:?}"),
            format!("{c}"),
            c.display_url(),
            format!("{c:#?}"),
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            c.display_url().contains("alice:***@"),
            "{}",
            c.display_url()
        );
    }
    // Errors from parsing strings that contain a password never quote it.
    for input in [
        format!("postgres://alice:{secret}@h:bad/d"),
        format!("host=h password={secret} bogus=1"),
        format!("host=h password={secret} port=x"),
        format!("postgres://alice:{secret}@h/d?sslmode=nope"),
        format!("postgres://alice:{secret}%zz@h/d"),
        format!("password='{secret}"),
    ] {
        let e = parse_err(&input);
        assert!(!format!("{e}").contains(secret), "{e}");
        assert!(!format!("{e:?}").contains(secret), "{e:?}");
    }
}

#[test]
fn display_url_round_trips() {
    let c = PostgresConfig::new()
        .with_host("db host")
        .with_port(6000)
        .with_user("u@x")
        .with_password("pw")
        .with_dbname("d/b")
        .with_ssl_mode(SslMode::VerifyCa)
        .with_ssl_root_cert("/ca.pem")
        .with_client_cert("/c.pem", "/k.pem")
        .with_connect_timeout(Some(Duration::from_secs(3)))
        .with_application_name("app")
        .with_publication("pub")
        .with_slot("s")
        .with_snapshot_parallelism(3)
        .with_snapshot_chunk_rows(7);
    let url = c.display_url();
    assert_eq!(
        url,
        "postgres://u%40x:***@db%20host:6000/d%2Fb?sslmode=verify-ca&sslrootcert=%2Fca.pem\
         &sslcert=%2Fc.pem&sslkey=%2Fk.pem&connect_timeout=3&application_name=app\
         &publication=pub&slot=s&snapshot_parallelism=3&snapshot_chunk_rows=7"
    );
    // Same settings back, apart from the redacted password.
    let back = parse(&url.replace(":***@", ":pw@"));
    assert_eq!(back, c);
    assert_eq!(
        parse("postgres://[::1]:5/d").display_url(),
        "postgres://postgres@[::1]:5/d"
    );
    let bare = PostgresConfig::new();
    assert_eq!(
        bare.display_url(),
        "postgres://postgres@localhost:5432/postgres"
    );
    assert_eq!(PostgresConfig::new().without_password(), bare);
}

#[test]
fn builders_and_set() {
    let mut c = PostgresConfig::new()
        .with_snapshot_parallelism(0)
        .with_snapshot_chunk_rows(0)
        .with_connect_timeout(Some(Duration::ZERO));
    assert_eq!(c.snapshot_parallelism(), 1);
    assert_eq!(c.snapshot_chunk_rows(), 1);
    assert_eq!(c.connect_timeout(), None);
    c.set("port", "7".into()).unwrap();
    assert_eq!(c.port(), 7);
    assert_eq!(
        c.set("nope", "1".into()).unwrap_err().kind(),
        ErrorKind::Config
    );
    let c: PostgresConfig = "host=x".parse().unwrap();
    assert_eq!(c.host(), "x");
}
