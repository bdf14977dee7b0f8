//! The change-stream request shared by the replication stream and the checkpoint writer: one
//! pipeline, so both see the same events and the same resume tokens.

use mongodb::bson::{doc, Bson, Document};
use mongodb::change_stream::event::ResumeToken;
use powersync_source_core::{Result, SourceError};

use crate::catalog::Selection;
use crate::server_info::CHECKPOINTS_COLLECTION;

/// The aggregation pipeline of the database-level change stream: the selected collections,
/// renames into them, the checkpoint collection and the database-wide events; split large
/// events when the server can.
pub(crate) fn pipeline(selection: &Selection, split_events: bool) -> Vec<Document> {
    let mut stages = Vec::new();
    if !selection.names().is_empty() {
        let mut watched: Vec<Bson> = selection
            .names()
            .iter()
            .map(|n| Bson::from(n.as_str()))
            .collect();
        let targets = watched.clone();
        watched.push(Bson::from(CHECKPOINTS_COLLECTION));
        stages.push(doc! {"$match": {"$or": [
            {"ns.coll": {"$in": watched}},
            {"to.coll": {"$in": targets}},
            {"operationType": {"$in": ["dropDatabase", "invalidate"]}},
        ]}});
    }
    if split_events {
        stages.push(doc! {"$changeStreamSplitLargeEvent": {}});
    }
    stages
}

/// A driver resume token from its `_data` string (taken from a checkpoint).
pub(crate) fn resume_token(data: &str) -> Result<ResumeToken> {
    mongodb::bson::from_bson(Bson::Document(doc! {"_data": data})).map_err(|e| {
        SourceError::config(format!("resume token `{data}` is not valid")).with_source(e)
    })
}

/// The `_data` of a driver resume token.
pub(crate) fn token_string(token: &ResumeToken) -> Option<String> {
    match mongodb::bson::to_bson(token).ok()? {
        Bson::Document(d) => d.get_str("_data").ok().map(str::to_owned),
        _ => None,
    }
}
