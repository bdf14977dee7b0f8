//! Change events as the server sends them, read from raw BSON (no intermediate copy).
//!
//! Shapes follow the MongoDB manual's "Change Events" page: every event has `_id` (the resume
//! token, `{_data: "<hex>"}`), `operationType` and `clusterTime`; data events have `ns`
//! (`{db, coll}`) and `documentKey`; `fullDocument` / `fullDocumentBeforeChange` when requested
//! and available; `rename` has `to`; events cut by `$changeStreamSplitLargeEvent` carry
//! `splitEvent: {fragment, of}`.

use mongodb::bson::raw::{RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::bson::Timestamp;
use powersync_source_core::position::MongoPosition;
use powersync_source_core::{SourceError, UnixMicros};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A document was inserted.
    Insert,
    /// A document was updated (`$set`, …).
    Update,
    /// A document was replaced whole.
    Replace,
    /// A document was deleted.
    Delete,
    /// A collection was dropped.
    Drop,
    /// A collection was renamed (`to` names the new namespace).
    Rename,
    /// The database was dropped.
    DropDatabase,
    /// The stream cannot continue past this event without `startAfter`.
    Invalidate,
    /// Anything else (DDL events of `showExpandedEvents`, future types): position only.
    Other,
}

impl Operation {
    fn parse(s: &str) -> Operation {
        match s {
            "insert" => Operation::Insert,
            "update" => Operation::Update,
            "replace" => Operation::Replace,
            "delete" => Operation::Delete,
            "drop" => Operation::Drop,
            "rename" => Operation::Rename,
            "dropDatabase" => Operation::DropDatabase,
            "invalidate" => Operation::Invalidate,
            _ => Operation::Other,
        }
    }
}

/// Which fragment of a split event this is (`splitEvent`), 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// This fragment's number.
    pub fragment: i64,
    /// How many fragments the event has.
    pub of: i64,
}

/// A change event's header: enough to order, filter and frame it. The data fields are read
/// from the raw document on demand.
#[derive(Debug, Clone)]
pub struct EventHeader {
    /// What happened.
    pub op: Operation,
    /// The resume token's `_data`.
    pub token: String,
    /// When it committed.
    pub cluster_time: Timestamp,
    /// Wall-clock commit time (MongoDB 6.0+), when sent.
    pub wall_time: Option<UnixMicros>,
    /// `ns.db`.
    pub db: Option<String>,
    /// `ns.coll`.
    pub coll: Option<String>,
    /// Split-event fragment, if the event was split.
    pub split: Option<Fragment>,
    /// The multi-document transaction (`lsid` bytes and `txnNumber`) the event belongs to;
    /// `None` for a write outside a transaction, which is its own transaction.
    pub txn: Option<(Vec<u8>, i64)>,
}

impl EventHeader {
    /// The stream position just after this event.
    pub fn position(&self) -> MongoPosition {
        MongoPosition {
            seconds: self.cluster_time.time,
            increment: self.cluster_time.increment,
            resume_token: self.token.clone(),
        }
    }
}

fn bad(what: impl std::fmt::Display) -> SourceError {
    SourceError::decode(format!("malformed change event: {what}"))
}

fn get<'a>(doc: &'a RawDocument, key: &str) -> Result<Option<RawBsonRef<'a>>, SourceError> {
    doc.get(key)
        .map_err(|e| bad(format!("field {key}")).with_source(e))
}

/// The `_data` string of a resume token document.
pub fn token_data(token: &RawDocument) -> Result<String, SourceError> {
    match get(token, "_data")? {
        Some(RawBsonRef::String(s)) => Ok(s.to_owned()),
        Some(RawBsonRef::Binary(b)) => Ok(b.bytes.iter().map(|b| format!("{b:02x}")).collect()),
        _ => Err(bad("the resume token has no `_data` string")),
    }
}

/// Reads an event's header.
pub fn header(event: &RawDocument) -> Result<EventHeader, SourceError> {
    let token = match get(event, "_id")? {
        Some(RawBsonRef::Document(t)) => token_data(t)?,
        _ => {
            return Err(bad(
                "no `_id` resume token (a pipeline stage must not change `_id`)",
            ))
        }
    };
    let op = match get(event, "operationType")? {
        Some(RawBsonRef::String(s)) => Operation::parse(s),
        _ => return Err(bad("no operationType")),
    };
    let cluster_time = match get(event, "clusterTime")? {
        Some(RawBsonRef::Timestamp(ts)) => ts,
        _ => return Err(bad(format!("{op:?} event without clusterTime"))),
    };
    let wall_time = match get(event, "wallTime")? {
        Some(RawBsonRef::DateTime(dt)) => {
            Some(UnixMicros(dt.timestamp_millis().saturating_mul(1000)))
        }
        _ => None,
    };
    let (mut db, mut coll) = (None, None);
    if let Some(RawBsonRef::Document(ns)) = get(event, "ns")? {
        if let Some(RawBsonRef::String(s)) = get(ns, "db")? {
            db = Some(s.to_owned());
        }
        if let Some(RawBsonRef::String(s)) = get(ns, "coll")? {
            coll = Some(s.to_owned());
        }
    }
    let split = match get(event, "splitEvent")? {
        Some(RawBsonRef::Document(s)) => {
            let num = |k: &str| -> Result<i64, SourceError> {
                match get(s, k)? {
                    Some(RawBsonRef::Int32(i)) => Ok(i64::from(i)),
                    Some(RawBsonRef::Int64(i)) => Ok(i),
                    _ => Err(bad(format!("splitEvent.{k} is not an integer"))),
                }
            };
            let f = Fragment {
                fragment: num("fragment")?,
                of: num("of")?,
            };
            if f.fragment < 1 || f.of < 1 || f.fragment > f.of {
                return Err(bad(format!(
                    "splitEvent fragment {} of {}",
                    f.fragment, f.of
                )));
            }
            Some(f)
        }
        _ => None,
    };
    let txn = match (get(event, "lsid")?, get(event, "txnNumber")?) {
        (Some(RawBsonRef::Document(lsid)), Some(RawBsonRef::Int64(n))) => {
            Some((lsid.as_bytes().to_vec(), n))
        }
        (Some(RawBsonRef::Document(lsid)), Some(RawBsonRef::Int32(n))) => {
            Some((lsid.as_bytes().to_vec(), i64::from(n)))
        }
        _ => None,
    };
    Ok(EventHeader {
        op,
        token,
        cluster_time,
        wall_time,
        db,
        coll,
        split,
        txn,
    })
}

/// A document-valued field (`fullDocument`, `fullDocumentBeforeChange`, `documentKey`); `None`
/// when absent or null.
pub fn document_field<'a>(
    event: &'a RawDocument,
    key: &str,
) -> Result<Option<&'a RawDocument>, SourceError> {
    match get(event, key)? {
        Some(RawBsonRef::Document(d)) => Ok(Some(d)),
        Some(RawBsonRef::Null) | Some(RawBsonRef::Undefined) | None => Ok(None),
        Some(_) => Err(bad(format!("`{key}` is not a document"))),
    }
}

/// The `documentKey` document (`{_id: …}`, plus the shard key on sharded collections).
///
/// Its `_id` is read by
/// [`CollectionShape::key_row_from_document_key`](crate::document_row::CollectionShape::key_row_from_document_key),
/// from the bytes with lossy UTF-8 like every row value: the `bson` crate's accessors refuse a
/// string `_id` that is not valid UTF-8, which would stop the stream on a change to such a
/// document.
pub fn document_key(event: &RawDocument) -> Result<&RawDocument, SourceError> {
    document_field(event, "documentKey")?.ok_or_else(|| bad("no documentKey"))
}

/// The `to` namespace of a rename: `(db, coll)`.
pub fn rename_target(event: &RawDocument) -> Result<(String, String), SourceError> {
    let to = document_field(event, "to")?.ok_or_else(|| bad("rename without `to`"))?;
    match (get(to, "db")?, get(to, "coll")?) {
        (Some(RawBsonRef::String(db)), Some(RawBsonRef::String(coll))) => {
            Ok((db.to_owned(), coll.to_owned()))
        }
        _ => Err(bad("rename `to` without db and coll")),
    }
}

/// Reassembles events cut by `$changeStreamSplitLargeEvent`.
///
/// Fragments arrive in order, each with its own resume token; together their fields make the
/// original event. The reassembled event keeps the *last* fragment's `_id` and `splitEvent`
/// removed, so its position is after the whole event (resuming from an earlier fragment's token
/// would deliver the rest again, which is why positions are only taken from whole events).
#[derive(Debug, Default)]
pub struct Reassembler {
    parts: Option<(RawDocumentBuf, i64, i64)>,
}

impl Reassembler {
    /// Feeds one event; returns the whole event once complete (an unsplit event at once).
    pub fn push(
        &mut self,
        event: RawDocumentBuf,
        split: Option<Fragment>,
    ) -> Result<Option<RawDocumentBuf>, SourceError> {
        let Some(f) = split else {
            if self.parts.is_some() {
                return Err(bad(
                    "an unsplit event arrived before the last fragment of a split one",
                ));
            }
            return Ok(Some(event));
        };
        if f.of == 1 {
            // Some servers mark every event `fragment 1 of 1`.
            return Ok(Some(event));
        }
        let mut merged = match self.parts.take() {
            None if f.fragment == 1 => RawDocumentBuf::new(),
            None => {
                return Err(bad(format!(
                    "fragment {} of {} without its first",
                    f.fragment, f.of
                )))
            }
            Some((doc, last, of)) if last + 1 == f.fragment && of == f.of => doc,
            Some((_, last, of)) => {
                return Err(bad(format!(
                    "fragment {} of {} after fragment {last} of {of}",
                    f.fragment, f.of
                )))
            }
        };
        for element in event.iter() {
            let (key, value) = element.map_err(bad)?;
            if key == "splitEvent" || (key == "_id" && f.fragment != f.of) {
                continue;
            }
            // Some servers repeat the header fields in every fragment: keep the first.
            if key != "_id" && merged.get(key).ok().flatten().is_some() {
                continue;
            }
            merged.append_ref(key, value);
        }
        if f.fragment == f.of {
            Ok(Some(merged))
        } else {
            self.parts = Some((merged, f.fragment, f.of));
            Ok(None)
        }
    }

    /// Forgets a partial event (after a reconnect, which replays it from its first fragment).
    pub fn clear(&mut self) {
        self.parts = None;
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{rawdoc, Timestamp};
    use powersync_source_core::{TableName, Value};

    use super::*;
    use crate::document_row::CollectionShape;

    /// A document from hand-made elements (`type byte, name, 0, value`).
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

    /// The element `_id: <text>`, `text` taken as bytes (SecantusDB refuses to store a
    /// string that is not UTF-8; MongoDB stores what old drivers wrote).
    fn id_element(text: &[u8]) -> Vec<u8> {
        let mut e = b"\x02_id\0".to_vec();
        e.extend_from_slice(&i32::try_from(text.len() + 1).unwrap().to_le_bytes());
        e.extend_from_slice(text);
        e.push(0);
        e
    }

    fn event(op: &str, key: &RawDocumentBuf, full: Option<&RawDocumentBuf>) -> RawDocumentBuf {
        let mut event = rawdoc! {
            "_id": {"_data": "8200"},
            "operationType": op,
            "clusterTime": Timestamp { time: 7, increment: 1 },
            "ns": {"db": "d", "coll": "c"},
        };
        event.append("documentKey", key.clone());
        if let Some(full) = full {
            event.append("fullDocument", full.clone());
        }
        event
    }

    /// A delete and an update of a document whose string `_id` is not valid UTF-8: the key
    /// reads lossily (U+FFFD), the same key the document's full image gives, and nothing
    /// errors (the `bson` crate's accessor refuses that `_id`).
    #[test]
    fn a_document_key_that_is_not_utf8_reads_lossily() {
        let id = id_element(b"a\xffb");
        let doc = raw_doc(&[&id, b"\x10v\0\x01\0\0\0"]);
        let key = raw_doc(&[&id]);
        assert!(key.get("_id").is_err(), "the bson crate refuses it");
        let mut shape = CollectionShape::new(TableName::new("d", "c"));
        let expected = Value::Text("a\u{fffd}b".into());

        let delete = event("delete", &key, None);
        let h = header(&delete).unwrap();
        assert_eq!(h.op, Operation::Delete);
        let row = shape
            .key_row_from_document_key(document_key(&delete).unwrap())
            .unwrap();
        assert_eq!(row.values(), std::slice::from_ref(&expected));

        let update = event("update", &key, Some(&doc));
        assert_eq!(header(&update).unwrap().op, Operation::Update);
        let full = shape.row(document_field(&update, "fullDocument").unwrap().unwrap());
        assert_eq!(
            full.unwrap().values(),
            &[expected.clone(), Value::Integer(1)]
        );
        let old = shape
            .key_row_from_document_key(document_key(&update).unwrap())
            .unwrap();
        assert_eq!(old.values(), &[expected, Value::Unchanged]);

        let no_key = rawdoc! {
            "_id": {"_data": "8200"},
            "operationType": "delete",
            "clusterTime": Timestamp { time: 7, increment: 1 },
        };
        assert!(document_key(&no_key).is_err());
    }
}
