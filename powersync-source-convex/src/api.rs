//! The HTTP calls of the streaming export and Data Sync APIs, over one shared `reqwest` client, and the
//! mapping of Convex's answers onto error kinds.
//!
//! Convex answers errors as `{"code": "...", "message": "..."}` with an HTTP status. The codes
//! this module gives a meaning (from the backend's streaming export handlers):
//! `InvalidWindowToReadDocuments` (a `document_deltas` cursor older than the retention
//! window), `SnapshotTooOld` / `SnapshotTooNew` (a pinned `list_snapshot` timestamp that can
//! no longer be read), `InvalidListSnapshotCursor`, `DataSyncCursorExpired` (a Data Sync
//! cursor outside retention, or unused for 3 days) → [`ErrorKind::HistoryLost`];
//! `InvalidDataSyncCursor` (not a cursor of this deployment) → [`ErrorKind::Config`];
//! `StreamingExportNotEnabled` (403, plan) → [`ErrorKind::Prerequisite`]; other 401/403 →
//! [`ErrorKind::Auth`]; `BadFormat` (the deployment does not know a `format`) →
//! [`ErrorKind::Unsupported`]; 408, 429 and 5xx → [`ErrorKind::Connection`] (retried).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use powersync_source_core::{ErrorKind, RetryPolicy, SourceError, StreamStats};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde::Deserialize;
use serde_json::{Map, Value as Json};
use url::Url;

use crate::config::ConvexConfig;
use crate::decode::Encoding;

/// The least time a `list_snapshot` page is given. The server works up to 60 s on one page
/// (`SNAPSHOT_LIST_TIME_LIMIT`), after setting up its table iterator, which for a pinned
/// snapshot in the past walks the log from the snapshot to now; a client that gives up sooner
/// drops that work and the retry starts it again.
pub(crate) const SNAPSHOT_PAGE_TIMEOUT: Duration = Duration::from_secs(180);

/// The dashboard's system query counting a table's documents.
const TABLE_SIZE_QUERY: &str = "_system/frontend/tableSize:default";

/// A Convex document as the export API sends it: user fields plus `_table`, `_ts`, … .
pub(crate) type Document = Map<String, Json>;

/// One page of `/api/list_snapshot`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SnapshotPage {
    pub values: Vec<Document>,
    pub snapshot: i64,
    #[serde(default)]
    pub cursor: Option<String>,
    pub has_more: bool,
}

/// One page of `/api/document_deltas`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeltasPage {
    pub values: Vec<Document>,
    pub cursor: i64,
    pub has_more: bool,
}

/// One page of `POST /api/v1/data/sync` (`DataSyncResponse` in Convex's
/// `crates/common/src/types/streaming_export/mod.rs`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SyncPage {
    pub status: SyncStatus,
    #[serde(default)]
    pub truncates: Vec<SyncTable>,
    pub values: Vec<SyncValue>,
    pub pagination: SyncPagination,
}

/// Where a sync stands after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub(crate) enum SyncStatus {
    /// Tables are being walked: what was received so far is not one consistent state.
    Snapshotting,
    /// Consistent at `snapshot_ts`, with more of the log to read.
    #[serde(rename_all = "camelCase")]
    Stale { snapshot_ts: i64 },
    /// Consistent at `snapshot_ts` and caught up.
    #[serde(rename_all = "camelCase")]
    UpToDate { snapshot_ts: i64 },
}

impl SyncStatus {
    /// The timestamp the received state is consistent at, once it is.
    pub(crate) fn consistent_at(self) -> Option<i64> {
        match self {
            SyncStatus::Snapshotting => None,
            SyncStatus::Stale { snapshot_ts } | SyncStatus::UpToDate { snapshot_ts } => {
                Some(snapshot_ts)
            }
        }
    }
}

/// A table of a component (`""` is the root).
#[derive(Debug, Deserialize)]
pub(crate) struct SyncTable {
    pub component: String,
    pub table: String,
}

/// One document version of a sync page, its fields in the `export_json` encoding.
#[derive(Debug, Deserialize)]
pub(crate) struct SyncValue {
    pub component: String,
    pub table: String,
    pub ts: i64,
    pub deleted: bool,
    pub value: Document,
}

/// The cursor of the next page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SyncPagination {
    pub next_cursor: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The client of one deployment. Cloning shares the connection pool.
#[derive(Clone)]
pub(crate) struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    /// The client, or why it could not be built (reported by every request).
    http: Result<reqwest::Client, Arc<reqwest::Error>>,
    base: Url,
    auth: HeaderValue,
    retry: RetryPolicy,
    request_timeout: Duration,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.inner.base.as_str())
            .finish()
    }
}

impl Api {
    pub(crate) fn new(config: &ConvexConfig) -> Api {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(config.request_timeout())
            .connect_timeout(config.request_timeout().min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!(
                "powersync-source-convex/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(Arc::new);
        let mut auth = HeaderValue::from_str(&format!("Convex {}", config.deploy_key().expose()))
            .unwrap_or_else(|_| HeaderValue::from_static("Convex invalid-key"));
        auth.set_sensitive(true);
        Api {
            inner: Arc::new(Inner {
                http,
                base: config.url().clone(),
                auth,
                request_timeout: config.request_timeout(),
                // One-shot calls (check, write_checkpoint) retry 429/5xx and network errors a
                // few times only: a host waiting on them must get an answer.
                retry: RetryPolicy {
                    max_attempts: Some(config.retry().max_attempts.unwrap_or(4).min(4)),
                    give_up_after: Some(Duration::from_secs(30)),
                    ..config.retry().clone()
                },
            }),
        }
    }

    /// The deployment URL for messages.
    pub(crate) fn base(&self) -> &Url {
        &self.inner.base
    }

    fn url(&self, route: &str) -> Result<Url, SourceError> {
        self.inner
            .base
            .join(route)
            .map_err(|e| SourceError::config(format!("bad route {route}")).with_source(e))
    }

    async fn send(
        &self,
        route: &str,
        request: impl FnOnce(&reqwest::Client, Url) -> reqwest::RequestBuilder,
        stats: Option<&StreamStats>,
    ) -> Result<Json, SourceError> {
        let http = self.inner.http.as_ref().map_err(|e| {
            SourceError::config("cannot build the HTTP client").with_source(e.clone())
        })?;
        let url = self.url(route)?;
        let where_ = format!("{route} on {}", self.inner.base);
        let response = request(http, url)
            .header(AUTHORIZATION, self.inner.auth.clone())
            .send()
            .await
            .map_err(|e| transport_error(&where_, e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&where_, e))?;
        if let Some(stats) = stats {
            stats.add_bytes(body.len() as u64);
        }
        if !status.is_success() {
            return Err(status_error(&where_, status.as_u16(), &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            SourceError::decode(format!("{where_}: the answer is not JSON")).with_source(e)
        })
    }

    async fn get(
        &self,
        route: &str,
        query: &[(&str, String)],
        stats: Option<&StreamStats>,
    ) -> Result<Json, SourceError> {
        self.send(route, |http, url| http.get(url).query(query), stats)
            .await
    }

    /// The time a `list_snapshot` page is given: the configured request timeout, but never
    /// less than [`SNAPSHOT_PAGE_TIMEOUT`].
    fn snapshot_page_timeout(&self) -> Duration {
        self.inner.request_timeout.max(SNAPSHOT_PAGE_TIMEOUT)
    }

    /// `GET /api/json_schemas?byComponent=true`: table name → JSON Schema of its documents,
    /// for the root component only. Without `byComponent` Convex merges every component's
    /// tables into one map, where a child component's table replaces the root's table of the
    /// same name; with it the answer is component path → tables, the root's under `""`.
    pub(crate) async fn json_schemas(
        &self,
        encoding: Encoding,
    ) -> Result<Map<String, Json>, SourceError> {
        let answer = self
            .get(
                "api/json_schemas",
                &[
                    ("format", encoding.format_param().to_string()),
                    ("byComponent", "true".to_string()),
                ],
                None,
            )
            .await?;
        let Json::Object(mut components) = answer else {
            return Err(SourceError::decode(format!(
                "api/json_schemas on {}: expected an object of components",
                self.inner.base
            )));
        };
        match components.remove("") {
            Some(Json::Object(root)) => Ok(root),
            // A deployment whose root component has no tables.
            None => Ok(Map::new()),
            Some(_) => Err(SourceError::decode(format!(
                "api/json_schemas on {}: expected an object of tables for the root component",
                self.inner.base
            ))),
        }
    }

    /// `GET /api/get_table_column_names`: the root component's tables and their top-level
    /// fields (`get_table_column_names` in `crates/local_backend/src/streaming_export.rs`,
    /// which Convex's Fivetran connector uses instead of `json_schemas`). Unlike
    /// `json_schemas` it never fails because of one table's shape: a table whose documents are
    /// not a plain object lists only `_creationTime` and `_id`. `None` when the backend
    /// predates the route (404).
    pub(crate) async fn table_columns(
        &self,
    ) -> Result<Option<BTreeMap<String, Vec<String>>>, SourceError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            by_component: BTreeMap<String, Vec<TableColumns>>,
        }
        #[derive(Deserialize)]
        struct TableColumns {
            name: String,
            columns: Vec<String>,
        }
        let json = match self.get("api/get_table_column_names", &[], None).await {
            Ok(json) => json,
            Err(e) if e.code() == Some("404") => return Ok(None),
            Err(e) => return Err(e),
        };
        let answer: Answer = serde_json::from_value(json).map_err(|e| {
            SourceError::decode(format!(
                "api/get_table_column_names on {}: unexpected answer",
                self.inner.base
            ))
            .with_source(e)
        })?;
        // The root component's path is the empty string.
        Ok(Some(
            answer
                .by_component
                .into_iter()
                .filter(|(component, _)| component.is_empty())
                .flat_map(|(_, tables)| tables)
                .map(|t| (t.name, t.columns))
                .collect(),
        ))
    }

    /// `GET /api/list_snapshot`.
    pub(crate) async fn list_snapshot(
        &self,
        snapshot: Option<i64>,
        cursor: Option<&str>,
        table: &str,
        encoding: Encoding,
        stats: Option<&StreamStats>,
    ) -> Result<SnapshotPage, SourceError> {
        let mut query = vec![
            ("tableName", table.to_string()),
            ("format", encoding.format_param().to_string()),
        ];
        if let Some(s) = snapshot {
            query.push(("snapshot", s.to_string()));
        }
        if let Some(c) = cursor {
            query.push(("cursor", c.to_string()));
        }
        let timeout = self.snapshot_page_timeout();
        let json = self
            .send(
                "api/list_snapshot",
                |http, url| http.get(url).query(&query).timeout(timeout),
                stats,
            )
            .await?;
        serde_json::from_value(json).map_err(|e| {
            SourceError::decode(format!(
                "api/list_snapshot on {}: unexpected answer",
                self.inner.base
            ))
            .with_source(e)
        })
    }

    /// `GET /api/document_deltas` from `cursor` (exclusive): every table of every component,
    /// or only the root component's `table` when given.
    pub(crate) async fn document_deltas(
        &self,
        cursor: i64,
        table: Option<&str>,
        encoding: Encoding,
        stats: Option<&StreamStats>,
    ) -> Result<DeltasPage, SourceError> {
        let mut query = vec![
            ("cursor", cursor.to_string()),
            ("format", encoding.format_param().to_string()),
        ];
        if let Some(t) = table {
            query.push(("tableName", t.to_string()));
        }
        let json = self.get("api/document_deltas", &query, stats).await?;
        serde_json::from_value(json).map_err(|e| {
            SourceError::decode(format!(
                "api/document_deltas on {}: unexpected answer",
                self.inner.base
            ))
            .with_source(e)
        })
    }

    /// `POST /api/v1/data/sync` from `cursor` (`None`: a new sync, which walks every selected
    /// table first), for the tables `selection` names (Convex's `Selection`: component path →
    /// table → columns, each level with an `_other` default). A page may walk a table, so it
    /// gets the snapshot page timeout.
    pub(crate) async fn data_sync(
        &self,
        cursor: Option<&str>,
        selection: &Json,
        stats: Option<&StreamStats>,
    ) -> Result<SyncPage, SourceError> {
        let body = serde_json::json!({ "cursor": cursor, "selection": selection });
        let timeout = self.snapshot_page_timeout();
        let json = self
            .send(
                "api/v1/data/sync",
                |http, url| http.post(url).json(&body).timeout(timeout),
                stats,
            )
            .await?;
        serde_json::from_value(json).map_err(|e| {
            SourceError::decode(format!(
                "api/v1/data/sync on {}: unexpected answer",
                self.inner.base
            ))
            .with_source(e)
        })
    }

    /// `POST /api/data_sync_cursor_from_deltas`: the Data Sync cursor that continues a
    /// `document_deltas` stream at `cursor` for `selection` (everything at or below the cursor
    /// counts as synced).
    pub(crate) async fn data_sync_cursor_from_deltas(
        &self,
        cursor: i64,
        selection: &Json,
    ) -> Result<String, SourceError> {
        let body = serde_json::json!({ "cursor": cursor, "selection": selection });
        let json = self
            .send(
                "api/data_sync_cursor_from_deltas",
                |http, url| http.post(url).json(&body),
                None,
            )
            .await?;
        json.get("cursor")
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                SourceError::decode(format!(
                    "api/data_sync_cursor_from_deltas on {}: expected {{\"cursor\": <string>}}",
                    self.inner.base
                ))
            })
    }

    /// `POST /api/query_ts`: the deployment's latest read timestamp (Convex's public API,
    /// `public_get_query_ts` in `crates/local_backend/src/public_api.rs`: `{"ts": base64 of
    /// the u64, little-endian}`). Every write acknowledged before the call is at or below it.
    pub(crate) async fn query_ts(&self) -> Result<i64, SourceError> {
        let answer = self
            .send(
                "api/query_ts",
                |http, url| http.post(url).json(&serde_json::json!({})),
                None,
            )
            .await?;
        answer
            .get("ts")
            .and_then(Json::as_str)
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .ok()
                    .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            })
            .and_then(|b| i64::try_from(u64::from_le_bytes(b)).ok())
            .ok_or_else(|| {
                SourceError::decode(format!(
                    "api/query_ts on {}: expected {{\"ts\": <base64 u64>}}",
                    self.inner.base
                ))
            })
    }

    /// The number of documents of a root table at `ts`: the dashboard's system query
    /// `_system/frontend/tableSize` (`db.query(tableName).count()`, needs `ViewData`, so
    /// read-only keys may run it) through `POST /api/query_at_ts`, so the count is of the
    /// same state a stream at cursor `ts` holds.
    pub(crate) async fn table_size_at(&self, table: &str, ts: i64) -> Result<u64, SourceError> {
        let ts = base64::engine::general_purpose::STANDARD.encode((ts as u64).to_le_bytes());
        let body = serde_json::json!({
            "path": TABLE_SIZE_QUERY,
            "args": { "tableName": table, "componentId": null },
            "ts": ts,
            "format": "json",
        });
        let value = self
            .function("api/query_at_ts", TABLE_SIZE_QUERY, &body)
            .await?;
        value
            .as_f64()
            .filter(|n| *n >= 0.0 && n.fract() == 0.0)
            .map(|n| n as u64)
            .ok_or_else(|| {
                SourceError::decode(format!(
                    "{TABLE_SIZE_QUERY} on {}: expected a count",
                    self.inner.base
                ))
            })
    }

    /// `POST /api/mutation`: runs a mutation and returns its value (`format: json`).
    pub(crate) async fn mutation(&self, path: &str, args: Json) -> Result<Json, SourceError> {
        let body = serde_json::json!({ "path": path, "args": args, "format": "json" });
        self.function("api/mutation", path, &body).await
    }

    /// Runs a function through `route` and returns its value: Convex answers
    /// `{"status": "success", "value": …}` or `{"status": "error", "errorMessage": …}`.
    async fn function(&self, route: &str, path: &str, body: &Json) -> Result<Json, SourceError> {
        let answer = self
            .send(route, |http, url| http.post(url).json(body), None)
            .await
            .map_err(|e| e.context(format!("function {path}")))?;
        match answer.get("status").and_then(Json::as_str) {
            Some("success") => Ok(answer.get("value").cloned().unwrap_or(Json::Null)),
            Some("error") => {
                let message = answer
                    .get("errorMessage")
                    .and_then(Json::as_str)
                    .unwrap_or("no message");
                Err(SourceError::prerequisite(format!(
                    "function {path} failed on {}: {message}",
                    self.inner.base
                )))
            }
            _ => Err(SourceError::decode(format!(
                "function {path} on {}: unexpected answer",
                self.inner.base
            ))),
        }
    }

    /// Runs `call` until it succeeds or fails permanently, backing off on transient failures
    /// (429, 5xx, network) with the short policy of one-shot calls (`check`, `discover`,
    /// `write_checkpoint`). One call is one outage, so the budget starts afresh with each; the
    /// stream retries through the core runtime's `Reconnect` instead, which needs the stream's
    /// emitter.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, SourceError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SourceError>>,
    {
        let mut backoff = self.inner.retry.backoff();
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) => match backoff.next_delay(&e) {
                    Some(delay) => {
                        tracing::debug!("Convex request failed ({e}); retrying in {delay:?}");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(e),
                },
            }
        }
    }
}

fn transport_error(where_: &str, e: reqwest::Error) -> SourceError {
    // reqwest's Display never includes headers, so the deploy key cannot leak through it.
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    SourceError::connection(format!("{where_}: {what}")).with_source(e.without_url())
}

/// Maps an HTTP error answer to an error kind (see the module docs).
pub(crate) fn status_error(where_: &str, status: u16, body: &[u8]) -> SourceError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (code, message) = match &parsed {
        Some(b) => (b.code.as_str(), b.message.clone()),
        None => (
            "",
            String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned(),
        ),
    };
    let text = format!("{where_}: HTTP {status} {code}: {message}");
    let lower = message.to_ascii_lowercase();
    let kind = match (status, code) {
        (
            _,
            "InvalidWindowToReadDocuments"
            | "SnapshotTooOld"
            | "SnapshotTooNew"
            | "InvalidListSnapshotCursor"
            | "DataSyncCursorExpired",
        ) => ErrorKind::HistoryLost,
        // Not this deployment's cursor (another deployment, or ahead of this one): starting
        // over would lay a new snapshot over another deployment's rows, so it is the host's
        // configuration to fix, not history to re-read.
        (400, "InvalidDataSyncCursor") => ErrorKind::Config,
        (400, _)
            if (lower.contains("cursor") || lower.contains("snapshot"))
                && (lower.contains("expired")
                    || lower.contains("retention")
                    || lower.contains("too old")) =>
        {
            ErrorKind::HistoryLost
        }
        (403, "StreamingExportNotEnabled") => ErrorKind::Prerequisite,
        (401 | 403, _) => ErrorKind::Auth,
        (_, "BadFormat") => ErrorKind::Unsupported,
        (408 | 429, _) | (500..=599, _) => ErrorKind::Connection,
        (404, _) => ErrorKind::Prerequisite,
        _ => ErrorKind::Prerequisite,
    };
    // The HTTP status is the code hosts branch on; Convex's own code stays in the message.
    let err = SourceError::new(kind, text).with_code(status.to_string());
    match kind {
        ErrorKind::HistoryLost => err.with_hint(
            "the Convex deployment no longer holds the history to resume from here; start again from the beginning (resnapshot)",
        ),
        ErrorKind::Auth => err.with_hint(
            "use a deploy key of this deployment (Convex dashboard → Settings → URL & Deploy Key)",
        ),
        ErrorKind::Config => err.with_hint(
            "the stored Convex position is not a cursor of this deployment; check the deployment URL, or start from the beginning into an empty destination",
        ),
        ErrorKind::Prerequisite if code == "StreamingExportNotEnabled" => {
            err.with_hint("streaming export needs a Convex plan that includes it")
        }
        ErrorKind::Prerequisite if status == 404 => err.with_hint(
            "check that the URL is the deployment URL (…convex.cloud) and that the backend supports streaming export",
        ),
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_map_to_kinds() {
        let body = |code: &str| format!(r#"{{"code":"{code}","message":"m"}}"#).into_bytes();
        for (status, code, kind) in [
            (400, "InvalidWindowToReadDocuments", ErrorKind::HistoryLost),
            (400, "SnapshotTooOld", ErrorKind::HistoryLost),
            (400, "SnapshotTooNew", ErrorKind::HistoryLost),
            (400, "InvalidListSnapshotCursor", ErrorKind::HistoryLost),
            (400, "DataSyncCursorExpired", ErrorKind::HistoryLost),
            (400, "InvalidDataSyncCursor", ErrorKind::Config),
            (400, "BadFormat", ErrorKind::Unsupported),
            (403, "StreamingExportNotEnabled", ErrorKind::Prerequisite),
            (403, "BadDeployKey", ErrorKind::Auth),
            (401, "MissingAccessToken", ErrorKind::Auth),
            (429, "RateLimited", ErrorKind::Connection),
            (500, "InternalServerError", ErrorKind::Connection),
            (503, "", ErrorKind::Connection),
            (404, "NotFound", ErrorKind::Prerequisite),
            (400, "NoSchemaForExport", ErrorKind::Prerequisite),
        ] {
            let e = status_error("api/x on https://d/", status, &body(code));
            assert_eq!(e.kind(), kind, "{status} {code}: {e}");
            assert_eq!(e.code(), Some(status.to_string().as_str()));
        }
        // A non-JSON body (a proxy's HTML page) still maps by status, shortened.
        let html = vec![b'<'; 10_000];
        let e = status_error("api/x", 502, &html);
        assert_eq!(e.kind(), ErrorKind::Connection);
        assert!(e.to_string().len() < 700);
        // Older deployments' wording of an expired cursor.
        let e = status_error(
            "api/document_deltas",
            400,
            br#"{"code":"","message":"cursor is older than the retention window"}"#,
        );
        assert_eq!(e.kind(), ErrorKind::HistoryLost);
    }
}
