//! Write checkpoints: the `powersync_checkpoints:createCheckpoint` mutation and the files a
//! user deploys for it.

use powersync_source_core::position::ConvexCursor;
use powersync_source_core::{Checkpoint, ErrorKind, Position, SourceError};
use serde_json::Value as Json;

use crate::api::Api;
use crate::catalog::CHECKPOINT_TABLE;
use crate::decode::Encoding;

/// The mutation [`crate::ConvexSource`] calls for a write checkpoint.
pub const CHECKPOINT_MUTATION: &str = "powersync_checkpoints:createCheckpoint";

/// What to add to `convex/schema.ts`.
pub const SCHEMA_TS: &str = include_str!("convex/schema.ts");

/// The whole of `convex/powersync_checkpoints.ts`.
pub const CHECKPOINTS_TS: &str = include_str!("convex/powersync_checkpoints.ts");

/// Runs the mutation; returns the marker row's id when the mutation returns one.
///
/// Two mutations live at this path: this crate's (`convex/powersync_checkpoints.ts` in the
/// crate docs) inserts a marker row and returns its id; PowerSync's (the Convex setup of
/// PowerSync's `module-convex`) patches one row in place and returns nothing (`null`). Both
/// are accepted: a deployment prepared for PowerSync needs nothing more.
pub(crate) async fn create_marker(api: &Api) -> Result<Option<String>, SourceError> {
    let value = api
        .retrying(|| api.mutation(CHECKPOINT_MUTATION, serde_json::json!({})))
        .await
        .map_err(|e| match e.kind() {
            // The key was good enough to get here (reads), so a refusal is its permissions.
            ErrorKind::Auth => e.with_hint(
                "write checkpoints need a deploy key that may run internal mutations; a read-only key streams but cannot write checkpoints",
            ),
            _ => e,
        })?;
    match value {
        Json::String(id) => Ok(Some(id)),
        Json::Null => Ok(None),
        _ => Err(SourceError::prerequisite(format!(
            "{CHECKPOINT_MUTATION} on {} returned neither a document id nor null",
            api.base()
        ))
        .with_hint(format!(
            "deploy convex/powersync_checkpoints.ts as in the powersync-source-convex docs (or PowerSync's own):\n{CHECKPOINTS_TS}"
        ))),
    }
}

/// Writes a marker and returns the checkpoint a stream reports (`CheckpointObserved`) when it
/// passes the marker's delta: the marker's commit timestamp.
///
/// The timestamp is found in `document_deltas` of the marker table after `query_ts` taken
/// before the mutation, never through `list_snapshot`: the server caches one snapshot
/// iterator, and any `list_snapshot` call would evict a running snapshot's. Without an id
/// (PowerSync's mutation), the first marker write after that timestamp is taken: it is ours or
/// a later one, and either way every write acknowledged before this call is below it.
pub(crate) async fn write_checkpoint(api: &Api) -> Result<Checkpoint, SourceError> {
    let mut cursor = api.retrying(|| api.query_ts()).await?;
    let id = create_marker(api).await?;
    // The mutation has committed when it answers, but the deltas may be served a moment
    // behind: an exhausted page is polled again briefly.
    let mut idle = 0u32;
    while idle < 50 {
        let page = api
            .retrying(|| api.document_deltas(cursor, Some(CHECKPOINT_TABLE), Encoding::Json, None))
            .await?;
        let found = page.values.iter().find(|d| {
            d.get("_table").and_then(Json::as_str) == Some(CHECKPOINT_TABLE)
                && d.get("_component")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .is_empty()
                && d.get("_deleted").and_then(Json::as_bool) != Some(true)
                && id
                    .as_deref()
                    .is_none_or(|id| d.get("_id").and_then(Json::as_str) == Some(id))
        });
        if let Some(doc) = found {
            let ts = doc
                .get("_ts")
                .and_then(Json::as_i64)
                .ok_or_else(|| SourceError::decode("the checkpoint marker has no integer `_ts`"))?;
            return ConvexCursor::new(ts)
                .map(|c| c.to_checkpoint())
                .ok_or_else(|| SourceError::decode(format!("negative marker _ts {ts}")));
        }
        if page.cursor < cursor {
            return Err(SourceError::decode(format!(
                "document_deltas went backwards: cursor {} after {cursor}",
                page.cursor
            )));
        }
        cursor = page.cursor;
        if !page.has_more {
            idle += 1;
            tokio::time::sleep(std::time::Duration::from_millis(
                20 * u64::from(idle.min(10)),
            ))
            .await;
        }
    }
    Err(SourceError::connection(format!(
        "the checkpoint marker did not appear in the deltas of {CHECKPOINT_TABLE} on {}",
        api.base()
    )))
}
