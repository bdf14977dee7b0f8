//! Opening a source by URL: the scheme picks the connector, [`Options`] carry what a URL
//! cannot say.

use std::fmt;

use powersync_source_core::{
    ChangeSource, ErrorKind, Secret, SourceError, StreamOptions, TableName,
};

/// What [`open`] needs besides the URL. `Debug` never shows the deploy key.
///
/// ```
/// use powersync_source::{Options, StreamOptions};
///
/// let options = Options::new()
///     .with_tables(["items", "sales.orders"])
///     .with_stream_options(StreamOptions::default().with_batch_events(1024));
/// ```
#[derive(Clone, Default)]
pub struct Options {
    tables: Vec<String>,
    publication: Option<String>,
    slot: Option<String>,
    deploy_key: Option<Secret>,
    stream: StreamOptions,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("tables", &self.tables)
            .field("publication", &self.publication)
            .field("slot", &self.slot)
            // `Secret` prints `***`.
            .field("deploy_key", &self.deploy_key)
            .field("stream", &self.stream)
            .finish()
    }
}

impl Options {
    /// No tables named (everything the source publishes), default stream settings.
    pub fn new() -> Self {
        Options::default()
    }

    /// Replicate these tables, written as a user types them: `schema.name`, or `name` for
    /// the source's default schema (`public` for PostgreSQL, `dbo` for SQL Server, `convex`
    /// for Convex, the URL's database for MySQL and MongoDB). When not empty, they replace
    /// [`StreamOptions::tables`].
    pub fn with_tables<I, S>(mut self, tables: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tables = tables.into_iter().map(Into::into).collect();
        self
    }

    /// PostgreSQL: the publication to replicate (overrides the URL's `publication`).
    pub fn with_publication(mut self, publication: impl Into<String>) -> Self {
        self.publication = Some(publication.into());
        self
    }

    /// PostgreSQL: the replication slot (overrides the URL's `slot`).
    pub fn with_slot(mut self, slot: impl Into<String>) -> Self {
        self.slot = Some(slot.into());
        self
    }

    /// Convex: the deploy key. It turns a plain `https://` URL into a Convex source.
    pub fn with_deploy_key(mut self, key: impl Into<String>) -> Self {
        self.deploy_key = Some(Secret::new(key));
        self
    }

    /// The stream settings every connector accepts (tables, retry, batch size, silence
    /// timeout).
    pub fn with_stream_options(mut self, stream: StreamOptions) -> Self {
        self.stream = stream;
        self
    }

    /// The tables named with [`Options::with_tables`].
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    /// The stream settings.
    pub fn stream_options(&self) -> &StreamOptions {
        &self.stream
    }
}

/// The kinds of source a URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceKind {
    /// PostgreSQL (`postgres://`, `postgresql://`).
    Postgres,
    /// MySQL or MariaDB (`mysql://`, `mariadb://`).
    MySql,
    /// MongoDB (`mongodb://`, `mongodb+srv://`).
    MongoDb,
    /// SQL Server (`sqlserver://`).
    SqlServer,
    /// Convex (`convex+https://`, `convex+http://`, or `https://` with a deploy key).
    Convex,
}

impl SourceKind {
    /// The source's name for messages.
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::Postgres => "PostgreSQL",
            SourceKind::MySql => "MySQL/MariaDB",
            SourceKind::MongoDb => "MongoDB",
            SourceKind::SqlServer => "SQL Server",
            SourceKind::Convex => "Convex",
        }
    }

    /// The default schema of a table named without a dot (empty: the URL's database).
    pub fn default_schema(self) -> &'static str {
        match self {
            SourceKind::Postgres => "public",
            SourceKind::SqlServer => "dbo",
            SourceKind::Convex => "convex",
            SourceKind::MySql | SourceKind::MongoDb => "",
        }
    }

    /// The Cargo feature of this crate that compiles the connector in.
    pub fn feature(self) -> &'static str {
        match self {
            SourceKind::Postgres => "postgres",
            SourceKind::MySql => "mysql",
            SourceKind::MongoDb => "mongodb",
            SourceKind::SqlServer => "mssql",
            SourceKind::Convex => "convex",
        }
    }
}

const SCHEMES: &str = "supported schemes: postgres://, postgresql://, mysql://, mariadb://, \
                       mongodb://, mongodb+srv://, sqlserver://, convex+https://";

/// Which source a URL names, from its scheme alone (whether or not this build has the
/// connector). `deploy_key` turns a plain `https://` URL into a Convex one. Errors are
/// [`ErrorKind::Config`] and never repeat the URL past its scheme (it may hold a password).
pub fn source_kind(url: &str, deploy_key: Option<&str>) -> Result<SourceKind, SourceError> {
    let url = url.trim();
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(SourceError::config(
            "the source must be a URL such as postgres://user:password@host:5432/dbname",
        )
        .with_hint(SCHEMES));
    };
    let kind = match scheme.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" => SourceKind::Postgres,
        "mysql" | "mariadb" => SourceKind::MySql,
        "mongodb" | "mongodb+srv" => SourceKind::MongoDb,
        "sqlserver" => SourceKind::SqlServer,
        "convex+https" | "convex+http" => SourceKind::Convex,
        "https" | "http" if deploy_key.is_some() => SourceKind::Convex,
        "https" | "http" => {
            return Err(SourceError::config(
                "an https:// source is a Convex deployment and needs --deploy-key",
            )
            .with_hint("pass --deploy-key KEY, or write the URL as convex+https://…"))
        }
        other => {
            // Only the scheme is shown: the rest of the URL may hold a password.
            return Err(
                SourceError::config(format!("unknown source URL scheme `{other}://`"))
                    .with_hint(SCHEMES),
            );
        }
    };
    Ok(kind)
}

/// Table names as a user types them, qualified with `kind`'s default schema. MySQL and
/// MongoDB names without a dot keep an empty schema: the connector reads it as the URL's
/// database.
pub fn table_names(kind: SourceKind, tables: &[String]) -> Result<Vec<TableName>, SourceError> {
    tables
        .iter()
        .map(|t| {
            let t = t.trim();
            let name = TableName::parse(t, kind.default_schema());
            let schema_needed = !kind.default_schema().is_empty();
            if name.name.is_empty() || (schema_needed && name.schema.is_empty()) {
                Err(SourceError::config(format!(
                    "--table `{t}`: expected `schema.name`{}",
                    if kind.default_schema().is_empty() {
                        ""
                    } else {
                        " or `name`"
                    }
                )))
            } else {
                Ok(name)
            }
        })
        .collect()
}

/// Opens the source a URL names.
///
/// The scheme picks the connector ([`source_kind`]); the connector parses the rest of the
/// URL (`XConfig::parse`) and gets [`Options::stream_options`] (with the tables of
/// [`Options::with_tables`]). Nothing connects yet: `check`, `discover` and `start` do.
///
/// # Errors
/// [`ErrorKind::Config`] for a bad URL or an option the source does not take (a publication
/// for MySQL, a deploy key for PostgreSQL); [`ErrorKind::Unsupported`] when this build lacks
/// the connector's feature. Messages never contain the URL's password or the deploy key.
pub fn open(url: &str, options: &Options) -> Result<Box<dyn ChangeSource>, SourceError> {
    let deploy_key = options.deploy_key.as_ref().map(Secret::expose);
    let kind = source_kind(url, deploy_key)?;
    if kind != SourceKind::Convex && options.deploy_key.is_some() {
        return Err(SourceError::config(format!(
            "--deploy-key is for Convex sources, not {}",
            kind.label()
        )));
    }
    if kind != SourceKind::Postgres && (options.publication.is_some() || options.slot.is_some()) {
        return Err(SourceError::config(format!(
            "--publication and --slot are PostgreSQL options, not {} ones",
            kind.label()
        )));
    }
    let tables = table_names(kind, &options.tables)?;
    let stream = if tables.is_empty() {
        options.stream.clone()
    } else {
        options.stream.clone().with_tables(tables)
    };
    match kind {
        SourceKind::Postgres => open_postgres(url, options, stream),
        SourceKind::MySql => open_mysql(url, stream),
        SourceKind::MongoDb => open_mongodb(url, stream),
        SourceKind::SqlServer => open_mssql(url, stream),
        SourceKind::Convex => open_convex(url, deploy_key, stream),
    }
}

/// A connector this build was compiled without.
#[cfg_attr(
    all(
        feature = "postgres",
        feature = "mysql",
        feature = "mongodb",
        feature = "mssql",
        feature = "convex"
    ),
    allow(dead_code)
)]
fn not_compiled_in(kind: SourceKind) -> SourceError {
    SourceError::new(
        ErrorKind::Unsupported,
        format!("this build has no {} connector", kind.label()),
    )
    .with_hint(format!(
        "enable the `{0}` feature of powersync-source (the examples: `--features {0}`)",
        kind.feature()
    ))
}

#[cfg(feature = "postgres")]
fn open_postgres(
    url: &str,
    options: &Options,
    stream: StreamOptions,
) -> Result<Box<dyn ChangeSource>, SourceError> {
    use powersync_source_postgres::{PostgresConfig, PostgresSource};
    let mut config = PostgresConfig::parse(url)?;
    if let Some(publication) = &options.publication {
        if publication.is_empty() {
            return Err(SourceError::config("--publication must not be empty"));
        }
        config = config.with_publication(publication.clone());
    }
    if let Some(slot) = &options.slot {
        powersync_source_postgres::config::validate_slot_name(slot)?;
        config = config.with_slot(slot.clone());
    }
    Ok(Box::new(
        PostgresSource::new(config).with_stream_options(stream),
    ))
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(
    _url: &str,
    _options: &Options,
    _stream: StreamOptions,
) -> Result<Box<dyn ChangeSource>, SourceError> {
    Err(not_compiled_in(SourceKind::Postgres))
}

#[cfg(feature = "mysql")]
fn open_mysql(url: &str, stream: StreamOptions) -> Result<Box<dyn ChangeSource>, SourceError> {
    use powersync_source_mysql::{MySqlConfig, MySqlSource};
    let config = MySqlConfig::parse(url)?;
    Ok(Box::new(
        MySqlSource::new(config).with_stream_options(stream),
    ))
}

#[cfg(not(feature = "mysql"))]
fn open_mysql(_url: &str, _stream: StreamOptions) -> Result<Box<dyn ChangeSource>, SourceError> {
    Err(not_compiled_in(SourceKind::MySql))
}

#[cfg(feature = "mongodb")]
fn open_mongodb(url: &str, stream: StreamOptions) -> Result<Box<dyn ChangeSource>, SourceError> {
    use powersync_source_mongodb::{MongoConfig, MongoSource};
    let config = MongoConfig::parse(url)?;
    Ok(Box::new(
        MongoSource::new(config).with_stream_options(stream),
    ))
}

#[cfg(not(feature = "mongodb"))]
fn open_mongodb(_url: &str, _stream: StreamOptions) -> Result<Box<dyn ChangeSource>, SourceError> {
    Err(not_compiled_in(SourceKind::MongoDb))
}

#[cfg(feature = "mssql")]
fn open_mssql(url: &str, stream: StreamOptions) -> Result<Box<dyn ChangeSource>, SourceError> {
    use powersync_source_mssql::{MssqlConfig, MssqlSource};
    let config = MssqlConfig::parse(url)?;
    Ok(Box::new(
        MssqlSource::new(config).with_stream_options(stream),
    ))
}

#[cfg(not(feature = "mssql"))]
fn open_mssql(_url: &str, _stream: StreamOptions) -> Result<Box<dyn ChangeSource>, SourceError> {
    Err(not_compiled_in(SourceKind::SqlServer))
}

#[cfg(feature = "convex")]
fn open_convex(
    url: &str,
    deploy_key: Option<&str>,
    stream: StreamOptions,
) -> Result<Box<dyn ChangeSource>, SourceError> {
    use powersync_source_convex::{ConvexConfig, ConvexSource};
    let config = ConvexConfig::parse(url, deploy_key)?;
    Ok(Box::new(
        ConvexSource::new(config).with_stream_options(stream),
    ))
}

#[cfg(not(feature = "convex"))]
fn open_convex(
    _url: &str,
    _deploy_key: Option<&str>,
    _stream: StreamOptions,
) -> Result<Box<dyn ChangeSource>, SourceError> {
    Err(not_compiled_in(SourceKind::Convex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(
            source_kind("postgres://h/db", None).unwrap(),
            SourceKind::Postgres
        );
        assert_eq!(
            source_kind("postgresql://h/db", None).unwrap(),
            SourceKind::Postgres
        );
        assert_eq!(
            source_kind("MySQL://h/db", None).unwrap(),
            SourceKind::MySql
        );
        assert_eq!(
            source_kind("mariadb://h/db", None).unwrap(),
            SourceKind::MySql
        );
        assert_eq!(
            source_kind("mongodb+srv://h/db", None).unwrap(),
            SourceKind::MongoDb
        );
        assert_eq!(
            source_kind("sqlserver://h", None).unwrap(),
            SourceKind::SqlServer
        );
        assert_eq!(
            source_kind("convex+https://x.convex.cloud", None).unwrap(),
            SourceKind::Convex
        );
        assert_eq!(
            source_kind("https://x.convex.cloud", Some("k")).unwrap(),
            SourceKind::Convex
        );
        assert_eq!(
            source_kind("https://x", None).unwrap_err().kind(),
            ErrorKind::Config
        );
        assert_eq!(
            source_kind("nonsense", None).unwrap_err().kind(),
            ErrorKind::Config
        );
        let e = source_kind("ftp://user:hunter2@h", None).unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn postgres_options_are_refused_elsewhere() {
        let options = Options::new().with_slot("s");
        let e = open("mysql://u:hunter2@h/db", &options).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.to_string().contains("hunter2"));
        let options = Options::new().with_deploy_key("sekrit");
        let e = open("postgres://u:hunter2@h/db", &options).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.to_string().contains("hunter2"));
        assert!(!e.to_string().contains("sekrit"));
    }

    #[test]
    fn tables() {
        let t = table_names(SourceKind::Postgres, &["a".into(), "s.b".into()]).unwrap();
        assert_eq!(
            t,
            vec![TableName::new("public", "a"), TableName::new("s", "b")]
        );
        let t = table_names(SourceKind::MySql, &["a".into(), "db.b".into()]).unwrap();
        assert_eq!(t, vec![TableName::new("", "a"), TableName::new("db", "b")]);
        assert!(table_names(SourceKind::Postgres, &[".".into()]).is_err());
    }

    #[test]
    fn debug_never_shows_the_deploy_key() {
        let options = Options::new()
            .with_deploy_key("prod:happy-otter-123|sekrit")
            .with_tables(["t"]);
        let shown = format!("{options:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
        assert!(shown.contains("\"t\""), "{shown}");
    }

    /// The tables named as strings reach the connector as qualified names, replacing the
    /// stream options' list; a URL error is a configuration error without the password.
    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_gets_the_options() {
        let options = Options::new()
            .with_tables(["items"])
            .with_publication("pub")
            .with_stream_options(StreamOptions::default().with_batch_events(7));
        let source = open("postgres://u:hunter2@127.0.0.1/db", &options).unwrap();
        assert_eq!(source.kind(), "postgres");
        let shown = format!("{source:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let e = open("postgres://u:hunter2@h/db?nonsense=1", &Options::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.to_string().contains("hunter2"));
    }

    #[cfg(not(feature = "mssql"))]
    #[test]
    fn a_missing_connector_names_its_feature() {
        let e = open("sqlserver://sa:hunter2@h/db", &Options::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("`mssql`"), "{e}");
        assert!(!e.to_string().contains("hunter2"));
    }
}
