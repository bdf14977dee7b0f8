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

use std::collections::BTreeMap;
use std::sync::Arc;

use powersync_source_core::{
    Backoff, ChangeEvent, Checkpoint, OldImage, Op, Result, Row, RowChange, SnapshotProgress,
    SnapshotResume, SourceError, TableName, TableProgress, TableSchema, Value,
};

use crate::backend::{CaptureInstance, CdcBackend, CdcConnector};
use crate::emit::{Emitter, Step, Stop};
use crate::poller::{timed, PollOptions};

/// What the snapshot reads.
#[derive(Debug)]
pub struct SnapshotPlan {
    /// Tables in order, with the instance whose columns are read.
    pub tables: Vec<(TableName, CaptureInstance, Arc<TableSchema>)>,
    /// Progress so far (empty tables map for a fresh snapshot).
    pub resume: SnapshotResume,
    /// Rows per chunk.
    pub chunk_rows: u32,
}

/// Reads the snapshot on `backend` (whose snapshot transaction is open), reconnecting with a new
/// snapshot transaction after retryable failures. Emits the `Done` event at the end.
pub async fn run(
    connector: &Arc<dyn CdcConnector>,
    mut backend: Box<dyn CdcBackend>,
    mut plan: SnapshotPlan,
    opts: &PollOptions,
    out: &mut Emitter,
) -> Step<()> {
    let names: Vec<TableName> = plan.tables.iter().map(|t| t.0.clone()).collect();
    let mut backoff: Option<Backoff> = None;
    loop {
        match read_all(backend.as_mut(), &mut plan, opts, out).await {
            Ok(()) => break,
            Err(Stop::Error(e)) if e.is_retryable() => {
                let delay = backoff
                    .get_or_insert_with(|| opts.retry.backoff())
                    .next_delay(&e)
                    .ok_or(Stop::Error(e))?;
                tokio::time::sleep(delay).await;
                match timed(opts.call_timeout, connector.connect()).await {
                    Ok(mut b) => {
                        if let Err(e) =
                            timed(opts.call_timeout, b.begin_snapshot(&names, None)).await
                        {
                            if !e.is_retryable() {
                                return Err(e.into());
                            }
                            continue;
                        }
                        out.stats.record_reconnect();
                        backend = b;
                    }
                    Err(e) if e.is_retryable() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    timed(opts.call_timeout, backend.end_snapshot()).await?;
    out.push(ChangeEvent::Snapshot(SnapshotProgress::Done {
        checkpoint: plan.resume.stream_from.clone(),
    }))
    .await?;
    out.flush().await
}

async fn read_all(
    b: &mut dyn CdcBackend,
    plan: &mut SnapshotPlan,
    opts: &PollOptions,
    out: &mut Emitter,
) -> Step<()> {
    for (name, instance, schema) in plan.tables.clone() {
        let key = name.to_string();
        let (mut after, mut rows_done) = match plan.resume.tables.get(&key) {
            Some(TableProgress::Done { .. }) => continue,
            Some(TableProgress::Partial { after_key, rows }) => {
                (Some(decode_key(after_key)?), *rows)
            }
            None => (None, 0),
        };
        // The estimate is only for progress display: failing to read it is not an error.
        let estimated_rows = timed(opts.call_timeout, b.estimated_rows(&name))
            .await
            .unwrap_or(None);
        out.push(ChangeEvent::Snapshot(SnapshotProgress::TableStarted {
            table: name.clone(),
            estimated_rows,
        }))
        .await?;
        out.push(ChangeEvent::Schema(schema.clone())).await?;
        let key_idx: Vec<usize> = key_positions(&instance);
        let result = read_table(
            b,
            plan,
            opts,
            out,
            TableRead {
                name: &name,
                instance: &instance,
                schema: &schema,
                key_idx: &key_idx,
                estimated_rows,
            },
            (&mut after, &mut rows_done),
        )
        .await;
        if let Err(e) = result {
            // A reconnect continues right after the last row emitted.
            if let Some(a) = &after {
                plan.resume.tables.insert(
                    key.clone(),
                    TableProgress::Partial {
                        after_key: encode_key(a),
                        rows: rows_done,
                    },
                );
            }
            return Err(e);
        }
        plan.resume
            .tables
            .insert(key, TableProgress::Done { rows: rows_done });
        out.push(ChangeEvent::Snapshot(SnapshotProgress::TableDone {
            table: name.clone(),
            rows: rows_done,
        }))
        .await?;
    }
    Ok(())
}

/// What `read_table` reads.
struct TableRead<'a> {
    name: &'a TableName,
    instance: &'a CaptureInstance,
    schema: &'a Arc<TableSchema>,
    key_idx: &'a [usize],
    estimated_rows: Option<u64>,
}

async fn read_table(
    b: &mut dyn CdcBackend,
    plan: &mut SnapshotPlan,
    opts: &PollOptions,
    out: &mut Emitter,
    table: TableRead<'_>,
    (after, rows_done): (&mut Option<Vec<Value>>, &mut u64),
) -> Step<()> {
    let TableRead {
        name,
        instance,
        schema,
        key_idx,
        estimated_rows,
    } = table;
    let key = name.to_string();
    loop {
        let rows = timed(
            opts.call_timeout,
            b.snapshot_chunk(instance, after.as_deref(), plan.chunk_rows),
        )
        .await?;
        let n = rows.len();
        for values in rows {
            if values.len() != schema.columns.len() {
                return Err(SourceError::decode(format!(
                    "snapshot row of {name} has {} values for {} columns",
                    values.len(),
                    schema.columns.len()
                ))
                .into());
            }
            *after = Some(key_idx.iter().map(|&i| values[i].clone()).collect());
            out.push(ChangeEvent::Row(RowChange {
                op: Op::Insert,
                table: schema.clone(),
                old: None,
                old_image: OldImage::None,
                new: Some(Row::new(values)),
                snapshot: true,
            }))
            .await?;
            *rows_done += 1;
        }
        if n > 0 {
            if let Some(a) = after.as_deref() {
                plan.resume.tables.insert(
                    key.clone(),
                    TableProgress::Partial {
                        after_key: encode_key(a),
                        rows: *rows_done,
                    },
                );
            }
            out.push(ChangeEvent::Snapshot(SnapshotProgress::ChunkDone {
                table: name.clone(),
                rows_done: *rows_done,
                estimated_rows,
                resume: Box::new(plan.resume.clone()),
            }))
            .await?;
        }
        if n < plan.chunk_rows as usize {
            return Ok(());
        }
    }
}

/// Indexes of the primary-key columns in key order.
pub fn key_positions(instance: &CaptureInstance) -> Vec<usize> {
    let mut keyed: Vec<(u32, usize)> = instance
        .columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.key_ordinal.map(|k| (k, i)))
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// A fresh snapshot's resume state.
pub fn fresh_resume(stream_from: Checkpoint) -> SnapshotResume {
    SnapshotResume {
        stream_from,
        tables: BTreeMap::new(),
        source_state: None,
    }
}

/// Key values → the `after_key` text of a resume token (a JSON array; blobs as `{"hex":…}`).
pub fn encode_key(values: &[Value]) -> String {
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
pub fn decode_key(s: &str) -> Result<Vec<Value>> {
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
