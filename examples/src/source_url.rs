//! Picks a connector by the URL's scheme.
//!
//! | scheme | source |
//! |---|---|
//! | `postgres://`, `postgresql://` | PostgreSQL (feature `postgres`) |
//! | `mysql://`, `mariadb://` | MySQL / MariaDB (not available yet) |
//! | `mongodb://`, `mongodb+srv://` | MongoDB (not available yet) |
//! | `sqlserver://` | SQL Server (not available yet) |
//! | `convex+https://`, or `https://` with `--deploy-key` | Convex (not available yet) |
//!
//! A connector that is not available gives an [`ErrorKind::Unsupported`] error saying so
//! (exit status 2 in the binaries). URLs are never echoed back: they may hold passwords.

use powersync_source_core::{ChangeSource, ErrorKind, SourceError, TableName};

/// Source options from the command line.
#[derive(Debug, Clone, Default)]
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

    /// The default schema for `--table NAME` without a dot.
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
        "convex+https" => SourceKind::Convex,
        "https" if deploy_key.is_some() => SourceKind::Convex,
        "https" => {
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
            if name.name.is_empty() || name.schema.is_empty() {
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
    if kind != SourceKind::Postgres {
        if options.publication.is_some() || options.slot.is_some() {
            // Still say first that the connector is missing: that is the real problem.
            tracing::debug!("--publication/--slot only apply to PostgreSQL");
        }
        return Err(unavailable(kind));
    }
    open_postgres(url, options, kind)
}

fn unavailable(kind: SourceKind) -> SourceError {
    SourceError::new(
        ErrorKind::Unsupported,
        format!("the {} connector is not available yet", kind.label()),
    )
    .with_hint("this build can replicate from PostgreSQL (postgres:// URLs) only")
}

#[cfg(feature = "postgres")]
fn open_postgres(
    url: &str,
    options: &SourceOptions,
    kind: SourceKind,
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
    let tables = table_names(kind, &options.tables)?;
    Ok(Box::new(PostgresSource::new(config).with_tables(tables)))
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(
    _url: &str,
    _options: &SourceOptions,
    _kind: SourceKind,
) -> Result<Box<dyn ChangeSource>, SourceError> {
    Err(SourceError::new(
        ErrorKind::Unsupported,
        "this build has no PostgreSQL connector",
    )
    .with_hint("rebuild the examples with `--features postgres`"))
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
    fn unavailable_connectors_are_unsupported() {
        for url in [
            "mysql://h/db",
            "mongodb://h",
            "sqlserver://h",
            "convex+https://x",
        ] {
            let e = open_source(url, &SourceOptions::default()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{url}");
            assert!(e.to_string().contains("not available yet"));
        }
    }

    #[test]
    fn tables() {
        let t = table_names(SourceKind::Postgres, &["a".into(), "s.b".into()]).unwrap();
        assert_eq!(
            t,
            vec![TableName::new("public", "a"), TableName::new("s", "b")]
        );
        assert!(table_names(SourceKind::MySql, &["a".into()]).is_err());
    }
}
