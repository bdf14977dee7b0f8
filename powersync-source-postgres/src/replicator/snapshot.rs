//! The initial snapshot (or its resumption) and the read of a table first seen in the stream.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use powersync_source_core::runtime::{Emitter, SnapshotBook, Step, TableStart};
use powersync_source_core::{
    ChangeEvent, OldImage, Op, Row, RowChange, SnapshotProgress, SourceError, TableSchema,
};
use tokio::sync::mpsc;

use super::{RelationState, Replicator, SnapshotPlan};
use crate::catalog::{self, PublishedTable, Publishing};
use crate::connection::sql_error;
use crate::snapshot_reader::{self, CreatedSince, Piece, SnapshotMsg, TableJob};

/// Snapshot bookkeeping of one table beyond the [`SnapshotBook`]: the heap-block pieces still
/// being read and the rows emitted so far.
#[derive(Debug, Default)]
struct TableState {
    started: bool,
    done: bool,
    rows: u64,
    pieces_left: usize,
    blocks_done: Option<Vec<(u32, u32)>>,
}

/// The snapshot readers at work: their messages in arrival order, then their own result.
struct Reading {
    readers: BoxFuture<'static, Result<(), SourceError>>,
    rx: mpsc::Receiver<Result<SnapshotMsg, SourceError>>,
    readers_done: bool,
}

impl Reading {
    /// Starts `parallelism` readers on `jobs` (inside the exported snapshot when given).
    fn start(
        replicator: &Replicator,
        jobs: Vec<TableJob>,
        exported: Option<String>,
        parallelism: usize,
    ) -> Reading {
        let (tx, rx) = mpsc::channel(8);
        let readers = snapshot_reader::read_tables(
            replicator.config.clone(),
            replicator.registry.clone(),
            jobs,
            exported,
            parallelism,
            replicator.config.snapshot_chunk_rows().max(1),
            tx,
        )
        .boxed();
        Reading {
            readers,
            rx,
            readers_done: false,
        }
    }

    /// The next message, `None` once every reader finished; a reader's failure ends it.
    async fn next(&mut self) -> Result<Option<SnapshotMsg>, SourceError> {
        loop {
            let msg = tokio::select! {
                msg = self.rx.recv() => msg,
                result = &mut self.readers, if !self.readers_done => {
                    self.readers_done = true;
                    result?;
                    continue;
                }
            };
            match msg {
                Some(msg) => return msg.map(Some),
                None => {
                    if !self.readers_done {
                        self.readers_done = true;
                        (&mut self.readers).await?;
                    }
                    return Ok(None);
                }
            }
        }
    }
}

/// Inserts of snapshot rows.
fn snapshot_row(table: &Arc<TableSchema>, row: Row) -> ChangeEvent {
    ChangeEvent::Row(RowChange {
        op: Op::Insert,
        table: table.clone(),
        old: None,
        old_image: OldImage::None,
        new: Some(row),
        snapshot: true,
    })
}

impl Replicator {
    /// Reads every table of `plan` not finished before and emits it with its progress events,
    /// then `SnapshotProgress::Done`.
    pub(super) async fn snapshot(&mut self, plan: SnapshotPlan, out: &mut Emitter) -> Step<()> {
        let SnapshotPlan {
            tables,
            mut book,
            exported,
        } = plan;
        let tables: Vec<Arc<PublishedTable>> = tables.into_iter().map(Arc::new).collect();
        // What a resume needs to find the rows that moved into a finished region (see
        // `CreatedSince`): the original snapshot's xmin, carried by every token.
        let since = match &exported {
            Some(name) => {
                let xmin = snapshot_reader::snapshot_xmin(&self.sql, name).await?;
                book.set_source_state(Some(encode_state(xmin)));
                None
            }
            None => Some(CreatedSince {
                xmin: decode_state(book.source_state())?,
            }),
        };
        let layout = self.heap_layout(&tables).await?;
        let parallelism = self.config.snapshot_parallelism().max(1) as u32;
        let chunk_rows = self.config.snapshot_chunk_rows().max(1);
        let mut state: Vec<TableState> = Vec::with_capacity(tables.len());
        let mut jobs = Vec::new();
        for (index, table) in tables.iter().enumerate() {
            self.known.insert(table.oid);
            let mut st = TableState::default();
            let mut keyed_resume = false;
            match book.start(&table.schema.name) {
                TableStart::Skip => st.done = true,
                TableStart::Resume { after_key, rows } => {
                    st.rows = rows;
                    match snapshot_reader::decode_blocks(&after_key)? {
                        Some(done) => {
                            // The finished ranges again, for the rows moved into them.
                            for &(lo, hi) in &done {
                                jobs.push(TableJob {
                                    index,
                                    table: table.clone(),
                                    piece: Piece::Recheck {
                                        lo,
                                        hi,
                                        since: since.unwrap_or_default(),
                                    },
                                });
                                st.pieces_left += 1;
                            }
                            st.blocks_done = Some(done);
                        }
                        None => {
                            let after_key = Some(snapshot_reader::decode_key(&after_key)?);
                            jobs.push(TableJob {
                                index,
                                table: table.clone(),
                                piece: Piece::Keyed {
                                    after_key,
                                    rows_done: rows,
                                    recheck: since,
                                },
                            });
                            st.pieces_left = 1;
                            keyed_resume = true;
                        }
                    }
                }
                TableStart::Fresh => {}
            }
            if !st.done && !keyed_resume {
                match layout.get(&table.oid) {
                    // Heap tables on 14+: block ranges, shared by the readers.
                    Some(&(nblocks, rows_per_block)) => {
                        let done = st.blocks_done.get_or_insert_with(Vec::new);
                        let per_chunk = (chunk_rows as f64 / rows_per_block.max(1.0)).ceil() as u32;
                        let per_reader = nblocks.div_ceil(parallelism).max(1);
                        let pieces =
                            snapshot_reader::block_pieces(nblocks, done, per_chunk.min(per_reader));
                        st.pieces_left += pieces.len();
                        for (lo, hi) in pieces {
                            jobs.push(TableJob {
                                index,
                                table: table.clone(),
                                piece: Piece::Blocks { lo, hi },
                            });
                        }
                    }
                    None => {
                        // Keyed from the start: partitioned tables, servers before 14 (a
                        // block progress from a newer server does not translate: whole).
                        jobs.push(TableJob {
                            index,
                            table: table.clone(),
                            piece: Piece::Keyed {
                                after_key: None,
                                rows_done: 0,
                                recheck: None,
                            },
                        });
                        st.pieces_left = 1;
                    }
                }
            }
            state.push(st);
        }
        out.plan_snapshot(tables.len());
        let mut reading = Reading::start(self, jobs, exported, parallelism as usize);
        while let Some(msg) = reading.next().await? {
            let index = match &msg {
                SnapshotMsg::TableStarted { table }
                | SnapshotMsg::Rows { table, .. }
                | SnapshotMsg::ChunkDone { table, .. }
                | SnapshotMsg::TableDone { table, .. }
                | SnapshotMsg::BlocksDone { table, .. }
                | SnapshotMsg::Rechecked { table } => *table,
            };
            let t = tables[index].clone();
            let name = &t.schema.name;
            if !state[index].started {
                state[index].started = true;
                table_started(&t, &book, out).await?;
            }
            match msg {
                SnapshotMsg::TableStarted { .. } => {}
                SnapshotMsg::Rows { rows, .. } => {
                    // Rows of a recheck count too: the count is of rows emitted.
                    state[index].rows += rows.len() as u64;
                    out.push_all(rows.into_iter().map(|row| snapshot_row(&t.schema, row)))
                        .await?;
                }
                SnapshotMsg::ChunkDone {
                    after_key,
                    rows_done,
                    ..
                } => {
                    // A keyed chunk always ends at a row (an empty one ends the table).
                    if let Some(after_key) = after_key {
                        let event = book.chunk_done(name, after_key, rows_done, t.estimated_rows);
                        out.push(event).await?;
                    }
                }
                SnapshotMsg::BlocksDone { lo, hi, .. } => {
                    let st = &mut state[index];
                    st.pieces_left = st.pieces_left.saturating_sub(1);
                    let done = st.blocks_done.get_or_insert_with(Vec::new);
                    snapshot_reader::merge_range(done, lo, hi);
                    let rows = st.rows;
                    let event = if st.pieces_left == 0 {
                        book.table_done(name, rows)
                    } else {
                        let after_key = snapshot_reader::encode_blocks(done);
                        book.chunk_done(name, after_key, rows, t.estimated_rows)
                    };
                    out.push(event).await?;
                }
                SnapshotMsg::Rechecked { .. } => {
                    let st = &mut state[index];
                    st.pieces_left = st.pieces_left.saturating_sub(1);
                    if st.pieces_left == 0 {
                        out.push(book.table_done(name, st.rows)).await?;
                    }
                }
                SnapshotMsg::TableDone { rows, .. } => {
                    out.push(book.table_done(name, rows)).await?;
                }
            }
        }
        // Tables with nothing left to read (empty, or done before a resume) still get their
        // schema and their start/done events.
        for (t, st) in tables.iter().zip(&state) {
            if !st.started {
                table_started(t, &book, out).await?;
                if !st.done {
                    out.push(book.table_done(&t.schema.name, st.rows)).await?;
                }
            }
        }
        for t in &tables {
            self.schemas.emitted(&t.schema);
            self.relations.insert(
                t.oid,
                RelationState {
                    schema: t.schema.clone(),
                    types: t.column_types.clone(),
                    selected: true,
                    signal: false,
                },
            );
        }
        out.push(book.done()).await?;
        out.flush().await
    }

    /// Per heap table readable by block ranges (PostgreSQL 14+ TID range scans; not
    /// partitioned tables): its size in blocks and the estimated rows per block.
    async fn heap_layout(
        &self,
        tables: &[Arc<PublishedTable>],
    ) -> Result<HashMap<u32, (u32, f64)>, SourceError> {
        let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
        let rows = self
            .sql
            .query(
                "SELECT c.oid, (pg_catalog.pg_relation_size(c.oid) / current_setting('block_size')::bigint)::bigint,
                        c.relpages, c.reltuples::float8
                 FROM pg_catalog.pg_class c
                 WHERE c.oid = ANY($1) AND c.relkind IN ('r', 'm')
                   AND current_setting('server_version_num')::int >= 140000",
                &[&oids],
            )
            .await
            .map_err(|e| sql_error(e, "measuring tables for the snapshot"))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let nblocks: i64 = r.get(1);
                let relpages: i32 = r.get(2);
                let reltuples: f64 = r.get(3);
                let per_block = if relpages > 0 && reltuples > 0.0 {
                    reltuples / relpages as f64
                } else {
                    60.0
                };
                (
                    r.get::<_, u32>(0),
                    (nblocks.clamp(0, u32::MAX as i64 - 1) as u32, per_block),
                )
            })
            .collect())
    }

    /// Records what the publication publishes of the table `oid` (of stream schema `schema`)
    /// as read now (restored if the open transaction aborts), and returns it.
    pub(super) async fn note_read_publishing(
        &mut self,
        oid: u32,
        schema: &TableSchema,
    ) -> Result<Publishing, SourceError> {
        let mut publishing = catalog::publishing(&self.sql, self.config.publication(), oid)
            .await?
            .unwrap_or_default();
        // Recorded as read: the columns of the Relation message, which a column list that
        // changed since may not match yet (its Relation message then reads the table again).
        if let Some(list) = &mut publishing.column_list {
            *list = schema.columns.iter().map(|c| c.name.clone()).collect();
        }
        let before = self.publishing.insert(oid, publishing.clone());
        if self.in_transaction {
            self.txn_publishing.push((oid, before));
        }
        Ok(publishing)
    }

    /// Reads a table first seen in the stream (added to the publication or re-created) inside
    /// the open transaction, as `snapshot: true` inserts between its TableStarted and
    /// TableDone events.
    pub(super) async fn snapshot_new_table(&mut self, oid: u32, out: &mut Emitter) -> Step<()> {
        let Some(rel) = self.relations.get(&oid) else {
            return Ok(());
        };
        let schema = rel.schema.clone();
        let types = rel.types.clone();
        let publishing = self.note_read_publishing(oid, &schema).await?;
        let table = PublishedTable {
            oid,
            schema: schema.clone(),
            column_types: types,
            estimated_rows: None,
            publishing,
        };
        tracing::info!(target: "powersync_source_postgres", "snapshotting {} first seen in the stream", schema.name);
        let job = TableJob {
            index: 0,
            table: Arc::new(table),
            piece: Piece::Keyed {
                after_key: None,
                rows_done: 0,
                recheck: None,
            },
        };
        let mut reading = Reading::start(self, vec![job], None, 1);
        self.emit_begin(out).await?;
        while let Some(msg) = reading.next().await? {
            match msg {
                SnapshotMsg::TableStarted { .. } => {
                    out.push(ChangeEvent::Snapshot(SnapshotProgress::TableStarted {
                        table: schema.name.clone(),
                        estimated_rows: None,
                    }))
                    .await?;
                }
                SnapshotMsg::Rows { rows, .. } => {
                    out.push_all(rows.into_iter().map(|row| snapshot_row(&schema, row)))
                        .await?;
                }
                SnapshotMsg::ChunkDone { .. }
                | SnapshotMsg::BlocksDone { .. }
                | SnapshotMsg::Rechecked { .. } => {}
                SnapshotMsg::TableDone { rows, .. } => {
                    out.push(ChangeEvent::Snapshot(SnapshotProgress::TableDone {
                        table: schema.name.clone(),
                        rows,
                    }))
                    .await?;
                }
            }
        }
        Ok(())
    }
}

/// The connector's part of a resume token: `{"xmin":N}`, the original snapshot's xmin.
fn encode_state(xmin: u32) -> String {
    format!("{{\"xmin\":{xmin}}}")
}

/// Parses [`encode_state`]'s output; `None` for a token without it (written before it
/// existed): then a resume reads the finished regions again whole.
fn decode_state(state: Option<&str>) -> Result<Option<u32>, SourceError> {
    #[derive(serde::Deserialize)]
    struct State {
        xmin: u32,
    }
    state
        .map(|s| {
            serde_json::from_str::<State>(s)
                .map(|st| st.xmin)
                .map_err(|e| {
                    SourceError::config(format!("snapshot resume state `{s}` is corrupt"))
                        .with_source(e)
                })
        })
        .transpose()
}

/// The schema of a table and the event that its read starts.
async fn table_started(t: &PublishedTable, book: &SnapshotBook, out: &mut Emitter) -> Step<()> {
    out.push(ChangeEvent::Schema(t.schema.clone())).await?;
    out.push(book.table_started(&t.schema.name, t.estimated_rows))
        .await
}
