//! The in-memory deployment behind [`super::FakeConvex`]: versioned documents and a commit
//! log (the HTTP semantics over them are in `export_api`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Map, Value as Json};

/// One committed document version (`None`: deleted).
#[derive(Clone)]
pub(super) struct Version {
    pub(super) ts: i64,
    pub(super) doc: Option<Arc<Map<String, Json>>>,
}

pub(super) struct Table {
    pub(super) number: u32,
    /// The component path: `""` for the root (app) component.
    pub(super) component: String,
    pub(super) name: String,
    /// `_id` → versions in timestamp order.
    pub(super) docs: BTreeMap<String, Vec<Version>>,
    pub(super) deleted: bool,
}

impl Table {
    /// A system table (`_scheduled_functions`, …): never exported, but its writes are in the
    /// log that `document_deltas` reads.
    pub(super) fn system(&self) -> bool {
        self.name.starts_with('_')
    }
}

pub(super) struct LogEntry {
    pub(super) ts: i64,
    pub(super) table: u32,
    pub(super) id: String,
}

/// An HTTP answer: status and JSON body.
pub(crate) type Answer = (u16, Json);

pub(crate) struct Store {
    pub deploy_key: String,
    pub read_only_key: Option<String>,
    pub typed_format: bool,
    pub mutation: super::CheckpointMutation,
    pub snapshot_page: usize,
    pub deltas_page: usize,
    pub failures: VecDeque<u16>,
    pub canned: Vec<(String, Answer)>,
    pub requests: u64,
    /// Requests per path.
    pub requests_by_path: std::collections::BTreeMap<String, u64>,
    /// Whether `/api/v1/data/sync` is served (older deployments answer 404).
    pub data_sync: bool,
    /// Whether a Data Sync walk lets the log catch up between its pages (the server's
    /// `by_id_freshness` exceeded) rather than walking at one timestamp.
    pub data_sync_interleave: bool,
    pub(super) next_sync: u64,
    pub snapshot_page_delay: std::time::Duration,
    /// The one cached `list_snapshot` iterator: (snapshot, table selected, cursor it resumes at).
    pub(super) snapshot_iterator: Option<(i64, Option<String>, String)>,
    pub snapshot_iterator_restarts: u64,
    pub(super) tables: Vec<Table>,
    pub(super) log: Vec<LogEntry>,
    last_ts: i64,
    /// Highest timestamp handed out as a cursor or snapshot: later commits go after it.
    high_water: i64,
    /// History before this timestamp is gone (retention).
    pub(super) retention_floor: i64,
    next_number: u32,
    /// The component `commit`, `create_table` and `table_index` work in (root: `""`).
    writing_in: String,
    next_id: u64,
}

pub(super) fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(super) fn error(status: u16, code: &str, message: &str) -> Answer {
    (status, json!({ "code": code, "message": message }))
}

/// One write of a transaction.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert a document (fields in the typed encoding); the id is chosen by the store.
    Insert {
        /// Table, created when missing.
        table: String,
        /// Fields.
        fields: Map<String, Json>,
    },
    /// Set fields (a `Json::Null` value removes the field, like `undefined` in a Convex patch).
    Patch {
        /// Table.
        table: String,
        /// Document id.
        id: String,
        /// Fields to set or remove.
        fields: Map<String, Json>,
    },
    /// Delete a document.
    Delete {
        /// Table.
        table: String,
        /// Document id.
        id: String,
    },
}

impl Store {
    pub(crate) fn new(deploy_key: String) -> Store {
        let mut store = Store {
            deploy_key,
            read_only_key: None,
            typed_format: true,
            mutation: super::CheckpointMutation::Crate,
            snapshot_page: 100,
            deltas_page: 128,
            failures: VecDeque::new(),
            canned: Vec::new(),
            requests: 0,
            requests_by_path: Default::default(),
            data_sync: true,
            data_sync_interleave: false,
            next_sync: 0,
            snapshot_page_delay: std::time::Duration::ZERO,
            snapshot_iterator: None,
            snapshot_iterator_restarts: 0,
            tables: Vec::new(),
            log: Vec::new(),
            last_ts: now_nanos(),
            high_water: 0,
            retention_floor: 0,
            next_number: 10001,
            writing_in: String::new(),
            next_id: 1,
        };
        store.create_table(crate::CHECKPOINT_TABLE);
        store
    }

    fn next_ts(&mut self) -> i64 {
        let ts = now_nanos().max(self.last_ts + 1).max(self.high_water + 1);
        self.last_ts = ts;
        ts
    }

    /// The timestamp reads are served at.
    pub(super) fn read_ts(&mut self) -> i64 {
        let ts = self.last_ts.max(self.high_water);
        self.high_water = ts;
        ts
    }

    fn table_index(&self, name: &str) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.component == self.writing_in && t.name == name && !t.deleted)
    }

    pub(crate) fn create_table(&mut self, name: &str) -> usize {
        if let Some(i) = self.table_index(name) {
            return i;
        }
        self.tables.push(Table {
            number: self.next_number,
            component: self.writing_in.clone(),
            name: name.to_string(),
            docs: BTreeMap::new(),
            deleted: false,
        });
        self.next_number += 1;
        self.tables.len() - 1
    }

    /// Deletes a table as the dashboard does: no deltas.
    pub(crate) fn delete_table(&mut self, name: &str) -> bool {
        match self.table_index(name) {
            Some(i) => {
                self.tables[i].deleted = true;
                true
            }
            None => false,
        }
    }

    /// Replaces a table's contents as `npx convex import --replace` or streaming import's
    /// `replace_tables` / `clear_tables` do (`crates/application/src/snapshot_import`): the
    /// documents go into a new tablet under the same name and table number, which then
    /// replaces the old one. The old tablet's documents vanish without delete deltas (its
    /// tablet is no longer in the table mapping `document_deltas` reads with,
    /// `Database::document_deltas` in `crates/database/src/database.rs`); the new documents
    /// are ordinary writes of the new tablet.
    pub(crate) fn replace_table(
        &mut self,
        name: &str,
        docs: Vec<Map<String, Json>>,
    ) -> Result<Vec<String>, String> {
        let number = match self.table_index(name) {
            Some(i) => {
                self.tables[i].deleted = true;
                self.tables[i].number
            }
            None => return Err(format!("no table {name}")),
        };
        self.tables.push(Table {
            number,
            component: String::new(),
            name: name.to_string(),
            docs: BTreeMap::new(),
            deleted: false,
        });
        let writes = docs
            .into_iter()
            .map(|fields| Write::Insert {
                table: name.to_string(),
                fields,
            })
            .collect();
        self.commit(writes).map(|(ids, _)| ids)
    }

    /// The number of documents of a root table at `ts` (`_system/frontend/tableSize`).
    pub(crate) fn table_size_at(&self, name: &str, ts: i64) -> usize {
        self.tables
            .iter()
            .filter(|t| t.component.is_empty() && t.name == name && !t.deleted)
            .flat_map(|t| t.docs.values())
            .filter(|versions| {
                versions
                    .iter()
                    .rev()
                    .find(|v| v.ts <= ts)
                    .is_some_and(|v| v.doc.is_some())
            })
            .count()
    }

    /// Commits `n` writes to the system table `_scheduled_functions`, each its own
    /// transaction, as scheduling functions does.
    pub(crate) fn system_writes(&mut self, n: usize) {
        for _ in 0..n {
            let mut fields = Map::new();
            fields.insert("name".into(), json!("jobs:run"));
            let _ = self.commit(vec![Write::Insert {
                table: "_scheduled_functions".into(),
                fields,
            }]);
        }
    }

    pub(crate) fn expire_history(&mut self) {
        let ts = self.next_ts();
        self.retention_floor = ts;
    }

    pub(super) fn current<'a>(table: &'a Table, id: &str) -> Option<&'a Arc<Map<String, Json>>> {
        table
            .docs
            .get(id)
            .and_then(|v| v.last())
            .and_then(|v| v.doc.as_ref())
    }

    /// Commits writes at one timestamp; returns the ids written and the timestamp.
    /// Commits writes to the tables of `component` (`""`: the root) at one timestamp.
    pub(crate) fn commit_in(
        &mut self,
        component: &str,
        writes: Vec<Write>,
    ) -> Result<(Vec<String>, i64), String> {
        self.writing_in = component.to_string();
        let result = self.commit(writes);
        self.writing_in.clear();
        result
    }

    pub(crate) fn commit(&mut self, writes: Vec<Write>) -> Result<(Vec<String>, i64), String> {
        let ts = self.next_ts();
        let mut ids = Vec::new();
        for w in writes {
            let (table_name, id, doc) = match w {
                Write::Insert { table, fields } => {
                    let i = self.create_table(&table);
                    let t = &self.tables[i];
                    let id = format!("{}k{:012}", t.number, self.next_id);
                    self.next_id += 1;
                    let mut doc = fields;
                    // A given `_creationTime` is kept, as `npx convex import` keeps it.
                    let created = doc
                        .get("_creationTime")
                        .filter(|v| v.is_number())
                        .cloned()
                        .unwrap_or_else(|| json!((ts / 1000) as f64 / 1000.0));
                    doc.retain(|k, _| !k.starts_with('_'));
                    doc.insert("_id".into(), Json::String(id.clone()));
                    doc.insert("_creationTime".into(), created);
                    (table, id, Some(doc))
                }
                Write::Patch { table, id, fields } => {
                    let i = self
                        .table_index(&table)
                        .ok_or(format!("no table {table}"))?;
                    let mut doc = Self::current(&self.tables[i], &id)
                        .ok_or(format!("no document {id}"))?
                        .as_ref()
                        .clone();
                    for (k, v) in fields {
                        if k.starts_with('_') {
                            continue;
                        }
                        if v.is_null() {
                            doc.remove(&k);
                        } else {
                            doc.insert(k, v);
                        }
                    }
                    (table, id, Some(doc))
                }
                Write::Delete { table, id } => {
                    let i = self
                        .table_index(&table)
                        .ok_or(format!("no table {table}"))?;
                    Self::current(&self.tables[i], &id).ok_or(format!("no document {id}"))?;
                    (table, id, None)
                }
            };
            let i = self.create_table(&table_name);
            let t = &mut self.tables[i];
            let versions = t.docs.entry(id.clone()).or_default();
            let doc = doc.map(Arc::new);
            // Several writes of one transaction to one document leave one version.
            match versions.last_mut() {
                Some(last) if last.ts == ts => last.doc = doc,
                _ => {
                    versions.push(Version { ts, doc });
                    self.log.push(LogEntry {
                        ts,
                        table: t.number,
                        id: id.clone(),
                    });
                }
            }
            ids.push(id);
        }
        Ok((ids, ts))
    }

    /// The current documents of a table, in id order (typed encoding).
    pub(crate) fn documents(&self, table: &str) -> Vec<Map<String, Json>> {
        let Some(i) = self.table_index(table) else {
            return Vec::new();
        };
        let t = &self.tables[i];
        t.docs
            .keys()
            .filter_map(|id| Self::current(t, id).map(|d| d.as_ref().clone()))
            .collect()
    }
}
