//! `FakeConvex`: an in-process HTTP server with the streaming export semantics of a Convex
//! deployment, for tests (this crate's, and other crates' with the `testing` feature).
//!
//! What it implements, after Convex's backend (`crates/local_backend/src/streaming_export.rs`
//! and `crates/database`): `GET /api/json_schemas` (shapes inferred from the stored documents,
//! Int64 and Bytes described as Convex does; one record-shaped table refuses the whole call;
//! components merged or `byComponent`), `GET /api/get_table_column_names`,
//! `GET /api/list_snapshot` (a pinned `snapshot` timestamp, documents in id order, an opaque
//! JSON page cursor, `hasMore`, `SnapshotTooOld` / `SnapshotTooNew` /
//! `InvalidListSnapshotCursor`, one cached iterator, slow pages on demand),
//! `GET /api/document_deltas` (exclusive cursor, timestamp order, pages that never split a
//! timestamp and end after a number of rows *read*, system and unselected rows included, the
//! cursor moving to the read timestamp when caught up, `InvalidWindowToReadDocuments` before
//! the retention floor), `POST /api/v1/data/sync` and `POST /api/data_sync_cursor_from_deltas`
//! (the Data Sync API), `POST /api/query_ts`, `POST /api/query_at_ts` (the table-size system
//! query), `POST /api/mutation` (`powersync_checkpoints:createCheckpoint` as this crate or
//! PowerSync deploys it), `format=json` and `format=convex_encoded_json` (which can be switched
//! off to exercise the fallback), child components, tables replaced wholesale, deploy-key auth
//! (403 `BadDeployKey` without a key, 401 `BadAdminKey` with a wrong one, read-only keys),
//! injected 429/5xx answers, and restarts that drop every connection. Each behaviour cites
//! the server code it follows where it is implemented.
//!
//! Documents are written in the typed encoding: use [`int64`], [`bytes`] and [`float`] for
//! values JSON cannot carry exactly.

mod data_sync;
mod export_api;
mod http;
mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value as Json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use store::Store;
pub use store::Write;

/// A typed Int64 value (`{"$integer": …}`).
pub fn int64(i: i64) -> Json {
    serde_json::json!({ "$integer": base64::engine::general_purpose::STANDARD.encode(i.to_le_bytes()) })
}

/// A typed Bytes value (`{"$bytes": …}`).
pub fn bytes(b: &[u8]) -> Json {
    serde_json::json!({ "$bytes": base64::engine::general_purpose::STANDARD.encode(b) })
}

/// A float64: a JSON number, or `{"$float": …}` for NaN, ±∞ and -0.
pub fn float(f: f64) -> Json {
    if f.is_finite() && !(f == 0.0 && f.is_sign_negative()) {
        serde_json::json!(f)
    } else {
        serde_json::json!({ "$float": base64::engine::general_purpose::STANDARD.encode(f.to_le_bytes()) })
    }
}

/// The `powersync_checkpoints:createCheckpoint` a fake deployment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointMutation {
    /// This crate's `convex/powersync_checkpoints.ts`: an internal mutation that inserts a
    /// marker row (deleting markers over a minute old) and returns the new id.
    Crate,
    /// PowerSync's (powersync-service `modules/module-convex/convex/powersync_checkpoints.ts`):
    /// a public mutation that patches the table's first row in place (inserting one when the
    /// table is empty) and returns `null`.
    PowerSync,
    /// Not deployed: Convex answers "Could not find public function".
    Missing,
}

/// A fake Convex deployment on 127.0.0.1. Dropping it stops the server.
pub struct FakeConvex {
    store: Arc<Mutex<Store>>,
    addr: SocketAddr,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for FakeConvex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeConvex")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FakeConvex {
    /// Starts a deployment accepting `deploy_key`, with an empty `powersync_checkpoints`
    /// table and the checkpoint mutation deployed.
    pub async fn start(deploy_key: &str) -> std::io::Result<FakeConvex> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Mutex::new(Store::new(deploy_key.to_string())));
        let server = tokio::spawn(accept(listener, store.clone()));
        Ok(FakeConvex {
            store,
            addr,
            server: Mutex::new(Some(server)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panicking test thread poisons the lock; the data is still usable.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Commits writes as one transaction (one timestamp); returns the ids written.
    pub fn transaction(&self, writes: Vec<Write>) -> Result<Vec<String>, String> {
        self.lock().commit(writes).map(|(ids, _)| ids)
    }

    /// Inserts a document; `fields` must be a JSON object in the typed encoding.
    pub fn insert(&self, table: &str, fields: Json) -> Result<String, String> {
        let fields = object(fields)?;
        let ids = self.transaction(vec![Write::Insert {
            table: table.into(),
            fields,
        }])?;
        ids.into_iter()
            .next()
            .ok_or_else(|| "nothing inserted".into())
    }

    /// Sets fields of a document (`null` removes a field).
    pub fn patch(&self, table: &str, id: &str, fields: Json) -> Result<(), String> {
        let fields = object(fields)?;
        self.transaction(vec![Write::Patch {
            table: table.into(),
            id: id.into(),
            fields,
        }])
        .map(|_| ())
    }

    /// Deletes a document.
    pub fn delete(&self, table: &str, id: &str) -> Result<(), String> {
        self.transaction(vec![Write::Delete {
            table: table.into(),
            id: id.into(),
        }])
        .map(|_| ())
    }

    /// Commits writes to the tables of a child component (its path, e.g. `workpool`) as one
    /// transaction: the same table names as the root's are other tables.
    pub fn transaction_in_component(
        &self,
        component: &str,
        writes: Vec<Write>,
    ) -> Result<Vec<String>, String> {
        self.lock().commit_in(component, writes).map(|(ids, _)| ids)
    }

    /// Creates an empty table (as deploying a schema does).
    pub fn create_table(&self, table: &str) {
        self.lock().create_table(table);
    }

    /// Deletes a table the way the dashboard does: its documents vanish without deltas.
    pub fn delete_table(&self, table: &str) -> bool {
        self.lock().delete_table(table)
    }

    /// Replaces a table's documents the way `npx convex import --replace` (or streaming
    /// import's `replace_tables` / `clear_tables`) does: a new tablet under the same name;
    /// the old documents vanish without delete deltas. Returns the new ids.
    pub fn replace_table(&self, table: &str, docs: Vec<Json>) -> Result<Vec<String>, String> {
        let docs = docs
            .into_iter()
            .map(object)
            .collect::<Result<Vec<_>, _>>()?;
        self.lock().replace_table(table, docs)
    }

    /// The current documents of a table (typed encoding), in id order.
    pub fn documents(&self, table: &str) -> Vec<Map<String, Json>> {
        self.lock().documents(table)
    }

    /// Commits `n` writes to a system table (`_scheduled_functions`), one transaction each,
    /// as scheduling functions does: never exported, but they count toward the rows a
    /// `document_deltas` page reads, so a page of them is empty with `hasMore`.
    pub fn system_writes(&self, n: usize) {
        self.lock().system_writes(n);
    }

    /// Forgets all history before now: older cursors and snapshots are refused as Convex
    /// refuses those beyond its retention window.
    pub fn expire_history(&self) {
        self.lock().expire_history();
    }

    /// The next `n` API requests answer HTTP `status` (429, 500, 503…).
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut s = self.lock();
        for _ in 0..n {
            s.failures.push_back(status);
        }
    }

    /// The next request to `path` (e.g. `/api/document_deltas`) gets this answer verbatim,
    /// whatever it asks: for servers that misbehave (time going backwards, a snapshot not
    /// honoured).
    pub fn respond_next(&self, path: &str, status: u16, body: Json) {
        self.lock().canned.push((path.to_string(), (status, body)));
    }

    /// Whether `format=convex_encoded_json` is accepted (default yes); when not, it is
    /// refused with `BadFormat` as older deployments do.
    pub fn set_typed_format(&self, accepted: bool) {
        self.lock().typed_format = accepted;
    }

    /// Whether `powersync_checkpoints:createCheckpoint` is deployed (default yes, this
    /// crate's). Shorthand for [`FakeConvex::set_checkpoint_mutation`].
    pub fn set_mutation_deployed(&self, deployed: bool) {
        self.set_checkpoint_mutation(if deployed {
            CheckpointMutation::Crate
        } else {
            CheckpointMutation::Missing
        });
    }

    /// Also accepts `key` as a read-only deploy key: it reads every streaming export endpoint
    /// but may not run internal functions.
    pub fn set_read_only_key(&self, key: &str) {
        self.lock().read_only_key = Some(key.to_string());
    }

    /// Which `powersync_checkpoints:createCheckpoint` is deployed (default: this crate's).
    pub fn set_checkpoint_mutation(&self, mutation: CheckpointMutation) {
        self.lock().mutation = mutation;
    }

    /// Page sizes of `list_snapshot` (documents) and `document_deltas` (documents before the
    /// page ends at the next timestamp change).
    pub fn set_page_sizes(&self, snapshot: usize, deltas: usize) {
        let mut s = self.lock();
        s.snapshot_page = snapshot.max(1);
        s.deltas_page = deltas.max(1);
    }

    /// How long each `list_snapshot` and `v1/data/sync` page takes to answer: the server
    /// spends up to 60 s (`SNAPSHOT_LIST_TIME_LIMIT` in `crates/common/src/knobs.rs`) on one
    /// snapshot page, plus the set-up of its iterator.
    pub fn set_snapshot_page_delay(&self, delay: Duration) {
        self.lock().snapshot_page_delay = delay;
    }

    /// How many `list_snapshot` continuation pages (with a `cursor`) found the server's one
    /// cached table iterator gone and had to set one up again, walking the log from the
    /// snapshot to now (`list_snapshot_table_iterator_cache` in `crates/database/src/database.rs`:
    /// one slot, which any other `list_snapshot` call replaces).
    pub fn snapshot_iterator_restarts(&self) -> u64 {
        self.lock().snapshot_iterator_restarts
    }

    /// Whether the Data Sync API (`POST /api/v1/data/sync`,
    /// `POST /api/data_sync_cursor_from_deltas`) is served (default yes); deployments from
    /// before it answer 404.
    pub fn set_data_sync_available(&self, available: bool) {
        self.lock().data_sync = available;
    }

    /// Whether a Data Sync walk alternates with the log (default no): when set, every page
    /// after a walk page whose timestamp has fallen behind follows the log first, emitting the
    /// new revisions (and deletes) of the documents walked so far, so a document may arrive
    /// more than once while `snapshotting`, as `DataSyncIterator` does when `synced_ts` lags
    /// more than `by_id_freshness` (`crates/table_iteration/src/data_sync.rs`).
    pub fn set_data_sync_interleave(&self, interleave: bool) {
        self.lock().data_sync_interleave = interleave;
    }

    /// API requests served so far.
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// Requests served so far to `path` (e.g. `/api/v1/data/sync`), whatever their answer.
    pub fn requests_to(&self, path: &str) -> u64 {
        self.lock().requests_by_path.get(path).copied().unwrap_or(0)
    }

    /// Stops the server (dropping every connection), waits `down`, and serves again on the
    /// same port with the same data.
    pub async fn restart(&self, down: Duration) -> std::io::Result<()> {
        let handle = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            h.abort();
            let _ = h.await;
        }
        tokio::time::sleep(down).await;
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    let task = tokio::spawn(accept(listener, self.store.clone()));
                    *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("cannot rebind")))
    }
}

impl Drop for FakeConvex {
    fn drop(&mut self) {
        if let Some(h) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
    }
}

fn object(v: Json) -> Result<Map<String, Json>, String> {
    match v {
        Json::Object(m) => Ok(m),
        _ => Err("fields must be a JSON object".into()),
    }
}

/// Accepts connections; aborting this task drops the `JoinSet`, which aborts every
/// connection.
async fn accept(listener: TcpListener, store: Arc<Mutex<Store>>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let store = store.clone();
                connections.spawn(http::serve(stream, move |req| handle(&store, req)));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn handle(store: &Mutex<Store>, req: http::Request) -> (u16, Vec<u8>, Duration) {
    let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
    s.requests += 1;
    *s.requests_by_path.entry(req.path.clone()).or_default() += 1;
    let delay = if req.path == "/api/list_snapshot" || req.path == "/api/v1/data/sync" {
        s.snapshot_page_delay
    } else {
        Duration::ZERO
    };
    let (status, body) = route(&mut s, req);
    (status, serde_json::to_vec(&body).unwrap_or_default(), delay)
}

fn route(s: &mut Store, req: http::Request) -> (u16, Json) {
    let caller = match s.identify(req.authorization.as_deref()) {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    // The public API (`/api/query_ts`, `/api/mutation`) takes any caller; the streaming
    // export endpoints need `ViewData`.
    let public = matches!(
        req.path.as_str(),
        "/api/query_ts" | "/api/mutation" | "/api/query_at_ts"
    );
    if !public {
        if let Err(answer) = Store::require_view_data(caller) {
            return answer;
        }
    }
    if let Some(status) = s.failures.pop_front() {
        return (
            status,
            serde_json::json!({"code": "Injected", "message": format!("injected HTTP {status}")}),
        );
    }
    if let Some(i) = s.canned.iter().position(|(p, _)| *p == req.path) {
        return s.canned.remove(i).1;
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/api/json_schemas") => s.json_schemas(&req.query),
        ("GET", "/api/get_table_column_names") => s.table_column_names(),
        ("GET", "/api/list_snapshot") => s.list_snapshot(&req.query),
        ("GET", "/api/document_deltas") => s.document_deltas(&req.query),
        ("POST", "/api/query_ts") => s.query_ts(),
        ("POST", "/api/v1/data/sync") => match serde_json::from_slice::<Json>(&req.body) {
            Ok(body) => s.data_sync(&body),
            Err(e) => (
                400,
                serde_json::json!({"code": "BadJsonBody", "message": e.to_string()}),
            ),
        },
        ("POST", "/api/data_sync_cursor_from_deltas") => {
            match serde_json::from_slice::<Json>(&req.body) {
                Ok(body) => s.data_sync_cursor_from_deltas(&body),
                Err(e) => (
                    400,
                    serde_json::json!({"code": "BadJsonBody", "message": e.to_string()}),
                ),
            }
        }
        ("POST", "/api/query_at_ts") => match serde_json::from_slice::<Json>(&req.body) {
            Ok(body) => s.query_at_ts(&body, caller),
            Err(e) => (
                400,
                serde_json::json!({"code": "BadJsonBody", "message": e.to_string()}),
            ),
        },
        ("POST", "/api/mutation") => match serde_json::from_slice::<Json>(&req.body) {
            Ok(body) => s.mutation(&body, caller),
            Err(e) => (
                400,
                serde_json::json!({"code": "BadJsonBody", "message": e.to_string()}),
            ),
        },
        _ => (
            404,
            serde_json::json!({"code": "NotFound", "message": format!("no route {} {}", req.method, req.path)}),
        ),
    }
}
