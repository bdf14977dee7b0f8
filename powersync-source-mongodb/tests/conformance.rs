//! The core conformance scenarios against a throwaway SecantusDB, and against a real MongoDB
//! when `MONGODB_TEST_URL` is set.
//!
//! SecantusDB's `fullDocument: 'required'` reads the *current* document and fails with
//! `NoMatchingDocument` once an updated document has been deleted (a real MongoDB keeps the
//! post-image), so the SecantusDB runs use `post_images=off` (`updateLookup`); the
//! `MONGODB_TEST_URL` run uses the default `auto_configure`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use powersync_source_core::{ChangeSource, SourceError, TableName, Value};
use powersync_source_mongodb::bson::{doc, Bson, Document};
use powersync_source_mongodb::bson_value::bson_to_value;
use powersync_source_mongodb::mongodb::options::{Acknowledgment, WriteConcern};
use powersync_source_mongodb::mongodb::{Client, Collection};
use powersync_source_mongodb::{MongoConfig, MongoSource};
use powersync_source_testkit::conformance::{self, Dml, Scenario, Suite, Workload};
use powersync_source_testkit::SecantusServer;

use crate::common::{client, fast_retry, secantus, url};

pub(crate) struct MongoWorkload {
    pub server: Option<SecantusServer>,
    base_url: String,
    db: String,
    /// Extra query parameters of the source URL.
    options: String,
    client: Client,
    round: AtomicU32,
}

fn err(e: impl std::fmt::Display) -> SourceError {
    SourceError::connection(e.to_string())
}

impl MongoWorkload {
    pub(crate) async fn secantus(args: &[&str]) -> Option<MongoWorkload> {
        let server = secantus(args).await?;
        let base_url = url(&server, "conf", "");
        let client = client(&base_url).await;
        Some(MongoWorkload {
            server: Some(server),
            base_url,
            db: "conf".into(),
            options: "post_images=off&snapshot_batch_size=300&max_await_ms=200&batch_events=1000"
                .into(),
            client,
            round: AtomicU32::new(0),
        })
    }

    /// A workload on a real server (`MONGODB_TEST_URL`, whose path names a scratch database).
    pub(crate) async fn real(base_url: String) -> MongoWorkload {
        let config = MongoConfig::parse(&base_url).expect("MONGODB_TEST_URL");
        let client = Client::with_uri_str(&base_url)
            .await
            .expect("driver client");
        MongoWorkload {
            server: None,
            db: config.database().to_owned(),
            base_url,
            options: "snapshot_batch_size=300&max_await_ms=200&batch_events=1000".into(),
            client,
            round: AtomicU32::new(0),
        }
    }

    fn n(&self) -> u32 {
        self.round.load(Ordering::SeqCst)
    }
    pub(crate) fn collection_name(&self) -> String {
        format!("conf_{}", self.n())
    }
    pub(crate) fn collection(&self) -> Collection<Document> {
        // Journaled writes: a SIGKILL must not lose what the stream already delivered.
        let wc = WriteConcern::builder()
            .w(Acknowledgment::Nodes(1))
            .journal(true)
            .build();
        self.client.database(&self.db).collection_with_options(
            &self.collection_name(),
            powersync_source_mongodb::mongodb::options::CollectionOptions::builder()
                .write_concern(wc)
                .build(),
        )
    }
    pub(crate) fn url(&self, extra: &str) -> String {
        let sep = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let mut u = format!("{}{sep}{}", self.base_url, self.options);
        if !extra.is_empty() {
            u.push('&');
            u.push_str(extra);
        }
        u
    }
    pub(crate) fn source_for(&self, extra: &str) -> MongoSource {
        MongoSource::new(MongoConfig::parse(&self.url(extra)).expect("url"))
            .with_tables(vec![TableName::new("", self.collection_name())])
            .with_retry(fast_retry())
            .with_silence_timeout(Duration::from_secs(8))
    }
}

#[async_trait]
impl Workload for MongoWorkload {
    fn source(&self) -> Arc<dyn ChangeSource> {
        Arc::new(self.source_for(""))
    }

    fn source_with_wrong_password(&self) -> Arc<dyn ChangeSource> {
        // Covered by faults::bad_credentials against a server with --auth.
        Arc::new(self.source_for(""))
    }

    async fn source_missing_prerequisite(
        &self,
    ) -> Result<(Arc<dyn ChangeSource>, String), SourceError> {
        // read_only mode on a collection without changeStreamPreAndPostImages.
        let coll = format!("noimages_{}", self.n());
        let _ = self
            .client
            .database(&self.db)
            .create_collection(&coll)
            .await;
        let base = self
            .url("")
            .replace("post_images=off", "post_images=read_only");
        let base = if base.contains("post_images=") {
            base
        } else {
            format!("{base}&post_images=read_only")
        };
        let source = MongoSource::new(MongoConfig::parse(&base).map_err(err)?)
            .with_tables(vec![TableName::new("", coll)]);
        Ok((Arc::new(source), "changeStreamPreAndPostImages".into()))
    }

    async fn reset(&self) -> Result<(), SourceError> {
        self.round.fetch_add(1, Ordering::SeqCst);
        self.client
            .database(&self.db)
            .create_collection(self.collection_name())
            .await
            .map_err(err)
    }

    async fn apply(&self, txn: &[Dml]) -> Result<(), SourceError> {
        // The server may be restarting: retry for a while.
        let mut last = None;
        for _ in 0..60 {
            match self.apply_once(txn).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(last.unwrap_or_else(|| err("apply failed")))
    }

    async fn add_column(&self, _name: &str) -> Result<(), SourceError> {
        // Collections have no schema: a field exists once a document has it.
        Ok(())
    }

    async fn set_column(&self, id: i64, name: &str, value: &str) -> Result<(), SourceError> {
        self.collection()
            .update_one(doc! {"_id": id}, doc! {"$set": {name: value}})
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn drop_column(&self, name: &str) -> Result<(), SourceError> {
        self.collection()
            .update_many(doc! {name: {"$exists": true}}, doc! {"$unset": {name: ""}})
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn read(&self) -> Result<BTreeMap<i64, BTreeMap<String, Value>>, SourceError> {
        use futures::TryStreamExt;
        let raw = self
            .client
            .database(&self.db)
            .collection::<powersync_source_mongodb::bson::RawDocumentBuf>(&self.collection_name());
        let mut cursor = raw.find(doc! {}).await.map_err(err)?;
        let mut out = BTreeMap::new();
        while let Some(d) = cursor.try_next().await.map_err(err)? {
            let mut id = None;
            let mut cols = BTreeMap::new();
            for element in d.iter() {
                let (k, v) = element.map_err(err)?;
                let value = bson_to_value(v).map_err(err)?;
                if k == "_id" {
                    id = value.as_integer();
                } else {
                    cols.insert(k.to_owned(), value);
                }
            }
            out.insert(id.ok_or_else(|| err("non-integer _id"))?, cols);
        }
        Ok(out)
    }

    async fn kill_and_restart(&self) -> Result<(), SourceError> {
        let server = self
            .server
            .as_ref()
            .ok_or_else(|| SourceError::unsupported("cannot kill a MONGODB_TEST_URL server"))?;
        server.kill().await.map_err(err)?;
        server.restart().await.map_err(err)
    }

    async fn lose_history(&self) -> Result<(), SourceError> {
        // Only meaningful on a server started with a small --oplog-max-entries: SecantusDB
        // prunes every 1000 oplog writes down to that many entries.
        let filler = self
            .client
            .database(&self.db)
            .collection::<Document>("filler");
        for chunk in 0..12 {
            let docs: Vec<Document> = (0..100).map(|i| doc! {"chunk": chunk, "i": i}).collect();
            filler.insert_many(docs).await.map_err(err)?;
        }
        Ok(())
    }
}

impl MongoWorkload {
    async fn apply_once(&self, txn: &[Dml]) -> Result<(), SourceError> {
        let coll = self.collection();
        let mut inserts: Vec<Document> = Vec::new();
        for d in txn {
            if let Dml::Insert { id, v } = d {
                inserts.push(doc! {"_id": Bson::Int64(*id), "v": v});
                continue;
            }
            if !inserts.is_empty() {
                coll.insert_many(std::mem::take(&mut inserts))
                    .await
                    .map_err(err)?;
            }
            match d {
                Dml::Update { id, v } => {
                    coll.update_one(doc! {"_id": id}, doc! {"$set": {"v": v}})
                        .await
                        .map_err(err)?;
                }
                Dml::Delete { id } => {
                    coll.delete_one(doc! {"_id": id}).await.map_err(err)?;
                }
                Dml::Truncate => {
                    coll.delete_many(doc! {}).await.map_err(err)?;
                }
                Dml::Insert { .. } => {}
            }
        }
        if !inserts.is_empty() {
            // Ordered: a retry after a partial failure only repeats from the failed document on,
            // and duplicate-key errors of already inserted ids are fine.
            match coll.insert_many(inserts).await {
                Ok(_) => {}
                Err(e)
                    if e.to_string().contains("E11000")
                        || e.to_string().contains("duplicate key") => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }
}

/// The core suite with this source's knobs. Bad credentials run in
/// `faults::bad_credentials` (they need a server started with `--auth`) and lost history in
/// [`history_lost_on_secantus`] (a server that keeps a short oplog).
async fn run_all(w: &MongoWorkload, can_kill: bool) {
    let mut skip = vec![Scenario::BadCredentials, Scenario::HistoryLost];
    if !can_kill {
        skip.push(Scenario::ServerRestart);
    }
    let suite = Suite {
        large_rows: 3000,
        max_batch: 1100,
        skip,
        ..Suite::default()
    };
    let server_log = || {
        w.server
            .as_ref()
            .map(|s| format!("server log (last lines):\n{}", s.log_tail(30)))
            .unwrap_or_default()
    };
    suite.assert_passes(w, &server_log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_secantus() {
    let Some(w) = MongoWorkload::secantus(&[]).await else {
        return;
    };
    run_all(&w, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lost_on_secantus() {
    let Some(w) = MongoWorkload::secantus(&["--oplog-max-entries=100"]).await else {
        return;
    };
    if let Err(e) = conformance::history_lost(&w).await {
        panic!("history_lost: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)]
async fn conformance_on_real_mongodb() {
    let Some(url) = std::env::var("MONGODB_TEST_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("SKIPPED: real MongoDB conformance (set MONGODB_TEST_URL=mongodb://…/scratch_db to run it)");
        return;
    };
    let w = MongoWorkload::real(url).await;
    run_all(&w, false).await;
}
