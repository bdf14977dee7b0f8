//! The Data Sync API of the fake deployment: `POST /api/v1/data/sync` and
//! `POST /api/data_sync_cursor_from_deltas`, after Convex's backend
//! (`crates/local_backend/src/streaming_export.rs`: `data_sync`,
//! `data_sync_cursor_from_deltas`; `crates/streaming_export/src/lib.rs`; the algorithm of
//! `crates/table_iteration/src/data_sync.rs`; the wire types in
//! `crates/common/src/types/streaming_export/mod.rs` and `selection.rs`).
//!
//! A sync first walks each selected table by id at a fixed `synced_ts` (status
//! `snapshotting`, a `truncate` on the page where a table starts), then follows the log from
//! `synced_ts` (status `stale` while more is there, `upToDate` when caught up, both with
//! `snapshotTs`), never splitting a transaction. A table that enters the selection, appears,
//! or is replaced wholesale (a new tablet under its name) is walked again from scratch with a
//! truncate, and the sync is `snapshotting` until it is done. The real iterator alternates
//! between the walk and the log when `synced_ts` lags by more than `by_id_freshness`
//! (`DataSyncIterator::next_page`); this one finishes the walks first unless interleaving is
//! switched on ([`FakeConvex::set_data_sync_interleave`](super::FakeConvex::set_data_sync_interleave)),
//! when it follows the log first whenever it lags, emitting only captured documents (walked
//! tablets, and walked ids of the current one: `is_captured`). Values use the `export_json`
//! encoding: Int64 as a JSON integer, finite floats as JSON numbers with a dot (`-0.0` too),
//! NaN and ±∞ as `{"$float": …}`, bytes as `{"$bytes": …}`. The cursor is opaque (here base64 of JSON, not encrypted).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};

use super::store::{error, Answer, Store};

/// The fake's cursor. The real one is an encrypted protobuf (`SyncCursor`).
#[derive(Serialize, Deserialize, Clone)]
struct Cursor {
    sync_id: String,
    synced_ts: i64,
    /// Tablets (indexes into the store's tables) walked in full.
    synced: Vec<usize>,
    /// The tablet being walked, and the last id emitted from it.
    current: Option<(usize, Option<String>)>,
}

impl Cursor {
    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(s: &str) -> Option<Cursor> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Whether a selection (`Selection` in `selection.rs`: component path → `"excluded"` or
/// table name → `"excluded"` / `{…columns}`, each level with an `_other` default) includes a
/// table. Column selections are not modelled.
fn selected(selection: &Json, component: &str, table: &str) -> bool {
    let included = |v: Option<&Json>| v.and_then(Json::as_str) != Some("excluded");
    let Some(components) = selection.as_object() else {
        return true;
    };
    match components.get(component) {
        None => included(components.get("_other")),
        Some(Json::Object(tables)) => match tables.get(table) {
            None => included(tables.get("_other")),
            Some(t) => included(Some(t)),
        },
        Some(other) => included(Some(other)),
    }
}

/// A typed value in the `export_json` encoding (`export_clean_lossless` in
/// `crates/value/src/export.rs`).
fn export_json(v: &Json) -> Json {
    match v {
        Json::Array(a) => Json::Array(a.iter().map(export_json).collect()),
        Json::Object(m) if m.len() == 1 && m.contains_key("$integer") => {
            decode8(&m["$integer"]).map_or(Json::Null, |b| json!(i64::from_le_bytes(b)))
        }
        Json::Object(m) if m.len() == 1 && m.contains_key("$float") => {
            match decode8(&m["$float"]).map(f64::from_le_bytes) {
                Some(f) if f.is_finite() => json!(f),
                _ => v.clone(),
            }
        }
        Json::Object(m) if m.len() == 1 && m.contains_key("$bytes") => v.clone(),
        Json::Object(m) => {
            Json::Object(m.iter().map(|(k, v)| (k.clone(), export_json(v))).collect())
        }
        other => other.clone(),
    }
}

fn decode8(p: &Json) -> Option<[u8; 8]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(p.as_str()?)
        .ok()?;
    <[u8; 8]>::try_from(bytes.as_slice()).ok()
}

fn entry(component: &str, table: &str, ts: i64, doc: Option<&Map<String, Json>>, id: &str) -> Json {
    let value = match doc {
        Some(d) => Json::Object(d.iter().map(|(k, v)| (k.clone(), export_json(v))).collect()),
        None => json!({ "_id": id }),
    };
    json!({
        "component": component,
        "table": table,
        "ts": ts,
        "deleted": doc.is_none(),
        "value": value,
    })
}

impl Store {
    /// The tablets a sync with `selection` exports now: active user tables, every component.
    fn sync_targets(&self, selection: &Json) -> Vec<usize> {
        self.tables
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                !t.deleted && !t.system() && selected(selection, &t.component, &t.name)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// `POST /api/v1/data/sync`.
    pub(crate) fn data_sync(&mut self, body: &Json) -> Answer {
        if !self.data_sync {
            return error(404, "NotFound", "no route POST /api/v1/data/sync");
        }
        let selection = body.get("selection").cloned().unwrap_or(Json::Null);
        let mut cursor = match body.get("cursor").and_then(Json::as_str) {
            None => {
                self.next_sync += 1;
                Cursor {
                    sync_id: format!("sync-{}", self.next_sync),
                    synced_ts: self.read_ts(),
                    synced: Vec::new(),
                    current: None,
                }
            }
            Some(c) => match Cursor::decode(c) {
                Some(c) => c,
                None => {
                    return error(
                        400,
                        "InvalidDataSyncCursor",
                        "Could not parse the data sync cursor",
                    )
                }
            },
        };
        if cursor.synced_ts < self.retention_floor {
            return error(
                400,
                "DataSyncCursorExpired",
                "The cursor is outside the deployment's data retention window and can no longer be resumed. Restart the sync from scratch by calling /data/sync without a cursor.",
            );
        }
        let targets = self.sync_targets(&selection);
        // Deselected, deleted and replaced tablets leave the sync.
        cursor.synced.retain(|t| targets.contains(t));
        if cursor
            .current
            .as_ref()
            .is_some_and(|(t, _)| !targets.contains(t))
        {
            cursor.current = None;
        }
        let mut truncates = Vec::new();
        let mut values = Vec::new();
        let pending: Vec<usize> = targets
            .iter()
            .copied()
            .filter(|t| !cursor.synced.contains(t))
            .collect();
        let status;
        // The server chooses the `ts` dimension while walking when `synced_ts` lags the
        // latest timestamp by more than `by_id_freshness` (`next_page` in
        // `crates/table_iteration/src/data_sync.rs`); with interleaving on, any lag does.
        let lagging = self.log.last().is_some_and(|e| e.ts > cursor.synced_ts);
        let catch_up = self.data_sync_interleave && lagging;
        let walk = !pending.is_empty() && !catch_up;
        if walk {
            // `by_id` dimension: a page of the current tablet at `synced_ts`.
            let (tablet, after) = match cursor.current.take() {
                Some(c) => c,
                None => {
                    let t = &self.tables[pending[0]];
                    truncates.push(json!({ "component": t.component, "table": t.name }));
                    (pending[0], None)
                }
            };
            let t = &self.tables[tablet];
            let start = match &after {
                Some(id) => std::ops::Bound::Excluded(id.clone()),
                None => std::ops::Bound::Unbounded,
            };
            let mut last = after.clone();
            let mut more = false;
            for (id, versions) in t.docs.range((start, std::ops::Bound::Unbounded)) {
                if values.len() >= self.snapshot_page {
                    more = true;
                    break;
                }
                last = Some(id.clone());
                if let Some(v) = versions.iter().rev().find(|v| v.ts <= cursor.synced_ts) {
                    if let Some(doc) = &v.doc {
                        values.push(entry(&t.component, &t.name, v.ts, Some(doc), id));
                    }
                }
            }
            if more {
                cursor.current = Some((tablet, last));
            } else {
                cursor.synced.push(tablet);
            }
            status = if pending.len() == 1 && !more {
                self.consistent(cursor.synced_ts)
            } else {
                json!({ "type": "snapshotting" })
            };
        } else {
            // `ts` dimension: the log after `synced_ts`, captured documents only (walked
            // tablets, and the ids walked so far of the tablet being walked: `is_captured`),
            // whole transactions, at most `deltas_page` rows read before finishing a timestamp.
            let upper = self.read_ts();
            let start = self.log.partition_point(|e| e.ts <= cursor.synced_ts);
            let mut read = 0usize;
            let mut end = None;
            let mut more = false;
            for e in &self.log[start..] {
                if end.is_some_and(|c| e.ts > c) {
                    more = true;
                    break;
                }
                read += 1;
                if end.is_none() && read >= self.deltas_page {
                    end = Some(e.ts);
                }
                let captured = |i: &usize| {
                    cursor.synced.contains(i)
                        || cursor.current.as_ref().is_some_and(|(t, last)| {
                            t == i && last.as_ref().is_some_and(|last| e.id <= *last)
                        })
                };
                let Some((_, t)) = self
                    .tables
                    .iter()
                    .enumerate()
                    .find(|(i, t)| t.number == e.table && captured(i))
                else {
                    continue;
                };
                let Some(v) = t
                    .docs
                    .get(&e.id)
                    .and_then(|vs| vs.iter().find(|v| v.ts == e.ts))
                else {
                    continue;
                };
                values.push(entry(&t.component, &t.name, e.ts, v.doc.as_deref(), &e.id));
            }
            cursor.synced_ts = if more { end.unwrap_or(upper) } else { upper };
            status = if !pending.is_empty() {
                json!({ "type": "snapshotting" })
            } else if more {
                json!({ "type": "stale", "snapshotTs": cursor.synced_ts })
            } else {
                json!({ "type": "upToDate", "snapshotTs": cursor.synced_ts })
            };
        }
        (
            200,
            json!({
                "status": status,
                "truncates": truncates,
                "values": values,
                "syncId": cursor.sync_id,
                "pagination": { "hasMore": true, "nextCursor": cursor.encode() },
            }),
        )
    }

    /// The status of a sync that just finished its walks at `synced_ts`.
    fn consistent(&self, synced_ts: i64) -> Json {
        if self.log.last().is_some_and(|e| e.ts > synced_ts) {
            json!({ "type": "stale", "snapshotTs": synced_ts })
        } else {
            json!({ "type": "upToDate", "snapshotTs": synced_ts })
        }
    }

    /// `POST /api/data_sync_cursor_from_deltas`: a sync cursor that treats everything at or
    /// below the `document_deltas` cursor as synced for the selected tables.
    pub(crate) fn data_sync_cursor_from_deltas(&mut self, body: &Json) -> Answer {
        if !self.data_sync {
            return error(
                404,
                "NotFound",
                "no route POST /api/data_sync_cursor_from_deltas",
            );
        }
        let Some(ts) = body
            .get("cursor")
            .and_then(Json::as_i64)
            .filter(|c| *c >= 0)
        else {
            return error(
                400,
                "InvalidDataSyncCursor",
                "The document_deltas cursor is not a valid timestamp",
            );
        };
        if ts < self.retention_floor {
            return error(
                400,
                "DataSyncCursorExpired",
                "The cursor is outside the deployment's data retention window and can no longer be resumed. Restart the sync from scratch by calling /data/sync without a cursor.",
            );
        }
        let selection = body.get("selection").cloned().unwrap_or(Json::Null);
        self.next_sync += 1;
        let cursor = Cursor {
            sync_id: format!("sync-{}", self.next_sync),
            synced_ts: ts,
            synced: self.sync_targets(&selection),
            current: None,
        };
        (200, json!({ "cursor": cursor.encode() }))
    }
}
