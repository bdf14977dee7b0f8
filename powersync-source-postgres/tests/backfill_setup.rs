//! The signal table in the prerequisites: `check()` warns (not errors) while it is missing or
//! unpublished, and `setup --apply` ([`provision::run`]) creates and publishes it, after
//! which the warning is gone and a backfill signal works as a new user.

use powersync_source_core::provision::Request;
use powersync_source_core::{ChangeSource, Severity, TableName};
use powersync_source_postgres::{provision, PostgresConfig, PostgresSource};
use powersync_source_testkit::postgres::PostgresServer;

fn signal_warnings(report: &powersync_source_core::CheckReport) -> Vec<String> {
    report
        .problems
        .iter()
        .filter(|p| p.setting == "signal table")
        .map(|p| {
            assert_eq!(p.severity, Severity::Warning, "{p:?}");
            p.what.clone()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_creates_and_publishes_the_signal_table() {
    powersync_source_testkit::init_tracing();
    let Some(server) = powersync_source_testkit::or_skip(PostgresServer::start().await) else {
        return;
    };
    server
        .psql(
            "CREATE TABLE items (id bigint PRIMARY KEY, v text);
             CREATE PUBLICATION powersync FOR TABLE items;",
        )
        .await
        .unwrap();
    let config = PostgresConfig::parse(&server.url())
        .unwrap()
        .with_publication("powersync");
    let source =
        PostgresSource::new(config.clone()).with_tables(vec![TableName::new("public", "items")]);

    let report = source.check().await.unwrap();
    assert!(report.is_ready(), "a missing signal table is no error");
    let warnings = signal_warnings(&report);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("does not exist"), "{warnings:?}");

    // Created by hand but not published: still a warning.
    server
        .psql("CREATE TABLE _powersync_signals (id text PRIMARY KEY, kind text NOT NULL, tables text NOT NULL)")
        .await
        .unwrap();
    let warnings = signal_warnings(&source.check().await.unwrap());
    assert!(
        warnings.len() == 1 && warnings[0].contains("is not in publication"),
        "{warnings:?}"
    );
    server.psql("DROP TABLE _powersync_signals").await.unwrap();

    let request = Request {
        apply: true,
        user: "powersync".into(),
        tables: vec![TableName::new("public", "items")],
    };
    let mut out = Vec::new();
    provision::run(&config, &request, None, &mut out)
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out);
    assert!(printed.contains("_powersync_signals"), "{printed}");
    let published = server
        .psql(
            "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'powersync'",
        )
        .await
        .unwrap();
    assert!(
        published.contains("_powersync_signals,items"),
        "{published}"
    );
    let warnings = signal_warnings(&source.check().await.unwrap());
    assert!(warnings.is_empty(), "{warnings:?}");

    // A second run has nothing left to do about it.
    let mut again = Vec::new();
    let request = Request {
        apply: false,
        ..request
    };
    provision::run(&config, &request, None, &mut again)
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&again);
    assert!(!printed.contains("CREATE TABLE IF NOT EXISTS"), "{printed}");
}
