//! Backfills through the binaries (issue 20): a 200k-row table re-read on a signal while a
//! writer changes it and another table, `mirror` SIGKILLed twice during the backfill; then a
//! 200k-row table added to the publication while streaming. Checked: the mirror equals the
//! source row for row, no row's `version` goes backwards in the mirror's apply order (SQLite
//! triggers log every applied image), the other table keeps committing between chunks, and a
//! restarted mirror reads no stored chunk again. The same run through `publish`/`consume`
//! gives the same rows.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::apply_log::{
    cursor_key, install_log, set_run, stored_cursor, table_exists, versions_going_back, wait_until,
    CHUNK,
};
use crate::common::{client, mirror_position, server, sql, sqlite_rows, Proc, MIRROR};

const ROWS: i64 = 200_000;

async fn source_versions(
    pg: &powersync_source_testkit::PostgresServer,
    table: &str,
) -> Vec<Vec<String>> {
    let c = client(pg).await;
    c.query(&format!("SELECT id, version FROM {table} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            vec![
                format!("int:{}", r.get::<_, i64>(0)),
                format!("int:{}", r.get::<_, i64>(1)),
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signalled_backfill_and_a_late_table_survive_kills_under_writes() {
    let Some(pg) = server().await else { return };
    sql(
        &pg,
        &format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, version bigint NOT NULL, pad text);
             CREATE TABLE other (id bigint PRIMARY KEY, version bigint NOT NULL);
             CREATE TABLE late (id bigint PRIMARY KEY, version bigint NOT NULL, pad text);
             CREATE TABLE _powersync_signals (id text PRIMARY KEY, kind text NOT NULL, tables text NOT NULL);
             INSERT INTO big SELECT g, 1, md5(g::text) FROM generate_series(1, {ROWS}) g;
             INSERT INTO late SELECT g, 1, md5(g::text) FROM generate_series(1, {ROWS}) g;
             INSERT INTO other SELECT g, 1 FROM generate_series(1, 50) g;
             CREATE PUBLICATION powersync FOR TABLE big, other, _powersync_signals;"
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let db_arg = db.to_str().unwrap().to_string();
    let url = pg.url();
    let chunk = CHUNK.to_string();
    let mirror_args = [
        url.as_str(),
        db_arg.as_str(),
        "--backfill-chunk-rows",
        chunk.as_str(),
    ];

    // The same stream through JetStream, on a slot of its own (feature `jetstream`).
    #[cfg(feature = "jetstream")]
    let nats = crate::jetstream::NatsServer::start().await;
    #[cfg(feature = "jetstream")]
    let fan_out = nats.as_ref().map(|nats| {
        let nats_url = nats.url();
        let consumed = dir.path().join("from-jetstream.db");
        let publish = Proc::spawn(
            crate::jetstream::PUBLISH,
            &[
                url.as_str(),
                "--slot",
                "powersync_fanout",
                "--nats",
                &nats_url,
                "--stream",
                "CDC",
                "--subject-prefix",
                "cdc",
            ],
        );
        let consume_args: Vec<String> = [
            "--nats",
            &nats_url,
            "--stream",
            "CDC",
            "--subject-prefix",
            "cdc",
            "--db",
            consumed.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        (publish, consume_args, consumed)
    });

    let mut mirror = Proc::spawn(MIRROR, &mirror_args);
    // The initial snapshot is done once the stored position is a checkpoint.
    wait_until("the end of the snapshot", &mut mirror, |_| {
        mirror_position(&db).is_some_and(|p| p.starts_with("postgres:v1:"))
    })
    .await;
    install_log(&db, &["big", "other"]);
    set_run(&db, 1);

    // The writer: a few hundred transactions per second, each bumping the version of a random
    // `big` row (and, once it is published, a `late` row) and of an `other` row.
    let stop = Arc::new(AtomicBool::new(false));
    let late_published = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let c = client(&pg).await;
        let (stop, late_published, commits) =
            (stop.clone(), late_published.clone(), commits.clone());
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(20);
            while !stop.load(Ordering::Relaxed) {
                // One statement, one round trip, one transaction touching every table.
                let (b, l, o) = (
                    rng.gen_range(1..=ROWS),
                    rng.gen_range(1..=ROWS),
                    rng.gen_range(1..=50i64),
                );
                let late = late_published.load(Ordering::Relaxed);
                c.execute(
                    "WITH b AS (UPDATE big SET version = version + 1 WHERE id = $1),
                          o AS (UPDATE other SET version = version + 1 WHERE id = $3)
                     UPDATE late SET version = version + 1 WHERE id = $2 AND $4",
                    &[&b, &l, &o, &late],
                )
                .await
                .unwrap();
                commits.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };

    sql(
        &pg,
        "INSERT INTO _powersync_signals VALUES ('req-big', 'backfill', 'public.big')",
    )
    .await;
    // Two kills during the backfill, each after the mirror stored some chunks.
    for (run, rows_at_least) in [(2, 40_000u64), (3, 120_000u64)] {
        wait_until("backfill progress", &mut mirror, |_| {
            stored_cursor(&db).is_some_and(|(rows, _)| rows >= rows_at_least)
        })
        .await;
        mirror.kill().await;
        let (stored_rows, stored_after) = stored_cursor(&db).expect("a stored cursor");
        set_run(&db, run);
        mirror = Proc::spawn(MIRROR, &mirror_args);
        // The restarted mirror's first backfilled rows start after the stored cursor and hold
        // at most one chunk more: nothing stored is read again.
        wait_until("a chunk after the restart", &mut mirror, |_| {
            stored_cursor(&db).is_none_or(|(rows, _)| rows > stored_rows)
        })
        .await;
        let after = cursor_key(&stored_after);
        let min = sqlite_rows(
            &db,
            &format!("SELECT min(id), count(*) FROM apply_log WHERE tbl = 'big' AND op = 'INSERT' AND run = {run}"),
        );
        let first: i64 = min[0][0].trim_start_matches("int:").parse().unwrap();
        assert!(
            first > after,
            "run {run} re-read row {first}, stored cursor was after {after}"
        );
    }
    wait_until("the end of the backfill", &mut mirror, |_| {
        stored_cursor(&db).is_none()
            && !sqlite_rows(
                &db,
                "SELECT 1 FROM apply_log WHERE tbl = 'big' AND op = 'INSERT' AND id = 200000",
            )
            .is_empty()
    })
    .await;

    // A late table: published while streaming, read by the same machinery.
    sql(&pg, "ALTER PUBLICATION powersync ADD TABLE late").await;
    late_published.store(true, Ordering::Relaxed);
    wait_until("the late table", &mut mirror, |_| table_exists(&db, "late")).await;
    install_log(&db, &["late"]);
    wait_until("the end of the late table's backfill", &mut mirror, |_| {
        stored_cursor(&db).is_none()
            && !sqlite_rows(&db, "SELECT 1 FROM late WHERE id = 200000").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    mirror.kill().await;
    set_run(&db, 4);
    let last = Proc::spawn(
        MIRROR,
        &[&mirror_args[..], &["--exit-when-idle", "2"]].concat(),
    )
    .finish()
    .await;
    assert_eq!(last.code(), 0, "{}", last.stderr);
    eprintln!(
        "writer: {} transactions during the test",
        commits.load(Ordering::Relaxed)
    );

    #[cfg(feature = "jetstream")]
    if let Some((publish, consume_args, consumed)) = fan_out {
        // The publisher runs its own backfills at its own pace: consume until the file
        // equals the source (each `consume` run resumes where the last one stored).
        let args: Vec<&str> = consume_args.iter().map(String::as_str).collect();
        let mut rounds = 0;
        loop {
            let consume = Proc::spawn(
                crate::jetstream::CONSUME,
                &[&args[..], &["--exit-when-idle", "3"]].concat(),
            )
            .finish()
            .await;
            assert_eq!(consume.code(), 0, "{}", consume.stderr);
            let mut equal = true;
            for table in ["big", "late", "other"] {
                let expected = source_versions(&pg, table).await;
                let actual = table_exists(&consumed, table).then(|| {
                    sqlite_rows(
                        &consumed,
                        &format!("SELECT id, version FROM {table} ORDER BY id"),
                    )
                });
                equal &= actual.as_ref() == Some(&expected);
            }
            if equal {
                break;
            }
            rounds += 1;
            assert!(
                rounds < 20,
                "the JetStream copy never became equal to the source; publish stderr:\n{}",
                publish.stderr()
            );
        }
        publish.kill().await;
    }

    for table in ["big", "late", "other"] {
        let expected = source_versions(&pg, table).await;
        let actual = sqlite_rows(&db, &format!("SELECT id, version FROM {table} ORDER BY id"));
        assert_eq!(actual.len(), expected.len(), "{table}");
        assert!(actual == expected, "{table} differs from the source");
        let back = versions_going_back(&db, table);
        assert!(back.is_empty(), "{back:?}");
    }

    // `other` kept committing during the backfills: within one mirror process, the longest
    // pause between two of its applied changes is at most twice the longest time the mirror
    // spent on one chunk (reading nothing else meanwhile), plus a group commit.
    let gaps = sqlite_rows(
        &db,
        "SELECT max(gap) FROM (SELECT at - lag(at) OVER (PARTITION BY run ORDER BY seq) AS gap
           FROM apply_log WHERE tbl = 'other')",
    );
    let gap: f64 = gaps[0][0].trim_start_matches("real:").parse().unwrap();
    // A chunk: backfilled rows applied with no `other` change among them.
    let chunks = sqlite_rows(
        &db,
        "SELECT max(n), max(span) FROM (SELECT count(*) AS n, max(at) - min(at) AS span
           FROM (SELECT seq, tbl, op, at, run,
                   sum(tbl = 'other') OVER (ORDER BY seq) AS grp FROM apply_log)
           WHERE op = 'INSERT' AND tbl != 'other' GROUP BY grp, run)",
    );
    let most: u64 = chunks[0][0].trim_start_matches("int:").parse().unwrap();
    let span: f64 = chunks[0][1].trim_start_matches("real:").parse().unwrap();
    eprintln!(
        "longest pause of `other` in one mirror process: {gap:.3} s; longest run of backfilled rows between two of its changes: {most} rows over {span:.3} s"
    );
    assert!(gap <= 2.0 * span + 0.5, "`other` paused for {gap:.3} s");
}
