//! The initial snapshot: every selected table read in primary-key chunks inside one
//! snapshot-isolation transaction whose LSN is known.
//!
//! See the [crate docs](crate) for why the snapshot holds exactly the changes committed below
//! the marker LSN. A snapshot resumed after a crash (or after a reconnect in the middle) opens a
//! new snapshot transaction and continues each unfinished table after its last emitted key;
//! streaming still starts at the original marker LSN, so every change after it is replayed on
//! top of rows read later. Replaying a change on a row that already shows it converges to the
//! same final row (the last change of each key wins), which is why a resumed snapshot is
//! correct but may show a row's insert again (hosts upsert snapshot rows).

use std::sync::Arc;

use powersync_source_core::runtime::{Emitter, Reconnect, SnapshotBook, Step, Stop, TableStart};
use powersync_source_core::{
    ChangeEvent, OldImage, Op, Result, Row, RowChange, SourceError, TableName, TableSchema, Value,
};

use crate::backend::{timed, CaptureInstance, CdcBackend, CdcConnector};
use crate::poller::PollOptions;
use crate::tables::key_positions;

/// What the snapshot reads.
#[derive(Debug)]
pub(crate) struct SnapshotPlan {
    /// Tables in order, with the instance whose columns are read.
    pub tables: Vec<(TableName, CaptureInstance, Arc<TableSchema>)>,
    /// Progress so far (nothing read yet for a fresh snapshot).
    pub book: SnapshotBook,
    /// Rows per chunk.
    pub chunk_rows: u32,
}

/// Reads the snapshot on `backend` (whose snapshot transaction is open), reconnecting with a new
/// snapshot transaction after retryable failures (the retry budget is per outage: each chunk
/// read ends one). Emits the `Done` event at the end.
pub(crate) async fn run(
    connector: &Arc<dyn CdcConnector>,
    mut backend: Box<dyn CdcBackend>,
    mut plan: SnapshotPlan,
    opts: &PollOptions,
    out: &mut Emitter,
) -> Step<()> {
    let names: Vec<TableName> = plan.tables.iter().map(|t| t.0.clone()).collect();
    // Once, before the first read: tables a resumed snapshot finished before are not part of
    // this one's plan (counted again after a reconnect, the ones done meanwhile would vanish).
    out.plan_snapshot(
        names
            .iter()
            .filter(|n| !matches!(plan.book.start(n), TableStart::Skip))
            .count(),
    );
    let mut reconnect = Reconnect::new(opts.retry.clone());
    loop {
        match read_all(backend.as_mut(), &mut plan, opts, out, &mut reconnect).await {
            Ok(()) => break,
            Err(Stop::Closed) => return Err(Stop::Closed),
            Err(Stop::Failed(mut e)) => loop {
                reconnect.after_failure(e, out).await?;
                match reopen(connector, &names, opts).await {
                    Ok(b) => {
                        backend = b;
                        break;
                    }
                    Err(again) => e = again,
                }
            },
        }
    }
    timed(opts.call_timeout, backend.end_snapshot()).await?;
    out.push(plan.book.done()).await?;
    out.flush().await
}

/// A new connection with a new snapshot transaction (without a marker: the stream position
/// stays the original one, see the module docs).
async fn reopen(
    connector: &Arc<dyn CdcConnector>,
    tables: &[TableName],
    opts: &PollOptions,
) -> Result<Box<dyn CdcBackend>> {
    let mut b = timed(opts.call_timeout, connector.connect()).await?;
    timed(opts.call_timeout, b.begin_snapshot(tables, None)).await?;
    Ok(b)
}

async fn read_all(
    b: &mut dyn CdcBackend,
    plan: &mut SnapshotPlan,
    opts: &PollOptions,
    out: &mut Emitter,
    reconnect: &mut Reconnect,
) -> Step<()> {
    for (name, instance, schema) in plan.tables.clone() {
        let (after, rows_done) = match plan.book.start(&name) {
            TableStart::Skip => continue,
            TableStart::Resume { after_key, rows } => (Some(decode_key(&after_key)?), rows),
            TableStart::Fresh => (None, 0),
        };
        // The estimate is only for progress display: failing to read it is not an error.
        let estimated_rows = timed(opts.call_timeout, b.estimated_rows(&name))
            .await
            .unwrap_or(None);
        out.push(plan.book.table_started(&name, estimated_rows))
            .await?;
        out.push(ChangeEvent::Schema(schema.clone())).await?;
        let key_idx: Vec<usize> = key_positions(&instance);
        let mut read = TableRead {
            name: &name,
            instance: &instance,
            schema: &schema,
            key_idx: &key_idx,
            estimated_rows,
            after,
            rows_done,
        };
        let result = read_table(b, plan, opts, out, reconnect, &mut read).await;
        if let Err(e) = result {
            // A reconnect continues right after the last row emitted, not after the last
            // finished chunk: the rows in between reached the host already. The progress
            // event is not sent (the chunk is not finished); only the book records it.
            if let Some(a) = &read.after {
                let _unsent =
                    plan.book
                        .chunk_done(&name, encode_key(a), read.rows_done, estimated_rows);
            }
            return Err(e);
        }
        out.push(plan.book.table_done(&name, read.rows_done))
            .await?;
    }
    Ok(())
}

/// One table being read, and how far.
struct TableRead<'a> {
    name: &'a TableName,
    instance: &'a CaptureInstance,
    schema: &'a Arc<TableSchema>,
    key_idx: &'a [usize],
    estimated_rows: Option<u64>,
    /// Key of the last row emitted.
    after: Option<Vec<Value>>,
    /// Rows emitted so far.
    rows_done: u64,
}

async fn read_table(
    b: &mut dyn CdcBackend,
    plan: &mut SnapshotPlan,
    opts: &PollOptions,
    out: &mut Emitter,
    reconnect: &mut Reconnect,
    table: &mut TableRead<'_>,
) -> Step<()> {
    loop {
        let rows = timed(
            opts.call_timeout,
            b.snapshot_chunk(table.instance, table.after.as_deref(), plan.chunk_rows),
        )
        .await?;
        reconnect.healthy();
        let n = rows.len();
        for values in rows {
            if values.len() != table.schema.columns.len() {
                return Err(SourceError::decode(format!(
                    "snapshot row of {} has {} values for {} columns",
                    table.name,
                    values.len(),
                    table.schema.columns.len()
                ))
                .into());
            }
            let mut key = Vec::with_capacity(table.key_idx.len());
            for &i in table.key_idx {
                // key_positions only names indexes of the instance's columns, whose count
                // the check above matched.
                key.push(values.get(i).cloned().unwrap_or(Value::Null));
            }
            table.after = Some(key);
            out.push(ChangeEvent::Row(RowChange {
                op: Op::Insert,
                table: table.schema.clone(),
                old: None,
                old_image: OldImage::None,
                new: Some(Row::new(values)),
                snapshot: true,
            }))
            .await?;
            table.rows_done += 1;
        }
        if n > 0 {
            if let Some(a) = table.after.as_deref() {
                let event = plan.book.chunk_done(
                    table.name,
                    encode_key(a),
                    table.rows_done,
                    table.estimated_rows,
                );
                out.push(event).await?;
            }
        }
        if n < plan.chunk_rows as usize {
            return Ok(());
        }
    }
}

/// Key values → the `after_key` text of a resume token (a JSON array; blobs as `{"hex":…}`).
fn encode_key(values: &[Value]) -> String {
    let arr: Vec<serde_json::Value> = values
        .iter()
        .map(|v| match v {
            Value::Integer(i) => serde_json::Value::from(*i),
            Value::Real(f) => serde_json::Value::from(*f),
            Value::Text(s) => serde_json::Value::from(s.as_str()),
            Value::Blob(b) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                serde_json::json!({ "hex": hex })
            }
            Value::Null | Value::Unchanged => serde_json::Value::Null,
        })
        .collect();
    serde_json::Value::Array(arr).to_string()
}

/// The inverse of [`encode_key`]; garbage is a `Config` error (the token is corrupt).
fn decode_key(s: &str) -> Result<Vec<Value>> {
    let bad = || SourceError::config(format!("snapshot resume key `{s}` is corrupt"));
    let v: serde_json::Value = serde_json::from_str(s).map_err(|_| bad())?;
    let arr = v.as_array().ok_or_else(bad)?;
    arr.iter()
        .map(|x| match x {
            serde_json::Value::Null => Ok(Value::Null),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(Value::Integer(i)),
                None => n.as_f64().map(Value::Real).ok_or_else(bad),
            },
            serde_json::Value::String(s) => Ok(Value::Text(s.clone())),
            serde_json::Value::Object(o) => {
                let hex = o.get("hex").and_then(|h| h.as_str()).ok_or_else(bad)?;
                if !hex.len().is_multiple_of(2) {
                    return Err(bad());
                }
                (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .ok_or_else(bad)
                    })
                    .collect::<Result<Vec<u8>>>()
                    .map(Value::Blob)
            }
            _ => Err(bad()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = vec![
            Value::Integer(-5),
            Value::Text("a\"b".into()),
            Value::Blob(vec![0, 255]),
            Value::Real(1.5),
            Value::Null,
        ];
        assert_eq!(decode_key(&encode_key(&k)).unwrap(), k);
        assert!(decode_key("{").is_err());
        assert!(decode_key("[{\"hex\":\"zz\"}]").is_err());
    }
}
