//! `check()`: every prerequisite, reported with its fix.

use powersync_source_core::{ChangeSource, ErrorKind, Severity, TableName};
use powersync_source_mssql::testing::CaptureJob;

use crate::fake::{bigint_type, FakeServer};
use crate::support::simple_table;
use crate::workload::fake_source;

fn settings(
    server: &FakeServer,
    tables: Vec<TableName>,
) -> impl std::future::Future<Output = Vec<(Severity, String, String)>> {
    let source = fake_source(server, tables, "");
    async move {
        let report = source.check().await.unwrap();
        report
            .problems
            .into_iter()
            .map(|p| (p.severity, p.setting, p.fix))
            .collect()
    }
}

#[tokio::test]
async fn a_ready_server_has_no_problem() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let report = fake_source(&server, vec![t], "").check().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.server_version.unwrap().contains("16.0"));
}

#[tokio::test]
async fn every_missing_prerequisite_is_reported_with_its_fix() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    let plain = TableName::new("dbo", "plain");
    server.create_table(&plain, &[("id", bigint_type())], &["id"]);
    {
        let mut s = server.lock();
        s.product_version = "14.0.3456.2".into();
        s.snapshot_isolation = false;
        s.permissions.select_cdc = false;
        s.permissions.checkpoint_rw = false;
        s.permissions.view_database_state = false;
        s.permissions.view_server_state = Some(false);
        s.permissions.select_tables = vec![(t.clone(), false)];
        s.capture_job = Some(CaptureJob {
            running: Some(false),
            polling_interval_secs: 5,
            maxtrans: 500,
            maxscans: 10,
        });
    }
    let problems = settings(
        &server,
        vec![t.clone(), plain.clone(), TableName::new("dbo", "nope")],
    )
    .await;
    let find = |s: &str| {
        problems
            .iter()
            .find(|p| p.1 == s)
            .unwrap_or_else(|| panic!("no problem `{s}` in {problems:#?}"))
            .clone()
    };
    assert!(find("version").2.contains("2019"));
    assert!(find("ALLOW_SNAPSHOT_ISOLATION")
        .2
        .contains("SET ALLOW_SNAPSHOT_ISOLATION ON"));
    assert!(find("cdc table dbo.plain")
        .2
        .contains("sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'plain'"));
    assert!(find("cdc table dbo.nope").2.contains("sp_cdc_enable_table"));
    assert!(find("SELECT on dbo.items")
        .2
        .contains("GRANT SELECT ON [dbo].[items]"));
    assert!(find("cdc schema").2.contains("GRANT SELECT ON SCHEMA::cdc"));
    assert!(find("_powersync_checkpoints permissions")
        .2
        .contains("GRANT SELECT, INSERT, DELETE"));
    assert!(find("VIEW DATABASE PERFORMANCE STATE")
        .2
        .contains("GRANT VIEW DATABASE PERFORMANCE STATE"));
    let server_state = find("VIEW SERVER PERFORMANCE STATE");
    assert!(server_state
        .2
        .contains("GRANT VIEW SERVER PERFORMANCE STATE"));
    // No statement of the connector needs it (review §2.1): a warning, so a DBA who declines
    // it can still start.
    assert_eq!(server_state.0, Severity::Warning);
    assert!(find("capture job").2.contains("sp_cdc_start_job"));
    let w = find("capture job settings");
    assert_eq!(w.0, Severity::Warning);
    assert!(w
        .2
        .contains("@pollinginterval = 1, @maxtrans = 5000, @maxscans = 10"));

    // start() refuses with one Prerequisite error listing them.
    let err = powersync_source_core::ChangeSource::start(
        &fake_source(&server, vec![t], ""),
        powersync_source_core::StartFrom::Beginning,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Prerequisite);
    assert!(
        err.to_string().contains("ALLOW_SNAPSHOT_ISOLATION"),
        "{err}"
    );
}

#[tokio::test]
async fn cdc_off_checkpoint_table_missing_and_no_capture_job() {
    let server = FakeServer::new();
    server.lock().cdc_enabled = false;
    let problems = settings(&server, vec![]).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].1, "is_cdc_enabled");
    assert!(problems[0].2.contains("sys.sp_cdc_enable_db"));

    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    server.disable_instance("dbo__powersync_checkpoints");
    server.lock().capture_job = None;
    let problems = settings(&server, vec![t]).await;
    let ck = problems
        .iter()
        .find(|p| p.1 == "_powersync_checkpoints")
        .expect("checkpoint table problem");
    assert!(ck.2.contains("CREATE TABLE dbo._powersync_checkpoints"));
    assert!(problems
        .iter()
        .any(|p| p.1 == "capture job" && p.2.contains("sp_cdc_add_job")));
}

#[tokio::test]
async fn azure_sql_database_has_no_version_agent_or_server_permission_checks() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    {
        let mut s = server.lock();
        s.product_version = "12.0.2000.8".into();
        s.engine_edition = 5;
        s.capture_job = None;
        s.permissions.view_server_state = Some(false);
    }
    let problems = settings(&server, vec![t]).await;
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test]
async fn tables_without_primary_key_are_refused() {
    let server = FakeServer::new();
    let t = TableName::new("dbo", "heap");
    server.create_table(&t, &[("id", bigint_type())], &[]);
    server.enable_cdc(&t, "dbo_heap");
    let problems = settings(&server, vec![t]).await;
    assert!(
        problems.iter().any(|p| p.1 == "primary key dbo.heap"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn every_cdc_table_except_the_checkpoint_table_by_default() {
    let server = FakeServer::new();
    simple_table(&server, "a");
    simple_table(&server, "b");
    let tables = fake_source(&server, vec![], "").discover().await.unwrap();
    let names: Vec<String> = tables.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, vec!["dbo.a", "dbo.b"]);
    assert_eq!(tables[0].columns[0].type_name, "bigint");
    assert!(tables[0].columns[0].is_key);
    assert_eq!(tables[0].columns[1].type_name, "nvarchar(max)");
    // A name without schema means dbo.
    let tables = fake_source(&server, vec![TableName::new("", "b")], "")
        .discover()
        .await
        .unwrap();
    assert_eq!(tables.len(), 1);
}

/// `sys.sp_cdc_add_job`: with a transactional publication the log reader captures, and "a
/// separate capture job is neither required nor allowed": no capture job is no problem then.
#[tokio::test]
async fn a_published_database_needs_no_capture_job() {
    let server = FakeServer::new();
    let t = simple_table(&server, "items");
    server.lock().capture_job = None;
    let problems = settings(&server, vec![t.clone()]).await;
    assert!(
        problems.iter().any(|p| p.1 == "capture job"),
        "{problems:?}"
    );
    server.lock().published = true;
    let problems = settings(&server, vec![t]).await;
    assert!(problems.is_empty(), "{problems:?}");
}
