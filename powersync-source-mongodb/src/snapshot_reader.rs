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
//!
//! The `_id` is carried as the BSON bytes the server sent ([`AfterId`]), never through a lossy
//! conversion: MongoDB stores strings that are not valid UTF-8 (old drivers wrote them), the
//! `bson` crate's values cannot hold them, and a bound with U+FFFD in their place would be a
//! different key, one that can sort after documents not read yet. Such an `_id` is sent back
//! verbatim in a `find` command built from bytes, and its resume key holds the bytes.

use std::future::IntoFuture;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::raw::{RawBson, RawDocumentBuf};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, rawdoc, Binary, Bson};
use mongodb::options::Hint;
use mongodb::{Collection, Cursor};
use powersync_source_core::{Result, SourceError};

use crate::bson_value::fields;
use crate::driver_error::driver_error;

/// The one key of the resume key of an `_id` without a [`Bson`] form: its value is the
/// `{_id: …}` document's bytes as extended-JSON binary. MongoDB refuses `$`-prefixed field
/// names inside `_id`, so no `_id` document has this shape.
const RAW_ID_KEY: &str = "$powersyncRawId";

/// The `_id` a snapshot batch starts after: the document `{_id: <value>}`, its bytes exactly
/// as the server sent them (invalid UTF-8 included, see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct AfterId(RawDocumentBuf);

impl AfterId {
    /// From a stored element (type byte, the name `_id`, value).
    fn from_element(element: &[u8]) -> Result<AfterId> {
        let bad = || SourceError::decode("a snapshot document's _id is malformed BSON");
        let len = element.len() + 5;
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(&i32::try_from(len).map_err(|_| bad())?.to_le_bytes());
        bytes.extend_from_slice(element);
        bytes.push(0);
        let doc = RawDocumentBuf::from_bytes(bytes).map_err(|e| bad().with_source(e))?;
        Ok(AfterId(doc))
    }

    /// From a value the `bson` crate holds (a resume key in extended JSON).
    fn from_bson(id: Bson) -> Result<AfterId> {
        let raw = RawBson::try_from(id).map_err(|e| {
            SourceError::config("snapshot resume key is not a BSON value").with_source(e)
        })?;
        let mut doc = RawDocumentBuf::new();
        doc.append("_id", raw);
        Ok(AfterId(doc))
    }

    /// The `_id` element's bytes (type byte, name, value).
    fn element(&self) -> &[u8] {
        let bytes = self.0.as_bytes();
        // `{_id: …}` by construction: 4 length bytes, the element, the terminating zero.
        bytes
            .get(4..bytes.len().saturating_sub(1))
            .unwrap_or_default()
    }

    /// The value as a [`Bson`], when it has one (every `_id` whose text is valid UTF-8).
    fn to_bson(&self) -> Option<Bson> {
        let value = self.0.get("_id").ok().flatten()?;
        Bson::try_from(value.to_raw_bson()).ok()
    }
}

/// The `_id` element of a document (type byte, name, value), read lossily so that no text in
/// it can make the read fail.
fn id_element(doc: &RawDocumentBuf) -> Result<Option<&[u8]>> {
    for field in fields(doc) {
        // The reader's message names the damage ("malformed BSON: …").
        let field = field.map_err(|e| SourceError::decode(format!("a snapshot document: {e}")))?;
        if field.key == "_id" {
            // A lossy name equal to `_id` is the bytes `_id`: U+FFFD is not among them.
            return Ok(Some(field.raw_element()));
        }
    }
    Ok(None)
}

/// Reads the next batch after `after` (`None` = from the start): at most `limit` documents.
/// Each round trip (the query, every `getMore`) that gets no answer within `silence` fails the
/// read with a [`Connection`](powersync_source_core::ErrorKind::Connection) error: a half-open
/// connection is retried, not waited on forever.
pub async fn read_batch(
    coll: &Collection<RawDocumentBuf>,
    after: Option<&AfterId>,
    limit: u32,
    silence: Duration,
) -> Result<Vec<RawDocumentBuf>> {
    let context = || format!("snapshot of {}.{}", coll.namespace().db, coll.name());
    let silent = || {
        SourceError::connection(format!(
            "{}: the server sent nothing for {silence:?} (half-open connection?)",
            context()
        ))
    };
    let open = async {
        match after {
            Some(id) => match id.to_bson() {
                Some(bson) => find_after(coll, Some(bson), limit).await,
                None => find_after_raw(coll, id, limit).await,
            },
            None => find_after(coll, None, limit).await,
        }
    };
    let mut cursor = tokio::time::timeout(silence, open)
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
            if let Some(after) = after {
                // `min` is inclusive: the first document is the last one read, unless it was
                // deleted since. Compared as bytes, so any `_id` (NaN, invalid text) matches.
                if id_element(&doc)? == Some(after.element()) {
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

/// The batch query through the driver's `find`, for `_id`s that have a [`Bson`] form.
async fn find_after(
    coll: &Collection<RawDocumentBuf>,
    after: Option<Bson>,
    limit: u32,
) -> mongodb::error::Result<Cursor<RawDocumentBuf>> {
    let extra = u32::from(after.is_some());
    let mut find = coll
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .hint(Hint::Keys(doc! {"_id": 1}))
        .limit(i64::from(limit) + i64::from(extra))
        .batch_size(limit.saturating_add(extra));
    if let Some(id) = after {
        find = find.min(doc! {"_id": id});
    }
    find.into_future().await
}

/// The same query as [`find_after`], built from bytes so that an `_id` without a [`Bson`]
/// form is sent exactly as stored. The collection's read concern and read preference apply
/// as they do to the driver's `find` (a command built by hand gets neither by itself).
async fn find_after_raw(
    coll: &Collection<RawDocumentBuf>,
    after: &AfterId,
    limit: u32,
) -> mongodb::error::Result<Cursor<RawDocumentBuf>> {
    let batch = limit.saturating_add(1);
    let mut command = rawdoc! {
        "find": coll.name(),
        "filter": {},
        "sort": {"_id": 1},
        "hint": {"_id": 1},
        "limit": i64::from(limit) + 1,
        "batchSize": i32::try_from(batch).unwrap_or(i32::MAX),
    };
    command.append("min", after.0.clone());
    if let Some(concern) = coll.read_concern() {
        command.append("readConcern", mongodb::bson::to_raw_document_buf(concern)?);
    }
    let db = coll.client().database(&coll.namespace().db);
    let mut run = db.run_raw_cursor_command(command).batch_size(batch);
    if let Some(criteria) = coll.selection_criteria() {
        run = run.selection_criteria(criteria.clone());
    }
    Ok(run.await?.with_type())
}

/// The `_id` of a document, its bytes as stored.
pub fn document_id(doc: &RawDocumentBuf) -> Result<AfterId> {
    let element =
        id_element(doc)?.ok_or_else(|| SourceError::decode("a snapshot document has no _id"))?;
    AfterId::from_element(element)
}

/// A resume key: the `_id` in canonical extended JSON, or, for an `_id` without a [`Bson`]
/// form, `{"$powersyncRawId": <the {_id: …} bytes as extended-JSON binary>}`.
pub fn encode_key(id: &AfterId) -> String {
    let bson = id.to_bson().unwrap_or_else(|| {
        Bson::Document(doc! {
            RAW_ID_KEY: Binary { subtype: BinarySubtype::Generic, bytes: id.0.as_bytes().to_vec() }
        })
    });
    bson.into_canonical_extjson().to_string()
}

/// Reads a key made by [`encode_key`].
pub fn decode_key(key: &str) -> Result<AfterId> {
    let json: serde_json::Value = serde_json::from_str(key).map_err(|e| {
        SourceError::config(format!("snapshot resume key `{key}` is not JSON")).with_source(e)
    })?;
    let bson = Bson::try_from(json).map_err(|e| {
        SourceError::config(format!("snapshot resume key `{key}` is not extended JSON"))
            .with_source(e)
    })?;
    let raw = match &bson {
        Bson::Document(d) if d.len() == 1 => match d.get(RAW_ID_KEY) {
            Some(Bson::Binary(b)) => Some(b.bytes.clone()),
            _ => None,
        },
        _ => None,
    };
    let Some(raw) = raw else {
        return AfterId::from_bson(bson);
    };
    let bad = || SourceError::config(format!("snapshot resume key `{key}` is not one _id"));
    let doc = RawDocumentBuf::from_bytes(raw).map_err(|e| bad().with_source(e))?;
    let mut elements = fields(&doc);
    match (elements.next(), elements.next()) {
        (Some(Ok(field)), None) if field.key == "_id" => Ok(AfterId(doc.clone())),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;

    /// A document from hand-made elements (`type byte, name, 0, value`), as the server may
    /// send it: nothing checks that its text is UTF-8.
    fn raw_doc(elements: &[&[u8]]) -> RawDocumentBuf {
        let mut bytes = vec![0u8; 4];
        for e in elements {
            bytes.extend_from_slice(e);
        }
        bytes.push(0);
        let len = i32::try_from(bytes.len()).unwrap();
        bytes[..4].copy_from_slice(&len.to_le_bytes());
        RawDocumentBuf::from_bytes(bytes).unwrap()
    }

    /// A string element `name: text`, both taken as bytes.
    fn string_element(name: &[u8], text: &[u8]) -> Vec<u8> {
        let mut e = vec![0x02];
        e.extend_from_slice(name);
        e.push(0);
        e.extend_from_slice(&i32::try_from(text.len() + 1).unwrap().to_le_bytes());
        e.extend_from_slice(text);
        e.push(0);
        e
    }

    #[test]
    fn keys_round_trip_with_their_types() {
        for id in [
            Bson::Int32(5),
            Bson::Int64(5),
            Bson::Double(2.5),
            Bson::Double(-0.0),
            Bson::String("a".into()),
            Bson::ObjectId(ObjectId::parse_str("6b07a9e2c7e3e60f51e96cc9").unwrap()),
            Bson::Document(doc! {"x": 1, "y": [1, "b"]}),
            Bson::Boolean(true),
        ] {
            let after = AfterId::from_bson(id.clone()).unwrap();
            let key = encode_key(&after);
            // The key format of earlier versions: canonical extended JSON of the `_id`.
            assert_eq!(key, id.clone().into_canonical_extjson().to_string());
            let back = decode_key(&key).unwrap();
            assert_eq!(back, after);
            assert_eq!(back.to_bson(), Some(id));
        }
        assert!(decode_key("{not json").is_err());
    }

    /// `{_id: "a\xff", v: "b\xfe"}`: the bson crate refuses its `_id`; the snapshot reads it as
    /// the exact bytes, and its resume key holds them.
    #[test]
    fn an_id_that_is_not_utf8_is_kept_as_its_bytes() {
        let id = string_element(b"_id", b"a\xff");
        let doc = raw_doc(&[&id, &string_element(b"v", b"b\xfe")]);
        assert!(doc.get("_id").is_err(), "the bson crate refuses it");

        let after = document_id(&doc).unwrap();
        assert_eq!(after.element(), id.as_slice());
        assert_eq!(after.to_bson(), None);
        let key = encode_key(&after);
        assert!(
            key.starts_with(r#"{"$powersyncRawId":{"$binary":"#),
            "{key}"
        );
        let back = decode_key(&key).unwrap();
        assert_eq!(back, after);
        assert_eq!(back.element(), id.as_slice());

        // Not first, and inside a document `_id`: the same.
        let nested = {
            let inner = raw_doc(&[&string_element(b"k", b"\xc3")]);
            let mut e = b"\x03_id\0".to_vec();
            e.extend_from_slice(inner.as_bytes());
            e
        };
        let doc = raw_doc(&[&string_element(b"a\xff", b"x"), &nested]);
        let after = document_id(&doc).unwrap();
        assert_eq!(after.element(), nested.as_slice());
        assert_eq!(after.to_bson(), None);
        assert_eq!(decode_key(&encode_key(&after)).unwrap(), after);
    }

    #[test]
    fn documents_without_an_id_and_bad_raw_keys_are_errors() {
        let doc = raw_doc(&[&string_element(b"v", b"x")]);
        assert!(document_id(&doc).is_err());
        let two = raw_doc(&[&string_element(b"_id", b"x"), &string_element(b"v", b"y")]);
        let two_key = Bson::Document(doc! {
            RAW_ID_KEY: Binary { subtype: BinarySubtype::Generic, bytes: two.as_bytes().to_vec() }
        })
        .into_canonical_extjson()
        .to_string();
        assert!(decode_key(&two_key).is_err());
        let garbage = Bson::Document(doc! {
            RAW_ID_KEY: Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] }
        })
        .into_canonical_extjson()
        .to_string();
        assert!(decode_key(&garbage).is_err());
    }

    async fn collect(
        cursor: mongodb::error::Result<Cursor<RawDocumentBuf>>,
    ) -> Vec<RawDocumentBuf> {
        cursor.unwrap().try_collect().await.unwrap()
    }

    /// The query built from bytes (used for `_id`s without a `Bson` form) reads what the
    /// driver's `find` reads, across `_id` types, against a real server; and `read_batch`
    /// drops the bound document itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_raw_find_reads_what_the_driver_find_reads() {
        powersync_source_testkit::init_tracing();
        let Some(server) = powersync_source_testkit::or_skip(
            powersync_source_testkit::SecantusServer::start().await,
        ) else {
            return;
        };
        let url = format!(
            "mongodb://127.0.0.1:{}/d?directConnection=true",
            server.port()
        );
        let client = mongodb::Client::with_uri_str(&url).await.unwrap();
        let coll = client.database("d").collection::<RawDocumentBuf>("c");
        let ids = [
            Bson::Int32(1),
            Bson::Int64(2),
            Bson::Double(2.5),
            Bson::String("a".into()),
            Bson::String("b".into()),
            Bson::Document(doc! {"x": 1}),
            Bson::ObjectId(ObjectId::parse_str("6b07a9e2c7e3e60f51e96cc9").unwrap()),
        ];
        let docs: Vec<_> = ids
            .iter()
            .map(|id| doc! {"_id": id.clone(), "v": 1})
            .collect();
        client
            .database("d")
            .collection::<mongodb::bson::Document>("c")
            .insert_many(docs)
            .await
            .unwrap();
        for id in &ids {
            let after = AfterId::from_bson(id.clone()).unwrap();
            for limit in [1, 3, 10] {
                let raw = collect(find_after_raw(&coll, &after, limit).await).await;
                let driver = collect(find_after(&coll, Some(id.clone()), limit).await).await;
                assert_eq!(raw, driver, "after {id} limit {limit}");
                assert_eq!(id_element(&raw[0]).unwrap(), Some(after.element()));
            }
            let batch = read_batch(&coll, Some(&after), 10, Duration::from_secs(10))
                .await
                .unwrap();
            let position = ids.iter().position(|i| i == id).unwrap();
            assert_eq!(batch.len(), ids.len() - position - 1, "after {id}");
        }
        // A read concern and read preference from the URL or the collection's options go into
        // the hand-built command as into the driver's.
        let configured = client
            .database("d")
            .collection_with_options::<RawDocumentBuf>(
                "c",
                mongodb::options::CollectionOptions::builder()
                    .read_concern(mongodb::options::ReadConcern::local())
                    .selection_criteria(mongodb::options::SelectionCriteria::ReadPreference(
                        mongodb::options::ReadPreference::PrimaryPreferred {
                            options: Default::default(),
                        },
                    ))
                    .build(),
            );
        let after = AfterId::from_bson(ids[3].clone()).unwrap();
        let raw = collect(find_after_raw(&configured, &after, 3).await).await;
        let driver = collect(find_after(&configured, Some(ids[3].clone()), 3).await).await;
        assert_eq!(raw, driver);
        // The bound document and the three after it.
        assert_eq!(raw.len(), 4);
        // A bound that is not UTF-8 goes to the server as its bytes. MongoDB reads on after
        // it (`"a\xff"` sorts between "a" and "b": strings compare bytewise); SecantusDB
        // refuses any such text, and its refusal names the byte, so it got the bytes too (a
        // U+FFFD copy would have been read without complaint).
        let invalid = document_id(&raw_doc(&[&string_element(b"_id", b"a\xff")])).unwrap();
        match read_batch(&coll, Some(&invalid), 10, Duration::from_secs(10)).await {
            Ok(batch) => {
                let read: Vec<Bson> = batch
                    .iter()
                    .map(|d| Bson::try_from(d.get("_id").unwrap().unwrap().to_raw_bson()).unwrap())
                    .collect();
                assert_eq!(read, ids[4..].to_vec());
            }
            Err(e) => {
                let cause = std::error::Error::source(&e).map(|c| c.to_string());
                assert!(
                    cause.as_deref().unwrap_or_default().contains("byte 0xff"),
                    "{e:?}"
                );
            }
        }
    }
}
