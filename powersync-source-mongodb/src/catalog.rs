//! The databases and collections a source replicates, and their change-stream settings.

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Database;
use powersync_source_core::{Result, SourceError, TableName};

use crate::driver_error::driver_error;
use crate::server_info::{CHECKPOINTS_COLLECTION, SIGNALS_COLLECTION};

/// One collection as `listCollections` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionInfo {
    /// Collection name.
    pub name: String,
    /// Whether `changeStreamPreAndPostImages` is enabled.
    pub images: bool,
}

/// Which collections of which databases a source replicates, and where its checkpoint
/// collection lives.
///
/// One database is read through a database-level change stream; more than one (the
/// checkpoint database included) through one cluster-level stream (`allChangesForCluster`),
/// so every database's changes arrive in one order under one checkpoint.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The selected databases in the order they were named, each with its explicit
    /// collection names (empty = every collection of that database).
    databases: Vec<(String, Vec<String>)>,
    /// The database holding `_powersync_checkpoints`.
    checkpoint_database: String,
}

impl Selection {
    /// The selection for `tables` (empty = all) within `database` alone. Tables of other
    /// databases are not part of it (see [`Selection::foreign`]).
    pub fn new(database: &str, tables: &[TableName]) -> Selection {
        let mut names: Vec<String> = tables
            .iter()
            .filter(|t| t.schema.is_empty() || t.schema == database)
            .map(|t| t.name.clone())
            .collect();
        names.sort();
        names.dedup();
        Selection {
            databases: vec![(database.to_owned(), names)],
            checkpoint_database: database.to_owned(),
        }
    }

    /// The selection a source's settings describe:
    /// - `url_database`: the URL path (may be empty); it qualifies table names without a
    ///   database, and is replicated whole when no table is named.
    /// - `databases`: the URL's `databases=` list; replicated whole when no table is named,
    ///   and (when it holds exactly one database and the URL names none) the database of
    ///   unqualified table names.
    /// - `tables`: when not empty, exactly these collections are replicated (`db.collection`,
    ///   or `collection` in the default database).
    /// - `checkpoint_database`: where `_powersync_checkpoints` lives; default: the URL's
    ///   database when it is selected, else the first selected database.
    ///
    /// Errors ([`ErrorKind::Config`](powersync_source_core::ErrorKind)) when nothing names a
    /// database, or a table without a database has no default one.
    pub fn resolve(
        url_database: &str,
        databases: &[String],
        tables: &[TableName],
        checkpoint_database: Option<&str>,
    ) -> Result<Selection> {
        let default_db = if !url_database.is_empty() {
            Some(url_database)
        } else if databases.len() == 1 {
            Some(databases[0].as_str())
        } else {
            None
        };
        let mut selected: Vec<(String, Vec<String>)> = Vec::new();
        let mut add = |db: &str, coll: Option<&str>| {
            let at = match selected.iter().position(|(d, _)| d == db) {
                Some(at) => at,
                None => {
                    selected.push((db.to_owned(), Vec::new()));
                    selected.len() - 1
                }
            };
            if let Some(coll) = coll {
                selected[at].1.push(coll.to_owned());
            }
        };
        if tables.is_empty() {
            if !url_database.is_empty() {
                add(url_database, None);
            }
            for db in databases {
                add(db, None);
            }
        } else {
            for t in tables {
                let db = if t.schema.is_empty() {
                    default_db.ok_or_else(|| {
                        SourceError::config(format!(
                            "table `{}` names no database, and the URL names no single default one",
                            t.name
                        ))
                        .with_hint(
                            "write it as database.collection, or put the database in the URL path",
                        )
                    })?
                } else {
                    t.schema.as_str()
                };
                validate_database_name(db)?;
                add(db, Some(&t.name));
            }
        }
        if selected.is_empty() {
            return Err(SourceError::config(
                "no database to replicate: the URL path, `databases=` or the table names must name one",
            )
            .with_hint("e.g. mongodb://host/app, mongodb://host/?databases=app,billing, or --table app.orders"));
        }
        for (_, names) in &mut selected {
            names.sort();
            names.dedup();
        }
        let checkpoint_database = match checkpoint_database {
            Some(db) => {
                validate_database_name(db)?;
                db.to_owned()
            }
            None if selected.iter().any(|(d, _)| d == url_database) => url_database.to_owned(),
            None => selected[0].0.clone(),
        };
        Ok(Selection {
            databases: selected,
            checkpoint_database,
        })
    }

    /// Tables naming another database than `database`.
    pub fn foreign<'a>(database: &str, tables: &'a [TableName]) -> Vec<&'a TableName> {
        tables
            .iter()
            .filter(|t| !t.schema.is_empty() && t.schema != database)
            .collect()
    }

    /// The first selected database (the only one, for a single-database source).
    pub fn database(&self) -> &str {
        &self.databases[0].0
    }

    /// The selected databases, in the order they were named.
    pub fn databases(&self) -> impl Iterator<Item = &str> {
        self.databases.iter().map(|(d, _)| d.as_str())
    }

    /// The database holding `_powersync_checkpoints`.
    pub fn checkpoint_database(&self) -> &str {
        &self.checkpoint_database
    }

    /// Whether the source needs a cluster-level change stream: more than one database is
    /// involved (the checkpoint database counts).
    pub fn is_cluster(&self) -> bool {
        self.databases.len() > 1 || self.checkpoint_database != self.databases[0].0
    }

    /// The explicit collection names of the first database (empty = all).
    pub fn names(&self) -> &[String] {
        &self.databases[0].1
    }

    /// The explicit collection names of `db` (empty = all, `None` = not selected).
    pub fn names_in(&self, db: &str) -> Option<&[String]> {
        self.databases
            .iter()
            .find(|(d, _)| d == db)
            .map(|(_, n)| n.as_slice())
    }

    /// Whether `db.coll` is replicated.
    pub fn contains(&self, db: &str, coll: &str) -> bool {
        !is_internal(coll)
            && self
                .names_in(db)
                .is_some_and(|names| names.is_empty() || names.iter().any(|n| n == coll))
    }

    /// The qualified table name of a collection.
    pub fn table(&self, db: &str, coll: &str) -> TableName {
        TableName::new(db, coll)
    }
}

/// Refuses names MongoDB does not allow for a database (they would reach the server as
/// something else, or not at all).
pub(crate) fn validate_database_name(database: &str) -> Result<()> {
    if database.is_empty() || database.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
        return Err(SourceError::config(format!(
            "`{database}` is not a valid MongoDB database name"
        )));
    }
    Ok(())
}

/// `system.*` collections, the checkpoint collection and the backfill signal collection are
/// never replicated as tables.
pub fn is_internal(coll: &str) -> bool {
    coll.starts_with("system.") || coll == CHECKPOINTS_COLLECTION || coll == SIGNALS_COLLECTION
}

/// Every plain collection of the database (views and time-series excluded), by name.
pub async fn list_collections(db: &Database) -> Result<Vec<CollectionInfo>> {
    let context = || format!("listing the collections of {}", db.name());
    let mut cursor = db
        .run_cursor_command(doc! {"listCollections": 1, "filter": {"type": "collection"}})
        .await
        .map_err(|e| driver_error(context(), e))?;
    let mut out = Vec::new();
    while let Some(spec) = cursor
        .try_next()
        .await
        .map_err(|e| driver_error(context(), e))?
    {
        out.push(collection_info(&spec));
    }
    out.retain(|c| !c.name.is_empty());
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Reads one `listCollections` entry.
pub fn collection_info(spec: &Document) -> CollectionInfo {
    let images = spec
        .get_document("options")
        .ok()
        .and_then(|o| o.get_document("changeStreamPreAndPostImages").ok())
        .and_then(|c| c.get_bool("enabled").ok())
        .unwrap_or(false);
    CollectionInfo {
        name: spec.get_str("name").unwrap_or_default().to_owned(),
        images,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(db: &str, coll: &str) -> TableName {
        TableName::new(db, coll)
    }

    #[test]
    fn one_database_is_a_database_stream() {
        let s = Selection::resolve("app", &[], &[t("", "a"), t("app", "b")], None).unwrap();
        assert!(!s.is_cluster());
        assert_eq!(s.names(), ["a", "b"]);
        assert_eq!(s.checkpoint_database(), "app");
        assert!(s.contains("app", "a") && !s.contains("app", "c") && !s.contains("x", "a"));
        // The whole database, but never the internal collections.
        let s = Selection::resolve("app", &[], &[], None).unwrap();
        assert!(s.contains("app", "c") && !s.contains("app", CHECKPOINTS_COLLECTION));
        assert!(!s.contains("app", "system.views"));
    }

    #[test]
    fn several_databases_are_a_cluster_stream() {
        let s =
            Selection::resolve("", &[], &[t("shop", "orders"), t("billing", "x")], None).unwrap();
        assert!(s.is_cluster());
        assert_eq!(s.databases().collect::<Vec<_>>(), ["shop", "billing"]);
        assert_eq!(s.checkpoint_database(), "shop");
        assert!(s.contains("billing", "x") && !s.contains("billing", "orders"));

        // The URL's database keeps the markers when it is selected; whole databases by list.
        let s = Selection::resolve("app", &["billing".into()], &[], None).unwrap();
        assert_eq!(s.databases().collect::<Vec<_>>(), ["app", "billing"]);
        assert_eq!(s.checkpoint_database(), "app");
        assert!(s.contains("billing", "anything"));

        // Markers elsewhere make even one database a cluster stream.
        let s = Selection::resolve("app", &[], &[], Some("ops")).unwrap();
        assert!(s.is_cluster());
        assert_eq!(s.checkpoint_database(), "ops");

        // A single `databases=` entry is the default database of bare names.
        let s = Selection::resolve("", &["shop".into()], &[t("", "orders")], None).unwrap();
        assert!(!s.is_cluster() && s.contains("shop", "orders"));
    }

    #[test]
    fn nothing_named_or_no_default_is_a_config_error() {
        for (url_db, dbs, tables) in [
            ("", vec![], vec![]),
            ("", vec!["a".to_string(), "b".into()], vec![t("", "x")]),
            ("", vec![], vec![t("a.b", "x")]),
        ] {
            let e = Selection::resolve(url_db, &dbs, &tables, None).unwrap_err();
            assert_eq!(e.kind(), powersync_source_core::ErrorKind::Config, "{e}");
        }
    }
}
