//! The streaming export API of the fake deployment: `json_schemas`, `list_snapshot`,
//! `document_deltas`, `mutation` and deploy-key auth, as Convex's backend answers them.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Map, Value as Json};

use super::store::{error, now_nanos, Answer, Store, Table, Version, Write};
use super::CheckpointMutation;

/// Who calls, by the deploy key the request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// No `Authorization` header.
    Anonymous,
    /// The deploy key: every operation.
    Admin,
    /// A read-only key: reads (`ViewData`), no internal functions, no writes.
    ReadOnly,
}

impl Store {
    /// Who the `Authorization` header names. `Convex <key>`, the prefix in any case
    /// (`crates/authentication`). A header naming no key of this deployment is refused with
    /// 401 `BadAdminKey` ("The provided admin key was invalid for this instance",
    /// `application_auth.rs`); no header is an unknown identity, resolved per endpoint.
    pub(crate) fn identify(&self, header: Option<&str>) -> Result<Caller, Answer> {
        let Some(header) = header else {
            return Ok(Caller::Anonymous);
        };
        let key = header
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("convex "))
            .map(|_| &header[7..]);
        match key {
            Some(k) if k == self.deploy_key => Ok(Caller::Admin),
            Some(k) if self.read_only_key.as_deref() == Some(k) => Ok(Caller::ReadOnly),
            _ => Err(error(
                401,
                "BadAdminKey",
                "The provided admin key was invalid for this instance",
            )),
        }
    }

    /// The streaming export endpoints need `ViewData`, which every admin key has, read-only
    /// ones included; an unknown identity gets 403 `BadDeployKey`
    /// (`bad_admin_key_error` in `crates/keybroker/src/operations.rs`, reached through
    /// `require_operation` in `crates/roles/src/eval.rs`).
    pub(crate) fn require_view_data(caller: Caller) -> Result<(), Answer> {
        match caller {
            Caller::Admin | Caller::ReadOnly => Ok(()),
            Caller::Anonymous => Err(error(
                403,
                "BadDeployKey",
                "The provided deploy key was invalid for this deployment. Double check that the environment this key was generated for matches the desired deployment.",
            )),
        }
    }

    fn format(&self, q: &BTreeMap<String, String>) -> Result<bool, Answer> {
        match q.get("format").map(String::as_str) {
            None | Some("json") | Some("convex_clean_json") => Ok(false),
            Some("convex_encoded_json") | Some("convex_json") if self.typed_format => Ok(true),
            Some(other) => Err(error(
                400,
                "BadFormat",
                &format!("format param must be one of [`json`]. Got {other}"),
            )),
        }
    }

    /// `GET /api/get_table_column_names` (`get_table_column_names` in
    /// `crates/local_backend/src/streaming_export.rs`): per component path, each table's
    /// top-level fields from its shape; a table whose shape is not an object lists only
    /// `_creationTime` and `_id`. It never fails because of a shape.
    pub(crate) fn table_column_names(&mut self) -> Answer {
        let mut by_component: BTreeMap<String, Vec<Json>> = BTreeMap::new();
        for t in self.tables.iter().filter(|t| !t.deleted && !t.system()) {
            let columns: Vec<String> = if is_record_shaped(t) {
                vec!["_creationTime".into(), "_id".into()]
            } else {
                let mut fields = std::collections::BTreeSet::new();
                for id in t.docs.keys() {
                    if let Some(d) = Self::current(t, id) {
                        fields.extend(d.keys().cloned());
                    }
                }
                if fields.is_empty() {
                    fields.extend(["_creationTime".to_string(), "_id".to_string()]);
                }
                fields.into_iter().collect()
            };
            by_component
                .entry(t.component.clone())
                .or_default()
                .push(json!({ "name": t.name, "columns": columns }));
        }
        (200, json!({ "byComponent": by_component }))
    }

    pub(crate) fn json_schemas(&mut self, q: &BTreeMap<String, String>) -> Answer {
        let typed = match self.format(q) {
            Ok(t) => t,
            Err(a) => return a,
        };
        // A table whose shape is not an object needs a schema.ts definition; the fake has no
        // schema.ts, so one such table fails the whole call, as `json_schema_from_active_schema`
        // in `crates/local_backend/src/streaming_export.rs` does.
        if self
            .tables
            .iter()
            .any(|t| !t.deleted && is_record_shaped(t))
        {
            return error(
                400,
                "NoSchemaForExport",
                "There is no active schema, which is needed for streaming export.",
            );
        }
        // Without `byComponent=true` every component's tables go into one map, the root's
        // first (`ComponentId::Root` sorts first), so a child's table replaces a root table of
        // the same name; with it, one map per component path (`json_schemas` in
        // `crates/local_backend/src/streaming_export.rs`).
        let by_component = q.get("byComponent").is_some_and(|v| v == "true");
        let mut tables: Vec<&Table> = self
            .tables
            .iter()
            .filter(|t| !t.deleted && !t.system())
            .collect();
        tables.sort_by_key(|t| !t.component.is_empty());
        let mut out = Map::new();
        for t in tables {
            let out = if by_component {
                match out
                    .entry(t.component.clone())
                    .or_insert_with(|| Json::Object(Map::new()))
                {
                    Json::Object(m) => m,
                    _ => continue,
                }
            } else {
                &mut out
            };
            let docs: Vec<&Arc<Map<String, Json>>> = t
                .docs
                .keys()
                .filter_map(|id| Self::current(t, id))
                .collect();
            let mut fields: BTreeMap<String, (Vec<Json>, usize)> = BTreeMap::new();
            for d in &docs {
                for (k, v) in d.iter() {
                    let e = fields.entry(k.clone()).or_insert((Vec::new(), 0));
                    let s = value_schema(v, typed);
                    if !e.0.contains(&s) {
                        e.0.push(s);
                    }
                    e.1 += 1;
                }
            }
            let mut props = Map::new();
            let mut required = Vec::new();
            props.insert(
                "_id".into(),
                json!({"$description": format!("Id({})", t.name), "type": "string"}),
            );
            props.insert("_creationTime".into(), json!({"type": "number"}));
            for (k, (schemas, count)) in fields {
                if k == "_id" || k == "_creationTime" {
                    continue;
                }
                let schema = if schemas.len() == 1 {
                    schemas.into_iter().next().unwrap_or(Json::Null)
                } else {
                    json!({ "anyOf": schemas })
                };
                props.insert(k.clone(), schema);
                if count == docs.len() {
                    required.push(Json::String(k));
                }
            }
            required.push(json!("_creationTime"));
            required.push(json!("_id"));
            out.insert(
                t.name.clone(),
                json!({
                    "type": "object",
                    "properties": props,
                    "additionalProperties": false,
                    "required": required,
                    "$schema": "http://json-schema.org/draft-07/schema#",
                }),
            );
        }
        (200, Json::Object(out))
    }

    pub(crate) fn list_snapshot(&mut self, q: &BTreeMap<String, String>) -> Answer {
        let typed = match self.format(q) {
            Ok(t) => t,
            Err(a) => return a,
        };
        let now = self.read_ts();
        let snapshot = match q.get("snapshot") {
            None => now,
            Some(s) => match s.parse::<i64>() {
                Ok(s) if s > now => {
                    return error(
                        400,
                        "SnapshotTooNew",
                        &format!("Snapshot value {s} is in the future."),
                    )
                }
                Ok(s) if s < self.retention_floor => {
                    return error(
                        400,
                        "SnapshotTooOld",
                        &format!("Snapshot value {s} is too far in the past."),
                    )
                }
                Ok(s) => s,
                Err(_) => return error(400, "BadRequest", "snapshot must be an integer"),
            },
        };
        let after: Option<(u32, String)> = match q.get("cursor") {
            None => None,
            Some(c) => {
                let parsed = serde_json::from_str::<Json>(c).ok().and_then(|v| {
                    Some((
                        v.get("tablet")?.as_str()?.parse::<u32>().ok()?,
                        v.get("id")?.as_str()?.to_string(),
                    ))
                });
                match parsed {
                    Some(p) => Some(p),
                    None => {
                        return error(
                            400,
                            "InvalidListSnapshotCursor",
                            "Invalid value for the `cursor` argument of list_snapshot.",
                        )
                    }
                }
            }
        };
        // Tables as of the snapshot, in table-number order (a deleted table is skipped).
        let wanted = q.get("tableName").or_else(|| q.get("table_name"));
        // One cached iterator for the whole deployment: a continuation finds it only when no
        // other list_snapshot call came in between.
        let slot = self.snapshot_iterator.take();
        if let Some(c) = q.get("cursor") {
            if slot != Some((snapshot, wanted.cloned(), c.clone())) {
                self.snapshot_iterator_restarts += 1;
            }
        }
        let mut tables: Vec<&Table> = self
            .tables
            .iter()
            // A table name selects the root component's table only.
            .filter(|t| !t.deleted && !t.system())
            .filter(|t| wanted.is_none_or(|w| *w == t.name && t.component.is_empty()))
            .filter(|t| after.as_ref().is_none_or(|(n, _)| t.number >= *n))
            .collect();
        tables.sort_by_key(|t| t.number);
        let mut values = Vec::new();
        let mut cursor = None;
        let mut has_more = false;
        'tables: for t in tables {
            let start = match &after {
                Some((n, id)) if *n == t.number => std::ops::Bound::Excluded(id.clone()),
                _ => std::ops::Bound::Unbounded,
            };
            for (id, versions) in t.docs.range((start, std::ops::Bound::Unbounded)) {
                if values.len() >= self.snapshot_page {
                    has_more = true;
                    break 'tables;
                }
                let visible = versions.iter().rev().find(|v| v.ts <= snapshot);
                if let Some(Version { ts, doc: Some(doc) }) = visible {
                    let mut out = export(doc, typed);
                    out.insert("_table".into(), json!(t.name));
                    out.insert("_component".into(), json!(t.component));
                    out.insert("_ts".into(), json!(ts));
                    values.push(Json::Object(out));
                    cursor = Some(json!({"tablet": t.number.to_string(), "id": id}).to_string());
                }
            }
            if wanted.is_none() && !values.is_empty() {
                // One table per page when walking everything, like the real iterator.
                has_more = true;
                break;
            }
        }
        if !has_more {
            cursor = None;
        }
        if let Some(c) = &cursor {
            self.snapshot_iterator = Some((snapshot, wanted.cloned(), c.clone()));
        }
        (
            200,
            json!({ "values": values, "snapshot": snapshot, "cursor": cursor, "hasMore": has_more }),
        )
    }

    pub(crate) fn document_deltas(&mut self, q: &BTreeMap<String, String>) -> Answer {
        let typed = match self.format(q) {
            Ok(t) => t,
            Err(a) => return a,
        };
        let Some(cursor) = q.get("cursor") else {
            return error(
                400,
                "DocumentDeltasCursorRequired",
                "/api/document_deltas requires a cursor",
            );
        };
        let Ok(cursor) = cursor.parse::<i64>() else {
            return error(400, "BadRequest", "cursor must be an integer");
        };
        if cursor < self.retention_floor {
            return error(
                400,
                "InvalidWindowToReadDocuments",
                &format!("Trying to synchronize from timestamp {cursor}, which is older than the database’s retention window."),
            );
        }
        // A `tableName` (or `table_name`) selects one table of the root component; without
        // one every table is read (`StreamingExportSelection` in
        // `crates/common/src/types/streaming_export/selection.rs`).
        let wanted = q.get("tableName").or_else(|| q.get("table_name")).cloned();
        let upper = self.read_ts();
        let start = self.log.partition_point(|e| e.ts <= cursor);
        let mut values = Vec::new();
        let mut new_cursor = None;
        let mut has_more = false;
        let mut read = 0usize;
        for e in &self.log[start..] {
            if let Some(c) = new_cursor {
                if e.ts > c {
                    has_more = true;
                    break;
                }
            }
            let Some(t) = self
                .tables
                .iter()
                .find(|t| t.number == e.table && !t.deleted)
            else {
                continue;
            };
            // The page limit counts rows read, selected or not (`DOCUMENT_DELTAS_LIMIT` in
            // `crates/common/src/knobs.rs`, applied in `Database::document_deltas`): a page
            // of only unselected rows is empty with `hasMore`.
            read += 1;
            if new_cursor.is_none() && read >= self.deltas_page {
                // Finish this timestamp: a page never splits a transaction.
                new_cursor = Some(e.ts);
            }
            // System tables are never exported (`streaming_export_table_filter`).
            if t.system()
                || wanted
                    .as_ref()
                    .is_some_and(|w| *w != t.name || !t.component.is_empty())
            {
                continue;
            }
            let Some(v) = t
                .docs
                .get(&e.id)
                .and_then(|vs| vs.iter().find(|v| v.ts == e.ts))
            else {
                continue;
            };
            let mut out = match &v.doc {
                Some(doc) => export(doc, typed),
                None => {
                    let mut m = Map::new();
                    m.insert("_id".into(), json!(e.id));
                    m
                }
            };
            out.insert("_table".into(), json!(t.name));
            out.insert("_component".into(), json!(t.component));
            out.insert("_ts".into(), json!(e.ts));
            out.insert("_deleted".into(), json!(v.doc.is_none()));
            values.push(Json::Object(out));
        }
        let cursor = new_cursor.unwrap_or(upper);
        (
            200,
            json!({ "values": values, "cursor": cursor, "hasMore": has_more }),
        )
    }

    /// `POST /api/query_ts` (`public_get_query_ts` in `crates/local_backend/src/public_api.rs`):
    /// the latest read timestamp as base64 of the little-endian u64; no key needed.
    pub(crate) fn query_ts(&mut self) -> Answer {
        let ts = self.read_ts() as u64;
        (
            200,
            json!({ "ts": base64::engine::general_purpose::STANDARD.encode(ts.to_le_bytes()) }),
        )
    }

    /// `POST /api/query_at_ts` (`public_query_at_ts_post` in
    /// `crates/local_backend/src/public_api.rs`) of the dashboard's system query
    /// `_system/frontend/tableSize` (`npm-packages/system-udfs/convex/_system/frontend/tableSize.ts`:
    /// `ViewData`, so read-only keys may run it; `db.query(tableName).count()`), at the
    /// timestamp given as base64 of the little-endian u64.
    pub(crate) fn query_at_ts(&mut self, body: &Json, caller: Caller) -> Answer {
        let path = body.get("path").and_then(Json::as_str).unwrap_or_default();
        let path = path.strip_suffix(":default").unwrap_or(path);
        if path != "_system/frontend/tableSize" || caller == Caller::Anonymous {
            return (
                200,
                json!({
                    "status": "error",
                    "errorMessage": format!("Could not find public function for '{path}'."),
                }),
            );
        }
        let ts = body
            .get("ts")
            .and_then(Json::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(|b| u64::from_le_bytes(b) as i64);
        let Some(ts) = ts else {
            return error(400, "BadJsonBody", "ts must be a base64 u64");
        };
        if ts > self.read_ts() {
            return error(400, "TimestampTooNew", "ts is in the future");
        }
        let table = body
            .pointer("/args/tableName")
            .and_then(Json::as_str)
            .unwrap_or_default();
        (
            200,
            json!({ "status": "success", "value": self.table_size_at(table, ts) as f64 }),
        )
    }

    /// `POST /api/mutation` of `powersync_checkpoints:createCheckpoint`, as deployed: this
    /// crate's file or PowerSync's (see [`CheckpointMutation`]).
    pub(crate) fn mutation(&mut self, body: &Json, caller: Caller) -> Answer {
        let path = body.get("path").and_then(Json::as_str).unwrap_or_default();
        // `crates/udf/src/validation.rs`: an internal function is "not found" for a caller
        // that is no admin, and needs `RunInternalMutations` from an admin (which read-only
        // keys lack: 403 `OperationNotPermitted`, `crates/roles/src/eval.rs`); a public one
        // runs for anyone.
        let missing = path != crate::CHECKPOINT_MUTATION
            || self.mutation == CheckpointMutation::Missing
            || (self.mutation == CheckpointMutation::Crate && caller == Caller::Anonymous);
        if missing {
            let path = path.strip_suffix(":default").unwrap_or(path);
            return (
                200,
                json!({
                    "status": "error",
                    "errorMessage": format!("Could not find public function for '{path}'. Did you forget to run `npx convex dev` or `npx convex deploy`?"),
                }),
            );
        }
        if self.mutation == CheckpointMutation::Crate && caller == Caller::ReadOnly {
            return error(
                403,
                "OperationNotPermitted",
                "You do not have permission to perform this operation (run internal mutations).",
            );
        }
        let now_ms = (now_nanos() / 1_000_000) as f64;
        let mut fields = Map::new();
        fields.insert("last_updated".into(), json!(now_ms));
        if self.mutation == CheckpointMutation::PowerSync {
            // powersync-service `modules/module-convex/convex/powersync_checkpoints.ts`: patch
            // the first row (or insert one) and return nothing.
            let first = self
                .documents(crate::CHECKPOINT_TABLE)
                .into_iter()
                .next()
                .and_then(|d| d.get("_id").and_then(Json::as_str).map(str::to_string));
            let write = match first {
                Some(id) => Write::Patch {
                    table: crate::CHECKPOINT_TABLE.into(),
                    id,
                    fields,
                },
                None => Write::Insert {
                    table: crate::CHECKPOINT_TABLE.into(),
                    fields,
                },
            };
            return match self.commit(vec![write]) {
                Ok(_) => (200, json!({ "status": "success", "value": null })),
                Err(e) => (200, json!({ "status": "error", "errorMessage": e })),
            };
        }
        // This crate's file: delete up to 16 markers created over a minute ago (read through
        // the `by_creation_time` index), insert one, return its id.
        let mut writes: Vec<Write> = self
            .documents(crate::CHECKPOINT_TABLE)
            .into_iter()
            .filter(|d| {
                d.get("_creationTime")
                    .and_then(Json::as_f64)
                    .is_some_and(|t| t < now_ms - 60_000.0)
            })
            .take(16)
            .filter_map(|d| d.get("_id").and_then(Json::as_str).map(str::to_string))
            .map(|id| Write::Delete {
                table: crate::CHECKPOINT_TABLE.into(),
                id,
            })
            .collect();
        writes.push(Write::Insert {
            table: crate::CHECKPOINT_TABLE.into(),
            fields,
        });
        match self.commit(writes) {
            Ok((ids, _)) => (
                200,
                json!({ "status": "success", "value": ids.last().cloned().unwrap_or_default() }),
            ),
            Err(e) => (200, json!({ "status": "error", "errorMessage": e })),
        }
    }
}

/// Whether a table's inferred shape is a record rather than an object: some document has
/// more than 64 fields (system fields included) or a field name that is not an identifier
/// (`ObjectShape::shape_of` in `crates/shape_inference/src/object.rs`, `MAX_OBJECT_FIELDS` in
/// its `config.rs`, `is_valid_identifier` in `crates/convex/sync_types/src/identifier.rs`).
fn is_record_shaped(t: &Table) -> bool {
    t.docs
        .keys()
        .filter_map(|id| Store::current(t, id))
        .any(|d| {
            d.len() > 64
                || d.keys().any(|k| {
                    let b = k.as_bytes();
                    k.len() > 64
                        || !b
                            .first()
                            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
                        || !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
                        || b.iter().all(|c| *c == b'_')
                })
        })
}

/// A document in the requested encoding (the store keeps the typed one).
fn export(doc: &Map<String, Json>, typed: bool) -> Map<String, Json> {
    if typed {
        return doc.clone();
    }
    doc.iter().map(|(k, v)| (k.clone(), clean(v))).collect()
}

fn decode8(p: &Json) -> Option<[u8; 8]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(p.as_str()?)
        .ok()?;
    <[u8; 8]>::try_from(bytes.as_slice()).ok()
}

/// Convex's `json` export of a typed value.
fn clean(v: &Json) -> Json {
    match v {
        Json::Array(a) => Json::Array(a.iter().map(clean).collect()),
        Json::Object(m) if m.len() == 1 => {
            let Some((k, p)) = m.iter().next() else {
                return Json::Null;
            };
            match k.as_str() {
                "$integer" => decode8(p)
                    .map(|b| Json::String(i64::from_le_bytes(b).to_string()))
                    .unwrap_or(Json::Null),
                "$bytes" => p.clone(),
                "$float" => decode8(p)
                    .map(|b| {
                        let f = f64::from_le_bytes(b);
                        if f.is_nan() {
                            json!("NaN")
                        } else if f == f64::INFINITY {
                            json!("Infinity")
                        } else if f == f64::NEG_INFINITY {
                            json!("-Infinity")
                        } else {
                            json!(f)
                        }
                    })
                    .unwrap_or(Json::Null),
                _ => Json::Object(m.iter().map(|(k, v)| (k.clone(), clean(v))).collect()),
            }
        }
        Json::Object(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), clean(v))).collect()),
        other => other.clone(),
    }
}

/// The JSON Schema `json_schemas` gives a value's type.
fn value_schema(v: &Json, typed: bool) -> Json {
    match v {
        Json::Null => json!({"type": "null"}),
        Json::Bool(_) => json!({"type": "boolean"}),
        Json::Number(_) => json!({"type": "number"}),
        Json::String(_) => json!({"type": "string"}),
        Json::Array(_) => json!({"type": "array", "items": {}}),
        Json::Object(m) if m.len() == 1 && m.contains_key("$integer") => {
            if typed {
                json!({"$description": "int64", "type": "object", "properties": {"$integer": {"type": "string"}}})
            } else {
                json!({"$description": "int64 represented as base10 string", "type": "string"})
            }
        }
        Json::Object(m) if m.len() == 1 && m.contains_key("$bytes") => {
            if typed {
                json!({"$description": "base64 bytes", "type": "object", "properties": {"$bytes": {"type": "string"}}})
            } else {
                json!({"$description": "base64 bytes", "type": "string"})
            }
        }
        Json::Object(m) if m.len() == 1 && m.contains_key("$float") => {
            json!({"$description": "float64", "anyOf": [{"type": "number"}, {"type": "string", "$description": "-inf, inf, or NaN"}]})
        }
        Json::Object(_) => json!({"type": "object"}),
    }
}
