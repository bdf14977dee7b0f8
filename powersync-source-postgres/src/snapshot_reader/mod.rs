//! The snapshot reader: chunks of each table through `COPY … TO STDOUT (FORMAT binary)` —
//! heap block ranges read by TID range scans on PostgreSQL 14+ (several readers per table),
//! key-ordered chunks otherwise — all readers inside one exported snapshot when the slot was
//! just created.

mod copy_binary;
mod resume;

use std::collections::VecDeque;
use std::sync::Arc;

use futures::{pin_mut, StreamExt};
use postgres_protocol::escape::{escape_identifier, escape_literal};
use powersync_source_core::{Row, SourceError, Value};
use tokio::sync::{mpsc, Mutex};
use tokio_postgres::Client;

use copy_binary::{tuple_fields, CopyBinaryParser};
use resume::encode_key;
pub(crate) use resume::{block_pieces, decode_blocks, decode_key, encode_blocks, merge_range};

use crate::catalog::{qualified, PublishedTable};
use crate::config::PostgresConfig;
use crate::connection::sql;
use crate::sql_error;
use crate::types::{self, TypeRegistry};

/// Rows per message sent to the stream: big enough to amortize the channel, small enough to
/// keep memory bounded.
const ROWS_PER_MESSAGE: usize = 2048;

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
    },
    /// Heap blocks `lo..hi` through a TID range scan (PostgreSQL 14+): as fast as a sequential
    /// scan, no index, no sort, and independent of every other piece, so several readers share
    /// one table.
    Blocks { lo: u32, hi: u32 },
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
/// state at the slot's consistent point.
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
    let mut tasks = Vec::with_capacity(readers);
    for _ in 0..readers {
        let config = config.clone();
        let registry = registry.clone();
        let queue = queue.clone();
        let snapshot_name = snapshot_name.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let client = sql::connect(&config).await?;
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|e| sql_error(e, "starting the snapshot transaction"))?;
            if let Some(name) = &snapshot_name {
                client
                    .batch_execute(&format!(
                        "SET TRANSACTION SNAPSHOT {}",
                        escape_literal(name)
                    ))
                    .await
                    .map_err(|e| sql_error(e, "importing the exported snapshot"))?;
            }
            loop {
                let job = queue.lock().await.pop_front();
                let Some(job) = job else { break };
                read_table(&client, &registry, job, chunk_rows, &tx).await?;
            }
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| sql_error(e, "ending the snapshot"))?;
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
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn read_table(
    client: &Client,
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
    let (mut after_key, mut rows_done, blocks) = match &job.piece {
        Piece::Keyed {
            after_key,
            rows_done,
        } => (after_key.clone(), *rows_done, None),
        Piece::Blocks { lo, hi } => (None, 0, Some((*lo, *hi))),
    };
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
        .map(|(oid, _)| registry.supports_binary(*oid))
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
    loop {
        let mut select = format!("SELECT {}", columns.join(", "));
        if chunked {
            for (i, k) in key_cols.iter().enumerate() {
                select.push_str(&format!(", {k}::text AS \"_powersync_key_{i}\""));
            }
        }
        select.push_str(&format!(" FROM {}", qualified(&schema.name)));
        if let Some((lo, hi)) = blocks {
            select.push_str(&format!(
                " WHERE ctid >= '({lo},0)'::tid AND ctid < '({hi},0)'::tid"
            ));
        }
        if chunked {
            if let Some(after) = &after_key {
                let lits: Vec<String> = after
                    .iter()
                    .zip(&key_types)
                    .map(|(v, t)| format!("{}::{}", escape_literal(v), t))
                    .collect();
                select.push_str(&format!(
                    " WHERE ({}) > ({})",
                    key_cols.join(", "),
                    lits.join(", ")
                ));
            }
            select.push_str(&format!(
                " ORDER BY {} LIMIT {chunk_rows}",
                key_cols.join(", ")
            ));
        }
        let copy = format!("COPY ({select}) TO STDOUT (FORMAT binary)");
        let stream = client
            .copy_out(copy.as_str())
            .await
            .map_err(|e| sql_error(e, &format!("snapshot of {}", schema.name)))?;
        pin_mut!(stream);
        let mut parser = CopyBinaryParser::new(
            schema.columns.len(),
            if chunked { key_cols.len() } else { 0 },
        );
        let mut rows = Vec::with_capacity(ROWS_PER_MESSAGE);
        let mut chunk_count = 0u64;
        let mut last_tuple: Option<bytes::Bytes> = None;
        while let Some(data) = stream.next().await {
            let data = data.map_err(|e| sql_error(e, &format!("snapshot of {}", schema.name)))?;
            parser.push(&data);
            while let Some(tuple) = parser
                .next_tuple()
                .map_err(|e| SourceError::decode(format!("COPY data of {}: {e}", schema.name)))?
            {
                let mut values = Vec::with_capacity(schema.columns.len());
                for (i, field) in tuple_fields(&tuple).take(schema.columns.len()).enumerate() {
                    let (oid, typmod) = table.column_types[i];
                    let v = match field {
                        None => Ok(Value::Null),
                        Some(bytes) if binary[i] => {
                            types::decode_binary(registry, oid, typmod, bytes)
                        }
                        Some(bytes) => types::decode_text(registry, oid, typmod, bytes),
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
                if chunked {
                    // Only the chunk's last key is needed: keep the tuple, read it at the end.
                    last_tuple = Some(tuple);
                }
                rows.push(Row::new(values));
                chunk_count += 1;
                if rows.len() == ROWS_PER_MESSAGE {
                    let full = std::mem::replace(&mut rows, Vec::with_capacity(ROWS_PER_MESSAGE));
                    send(SnapshotMsg::Rows {
                        table: job.index,
                        rows: full,
                    })
                    .await?;
                }
            }
        }
        parser
            .finish()
            .map_err(|e| SourceError::decode(format!("COPY data of {}: {e}", schema.name)))?;
        if !rows.is_empty() {
            send(SnapshotMsg::Rows {
                table: job.index,
                rows,
            })
            .await?;
        }
        rows_done += chunk_count;
        if let Some((lo, hi)) = blocks {
            return send(SnapshotMsg::BlocksDone {
                table: job.index,
                lo,
                hi,
            })
            .await;
        }
        if !chunked || chunk_count < chunk_rows {
            break;
        }
        after_key = last_tuple.take().map(|t| {
            tuple_fields(&t)
                .skip(schema.columns.len())
                .map(|f| String::from_utf8_lossy(f.unwrap_or_default()).into_owned())
                .collect()
        });
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
