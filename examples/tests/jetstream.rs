//! `publish` and `consume` through a throwaway `nats-server -js`: `publish` SIGKILLed several
//! times under a live workload (mid-snapshot included), the mirror `consume` builds equals the
//! source, and the stream holds every transaction once; `publish` waits for JetStream when it
//! is down; bad options are configuration errors.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use examples::jetstream::marker::{Marker, MarkerKind};
use examples::jetstream::{connection, ids};
use futures::StreamExt;
use powersync_source_testkit::{self as testkit, PostgresServer, TestkitError};
use rand::{Rng, SeedableRng};
use tokio::process::{Child, Command};

use crate::common::{client, run, server, sql, sqlite_rows, Proc};

const PUBLISH: &str = env!("CARGO_BIN_EXE_publish");
const CONSUME: &str = env!("CARGO_BIN_EXE_consume");

/// A throwaway `nats-server -js` on a free port with its store in a temporary directory.
struct NatsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server, or `None` after one `SKIPPED:` line (a failure with
    /// `POWERSYNC_REQUIRE_SERVERS=1`).
    async fn start() -> Option<NatsServer> {
        let port = match testkit::free_port() {
            Ok(p) => p,
            Err(e) => return testkit::or_skip(Err(e)),
        };
        testkit::or_skip(Self::start_on(port).await)
    }

    async fn start_on(port: u16) -> testkit::Result<NatsServer> {
        let missing = |hint: String| TestkitError::Missing {
            what: "nats-server -js".into(),
            hint,
        };
        let dir = tempfile::tempdir().map_err(|e| missing(format!("temp dir: {e}")))?;
        let log = std::fs::File::create(dir.path().join("nats.log"))
            .map_err(|e| missing(format!("log file: {e}")))?;
        let child = Command::new(nats_server_bin())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| missing(format!("cannot run nats-server: {e}")))?;
        let mut server = NatsServer { child, port, dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(missing(format!(
                    "nats-server exited ({status}): {}",
                    server.log_tail()
                )));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(missing(format!(
                    "nats-server did not listen within 10 s: {}",
                    server.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

fn nats_server_bin() -> String {
    for candidate in ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    "nats-server".into()
}

/// Polls the stream's last commit marker until `stop` accepts it; returns it.
async fn wait_marker(nats: &str, stream: &str, stop: impl Fn(&Marker) -> bool) -> Marker {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let client = async_nats::connect(nats).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no such commit marker within 60 s"
        );
        if let Ok(s) = js.get_stream(stream).await {
            if let Ok(Some((_, m))) = connection::last_marker(&s, "cdc").await {
                if stop(&m) {
                    return m;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every message of the stream: (subject, Nats-Msg-Id, Powersync-Base, payload).
async fn stream_messages(nats: &str, stream: &str) -> Vec<(String, String, String, Vec<u8>)> {
    let client = async_nats::connect(nats).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.expect("stream");
    let last = s.info().await.expect("info").state.last_sequence;
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::new();
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("stream read timed out")
    {
        let msg = msg.expect("message");
        let seq = msg.info().expect("info").stream_sequence;
        let header = |n: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(n))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        out.push((
            msg.subject.to_string(),
            header(ids::HEADER_MSG_ID),
            header(ids::HEADER_BASE),
            msg.payload.to_vec(),
        ));
        if seq >= last {
            break;
        }
    }
    out
}

/// The source's rows rendered like `common::sqlite_rows` renders SQLite's.
async fn source_rows(pg: &PostgresServer, query: &str, kinds: &[&str]) -> Vec<Vec<String>> {
    let c = client(pg).await;
    let msgs = c.simple_query(query).await.expect("source query");
    msgs.into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                kinds
                    .iter()
                    .enumerate()
                    .map(|(i, kind)| match r.get(i) {
                        None => "null".to_string(),
                        Some(v) => match *kind {
                            "real" => format!("real:{:?}", v.parse::<f64>().unwrap()),
                            other => format!("{other}:{v}"),
                        },
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_publisher_loses_and_duplicates_nothing() {
    let Some(pg) = server().await else { return };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    sql(
        &pg,
        "CREATE TABLE t (id bigint PRIMARY KEY, v text, n int, f float8, b bytea);
         CREATE TABLE nokey (a int, b text);
         ALTER TABLE nokey REPLICA IDENTITY FULL;
         CREATE PUBLICATION powersync FOR ALL TABLES;
         INSERT INTO t SELECT g, 'v' || g, g % 7, g / 4.0, decode(md5(g::text), 'hex')
           FROM generate_series(1, 12000) g;
         INSERT INTO nokey SELECT g, 'n' || g FROM generate_series(1, 100) g;",
    )
    .await;
    let url = format!("{}?snapshot_chunk_rows=300", pg.url());
    let nats_url = nats.url();
    let publish_args = [
        url.as_str(),
        "--nats",
        &nats_url,
        "--stream",
        "CDC",
        "--subject-prefix",
        "cdc",
        "--duplicate-window",
        "300",
        "--max-in-flight",
        "256",
    ];
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-jetstream.db");
    let db_arg = db.to_str().unwrap().to_string();
    let consume_args = [
        "--nats",
        nats_url.as_str(),
        "--stream",
        "CDC",
        "--subject-prefix",
        "cdc",
        "--db",
        &db_arg,
    ];

    // Killed in the middle of the snapshot: right after its first chunk marker.
    let first = Proc::spawn(PUBLISH, &publish_args);
    let marker = wait_marker(&nats_url, "CDC", |_| true).await;
    first.kill().await;
    assert_eq!(
        marker.kind,
        MarkerKind::SnapshotChunk,
        "the snapshot ended before the kill"
    );

    // A writer: random transactions (and one schema change) until done.
    let done = Arc::new(AtomicU64::new(0));
    let writer = {
        let mut c = client(&pg).await;
        let done = done.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(10);
            let mut next = 12001i64;
            for i in 0..1000 {
                if i == 300 {
                    c.batch_execute("ALTER TABLE t ADD COLUMN extra int")
                        .await
                        .unwrap();
                }
                let tx = c.transaction().await.unwrap();
                for _ in 0..rng.gen_range(1..=4) {
                    let id = rng.gen_range(1..next);
                    match rng.gen_range(0..10) {
                        0..=3 => {
                            let f: f64 = rng.gen::<f64>() * 100.0;
                            tx.execute(
                                "UPDATE t SET v = v || '+', n = coalesce(n, 0) + 1, f = $2 WHERE id = $1",
                                &[&id, &f],
                            )
                            .await
                            .unwrap();
                        }
                        4 => {
                            tx.execute("UPDATE t SET id = $2 WHERE id = $1", &[&id, &next])
                                .await
                                .unwrap();
                            next += 1;
                        }
                        5..=6 => {
                            let insert = if i >= 300 {
                                "INSERT INTO t (id, v, n, f, b, extra) VALUES ($1, 'new', NULL, 0.5, '\\x00', 7)"
                            } else {
                                "INSERT INTO t (id, v, n, f, b) VALUES ($1, 'new', NULL, 0.5, '\\x00')"
                            };
                            tx.execute(insert, &[&next]).await.unwrap();
                            next += 1;
                        }
                        7 => {
                            tx.execute("DELETE FROM t WHERE id = $1", &[&id])
                                .await
                                .unwrap();
                        }
                        _ => {
                            let a = rng.gen_range(1..200i32);
                            tx.execute("UPDATE nokey SET b = b || '*' WHERE a = $1", &[&a])
                                .await
                                .unwrap();
                        }
                    }
                }
                tx.commit().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(6)).await;
            }
        })
    };

    // A consumer that is killed too while the publisher comes and goes.
    let consumer = Proc::spawn(CONSUME, &consume_args);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut republished = 0;
    let mut at = marker.position;
    for round in 0..4 {
        let p = Proc::spawn(PUBLISH, &publish_args);
        // Killed at a random moment after this run stored a transaction of its own.
        let m = wait_marker(&nats_url, "CDC", |m| {
            m.kind == MarkerKind::Commit && m.position != at
        })
        .await;
        at = m.position;
        let ms = rng.gen_range(0..400);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if p.stderr().contains("dropped a republished message") {
            republished += 1;
        }
        if round == 0 {
            assert!(
                p.stderr().contains("resuming the snapshot"),
                "{}",
                p.stderr()
            );
        }
        p.kill().await;
        if round == 1 {
            // A kill right after a restart: before or during the first publishes.
            let p = Proc::spawn(PUBLISH, &publish_args);
            tokio::time::sleep(Duration::from_millis(150)).await;
            p.kill().await;
        }
    }
    consumer.kill().await;
    eprintln!("restarts that republished stored messages: {republished} of 4");
    writer.await.unwrap();
    assert_eq!(done.load(Ordering::Relaxed), 1000);

    let last = run(
        PUBLISH,
        &[&publish_args[..], &["--exit-when-idle", "2"]].concat(),
    )
    .await;
    assert_eq!(last.code(), 0, "stderr:\n{}", last.stderr);
    assert!(
        last.stderr.contains("resuming from postgres:v1:"),
        "{}",
        last.stderr
    );
    let summary = |stderr: &str, what: &str| {
        stderr
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_default()
            .to_string()
    };
    eprintln!("last publish: {}", summary(&last.stderr, "published:"));
    let consumed = run(
        CONSUME,
        &[&consume_args[..], &["--exit-when-idle", "2"]].concat(),
    )
    .await;
    eprintln!("last consume: {}", summary(&consumed.stderr, "consumed:"));
    assert_eq!(consumed.code(), 0, "stderr:\n{}", consumed.stderr);
    assert!(
        consumed.stderr.contains("resuming after stream sequence"),
        "{}",
        consumed.stderr
    );

    let expected = source_rows(
        &pg,
        "SELECT id, v, n, f, encode(b, 'hex'), extra FROM t ORDER BY id",
        &["int", "text", "int", "real", "blob", "int"],
    )
    .await;
    let actual = sqlite_rows(&db, "SELECT id, v, n, f, b, extra FROM t ORDER BY id");
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a, e);
    }
    let expected = source_rows(
        &pg,
        "SELECT a, b FROM nokey ORDER BY a, b",
        &["int", "text"],
    )
    .await;
    assert_eq!(
        sqlite_rows(&db, "SELECT a, b FROM nokey ORDER BY a, b"),
        expected
    );

    // The stream: ids unique (JetStream dropped every republished message), markers chained
    // from the start, each position once, each commit's messages once.
    let messages = stream_messages(&nats_url, "CDC").await;
    let mut seen = HashSet::new();
    for (subject, id, _, _) in &messages {
        assert!(!id.is_empty(), "message without id on {subject}");
        assert!(seen.insert(id.clone()), "duplicate message id {id}");
    }
    let markers: Vec<Marker> = messages
        .iter()
        .filter(|(s, ..)| s == "cdc._commit")
        .map(|(_, _, _, p)| Marker::parse(p).unwrap())
        .collect();
    let mut base = ids::position_id(ids::START);
    let mut positions = HashSet::new();
    for m in &markers {
        if base == ids::START {
            assert!(ids::is_start_base(&m.base), "first marker: {}", m.base);
        } else {
            assert_eq!(m.base, base, "marker chain broken at {}", m.position);
        }
        assert!(
            positions.insert(m.position.clone()),
            "position twice: {}",
            m.position
        );
        base = ids::position_id(&m.position);
    }
    let commits = markers
        .iter()
        .filter(|m| m.kind == MarkerKind::Commit)
        .count();
    // Transactions that changed no row (an update of a deleted id) have no marker.
    assert!(
        commits > 500,
        "{commits} commit markers for 1000 transactions"
    );
    assert_eq!(
        markers
            .iter()
            .filter(|m| m.kind == MarkerKind::SnapshotDone)
            .count(),
        1
    );
    // Every committed transaction's data messages are in the stream exactly once.
    for m in markers.iter().filter(|m| m.kind == MarkerKind::Commit) {
        let data = messages
            .iter()
            .filter(|(s, _, b, p)| {
                *b == m.base && s != "cdc._commit" && !p.starts_with(b"{\"kind\":\"schema\"")
            })
            .count() as u64;
        assert_eq!(data, m.messages, "transaction ending at {}", m.position);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_waits_for_jetstream() {
    let Some(pg) = server().await else { return };
    sql(
        &pg,
        "CREATE TABLE w (id int PRIMARY KEY, v text);
         CREATE PUBLICATION powersync FOR ALL TABLES;
         INSERT INTO w SELECT g, 'x' FROM generate_series(1, 50) g;",
    )
    .await;
    let port = match testkit::free_port() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let nats_url = format!("nats://127.0.0.1:{port}");
    let url = pg.url();
    let mut publish = Proc::spawn(
        PUBLISH,
        &[&url, "--nats", &nats_url, "--exit-when-idle", "1.5"],
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !publish.stderr().contains("retrying in") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retry line:\n{}",
            publish.stderr()
        );
        assert!(publish.exited().is_none(), "exited:\n{}", publish.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        publish.stderr().contains("cannot connect to NATS"),
        "{}",
        publish.stderr()
    );
    let nats = match testkit::or_skip(NatsServer::start_on(port).await) {
        Some(n) => n,
        None => return,
    };
    let finished = publish.finish().await;
    assert_eq!(finished.code(), 0, "stderr:\n{}", finished.stderr);
    assert!(
        finished.stderr.contains("created stream `POWERSYNC`"),
        "{}",
        finished.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let consumed = run(
        CONSUME,
        &[
            "--nats",
            &nats.url(),
            "--db",
            db.to_str().unwrap(),
            "--exit-when-idle",
            "1",
        ],
    )
    .await;
    assert_eq!(consumed.code(), 0, "stderr:\n{}", consumed.stderr);
    assert_eq!(
        sqlite_rows(&db, "SELECT count(*) FROM w"),
        vec![vec!["int:50"]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_configuration_errors() {
    let r = run(
        PUBLISH,
        &[
            "postgres://x/y",
            "--nats",
            "nats://127.0.0.1:1",
            "--subject-prefix",
            "a.>",
        ],
    )
    .await;
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(r.stderr.contains("wildcards"), "{}", r.stderr);
    let r = run(PUBLISH, &["nonsense", "--nats", "nats://127.0.0.1:1"]).await;
    assert_eq!(r.code(), 2, "{}", r.stderr);
    let r = run(
        PUBLISH,
        &[
            "postgres://x/y",
            "--nats",
            "nats://127.0.0.1:1",
            "--replicas",
            "0",
        ],
    )
    .await;
    assert_eq!(r.code(), 2, "{}", r.stderr);
    let r = run(CONSUME, &["--nats", "nats://127.0.0.1:1"]).await;
    assert_eq!(r.code(), 2, "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_slows_publish_down_and_drops_nothing() {
    let Some(pg) = server().await else { return };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    sql(
        &pg,
        "CREATE TABLE f (id int PRIMARY KEY, v text);
         CREATE PUBLICATION powersync FOR ALL TABLES;
         INSERT INTO f SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g;",
    )
    .await;
    let nats_url = nats.url();
    let url = pg.url();
    // Room for about a tenth of the snapshot.
    let mut publish = Proc::spawn(
        PUBLISH,
        &[
            &url,
            "--nats",
            &nats_url,
            "--max-bytes",
            "40000",
            "--exit-when-idle",
            "1",
        ],
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !publish.stderr().contains("the stream is full") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no full-stream line:\n{}",
            publish.stderr()
        );
        assert!(publish.exited().is_none(), "exited:\n{}", publish.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Make room: the publisher goes on from its last stored marker.
    let client = async_nats::connect(&nats_url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream("POWERSYNC").await.expect("stream");
    let mut config = s.info().await.expect("info").config.clone();
    config.max_bytes = -1;
    js.update_stream(config).await.expect("update stream");
    let finished = publish.finish().await;
    assert_eq!(finished.code(), 0, "stderr:\n{}", finished.stderr);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let consumed = run(
        CONSUME,
        &[
            "--nats",
            &nats_url,
            "--db",
            db.to_str().unwrap(),
            "--exit-when-idle",
            "1",
        ],
    )
    .await;
    assert_eq!(consumed.code(), 0, "stderr:\n{}", consumed.stderr);
    assert_eq!(
        sqlite_rows(&db, "SELECT count(*), sum(length(v)) FROM f"),
        vec![vec!["int:2000", "int:200000"]]
    );
    let messages = stream_messages(&nats_url, "POWERSYNC").await;
    // The committed units (those a marker closes) hold every row once; a killed attempt's
    // leftovers (another base) are never applied.
    let bases: HashSet<String> = messages
        .iter()
        .filter(|(s, ..)| s == "powersync._commit")
        .map(|(.., p)| Marker::parse(p).unwrap().base)
        .collect();
    let rows: Vec<&Vec<u8>> = messages
        .iter()
        .filter(|(s, _, b, p)| {
            s == "powersync.public.f" && bases.contains(b) && p.starts_with(b"{\"kind\":\"row\"")
        })
        .map(|(.., p)| p)
        .collect();
    assert_eq!(rows.len(), 2000, "every snapshot row committed once");
    assert_eq!(rows.iter().collect::<HashSet<_>>().len(), 2000);
}
