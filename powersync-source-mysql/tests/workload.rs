//! The MariaDB side of the conformance scenarios, shared by the other test modules.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use powersync_source_core::{ChangeSource, RetryPolicy, SourceError, TableName, Value};
use powersync_source_mysql::mysql_async::prelude::Queryable;
use powersync_source_mysql::mysql_async::{self, Conn};
use powersync_source_mysql::{MySqlConfig, MySqlSource};
use powersync_source_testkit::conformance::{Dml, Workload};
use powersync_source_testkit::MariaDbServer;

pub const PASSWORD: &str = "rep-Secret-91";

pub struct MariaWorkload {
    pub server: MariaDbServer,
    round: AtomicU32,
}

pub fn err(e: impl std::fmt::Display) -> SourceError {
    SourceError::connection(e.to_string())
}

impl MariaWorkload {
    /// Starts a server with a password user `rep` holding the replication rights and a user
    /// `norep` without REPLICATION SLAVE.
    pub async fn start() -> Option<MariaWorkload> {
        let server = powersync_source_testkit::or_skip(MariaDbServer::start().await)?;
        server
            .sql(&format!(
                "CREATE USER 'rep'@'%' IDENTIFIED BY '{PASSWORD}';
                 GRANT ALL PRIVILEGES ON *.* TO 'rep'@'%';
                 CREATE USER 'norep'@'%' IDENTIFIED BY '{PASSWORD}';
                 GRANT SELECT, BINLOG MONITOR ON *.* TO 'norep'@'%';"
            ))
            .await
            .expect("creating users");
        Some(MariaWorkload {
            server,
            round: AtomicU32::new(0),
        })
    }

    pub fn n(&self) -> u32 {
        self.round.load(Ordering::SeqCst)
    }

    pub fn table(&self) -> String {
        format!("conf_{}", self.n())
    }

    pub fn url(&self, user: &str, password: &str) -> String {
        format!(
            "mariadb://{user}:{password}@127.0.0.1:{}/test?chunk_rows=300&heartbeat=1&silence_timeout=6&batch_events=1000&server_id={}",
            self.server.port(),
            5000 + self.n()
        )
    }

    pub fn retry() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        }
    }

    pub fn source_for(&self, tables: Vec<TableName>) -> MySqlSource {
        MySqlSource::new(MySqlConfig::parse(&self.url("rep", PASSWORD)).unwrap())
            .with_tables(tables)
            .with_retry(Self::retry())
    }

    pub async fn conn(&self) -> Result<Conn, SourceError> {
        let opts = mysql_async::Opts::from_url(&format!(
            "mysql://root@127.0.0.1:{}/test",
            self.server.port()
        ))
        .map_err(err)?;
        Conn::new(opts).await.map_err(err)
    }

    pub async fn exec(&self, sql: &str) -> Result<(), SourceError> {
        let mut c = self.conn().await?;
        c.query_drop(sql).await.map_err(err)
    }
}

#[async_trait]
impl Workload for MariaWorkload {
    fn source(&self) -> Arc<dyn ChangeSource> {
        Arc::new(self.source_for(vec![TableName::new("test", self.table())]))
    }

    fn source_with_wrong_password(&self) -> Arc<dyn ChangeSource> {
        Arc::new(
            MySqlSource::new(MySqlConfig::parse(&self.url("rep", "wrong-Secret-77")).unwrap())
                .with_tables(vec![TableName::new("test", self.table())]),
        )
    }

    async fn source_missing_prerequisite(
        &self,
    ) -> Result<(Arc<dyn ChangeSource>, String), SourceError> {
        let source = MySqlSource::new(MySqlConfig::parse(&self.url("norep", PASSWORD))?)
            .with_tables(vec![TableName::new("test", self.table())]);
        Ok((Arc::new(source), "REPLICATION SLAVE".into()))
    }

    async fn reset(&self) -> Result<(), SourceError> {
        self.round.fetch_add(1, Ordering::SeqCst);
        self.exec(&format!(
            "CREATE TABLE test.{} (id BIGINT PRIMARY KEY, v TEXT)",
            self.table()
        ))
        .await
    }

    async fn apply(&self, txn: &[Dml]) -> Result<(), SourceError> {
        let t = self.table();
        let mut c = self.conn().await?;
        let mut sql = String::from("START TRANSACTION;");
        for d in txn {
            match d {
                Dml::Insert { id, v } => sql.push_str(&format!(
                    "INSERT INTO test.{t} (id, v) VALUES ({id}, '{v}');"
                )),
                Dml::Update { id, v } => {
                    sql.push_str(&format!("UPDATE test.{t} SET v = '{v}' WHERE id = {id};"))
                }
                Dml::Delete { id } => {
                    sql.push_str(&format!("DELETE FROM test.{t} WHERE id = {id};"))
                }
                Dml::Truncate => sql.push_str(&format!("TRUNCATE TABLE test.{t};")),
            }
        }
        sql.push_str("COMMIT;");
        c.query_drop(sql).await.map_err(err)
    }

    async fn add_column(&self, name: &str) -> Result<(), SourceError> {
        self.exec(&format!(
            "ALTER TABLE test.{} ADD COLUMN {name} TEXT",
            self.table()
        ))
        .await
    }

    async fn set_column(&self, id: i64, name: &str, value: &str) -> Result<(), SourceError> {
        self.exec(&format!(
            "UPDATE test.{} SET {name} = '{value}' WHERE id = {id}",
            self.table()
        ))
        .await
    }

    async fn drop_column(&self, name: &str) -> Result<(), SourceError> {
        self.exec(&format!(
            "ALTER TABLE test.{} DROP COLUMN {name}",
            self.table()
        ))
        .await
    }

    async fn read(&self) -> Result<BTreeMap<i64, BTreeMap<String, Value>>, SourceError> {
        let mut c = self.conn().await?;
        let cols: Vec<String> = c
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'test' AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (self.table(),),
            )
            .await
            .map_err(err)?;
        let rows: Vec<mysql_async::Row> = c
            .query(format!("SELECT * FROM test.{}", self.table()))
            .await
            .map_err(err)?;
        let mut out = BTreeMap::new();
        for row in rows {
            let values = row.unwrap();
            let mut map = BTreeMap::new();
            let mut id = 0;
            for (name, v) in cols.iter().zip(values) {
                let value = match v {
                    mysql_async::Value::NULL => Value::Null,
                    mysql_async::Value::Bytes(b) if name == "id" => {
                        id = String::from_utf8_lossy(&b).parse().map_err(err)?;
                        Value::Integer(id)
                    }
                    mysql_async::Value::Bytes(b) => Value::Text(String::from_utf8_lossy(&b).into()),
                    mysql_async::Value::Int(i) => {
                        id = i;
                        Value::Integer(i)
                    }
                    other => Value::Text(format!("{other:?}")),
                };
                map.insert(name.clone(), value);
            }
            out.insert(id, map);
        }
        Ok(out)
    }

    async fn kill_and_restart(&self) -> Result<(), SourceError> {
        self.server.kill().await.map_err(err)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.server.restart().await.map_err(err)
    }

    async fn lose_history(&self) -> Result<(), SourceError> {
        // A transaction after the checkpoint, then every binlog holding it is purged.
        let mut c = self.conn().await?;
        c.query_drop("CREATE TABLE IF NOT EXISTS test.scratch (id INT PRIMARY KEY AUTO_INCREMENT); INSERT INTO test.scratch VALUES (); FLUSH BINARY LOGS")
            .await
            .map_err(err)?;
        let row: Option<mysql_async::Row> =
            c.query_first("SHOW MASTER STATUS").await.map_err(err)?;
        let file: String = row.and_then(|r| r.get(0)).unwrap_or_default();
        // A dump thread of a just-dropped stream can still hold the old file open for a
        // moment; the server skips files in use, so repeat until only the current one is left.
        for _ in 0..50 {
            c.query_drop(format!("PURGE BINARY LOGS TO '{file}'"))
                .await
                .map_err(err)?;
            let logs: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await.map_err(err)?;
            if logs.len() <= 1 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(SourceError::connection(
            "the old binlogs were not purged within 10 s",
        ))
    }
}
