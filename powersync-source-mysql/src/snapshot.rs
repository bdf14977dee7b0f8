//! The snapshot: one consistent-snapshot transaction whose binlog position is known exactly,
//! read table by table in primary-key chunks, each chunk's rows converted and emitted as they
//! arrive.
//!
//! Rows are read on a connection of the snapshot reader's own ([`crate::client`]) with the
//! binary protocol (prepared statements): integers, floats and temporal values arrive typed,
//! which costs less per row than the text protocol (`mysql-throughput` prints the driver's
//! figures for both), and each row is decoded from the socket buffer straight into the
//! connector's values.

use std::sync::Arc;

use mysql_async::{Conn, Value as My};
use powersync_source_core::position::{BinlogPosition, GtidState};
use powersync_source_core::runtime::{Emitter, SnapshotBook, Step, TableStart};
use powersync_source_core::{ChangeEvent, OldImage, Op, Row, RowChange, SourceError};
use serde_json::json;

use crate::catalog::TableInfo;
use crate::client::{Client, Statement};
use crate::connection::{exec_drop, ident, sql_error};
use crate::server::{self, Flavour, ServerInfo};
use crate::values::{convert, Path};

/// Opens a consistent-snapshot transaction on the snapshot reader's connection `snap` and
/// returns the binlog position it is consistent with; `conn` (a driver connection to the same
/// server) answers the questions that need no read view.
///
/// - MariaDB: `START TRANSACTION WITH CONSISTENT SNAPSHOT` makes the transaction's read view
///   and the session status variables `Binlog_snapshot_file` / `Binlog_snapshot_position`
///   one atomic point (the server takes them under the binlog commit lock); `BINLOG_GTID_POS`
///   turns that file/offset into the GTID position. No lock is taken.
/// - MySQL: there is no such variable, so a brief `FLUSH TABLES WITH READ LOCK` on `conn`
///   stops commits while `snap` starts its transaction and `conn` reads file, offset and
///   `Executed_Gtid_Set` (`SHOW MASTER STATUS`); `UNLOCK TABLES` follows at once (the lock is
///   held for milliseconds, needs the RELOAD privilege). The lock is global, so the
///   transaction may start on another session than the one holding it: mydumper's workers
///   start theirs the same way. `performance_schema.log_status` (8.0.17+) gives the same
///   triple without blocking writers but is not tied to a read view, so it cannot replace the
///   lock for an exact snapshot.
pub(crate) async fn begin(
    snap: &mut Client,
    conn: &mut Conn,
    info: &ServerInfo,
) -> Result<BinlogPosition, SourceError> {
    let run = |context: &'static str| move |e| sql_error(e, context);
    snap.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(run("setting the snapshot isolation level"))?;
    match info.flavour {
        Flavour::MariaDb => {
            snap.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                .await
                .map_err(run("starting the snapshot transaction"))?;
            let rows = snap
                .query_text("SHOW STATUS LIKE 'binlog_snapshot_%'")
                .await
                .map_err(run("reading the snapshot's binlog position"))?;
            let get = |name: &str| {
                rows.iter().find_map(|row| match row.as_slice() {
                    [Some(k), Some(v)] if k.eq_ignore_ascii_case(name.as_bytes()) => {
                        Some(String::from_utf8_lossy(v).into_owned())
                    }
                    _ => None,
                })
            };
            let (Some(file), Some(pos)) =
                (get("Binlog_snapshot_file"), get("Binlog_snapshot_position"))
            else {
                return Err(SourceError::prerequisite(
                    "the server reports no Binlog_snapshot_file/position [log_bin]",
                )
                .with_hint("enable the binary log (log_bin) with binlog_format=ROW"));
            };
            if file.is_empty() {
                return Err(SourceError::prerequisite("the binary log is off [log_bin]")
                    .with_hint("start the server with log_bin and binlog_format=ROW"));
            }
            let pos: u64 = pos
                .parse()
                .map_err(|_| SourceError::decode(format!("Binlog_snapshot_position `{pos}`")))?;
            let gtid = server::gtid_pos_at(conn, &file, pos).await?;
            server::position(&file, pos, GtidState::MariaDb(gtid))
        }
        Flavour::MySql => {
            exec_drop(
                conn,
                "FLUSH TABLES WITH READ LOCK",
                "locking for the snapshot start",
            )
            .await?;
            let result = async {
                snap.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                    .await
                    .map_err(run("starting the snapshot transaction"))?;
                server::head(conn, info).await
            }
            .await;
            exec_drop(conn, "UNLOCK TABLES", "unlocking after the snapshot start").await?;
            result
        }
    }
}

/// Reads `tables` inside the snapshot transaction open on `snap`, emitting rows and progress.
/// `book` knows the tables already finished or partly read (from an interrupted snapshot) and
/// records every finished chunk.
pub(crate) async fn read_tables(
    snap: &mut Client,
    tables: &[Arc<TableInfo>],
    book: &mut SnapshotBook,
    chunk_rows: u64,
    out: &mut Emitter,
) -> Step<()> {
    // Tables a resumed snapshot finished before are not part of this one's plan.
    out.plan_snapshot(
        tables
            .iter()
            .filter(|t| !matches!(book.start(t.name()), TableStart::Skip))
            .count(),
    );
    let estimate = snap
        .prepare(
            "SELECT TABLE_ROWS FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        )
        .await
        .map_err(|e| sql_error(e, "preparing the row estimate"))?;
    for table in tables {
        let key = table.name().to_string();
        let (mut after, mut rows_done): (Option<Vec<My>>, u64) = match book.start(table.name()) {
            TableStart::Skip => continue,
            TableStart::Fresh => (None, 0),
            TableStart::Resume { after_key, rows } => (Some(decode_key(&after_key)?), rows),
        };
        let estimated = estimated_rows(snap, &estimate, table).await;
        out.push(ChangeEvent::Schema(table.schema.clone())).await?;
        out.push(book.table_started(table.name(), estimated))
            .await?;
        let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
        let from = format!(
            "{}.{}",
            ident(&table.name().schema),
            ident(&table.name().name)
        );
        let context = format!("snapshot of {key}");
        let failed = |e| sql_error(e, &context);
        if table.key.is_empty() {
            // No key to chunk by: one pass, resumable only as a whole.
            let stmt = snap
                .prepare(&format!("SELECT {} FROM {from}", cols.join(", ")))
                .await
                .map_err(failed)?;
            rows_done = read_chunk(snap, &stmt, &[], table, None, out, &context).await?;
            snap.close(stmt).await.map_err(failed)?;
        } else {
            let keys: Vec<String> = table.key.iter().map(|&i| cols[i].clone()).collect();
            let order = keys.join(", ");
            let (after_pred, param_order) = after_predicate(&keys);
            let first = snap
                .prepare(&format!(
                    "SELECT {} FROM {from} ORDER BY {order} LIMIT {chunk_rows}",
                    cols.join(", ")
                ))
                .await
                .map_err(failed)?;
            let next = snap
                .prepare(&format!(
                    "SELECT {} FROM {from} WHERE {after_pred} ORDER BY {order} LIMIT {chunk_rows}",
                    cols.join(", ")
                ))
                .await
                .map_err(failed)?;
            // The key of the row read last (kept as wire values: it binds back exactly).
            let mut last: Vec<My> = Vec::with_capacity(table.key.len());
            loop {
                let (stmt, params): (&Statement, Vec<My>) = match &after {
                    None => (&first, Vec::new()),
                    Some(k) => (
                        &next,
                        param_order
                            .iter()
                            .map(|&i| k.get(i).cloned().unwrap_or(My::NULL))
                            .collect(),
                    ),
                };
                let n =
                    read_chunk(snap, stmt, &params, table, Some(&mut last), out, &context).await?;
                if n == 0 {
                    break;
                }
                rows_done += n;
                let event = book.chunk_done(table.name(), encode_key(&last), rows_done, estimated);
                after = Some(last.clone());
                out.push(event).await?;
                if n < chunk_rows {
                    break;
                }
            }
            snap.close(first).await.map_err(failed)?;
            snap.close(next).await.map_err(failed)?;
        }
        out.push(book.table_done(table.name(), rows_done)).await?;
    }
    snap.close(estimate)
        .await
        .map_err(|e| sql_error(e, "closing the row estimate"))?;
    Ok(())
}

/// The server's estimate of a table's row count (for progress), if it has one.
async fn estimated_rows(snap: &mut Client, estimate: &Statement, table: &TableInfo) -> Option<u64> {
    let params = [
        My::Bytes(table.name().schema.as_bytes().to_vec()),
        My::Bytes(table.name().name.as_bytes().to_vec()),
    ];
    let columns = snap.execute(estimate, &params).await.ok()??;
    let mut row = snap.next_row(&columns).await.ok()??;
    let n = match row.next_value().ok()?? {
        My::UInt(n) => Some(n),
        My::Int(n) => u64::try_from(n).ok(),
        _ => None,
    };
    // Reads the result's end, so the connection is ready for the next command.
    while let Ok(Some(_)) = snap.next_row(&columns).await {}
    n
}

/// Executes one chunk's statement and emits its rows as they arrive (a chunk is never held
/// whole); returns how many it read and leaves the last row's key columns in `last`.
async fn read_chunk(
    snap: &mut Client,
    stmt: &Statement,
    params: &[My],
    table: &Arc<TableInfo>,
    mut last: Option<&mut Vec<My>>,
    out: &mut Emitter,
    context: &str,
) -> Step<u64> {
    let failed = |e| sql_error(e, context);
    let Some(columns) = snap.execute(stmt, params).await.map_err(failed)? else {
        return Ok(0);
    };
    if columns.len() != table.columns.len() {
        return Err(SourceError::schema(format!(
            "{context}: the server returned {} columns, the catalog lists {}",
            columns.len(),
            table.columns.len()
        ))
        .into());
    }
    let mut n = 0u64;
    loop {
        let Some(mut wire) = snap.next_row(&columns).await.map_err(failed)? else {
            break;
        };
        let mut values = Vec::with_capacity(table.columns.len());
        if let Some(last) = last.as_deref_mut() {
            last.clear();
            last.resize(table.key.len(), My::NULL);
        }
        for (i, col) in table.columns.iter().enumerate() {
            let v = wire
                .next_value()
                .map_err(|e| failed(e.into()))?
                .unwrap_or(My::NULL);
            if let Some(last) = last.as_deref_mut() {
                if let Some(k) = table.key.iter().position(|&c| c == i) {
                    last[k] = v.clone();
                }
            }
            values.push(convert(v, col, table.name(), Path::Snapshot)?);
        }
        out.push(ChangeEvent::Row(RowChange {
            op: Op::Insert,
            table: table.schema.clone(),
            old: None,
            old_image: OldImage::None,
            new: Some(values.into()),
            snapshot: true,
        }))
        .await?;
        n += 1;
    }
    Ok(n)
}

/// `(k1, k2, …) > (?, ?, …)` spelled as `k1 > ? OR (k1 = ? AND k2 > ?) OR …`, which every
/// server version turns into index ranges, and the key index each `?` binds.
pub(crate) fn after_predicate(keys: &[String]) -> (String, Vec<usize>) {
    let mut terms = Vec::with_capacity(keys.len());
    let mut order = Vec::new();
    for i in 0..keys.len() {
        let mut parts = Vec::with_capacity(i + 1);
        for (j, k) in keys.iter().enumerate().take(i) {
            parts.push(format!("{k} = ?"));
            order.push(j);
        }
        parts.push(format!("{} > ?", keys[i]));
        order.push(i);
        terms.push(format!("({})", parts.join(" AND ")));
    }
    (terms.join(" OR "), order)
}

/// A result-set row (binary protocol, on a connection opened by
/// [`crate::connection::connect`]) normalized as the binlog path normalizes the same row:
/// the snapshot and backfills share it.
pub(crate) fn row_of(table: &TableInfo, values: Vec<My>) -> Result<Row, SourceError> {
    let mut row = Vec::with_capacity(values.len());
    for (v, c) in values.into_iter().zip(table.columns.iter()) {
        row.push(convert(v, c, table.name(), Path::Snapshot)?);
    }
    Ok(row.into())
}

/// The last key of a chunk as JSON (tagged wire values, so it binds back exactly).
pub(crate) fn encode_key(values: &[My]) -> String {
    let items: Vec<serde_json::Value> = values
        .iter()
        .map(|v| match v {
            My::NULL => json!({"n": null}),
            My::Int(i) => json!({"i": i}),
            My::UInt(u) => json!({"u": u}),
            My::Float(f) => json!({"f": *f as f64}),
            My::Double(f) => json!({"d": f}),
            My::Bytes(b) => json!({"b": hex(b)}),
            My::Date(y, m, d, h, mi, s, us) => json!({"dt": [y, m, d, h, mi, s, us]}),
            My::Time(neg, d, h, m, s, us) => json!({"tm": [neg, d, h, m, s, us]}),
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Parses [`encode_key`]'s output.
pub(crate) fn decode_key(s: &str) -> Result<Vec<My>, SourceError> {
    let bad =
        |why: &str| SourceError::config(format!("snapshot resume key `{s}` is corrupt: {why}"));
    let v: serde_json::Value = serde_json::from_str(s).map_err(|_| bad("not JSON"))?;
    let items = v.as_array().ok_or_else(|| bad("not an array"))?;
    items
        .iter()
        .map(|item| {
            let obj = item
                .as_object()
                .filter(|o| o.len() == 1)
                .ok_or_else(|| bad("item"))?;
            let (tag, val) = obj.iter().next().ok_or_else(|| bad("item"))?;
            let nums = |n: usize| -> Result<Vec<u64>, SourceError> {
                let a = val
                    .as_array()
                    .filter(|a| a.len() == n)
                    .ok_or_else(|| bad("date"))?;
                a.iter()
                    .map(|x| {
                        x.as_u64()
                            .or(x.as_bool().map(u64::from))
                            .ok_or_else(|| bad("date"))
                    })
                    .collect()
            };
            Ok(match tag.as_str() {
                "n" => My::NULL,
                "i" => My::Int(val.as_i64().ok_or_else(|| bad("int"))?),
                "u" => My::UInt(val.as_u64().ok_or_else(|| bad("uint"))?),
                "f" => My::Float(val.as_f64().ok_or_else(|| bad("float"))? as f32),
                "d" => My::Double(val.as_f64().ok_or_else(|| bad("double"))?),
                "b" => My::Bytes(
                    unhex(val.as_str().ok_or_else(|| bad("bytes"))?).ok_or_else(|| bad("hex"))?,
                ),
                "dt" => {
                    let n = nums(7)?;
                    My::Date(
                        n[0] as u16,
                        n[1] as u8,
                        n[2] as u8,
                        n[3] as u8,
                        n[4] as u8,
                        n[5] as u8,
                        n[6] as u32,
                    )
                }
                "tm" => {
                    let n = nums(6)?;
                    My::Time(
                        n[0] != 0,
                        n[1] as u32,
                        n[2] as u8,
                        n[3] as u8,
                        n[4] as u8,
                        n[5] as u32,
                    )
                }
                _ => return Err(bad("unknown tag")),
            })
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.as_bytes().chunks_exact(2).remainder().is_empty() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicate() {
        let (p, o) = after_predicate(&["`a`".into(), "`b`".into()]);
        assert_eq!(p, "(`a` > ?) OR (`a` = ? AND `b` > ?)");
        assert_eq!(o, vec![0, 0, 1]);
    }

    #[test]
    fn keys_round_trip() {
        let k = vec![
            My::Int(-5),
            My::UInt(u64::MAX),
            My::Bytes(vec![0, 255, b'a']),
            My::Date(2024, 2, 29, 1, 2, 3, 4),
            My::Time(true, 1, 2, 3, 4, 5),
        ];
        assert_eq!(decode_key(&encode_key(&k)).unwrap(), k);
        assert!(decode_key("[{\"x\":1}]").is_err());
        assert!(decode_key("nope").is_err());
    }
}
