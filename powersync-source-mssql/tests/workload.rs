//! The core conformance `Workload` on the in-memory CDC model.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use powersync_source_core::{ChangeSource, Result, TableName, Value};
use powersync_source_mssql::{MssqlConfig, MssqlSource};
use powersync_source_testkit::conformance::{Dml, Workload};

use crate::fake::{bigint_type, text_type, FakeServer, Op};

pub fn conformance_table() -> TableName {
    TableName::new("dbo", "conformance")
}

/// A source on the model with fast polling and small chunks/pages (to exercise paging).
pub fn fake_source(server: &FakeServer, tables: Vec<TableName>, options: &str) -> MssqlSource {
    let url = format!("sqlserver://powersync:secret@fake:1433/shop?polling_interval_ms=10&snapshot_chunk_rows=300&page_rows=250{options}");
    let config = MssqlConfig::parse(&url).expect("config");
    MssqlSource::new(config)
        .with_connector(server.connector("secret"))
        .with_tables(tables)
        .with_marker_timeout(Duration::from_secs(5))
}

pub struct FakeWorkload {
    pub server: FakeServer,
    instance_seq: AtomicU32,
}

impl FakeWorkload {
    pub fn new() -> Self {
        FakeWorkload {
            server: FakeServer::new(),
            instance_seq: AtomicU32::new(0),
        }
    }

    fn new_instance(&self) {
        let t = conformance_table();
        let names = self.server.instance_names(&t);
        if names.len() >= 2 {
            // SQL Server allows two: the DBA drops the older one first.
            self.server.disable_instance(&names[0]);
        }
        let n = self.instance_seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.server.enable_cdc(&t, &format!("dbo_conformance_v{n}"));
    }
}

#[async_trait]
impl Workload for FakeWorkload {
    fn source(&self) -> Arc<dyn ChangeSource> {
        Arc::new(fake_source(&self.server, vec![conformance_table()], ""))
    }

    fn source_with_wrong_password(&self) -> Arc<dyn ChangeSource> {
        Arc::new(
            fake_source(&self.server, vec![conformance_table()], "")
                .with_connector(self.server.connector("not-the-password")),
        )
    }

    async fn source_missing_prerequisite(&self) -> Result<(Arc<dyn ChangeSource>, String)> {
        let other = FakeServer::new();
        other.lock().cdc_enabled = false;
        Ok((
            Arc::new(fake_source(&other, vec![conformance_table()], "")),
            "is_cdc_enabled".into(),
        ))
    }

    async fn reset(&self) -> Result<()> {
        let t = conformance_table();
        self.server.drop_table(&t);
        self.server
            .create_table(&t, &[("id", bigint_type()), ("v", text_type())], &["id"]);
        self.instance_seq.store(0, Ordering::SeqCst);
        self.new_instance();
        Ok(())
    }

    async fn apply(&self, txn: &[Dml]) -> Result<()> {
        let t = conformance_table();
        let ops: Vec<Op> = txn
            .iter()
            .filter_map(|d| match d {
                Dml::Insert { id, v } => Some(Op::Insert(
                    t.clone(),
                    vec![
                        ("id".into(), Value::Integer(*id)),
                        ("v".into(), Value::Text(v.clone())),
                    ],
                )),
                Dml::Update { id, v } => Some(Op::Update(
                    t.clone(),
                    vec![Value::Integer(*id)],
                    vec![("v".into(), Value::Text(v.clone()))],
                )),
                Dml::Delete { id } => Some(Op::Delete(t.clone(), vec![Value::Integer(*id)])),
                // SQL Server refuses TRUNCATE on CDC tables; the scenario is not run.
                Dml::Truncate => None,
            })
            .collect();
        self.server.transaction(&ops);
        Ok(())
    }

    async fn add_column(&self, name: &str) -> Result<()> {
        self.server
            .add_column(&conformance_table(), name, text_type());
        // New columns reach CDC through a new capture instance.
        self.new_instance();
        Ok(())
    }

    async fn set_column(&self, id: i64, name: &str, value: &str) -> Result<()> {
        self.server.transaction(&[Op::Update(
            conformance_table(),
            vec![Value::Integer(id)],
            vec![(name.into(), Value::Text(value.into()))],
        )]);
        Ok(())
    }

    async fn drop_column(&self, name: &str) -> Result<()> {
        self.server.drop_column(&conformance_table(), name);
        self.new_instance();
        Ok(())
    }

    async fn read(&self) -> Result<BTreeMap<i64, BTreeMap<String, Value>>> {
        let mut out = BTreeMap::new();
        for row in self.server.rows(&conformance_table()) {
            let id = row
                .iter()
                .find(|(n, _)| n == "id")
                .and_then(|(_, v)| v.as_integer())
                .unwrap_or_default();
            out.insert(id, row.into_iter().collect());
        }
        Ok(out)
    }

    async fn kill_and_restart(&self) -> Result<()> {
        // Like a restart that completed: open connections are broken, new ones succeed.
        self.server.kill(Duration::ZERO);
        Ok(())
    }

    async fn lose_history(&self) -> Result<()> {
        // Two more transactions, then a cleanup past both: the stream's resume point is
        // below the new low-water mark.
        let t = conformance_table();
        self.server.transaction(&[Op::Insert(
            t.clone(),
            vec![
                ("id".into(), Value::Integer(900_001)),
                ("v".into(), Value::Text("a".into())),
            ],
        )]);
        let last = self.server.transaction(&[Op::Insert(
            t,
            vec![
                ("id".into(), Value::Integer(900_002)),
                ("v".into(), Value::Text("b".into())),
            ],
        )]);
        self.server.cleanup(last);
        Ok(())
    }
}
