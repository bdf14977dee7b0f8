//! `MongoConfig`: the connection URL, the database, and this connector's own options.

use std::fmt;
use std::time::Duration;

use powersync_source_core::secret::redact_url;
use powersync_source_core::{Secret, SourceError};

use crate::catalog::validate_database_name;
use crate::connection_string::ConnectionString;

/// How update events get the document's new state (PowerSync's `post_images` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PostImages {
    /// `fullDocument: 'updateLookup'`: the server reads the document when the event is
    /// returned, so an update may carry a *later* state of the document than the update
    /// itself produced (and nothing at all once the document is deleted; its delete event
    /// follows). The stream still converges: every later change follows in order.
    Off,
    /// Enable `changeStreamPreAndPostImages` on the selected collections that lack it
    /// (`collMod`), then use `fullDocument: 'required'` (the exact post-image). The default.
    #[default]
    AutoConfigure,
    /// `fullDocument: 'required'` without changing the database: replication fails with an
    /// error naming the collections that lack `changeStreamPreAndPostImages`.
    ReadOnly,
}

impl PostImages {
    /// The URL spelling: `off`, `auto_configure`, `read_only`.
    pub fn as_str(self) -> &'static str {
        match self {
            PostImages::Off => "off",
            PostImages::AutoConfigure => "auto_configure",
            PostImages::ReadOnly => "read_only",
        }
    }

    /// Parses the URL spelling.
    pub fn parse(s: &str) -> Result<PostImages, SourceError> {
        match s {
            "off" => Ok(PostImages::Off),
            "auto_configure" => Ok(PostImages::AutoConfigure),
            "read_only" => Ok(PostImages::ReadOnly),
            other => Err(SourceError::config(format!(
                "post_images={other} is not a mode: use off, auto_configure or read_only"
            ))),
        }
    }

    /// Whether the stream asks for exact post-images (`fullDocument: 'required'`).
    pub fn requires_images(self) -> bool {
        !matches!(self, PostImages::Off)
    }
}

/// Connection settings of a MongoDB source.
///
/// Built from a `mongodb://` or `mongodb+srv://` URL with [`MongoConfig::parse`]. The database
/// to replicate is the URL path (`mongodb://host/app` → `app`). Several databases are one
/// source with one checkpoint: name them with `databases=` (`mongodb://host/?databases=app,billing`)
/// or through `database.collection` table names; the source then reads one cluster-level change
/// stream (and needs `find` and `changeStream` on every database, see the README). The query
/// parameters below are
/// this connector's own and are removed before the URL is handed to the driver; every other
/// parameter (`replicaSet`, `authSource`, `tls`, `directConnection`, …) goes to the driver
/// unchanged.
///
/// | parameter | values | default |
/// |---|---|---|
/// | `post_images` | `off`, `auto_configure`, `read_only` (see [`PostImages`]) | `auto_configure` |
/// | `snapshot_batch_size` | documents per snapshot query (and per resume point) | `10000` |
/// | `batch_events` | events per batch handed to the host | [`StreamOptions::batch_events`](powersync_source_core::StreamOptions) |
/// | `max_await_ms` | how long an idle change-stream `getMore` waits on the server | `1000` |
/// | `databases` | comma-separated databases replicated whole (with the URL path's) when no table is named | none |
/// | `checkpoint_database` | the database holding `_powersync_checkpoints` | the URL's database if selected, else the first selected |
#[derive(Clone)]
pub struct MongoConfig {
    driver_url: Secret,
    display_url: String,
    database: String,
    databases: Vec<String>,
    checkpoint_database: Option<String>,
    post_images: PostImages,
    snapshot_batch_size: u32,
    batch_events: Option<usize>,
    max_await: Duration,
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("url", &self.display_url)
            .field("database", &self.database)
            .field("databases", &self.databases)
            .field("checkpoint_database", &self.checkpoint_database)
            .field("post_images", &self.post_images)
            .field("snapshot_batch_size", &self.snapshot_batch_size)
            .field("batch_events", &self.batch_events)
            .field("max_await", &self.max_await)
            .finish()
    }
}

const OWN_PARAMS: &[&str] = &[
    "post_images",
    "snapshot_batch_size",
    "batch_events",
    "max_await_ms",
    "databases",
    "checkpoint_database",
];

impl MongoConfig {
    /// Parses a `mongodb://` or `mongodb+srv://` URL. The database comes from the path; the
    /// options of the table in the type docs are read and stripped. Malformed percent escapes
    /// (a `%` without two hex digits) and unescaped `/`, `?`, `@`… in the user name or password
    /// are [`ErrorKind::Config`](powersync_source_core::ErrorKind) errors, which never quote the
    /// password. Host names and driver options are validated when the source connects.
    pub fn parse(url: &str) -> Result<MongoConfig, SourceError> {
        let url = url.trim();
        let parts = ConnectionString::split(url).map_err(|e| {
            if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
                e
            } else {
                // Not ours at all: show it (without its password) so the mix-up is visible.
                e.context(format!("`{}`", redact_url(url)))
            }
        })?;
        let database = parts.database.clone();
        if !database.is_empty() {
            validate_database_name(&database)?;
        }
        let mut config = MongoConfig {
            driver_url: Secret::new(String::new()),
            display_url: String::new(),
            database,
            databases: Vec::new(),
            checkpoint_database: None,
            post_images: PostImages::default(),
            snapshot_batch_size: 10_000,
            batch_events: None,
            max_await: Duration::from_millis(1000),
        };
        let mut kept = Vec::new();
        for option in &parts.options {
            let key = option.name()?;
            if !OWN_PARAMS.contains(&key.as_ref()) {
                kept.push(*option);
                continue;
            }
            let value = option.decoded()?;
            let number = || -> Result<u64, SourceError> {
                value.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    SourceError::config(format!("{key}={value} must be a positive integer"))
                })
            };
            match key.as_ref() {
                "post_images" => config.post_images = PostImages::parse(&value)?,
                "snapshot_batch_size" => {
                    config.snapshot_batch_size = u32::try_from(number()?).unwrap_or(u32::MAX)
                }
                "batch_events" => {
                    config.batch_events = Some(usize::try_from(number()?).unwrap_or(usize::MAX))
                }
                "max_await_ms" => config.max_await = Duration::from_millis(number()?),
                "databases" => {
                    for db in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                        validate_database_name(db)?;
                        if !config.databases.iter().any(|d| d == db) {
                            config.databases.push(db.to_owned());
                        }
                    }
                }
                "checkpoint_database" => {
                    validate_database_name(&value)?;
                    config.checkpoint_database = Some(value.to_string());
                }
                _ => {}
            }
        }
        config.display_url = parts.render_redacted(&kept);
        config.driver_url = Secret::new(parts.render(&kept));
        Ok(config)
    }

    /// The URL given to the driver (our own parameters removed). Contains the password.
    pub(crate) fn driver_url(&self) -> &Secret {
        &self.driver_url
    }

    /// The URL with the password replaced by `***`, for messages.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// The URL path's database (empty when the URL names none).
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The `databases=` list (replicated whole when no table is named).
    pub fn databases(&self) -> &[String] {
        &self.databases
    }

    /// The `checkpoint_database=` setting, when given.
    pub fn checkpoint_database(&self) -> Option<&str> {
        self.checkpoint_database.as_deref()
    }

    /// The post-image mode.
    pub fn post_images(&self) -> PostImages {
        self.post_images
    }

    /// Documents per snapshot query; a resume point is emitted after each.
    pub fn snapshot_batch_size(&self) -> u32 {
        self.snapshot_batch_size
    }

    /// Events per batch handed to the host, when the URL sets it (`batch_events`); it then
    /// wins over [`StreamOptions::batch_events`](powersync_source_core::StreamOptions).
    pub fn batch_events(&self) -> Option<usize> {
        self.batch_events
    }

    /// How long an idle change-stream `getMore` waits on the server before answering empty
    /// (and so how often an idle stream advances its position).
    pub fn max_await(&self) -> Duration {
        self.max_await
    }

    /// Sets the post-image mode.
    pub fn with_post_images(mut self, mode: PostImages) -> Self {
        self.post_images = mode;
        self
    }

    /// Sets the documents per snapshot query.
    pub fn with_snapshot_batch_size(mut self, n: u32) -> Self {
        self.snapshot_batch_size = n.max(1);
        self
    }

    /// Sets the events per batch (as the URL's `batch_events` does).
    pub fn with_batch_events(mut self, n: usize) -> Self {
        self.batch_events = Some(n.max(1));
        self
    }

    /// Sets the idle `getMore` wait.
    pub fn with_max_await(mut self, wait: Duration) -> Self {
        self.max_await = wait.max(Duration::from_millis(10));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_and_own_options_are_taken_out() {
        let c = MongoConfig::parse(
            "mongodb://u:s3cret@h1:27017,h2/app?replicaSet=rs0&post_images=read_only&snapshot_batch_size=50",
        )
        .unwrap();
        assert_eq!(c.database(), "app");
        assert_eq!(c.post_images(), PostImages::ReadOnly);
        assert_eq!(c.snapshot_batch_size(), 50);
        assert_eq!(
            c.driver_url().expose(),
            "mongodb://u:s3cret@h1:27017,h2/app?replicaSet=rs0"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!c.display_url().contains("s3cret"));
    }

    #[test]
    fn srv_and_defaults() {
        let c = MongoConfig::parse("mongodb+srv://cluster0.example.net/shop").unwrap();
        assert_eq!(c.database(), "shop");
        assert_eq!(c.post_images(), PostImages::AutoConfigure);
        assert_eq!(
            c.driver_url().expose(),
            "mongodb+srv://cluster0.example.net/shop"
        );
    }

    #[test]
    fn bad_urls_are_config_errors_without_secrets() {
        for url in [
            "postgres://h/db",
            "mongodb://h/?databases=a,b.c",
            "mongodb://h/app?checkpoint_database=x%24y",
            "mongodb:///db",
            "mongodb://h/db?post_images=sometimes",
            "mongodb://h/db?snapshot_batch_size=0",
            "mongodb://h/a.b",
            "mongodb://h/ap%2Fp",
            // Malformed escapes are refused, not passed through.
            "mongodb://h/app%zz",
            "mongodb://h/app%4",
            "mongodb://u:pw-Secret%zz@h/app",
            "mongodb://u:pw-Secret@h/app?post_images=read%5",
            "mongodb://u:pw-Secret@h/app?tls=true&tlsCertificateKeyFilePassword=pw-Secret%G1",
            "mongodb://h/%ff%fe",
            // A reserved character in the password cut the URL in the wrong place.
            "mongodb://u:pw/Secret@h/app",
            "mongodb://u:pw?Secret@h/app",
            "mongodb://u:pw@Secret@h/app",
            "mongodb://u:pw:Secret@h/app",
            "mongodb://h?replicaSet=rs0",
        ] {
            let e = MongoConfig::parse(url).unwrap_err();
            assert_eq!(e.kind(), powersync_source_core::ErrorKind::Config, "{url}");
            assert!(!e.to_string().contains("pw-Secret"), "{e}");
        }
    }

    #[test]
    fn several_databases() {
        let c = MongoConfig::parse(
            "mongodb://u:s3cret@h/?replicaSet=rs0&databases=app,%20billing,app&checkpoint_database=ops",
        )
        .unwrap();
        assert_eq!(c.database(), "");
        assert_eq!(c.databases(), ["app", "billing"]);
        assert_eq!(c.checkpoint_database(), Some("ops"));
        assert_eq!(
            c.driver_url().expose(),
            "mongodb://u:s3cret@h/?replicaSet=rs0"
        );
    }

    #[test]
    fn escapes_are_decoded() {
        let c = MongoConfig::parse(
            "mongodb://u%40x:p%2Fw@h/my%2Ddb?post_images=read%5Fonly&appName=a%20b",
        )
        .unwrap();
        assert_eq!(c.database(), "my-db");
        assert_eq!(c.post_images(), PostImages::ReadOnly);
        // The driver gets the URL as written, minus our options.
        assert_eq!(
            c.driver_url().expose(),
            "mongodb://u%40x:p%2Fw@h/my%2Ddb?appName=a%20b"
        );
        assert_eq!(
            c.display_url(),
            "mongodb://u%40x:***@h/my%2Ddb?appName=a%20b"
        );
    }

    #[test]
    fn secret_options_are_redacted_in_the_display_url() {
        let c = MongoConfig::parse(
            "mongodb://h/app?tls=true&tlsCertificateKeyFilePassword=k3y-Secret&authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:t0ken-Secret",
        )
        .unwrap();
        assert!(!c.display_url().contains("Secret"), "{}", c.display_url());
        assert!(!format!("{c:?}").contains("Secret"));
        assert!(c.driver_url().expose().contains("k3y-Secret"));
        assert!(c.display_url().contains("authMechanism=MONGODB-AWS"));
    }
}
