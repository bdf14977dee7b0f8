//! The conformance suite against a real Convex deployment, when `CONVEX_TEST_URL` and
//! `CONVEX_TEST_DEPLOY_KEY` are set. The deployment must run the functions in
//! `tests/convex/` (schema with `powersync_conformance`, `powersync_test.ts`) and the
//! crate's `convex/powersync_checkpoints.ts`. Killing the server and losing history cannot be
//! done to a hosted deployment, so those two scenarios run only against `FakeConvex`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use powersync_source_convex::{ConvexSource, Int64Mode};
use powersync_source_core::{ChangeSource, Result, SourceError, StreamOptions, TableName, Value};
use powersync_source_testkit::conformance::{Dml, Workload};
use serde_json::{json, Value as Json};

use crate::workload::{config, err, IdKeyed, WRONG_KEY};

const TABLE: &str = "powersync_conformance";

struct RealWorkload {
    url: String,
    key: String,
    http: reqwest::Client,
    ids: Arc<Mutex<HashMap<String, i64>>>,
}

impl RealWorkload {
    async fn call(&self, kind: &str, path: &str, args: Json) -> Result<Json> {
        let answer: Json = self
            .http
            .post(format!("{}/api/{kind}", self.url.trim_end_matches('/')))
            .header("Authorization", format!("Convex {}", self.key))
            .json(&json!({"path": path, "args": args, "format": "json"}))
            .send()
            .await
            .map_err(err)?
            .json()
            .await
            .map_err(err)?;
        match answer.get("status").and_then(Json::as_str) {
            Some("success") => Ok(answer.get("value").cloned().unwrap_or(Json::Null)),
            _ => Err(err(format!("{path}: {answer}"))),
        }
    }

    fn source_with(&self, key: &str, table: &str) -> Arc<dyn ChangeSource> {
        let config = config(&self.url, key).with_int64(Int64Mode::Integer);
        let options = StreamOptions::default()
            .with_tables(vec![TableName::new("convex", table)])
            .with_retry(config.retry().clone())
            .with_batch_events(1000);
        let source = ConvexSource::new(config).with_stream_options(options);
        Arc::new(IdKeyed {
            inner: source,
            ids: self.ids.clone(),
        })
    }

    async fn repeat(&self, path: &str) -> Result<()> {
        while self.call("mutation", path, json!({})).await? == Json::Bool(true) {}
        Ok(())
    }
}

#[async_trait]
impl Workload for RealWorkload {
    fn source(&self) -> Arc<dyn ChangeSource> {
        self.source_with(&self.key, TABLE)
    }
    fn source_with_wrong_password(&self) -> Arc<dyn ChangeSource> {
        self.source_with(WRONG_KEY, TABLE)
    }
    async fn source_missing_prerequisite(&self) -> Result<(Arc<dyn ChangeSource>, String)> {
        Ok((
            self.source_with(&self.key, "no_such_table"),
            "no_such_table".into(),
        ))
    }
    async fn reset(&self) -> Result<()> {
        self.ids.lock().unwrap().clear();
        self.repeat("powersync_test:clear").await
    }
    async fn apply(&self, txn: &[Dml]) -> Result<()> {
        let ops: Vec<Json> = txn
            .iter()
            .map(|d| match d {
                Dml::Insert { id, v } => json!({"op": "insert", "id": *id as f64, "v": v}),
                Dml::Update { id, v } => json!({"op": "update", "id": *id as f64, "v": v}),
                Dml::Delete { id } => json!({"op": "delete", "id": *id as f64}),
                Dml::Truncate => json!({"op": "truncate"}),
            })
            .collect();
        // Convex bounds the writes of one mutation: big workloads go in slices.
        for slice in ops.chunks(4000) {
            self.call("mutation", "powersync_test:apply", json!({"ops": slice}))
                .await?;
        }
        Ok(())
    }
    async fn add_column(&self, _name: &str) -> Result<()> {
        Ok(())
    }
    async fn set_column(&self, id: i64, _name: &str, value: &str) -> Result<()> {
        self.call(
            "mutation",
            "powersync_test:setExtra",
            json!({"id": id as f64, "value": value}),
        )
        .await
        .map(|_| ())
    }
    async fn drop_column(&self, _name: &str) -> Result<()> {
        self.repeat("powersync_test:dropExtra").await
    }
    async fn read(&self) -> Result<BTreeMap<i64, BTreeMap<String, Value>>> {
        let mut out = BTreeMap::new();
        let mut cursor = Json::Null;
        loop {
            let page = self
                .call(
                    "query",
                    "powersync_test:readPage",
                    json!({"cursor": cursor}),
                )
                .await?;
            for d in page
                .get("page")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default()
            {
                let id: i64 = d
                    .get("id")
                    .and_then(Json::as_str)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| err("a row without id"))?;
                let mut cols = BTreeMap::new();
                cols.insert("id".to_string(), Value::Integer(id));
                for k in ["v", "extra"] {
                    if let Some(s) = d.get(k).and_then(Json::as_str) {
                        cols.insert(k.to_string(), Value::Text(s.to_string()));
                    }
                }
                out.insert(id, cols);
            }
            if page.get("isDone").and_then(Json::as_bool).unwrap_or(true) {
                return Ok(out);
            }
            cursor = page.get("continueCursor").cloned().unwrap_or(Json::Null);
        }
    }
    async fn kill_and_restart(&self) -> Result<()> {
        Err(SourceError::unsupported(
            "a hosted deployment cannot be killed",
        ))
    }
    async fn lose_history(&self) -> Result<()> {
        Err(SourceError::unsupported(
            "a hosted deployment keeps its history",
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)]
async fn conformance_real_convex_deployment() {
    let (Ok(url), Ok(key)) = (
        std::env::var("CONVEX_TEST_URL"),
        std::env::var("CONVEX_TEST_DEPLOY_KEY"),
    ) else {
        println!("SKIPPED: real Convex deployment suite (set CONVEX_TEST_URL and CONVEX_TEST_DEPLOY_KEY, deployment running tests/convex/*.ts)");
        return;
    };
    powersync_source_testkit::init_tracing();
    let w = RealWorkload {
        url,
        key,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        ids: Default::default(),
    };
    crate::conformance::run_all(&w, false, 8_000).await;
    println!("SKIPPED: history lost and server restart scenarios on the real deployment (a hosted deployment can be neither killed nor made to forget; FakeConvex covers both)");
}
