//! Fuzzes every decoding entry point of `powersync_source_postgres::pgoutput`:
//! `cargo fuzz run pgoutput` from `powersync-source-postgres/`.
//!
//! Decoding must never panic, errors must point inside the input, and whatever decodes must be
//! fully iterable with the lengths it announces.

#![no_main]

use libfuzzer_sys::fuzz_target;
use powersync_source_postgres::pgoutput::{
    DecodeError, PgOutputDecoder, PgOutputMessage, ReplicationMessage, StandbyStatusUpdate,
    TupleData,
};

fn check_error(e: &DecodeError, input: &[u8]) {
    assert!(e.offset <= input.len(), "{e} (input {} bytes)", input.len());
    let _ = e.to_string();
}

fn check_tuple(t: &TupleData<'_>) {
    let mut n = 0;
    for v in t.iter() {
        std::hint::black_box(v.bytes());
        n += 1;
    }
    assert_eq!(n, t.len());
}

fn check_message(m: &PgOutputMessage<'_>, input: &[u8]) {
    assert_eq!(Some(&m.type_byte()), input.first());
    match m {
        PgOutputMessage::Relation(r) => assert_eq!(r.columns.iter().count(), r.columns.len()),
        PgOutputMessage::Insert(i) => check_tuple(&i.new),
        PgOutputMessage::Update(u) => {
            if let Some(old) = &u.old {
                check_tuple(&old.tuple());
            }
            check_tuple(&u.new);
        }
        PgOutputMessage::Delete(d) => check_tuple(&d.old.tuple()),
        PgOutputMessage::Truncate(t) => {
            assert_eq!(t.relation_oids.iter().count(), t.relation_oids.len())
        }
        _ => {}
    }
    let _ = format!("{m:?}");
}

fn pgoutput(data: &[u8], in_stream: bool) {
    match PgOutputMessage::decode(data, in_stream) {
        Ok(m) => check_message(&m, data),
        Err(e) => check_error(&e, data),
    }
}

fuzz_target!(|data: &[u8]| {
    // The input as one pgoutput message, outside and inside a stream block.
    pgoutput(data, false);
    pgoutput(data, true);

    // The input as a replication CopyData payload.
    match ReplicationMessage::decode(data) {
        Ok(ReplicationMessage::XLogData(x)) => {
            pgoutput(x.data, false);
            pgoutput(x.data, true);
        }
        Ok(ReplicationMessage::PrimaryKeepalive(_)) => {}
        Err(e) => check_error(&e, data),
    }

    // The input as a standby status update: what decodes re-encodes to the same fields.
    match StandbyStatusUpdate::decode(data) {
        Ok(u) => assert_eq!(StandbyStatusUpdate::decode(&u.to_bytes()), Ok(u)),
        Err(e) => check_error(&e, data),
    }

    // The input as a bare TupleData.
    match TupleData::decode(data) {
        Ok(t) => check_tuple(&t),
        Err(e) => check_error(&e, data),
    }

    // The input as a sequence of messages, each prefixed by a one-byte length, through the
    // stateful decoder (so streamed xids are exercised in sequence).
    let mut decoder = PgOutputDecoder::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        let before = decoder.in_stream();
        match decoder.decode(frame) {
            Ok(m) => check_message(&m, frame),
            Err(e) => {
                check_error(&e, frame);
                assert_eq!(decoder.in_stream(), before);
            }
        }
    }
});
