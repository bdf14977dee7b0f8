//! The change-stream request shared by the replication stream and the checkpoint writer: one
//! pipeline, so both see the same events and the same resume tokens.

use mongodb::bson::{doc, Bson, Document};
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::options::ChangeStreamOptions;
use mongodb::Client;
use powersync_source_core::{Result, SourceError};

use crate::catalog::Selection;
use crate::server_info::{CHECKPOINTS_COLLECTION, SIGNALS_COLLECTION};

/// The aggregation pipeline of the change stream: the selected collections, renames into
/// them, the checkpoint and backfill signal collections and the database-wide events; split large events when the
/// server can. A database-level stream (one database) matches on collection names only; a
/// cluster-level stream on database and collection.
pub(crate) fn pipeline(selection: &Selection, split_events: bool) -> Vec<Document> {
    let mut stages = Vec::new();
    if selection.is_cluster() {
        let mut any: Vec<Bson> = Vec::new();
        let mut selected_dbs: Vec<Bson> = Vec::new();
        for db in selection.databases() {
            selected_dbs.push(Bson::from(db));
            let names = selection.names_in(db).unwrap_or_default();
            if names.is_empty() {
                any.push(Bson::Document(doc! {"ns.db": db}));
                any.push(Bson::Document(doc! {"to.db": db}));
            } else {
                let names: Vec<Bson> = names.iter().map(|n| Bson::from(n.as_str())).collect();
                any.push(Bson::Document(
                    doc! {"ns.db": db, "ns.coll": {"$in": names.clone()}},
                ));
                any.push(Bson::Document(
                    doc! {"to.db": db, "to.coll": {"$in": names}},
                ));
            }
        }
        any.push(Bson::Document(doc! {
            "ns.db": selection.checkpoint_database(),
            "ns.coll": {"$in": [CHECKPOINTS_COLLECTION, SIGNALS_COLLECTION]},
        }));
        any.push(Bson::Document(doc! {
            "operationType": "dropDatabase",
            "ns.db": {"$in": selected_dbs},
        }));
        any.push(Bson::Document(doc! {"operationType": "invalidate"}));
        stages.push(doc! {"$match": {"$or": any}});
    } else if !selection.names().is_empty() {
        let mut watched: Vec<Bson> = selection
            .names()
            .iter()
            .map(|n| Bson::from(n.as_str()))
            .collect();
        let targets = watched.clone();
        watched.push(Bson::from(CHECKPOINTS_COLLECTION));
        watched.push(Bson::from(SIGNALS_COLLECTION));
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

/// Opens the selection's change stream: database-level on its one database, or
/// cluster-level (`Client::watch`, `allChangesForCluster`) when it spans several.
pub(crate) async fn open(
    client: &Client,
    selection: &Selection,
    stages: Vec<Document>,
    options: ChangeStreamOptions,
) -> mongodb::error::Result<ChangeStream<mongodb::change_stream::event::ChangeStreamEvent<Document>>>
{
    if selection.is_cluster() {
        client.watch().pipeline(stages).with_options(options).await
    } else {
        client
            .database(selection.database())
            .watch()
            .pipeline(stages)
            .with_options(options)
            .await
    }
}

/// Where the stream of `selection` reads, for messages.
pub(crate) fn scope(selection: &Selection) -> String {
    if selection.is_cluster() {
        let dbs: Vec<&str> = selection.databases().collect();
        format!("the cluster (databases {})", dbs.join(", "))
    } else {
        selection.database().to_owned()
    }
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
