//! The documents of backfills (see [`powersync_source_core::backfill`]), both in the checkpoint
//! database:
//! - a **watermark** is a document `{_id: ObjectId, backfill: "<mark>", at: Date}` in
//!   `_powersync_checkpoints` (where write-checkpoint markers go too: a marker has no
//!   `backfill` field);
//! - a **signal** is a document `{id: "<request id>", kind: "backfill", tables:
//!   "db.coll,db.coll2"}` in `_powersync_signals` (`_id` any; `tables` may also be an array of
//!   names; a signal without `id` is named by its `_id`). Names without a database are in the
//!   source's first database.
//!
//! The stream reads both from insert events' `fullDocument`; neither is ever a row.

use mongodb::bson::raw::{RawArray, RawBsonRef, RawDocument};
use mongodb::bson::{doc, DateTime, Document};
use powersync_source_core::{SourceError, TableName};

use crate::change_event::document_field;

/// The field of a `_powersync_checkpoints` document that makes it a watermark.
pub(crate) const WATERMARK_FIELD: &str = "backfill";

/// A watermark document for `mark`.
pub(crate) fn watermark_document(id: mongodb::bson::oid::ObjectId, mark: &str) -> Document {
    doc! {"_id": id, WATERMARK_FIELD: mark, "at": DateTime::now()}
}

/// A signal document asking for a backfill of `tables` with request id `id` (also its
/// `_id`, so a retried insert is a duplicate key, not a second request).
pub(crate) fn signal_document(id: &str, tables: &[TableName]) -> Document {
    let names: Vec<String> = tables.iter().map(ToString::to_string).collect();
    doc! {
        "_id": id,
        "id": id,
        "kind": powersync_source_core::backfill::SIGNAL_KIND_BACKFILL,
        "tables": names.join(","),
    }
}

/// The mark of a `_powersync_checkpoints` insert event, when the document is a watermark.
pub(crate) fn watermark_of(event: &RawDocument) -> Result<Option<String>, SourceError> {
    let Some(full) = document_field(event, "fullDocument")? else {
        return Ok(None);
    };
    Ok(match full.get(WATERMARK_FIELD) {
        Ok(Some(RawBsonRef::String(mark))) => Some(mark.to_owned()),
        _ => None,
    })
}

/// A signal as inserted: raw `id`, `kind` and comma-separated `tables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signal {
    pub id: String,
    pub kind: String,
    pub tables: String,
}

/// The signal of a `_powersync_signals` insert event (`None` when it carries no document).
/// Missing or mistyped fields read as empty text: the core then ignores the signal with a
/// warning naming it, instead of stopping the stream.
pub(crate) fn signal_of(event: &RawDocument) -> Result<Option<Signal>, SourceError> {
    let Some(full) = document_field(event, "fullDocument")? else {
        return Ok(None);
    };
    let text = |key: &str| match full.get(key) {
        Ok(Some(RawBsonRef::String(s))) => Some(s.to_owned()),
        _ => None,
    };
    let id = text("id")
        .or_else(|| full.get("_id").ok().flatten().map(id_text))
        .unwrap_or_default();
    let tables = match full.get("tables") {
        Ok(Some(RawBsonRef::String(s))) => s.to_owned(),
        Ok(Some(RawBsonRef::Array(names))) => array_names(names),
        _ => String::new(),
    };
    Ok(Some(Signal {
        id,
        kind: text("kind").unwrap_or_default(),
        tables,
    }))
}

/// An `_id` as a request id: text as is, an ObjectId as hex, anything else as extended JSON.
fn id_text(id: RawBsonRef<'_>) -> String {
    match id {
        RawBsonRef::String(s) => s.to_owned(),
        RawBsonRef::ObjectId(o) => o.to_hex(),
        other => mongodb::bson::Bson::try_from(other.to_raw_bson())
            .map(|b| b.into_relaxed_extjson().to_string())
            .unwrap_or_default(),
    }
}

fn array_names(names: &RawArray) -> String {
    names
        .into_iter()
        .filter_map(|n| match n {
            Ok(RawBsonRef::String(s)) => Some(s.to_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{rawdoc, RawDocumentBuf};

    use super::*;

    fn insert(full: RawDocumentBuf) -> RawDocumentBuf {
        let mut event = rawdoc! {"operationType": "insert"};
        event.append("fullDocument", full);
        event
    }

    #[test]
    fn watermarks_are_told_from_markers() {
        let id = mongodb::bson::oid::ObjectId::new();
        let doc = RawDocumentBuf::from_document(&watermark_document(id, "low:x")).unwrap();
        assert_eq!(
            watermark_of(&insert(doc)).unwrap().as_deref(),
            Some("low:x")
        );
        let marker = rawdoc! {"_id": id, "at": DateTime::now()};
        assert_eq!(watermark_of(&insert(marker)).unwrap(), None);
    }

    #[test]
    fn signals_read_strings_arrays_and_ids() {
        let written = signal_document("r1", &[TableName::new("app", "big")]);
        let doc = RawDocumentBuf::from_document(&written).unwrap();
        assert_eq!(
            signal_of(&insert(doc)).unwrap(),
            Some(Signal {
                id: "r1".into(),
                kind: "backfill".into(),
                tables: "app.big".into()
            })
        );
        let oid = mongodb::bson::oid::ObjectId::new();
        let doc = rawdoc! {"_id": oid, "kind": "backfill", "tables": ["a", "app.b", 3]};
        let s = signal_of(&insert(doc)).unwrap().unwrap();
        assert_eq!((s.id, s.tables), (oid.to_hex(), "a,app.b".to_string()));
        let s = signal_of(&insert(rawdoc! {"_id": 7})).unwrap().unwrap();
        assert_eq!(
            (s.id.as_str(), s.kind.as_str(), s.tables.as_str()),
            ("7", "", "")
        );
    }
}
