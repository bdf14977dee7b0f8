//! Reading a collection in `_id` order, one bounded query per batch.
//!
//! Each batch is `find({}).hint({_id: 1}).min({_id: <last>}).sort({_id: 1}).limit(n + 1)`:
//! `min` bounds the `_id` index scan itself, so the order is the index order across *every*
//! BSON type (numbers, strings, ObjectIds, documents… in MongoDB's type order). A
//! `{_id: {$gt: last}}` filter would not do: comparison operators only match values of the same
//! type bracket, and documents with `_id`s of other types would be skipped. `min` is inclusive,
//! so the first document (the last one of the previous batch) is dropped.
//!
//! Every batch is its own query (no cursor held across batches), so a slow host never runs
//! into cursor timeouts, and a batch boundary is a resume point: the last `_id` is stored in
//! canonical extended JSON, which keeps its exact BSON type.

use std::future::IntoFuture;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::raw::{RawBson, RawDocumentBuf};
use mongodb::bson::{doc, Bson};
use mongodb::options::Hint;
use mongodb::Collection;
use powersync_source_core::{Result, SourceError};

use crate::driver_error::driver_error;

/// Reads the next batch after `after` (`None` = from the start): at most `limit` documents.
/// Each round trip (the query, every `getMore`) that gets no answer within `silence` fails the
/// read with a [`Connection`](powersync_source_core::ErrorKind::Connection) error: a half-open
/// connection is retried, not waited on forever.
pub async fn read_batch(
    coll: &Collection<RawDocumentBuf>,
    after: Option<&Bson>,
    limit: u32,
    silence: Duration,
) -> Result<Vec<RawDocumentBuf>> {
    let context = || format!("snapshot of {}.{}", coll.namespace().db, coll.name());
    let extra = u32::from(after.is_some());
    let mut find = coll
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .hint(Hint::Keys(doc! {"_id": 1}))
        .limit(i64::from(limit) + i64::from(extra))
        .batch_size(limit.saturating_add(extra));
    let skip = match after {
        Some(id) => {
            find = find.min(doc! {"_id": id.clone()});
            Some(RawBson::try_from(id.clone()).map_err(|e| {
                SourceError::decode(format!("{}: resume key", context())).with_source(e)
            })?)
        }
        None => None,
    };
    let silent = || {
        SourceError::connection(format!(
            "{}: the server sent nothing for {silence:?} (half-open connection?)",
            context()
        ))
    };
    let mut cursor = tokio::time::timeout(silence, find.into_future())
        .await
        .map_err(|_| silent())?
        .map_err(|e| driver_error(context(), e))?;
    let mut out = Vec::with_capacity(limit as usize);
    while let Some(doc) = tokio::time::timeout(silence, cursor.try_next())
        .await
        .map_err(|_| silent())?
        .map_err(|e| driver_error(context(), e))?
    {
        if out.is_empty() {
            if let Some(skip) = &skip {
                if doc.get("_id").ok().flatten() == Some(skip.as_raw_bson_ref()) {
                    continue;
                }
            }
        }
        out.push(doc);
        if out.len() >= limit as usize {
            break;
        }
    }
    Ok(out)
}

/// The `_id` of a document as an owned value.
pub fn document_id(doc: &RawDocumentBuf) -> Result<Bson> {
    let id = doc
        .get("_id")
        .ok()
        .flatten()
        .ok_or_else(|| SourceError::decode("a snapshot document has no _id"))?;
    Bson::try_from(id.to_raw_bson())
        .map_err(|e| SourceError::decode("a snapshot document's _id").with_source(e))
}

/// A resume key: the `_id` in canonical extended JSON.
pub fn encode_key(id: &Bson) -> String {
    id.clone().into_canonical_extjson().to_string()
}

/// Reads a key made by [`encode_key`].
pub fn decode_key(key: &str) -> Result<Bson> {
    let json: serde_json::Value = serde_json::from_str(key).map_err(|e| {
        SourceError::config(format!("snapshot resume key `{key}` is not JSON")).with_source(e)
    })?;
    Bson::try_from(json).map_err(|e| {
        SourceError::config(format!("snapshot resume key `{key}` is not extended JSON"))
            .with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;

    #[test]
    fn keys_round_trip_with_their_types() {
        for id in [
            Bson::Int32(5),
            Bson::Int64(5),
            Bson::Double(2.5),
            Bson::String("a".into()),
            Bson::ObjectId(ObjectId::parse_str("6b07a9e2c7e3e60f51e96cc9").unwrap()),
            Bson::Document(doc! {"x": 1, "y": [1, "b"]}),
            Bson::Boolean(true),
        ] {
            assert_eq!(decode_key(&encode_key(&id)).unwrap(), id);
        }
        assert!(decode_key("{not json").is_err());
    }
}
