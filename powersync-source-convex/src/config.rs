//! Connection settings: deployment URL, deploy key and the knobs of the stream.

use std::fmt;
use std::time::Duration;

use powersync_source_core::{RetryPolicy, Secret, SourceError};
use url::Url;

/// How Convex `Int64` values reach the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Int64Mode {
    /// Base-10 [`Value::Text`](powersync_source_core::Value::Text) ("Int64-as-text", the
    /// default): every value of a column has one SQLite type whatever its magnitude, and
    /// JavaScript clients never lose precision.
    #[default]
    Text,
    /// [`Value::Integer`](powersync_source_core::Value::Integer), for hosts that do their own
    /// arithmetic on these columns.
    Integer,
}

/// Which value encoding to ask the streaming export API for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueEncoding {
    /// `convex_encoded_json` when the deployment accepts it, else `json` typed through
    /// `/api/json_schemas` (the default).
    #[default]
    Auto,
    /// Always `convex_encoded_json`: Int64 as `{"$integer": …}`, Bytes as `{"$bytes": …}`,
    /// special floats as `{"$float": …}`, so every value's type is exact.
    Typed,
    /// Always the documented `json` format: Int64 arrives as a base-10 string and Bytes as
    /// base64, told apart from strings by the field types `/api/json_schemas` reports.
    Json,
}

/// Which Convex API the stream reads (see the crate docs, "Which API").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvexApi {
    /// The Data Sync API where the deployment serves it, else streaming export (the default).
    #[default]
    Auto,
    /// Always the Data Sync API (`POST /api/v1/data/sync`).
    DataSync,
    /// Always the legacy streaming export endpoints (`list_snapshot`, `document_deltas`).
    StreamingExport,
}

/// Where and how to reach a Convex deployment.
///
/// The deploy key is a [`Secret`]: it is sent only in the `Authorization: Convex <key>` header
/// and never appears in `Debug`, errors or logs.
#[derive(Clone)]
pub struct ConvexConfig {
    base: Url,
    deploy_key: Secret,
    request_timeout: Duration,
    polling_interval: Duration,
    schema_check_interval: Duration,
    int64: Int64Mode,
    encoding: ValueEncoding,
    api: ConvexApi,
    retry: RetryPolicy,
}

impl ConvexConfig {
    /// Parses a deployment URL and the deploy key.
    ///
    /// Accepted URLs: `convex+https://happy-animal-123.convex.cloud`, `https://…` (Convex cloud,
    /// or a self-hosted backend behind TLS), and `convex+http://…` / `http://…` for a local
    /// or self-hosted backend without TLS (and test servers). A path is kept as the prefix of
    /// the API routes (a backend behind a reverse proxy).
    ///
    /// Query parameters set options: `polling_interval_ms` (default 1000),
    /// `request_timeout_ms` (default 30000; a `list_snapshot` page gets at least 180000),
    /// `schema_check_interval_ms` (default 60000),
    /// `int64=text|integer` (default `text`), `encoding=auto|typed|json` (default `auto`; the
    /// streaming export encoding, the Data Sync API has one of its own) and
    /// `api=auto|data_sync|streaming_export` (default `auto`, see [`ConvexApi`]).
    /// Unknown parameters are a [`Config`](powersync_source_core::ErrorKind::Config) error, and
    /// so is a missing or empty deploy key, or a URL carrying a password.
    pub fn parse(url: &str, deploy_key: Option<&str>) -> Result<ConvexConfig, SourceError> {
        let shown = powersync_source_core::secret::redact_url(url);
        let trimmed = url.trim();
        let rest = trimmed.strip_prefix("convex+").unwrap_or(trimmed);
        let mut base = Url::parse(rest).map_err(|e| {
            SourceError::config(format!("`{shown}` is not a Convex deployment URL"))
                .with_source(e)
                .with_hint("use the deployment URL from the Convex dashboard, e.g. https://happy-animal-123.convex.cloud")
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(SourceError::config(format!(
                "`{shown}`: a Convex deployment URL starts with convex+https://, https://, convex+http:// or http://"
            )));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(SourceError::config(format!("`{shown}` names no host")));
        }
        if base.password().is_some() || !base.username().is_empty() {
            return Err(SourceError::config(format!(
                "`{shown}`: the deploy key goes in its own setting, not in the URL"
            )));
        }
        let mut config = ConvexConfig {
            base: base.clone(),
            deploy_key: Secret::default(),
            request_timeout: Duration::from_secs(30),
            polling_interval: Duration::from_millis(1000),
            schema_check_interval: Duration::from_secs(60),
            int64: Int64Mode::Text,
            encoding: ValueEncoding::Auto,
            api: ConvexApi::Auto,
            retry: RetryPolicy::default(),
        };
        let pairs: Vec<(String, String)> = base
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (key, value) in pairs {
            let millis = |what: &str| -> Result<Duration, SourceError> {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        SourceError::config(format!(
                            "{what} must be a positive number of milliseconds, got `{value}`"
                        ))
                    })
            };
            match key.as_str() {
                "polling_interval_ms" => config.polling_interval = millis(&key)?,
                "request_timeout_ms" => config.request_timeout = millis(&key)?,
                "schema_check_interval_ms" => config.schema_check_interval = millis(&key)?,
                "int64" => {
                    config.int64 = match value.as_str() {
                        "text" => Int64Mode::Text,
                        "integer" => Int64Mode::Integer,
                        _ => {
                            return Err(SourceError::config(format!(
                                "int64 must be `text` or `integer`, got `{value}`"
                            )))
                        }
                    }
                }
                "encoding" => {
                    config.encoding = match value.as_str() {
                        "auto" => ValueEncoding::Auto,
                        "typed" => ValueEncoding::Typed,
                        "json" => ValueEncoding::Json,
                        _ => {
                            return Err(SourceError::config(format!(
                                "encoding must be `auto`, `typed` or `json`, got `{value}`"
                            )))
                        }
                    }
                }
                "api" => {
                    config.api = match value.as_str() {
                        "auto" => ConvexApi::Auto,
                        "data_sync" => ConvexApi::DataSync,
                        "streaming_export" => ConvexApi::StreamingExport,
                        _ => {
                            return Err(SourceError::config(format!(
                                "api must be `auto`, `data_sync` or `streaming_export`, got `{value}`"
                            )))
                        }
                    }
                }
                "deploy_key" | "key" => {
                    return Err(SourceError::config(
                        "the deploy key goes in its own setting, not in the URL",
                    ))
                }
                _ => {
                    return Err(SourceError::config(format!(
                        "unknown option `{key}` in the Convex URL; known: polling_interval_ms, request_timeout_ms, schema_check_interval_ms, int64, encoding, api"
                    )))
                }
            }
        }
        base.set_query(None);
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        config.base = base;
        let key = deploy_key.map(str::trim).unwrap_or_default();
        if key.is_empty() {
            return Err(SourceError::config(format!(
                "no deploy key for Convex deployment {}",
                config.base
            ))
            .with_hint("create one in the Convex dashboard (Settings → URL & Deploy Key) and pass it, e.g. from CONVEX_DEPLOY_KEY"));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SourceError::config(
                "the deploy key holds spaces or control characters; paste it exactly as the Convex dashboard shows it",
            ));
        }
        config.deploy_key = Secret::new(key);
        Ok(config)
    }

    /// The deployment's base URL (no secret in it).
    pub fn url(&self) -> &Url {
        &self.base
    }
    /// The deploy key.
    pub fn deploy_key(&self) -> &Secret {
        &self.deploy_key
    }
    /// Timeout of one HTTP request; a `list_snapshot` page gets at least 180 s, since the
    /// server may work a minute on one page after setting up its iterator.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
    /// Wait between `document_deltas` polls once caught up (default 1 s).
    pub fn polling_interval(&self) -> Duration {
        self.polling_interval
    }
    /// Interval of the schema check that finds tables deleted in the dashboard (default 60 s).
    pub fn schema_check_interval(&self) -> Duration {
        self.schema_check_interval
    }
    /// How Int64 values are rendered.
    pub fn int64(&self) -> Int64Mode {
        self.int64
    }
    /// Which value encoding is requested.
    pub fn encoding(&self) -> ValueEncoding {
        self.encoding
    }
    /// Which API the stream reads.
    pub fn api(&self) -> ConvexApi {
        self.api
    }
    /// The reconnect policy: `check`, `discover` and `write_checkpoint` retry 429, 5xx and
    /// network failures with it (at most 4 attempts within 30 s), and
    /// [`ConvexSource::new`](crate::ConvexSource::new) takes it as the stream's policy unless
    /// [`ConvexSource::with_stream_options`](crate::ConvexSource::with_stream_options) sets
    /// another.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Replaces the deploy key.
    pub fn with_deploy_key(mut self, key: impl Into<String>) -> Self {
        self.deploy_key = Secret::new(key);
        self
    }
    /// Sets the timeout of one HTTP request (a `list_snapshot` page gets at least 180 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
    /// Sets the polling interval.
    pub fn with_polling_interval(mut self, interval: Duration) -> Self {
        self.polling_interval = interval;
        self
    }
    /// Sets the schema check interval.
    pub fn with_schema_check_interval(mut self, interval: Duration) -> Self {
        self.schema_check_interval = interval;
        self
    }
    /// Sets how Int64 values are rendered.
    pub fn with_int64(mut self, mode: Int64Mode) -> Self {
        self.int64 = mode;
        self
    }
    /// Sets the value encoding to request.
    pub fn with_encoding(mut self, encoding: ValueEncoding) -> Self {
        self.encoding = encoding;
        self
    }
    /// Sets which API the stream reads.
    pub fn with_api(mut self, api: ConvexApi) -> Self {
        self.api = api;
        self
    }
    /// Sets the reconnect policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

impl fmt::Debug for ConvexConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConvexConfig")
            .field("url", &self.base.as_str())
            .field("deploy_key", &self.deploy_key)
            .field("request_timeout", &self.request_timeout)
            .field("polling_interval", &self.polling_interval)
            .field("schema_check_interval", &self.schema_check_interval)
            .field("int64", &self.int64)
            .field("encoding", &self.encoding)
            .field("api", &self.api)
            .finish()
    }
}
