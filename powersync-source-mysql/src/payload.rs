//! MySQL 8 `TRANSACTION_PAYLOAD_EVENT` (type 40): a whole transaction's events, zstd
//! compressed (`binlog_transaction_compression=ON`).
//!
//! `mysql_async` decompresses these and yields the inner events, but on a decompression
//! failure it silently yields none, which would drop a transaction. The connector therefore
//! decompresses each payload itself first, with a size bound, and checks that it holds
//! well-formed events and exactly the size it announces; any failure is a
//! [`Decode`](powersync_source_core::ErrorKind::Decode) error that ends the stream.

use std::io::Read;

use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{Event, TransactionPayloadEvent};
use mysql_common::binlog::EventStreamReader;
use mysql_common::io::ParseBuf;

/// `TRANSACTION_PAYLOAD_EVENT`.
pub(crate) const TRANSACTION_PAYLOAD: u8 = 40;

/// Largest decompressed payload accepted (MySQL's own limit is max_allowed_packet, 1 GiB).
const MAX_UNCOMPRESSED: u64 = 1 << 30;

/// Decompresses and parses a payload event; returns the number of inner events.
pub(crate) fn check(event: &Event) -> Result<usize, String> {
    let tpe: TransactionPayloadEvent<'_> = event
        .read_event()
        .map_err(|e| format!("malformed transaction payload event: {e}"))?;
    let declared = tpe.uncompressed_size();
    if declared > MAX_UNCOMPRESSED {
        return Err(format!(
            "transaction payload announces {declared} uncompressed bytes, more than the {MAX_UNCOMPRESSED} accepted"
        ));
    }
    let mut reader = tpe
        .decompressed()
        .map_err(|e| format!("cannot decompress transaction payload: {e}"))?;
    let mut data = Vec::with_capacity(declared.min(1 << 24) as usize);
    (&mut reader)
        .take(MAX_UNCOMPRESSED + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot decompress transaction payload: {e}"))?;
    if data.len() as u64 != declared && declared != 0 {
        return Err(format!(
            "transaction payload decompressed to {} bytes, it announces {declared}",
            data.len()
        ));
    }
    inner_events(&data)
}

/// Parses decompressed payload bytes into events; returns how many.
pub(crate) fn inner_events(data: &[u8]) -> Result<usize, String> {
    // Frame every event by its header's size first: mysql_common's reader unwraps a short
    // read, so it only ever sees exactly one whole event.
    let mut frames = Vec::new();
    let mut rest = ParseBuf(data);
    while !rest.is_empty() {
        let at = data.len() - rest.len();
        // The event size is the u32 after timestamp (4), type (1) and server id (4).
        let mut header = ParseBuf(rest.0);
        let size = header
            .checked_skip(9)
            .then(|| header.checked_eat_u32_le())
            .flatten()
            .ok_or("truncated event header inside a transaction payload")?
            as usize;
        let frame = rest
            .checked_eat(size)
            .filter(|_| size >= 19)
            .ok_or_else(|| {
                format!(
                "event of {size} bytes at offset {at} does not fit the {}-byte transaction payload",
                data.len()
            )
            })?;
        frames.push(frame);
    }
    let frames: Vec<Vec<u8>> = frames.into_iter().map(<[u8]>::to_vec).collect();
    // Last line of defence against a panic inside the parser on a well-framed but corrupt
    // event: it becomes an error.
    std::panic::catch_unwind(move || {
        let mut esr = EventStreamReader::new(BinlogVersion::Version4);
        for frame in &frames {
            match esr.read_decompressed(&frame[..]) {
                Ok(Some(_)) => {}
                Ok(None) => return Err("empty event inside a transaction payload".to_owned()),
                Err(e) => return Err(format!("malformed event inside a transaction payload: {e}")),
            }
        }
        Ok(frames.len())
    })
    .unwrap_or_else(|_| Err("malformed event inside a transaction payload".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::binlog::consts::TransactionPayloadCompressionType;
    use mysql_common::binlog::events::{EventData, FormatDescriptionEvent, GtidEvent};
    use mysql_common::proto::MySerialize;

    /// A raw v4 event: 19-byte header (timestamp, type, server id, size, end position,
    /// flags) and the payload, without checksum.
    fn raw_event(event_type: u8, payload: &[u8], log_pos: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        out.push(event_type);
        out.extend_from_slice(&7u32.to_le_bytes());
        out.extend_from_slice(&((19 + payload.len()) as u32).to_le_bytes());
        out.extend_from_slice(&log_pos.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn gtid_event_bytes(gno: u64) -> Vec<u8> {
        let mut payload = Vec::new();
        GtidEvent::new([0x3e; 16], gno).serialize(&mut payload);
        raw_event(33, &payload, 0)
    }

    fn read(bytes: &[u8]) -> Event {
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
        Event::read(&fde, bytes).unwrap()
    }

    /// A MySQL 8 GTID event (type 33, built to the documented layout by mysql_common's own
    /// encoder) decodes to the uuid and number the connector adds to its GTID set.
    #[test]
    fn mysql_gtid_event() {
        let ev = read(&gtid_event_bytes(42));
        let Ok(Some(EventData::GtidEvent(g))) = ev.read_data() else {
            panic!("not a GTID event");
        };
        let mut set =
            crate::gtid::MySqlGtidSet::parse("3e3e3e3e-3e3e-3e3e-3e3e-3e3e3e3e3e3e:1-41").unwrap();
        set.add(g.sid(), g.gno());
        assert_eq!(set.to_string(), "3e3e3e3e-3e3e-3e3e-3e3e-3e3e3e3e3e3e:1-42");
    }

    /// A zstd transaction payload holding two events is counted; a corrupted or mis-sized one
    /// is an error (never a silently empty transaction).
    #[test]
    fn transaction_payload_zstd() {
        let mut inner = gtid_event_bytes(1);
        inner.extend_from_slice(&gtid_event_bytes(2));
        let zstd_event = |size: u64| {
            let compressed = zstd::encode_all(&inner[..], 3).unwrap();
            TransactionPayloadEvent::new(
                compressed.len() as u64,
                TransactionPayloadCompressionType::ZSTD,
                size,
                compressed,
            )
        };
        let tpe = zstd_event(inner.len() as u64);
        let mut payload = Vec::new();
        tpe.serialize(&mut payload);
        let ev = read(&raw_event(TRANSACTION_PAYLOAD, &payload, 500));
        assert_eq!(check(&ev).unwrap(), 2);

        // Flip bytes inside the compressed frame.
        let mut bad = payload.clone();
        let n = bad.len();
        for b in &mut bad[n - 6..n - 2] {
            *b ^= 0x5a;
        }
        let ev = read(&raw_event(TRANSACTION_PAYLOAD, &bad, 500));
        assert!(check(&ev).is_err());

        // Announce a different uncompressed size.
        let lying = zstd_event(inner.len() as u64 + 10);
        let mut payload = Vec::new();
        lying.serialize(&mut payload);
        let ev = read(&raw_event(TRANSACTION_PAYLOAD, &payload, 500));
        assert!(check(&ev).is_err());
    }

    #[test]
    fn empty_payload_has_no_events() {
        assert_eq!(inner_events(&[]).unwrap(), 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(inner_events(&[1, 2, 3]).is_err());
        let mut header = vec![0u8; 19];
        header[4] = 2; // QUERY_EVENT
        header[9..13].copy_from_slice(&200u32.to_le_bytes()); // event size beyond the data
        assert!(inner_events(&header).is_err());
    }
}
