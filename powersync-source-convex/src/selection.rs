//! Which tables a source replicates.

use std::collections::BTreeSet;

use powersync_source_core::{SourceError, TableName};

use crate::catalog::{CHECKPOINT_TABLE, SCHEMA};

/// The selected tables of the default component: named ones, or every table except the
/// checkpoint marker table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selection {
    tables: Option<Vec<String>>,
}

impl Selection {
    /// From the host's table list (empty = every table). A schema other than `convex` is
    /// refused: only the default component is supported.
    pub(crate) fn new(tables: &[TableName]) -> Result<Selection, SourceError> {
        if tables.is_empty() {
            return Ok(Selection { tables: None });
        }
        let mut names = Vec::new();
        for t in tables {
            if t.schema != SCHEMA {
                return Err(unsupported_schema(t));
            }
            if t.name == CHECKPOINT_TABLE {
                return Err(SourceError::config(format!(
                    "{t} holds write-checkpoint markers and cannot be replicated"
                )));
            }
            if !names.contains(&t.name) {
                names.push(t.name.clone());
            }
        }
        Ok(Selection {
            tables: Some(names),
        })
    }

    /// Whether rows of `table` are replicated.
    pub(crate) fn includes(&self, table: &str) -> bool {
        table != CHECKPOINT_TABLE
            && self
                .tables
                .as_ref()
                .is_none_or(|t| t.iter().any(|n| n == table))
    }

    /// The Data Sync API `selection` of these tables in the root component, plus the marker
    /// table (so write-checkpoint markers are observed); other components are excluded.
    pub(crate) fn data_sync_selection(&self) -> serde_json::Value {
        use serde_json::json;
        let mut root = serde_json::Map::new();
        match &self.tables {
            None => {
                root.insert("_other".into(), json!("included"));
            }
            Some(tables) => {
                root.insert("_other".into(), json!("excluded"));
                for t in tables.iter().map(String::as_str).chain([CHECKPOINT_TABLE]) {
                    root.insert(t.into(), json!({ "_other": "included" }));
                }
            }
        }
        json!({ "_other": "excluded", "": root })
    }

    /// The tables to snapshot, given the tables the deployment has.
    pub(crate) fn snapshot_tables<'a>(
        &self,
        known: impl Iterator<Item = &'a String>,
    ) -> Vec<String> {
        match &self.tables {
            Some(t) => t.clone(),
            None => known
                .filter(|t| self.includes(t))
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        }
    }
}

pub(crate) fn unsupported_schema(t: &TableName) -> SourceError {
    SourceError::unsupported(format!(
        "table {t}: only the default Convex component is supported, under schema `{SCHEMA}` (e.g. {SCHEMA}.{})",
        t.name
    ))
    .with_hint("tables of other Convex components cannot be replicated yet")
}
