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
    // mysql_common's reader indexes and unwraps on malformed lengths; contain that here so a
    // corrupt payload is an error, not a crash.
    let data = data.to_vec();
    std::panic::catch_unwind(move || {
        let mut esr = EventStreamReader::new(BinlogVersion::Version4);
        let mut cursor = std::io::Cursor::new(&data[..]);
        let mut n = 0;
        loop {
            if cursor.position() as usize >= data.len() {
                return Ok(n);
            }
            match esr.read_decompressed(&mut cursor) {
                Ok(Some(ev)) => {
                    if ev.header().event_size() < 19 {
                        return Err("inner event shorter than its header".to_owned());
                    }
                    n += 1;
                }
                Ok(None) => return Ok(n),
                Err(e) => return Err(format!("malformed event inside a transaction payload: {e}")),
            }
        }
    })
    .unwrap_or_else(|_| Err("malformed event inside a transaction payload".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
