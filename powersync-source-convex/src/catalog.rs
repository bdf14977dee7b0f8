//! What the stream knows about each table: its field types (from `/api/json_schemas`) and the
//! column list it has announced, which grows as documents bring new fields.
//!
//! Convex tables have no fixed columns: a document may carry any field, and `json_schemas`
//! describes the fields seen so far. A table's columns are `_id` (the key), `_creationTime`,
//! then the fields `json_schemas` listed (sorted), then fields first seen in documents, in the
//! order they appear. A new field makes a new [`TableSchema`] that the stream sends before the
//! first row using it; a field no document carries any more stays a column (null).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use powersync_source_core::{
    Column, OldImage, Op, Row, RowChange, RowIdentity, SourceError, TableName, TableSchema, Value,
};
use serde_json::{Map, Value as Json};

use crate::config::Int64Mode;
use crate::decode::{decode_json, decode_typed, Encoding, FieldType};

/// The schema name every Convex table is reported under (the default component).
pub const SCHEMA: &str = "convex";
/// The marker table of write checkpoints; never replicated as rows.
pub const CHECKPOINT_TABLE: &str = "powersync_checkpoints";

/// Field types per table, from `/api/json_schemas`.
pub(crate) type TypeMap = BTreeMap<String, BTreeMap<String, FieldType>>;

/// Reads the answer of `/api/json_schemas` (table → JSON Schema).
pub(crate) fn parse_json_schemas(map: &Map<String, Json>) -> TypeMap {
    map.iter()
        .map(|(table, schema)| {
            let fields = schema
                .get("properties")
                .and_then(Json::as_object)
                .map(|props| {
                    props
                        .iter()
                        .filter(|(name, _)| is_exported_field(name))
                        .map(|(name, s)| (name.clone(), FieldType::from_json_schema(s)))
                        .collect()
                })
                .unwrap_or_default();
            (table.clone(), fields)
        })
        .collect()
}

/// Fields prefixed by `_` other than `_id` and `_creationTime` are metadata (`_ts`, `_table`,
/// …) or reserved by Convex for future metadata; they are not columns.
pub(crate) fn is_exported_field(name: &str) -> bool {
    !name.starts_with('_') || name == "_id" || name == "_creationTime"
}

struct TableState {
    schema: Arc<TableSchema>,
    index: HashMap<String, usize>,
    types: Vec<FieldType>,
    announced: bool,
}

/// The tables of one stream.
pub(crate) struct Catalog {
    encoding: Encoding,
    int64: Int64Mode,
    types: TypeMap,
    tables: HashMap<String, TableState>,
}

impl Catalog {
    pub(crate) fn new(types: TypeMap, encoding: Encoding, int64: Int64Mode) -> Catalog {
        Catalog {
            encoding,
            int64,
            types,
            tables: HashMap::new(),
        }
    }

    pub(crate) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Table names `/api/json_schemas` reported last.
    pub(crate) fn known_tables(&self) -> impl Iterator<Item = &String> {
        self.types.keys()
    }

    /// Replaces the field types (after a fresh `/api/json_schemas`); tables whose known
    /// columns changed type are announced again.
    pub(crate) fn update_types(&mut self, types: TypeMap) {
        for (name, state) in self.tables.iter_mut() {
            let Some(fields) = types.get(name) else {
                continue;
            };
            for (field, i) in &state.index {
                // `Any` is "unknown" (json_schemas refused): it never replaces a known type.
                if let Some(t) = fields.get(field).filter(|t| **t != FieldType::Any) {
                    if state.types.get(*i) != Some(t) && *i > 1 {
                        state.types[*i] = t.clone();
                        state.announced = false;
                    }
                }
            }
            if !state.announced {
                state.schema = Arc::new(build_schema(
                    name,
                    &state.types,
                    &state.index,
                    self.encoding,
                ));
            }
        }
        self.types = types;
    }

    /// Forgets a table (deleted in the dashboard): if it comes back, its schema is announced
    /// again.
    pub(crate) fn forget(&mut self, table: &str) {
        self.tables.remove(table);
    }

    fn state(&mut self, table: &str) -> &mut TableState {
        let encoding = self.encoding;
        let types = &self.types;
        self.tables.entry(table.to_string()).or_insert_with(|| {
            let mut names = vec!["_id".to_string(), "_creationTime".to_string()];
            let mut tys = vec![FieldType::Id(table.to_string()), FieldType::Float64];
            if let Some(fields) = types.get(table) {
                for (name, t) in fields {
                    if name != "_id" && name != "_creationTime" {
                        names.push(name.clone());
                        tys.push(t.clone());
                    }
                }
            }
            let index: HashMap<String, usize> =
                names.into_iter().enumerate().map(|(i, n)| (n, i)).collect();
            TableState {
                schema: Arc::new(build_schema(table, &tys, &index, encoding)),
                index,
                types: tys,
                announced: false,
            }
        })
    }

    /// The table's current schema.
    pub(crate) fn schema(&mut self, table: &str) -> Arc<TableSchema> {
        self.state(table).schema.clone()
    }

    /// Whether `doc` has fields the `json` encoding cannot type yet (the caller refreshes
    /// `/api/json_schemas` first).
    pub(crate) fn has_untyped_fields(&self, table: &str, doc: &Map<String, Json>) -> bool {
        if self.encoding != Encoding::Json {
            return false;
        }
        let known = self.types.get(table);
        doc.keys().any(|k| {
            is_exported_field(k)
                && k != "_id"
                && k != "_creationTime"
                && !known.is_some_and(|f| f.contains_key(k))
                && !self
                    .tables
                    .get(table)
                    .is_some_and(|s| s.index.contains_key(k))
        })
    }

    /// Builds the row change for one exported document (`deleted`: a `_deleted` delta that
    /// carries only `_id`). Returns the schema to announce first when the table's columns are
    /// new or changed.
    pub(crate) fn row_change(
        &mut self,
        table: &str,
        doc: &Map<String, Json>,
        deleted: bool,
        snapshot: bool,
    ) -> Result<(RowChange, Option<Arc<TableSchema>>), SourceError> {
        let encoding = self.encoding;
        let int64 = self.int64;
        let json_types = self.types.get(table).cloned();
        let state = self.state(table);
        // New fields become columns (typed values say their type; `json` uses json_schemas).
        let mut grew = false;
        if !deleted {
            for (name, v) in doc {
                if !is_exported_field(name) || state.index.contains_key(name) {
                    continue;
                }
                let t = match encoding {
                    Encoding::Typed | Encoding::ExportJson => FieldType::of_typed_value(v),
                    Encoding::Json => json_types
                        .as_ref()
                        .and_then(|f| f.get(name).cloned())
                        .unwrap_or(FieldType::Any),
                };
                state.index.insert(name.clone(), state.types.len());
                state.types.push(t);
                grew = true;
            }
        }
        if grew {
            state.schema = Arc::new(build_schema(table, &state.types, &state.index, encoding));
            state.announced = false;
        }
        let announce = if state.announced {
            None
        } else {
            state.announced = true;
            Some(state.schema.clone())
        };
        let id = doc.get("_id").and_then(Json::as_str).ok_or_else(|| {
            SourceError::decode(format!("a document of table {table} has no `_id`"))
        })?;
        let schema = state.schema.clone();
        if deleted {
            let mut values = vec![Value::Unchanged; state.types.len()];
            values[0] = Value::Text(id.to_string());
            return Ok((
                RowChange {
                    op: Op::Delete,
                    table: schema,
                    old: Some(Row::new(values)),
                    old_image: OldImage::Key,
                    new: None,
                    snapshot,
                },
                announce,
            ));
        }
        let mut values = vec![Value::Null; state.types.len()];
        for (name, v) in doc {
            let Some(&i) = state.index.get(name) else {
                continue;
            };
            let t = &state.types[i];
            let decoded = match encoding {
                Encoding::Typed | Encoding::ExportJson => decode_typed(v, int64),
                Encoding::Json => decode_json(v, Some(t), int64),
            };
            values[i] = decoded.map_err(|why| {
                SourceError::decode_value(&format!("{SCHEMA}.{table}"), name, &t.name(), why)
            })?;
        }
        Ok((
            RowChange {
                op: if snapshot { Op::Insert } else { Op::Update },
                table: schema,
                old: None,
                old_image: OldImage::None,
                new: Some(Row::new(values)),
                snapshot,
            },
            announce,
        ))
    }
}

fn build_schema(
    table: &str,
    types: &[FieldType],
    index: &HashMap<String, usize>,
    encoding: Encoding,
) -> TableSchema {
    let mut names = vec![String::new(); types.len()];
    for (name, &i) in index {
        if let Some(slot) = names.get_mut(i) {
            *slot = name.clone();
        }
    }
    let columns = names
        .into_iter()
        .zip(types)
        .enumerate()
        .map(|(i, (name, t))| {
            let mut c = Column::new(name, format!("{} ({})", t.name(), encoding.label()));
            if i == 0 {
                c = c.key();
                c.nullable = Some(false);
            }
            c
        })
        .collect();
    TableSchema {
        name: TableName::new(SCHEMA, table),
        source_id: None,
        columns,
        identity: RowIdentity::PrimaryKey,
    }
}
