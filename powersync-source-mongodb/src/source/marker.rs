//! Checkpoint markers: a document written to `_powersync_checkpoints` whose insert event's
//! position is read back. They serve as the snapshot barrier and as
//! [`ChangeSource::write_checkpoint`](powersync_source_core::ChangeSource::write_checkpoint).

use std::time::{Duration, Instant};

use mongodb::bson::oid::ObjectId;
use mongodb::bson::raw::RawDocumentBuf;
use mongodb::bson::{doc, DateTime, Document};
use mongodb::options::ChangeStreamOptions;
use mongodb::Client;
use powersync_source_core::position::MongoPosition;
use powersync_source_core::{Result, SourceError};

use crate::catalog::Selection;
use crate::change_event::header;
use crate::driver_error::driver_error;
use crate::server_info::CHECKPOINTS_COLLECTION;
use crate::watch::{self, pipeline};

/// How long writing a marker waits to see its own insert event.
const MARKER_TIMEOUT: Duration = Duration::from_secs(20);

/// Writes a marker document and returns the position of its insert event, read from a change
/// stream opened before the write with the replication pipeline (so the position is one the
/// replication stream reports too).
pub(super) async fn write(
    client: &Client,
    selection: &Selection,
    split_events: bool,
) -> Result<MongoPosition> {
    let db = client.database(selection.checkpoint_database());
    let id = ObjectId::new();
    let mut stages = vec![doc! {"$match": {
        "ns.db": selection.checkpoint_database(),
        "ns.coll": CHECKPOINTS_COLLECTION,
        "documentKey._id": id,
    }}];
    stages.extend(
        pipeline(selection, split_events)
            .into_iter()
            .filter(|s| !s.contains_key("$match")),
    );
    let mut options = ChangeStreamOptions::default();
    options.max_await_time = Some(Duration::from_millis(200));
    let mut watch = watch::open(client, selection, stages, options)
        .await
        .map_err(|e| driver_error("opening a change stream for the checkpoint marker", e))?
        .with_type::<RawDocumentBuf>();
    let checkpoints = db.collection::<Document>(CHECKPOINTS_COLLECTION);
    checkpoints
        .insert_one(doc! {"_id": id, "at": DateTime::now()})
        .await
        .map_err(|e| {
            driver_error(
                format!("writing a marker to {}.{CHECKPOINTS_COLLECTION}", db.name()),
                e,
            )
        })?;
    let deadline = Instant::now() + MARKER_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SourceError::connection(format!(
                "the checkpoint marker did not appear in the change stream within {MARKER_TIMEOUT:?}"
            )));
        }
        let next = tokio::time::timeout(left, watch.next_if_any()).await;
        let event = match next {
            Err(_) => continue,
            Ok(Err(e)) => return Err(driver_error("reading the checkpoint marker event", e)),
            Ok(Ok(None)) => continue,
            Ok(Ok(Some(event))) => event,
        };
        let h = header(&event)?;
        if h.coll.as_deref() == Some(CHECKPOINTS_COLLECTION)
            && h.db.as_deref() == Some(selection.checkpoint_database())
        {
            // Keep the collection small; older markers are no longer needed.
            let _ = checkpoints.delete_many(doc! {"_id": {"$lt": id}}).await;
            return Ok(h.position());
        }
    }
}
