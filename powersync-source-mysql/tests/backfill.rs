//! Backfills while streaming (DBLog watermarks in `_powersync_checkpoints`, requests through
//! `_powersync_signals`) on a throwaway MariaDB, under a writer that keeps changing the
//! backfilled table and another one for the whole backfill. Each scenario applies the events
//! in stream order to an in-memory replica ([`Model`]) and checks that it ends equal to the
//! source row for row, that no row's `version` ever went backwards in apply order, and that
//! the backfill's progress events arrive.

use std::time::Duration;

use powersync_source_core::{ChangeSource, StartFrom, StreamOptions, TableName};
use powersync_source_mysql::mysql_async::prelude::Queryable;
use powersync_source_mysql::mysql_async::Conn;
use powersync_source_mysql::{MySqlConfig, MySqlSource};

use crate::backfill_model::{
    connect, create_table, drive, fill, read_source, start_server, Model, Progress, Writer,
};
use crate::workload::{MariaWorkload, PASSWORD};

const CHUNK: usize = 500;

/// A source over `tables` of database `test` (none: the whole database), reading backfills
/// in chunks of [`CHUNK`] rows.
fn source(port: u16, tables: &[&str]) -> MySqlSource {
    let url = format!(
        "mariadb://rep:{PASSWORD}@127.0.0.1:{port}/test?heartbeat=1&silence_timeout=6&server_id=7001"
    );
    MySqlSource::new(MySqlConfig::parse(&url).unwrap())
        .with_stream_options(
            StreamOptions::default()
                .with_backfill_chunk_rows(CHUNK)
                .with_tables(tables.iter().map(|t| TableName::new("test", *t)).collect()),
        )
        .with_retry(MariaWorkload::retry())
}

async fn create_signal_table(conn: &mut Conn) {
    conn.query_drop(
        "CREATE TABLE test._powersync_signals (id VARCHAR(255) PRIMARY KEY, kind VARCHAR(64) NOT NULL, tables TEXT NOT NULL)",
    )
    .await
    .expect("signal table");
}

/// Stops the writer, waits until the stream passed everything written, and compares the
/// replica with the source.
async fn converge(
    writer: Writer,
    source: &MySqlSource,
    stream: &mut powersync_source_core::ChangeStream,
    model: &mut Model,
    conn: &mut Conn,
    tables: &[&str],
) -> u64 {
    let statements = writer.stop().await;
    let marker = source.write_checkpoint().await.expect("write checkpoint");
    drive(stream, model, Duration::from_secs(60), |m| {
        m.observed.contains(&marker)
    })
    .await;
    assert!(
        model.regressions.is_empty(),
        "versions went backwards in apply order (table, id, held, applied): {:?}",
        &model.regressions[..model.regressions.len().min(10)]
    );
    let expected = read_source(conn, tables).await;
    for t in tables {
        let got = model.tables.get(*t).cloned().unwrap_or_default();
        let want = &expected[*t];
        assert_eq!(got.len(), want.len(), "{t}: row count");
        for (id, row) in want {
            assert_eq!(got.get(id), Some(row), "{t}: row {id}");
        }
    }
    statements
}

fn started(model: &Model, id: &str) -> Vec<String> {
    model
        .progress
        .iter()
        .filter_map(|p| match p {
            Progress::Started { table, id: i } if i == id => Some(table.clone()),
            _ => None,
        })
        .collect()
}

/// (a) A backfill of `big` requested by inserting a signal row (the signal table is not part
/// of the selection) while a writer bumps versions of `big` (half of them just past the
/// chunk being read) and of `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_through_a_signal_under_concurrent_writes() {
    powersync_source_testkit::init_tracing();
    let Some(server) = start_server().await else {
        return;
    };
    let port = server.port();
    let mut conn = connect(port).await;
    create_table(&mut conn, "big", 20_000).await;
    create_table(&mut conn, "other", 100).await;
    create_signal_table(&mut conn).await;
    let source = source(port, &["big", "other"]);
    let mut model = Model::default();
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(60), |m| {
        m.snapshot_done
    })
    .await;
    let writer = Writer::start(port, "big", 20_000, model.frontier.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.query_drop(
        "INSERT INTO test._powersync_signals (id, kind, tables) VALUES ('sig-1', 'backfill', 'test.big')",
    )
    .await
    .unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(180), |m| {
        m.done("sig-1").is_some()
    })
    .await;
    let statements = converge(
        writer,
        &source,
        &mut stream,
        &mut model,
        &mut conn,
        &["big", "other"],
    )
    .await;
    assert_eq!(started(&model, "sig-1"), vec!["big".to_owned()]);
    let rows = model.done("sig-1").unwrap();
    assert!(
        rows > 19_000 && rows <= 21_000,
        "{rows} rows backfilled of about 20000"
    );
    let chunks = model.chunks();
    assert!(chunks >= 20_000 / CHUNK, "{chunks} chunks");
    let (intervals, with_other) = model.other_between_chunks();
    eprintln!(
        "backfill: {chunks} chunks, {rows} rows, writer {statements} statements, \
         other committed between {with_other} of {intervals} chunk pairs"
    );
    // Usually every pair (the writer commits every few milliseconds, a chunk cycle takes
    // tens); a quarter leaves room for a loaded machine starving the writer for a while.
    assert!(
        with_other * 4 >= intervals,
        "`other` committed between only {with_other} of {intervals} consecutive chunks"
    );
}

/// (b) The stream is dropped after a few chunks and started again from the last commit's
/// checkpoint (what a host stores): the backfill goes on after its last stored chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_resumes_from_the_stored_checkpoint() {
    powersync_source_testkit::init_tracing();
    let Some(server) = start_server().await else {
        return;
    };
    let port = server.port();
    let mut conn = connect(port).await;
    create_table(&mut conn, "big", 20_000).await;
    create_table(&mut conn, "other", 100).await;
    create_signal_table(&mut conn).await;
    let source = source(port, &["big", "other"]);
    let mut model = Model::default();
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(60), |m| {
        m.snapshot_done
    })
    .await;
    let writer = Writer::start(port, "big", 20_000, model.frontier.clone());
    conn.query_drop(
        "INSERT INTO test._powersync_signals (id, kind, tables) VALUES ('sig-r', 'backfill', 'big')",
    )
    .await
    .unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.chunks() >= 5
    })
    .await;
    let stored = model.last_commit.clone().expect("a stored checkpoint");
    let cursor = stored
        .backfill()
        .expect("cursor parses")
        .expect("the checkpoint carries the backfill cursor");
    assert_eq!(cursor.tasks.len(), 1, "{cursor:?}");
    assert_eq!(cursor.tasks[0].id, "sig-r");
    assert_eq!(cursor.tasks[0].table, TableName::new("test", "big"));
    assert!(cursor.tasks[0].after.is_some(), "{cursor:?}");
    drop(stream);
    model.restart();
    let read_before = model.backfilled["big"].len();
    let last_key = *model.backfilled["big"].iter().max().unwrap();
    // The writer goes on while the host is down.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut stream = source
        .start(StartFrom::Checkpoint(stored))
        .await
        .expect("resume");
    drive(&mut stream, &mut model, Duration::from_secs(180), |m| {
        m.done("sig-r").is_some()
    })
    .await;
    converge(
        writer,
        &source,
        &mut stream,
        &mut model,
        &mut conn,
        &["big", "other"],
    )
    .await;
    let after_restart = &model.backfilled["big"][read_before..];
    let again = after_restart.iter().filter(|&&id| id <= last_key).count();
    eprintln!(
        "resume: {read_before} rows before the stop (last key {last_key}), {} after, {again} read again",
        after_restart.len()
    );
    assert!(
        again <= CHUNK,
        "{again} rows at or before the stored cursor were read again"
    );
    assert_eq!(
        started(&model, "sig-r").len(),
        1,
        "the resumed backfill started over"
    );
    let total = model.backfilled["big"].len();
    assert!(total <= 20_000 + 1_000 + CHUNK, "{total} rows backfilled");
}

/// (c) `ChangeStream::request_backfill` writes a signal row (creating the signal table) and
/// the backfill runs as for a signal a person inserts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_backfill_goes_through_the_signal_table() {
    powersync_source_testkit::init_tracing();
    let Some(server) = start_server().await else {
        return;
    };
    let port = server.port();
    let mut conn = connect(port).await;
    create_table(&mut conn, "big", 3_000).await;
    create_table(&mut conn, "other", 100).await;
    let source = source(port, &["big", "other"]);
    let mut model = Model::default();
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(60), |m| {
        m.snapshot_done
    })
    .await;
    let writer = Writer::start(port, "big", 3_000, model.frontier.clone());
    let id = stream
        .request_backfill(&[TableName::new("", "big")])
        .expect("request");
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.done(&id).is_some()
    })
    .await;
    converge(
        writer,
        &source,
        &mut stream,
        &mut model,
        &mut conn,
        &["big", "other"],
    )
    .await;
    assert_eq!(started(&model, &id), vec!["big".to_owned()]);
    let signal: Option<(String, String)> = conn
        .exec_first(
            "SELECT kind, tables FROM test._powersync_signals WHERE id = ?",
            (&id,),
        )
        .await
        .unwrap();
    assert_eq!(
        signal,
        Some(("backfill".to_owned(), "test.big".to_owned())),
        "the request is not in the signal table"
    );
}

/// (d) Tables entering the scope of a whole-database stream while it streams (`CREATE TABLE
/// … SELECT`, and `RENAME TABLE` from another database) are read by backfills with `added-`
/// ids, under the writer; the connector's own tables never reach the replica as rows (the
/// replica panics on a table without `version`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_entering_the_scope_are_backfilled() {
    powersync_source_testkit::init_tracing();
    let Some(server) = start_server().await else {
        return;
    };
    let port = server.port();
    let mut conn = connect(port).await;
    create_table(&mut conn, "other", 100).await;
    conn.query_drop(
        "CREATE DATABASE seed; \
         CREATE TABLE seed.src (id BIGINT PRIMARY KEY, version BIGINT NOT NULL, payload VARCHAR(64) NOT NULL); \
         CREATE TABLE seed.moved (id BIGINT PRIMARY KEY, version BIGINT NOT NULL, payload VARCHAR(64) NOT NULL)",
    )
    .await
    .unwrap();
    fill(&mut conn, "seed.src", 1, 4_000).await;
    fill(&mut conn, "seed.moved", 1, 2_500).await;
    let source = source(port, &[]);
    let mut model = Model::default();
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(60), |m| {
        m.snapshot_done
    })
    .await;

    conn.query_drop(
        "CREATE TABLE test.late (id BIGINT PRIMARY KEY, version BIGINT NOT NULL, payload VARCHAR(64) NOT NULL) \
         SELECT id, version, payload FROM seed.src",
    )
    .await
    .unwrap();
    let writer = Writer::start(port, "late", 4_000, model.frontier.clone());
    let added = |m: &Model, table: &str| {
        m.progress.iter().find_map(|p| match p {
            Progress::Started { table: t, id } if t == table => Some(id.clone()),
            _ => None,
        })
    };
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        added(m, "late").is_some_and(|id| m.done(&id).is_some())
    })
    .await;
    conn.query_drop("RENAME TABLE seed.moved TO test.moved")
        .await
        .unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        added(m, "moved").is_some_and(|id| m.done(&id).is_some())
    })
    .await;
    converge(
        writer,
        &source,
        &mut stream,
        &mut model,
        &mut conn,
        &["late", "moved", "other"],
    )
    .await;
    for table in ["late", "moved"] {
        let id = added(&model, table).unwrap();
        assert!(id.starts_with("added-"), "{table}: request id {id}");
    }
    // The writer deletes a few rows before the backfill reaches them.
    assert!(
        model.backfilled["late"].len() >= 3_500,
        "{} rows of late backfilled",
        model.backfilled["late"].len()
    );
    assert_eq!(model.backfilled["moved"].len(), 2_500);
}

/// `check()` warns (without failing) while the signal table is missing, its remedy creates
/// it, and `setup`'s plan creates it and grants the rights on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_signal_table_is_a_warning_and_setup_creates_it() {
    use powersync_source_core::Severity;
    use powersync_source_mysql::provision::{plan, read_facts, Wanted};

    let Some(server) = start_server().await else {
        return;
    };
    let port = server.port();
    let mut conn = connect(port).await;
    create_table(&mut conn, "big", 10).await;
    let source = source(port, &["big"]);
    let report = source.check().await.expect("check");
    let warning = report
        .problems
        .iter()
        .find(|p| p.setting == "signal table")
        .unwrap_or_else(|| panic!("no signal table warning: {:?}", report.problems));
    assert_eq!(warning.severity, Severity::Warning);
    assert!(report.is_ready(), "{:?}", report.problems);

    let wanted = Wanted {
        user: "rep".into(),
        databases: vec!["test".into()],
        checkpoint_table: ("test".into(), "_powersync_checkpoints".into()),
    };
    let facts = read_facts(&mut conn, &wanted).await.expect("facts");
    assert!(!facts.signal_table);
    let steps: Vec<String> = plan(&facts, &wanted)
        .steps
        .iter()
        .map(|s| s.fix.to_string())
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("CREATE TABLE IF NOT EXISTS `test`.`_powersync_signals`")),
        "{steps:?}"
    );

    let statement = warning.remedy.statement("").expect("an SQL remedy");
    conn.query_drop(statement).await.expect("the remedy runs");
    let report = source.check().await.expect("check");
    assert!(
        report.problems.iter().all(|p| p.setting != "signal table"),
        "{:?}",
        report.problems
    );
    assert!(read_facts(&mut conn, &wanted).await.unwrap().signal_table);
}

/// A signal naming a table without a primary key, one outside the selection and one that
/// does not exist: each is a `BackfillFailed`, and the stream goes on (a later backfill of a
/// good table completes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_that_cannot_be_backfilled_fail_alone() {
    powersync_source_testkit::init_tracing();
    let Some(server) = start_server().await else {
        return;
    };
    let port = server.port();
    let mut conn = connect(port).await;
    create_table(&mut conn, "big", 1_200).await;
    create_table(&mut conn, "other", 100).await;
    create_table(&mut conn, "outside", 10).await;
    conn.query_drop(
        "CREATE TABLE test.keyless (id BIGINT, version BIGINT NOT NULL, payload VARCHAR(64) NOT NULL); \
         INSERT INTO test.keyless VALUES (1, 0, 'p1')",
    )
    .await
    .unwrap();
    create_signal_table(&mut conn).await;
    let source = source(port, &["big", "other", "keyless"]);
    let mut model = Model::default();
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(60), |m| {
        m.snapshot_done
    })
    .await;
    conn.query_drop(
        "INSERT INTO test._powersync_signals (id, kind, tables) VALUES ('bad', 'backfill', 'keyless, test.outside,missing'); \
         INSERT INTO test._powersync_signals (id, kind, tables) VALUES ('good', 'backfill', 'big')",
    )
    .await
    .unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(60), |m| {
        m.done("good").is_some()
    })
    .await;
    let failed: Vec<String> = model
        .progress
        .iter()
        .filter_map(|p| match p {
            Progress::Failed { table, id, error } if id == "bad" => {
                Some(format!("{table}: {error}"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(
        failed[0].starts_with("keyless: ") && failed[0].contains("primary key"),
        "{failed:?}"
    );
    assert!(
        failed[1].starts_with("outside: ") && failed[1].contains("not replicated"),
        "{failed:?}"
    );
    assert!(
        failed[2].starts_with("missing: ") && failed[2].contains("not replicated"),
        "{failed:?}"
    );
    assert_eq!(model.done("good"), Some(1_200));
}

/// The binlog connection is killed in the middle of a backfill: the stream reconnects from
/// its last boundary, passes the watermarks again, and the backfill completes with the same
/// checks (the reader's own connection is killed too, and reopened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_survives_killed_connections() {
    powersync_source_testkit::init_tracing();
    let Some(server) = start_server().await else {
        return;
    };
    let port = server.port();
    let mut conn = connect(port).await;
    create_table(&mut conn, "big", 10_000).await;
    create_table(&mut conn, "other", 100).await;
    create_signal_table(&mut conn).await;
    let source = source(port, &["big", "other"]);
    let mut model = Model::default();
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(60), |m| {
        m.snapshot_done
    })
    .await;
    let writer = Writer::start(port, "big", 10_000, model.frontier.clone());
    conn.query_drop(
        "INSERT INTO test._powersync_signals (id, kind, tables) VALUES ('sig-k', 'backfill', 'big')",
    )
    .await
    .unwrap();
    for round in 0..2 {
        drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
            m.chunks() >= 4 + round * 6
        })
        .await;
        // Every connection of the `rep` user: the binlog dump and the backfill reader.
        let ids: Vec<u64> = conn
            .query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'rep'")
            .await
            .unwrap();
        assert!(!ids.is_empty(), "no connection of the stream found");
        for id in ids {
            conn.query_drop(format!("KILL {id}")).await.ok();
        }
    }
    drive(&mut stream, &mut model, Duration::from_secs(180), |m| {
        m.done("sig-k").is_some()
    })
    .await;
    converge(
        writer,
        &source,
        &mut stream,
        &mut model,
        &mut conn,
        &["big", "other"],
    )
    .await;
    assert!(
        stream.stats().snapshot().reconnects >= 2,
        "{} reconnects",
        stream.stats().snapshot().reconnects
    );
    assert_eq!(started(&model, "sig-k").len(), 1);
}

/// Columns added and dropped while `big` is backfilled: the backfill completes with the same
/// checks, and the last schema the host saw for `big` is the table's final shape (a chunk read
/// before a change may carry the older shape; the stream announces the current one after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_during_a_backfill() {
    powersync_source_testkit::init_tracing();
    let Some(server) = start_server().await else {
        return;
    };
    let port = server.port();
    let mut conn = connect(port).await;
    create_table(&mut conn, "big", 10_000).await;
    create_table(&mut conn, "other", 100).await;
    create_signal_table(&mut conn).await;
    let source = source(port, &["big", "other"]);
    let mut model = Model::default();
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(60), |m| {
        m.snapshot_done
    })
    .await;
    let writer = Writer::start(port, "big", 10_000, model.frontier.clone());
    conn.query_drop(
        "INSERT INTO test._powersync_signals (id, kind, tables) VALUES ('sig-s', 'backfill', 'big')",
    )
    .await
    .unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.chunks() >= 3
    })
    .await;
    conn.query_drop(
        "ALTER TABLE test.big ADD COLUMN extra INT NULL DEFAULT 7, ADD COLUMN gone INT NULL",
    )
    .await
    .unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(120), |m| {
        m.chunks() >= 8
    })
    .await;
    conn.query_drop("ALTER TABLE test.big DROP COLUMN gone")
        .await
        .unwrap();
    drive(&mut stream, &mut model, Duration::from_secs(180), |m| {
        m.done("sig-s").is_some()
    })
    .await;
    converge(
        writer,
        &source,
        &mut stream,
        &mut model,
        &mut conn,
        &["big", "other"],
    )
    .await;
    assert_eq!(
        model.last_schema["big"],
        vec!["id", "version", "payload", "extra"],
        "the host's last schema of big"
    );
}
