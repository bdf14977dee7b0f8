//! The snapshot reader: chunks of each table through `COPY … TO STDOUT (FORMAT binary)` —
//! heap block ranges read by TID range scans on PostgreSQL 14+ (several readers per table),
//! key-ordered chunks otherwise — all readers inside one exported snapshot when the slot was
//! just created.

mod copy_binary;
mod key_chunk;
mod resume;

use std::collections::VecDeque;
use std::sync::Arc;

use postgres_protocol::escape::{escape_identifier, escape_literal};
use powersync_source_core::{Row, SourceError, Value};
use tokio::sync::{mpsc, Mutex};
use tokio_postgres::Client;
use tracing::Instrument;

use copy_binary::{CopyBinaryParser, FeedError};
pub(crate) use key_chunk::read_key_chunk;
pub(crate) use resume::encode_key;
pub(crate) use resume::{block_pieces, decode_blocks, decode_key, encode_blocks, merge_range};

use crate::catalog::{qualified, PublishedTable};
use crate::config::PostgresConfig;
use crate::connection::copy::{CopySession, Drained};
use crate::connection::sql;
use crate::sql_error;
use crate::types::{Format, TypeRegistry};

/// Rows per message sent to the stream: big enough to amortize the channel, small enough to
/// keep memory bounded and the rows still in cache when the stream takes them (measured with
/// `throughput --phases snapshot`: 512 used a little less client CPU and about half the peak
/// RSS growth of 2048, at the same speed).
pub(super) const ROWS_PER_MESSAGE: usize = 512;

/// What a reader reports to the stream, in order per table.
#[derive(Debug)]
pub(crate) enum SnapshotMsg {
    TableStarted {
        table: usize,
    },
    Rows {
        table: usize,
        rows: Vec<Row>,
    },
    /// Every row with a key up to `after_key` has been sent.
    ChunkDone {
        table: usize,
        after_key: Option<String>,
        rows_done: u64,
    },
    TableDone {
        table: usize,
        rows: u64,
    },
    /// Every row in heap blocks `lo..hi` has been sent.
    BlocksDone {
        table: usize,
        lo: u32,
        hi: u32,
    },
    /// A [`Piece::Recheck`] is done.
    Rechecked {
        table: usize,
    },
}

/// Which tuples of a region read before a resume are read again: those created since the
/// original (exported) snapshot, i.e. whose `xmin` that snapshot may not see.
///
/// Why: after a resume, a row that an update moved out of an unread region into one read
/// before the crash is in neither read; the replayed update alone cannot restore it (a
/// TOASTed column it left untouched is not in the WAL). The new version of such a row is a
/// tuple created after the original snapshot, so re-reading exactly those tuples of the
/// finished regions from the fresh snapshot closes the gap. Re-reading an older tuple too is
/// harmless (every row emitted is the current state of the fresh snapshot, which the replay
/// converges from), so the filter only needs to be conservative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CreatedSince {
    /// The 32-bit `xmin` of the original snapshot: every transaction older than it had ended
    /// when the snapshot was taken, so a tuple with an older `xmin` is visible to it (or was
    /// never committed). `None` (a token without it): every tuple.
    pub xmin: Option<u32>,
}

impl CreatedSince {
    /// The SQL predicate selecting the tuples, or `None` for all. Transaction ids wrap around
    /// at 2^32: a tuple is "new" when its `xmin` is at most 2^31 − 1 ids after the snapshot's,
    /// the comparison PostgreSQL itself uses. A frozen tuple more than 2^31 ids old may look
    /// new: it is only read again, which is harmless.
    fn predicate(&self) -> Option<String> {
        self.xmin.map(|xmin| {
            format!("((xmin::text::bigint - {xmin} + 4294967296) % 4294967296) < 2147483648")
        })
    }
}

/// What part of a table a job reads.
#[derive(Debug, Clone)]
pub(crate) enum Piece {
    /// The whole table in key-ordered chunks from `after_key` on, by one reader: the only
    /// order that resumes without TID range scans (PostgreSQL < 14) and the order for tables
    /// without a heap of their own (partitioned tables).
    Keyed {
        /// Key texts of the last row already emitted (from a resume token).
        after_key: Option<Vec<String>>,
        rows_done: u64,
        /// On a resume: first read the rows up to `after_key` that [`CreatedSince`] selects.
        recheck: Option<CreatedSince>,
    },
    /// Heap blocks `lo..hi` through a TID range scan (PostgreSQL 14+): as fast as a sequential
    /// scan, no index, no sort, and independent of every other piece, so several readers share
    /// one table.
    Blocks { lo: u32, hi: u32 },
    /// Heap blocks `lo..hi`, read before a resume, again: only the tuples [`CreatedSince`]
    /// selects. Ends with [`SnapshotMsg::Rechecked`]; its rows count as no progress.
    Recheck {
        lo: u32,
        hi: u32,
        since: CreatedSince,
    },
}

/// One piece of a table to read.
#[derive(Debug, Clone)]
pub(crate) struct TableJob {
    pub index: usize,
    pub table: Arc<PublishedTable>,
    pub piece: Piece,
}

/// Reads `jobs` with `parallelism` connections and sends [`SnapshotMsg`]s to `tx`. With
/// `snapshot_name`, every reader imports that exported snapshot, so the data is exactly the
/// state at the slot's consistent point. Without it (a resumed snapshot), several readers
/// still share one snapshot, exported for them: a row that moves between two pieces while
/// they are read must be seen by exactly one of them, which two snapshots taken at different
/// times do not guarantee.
pub(crate) async fn read_tables(
    config: PostgresConfig,
    registry: Arc<TypeRegistry>,
    jobs: Vec<TableJob>,
    snapshot_name: Option<String>,
    parallelism: usize,
    chunk_rows: u64,
    tx: mpsc::Sender<Result<SnapshotMsg, SourceError>>,
) -> Result<(), SourceError> {
    let queue = Arc::new(Mutex::new(VecDeque::from(jobs)));
    let readers = parallelism.max(1).min(queue.lock().await.len().max(1));
    // Held open (idle in its transaction) until every reader is done, which keeps the
    // exported snapshot valid.
    let mut exporter = None;
    let snapshot_name = match snapshot_name {
        Some(name) => Some(name),
        None if readers > 1 => {
            let (client, name) = export_snapshot(&config).await?;
            exporter = Some(client);
            Some(name)
        }
        None => None,
    };
    let mut tasks = Vec::with_capacity(readers);
    for _ in 0..readers {
        let config = config.clone();
        let registry = registry.clone();
        let queue = queue.clone();
        let snapshot_name = snapshot_name.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            // Our own protocol session, not tokio-postgres: COPY data is decoded straight
            // from its receive buffer (see `connection::copy`).
            let mut session = CopySession::connect(&config).await?;
            session
                .execute(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                    "starting the snapshot transaction on",
                )
                .await?;
            if let Some(name) = &snapshot_name {
                session
                    .execute(
                        &format!("SET TRANSACTION SNAPSHOT {}", escape_literal(name)),
                        "importing the exported snapshot on",
                    )
                    .await?;
            }
            loop {
                let job = queue.lock().await.pop_front();
                let Some(job) = job else { break };
                // One span per piece read (a table, a resumed rest, or a block range), so
                // its log lines and timings carry the table.
                let span = tracing::debug_span!(
                    "snapshot_chunk",
                    source = "postgres",
                    table = %job.table.schema.name
                );
                read_table(&mut session, &registry, job, chunk_rows, &tx)
                    .instrument(span)
                    .await?;
            }
            session.execute("COMMIT", "ending the snapshot on").await?;
            Ok::<(), SourceError>(())
        }));
    }
    let mut first_error = None;
    for task in tasks {
        let result = match task.await {
            Ok(r) => r,
            // A panic is a bug, not a connection problem: it must not be retried quietly.
            Err(e) if e.is_panic() => {
                Err(SourceError::internal("a snapshot reader panicked").with_source(e))
            }
            Err(e) => Err(SourceError::connection("a snapshot reader stopped").with_source(e)),
        };
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    if let Some(client) = exporter {
        // Only ends a read-only transaction: a failure changes nothing.
        let _ = client.batch_execute("COMMIT").await;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Opens a connection with a repeatable-read transaction and exports its snapshot; the
/// snapshot stays importable while the connection stays idle in that transaction.
async fn export_snapshot(config: &PostgresConfig) -> Result<(Client, String), SourceError> {
    let client = sql::connect(config).await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| sql_error(e, "starting the snapshot transaction"))?;
    let row = client
        .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
        .await
        .map_err(|e| sql_error(e, "exporting a snapshot for the readers"))?;
    let name: String = row.get(0);
    Ok((client, name))
}

/// The 32-bit `xmin` of the exported snapshot `name` (see [`CreatedSince`]), read through
/// `client` in a transaction that imports it.
pub(crate) async fn snapshot_xmin(client: &Client, name: &str) -> Result<u32, SourceError> {
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            escape_literal(name)
        ))
        .await
        .map_err(|e| sql_error(e, "importing the exported snapshot"))?;
    // txid_* rather than pg_snapshot_*: the same on every supported server (the latter
    // need 13+); the value carries the epoch, the tuple's xmin does not.
    let result = client
        .query_one(
            "SELECT (pg_catalog.txid_snapshot_xmin(pg_catalog.txid_current_snapshot()) % 4294967296)::bigint",
            &[],
        )
        .await
        .map_err(|e| sql_error(e, "reading the snapshot's xmin"));
    let end = client.batch_execute("COMMIT").await;
    let xmin: i64 = result?.get(0);
    end.map_err(|e| sql_error(e, "ending the snapshot"))?;
    u32::try_from(xmin).map_err(|_| {
        SourceError::decode(format!(
            "the snapshot's xmin {xmin} is not a 32-bit transaction id"
        ))
    })
}

async fn read_table(
    session: &mut CopySession,
    registry: &TypeRegistry,
    job: TableJob,
    chunk_rows: u64,
    tx: &mpsc::Sender<Result<SnapshotMsg, SourceError>>,
) -> Result<(), SourceError> {
    let send = |msg| async {
        tx.send(Ok(msg))
            .await
            .map_err(|_| SourceError::connection("stream closed"))
    };
    let table = &job.table;
    let schema = &table.schema;
    let (mut after_key, mut rows_done, blocks, recheck) = match &job.piece {
        Piece::Keyed {
            after_key,
            rows_done,
            recheck,
        } => (after_key.clone(), *rows_done, None, *recheck),
        Piece::Blocks { lo, hi } => (None, 0, Some((*lo, *hi)), None),
        Piece::Recheck { lo, hi, since } => (None, 0, Some((*lo, *hi)), Some(*since)),
    };
    let rechecking_blocks = matches!(job.piece, Piece::Recheck { .. });
    if blocks.is_none() {
        send(SnapshotMsg::TableStarted { table: job.index }).await?;
    }
    let key_indexes: Vec<usize> = schema.key_indexes().collect();
    // Without a key there is no order to resume from: read the table in one pass.
    let chunked = !key_indexes.is_empty() && blocks.is_none();
    // Resolved once per table, not per value: which columns come in binary.
    let binary: Vec<bool> = table
        .column_types
        .iter()
        .map(|t| registry.supports_binary(t.oid))
        .collect();
    let columns: Vec<String> = schema
        .columns
        .iter()
        .zip(&binary)
        .map(|(c, binary)| {
            if *binary {
                escape_identifier(&c.name)
            } else {
                // Types we cannot read in binary come as their text output.
                format!("{}::text", escape_identifier(&c.name))
            }
        })
        .collect();
    let key_cols: Vec<String> = key_indexes
        .iter()
        .map(|&i| escape_identifier(&schema.columns[i].name))
        .collect();
    let key_types: Vec<String> = key_indexes
        .iter()
        .map(|&i| schema.columns[i].type_name.clone())
        .collect();
    // Exactly the published rows (PostgreSQL 15+ row filters).
    let row_filter = table
        .publishing
        .row_filter
        .as_ref()
        .map(|f| format!("({f})"));
    let key_literals = |after: &[String]| -> String {
        after
            .iter()
            .zip(&key_types)
            .map(|(v, t)| format!("{}::{}", escape_literal(v), t))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // A keyed table resumed after `after_key`: first the rows up to it created since the
    // original snapshot (one pass; not progress, so not counted in `rows_done`).
    if let (Some(since), Some(after)) = (recheck, &after_key) {
        if chunked {
            let mut filter = vec![format!(
                "({}) <= ({})",
                key_cols.join(", "),
                key_literals(after)
            )];
            filter.extend(since.predicate());
            filter.extend(row_filter.clone());
            let select = format!(
                "SELECT {} FROM {} WHERE {}",
                columns.join(", "),
                qualified(&schema.name),
                filter.join(" AND ")
            );
            copy_rows(session, registry, &job, &binary, &select, 0, tx).await?;
        }
    }
    loop {
        let mut select = format!("SELECT {}", columns.join(", "));
        if chunked {
            for (i, k) in key_cols.iter().enumerate() {
                select.push_str(&format!(", {k}::text AS \"_powersync_key_{i}\""));
            }
        }
        select.push_str(&format!(" FROM {}", qualified(&schema.name)));
        let mut filter: Vec<String> = row_filter.iter().cloned().collect();
        if let Some((lo, hi)) = blocks {
            filter.push(format!(
                "ctid >= '({lo},0)'::tid AND ctid < '({hi},0)'::tid"
            ));
            if rechecking_blocks {
                filter.extend(recheck.and_then(|since| since.predicate()));
            }
        }
        if chunked {
            if let Some(after) = &after_key {
                filter.push(format!(
                    "({}) > ({})",
                    key_cols.join(", "),
                    key_literals(after)
                ));
            }
        }
        if !filter.is_empty() {
            select.push_str(&format!(" WHERE {}", filter.join(" AND ")));
        }
        if chunked {
            select.push_str(&format!(
                " ORDER BY {} LIMIT {chunk_rows}",
                key_cols.join(", ")
            ));
        }
        let extra = if chunked { key_cols.len() } else { 0 };
        let (chunk_count, last_key) =
            copy_rows(session, registry, &job, &binary, &select, extra, tx).await?;
        rows_done += chunk_count;
        if let Some((lo, hi)) = blocks {
            let msg = if rechecking_blocks {
                SnapshotMsg::Rechecked { table: job.index }
            } else {
                SnapshotMsg::BlocksDone {
                    table: job.index,
                    lo,
                    hi,
                }
            };
            return send(msg).await;
        }
        if !chunked || chunk_count < chunk_rows {
            break;
        }
        after_key = last_key;
        send(SnapshotMsg::ChunkDone {
            table: job.index,
            after_key: after_key.as_ref().map(|k| encode_key(k)),
            rows_done,
        })
        .await?;
    }
    send(SnapshotMsg::TableDone {
        table: job.index,
        rows: rows_done,
    })
    .await?;
    Ok(())
}

/// Runs `COPY (select) TO STDOUT (FORMAT binary)` and sends its rows; `extra` trailing
/// columns (the key texts of a keyed chunk) are not part of the row. Returns how many rows
/// came and the key texts of the last one (with `extra` > 0 and at least one row).
///
/// Rows are decoded straight from the session's receive buffer after each socket read, and
/// sent [`ROWS_PER_MESSAGE`] at a time between reads.
pub(super) async fn copy_rows(
    session: &mut CopySession,
    registry: &TypeRegistry,
    job: &TableJob,
    binary: &[bool],
    select: &str,
    extra: usize,
    tx: &mpsc::Sender<Result<SnapshotMsg, SourceError>>,
) -> Result<(u64, Option<Vec<String>>), SourceError> {
    let table = &job.table;
    let schema = &table.schema;
    let columns = schema.columns.len();
    let copy = format!("COPY ({select}) TO STDOUT (FORMAT binary)");
    let doing = format!("snapshot of {} from", schema.name);
    let format_error =
        |e: String| SourceError::decode(format!("COPY data of {}: {e}", schema.name));
    let mut out = session.copy_out(&copy, &doing).await?;
    let mut parser = CopyBinaryParser::new(columns, extra);
    let mut rows = Vec::with_capacity(ROWS_PER_MESSAGE);
    let mut chunk_count = 0u64;
    // The key fields of the last row, overwritten in place (no allocation per row).
    let mut last_key: Vec<Vec<u8>> = vec![Vec::new(); extra];
    loop {
        let drained = out.drain(|data| {
            let on_tuple = |tuple: copy_binary::Tuple<'_>| -> Result<(), SourceError> {
                rows.push(decode_row(registry, table, binary, &tuple)?);
                for (k, key) in last_key.iter_mut().enumerate() {
                    key.clear();
                    key.extend_from_slice(tuple.field(columns + k).unwrap_or_default());
                }
                chunk_count += 1;
                Ok(())
            };
            parser.feed(data, on_tuple).map_err(|e| match e {
                FeedError::Format(e) => format_error(e),
                FeedError::Tuple(e) => e,
            })?;
            // A full message pauses the drain: messages stay bounded, so memory too.
            Ok(rows.len() < ROWS_PER_MESSAGE)
        })?;
        if rows.len() >= ROWS_PER_MESSAGE || (drained == Drained::Done && !rows.is_empty()) {
            let full = std::mem::replace(&mut rows, Vec::with_capacity(ROWS_PER_MESSAGE));
            tx.send(Ok(SnapshotMsg::Rows {
                table: job.index,
                rows: full,
            }))
            .await
            .map_err(|_| SourceError::connection("stream closed"))?;
        }
        match drained {
            Drained::Done => break,
            Drained::Paused => {}
            Drained::More => out.receive().await?,
        }
    }
    parser.finish().map_err(format_error)?;
    let last_key = (extra > 0 && chunk_count > 0).then(|| {
        last_key
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    });
    Ok((chunk_count, last_key))
}

/// The row of the first `binary.len()` fields of `tuple`, decoded in the format each column
/// was asked for.
fn decode_row(
    registry: &TypeRegistry,
    table: &PublishedTable,
    binary: &[bool],
    tuple: &copy_binary::Tuple<'_>,
) -> Result<Row, SourceError> {
    let schema = &table.schema;
    let mut values = Vec::with_capacity(binary.len());
    for (i, &is_binary) in binary.iter().enumerate() {
        let v = match tuple.field(i) {
            None => Ok(Value::Null),
            Some(bytes) => table.column_types[i].decode(
                registry,
                if is_binary {
                    Format::Binary
                } else {
                    Format::Text
                },
                bytes,
            ),
        }
        .map_err(|e| {
            SourceError::decode_value(
                &schema.name.to_string(),
                &schema.columns[i].name,
                &schema.columns[i].type_name,
                e,
            )
        })?;
        values.push(v);
    }
    Ok(Row::new(values))
}
