//! The conformance workload over `FakeConvex`, and the id adapter the core oracle needs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use futures::StreamExt;
use powersync_source_convex::testing::{int64, FakeConvex, Write};
use powersync_source_convex::{ConvexApi, ConvexConfig, ConvexSource, Int64Mode};
use powersync_source_core::{
    ChangeBatch, ChangeEvent, ChangeSource, ChangeStream, CheckReport, Checkpoint, Op, Result,
    RetryPolicy, SourceError, StartFrom, StreamOptions, TableName, TableSchema, Value,
};
use powersync_source_testkit::conformance::{Dml, Workload};
use serde_json::{json, Map, Value as Json};

pub const KEY: &str = "prod:fake|deploy-Key-123";
pub const WRONG_KEY: &str = "prod:fake|wrong-Secret-77";

pub fn err(e: impl std::fmt::Display) -> SourceError {
    SourceError::connection(e.to_string())
}

/// A quick-polling config for tests.
pub fn config(url: &str, key: &str) -> ConvexConfig {
    ConvexConfig::parse(url, Some(key))
        .unwrap()
        .with_polling_interval(Duration::from_millis(100))
        .with_schema_check_interval(Duration::from_millis(500))
        .with_retry(RetryPolicy {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            ..RetryPolicy::default()
        })
}

pub fn decode_int64(v: &Json) -> Option<i64> {
    let b = base64::engine::general_purpose::STANDARD
        .decode(v.get("$integer")?.as_str()?)
        .ok()?;
    Some(i64::from_le_bytes(b.try_into().ok()?))
}

/// Convex deltas of deletes carry only `_id`; the core oracle keys rows by an integer `id`
/// column. This adapter remembers `_id → id` from the rows it has passed and fills `id` into
/// delete images, nothing else.
#[derive(Debug)]
pub struct IdKeyed {
    pub inner: ConvexSource,
    pub ids: Arc<Mutex<HashMap<String, i64>>>,
}

fn fix_batch(ids: &Mutex<HashMap<String, i64>>, batch: &mut ChangeBatch) {
    let mut ids = ids.lock().unwrap();
    for e in &mut batch.events {
        let ChangeEvent::Row(r) = e else { continue };
        let Some(id_col) = r.table.column_index("id") else {
            continue;
        };
        match r.op {
            Op::Insert | Op::Update => {
                if let Some(new) = &r.new {
                    if let (Some(Value::Text(key)), Some(Value::Integer(id))) =
                        (new.get(0), new.get(id_col))
                    {
                        ids.insert(key.clone(), *id);
                    }
                }
            }
            Op::Delete => {
                if let Some(old) = &mut r.old {
                    if let Some(Value::Text(key)) = old.get(0).cloned() {
                        if let Some(id) = ids.get(&key) {
                            old.values_mut()[id_col] = Value::Integer(*id);
                        }
                    }
                }
            }
        }
    }
}

#[async_trait]
impl ChangeSource for IdKeyed {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn check(&self) -> Result<CheckReport> {
        self.inner.check().await
    }
    async fn discover(&self) -> Result<Vec<TableSchema>> {
        self.inner.discover().await
    }
    async fn start(&self, from: StartFrom) -> Result<ChangeStream> {
        let stream = self.inner.start(from).await?;
        let acks = stream.ack_handle();
        let stats = stream.stats().clone();
        let ids = self.ids.clone();
        let mapped = stream.map(move |item| {
            item.map(|mut b| {
                fix_batch(&ids, &mut b);
                b
            })
        });
        Ok(ChangeStream::new(mapped, acks, stats))
    }
    async fn write_checkpoint(&self) -> Result<Checkpoint> {
        self.inner.write_checkpoint().await
    }
}

pub struct FakeWorkload {
    pub fake: FakeConvex,
    round: AtomicU32,
    ids: Arc<Mutex<HashMap<String, i64>>>,
    /// The API the sources are told to use (`api=` in the URL).
    api: ConvexApi,
}

impl FakeWorkload {
    /// A fresh fake, whose sources are told `api`.
    pub async fn start_with(api: ConvexApi) -> FakeWorkload {
        let fake = FakeConvex::start(KEY).await.expect("fake Convex starts");
        fake.set_page_sizes(300, 128);
        FakeWorkload {
            fake,
            round: AtomicU32::new(0),
            ids: Default::default(),
            api,
        }
    }

    pub fn table(&self) -> String {
        format!("conf_{}", self.round.load(Ordering::SeqCst))
    }

    fn source_with(&self, key: &str, table: &str) -> Arc<dyn ChangeSource> {
        let config = config(&self.fake.url(), key)
            .with_int64(Int64Mode::Integer)
            .with_api(self.api);
        // The suite's batch bound (1000 events) through the shared stream options.
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

    /// `id` → (`_id`, fields) of the current documents.
    fn current(&self) -> BTreeMap<i64, (String, Map<String, Json>)> {
        self.fake
            .documents(&self.table())
            .into_iter()
            .filter_map(|d| {
                let id = decode_int64(d.get("id")?)?;
                let key = d.get("_id")?.as_str()?.to_string();
                Some((id, (key, d)))
            })
            .collect()
    }
}

#[async_trait]
impl Workload for FakeWorkload {
    fn source(&self) -> Arc<dyn ChangeSource> {
        self.source_with(KEY, &self.table())
    }

    fn source_with_wrong_password(&self) -> Arc<dyn ChangeSource> {
        self.source_with(WRONG_KEY, &self.table())
    }

    async fn source_missing_prerequisite(&self) -> Result<(Arc<dyn ChangeSource>, String)> {
        Ok((
            self.source_with(KEY, "no_such_table"),
            "no_such_table".into(),
        ))
    }

    async fn reset(&self) -> Result<()> {
        self.round.fetch_add(1, Ordering::SeqCst);
        self.ids.lock().unwrap().clear();
        self.fake.create_table(&self.table());
        Ok(())
    }

    async fn apply(&self, txn: &[Dml]) -> Result<()> {
        // Plays the statements on a copy, then writes each document's final state in one
        // transaction (as a Convex mutation would).
        let table = self.table();
        let mut state: BTreeMap<i64, (Option<String>, Option<Map<String, Json>>)> = self
            .current()
            .into_iter()
            .map(|(id, (key, d))| (id, (Some(key), Some(d))))
            .collect();
        let before = state.clone();
        for d in txn {
            match d {
                Dml::Insert { id, v } => {
                    let mut m = Map::new();
                    m.insert("id".into(), int64(*id));
                    m.insert("v".into(), json!(v));
                    let key = state.get(id).and_then(|s| s.0.clone());
                    state.insert(*id, (key, Some(m)));
                }
                Dml::Update { id, v } => {
                    if let Some((_, Some(doc))) = state.get_mut(id) {
                        doc.insert("v".into(), json!(v));
                    }
                }
                Dml::Delete { id } => {
                    if let Some(s) = state.get_mut(id) {
                        s.1 = None;
                    }
                }
                Dml::Truncate => state.values_mut().for_each(|s| s.1 = None),
            }
        }
        let mut writes = Vec::new();
        for (id, (key, doc)) in state {
            let old = before.get(&id).and_then(|s| s.1.as_ref());
            match (key, doc) {
                (Some(key), None) if old.is_some() => writes.push(Write::Delete {
                    table: table.clone(),
                    id: key,
                }),
                (Some(key), Some(doc)) if old != Some(&doc) => {
                    let mut fields: Map<String, Json> = doc
                        .into_iter()
                        .filter(|(k, _)| !k.starts_with('_'))
                        .collect();
                    if let Some(old) = old {
                        for k in old.keys().filter(|k| !k.starts_with('_')) {
                            fields.entry(k.clone()).or_insert(Json::Null);
                        }
                    }
                    writes.push(Write::Patch {
                        table: table.clone(),
                        id: key,
                        fields,
                    })
                }
                (None, Some(doc)) => writes.push(Write::Insert {
                    table: table.clone(),
                    fields: doc,
                }),
                _ => {}
            }
        }
        if writes.is_empty() {
            return Ok(());
        }
        self.fake.transaction(writes).map(|_| ()).map_err(err)
    }

    async fn add_column(&self, _name: &str) -> Result<()> {
        // Convex documents take new fields without a schema change.
        Ok(())
    }

    async fn set_column(&self, id: i64, name: &str, value: &str) -> Result<()> {
        let (key, _) = self
            .current()
            .remove(&id)
            .ok_or_else(|| err("no such row"))?;
        self.fake
            .patch(&self.table(), &key, json!({ name: value }))
            .map_err(err)
    }

    async fn drop_column(&self, name: &str) -> Result<()> {
        // A migration removing the field from every document.
        let writes = self
            .current()
            .into_values()
            .filter(|(_, d)| d.contains_key(name))
            .map(|(key, _)| Write::Patch {
                table: self.table(),
                id: key,
                fields: [(name.to_string(), Json::Null)].into_iter().collect(),
            })
            .collect::<Vec<_>>();
        if writes.is_empty() {
            return Ok(());
        }
        self.fake.transaction(writes).map(|_| ()).map_err(err)
    }

    async fn read(&self) -> Result<BTreeMap<i64, BTreeMap<String, Value>>> {
        Ok(self
            .current()
            .into_iter()
            .map(|(id, (_, d))| {
                let mut cols = BTreeMap::new();
                for (k, v) in d {
                    if k.starts_with('_') {
                        continue;
                    }
                    let value = match (k.as_str(), v) {
                        ("id", _) => Value::Integer(id),
                        (_, Json::String(s)) => Value::Text(s),
                        (_, Json::Null) => Value::Null,
                        (_, other) => Value::Text(other.to_string()),
                    };
                    cols.insert(k, value);
                }
                (id, cols)
            })
            .collect())
    }

    async fn kill_and_restart(&self) -> Result<()> {
        self.fake
            .restart(Duration::from_millis(300))
            .await
            .map_err(err)
    }

    async fn lose_history(&self) -> Result<()> {
        self.fake.expire_history();
        Ok(())
    }
}
