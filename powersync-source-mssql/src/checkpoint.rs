//! Checkpoints of the SQL Server stream: the core [`MssqlPosition`] plus the capture instance
//! each table is read from.
//!
//! Body: `<lsn: 20 hex>:<seqval: 20 hex>~<schema>.<table>=<instance>,…` (names percent-encoded
//! outside `[A-Za-z0-9_-]`), e.g.
//! `mssql:v1:0000002A000001F00003:FFFFFFFFFFFFFFFFFFFF~dbo.orders=dbo_orders`. The fixed-width
//! position comes first, so checkpoints order as strings exactly as positions order.
//!
//! Why the instance is stored: a table can have two capture instances (after a schema change
//! the DBA creates a second one, then drops the first). A stream resumed from a checkpoint must
//! continue on the instance it was reading, switch at the new instance's start LSN, and tell a
//! lost instance (dropped before the stream passed its successor's start: changes are missing)
//! from a normal switch. The position alone cannot say which instance was in use.
//!
//! Stream checkpoints are always at a transaction boundary (`seqval` all `FF`): resuming from
//! one reads from `sys.fn_cdc_increment_lsn(lsn)`.

use std::collections::BTreeMap;

use powersync_source_core::position::{MssqlLsn, MssqlPosition};
use powersync_source_core::{Checkpoint, Position, SourceError, TableName};

/// A decoded stream checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPoint {
    /// Everything committed at or below `position.lsn` has been emitted.
    pub position: MssqlPosition,
    /// The capture instance of each table at that point (empty for checkpoints written by
    /// [`crate::MssqlSource`]'s `write_checkpoint`, which only name a position).
    pub instances: BTreeMap<TableName, String>,
}

impl StreamPoint {
    /// The point after the transaction committed at `lsn`.
    pub fn after(lsn: MssqlLsn, instances: BTreeMap<TableName, String>) -> Self {
        StreamPoint {
            position: MssqlPosition::after_transaction(lsn),
            instances,
        }
    }

    /// The checkpoint string.
    pub fn to_checkpoint(&self) -> Checkpoint {
        let mut body = String::with_capacity(64);
        self.position.encode_body(&mut body);
        if !self.instances.is_empty() {
            body.push('~');
            for (i, (table, instance)) in self.instances.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                escape(&mut body, &table.schema);
                body.push('.');
                escape(&mut body, &table.name);
                body.push('=');
                escape(&mut body, instance);
            }
        }
        // The source tag and version are ours, so parsing cannot fail; fall back to the bare
        // position rather than panic.
        Checkpoint::parse(&format!(
            "{}:v{}:{body}",
            MssqlPosition::SOURCE,
            MssqlPosition::VERSION
        ))
        .unwrap_or_else(|_| self.position.to_checkpoint())
    }

    /// Parses a checkpoint of this source; garbage is a `Config` error.
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self, SourceError> {
        if checkpoint.source() != MssqlPosition::SOURCE {
            return Err(SourceError::config(format!(
                "checkpoint `{checkpoint}` belongs to a {} source, not mssql",
                checkpoint.source()
            )));
        }
        let corrupt = |why: String| {
            SourceError::config(format!("checkpoint `{checkpoint}` is corrupt: {why}"))
        };
        let (pos, map) = match checkpoint.body().split_once('~') {
            Some((p, m)) => (p, Some(m)),
            None => (checkpoint.body(), None),
        };
        let position = MssqlPosition::decode_body(pos).map_err(corrupt)?;
        let mut instances = BTreeMap::new();
        for entry in map.unwrap_or_default().split(',').filter(|e| !e.is_empty()) {
            let (table, instance) = entry
                .split_once('=')
                .ok_or_else(|| corrupt(format!("`{entry}` is not table=instance")))?;
            let (schema, name) = table
                .split_once('.')
                .ok_or_else(|| corrupt(format!("`{table}` is not schema.table")))?;
            instances.insert(
                TableName::new(
                    unescape(schema).map_err(corrupt)?,
                    unescape(name).map_err(corrupt)?,
                ),
                unescape(instance).map_err(corrupt)?,
            );
        }
        Ok(StreamPoint {
            position,
            instances,
        })
    }
}

fn escape(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let v = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad escape in `{s}`"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        let mut map = BTreeMap::new();
        map.insert(TableName::new("dbo", "orders"), "dbo_orders".to_string());
        map.insert(TableName::new("sales.x", "a=b,c"), "inst %1".to_string());
        let mut lsn = [0u8; 10];
        lsn[9] = 0x2A;
        let p = StreamPoint::after(MssqlLsn(lsn), map.clone());
        let c = p.to_checkpoint();
        assert!(
            c.as_str()
                .starts_with("mssql:v1:0000000000000000002A:FFFFFFFFFFFFFFFFFFFF~"),
            "{c}"
        );
        let back = StreamPoint::from_checkpoint(&Checkpoint::parse(c.as_str()).unwrap()).unwrap();
        assert_eq!(back, p);
        let later = StreamPoint::after(MssqlLsn(lsn).increment(), BTreeMap::new()).to_checkpoint();
        assert!(later > c);
        for bad in [
            "mssql:v1:00",
            "mssql:v1:0000000000000000002A:FFFFFFFFFFFFFFFFFFFF~x",
            "mssql:v1:0000000000000000002A:FFFFFFFFFFFFFFFFFFFF~a.b=%zz",
        ] {
            let c = Checkpoint::parse(bad).unwrap();
            assert!(StreamPoint::from_checkpoint(&c).is_err(), "{bad}");
        }
    }
}
