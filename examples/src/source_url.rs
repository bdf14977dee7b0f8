//! Picks a connector by the URL's scheme.
//!
//! | scheme | source |
//! |---|---|
//! | `postgres://`, `postgresql://` | PostgreSQL (feature `postgres`) |
//! | `mysql://`, `mariadb://` | MySQL / MariaDB (feature `mysql`) |
//! | `mongodb://`, `mongodb+srv://` | MongoDB (feature `mongodb`) |
//! | `sqlserver://` | SQL Server (feature `mssql`) |
//! | `convex+https://`, or `https://` with `--deploy-key` (`convex+http://`/`http://` for a local backend) | Convex (feature `convex`) |
//!
//! `--table NAME` without a dot means schema `public` (PostgreSQL), `dbo` (SQL Server),
//! `convex` (Convex), or the URL's database (MySQL, MongoDB). A connector left out of the
//! build gives an [`ErrorKind::Unsupported`] error saying which feature to enable (exit status
//! 2 in the binaries). URLs are never echoed back: they may hold passwords.

use powersync_source_core::{ChangeSource, ErrorKind, SourceError, TableName};

/// Source options from the command line. `Debug` never shows the deploy key.
#[derive(Clone, Default)]
pub struct SourceOptions {
    /// Tables to replicate, `schema.name` or `name`; empty = everything published.
    pub tables: Vec<String>,
    /// PostgreSQL publication (overrides the URL).
    pub publication: Option<String>,
    /// PostgreSQL replication slot (overrides the URL).
    pub slot: Option<String>,
    /// Convex deploy key.
    pub deploy_key: Option<String>,
}

impl std::fmt::Debug for SourceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceOptions")
            .field("tables", &self.tables)
            .field("publication", &self.publication)
            .field("slot", &self.slot)
            .field("deploy_key", &self.deploy_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The kinds of source a URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    /// MongoDB.
    MongoDb,
    /// SQL Server.
    SqlServer,
    /// Convex.
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

    /// The default schema for `--table NAME` without a dot (empty: the URL's database).
    pub fn default_schema(self) -> &'static str {
        match self {
            SourceKind::Postgres => "public",
            SourceKind::SqlServer => "dbo",
            SourceKind::Convex => "convex",
            SourceKind::MySql | SourceKind::MongoDb => "",
        }
    }
}

/// Which source a URL names. `deploy_key` turns a plain `https://` URL into a Convex one.
pub fn source_kind(url: &str, deploy_key: Option<&str>) -> Result<SourceKind, SourceError> {
    let url = url.trim();
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(SourceError::config(
            "the source must be a URL such as postgres://user:password@host:5432/dbname",
        )
        .with_hint(
            "supported schemes: postgres://, postgresql://, mysql://, mariadb://, mongodb://, \
             mongodb+srv://, sqlserver://, convex+https://",
        ));
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
                SourceError::config(format!("unknown source URL scheme `{other}://`")).with_hint(
                    "supported schemes: postgres://, postgresql://, mysql://, mariadb://, \
                 mongodb://, mongodb+srv://, sqlserver://, convex+https://",
                ),
            );
        }
    };
    Ok(kind)
}

/// The selected tables as qualified names.
pub fn table_names(kind: SourceKind, tables: &[String]) -> Result<Vec<TableName>, SourceError> {
    tables
        .iter()
        .map(|t| {
            let t = t.trim();
            let name = TableName::parse(t, kind.default_schema());
            // MySQL and MongoDB: no schema means the URL's database (the connectors' rule).
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

/// Opens the source a URL names, with the command line's options.
pub fn open_source(
    url: &str,
    options: &SourceOptions,
) -> Result<Box<dyn ChangeSource>, SourceError> {
    let kind = source_kind(url, options.deploy_key.as_deref())?;
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
    match kind {
        SourceKind::Postgres => open_postgres(url, options, tables),
        SourceKind::MySql => open_mysql(url, tables),
        SourceKind::MongoDb => open_mongodb(url, tables),
        SourceKind::SqlServer => open_mssql(url, tables),
        SourceKind::Convex => open_convex(url, options, tables),
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
fn not_compiled_in(kind: SourceKind, feature: &str) -> SourceError {
    SourceError::new(
        ErrorKind::Unsupported,
        format!("this build has no {} connector", kind.label()),
    )
    .with_hint(format!("rebuild the examples with `--features {feature}`"))
}

#[cfg(feature = "postgres")]
fn open_postgres(
    url: &str,
    options: &SourceOptions,
    tables: Vec<TableName>,
) -> Result<Box<dyn ChangeSource>, SourceError> {
    use powersync_source_postgres::{PgConfig, PostgresSource};
    let mut config = PgConfig::parse(url)?;
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
    Ok(Box::new(PostgresSource::new(config).with_tables(tables)))
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(
    _url: &str,
    _options: &SourceOptions,
    _tables: Vec<TableName>,
) -> Result<Box<dyn ChangeSource>, SourceError> {
    Err(not_compiled_in(SourceKind::Postgres, "postgres"))
}

#[cfg(feature = "mysql")]
fn open_mysql(url: &str, tables: Vec<TableName>) -> Result<Box<dyn ChangeSource>, SourceError> {
    use powersync_source_mysql::{MySqlConfig, MySqlSource};
    let config = MySqlConfig::parse(url)?;
    Ok(Box::new(MySqlSource::new(config).with_tables(tables)))
}

#[cfg(not(feature = "mysql"))]
fn open_mysql(_url: &str, _tables: Vec<TableName>) -> Result<Box<dyn ChangeSource>, SourceError> {
    Err(not_compiled_in(SourceKind::MySql, "mysql"))
}

#[cfg(feature = "mongodb")]
fn open_mongodb(url: &str, tables: Vec<TableName>) -> Result<Box<dyn ChangeSource>, SourceError> {
    use powersync_source_mongodb::{MongoConfig, MongoSource};
    let config = MongoConfig::parse(url)?;
    Ok(Box::new(MongoSource::new(config).with_tables(tables)))
}

#[cfg(not(feature = "mongodb"))]
fn open_mongodb(_url: &str, _tables: Vec<TableName>) -> Result<Box<dyn ChangeSource>, SourceError> {
    Err(not_compiled_in(SourceKind::MongoDb, "mongodb"))
}

#[cfg(feature = "mssql")]
fn open_mssql(url: &str, tables: Vec<TableName>) -> Result<Box<dyn ChangeSource>, SourceError> {
    use powersync_source_mssql::{MssqlConfig, MssqlSource};
    let config = MssqlConfig::parse(url)?;
    Ok(Box::new(MssqlSource::new(config).with_tables(tables)))
}

#[cfg(not(feature = "mssql"))]
fn open_mssql(_url: &str, _tables: Vec<TableName>) -> Result<Box<dyn ChangeSource>, SourceError> {
    Err(not_compiled_in(SourceKind::SqlServer, "mssql"))
}

#[cfg(feature = "convex")]
fn open_convex(
    url: &str,
    options: &SourceOptions,
    tables: Vec<TableName>,
) -> Result<Box<dyn ChangeSource>, SourceError> {
    use powersync_source_convex::{ConvexConfig, ConvexSource};
    let config = ConvexConfig::parse(url, options.deploy_key.as_deref())?;
    Ok(Box::new(ConvexSource::new(config).with_tables(tables)))
}

#[cfg(not(feature = "convex"))]
fn open_convex(
    _url: &str,
    _options: &SourceOptions,
    _tables: Vec<TableName>,
) -> Result<Box<dyn ChangeSource>, SourceError> {
    Err(not_compiled_in(SourceKind::Convex, "convex"))
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
        let options = SourceOptions {
            slot: Some("s".into()),
            ..SourceOptions::default()
        };
        let e = open_source("mysql://u:hunter2@h/db", &options).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.to_string().contains("hunter2"));
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
}
