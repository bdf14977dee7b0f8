//! The core conformance scenarios against a throwaway PostgreSQL (15 by default; other majors
//! through `POWERSYNC_PG14_BIN` / `POWERSYNC_PG18_BIN`, see `scripts/test`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use powersync_source_core::{
    ChangeSource, RetryPolicy, SourceError, StreamOptions, TableName, Value,
};
use powersync_source_postgres::{PostgresConfig, PostgresOptions, PostgresSource};
use powersync_source_testkit::conformance::{self, Dml, Workload};
use powersync_source_testkit::postgres::{PgAuthMethod, PostgresServer};

const PASSWORD: &str = "conformance-Pa55";

pub(crate) struct PgWorkload {
    pub server: PostgresServer,
    round: AtomicU32,
    /// The connector's `streaming` setting (in-progress transactions, PostgreSQL 14+).
    streaming: bool,
}

fn err(e: impl std::fmt::Display) -> SourceError {
    SourceError::connection(e.to_string())
}

impl PgWorkload {
    pub(crate) async fn start(bin_dir: Option<std::path::PathBuf>) -> Option<PgWorkload> {
        Self::start_with(bin_dir, &[], true).await
    }

    /// A server with extra `settings` (`-c name=value`) and the connector's `streaming`.
    pub(crate) async fn start_with(
        bin_dir: Option<std::path::PathBuf>,
        settings: &[(&str, &str)],
        streaming: bool,
    ) -> Option<PgWorkload> {
        let mut builder = PostgresServer::builder()
            .password(PASSWORD)
            .auth_method(PgAuthMethod::ScramSha256);
        if let Some(dir) = bin_dir {
            builder = builder.bin_dir(dir);
        }
        for (name, value) in settings {
            builder = builder.setting(*name, *value);
        }
        let server = powersync_source_testkit::or_skip(builder.start().await)?;
        Some(PgWorkload {
            server,
            round: AtomicU32::new(0),
            streaming,
        })
    }

    pub(crate) fn n(&self) -> u32 {
        self.round.load(Ordering::SeqCst)
    }
    pub(crate) fn table(&self) -> String {
        format!("conf_{}", self.n())
    }

    pub(crate) async fn client(&self) -> Result<tokio_postgres::Client, SourceError> {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname=postgres",
                self.server.port()
            ),
            tokio_postgres::NoTls,
        )
        .await
        .map_err(err)?;
        tokio::spawn(conn);
        Ok(client)
    }

    pub(crate) fn config(&self) -> PostgresConfig {
        PostgresConfig::parse(&self.server.url())
            .unwrap()
            .with_publication(format!("conf_pub_{}", self.n()))
            .with_slot(format!("conf_slot_{}", self.n()))
            .with_snapshot_chunk_rows(300)
            .with_streaming(self.streaming)
            // Small, so the suite's large transaction also takes the spill-file path.
            .with_streaming_memory_kb(1024)
            // The smallest: every transaction of more than a few rows is streamed.
            .with_decoding_work_mem(Some("64kB"))
            .unwrap()
    }

    /// The current round's slot.
    pub(crate) fn slot(&self) -> String {
        format!("conf_slot_{}", self.n())
    }

    pub(crate) fn stream_options(&self) -> StreamOptions {
        StreamOptions::default()
            .with_tables(vec![TableName::new("public", self.table())])
            .with_retry(RetryPolicy {
                initial_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                ..RetryPolicy::default()
            })
            .with_silence_timeout(Duration::from_secs(6))
            .with_batch_events(1000)
    }

    pub(crate) fn options(&self) -> PostgresOptions {
        PostgresOptions {
            status_interval: Duration::from_secs(1),
            ..PostgresOptions::default()
        }
    }

    /// The workload's source with `stream` instead of the default stream options.
    pub(crate) fn source_with(&self, stream: StreamOptions) -> PostgresSource {
        PostgresSource::new(self.config())
            .with_options(self.options())
            .with_stream_options(stream)
    }
}

#[async_trait]
impl Workload for PgWorkload {
    fn source(&self) -> Arc<dyn ChangeSource> {
        Arc::new(self.source_with(self.stream_options()))
    }

    fn source_with_wrong_password(&self) -> Arc<dyn ChangeSource> {
        Arc::new(
            PostgresSource::new(self.config().with_password("wrong-Secret-77"))
                .with_options(self.options())
                .with_stream_options(self.stream_options()),
        )
    }

    async fn source_missing_prerequisite(
        &self,
    ) -> Result<(Arc<dyn ChangeSource>, String), SourceError> {
        let source = PostgresSource::new(self.config().with_publication("no_such_publication"))
            .with_options(self.options())
            .with_stream_options(self.stream_options());
        Ok((Arc::new(source), "no_such_publication".into()))
    }

    async fn reset(&self) -> Result<(), SourceError> {
        self.round.fetch_add(1, Ordering::SeqCst);
        let t = self.table();
        self.client()
            .await?
            .batch_execute(&format!(
                "CREATE TABLE {t} (id bigint PRIMARY KEY, v text);
                 CREATE PUBLICATION conf_pub_{n} FOR TABLE {t};",
                n = self.n()
            ))
            .await
            .map_err(err)
    }

    async fn apply(&self, txn: &[Dml]) -> Result<(), SourceError> {
        let t = self.table();
        let mut sql = String::from("BEGIN;");
        for d in txn {
            match d {
                Dml::Insert { id, v } => {
                    sql.push_str(&format!("INSERT INTO {t} (id, v) VALUES ({id}, '{v}');"))
                }
                Dml::Update { id, v } => {
                    sql.push_str(&format!("UPDATE {t} SET v = '{v}' WHERE id = {id};"))
                }
                Dml::Delete { id } => sql.push_str(&format!("DELETE FROM {t} WHERE id = {id};")),
                Dml::Truncate => sql.push_str(&format!("TRUNCATE {t};")),
            }
        }
        sql.push_str("COMMIT;");
        // The server may be restarting: retry the connection for a while.
        let mut last = None;
        for _ in 0..50 {
            match self.client().await {
                Ok(c) => return c.batch_execute(&sql).await.map_err(err),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last.unwrap_or_else(|| err("no connection")))
    }

    async fn add_column(&self, name: &str) -> Result<(), SourceError> {
        self.client()
            .await?
            .batch_execute(&format!(
                "ALTER TABLE {} ADD COLUMN {name} text",
                self.table()
            ))
            .await
            .map_err(err)
    }

    async fn set_column(&self, id: i64, name: &str, value: &str) -> Result<(), SourceError> {
        self.client()
            .await?
            .batch_execute(&format!(
                "UPDATE {} SET {name} = '{value}' WHERE id = {id}",
                self.table()
            ))
            .await
            .map_err(err)
    }

    async fn drop_column(&self, name: &str) -> Result<(), SourceError> {
        self.client()
            .await?
            .batch_execute(&format!("ALTER TABLE {} DROP COLUMN {name}", self.table()))
            .await
            .map_err(err)
    }

    async fn read(&self) -> Result<BTreeMap<i64, BTreeMap<String, Value>>, SourceError> {
        let client = self.client().await?;
        let rows = client
            .query(&format!("SELECT * FROM {}", self.table()), &[])
            .await
            .map_err(err)?;
        let mut out = BTreeMap::new();
        for row in rows {
            let mut cols = BTreeMap::new();
            let mut id = 0;
            for (i, c) in row.columns().iter().enumerate() {
                if c.name() == "id" {
                    id = row.get::<_, i64>(i);
                    cols.insert("id".to_string(), Value::Integer(id));
                } else {
                    let v: Option<String> = row.get(i);
                    cols.insert(
                        c.name().to_string(),
                        v.map(Value::Text).unwrap_or(Value::Null),
                    );
                }
            }
            out.insert(id, cols);
        }
        Ok(out)
    }

    async fn kill_and_restart(&self) -> Result<(), SourceError> {
        self.server.kill().await.map_err(err)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.server.restart().await.map_err(err)
    }

    async fn lose_history(&self) -> Result<(), SourceError> {
        let slot = format!("conf_slot_{}", self.n());
        let client = self.client().await?;
        for _ in 0..50 {
            let r = client
                .batch_execute(&format!(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active_pid IS NOT NULL;
                     SELECT pg_drop_replication_slot('{slot}');"
                ))
                .await;
            if r.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(err("could not drop the slot"))
    }
}

pub(crate) async fn run_all(w: &PgWorkload) {
    let suite = conformance::Suite {
        large_rows: 50_000,
        ..conformance::Suite::default()
    };
    suite.assert_passes(w, &|| w.server.log_tail(20)).await;
}

/// The server's smallest `logical_decoding_work_mem`: with it every transaction of more than a
/// few rows is streamed while in progress (PostgreSQL 14+), so the suite's transactions take
/// the streaming path, and with a 1 MiB client budget the large one spills to a file.
const STREAM_EVERYTHING: &[(&str, &str)] = &[("logical_decoding_work_mem", "64kB")];

async fn conformance(bin_dir: Option<std::path::PathBuf>, streaming: bool) {
    powersync_source_testkit::init_tracing();
    let Some(w) = PgWorkload::start_with(bin_dir, STREAM_EVERYTHING, streaming).await else {
        return;
    };
    run_all(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_postgres_15() {
    conformance(None, true).await;
}

/// The same suite with `streaming=off`: transactions arrive at their commit only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_postgres_15_streaming_off() {
    conformance(None, false).await;
}

async fn other_major(major: u32) {
    if std::env::var_os("POWERSYNC_SKIP_PG_MATRIX").is_some() {
        eprintln!("SKIPPED: PostgreSQL {major} conformance (POWERSYNC_SKIP_PG_MATRIX is set)");
        return;
    }
    let dir = powersync_source_testkit::postgres::postgres_binaries_for_major(major).await;
    let Some(dir) = powersync_source_testkit::or_skip(dir) else {
        return;
    };
    conformance(Some(dir), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_postgres_14() {
    other_major(14).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_postgres_18() {
    other_major(18).await;
}
