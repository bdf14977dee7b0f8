//! Connection tests: error mapping and wire helpers (pure), and integration tests against
//! throwaway PostgreSQL servers from the core's testkit (authentication methods, TLS modes,
//! the replication protocol). They live here, not in `tests/`, because the connection API is
//! crate-private. A test that cannot start a server prints one `SKIPPED: ...` line.

#![allow(clippy::print_stdout)] // SKIPPED lines go to the test output

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use powersync_source_core::position::PgLsn;
use powersync_source_core::{ErrorKind, SourceError};
use powersync_source_testkit::start_or_skip;
use powersync_source_testkit::{self as testkit, PostgresServer};

use super::copy::{CopySession, Drained};
use super::replication::{
    create_slot_command, start_replication_command, ReplicationConnection, SlotSnapshot,
};
use super::{publication_names, server_error, sql, ConnKind, ServerError, Target};
use crate::config::{PostgresConfig, SslMode};

// ---------------------------------------------------------------------------------------------
// Pure tests
// ---------------------------------------------------------------------------------------------

fn target() -> Target {
    Target {
        endpoint: "db:5432".into(),
        user: "rep".into(),
        dbname: "app".into(),
    }
}

fn se(code: &str, message: &str) -> ServerError {
    ServerError {
        severity: "FATAL".into(),
        code: code.into(),
        message: message.into(),
        detail: None,
        hint: None,
    }
}

#[test]
fn server_error_mapping() {
    let t = target();
    let cases: &[(&str, &str, ConnKind, ErrorKind)] = &[
        ("28P01", "password authentication failed for user \"rep\"", ConnKind::Sql, ErrorKind::Auth),
        ("28000", "role \"rep\" does not exist", ConnKind::Sql, ErrorKind::Auth),
        (
            "28000",
            "no pg_hba.conf entry for host \"10.0.0.9\", user \"rep\", database \"app\", no encryption",
            ConnKind::Replication,
            ErrorKind::Prerequisite,
        ),
        ("3D000", "database \"app\" does not exist", ConnKind::Sql, ErrorKind::Config),
        (
            "42501",
            "must be superuser or replication role to start walsender",
            ConnKind::Replication,
            ErrorKind::Prerequisite,
        ),
        ("42704", "replication slot \"s\" does not exist", ConnKind::Replication, ErrorKind::HistoryLost),
        ("42704", "publication \"p\" does not exist", ConnKind::Replication, ErrorKind::Prerequisite),
        ("55006", "replication slot \"s\" is active for PID 42", ConnKind::Replication, ErrorKind::Connection),
        (
            "55000",
            "can no longer get changes from replication slot \"s\"",
            ConnKind::Replication,
            ErrorKind::HistoryLost,
        ),
        (
            "55000",
            "logical decoding requires wal_level >= logical",
            ConnKind::Replication,
            ErrorKind::Prerequisite,
        ),
        (
            "58P01",
            "requested WAL segment 000000010000000000000001 has already been removed",
            ConnKind::Replication,
            ErrorKind::HistoryLost,
        ),
        ("53400", "all replication slots are in use", ConnKind::Replication, ErrorKind::Prerequisite),
        ("53300", "sorry, too many clients already", ConnKind::Sql, ErrorKind::Connection),
        ("57P01", "terminating connection due to administrator command", ConnKind::Sql, ErrorKind::Connection),
        ("08P01", "protocol violation", ConnKind::Sql, ErrorKind::Connection),
        ("0A000", "feature not supported", ConnKind::Sql, ErrorKind::Unsupported),
        ("42601", "syntax error", ConnKind::Replication, ErrorKind::Unsupported),
        ("42P01", "relation \"t\" does not exist", ConnKind::Sql, ErrorKind::Schema),
        ("22012", "division by zero", ConnKind::Sql, ErrorKind::Decode),
        ("P0001", "raised", ConnKind::Sql, ErrorKind::Prerequisite),
    ];
    for (code, msg, kind, want) in cases {
        let e = server_error(&t, *kind, "connecting to", &se(code, msg));
        assert_eq!(e.kind(), *want, "{code} {msg}: {e}");
        assert_eq!(e.code(), Some(*code), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("db:5432") && text.contains("\"rep\""),
            "{text}"
        );
        // the code survives context()
        assert_eq!(e.context("outer").code(), Some(*code));
    }
    let e = server_error(
        &t,
        ConnKind::Replication,
        "connecting to",
        &se(
            "28000",
            "no pg_hba.conf entry for host \"10.0.0.9\", user \"rep\", database \"app\", no encryption",
        ),
    );
    assert!(
        e.hint()
            .unwrap()
            .contains("host app rep 10.0.0.9/32 scram-sha-256"),
        "{e}"
    );
    let e = server_error(
        &t,
        ConnKind::Replication,
        "connecting to",
        &se("42501", "permission denied to start WAL sender"),
    );
    assert!(
        e.hint()
            .unwrap()
            .contains("ALTER ROLE \"rep\" WITH REPLICATION"),
        "{e}"
    );
    let mut with_detail = se("42704", "x");
    with_detail.detail = Some("more".into());
    with_detail.hint = Some("do y".into());
    let e = server_error(&t, ConnKind::Sql, "doing", &with_detail);
    assert!(e.to_string().contains(": x; detail: more"), "{e}");
    assert!(!e.to_string().contains("42704"), "no code in the text: {e}");
    assert_eq!(e.hint(), Some("do y"));
    assert_eq!(SourceError::connection("plain").code(), None);
}

#[test]
fn invalidated_slot_named_only_in_the_detail_is_history_lost() {
    let mut e = se("55000", "cannot read from logical replication slot \"s\"");
    e.detail = Some(
        "This slot has been invalidated because it exceeded the maximum reserved size.".into(),
    );
    let err = server_error(&target(), ConnKind::Replication, "streaming from", &e);
    assert_eq!(err.kind(), ErrorKind::HistoryLost, "{err}");
    assert_eq!(err.code(), Some("55000"));
}

#[test]
fn replication_commands() {
    assert_eq!(
        create_slot_command("s", true, SlotSnapshot::Export, 150000),
        "CREATE_REPLICATION_SLOT \"s\" TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"
    );
    assert_eq!(
        create_slot_command("s", false, SlotSnapshot::NoExport, 160002),
        "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'nothing')"
    );
    assert_eq!(
        create_slot_command("s", false, SlotSnapshot::Use, 150000),
        "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'use')"
    );
    assert_eq!(
        create_slot_command("s", true, SlotSnapshot::Export, 140010),
        "CREATE_REPLICATION_SLOT \"s\" TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"
    );
    assert_eq!(
        create_slot_command("s", false, SlotSnapshot::NoExport, 100000),
        "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput NOEXPORT_SNAPSHOT"
    );
    assert_eq!(
        create_slot_command("s", false, SlotSnapshot::Use, 130000),
        "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput USE_SNAPSHOT"
    );
    assert_eq!(
        start_replication_command(
            "powersync_app",
            PgLsn(0x16_B374_D848),
            &[
                ("proto_version", "1".into()),
                (
                    "publication_names",
                    publication_names(&["powersync", "o'k\"x"])
                ),
            ]
        ),
        "START_REPLICATION SLOT \"powersync_app\" LOGICAL 16/B374D848 (\"proto_version\" '1', \
         \"publication_names\" '\"powersync\",\"o''k\"\"x\"')"
    );
    assert_eq!(
        start_replication_command("s", PgLsn(0), &[]),
        "START_REPLICATION SLOT \"s\" LOGICAL 0/0"
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers for server tests
// ---------------------------------------------------------------------------------------------

fn cfg_for(pg: &PostgresServer) -> PostgresConfig {
    PostgresConfig::new()
        .with_host("127.0.0.1")
        .with_port(pg.port())
        .with_user("postgres")
        .with_dbname("postgres")
        .with_ssl_mode(SslMode::Disable)
        .with_connect_timeout(Some(Duration::from_secs(20)))
}

async fn psql(pg: &PostgresServer, sql: &str) -> String {
    pg.psql(sql)
        .await
        .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
}

/// Reloads the configuration and waits until new backends see it: a marker setting is
/// bumped with the reload and polled (pg_reload_conf only signals the postmaster).
async fn reload_and_wait(pg: &PostgresServer) {
    static MARK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1000);
    let kb = MARK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    psql(
        pg,
        &format!("ALTER SYSTEM SET work_mem = '{kb}kB';\nSELECT pg_reload_conf();"),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while psql(pg, "SHOW work_mem").await.trim() != format!("{kb}kB") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "configuration reload not seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replaces pg_hba.conf and reloads.
async fn set_hba(pg: &PostgresServer, lines: &str) {
    let path = pg.data_dir().join("pg_hba.conf");
    std::fs::write(&path, format!("local all all trust\n{lines}\n")).unwrap();
    reload_and_wait(pg).await;
}

/// Whether the SQL connection for `cfg` uses TLS.
async fn sql_tls(cfg: &PostgresConfig) -> Result<bool, SourceError> {
    let client = sql::connect(cfg).await?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    Ok(row.get::<_, bool>(0))
}

/// Whether the replication connection for `cfg` uses TLS.
async fn repl_tls(cfg: &PostgresConfig) -> Result<bool, SourceError> {
    let mut conn = ReplicationConnection::connect(cfg).await?;
    let rows = conn
        .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await?;
    conn.close().await?;
    Ok(rows[0][0].as_deref() == Some("t"))
}

async fn both_tls(cfg: &PostgresConfig) -> Result<bool, SourceError> {
    let a = sql_tls(cfg).await?;
    let b = repl_tls(cfg).await?;
    assert_eq!(
        a, b,
        "SQL and replication connections disagree on TLS for {cfg}"
    );
    Ok(a)
}

async fn both_fail(cfg: &PostgresConfig) -> (SourceError, SourceError) {
    let a = match sql::connect(cfg).await {
        Ok(_) => panic!("SQL connection with {cfg} should fail"),
        Err(e) => e,
    };
    let b = match ReplicationConnection::connect(cfg).await {
        Ok(_) => panic!("replication connection with {cfg} should fail"),
        Err(e) => e,
    };
    // Shown with --nocapture: how the messages read.
    eprintln!("{cfg}\n  sql:  {a}\n  repl: {b}");
    (a, b)
}

fn assert_no_secret(e: &SourceError, secrets: &[&str]) {
    for s in secrets {
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(!shown.contains(s), "secret {s:?} leaked into {shown}");
        }
    }
}

/// Gives the server's files to the server's user (the owner of its temporary directory) with
/// the modes PostgreSQL insists on for keys.
fn give_to_server(pg: &PostgresServer, files: &[PathBuf]) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(pg.temp_dir()).unwrap();
    for f in files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(f, Some(meta.uid()), Some(meta.gid())).unwrap();
    }
}

/// Points the server at a certificate/key pair and reloads.
async fn use_server_cert(pg: &PostgresServer, certs: &Path, name: &str) {
    let dst = pg.temp_dir();
    let (crt, key) = (
        dst.join(format!("{name}.crt")),
        dst.join(format!("{name}.key")),
    );
    std::fs::copy(certs.join(format!("{name}.crt")), &crt).unwrap();
    std::fs::copy(certs.join(format!("{name}.key")), &key).unwrap();
    let ca = dst.join("ca.crt");
    std::fs::copy(certs.join("ca.crt"), &ca).unwrap();
    give_to_server(pg, &[crt.clone(), key.clone(), ca.clone()]);
    psql(
        pg,
        &format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}';\nALTER SYSTEM SET ssl_key_file = '{}';\n\
             ALTER SYSTEM SET ssl_ca_file = '{}';\nALTER SYSTEM SET ssl = on;",
            crt.display(),
            key.display(),
            ca.display()
        ),
    )
    .await;
    reload_and_wait(pg).await;
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_methods_and_errors() {
    testkit::init_tracing();
    let pg = start_or_skip!(PostgresServer::builder().password("superpw").start().await);
    psql(
        &pg,
        "SET password_encryption = 'scram-sha-256';\n\
         CREATE ROLE u_scram LOGIN REPLICATION PASSWORD 'pw scram';\n\
         CREATE ROLE u_plain LOGIN REPLICATION PASSWORD 'pw plain';\n\
         CREATE ROLE u_trust LOGIN REPLICATION;\n\
         CREATE ROLE u_norepl LOGIN PASSWORD 'pw norepl';\n\
         CREATE ROLE u_nohba LOGIN REPLICATION PASSWORD 'pw nohba';\n\
         SET password_encryption = 'md5';\n\
         CREATE ROLE u_md5 LOGIN REPLICATION PASSWORD 'pw md5';",
    )
    .await;
    set_hba(
        &pg,
        "host all u_scram 127.0.0.1/32 scram-sha-256\n\
         host all u_md5 127.0.0.1/32 md5\n\
         host all u_plain 127.0.0.1/32 password\n\
         host all u_trust 127.0.0.1/32 trust\n\
         host all u_norepl 127.0.0.1/32 scram-sha-256\n\
         host all postgres 127.0.0.1/32 scram-sha-256",
    )
    .await;
    let base = cfg_for(&pg);

    // Every method works on both connection types.
    for (user, pw) in [
        ("u_scram", Some("pw scram")),
        ("u_md5", Some("pw md5")),
        ("u_plain", Some("pw plain")),
        ("u_trust", None),
        ("postgres", Some("superpw")),
    ] {
        let mut cfg = base.clone().with_user(user).with_dbname("postgres");
        if let Some(pw) = pw {
            cfg = cfg.with_password(pw);
        }
        let client = sql::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("SQL as {user}: {e}"));
        let row = client
            .query_one(
                "SELECT current_user::text, current_setting('application_name')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), user);
        assert_eq!(row.get::<_, String>(1), "powersync-source");
        let mut repl = ReplicationConnection::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("replication as {user}: {e}"));
        assert!(
            repl.server_version_num() >= 100000,
            "{}",
            repl.server_version_num()
        );
        assert!(repl.backend_pid() > 0);
        let rows = repl
            .simple_query("SELECT current_user, current_setting('application_name')")
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![vec![
                Some(user.to_string()),
                Some("powersync-source".into())
            ]]
        );
        repl.close().await.unwrap();
    }

    // Wrong password: Auth, names user and endpoint, never either password.
    for (user, right) in [
        ("u_scram", "pw scram"),
        ("u_md5", "pw md5"),
        ("u_plain", "pw plain"),
    ] {
        let wrong = "WrOnG-pAsS-1234";
        let cfg = base.clone().with_user(user).with_password(wrong);
        let (a, b) = both_fail(&cfg).await;
        for e in [&a, &b] {
            assert_eq!(e.kind(), ErrorKind::Auth, "{user}: {e}");
            let text = e.to_string();
            assert!(
                text.contains(&format!(
                    "password authentication failed for user \"{user}\""
                )),
                "{text}"
            );
            assert!(text.contains(&format!("127.0.0.1:{}", pg.port())), "{text}");
            assert_eq!(e.code(), Some("28P01"));
            assert_no_secret(e, &[wrong, right]);
        }
    }

    // No password configured although the server asks for one.
    let cfg = base.clone().with_user("u_scram");
    let (a, b) = both_fail(&cfg).await;
    for e in [&a, &b] {
        assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
        assert!(e.to_string().contains("none is configured"), "{e}");
    }

    // No pg_hba.conf line: Prerequisite with the line to add.
    let cfg = base.clone().with_user("u_nohba").with_password("pw nohba");
    let (a, b) = both_fail(&cfg).await;
    for e in [&a, &b] {
        assert_eq!(e.kind(), ErrorKind::Prerequisite, "{e}");
        assert_eq!(e.code(), Some("28000"));
        let hint = e.hint().unwrap_or_default();
        assert!(hint.contains("host postgres u_nohba 127.0.0.1/32"), "{e}");
        assert_no_secret(e, &["pw nohba"]);
    }

    // Unknown database: Config.
    let cfg = base
        .clone()
        .with_user("u_scram")
        .with_password("pw scram")
        .with_dbname("no_such_db");
    let (a, b) = both_fail(&cfg).await;
    for e in [&a, &b] {
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(e.to_string().contains("no_such_db"), "{e}");
        assert_eq!(e.code(), Some("3D000"));
    }

    // A role without REPLICATION: SQL works, replication is a Prerequisite error.
    let cfg = base
        .clone()
        .with_user("u_norepl")
        .with_password("pw norepl");
    sql::connect(&cfg).await.unwrap();
    let e = ReplicationConnection::connect(&cfg).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Prerequisite, "{e}");
    assert_eq!(e.code(), Some("42501"));
    assert!(
        e.hint()
            .unwrap()
            .contains("ALTER ROLE \"u_norepl\" WITH REPLICATION"),
        "{e}"
    );

    // TLS required but the server has ssl=off: Config.
    let cfg = base
        .clone()
        .with_user("u_trust")
        .with_ssl_mode(SslMode::Require);
    let (a, b) = both_fail(&cfg).await;
    for e in [&a, &b] {
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(e.to_string().contains("does not support TLS"), "{e}");
    }
    // ... while prefer and allow fall back to plain.
    for mode in [SslMode::Prefer, SslMode::Allow] {
        let cfg = base.clone().with_user("u_trust").with_ssl_mode(mode);
        assert!(!both_tls(&cfg).await.unwrap());
    }

    // Unix socket (local trust).
    let cfg = base
        .clone()
        .with_host(pg.temp_dir().display().to_string())
        .with_ssl_mode(SslMode::Require); // ignored on Unix sockets, as in libpq
    assert!(!both_tls(&cfg).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_silent_servers() {
    testkit::init_tracing();
    // Nothing listens on a port that was free a moment ago: refused, retryable.
    let port = testkit::free_port().unwrap();
    let cfg = PostgresConfig::new()
        .with_host("127.0.0.1")
        .with_port(port)
        .with_password("hunter2-secret")
        .with_ssl_mode(SslMode::Disable);
    let (a, b) = both_fail(&cfg).await;
    for e in [&a, &b] {
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        assert!(e.is_retryable());
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(e.to_string().contains("\"postgres\""), "{e}");
        assert_no_secret(e, &["hunter2-secret"]);
    }

    // A server that accepts and never answers: connect_timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    for mode in [SslMode::Disable, SslMode::Prefer] {
        let cfg = PostgresConfig::new()
            .with_host("127.0.0.1")
            .with_port(port)
            .with_ssl_mode(mode)
            .with_connect_timeout(Some(Duration::from_secs(1)));
        let started = std::time::Instant::now();
        let (a, b) = both_fail(&cfg).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        for e in [&a, &b] {
            assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
            assert!(e.to_string().contains("timed out"), "{e}");
        }
    }
    holder.abort();

    // A server that closes at once: EOF, retryable.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let closer = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let cfg = PostgresConfig::new()
        .with_host("127.0.0.1")
        .with_port(port)
        .with_ssl_mode(SslMode::Disable);
    let (a, b) = both_fail(&cfg).await;
    for e in [&a, &b] {
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    }
    closer.abort();
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes() {
    testkit::init_tracing();
    let certs = tempfile::tempdir().unwrap();
    if testkit::certs::make(certs.path()).is_none() {
        println!("SKIPPED: TLS tests (the openssl CLI is not installed: apt-get install openssl)");
        return;
    }
    let pg = start_or_skip!(PostgresServer::start().await);
    use_server_cert(&pg, certs.path(), "server").await;
    psql(
        &pg,
        "CREATE ROLE u_ssl LOGIN REPLICATION; CREATE ROLE u_cert LOGIN REPLICATION;",
    )
    .await;
    set_hba(
        &pg,
        "hostssl all u_ssl 127.0.0.1/32 trust\n\
         hostssl all u_cert 127.0.0.1/32 cert\n\
         host all postgres 127.0.0.1/32 trust",
    )
    .await;
    let ca = certs.path().join("ca.crt");
    let base = cfg_for(&pg);

    // disable against an ssl=on server: plain.
    assert!(!both_tls(&base).await.unwrap());
    // prefer (default) and require without roots: TLS, no certificate check.
    for mode in [SslMode::Prefer, SslMode::Require] {
        assert!(
            both_tls(&base.clone().with_ssl_mode(mode)).await.unwrap(),
            "{mode}"
        );
    }
    // verify-full with the CA, by IP and by name; verify-ca too.
    for host in ["127.0.0.1", "localhost"] {
        for mode in [SslMode::VerifyFull, SslMode::VerifyCa, SslMode::Require] {
            let cfg = base
                .clone()
                .with_host(host)
                .with_ssl_mode(mode)
                .with_ssl_root_cert(&ca);
            assert!(both_tls(&cfg)
                .await
                .unwrap_or_else(|e| panic!("{cfg}: {e}")));
        }
    }
    // verify-* without sslrootcert uses the public roots: a private CA is rejected (Config).
    // require with the wrong CA behaves like verify-ca (libpq) and is rejected too.
    let other = certs.path().join("other-ca.crt");
    for cfg in [
        base.clone().with_ssl_mode(SslMode::VerifyFull),
        base.clone().with_ssl_mode(SslMode::VerifyCa),
        base.clone()
            .with_ssl_mode(SslMode::VerifyFull)
            .with_ssl_root_cert(&other),
        base.clone()
            .with_ssl_mode(SslMode::Require)
            .with_ssl_root_cert(&other),
    ] {
        let (a, b) = both_fail(&cfg).await;
        for e in [&a, &b] {
            assert_eq!(e.kind(), ErrorKind::Config, "{cfg}: {e}");
            assert!(e.to_string().contains("TLS handshake"), "{e}");
        }
    }
    // ... but prefer falls back to plain when the handshake fails, as libpq.
    let cfg = base
        .clone()
        .with_ssl_mode(SslMode::Prefer)
        .with_ssl_root_cert(&other);
    assert!(!both_tls(&cfg).await.unwrap());
    // Unreadable root file: Config naming it.
    let cfg = base
        .clone()
        .with_ssl_mode(SslMode::VerifyFull)
        .with_ssl_root_cert("/nonexistent/root.crt");
    let (a, b) = both_fail(&cfg).await;
    for e in [&a, &b] {
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(e.to_string().contains("/nonexistent/root.crt"), "{e}");
    }

    // A hostssl-only user: allow retries with TLS after the plain attempt is rejected,
    // disable gets the pg_hba error.
    let ssl_user = base.clone().with_user("u_ssl");
    assert!(both_tls(&ssl_user.clone().with_ssl_mode(SslMode::Allow))
        .await
        .unwrap());
    let (a, b) = both_fail(&ssl_user).await;
    for e in [&a, &b] {
        assert_eq!(e.kind(), ErrorKind::Prerequisite, "{e}");
    }

    // Client certificate authentication.
    let cert_user = base
        .clone()
        .with_user("u_cert")
        .with_ssl_mode(SslMode::VerifyFull)
        .with_ssl_root_cert(&ca)
        .with_client_cert(
            certs.path().join("client.crt"),
            certs.path().join("client.key"),
        );
    assert!(both_tls(&cert_user).await.unwrap());
    let no_cert = base
        .clone()
        .with_user("u_cert")
        .with_ssl_mode(SslMode::VerifyFull)
        .with_ssl_root_cert(&ca);
    let (a, b) = both_fail(&no_cert).await;
    for e in [&a, &b] {
        assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    }

    // A certificate for another name: verify-ca accepts, verify-full rejects (Config).
    use_server_cert(&pg, certs.path(), "wrongname").await;
    let cfg = base.clone().with_ssl_root_cert(&ca);
    assert!(both_tls(&cfg.clone().with_ssl_mode(SslMode::VerifyCa))
        .await
        .unwrap());
    let (a, b) = both_fail(&cfg.clone().with_ssl_mode(SslMode::VerifyFull)).await;
    for e in [&a, &b] {
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(e.to_string().to_lowercase().contains("name"), "{e}");
    }

    // The manual's self-signed recipe: the server certificate is its own root.
    use_server_cert(&pg, certs.path(), "self").await;
    let self_crt = certs.path().join("self.crt");
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        for host in ["127.0.0.1", "localhost"] {
            let cfg = base
                .clone()
                .with_host(host)
                .with_ssl_mode(mode)
                .with_ssl_root_cert(&self_crt);
            assert!(both_tls(&cfg)
                .await
                .unwrap_or_else(|e| panic!("{cfg}: {e}")));
        }
    }
    // ... and it is still not trusted without being pinned.
    let (a, _) = both_fail(
        &base
            .clone()
            .with_ssl_mode(SslMode::VerifyCa)
            .with_ssl_root_cert(&ca),
    )
    .await;
    assert_eq!(a.kind(), ErrorKind::Config, "{a}");
}

// ---------------------------------------------------------------------------------------------
// Replication protocol
// ---------------------------------------------------------------------------------------------

/// Reads CopyData until `n` XLogData messages carrying pgoutput message type `kind` arrived
/// (answering keepalives), using `select!` with a short timer to exercise cancel safety.
async fn count_until(
    stream: &mut super::stream::ReplicationStream,
    kind: u8,
    n: usize,
) -> (usize, PgLsn) {
    let mut seen = 0;
    let mut last_end = PgLsn(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {seen} of {n} messages"
        );
        tokio::select! {
            msg = stream.recv() => {
                let msg = msg.unwrap().expect("stream ended");
                match msg[0] {
                    b'w' => {
                        assert!(msg.len() >= 25);
                        let end = u64::from_be_bytes(msg[9..17].try_into().unwrap());
                        last_end = PgLsn(end.max(last_end.0));
                        if msg.len() > 25 && msg[25] == kind {
                            seen += 1;
                        }
                    }
                    b'k' => {
                        let end = u64::from_be_bytes(msg[1..9].try_into().unwrap());
                        if msg.get(17) == Some(&1) {
                            stream.send_status(PgLsn(end), last_end, last_end, false).await.unwrap();
                        }
                    }
                    other => panic!("unexpected CopyData {other}"),
                }
            }
            _ = tokio::time::sleep(Duration::from_micros(200)) => {}
        }
    }
    (seen, last_end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_protocol() {
    testkit::init_tracing();
    let pg = start_or_skip!(PostgresServer::start().await);
    psql(
        &pg,
        "CREATE TABLE t (id int PRIMARY KEY, v text);\n\
         INSERT INTO t VALUES (0, 'before');\n\
         CREATE PUBLICATION pub FOR TABLE t;",
    )
    .await;
    let cfg = cfg_for(&pg);
    let mut conn = ReplicationConnection::connect(&cfg).await.unwrap();
    assert!(conn.server_version_num() >= 100000);
    assert_eq!(
        conn.server_version_num() / 10000,
        pg.major_version(),
        "server_version_num {}",
        conn.server_version_num()
    );
    assert!(conn.parameter("server_version").is_some());

    let sys = conn.identify_system().await.unwrap();
    assert!(sys.system_id.parse::<u64>().is_ok(), "{sys:?}");
    assert_eq!(sys.timeline, 1);
    assert!(sys.xlogpos.0 > 0);
    assert_eq!(sys.dbname.as_deref(), Some("postgres"));

    // A query error keeps the connection usable.
    let e = conn.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode, "{e}");
    assert_eq!(e.code(), Some("22012"));
    assert_eq!(
        conn.simple_query("SELECT 1, NULL::text; SELECT 'x'")
            .await
            .unwrap(),
        vec![vec![Some("1".into()), None], vec![Some("x".into())]]
    );
    assert!(conn.simple_query("").await.unwrap().is_empty());

    let slot = conn
        .create_logical_slot("test_slot", true, SlotSnapshot::Export)
        .await
        .unwrap();
    assert_eq!(slot.slot_name, "test_slot");
    assert!(slot.consistent_point.0 >= sys.xlogpos.0);
    let snapshot = slot.snapshot_name.clone().expect("exported snapshot");

    // The exported snapshot is usable from another connection while this one is idle.
    let client = sql::connect(&cfg).await.unwrap();
    psql(&pg, "INSERT INTO t VALUES (1, 'after slot')").await;
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}'"
        ))
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the snapshot predates the second insert");
    client.batch_execute("COMMIT").await.unwrap();

    // The slot exists and is in use; a second connection cannot take it (55006).
    let mut other = ReplicationConnection::connect(&cfg).await.unwrap();
    let opts = [
        ("proto_version", "1".to_string()),
        ("publication_names", publication_names(&["pub"])),
    ];
    let stream_pid = conn.backend_pid();
    let mut stream = conn
        .start_replication("test_slot", slot.consistent_point, &opts)
        .await
        .unwrap();
    assert_eq!(
        other.simple_query("SELECT 1").await.unwrap(),
        vec![vec![Some("1".to_string())]]
    );
    let e = ReplicationConnection::connect(&cfg)
        .await
        .unwrap()
        .start_replication("test_slot", PgLsn(0), &opts)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("55006"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");

    // A slot that does not exist: HistoryLost, 42704.
    let e = other
        .start_replication("no_such_slot", PgLsn(0), &opts)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("42704"), "{e}");
    assert_eq!(e.kind(), ErrorKind::HistoryLost, "{e}");
    assert!(e.to_string().contains("no_such_slot"), "{e}");

    // The row inserted after the slot arrives as XLogData with a pgoutput Insert.
    let (inserts, _) = count_until(&mut stream, b'I', 1).await;
    assert_eq!(inserts, 1);

    // A big transaction through select! with a timer: nothing lost.
    psql(
        &pg,
        "INSERT INTO t SELECT g, repeat('x', 50) FROM generate_series(2, 20001) g",
    )
    .await;
    let (inserts, end) = count_until(&mut stream, b'I', 20000).await;
    assert_eq!(inserts, 20000);
    let (commits, end2) = count_until(&mut stream, b'C', 1).await;
    assert_eq!(commits, 1);
    let end = PgLsn(end.0.max(end2.0));
    assert!(stream.bytes_received() > 20000 * 50);

    // Status update: the server records our flush position.
    stream.send_status(end, end, end, true).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let flushed: Option<String> = client
            .query_one(
                "SELECT flush_lsn::text FROM pg_stat_replication WHERE pid = $1",
                &[&stream_pid],
            )
            .await
            .unwrap()
            .get(0);
        if flushed.as_deref().and_then(|f| f.parse::<PgLsn>().ok()) == Some(end) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "flush_lsn {flushed:?}, sent {end}"
        );
        // reply_requested: the keepalive answer keeps the stream moving.
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.recv()).await;
        stream.send_status(end, end, end, false).await.unwrap();
    }

    // The server ends the stream (terminated walsender): an error of a retryable kind.
    client
        .batch_execute(&format!("SELECT pg_terminate_backend({stream_pid})"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let err = loop {
        match tokio::time::timeout_at(deadline, stream.recv()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("stream ended cleanly after termination"),
            Ok(Err(e)) => break e,
            Err(_) => panic!("no error after terminating the walsender"),
        }
    };
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert_eq!(
        stream.recv().await.unwrap_err().kind(),
        ErrorKind::Connection
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_over_tls_and_clean_close() {
    testkit::init_tracing();
    let certs = tempfile::tempdir().unwrap();
    if testkit::certs::make(certs.path()).is_none() {
        println!("SKIPPED: replication over TLS (the openssl CLI is not installed)");
        return;
    }
    let pg = start_or_skip!(PostgresServer::start().await);
    use_server_cert(&pg, certs.path(), "server").await;
    psql(
        &pg,
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR ALL TABLES;",
    )
    .await;
    let cfg = cfg_for(&pg)
        .with_ssl_mode(SslMode::VerifyFull)
        .with_ssl_root_cert(certs.path().join("ca.crt"));
    let mut conn = ReplicationConnection::connect(&cfg).await.unwrap();
    let slot = conn
        .create_logical_slot("tls_slot", false, SlotSnapshot::NoExport)
        .await
        .unwrap();
    assert_eq!(slot.snapshot_name, None);
    let mut stream = conn
        .start_replication(
            "tls_slot",
            slot.consistent_point,
            &[
                ("proto_version", "1".to_string()),
                ("publication_names", publication_names(&["pub"])),
            ],
        )
        .await
        .unwrap();
    psql(&pg, "INSERT INTO t SELECT generate_series(1, 500)").await;
    let (inserts, end) = count_until(&mut stream, b'I', 500).await;
    assert_eq!(inserts, 500);
    stream.send_status(end, end, end, false).await.unwrap();
    stream.close().await.unwrap();
    // The permanent slot survives, now inactive, and can be dropped from SQL.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = psql(
            &pg,
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'tls_slot'",
        )
        .await;
        if out.trim() == "f" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot still active: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    psql(&pg, "SELECT pg_drop_replication_slot('tls_slot')").await;
}

// ---------------------------------------------------------------------------------------------
// The snapshot readers' SQL session (`copy::CopySession`)
// ---------------------------------------------------------------------------------------------

/// Every CopyData byte of `copy`, through `drain`/`receive`.
async fn copy_all(session: &mut CopySession, copy: &str) -> Result<Vec<u8>, SourceError> {
    let mut out = session.copy_out(copy, "copying from").await?;
    let mut data = Vec::new();
    loop {
        // Pause after every message: what is still buffered comes with the next drain.
        let drained = out.drain(|d| {
            data.extend_from_slice(d);
            Ok(false)
        })?;
        match drained {
            Drained::Done => return Ok(data),
            Drained::Paused => {}
            Drained::More => out.receive().await?,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_session() {
    testkit::init_tracing();
    let pg = start_or_skip!(PostgresServer::start().await);
    psql(
        &pg,
        "CREATE TABLE c (id int PRIMARY KEY, v text);\n\
         INSERT INTO c SELECT g, 'v' || g FROM generate_series(1, 3) g;",
    )
    .await;
    let cfg = cfg_for(&pg);
    let mut s = CopySession::connect(&cfg).await.unwrap();

    // An ordinary backend, not a walsender, with the pinned session settings.
    let who = copy_all(
        &mut s,
        "COPY (SELECT backend_type, current_setting('IntervalStyle') FROM pg_stat_activity \
         WHERE pid = pg_backend_pid()) TO STDOUT",
    )
    .await
    .unwrap();
    assert_eq!(who, b"client backend\tpostgres\n");

    s.execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        "beginning on",
    )
    .await
    .unwrap();
    let rows = copy_all(&mut s, "COPY c TO STDOUT").await.unwrap();
    assert_eq!(rows, b"1\tv1\n2\tv2\n3\tv3\n");
    s.execute("COMMIT", "committing on").await.unwrap();

    // A value bigger than one socket read (256 KiB) arrives whole.
    let big = copy_all(&mut s, "COPY (SELECT repeat('x', 1000000)) TO STDOUT")
        .await
        .unwrap();
    assert_eq!(big.len(), 1_000_001);
    assert!(big[..1_000_000].iter().all(|&b| b == b'x'));

    // An error before the COPY starts: the server's code and kind; the session stays usable.
    let e = copy_all(&mut s, "COPY missing_table TO STDOUT")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema, "{e}");
    assert_eq!(e.code(), Some("42P01"), "{e}");
    assert!(e.to_string().contains("copying from 127.0.0.1:"), "{e}");

    // An error in the middle of the data: returned at the end of the command, and the
    // session stays usable.
    let e = copy_all(
        &mut s,
        "COPY (SELECT 10 / (3 - g) FROM generate_series(1, 5) g) TO STDOUT",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Some("22012"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Decode, "{e}");

    let e = s
        .execute("SELECT * FROM missing_table", "querying")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("42P01"), "{e}");
    // A COPY through `execute` is refused, not misread.
    let e = s.execute("COPY c TO STDOUT", "querying").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
}
