//! The snapshot reader: chunks of each table through `COPY … TO STDOUT (FORMAT binary)` —
//! heap block ranges read by TID range scans on PostgreSQL 14+ (several readers per table),
//! key-ordered chunks otherwise — all readers inside one exported snapshot when the slot was
//! just created.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use futures::{pin_mut, StreamExt};
use postgres_protocol::escape::{escape_identifier, escape_literal};
use powersync_source_core::normalize::json::write_json_string;
use powersync_source_core::{Row, SourceError, Value};
use tokio::sync::{mpsc, Mutex};
use tokio_postgres::Client;

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

/// A resume key as a JSON array of the key columns' text renderings.
pub(crate) fn encode_key(key: &[String]) -> String {
    let mut out = String::from("[");
    for (i, k) in key.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(&mut out, k);
    }
    out.push(']');
    out
}

/// Parses [`encode_key`]'s output.
pub(crate) fn decode_key(s: &str) -> Result<Vec<String>, SourceError> {
    serde_json::from_str(s).map_err(|e| {
        SourceError::config(format!("snapshot resume key `{s}` is corrupt")).with_source(e)
    })
}

/// Incremental parser of PostgreSQL's binary COPY format (header, then tuples of
/// length-prefixed fields, then the -1 trailer).
pub(crate) struct CopyBinaryParser {
    buf: BytesMut,
    header_done: bool,
    trailer_seen: bool,
    expected_fields: usize,
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl CopyBinaryParser {
    pub(crate) fn new(columns: usize, extra: usize) -> Self {
        CopyBinaryParser {
            buf: BytesMut::new(),
            header_done: false,
            trailer_seen: false,
            expected_fields: columns + extra,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete, validated tuple (its fields, without the count), or `None` if more
    /// data is needed. Read the fields with [`tuple_fields`].
    pub(crate) fn next_tuple(&mut self) -> Result<Option<bytes::Bytes>, String> {
        if !self.header_done {
            if self.buf.len() < SIGNATURE.len() + 8 {
                return Ok(None);
            }
            if &self.buf[..SIGNATURE.len()] != SIGNATURE {
                return Err("bad COPY BINARY signature".into());
            }
            let ext = u32::from_be_bytes([self.buf[15], self.buf[16], self.buf[17], self.buf[18]])
                as usize;
            if self.buf.len() < 19 + ext {
                return Ok(None);
            }
            self.buf.advance(19 + ext);
            self.header_done = true;
        }
        if self.trailer_seen || self.buf.len() < 2 {
            return Ok(None);
        }
        let count = i16::from_be_bytes([self.buf[0], self.buf[1]]);
        if count == -1 {
            self.trailer_seen = true;
            self.buf.advance(2);
            return Ok(None);
        }
        if count < 0 || count as usize != self.expected_fields {
            return Err(format!(
                "tuple has {count} fields, expected {}",
                self.expected_fields
            ));
        }
        // Check the whole tuple is buffered before consuming anything.
        let mut pos = 2;
        for _ in 0..count {
            if self.buf.len() < pos + 4 {
                return Ok(None);
            }
            let len = i32::from_be_bytes([
                self.buf[pos],
                self.buf[pos + 1],
                self.buf[pos + 2],
                self.buf[pos + 3],
            ]);
            pos += 4;
            if len >= 0 {
                pos += len as usize;
                if self.buf.len() < pos {
                    return Ok(None);
                }
            } else if len != -1 {
                return Err(format!("negative field length {len}"));
            }
        }
        let mut tuple = self.buf.split_to(pos).freeze();
        tuple.advance(2);
        Ok(Some(tuple))
    }

    pub(crate) fn finish(&self) -> Result<(), String> {
        if !self.trailer_seen && (self.header_done || !self.buf.is_empty()) {
            return Err("COPY data ended without its trailer".into());
        }
        Ok(())
    }
}

/// The fields of a tuple returned by [`CopyBinaryParser::next_tuple`] (`None` = SQL NULL).
/// The tuple was validated when it was split off, so this never reads out of bounds.
pub(crate) fn tuple_fields(tuple: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    let mut rest = tuple;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = i32::from_be_bytes(*len);
        if len < 0 {
            rest = tail;
            return Some(None);
        }
        let len = (len as usize).min(tail.len());
        let (field, tail) = tail.split_at(len);
        rest = tail;
        Some(Some(field))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for f in row {
                match f {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        out.extend_from_slice(b);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn parse_all(
        data: &[u8],
        splits: &[usize],
        fields: usize,
    ) -> Result<Vec<Vec<Option<Vec<u8>>>>, String> {
        let mut p = CopyBinaryParser::new(fields, 0);
        let mut out = Vec::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = splits.iter().map(|s| s % (data.len() + 1)).collect();
        cuts.push(data.len());
        cuts.sort_unstable();
        for cut in cuts {
            p.push(&data[start..cut.max(start)]);
            start = cut.max(start);
            while let Some(t) = p.next_tuple()? {
                out.push(tuple_fields(&t).map(|f| f.map(<[u8]>::to_vec)).collect());
            }
        }
        p.finish()?;
        Ok(out)
    }

    proptest! {
        #[test]
        fn round_trips_across_any_split(
            rows in proptest::collection::vec(proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)), 3), 0..20),
            splits in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let data = encode(&rows);
            prop_assert_eq!(parse_all(&data, &splits, 3).unwrap(), rows);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(data in proptest::collection::vec(any::<u8>(), 0..200), splits in proptest::collection::vec(any::<usize>(), 0..5)) {
            let _ = parse_all(&data, &splits, 3);
            let mut valid = encode(&[vec![Some(vec![1, 2]), None, Some(vec![])]]);
            for (i, b) in data.iter().enumerate().take(8) {
                let at = (*b as usize + i * 7) % valid.len();
                valid[at] ^= b | 1;
            }
            let _ = parse_all(&valid, &splits, 3);
        }
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let data = encode(&[vec![Some(vec![1]), None, None]]);
        assert!(parse_all(&data[..data.len() - 2], &[], 3).is_err());
        assert!(parse_all(&data, &[], 2).is_err());
    }
}

/// Heap blocks already read, as stored in a resume token: `{"blocks":[[lo,hi],…]}`.
pub(crate) fn encode_blocks(done: &[(u32, u32)]) -> String {
    let ranges: Vec<String> = done.iter().map(|(lo, hi)| format!("[{lo},{hi}]")).collect();
    format!("{{\"blocks\":[{}]}}", ranges.join(","))
}

/// Parses [`encode_blocks`]' output; `None` when the progress is a key instead.
pub(crate) fn decode_blocks(s: &str) -> Result<Option<Vec<(u32, u32)>>, SourceError> {
    #[derive(serde::Deserialize)]
    struct Blocks {
        blocks: Vec<(u32, u32)>,
    }
    if !s.trim_start().starts_with('{') {
        return Ok(None);
    }
    serde_json::from_str::<Blocks>(s)
        .map(|b| Some(b.blocks))
        .map_err(|e| {
            SourceError::config(format!("snapshot resume blocks `{s}` are corrupt")).with_source(e)
        })
}

/// Adds `lo..hi` to sorted, merged ranges.
pub(crate) fn merge_range(done: &mut Vec<(u32, u32)>, lo: u32, hi: u32) {
    done.push((lo, hi));
    done.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(done.len());
    for &(l, h) in done.iter() {
        match merged.last_mut() {
            Some(last) if l <= last.1 => last.1 = last.1.max(h),
            _ => merged.push((l, h)),
        }
    }
    *done = merged;
}

/// The pieces of `0..nblocks` not in `done`, each at most `per_piece` blocks. The last piece
/// is open-ended (`u32::MAX`) so rows in blocks added since `nblocks` was measured are read too.
pub(crate) fn block_pieces(nblocks: u32, done: &[(u32, u32)], per_piece: u32) -> Vec<(u32, u32)> {
    let per_piece = per_piece.max(1);
    let mut out = Vec::new();
    let mut at = 0u32;
    let mut gaps: Vec<(u32, u32)> = Vec::new();
    for &(lo, hi) in done {
        if lo > at {
            gaps.push((at, lo));
        }
        at = at.max(hi);
    }
    if at < u32::MAX {
        gaps.push((at, u32::MAX));
    }
    for (lo, hi) in gaps {
        let end = hi.min(nblocks.max(lo));
        let mut l = lo;
        while l < end {
            let h = l.saturating_add(per_piece).min(end);
            out.push((l, h));
            l = h;
        }
        if hi == u32::MAX {
            // Everything from the measured end on, whatever the table grew to.
            out.push((end, u32::MAX));
        }
    }
    out
}

#[cfg(test)]
mod block_tests {
    use super::*;

    #[test]
    fn pieces_cover_what_is_left_and_the_open_end() {
        assert_eq!(
            block_pieces(10, &[], 4),
            vec![(0, 4), (4, 8), (8, 10), (10, u32::MAX)]
        );
        assert_eq!(
            block_pieces(10, &[(0, 4), (8, 10)], 4),
            vec![(4, 8), (10, u32::MAX)]
        );
        assert_eq!(block_pieces(0, &[], 4), vec![(0, u32::MAX)]);
        assert!(block_pieces(10, &[(0, u32::MAX)], 4).is_empty());
        let mut done = vec![];
        for (lo, hi) in [(4, 8), (0, 4), (10, u32::MAX), (8, 10)] {
            merge_range(&mut done, lo, hi);
        }
        assert_eq!(done, vec![(0, u32::MAX)]);
        let token = encode_blocks(&[(0, 4), (8, 12)]);
        assert_eq!(decode_blocks(&token).unwrap(), Some(vec![(0, 4), (8, 12)]));
        assert_eq!(decode_blocks("[\"5\"]").unwrap(), None);
        assert!(decode_blocks("{\"blocks\":7}").is_err());
    }
}
