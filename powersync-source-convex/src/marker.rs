//! Write checkpoints: the `powersync_checkpoints:createCheckpoint` mutation and the files a
//! user deploys for it.

use powersync_source_core::position::ConvexCursor;
use powersync_source_core::{Checkpoint, Position, SourceError};
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

/// Runs the mutation and returns the marker row's id.
pub(crate) async fn create_marker(api: &Api) -> Result<String, SourceError> {
    let value = api
        .retrying(|| api.mutation(CHECKPOINT_MUTATION, serde_json::json!({})))
        .await?;
    match value {
        Json::String(id) => Ok(id),
        _ => Err(SourceError::prerequisite(format!(
            "{CHECKPOINT_MUTATION} on {} returned no document id",
            api.base()
        ))
        .with_hint(format!(
            "deploy convex/powersync_checkpoints.ts as in the powersync-source-convex docs:\n{CHECKPOINTS_TS}"
        ))),
    }
}

/// Writes a marker and returns the checkpoint a stream reports (`CheckpointObserved`) when it
/// passes the marker's delta: the marker's commit timestamp, read back from the marker table.
pub(crate) async fn write_checkpoint(api: &Api) -> Result<Checkpoint, SourceError> {
    let id = create_marker(api).await?;
    // The mutation has committed when it answers; a read right after sees it. Reads are
    // retried briefly in case a snapshot is served a moment behind.
    for attempt in 0..50u32 {
        let mut cursor: Option<String> = None;
        let mut snapshot = None;
        loop {
            let page = api
                .retrying(|| {
                    api.list_snapshot(
                        snapshot,
                        cursor.as_deref(),
                        CHECKPOINT_TABLE,
                        Encoding::Json,
                        None,
                    )
                })
                .await?;
            snapshot = Some(page.snapshot);
            let found = page
                .values
                .iter()
                .find(|d| d.get("_id").and_then(Json::as_str) == Some(id.as_str()));
            if let Some(doc) = found {
                let ts = doc.get("_ts").and_then(Json::as_i64).ok_or_else(|| {
                    SourceError::decode("the checkpoint marker has no integer `_ts`")
                })?;
                return ConvexCursor::new(ts)
                    .map(|c| c.to_checkpoint())
                    .ok_or_else(|| SourceError::decode(format!("negative marker _ts {ts}")));
            }
            if !page.has_more {
                break;
            }
            cursor = page.cursor;
        }
        tokio::time::sleep(std::time::Duration::from_millis(
            20 * u64::from(attempt.min(10) + 1),
        ))
        .await;
    }
    Err(SourceError::connection(format!(
        "the checkpoint marker {id} did not become visible in {CHECKPOINT_TABLE} on {}",
        api.base()
    )))
}
