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

use examples::jetstream::assembler::{unpack, Incoming, Received};
use examples::jetstream::marker::{self, Marker, MarkerKind};
use examples::jetstream::{connection, ids};
use futures::StreamExt;
use powersync_source_testkit::{self as testkit, PostgresServer, TestkitError};
use rand::{Rng, SeedableRng};
use tokio::process::{Child, Command};

use crate::common::{client, run, server, sql, sqlite_rows, Proc};

pub(crate) const PUBLISH: &str = env!("CARGO_BIN_EXE_publish");
pub(crate) const CONSUME: &str = env!("CARGO_BIN_EXE_consume");

/// A throwaway `nats-server -js` on a free port with its store in a temporary directory.
pub(crate) struct NatsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server, or `None` after one `SKIPPED:` line (a failure with
    /// `POWERSYNC_REQUIRE_SERVERS=1`).
    pub(crate) async fn start() -> Option<NatsServer> {
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

    pub(crate) fn url(&self) -> String {
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

/// A message read back from the stream.
struct Stored {
    subject: String,
    /// `Nats-Msg-Id`.
    id: String,
    /// `Powersync-Base`.
    base: String,
    /// `Powersync-Index`.
    index: u64,
    /// `Powersync-Format: 2`.
    packed: bool,
    payload: Vec<u8>,
}

impl Stored {
    /// The commit markers of a marker message (one, or a batch).
    fn markers(&self) -> Vec<Marker> {
        marker::parse_markers(&self.payload).expect("marker message")
    }

    /// The data items (rows, truncates) of a data message, with their row ids.
    fn items(&self) -> Vec<Incoming> {
        unpack(Received {
            sequence: 0,
            id: &self.id,
            base: &self.base,
            index: self.index,
            packed: self.packed,
            payload: &self.payload,
        })
        .expect("data message")
        .into_iter()
        .filter(|i| !i.schema)
        .collect()
    }
}

/// Every message of the stream, in order.
async fn stream_messages(nats: &str, stream: &str) -> Vec<Stored> {
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
        out.push(Stored {
            subject: msg.subject.to_string(),
            id: header(ids::HEADER_MSG_ID),
            base: header(ids::HEADER_BASE),
            index: header(ids::HEADER_INDEX).parse().unwrap_or(0),
            packed: header(ids::HEADER_FORMAT) == "2",
            payload: msg.payload.to_vec(),
        });
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

/// Packed rows (the default), many transactions in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_publisher_loses_and_duplicates_nothing() {
    killed_publisher(&[], Packing::Default).await;
}

/// One row per message (line format version 1), as publishers before packing wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_one_row_publisher_loses_and_duplicates_nothing() {
    killed_publisher(&["--rows-per-message", "1"], Packing::OneRow).await;
}

/// Every restart packs differently (version 1, tiny packs, default packs): JetStream cannot
/// drop the republished rows (other message ids), the consumer must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_with_other_packing_apply_each_row_once() {
    killed_publisher(&[], Packing::Mixed).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packing {
    Default,
    OneRow,
    Mixed,
}

/// Extra `publish` arguments of restart `round` under `packing`.
fn round_args(packing: Packing, round: usize) -> &'static [&'static str] {
    match (packing, round % 3) {
        (Packing::Mixed, 0) => &["--rows-per-message", "1"],
        (Packing::Mixed, 1) => &["--message-bytes", "300"],
        _ => &[],
    }
}

/// `publish` SIGKILLed mid-snapshot and then four times under a live workload (with a burst
/// of back-to-back transactions, so many are in flight), `consume` killed after every round;
/// then the mirror equals the source, and the stream holds every row of every committed
/// unit once (by row id), with an unbroken marker chain.
/// Rows of `t` before `publish` starts: enough that the snapshot is still running when its
/// first commit marker is stored (a publisher that shares a worker with its stream's task
/// reads 12,000 rows before the first acknowledgement comes back, and then stores all the
/// chunk markers and the snapshot's end in one message).
const SNAPSHOT_ROWS: i64 = 60_000;

async fn killed_publisher(extra: &[&str], packing: Packing) {
    let Some(pg) = server().await else { return };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    sql(
        &pg,
        &format!(
            "CREATE TABLE t (id bigint PRIMARY KEY, v text, n int, f float8, b bytea);
             CREATE TABLE nokey (a int, b text);
             ALTER TABLE nokey REPLICA IDENTITY FULL;
             CREATE PUBLICATION powersync FOR ALL TABLES;
             INSERT INTO t SELECT g, 'v' || g, g % 7, g / 4.0, decode(md5(g::text), 'hex')
               FROM generate_series(1, {SNAPSHOT_ROWS}) g;
             INSERT INTO nokey SELECT g, 'n' || g FROM generate_series(1, 100) g;"
        ),
    )
    .await;
    let url = format!("{}?snapshot_chunk_rows=300", pg.url());
    let nats_url = nats.url();
    let base_args = [
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
    let publish_args = [&base_args[..], extra].concat();
    let publish_round = |round: usize| [&publish_args[..], round_args(packing, round)].concat();
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
    let first = Proc::spawn(PUBLISH, &publish_round(0));
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
            let mut next = SNAPSHOT_ROWS + 1;
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
                // A burst: many small transactions queue up behind one marker round trip.
                if !(500..800).contains(&i) {
                    tokio::time::sleep(Duration::from_millis(6)).await;
                }
            }
        })
    };

    // A consumer that is killed too while the publisher comes and goes.
    let mut consumer = Proc::spawn(CONSUME, &consume_args);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut republished = 0;
    let mut at = marker.position;
    for round in 0..4 {
        let p = Proc::spawn(PUBLISH, &publish_round(round + 1));
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
            let p = Proc::spawn(PUBLISH, &publish_round(round + 2));
            tokio::time::sleep(Duration::from_millis(150)).await;
            p.kill().await;
        }
        consumer.kill().await;
        consumer = Proc::spawn(CONSUME, &consume_args);
    }
    // On a loaded machine every consumer above may die before its first commit; the last one
    // runs until it has stored a position, so the final run below really resumes.
    wait_stored_position(&db).await;
    consumer.kill().await;
    eprintln!("restarts that republished stored messages: {republished} of 4");
    writer.await.unwrap();
    assert_eq!(done.load(Ordering::Relaxed), 1000);

    let last = run(
        PUBLISH,
        &[&publish_round(5)[..], &["--exit-when-idle", "2"]].concat(),
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

    // The stream: message ids unique (JetStream dropped every republished message), markers
    // chained from the start, each position once, each committed unit's rows once.
    let messages = stream_messages(&nats_url, "CDC").await;
    let mut seen = HashSet::new();
    for m in &messages {
        assert!(!m.id.is_empty(), "message without id on {}", m.subject);
        assert!(seen.insert(m.id.clone()), "duplicate message id {}", m.id);
    }
    let marker_messages: Vec<&Stored> = messages
        .iter()
        .filter(|m| m.subject == "cdc._commit")
        .collect();
    let batches = marker_messages
        .iter()
        .filter(|m| m.markers().len() > 1)
        .count();
    let markers: Vec<Marker> = marker_messages.iter().flat_map(|m| m.markers()).collect();
    eprintln!(
        "{} units closed by {} marker messages ({batches} batches)",
        markers.len(),
        marker_messages.len()
    );
    if packing == Packing::Default {
        assert!(
            batches > 0,
            "no marker batch: transactions were never in flight together"
        );
    }
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
    let packed = messages.iter().filter(|m| m.packed).count();
    match packing {
        Packing::OneRow => assert_eq!(packed, 0, "--rows-per-message 1 writes version 1"),
        _ => assert!(packed > 0, "no packed message"),
    }
    // Every committed transaction's rows are in the stream, each row id once; with one
    // packing throughout, each row is stored once (JetStream dropped what was republished).
    let mut items: std::collections::HashMap<&str, Vec<Incoming>> = Default::default();
    for m in messages.iter().filter(|m| m.subject != "cdc._commit") {
        items.entry(&m.base).or_default().extend(m.items());
    }
    let mut stored_twice = 0;
    for m in markers.iter().filter(|m| m.kind == MarkerKind::Commit) {
        let unit = items.get(m.base.as_str()).map_or(&[][..], |v| &v[..]);
        let distinct: HashSet<&str> = unit.iter().map(|i| i.id.as_str()).collect();
        stored_twice += unit.len() - distinct.len();
        assert_eq!(
            distinct.len() as u64,
            m.messages,
            "transaction ending at {}",
            m.position
        );
        if packing != Packing::Mixed {
            assert_eq!(
                unit.len() as u64,
                m.messages,
                "stored twice: {}",
                m.position
            );
        }
    }
    eprintln!("committed rows stored twice (other packing after a restart): {stored_twice}");
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
            // Packs of ~2 KB: some fit before the stream is full (a 64 KiB pack never would).
            "--message-bytes",
            "2000",
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
        .filter(|m| m.subject == "powersync._commit")
        .flat_map(|m| m.markers())
        .map(|m| m.base)
        .collect();
    let rows: Vec<Vec<u8>> = messages
        .iter()
        .filter(|m| m.subject == "powersync.public.f" && bases.contains(&m.base))
        .flat_map(|m| m.items())
        .map(|i| i.payload)
        .filter(|p| p.starts_with(b"{\"kind\":\"row\""))
        .collect();
    assert_eq!(rows.len(), 2000, "every snapshot row committed once");
    assert_eq!(rows.iter().collect::<HashSet<_>>().len(), 2000);
}

/// Waits (at most two minutes) until `consume` has committed a stream position into `db`.
async fn wait_stored_position(db: &Path) {
    let query = format!(
        "SELECT count(*) FROM {} WHERE key = '{}'",
        powersync_source_sqlite::STATE_TABLE,
        examples::jetstream::consumer::STATE_KEY
    );
    for _ in 0..1200 {
        let stored = rusqlite::Connection::open(db)
            .and_then(|c| c.query_row(&query, [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0);
        if stored > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "consume stored no position in {} within 120 s",
        db.display()
    );
}
