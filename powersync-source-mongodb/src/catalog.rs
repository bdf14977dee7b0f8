//! The collections of the database and their change-stream settings.

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Database;
use powersync_source_core::{Result, TableName};

use crate::driver_error::driver_error;
use crate::server_info::CHECKPOINTS_COLLECTION;

/// One collection as `listCollections` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionInfo {
    /// Collection name.
    pub name: String,
    /// Whether `changeStreamPreAndPostImages` is enabled.
    pub images: bool,
}

/// Which collections a source replicates.
#[derive(Debug, Clone)]
pub struct Selection {
    database: String,
    /// Empty = every collection of the database.
    names: Vec<String>,
}

impl Selection {
    /// The selection for `tables` (empty = all) within `database`. Tables of other databases
    /// are not part of it (see [`Selection::foreign`]).
    pub fn new(database: &str, tables: &[TableName]) -> Selection {
        let mut names: Vec<String> = tables
            .iter()
            .filter(|t| t.schema.is_empty() || t.schema == database)
            .map(|t| t.name.clone())
            .collect();
        names.sort();
        names.dedup();
        Selection {
            database: database.to_owned(),
            names,
        }
    }

    /// Tables naming another database than the URL's.
    pub fn foreign<'a>(database: &str, tables: &'a [TableName]) -> Vec<&'a TableName> {
        tables
            .iter()
            .filter(|t| !t.schema.is_empty() && t.schema != database)
            .collect()
    }

    /// The database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The explicit collection names (empty = all).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether `db.coll` is replicated.
    pub fn contains(&self, db: &str, coll: &str) -> bool {
        db == self.database
            && !is_internal(coll)
            && (self.names.is_empty() || self.names.iter().any(|n| n == coll))
    }

    /// The qualified table name of a collection.
    pub fn table(&self, coll: &str) -> TableName {
        TableName::new(self.database.clone(), coll)
    }
}

/// `system.*` collections and the checkpoint collection are never replicated.
pub fn is_internal(coll: &str) -> bool {
    coll.starts_with("system.") || coll == CHECKPOINTS_COLLECTION
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
