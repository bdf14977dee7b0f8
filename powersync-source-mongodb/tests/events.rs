//! Change-event decoding and error classification on the shapes the MongoDB manual documents
//! (paths SecantusDB does not exercise: real split events, MongoDB KeyString tokens, 286).

use powersync_source_core::ErrorKind;
use powersync_source_mongodb::bson::{doc, Bson, RawDocumentBuf, Timestamp};
use powersync_source_mongodb::internals::{
    classify, driver_error, header, resume_error, Fragment, Operation, Reassembler,
};
use powersync_source_mongodb::mongodb::error::{CommandError, Error, ErrorKind as DriverKind};

fn raw(d: powersync_source_mongodb::bson::Document) -> RawDocumentBuf {
    RawDocumentBuf::from_document(&d).unwrap()
}

#[test]
fn update_event_header() {
    // The manual's update event.
    let e = raw(doc! {
        "_id": {"_data": "82635019A0000000012B042C0100296E5A1004"},
        "operationType": "update",
        "clusterTime": Timestamp { time: 1666193824, increment: 1 },
        "wallTime": powersync_source_mongodb::bson::DateTime::from_millis(1666193824000),
        "ns": {"db": "engineering", "coll": "users"},
        "documentKey": {"_id": 1},
        "updateDescription": {"updatedFields": {"email": "alice@10gen.com"}, "removedFields": ["phoneNumber"], "truncatedArrays": []},
        "fullDocument": {"_id": 1, "name": "Alice", "email": "alice@10gen.com"},
    });
    let h = header(&e).unwrap();
    assert_eq!(h.op, Operation::Update);
    assert_eq!(h.db.as_deref(), Some("engineering"));
    assert_eq!(h.coll.as_deref(), Some("users"));
    assert_eq!(
        (h.cluster_time.time, h.cluster_time.increment),
        (1666193824, 1)
    );
    assert_eq!(
        h.position().resume_token,
        "82635019A0000000012B042C0100296E5A1004"
    );
    assert!(h.split.is_none());
}

#[test]
fn malformed_events_are_decode_errors() {
    for d in [
        doc! {"operationType": "insert"},
        doc! {"_id": {"_data": "00"}, "clusterTime": Timestamp { time: 1, increment: 1 }},
        doc! {"_id": {"_data": "00"}, "operationType": "insert"},
        doc! {"_id": {"x": 1}, "operationType": "insert", "clusterTime": Timestamp { time: 1, increment: 1 }},
        doc! {"_id": {"_data": "00"}, "operationType": "insert", "clusterTime": Timestamp { time: 1, increment: 1 }, "splitEvent": {"fragment": 3, "of": 2}},
    ] {
        let err = header(&raw(d.clone())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode, "{d}");
    }
}

#[test]
fn split_events_are_reassembled() {
    // $changeStreamSplitLargeEvent: fragments with their own tokens, fields spread over them.
    let ts = Timestamp {
        time: 10,
        increment: 2,
    };
    let f1 = raw(
        doc! {"_id": {"_data": "T1"}, "splitEvent": {"fragment": 1, "of": 3}, "operationType": "update", "clusterTime": ts, "ns": {"db": "d", "coll": "c"}, "documentKey": {"_id": 7}, "fullDocument": {"_id": 7, "big": "x"}},
    );
    let f2 = raw(
        doc! {"_id": {"_data": "T2"}, "splitEvent": {"fragment": 2, "of": 3}, "fullDocumentBeforeChange": {"_id": 7, "big": "y"}},
    );
    let f3 = raw(
        doc! {"_id": {"_data": "T3"}, "splitEvent": {"fragment": 3, "of": 3}, "updateDescription": {"updatedFields": {"big": "x"}}},
    );
    let mut r = Reassembler::default();
    let split = |n| Some(Fragment { fragment: n, of: 3 });
    assert!(r.push(f1, split(1)).unwrap().is_none());
    assert!(r.push(f2, split(2)).unwrap().is_none());
    let whole = r.push(f3, split(3)).unwrap().expect("complete");
    let h = header(&whole).unwrap();
    assert_eq!(h.token, "T3");
    assert!(h.split.is_none());
    assert_eq!(h.op, Operation::Update);
    assert!(whole.get("fullDocument").unwrap().is_some());
    assert!(whole.get("fullDocumentBeforeChange").unwrap().is_some());
    assert!(whole.get("updateDescription").unwrap().is_some());

    // Out-of-order fragments are errors, not silent merges.
    let mut r = Reassembler::default();
    let f2 = raw(doc! {"_id": {"_data": "T2"}, "splitEvent": {"fragment": 2, "of": 3}});
    assert!(r.push(f2, split(2)).is_err());
    // `fragment 1 of 1` (SecantusDB marks every event so) passes through.
    let one = raw(doc! {"_id": {"_data": "T"}, "splitEvent": {"fragment": 1, "of": 1}});
    assert!(r
        .push(one, Some(Fragment { fragment: 1, of: 1 }))
        .unwrap()
        .is_some());
}

#[test]
fn invalidate_and_rename_shapes() {
    let inv = raw(
        doc! {"_id": {"_data": "AA"}, "operationType": "invalidate", "clusterTime": Timestamp { time: 5, increment: 1 }},
    );
    assert_eq!(header(&inv).unwrap().op, Operation::Invalidate);
    let ren = raw(
        doc! {"_id": {"_data": "AB"}, "operationType": "rename", "clusterTime": Timestamp { time: 5, increment: 2 }, "ns": {"db": "d", "coll": "a"}, "to": {"db": "d", "coll": "b"}},
    );
    assert_eq!(header(&ren).unwrap().op, Operation::Rename);
    let other = raw(
        doc! {"_id": {"_data": "AC"}, "operationType": "createIndexes", "clusterTime": Timestamp { time: 5, increment: 3 }, "ns": {"db": "d", "coll": "a"}},
    );
    assert_eq!(header(&other).unwrap().op, Operation::Other);
}

fn command_error(code: i32, name: &str) -> Error {
    let cmd: CommandError = powersync_source_mongodb::bson::from_bson(Bson::Document(
        doc! {"code": code, "codeName": name, "errmsg": format!("{name} from the server")},
    ))
    .unwrap();
    Error::from(DriverKind::Command(cmd))
}

#[test]
fn server_codes_map_to_kinds() {
    assert_eq!(
        classify(&command_error(286, "ChangeStreamHistoryLost")),
        ErrorKind::HistoryLost
    );
    assert_eq!(
        classify(&command_error(280, "ChangeStreamFatalError")),
        ErrorKind::HistoryLost
    );
    assert_eq!(
        classify(&command_error(18, "AuthenticationFailed")),
        ErrorKind::Auth
    );
    assert_eq!(
        classify(&command_error(13, "Unauthorized")),
        ErrorKind::Prerequisite
    );
    assert_eq!(
        classify(&command_error(47, "NoMatchingDocument")),
        ErrorKind::Prerequisite
    );
    assert_eq!(
        classify(&command_error(91, "ShutdownInProgress")),
        ErrorKind::Connection
    );
    assert_eq!(
        classify(&command_error(10107, "NotWritablePrimary")),
        ErrorKind::Connection
    );
    assert_eq!(
        classify(&command_error(43, "CursorNotFound")),
        ErrorKind::Connection
    );
    // A rejected token when resuming is HistoryLost, not a generic failure.
    assert_eq!(
        resume_error("resuming", command_error(260, "InvalidResumeToken")).kind(),
        ErrorKind::HistoryLost
    );
    assert_eq!(
        resume_error("resuming", command_error(9, "FailedToParse")).kind(),
        ErrorKind::HistoryLost
    );
    let io = Error::from(DriverKind::Io(std::sync::Arc::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    ))));
    assert_eq!(classify(&io), ErrorKind::Connection);
    assert!(resume_error("reading", io).is_retryable());
}

/// The server's code travels with the error ([`SourceError::code`]) and the driver error is the
/// cause, not text pasted into the message.
#[test]
fn server_codes_travel_with_the_error() {
    for (code, name, kind) in [
        (286, "ChangeStreamHistoryLost", ErrorKind::HistoryLost),
        (13, "Unauthorized", ErrorKind::Prerequisite),
        (18, "AuthenticationFailed", ErrorKind::Auth),
        (91, "ShutdownInProgress", ErrorKind::Connection),
    ] {
        let e = driver_error("reading the change stream", command_error(code, name));
        assert_eq!(e.kind(), kind, "{e}");
        assert_eq!(e.code(), Some(code.to_string().as_str()), "{e}");
        assert_eq!(e.message(), "reading the change stream");
        assert!(
            e.to_string().contains(&format!("{name} from the server")),
            "{e}"
        );
    }
    let e = resume_error("resuming", command_error(260, "InvalidResumeToken"));
    assert_eq!(e.code(), Some("260"));
    let io = Error::from(DriverKind::Io(std::sync::Arc::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    ))));
    assert_eq!(driver_error("reading", io).code(), None);
}
