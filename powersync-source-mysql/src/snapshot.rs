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
use powersync_source_core::{ChangeEvent, OldImage, Op, RowChange, SourceError};

use crate::catalog::TableInfo;
use crate::chunk_query::{self, decode_key, encode_key, ChunkQuery};
use crate::client::{Client, Statement};
use crate::connection::{exec_drop, sql_error};
use crate::result_rows::ResultRows;
use crate::server::{self, Flavour, ServerInfo};

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
        let context = format!("snapshot of {key}");
        let failed = |e| sql_error(e, &context);
        if table.key.is_empty() {
            // No key to chunk by: one pass, resumable only as a whole.
            let stmt = snap
                .prepare(&chunk_query::select_all(table))
                .await
                .map_err(failed)?;
            rows_done = read_chunk(snap, &stmt, &[], table, None, out, &context).await?;
            snap.close(stmt).await.map_err(failed)?;
        } else {
            let query = ChunkQuery::new(table, chunk_rows);
            let first = snap.prepare(&query.first).await.map_err(failed)?;
            let next = snap.prepare(&query.next).await.map_err(failed)?;
            // The key of the row read last (kept as wire values: it binds back exactly).
            let mut last: Vec<My> = Vec::with_capacity(table.key.len());
            loop {
                let (stmt, params) = match &after {
                    None => (&first, Vec::new()),
                    Some(k) => (&next, query.params(k)),
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
    let Some(mut rows) = ResultRows::open(snap, stmt, params, table, context).await? else {
        return Ok(0);
    };
    let mut n = 0u64;
    while let Some(row) = rows.next(last.as_deref_mut()).await? {
        out.push(ChangeEvent::Row(RowChange {
            op: Op::Insert,
            table: table.schema.clone(),
            old: None,
            old_image: OldImage::None,
            new: Some(row),
            snapshot: true,
        }))
        .await?;
        n += 1;
    }
    Ok(n)
}
