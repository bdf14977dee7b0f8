//! The backfill mechanism against a model source whose log a writer keeps appending to: the
//! watermark window keeps chunk rows from overwriting newer streamed images, the cursor rides
//! on checkpoints, and a resumed stream continues after the last stored chunk.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use powersync_source_core::backfill::{Chunk, ChunkReader};
use powersync_source_core::position::PgLsn;
use powersync_source_core::runtime::spawn_stream;
use powersync_source_core::{
    Begin, ChangeEvent, Checkpoint, Column, Commit, OldImage, Op, Position, Result, Row, RowChange,
    RowIdentity, SnapshotProgress, StreamOptions, TableName, TableSchema, Value,
};

#[derive(Debug, Clone)]
enum Item {
    /// `big` or `other` row `id` now has `version` (`None`: deleted).
    Row(&'static str, i64, Option<i64>),
    Mark(String),
    Signal(String, String),
    Truncate,
}

#[derive(Default)]
struct Source {
    big: BTreeMap<i64, i64>,
    other: BTreeMap<i64, i64>,
    /// Committed transactions in commit order; position = index + 1.
    log: Vec<Vec<Item>>,
}

type Shared = Arc<Mutex<Source>>;

fn schema(name: &str) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        name: TableName::new("public", name),
        source_id: None,
        columns: vec![
            Column::new("id", "int8").key(),
            Column::new("version", "int8"),
        ],
        identity: RowIdentity::PrimaryKey,
    })
}

fn row(id: i64, version: i64) -> Row {
    Row::new(vec![Value::Integer(id), Value::Integer(version)])
}

struct Reader {
    source: Shared,
    /// Truncate `big` right after this many chunk reads (inside that chunk's window).
    truncate_after_reads: Option<usize>,
    reads: usize,
}

#[async_trait]
impl ChunkReader for Reader {
    async fn write_watermark(&mut self, mark: &str) -> Result<()> {
        self.source
            .lock()
            .unwrap()
            .log
            .push(vec![Item::Mark(mark.to_string())]);
        // Give the writer time between the watermarks and the read.
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(())
    }

    async fn read_chunk(
        &mut self,
        table: &TableName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Chunk> {
        assert_eq!(table.name, "big");
        let after: i64 = after.map(|a| a.parse().unwrap()).unwrap_or(i64::MIN);
        let rows: Vec<(i64, i64)> = {
            let s = self.source.lock().unwrap();
            s.big
                .range(after + 1..)
                .take(limit)
                .map(|(k, v)| (*k, *v))
                .collect()
        };
        self.reads += 1;
        if self.truncate_after_reads == Some(self.reads) {
            let mut s = self.source.lock().unwrap();
            s.big.clear();
            s.log.push(vec![Item::Truncate]);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(Chunk {
            schema: schema("big"),
            last_key: rows.last().map(|(k, _)| k.to_string()),
            rows: rows.into_iter().map(|(k, v)| row(k, v)).collect(),
        })
    }

    async fn write_signal(&mut self, id: &str, tables: &[TableName]) -> Result<()> {
        let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        self.source
            .lock()
            .unwrap()
            .log
            .push(vec![Item::Signal(id.to_string(), tables.join(","))]);
        Ok(())
    }
}

/// The model source's stream task: passes the log from `from` on, as a connector would.
fn start(
    source: &Shared,
    from: Option<Checkpoint>,
    chunk_rows: usize,
) -> powersync_source_core::ChangeStream {
    start_with(source, from, chunk_rows, None)
}

fn start_with(
    source: &Shared,
    from: Option<Checkpoint>,
    chunk_rows: usize,
    truncate_after_reads: Option<usize>,
) -> powersync_source_core::ChangeStream {
    let options = StreamOptions::default()
        .with_backfill_chunk_rows(chunk_rows)
        .with_batch_events(64);
    let source = source.clone();
    let task_options = options.clone();
    spawn_stream("postgres", &options, move |mut out, _acks| async move {
        let mut next = match &from {
            Some(c) => PgLsn::from_checkpoint(c)?.0 as usize,
            None => 0,
        };
        out.enable_backfill(
            Box::new(Reader {
                source: source.clone(),
                truncate_after_reads,
                reads: 0,
            }),
            from.as_ref(),
            "public",
            &task_options,
        )?;
        loop {
            let tx = source.lock().unwrap().log.get(next).cloned();
            let Some(tx) = tx else {
                if out.is_closed() {
                    return Ok(());
                }
                out.flush().await?;
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            };
            next += 1;
            let mut begun = false;
            for item in tx {
                match item {
                    Item::Row(table, id, version) => {
                        if !begun {
                            out.push(ChangeEvent::Begin(Begin {
                                xid: None,
                                commit_time: None,
                            }))
                            .await?;
                            begun = true;
                        }
                        let (op, old, new) = match version {
                            Some(v) => (Op::Update, None, Some(row(id, v))),
                            None => (
                                Op::Delete,
                                Some(Row::new(vec![Value::Integer(id), Value::Unchanged])),
                                None,
                            ),
                        };
                        out.push(ChangeEvent::Row(RowChange {
                            op,
                            table: schema(table),
                            old_image: if old.is_some() {
                                OldImage::Key
                            } else {
                                OldImage::None
                            },
                            old,
                            new,
                            snapshot: false,
                        }))
                        .await?;
                    }
                    Item::Mark(m) => out.backfill_watermark(&m),
                    Item::Truncate => {
                        if !begun {
                            out.push(ChangeEvent::Begin(Begin {
                                xid: None,
                                commit_time: None,
                            }))
                            .await?;
                            begun = true;
                        }
                        out.push(ChangeEvent::Truncate(powersync_source_core::Truncate {
                            tables: vec![TableName::new("public", "big")],
                        }))
                        .await?;
                    }
                    Item::Signal(id, tables) => out.backfill_signal(&id, "backfill", &tables),
                }
            }
            let checkpoint = PgLsn(next as u64).to_checkpoint();
            if begun {
                out.push(ChangeEvent::Commit(Commit {
                    checkpoint,
                    commit_time: None,
                }))
                .await?;
            } else {
                out.push(ChangeEvent::Keepalive(checkpoint)).await?;
            }
        }
    })
    .serving_backfills()
}

/// Writes random updates (and some deletes and re-inserts) to `big` and `other` until `stop`.
fn writer(
    source: &Shared,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let source = source.clone();
    tokio::spawn(async move {
        let mut n = 0u64;
        let mut seed = 0x9e3779b97f4a7c15u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            {
                let mut s = source.lock().unwrap();
                let mut tx = Vec::new();
                for _ in 0..3 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let id = (seed % 2_000) as i64;
                    let version = s.big.get(&id).copied();
                    let item = match (version, seed % 10) {
                        (Some(_), 0) => {
                            s.big.remove(&id);
                            Item::Row("big", id, None)
                        }
                        (Some(v), _) => {
                            s.big.insert(id, v + 1);
                            Item::Row("big", id, Some(v + 1))
                        }
                        (None, _) => {
                            // Re-inserted rows continue their version history.
                            s.big.insert(id, 1_000_000 + n as i64);
                            Item::Row("big", id, Some(1_000_000 + n as i64))
                        }
                    };
                    tx.push(item);
                }
                let v = s.other.get(&0).copied().unwrap_or(0) + 1;
                s.other.insert(0, v);
                tx.push(Item::Row("other", 0, Some(v)));
                s.log.push(tx);
            }
            n += 1;
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
        n
    })
}

/// What the host holds, applied transaction by transaction, with the ordering checks.
#[derive(Default)]
struct Host {
    big: BTreeMap<i64, i64>,
    stored: Option<Checkpoint>,
    chunks: Vec<u64>,
    done: Vec<(String, u64)>,
    tx: Vec<RowChange>,
    violations: Vec<String>,
}

impl Host {
    fn apply(&mut self, event: &ChangeEvent) {
        match event {
            ChangeEvent::Row(r) => self.tx.push(r.clone()),
            ChangeEvent::Truncate(_) => self.tx.push(RowChange {
                op: Op::Delete,
                table: schema("truncate"),
                old: None,
                old_image: OldImage::None,
                new: None,
                snapshot: false,
            }),
            ChangeEvent::Abort => self.tx.clear(),
            ChangeEvent::Commit(c) => {
                for r in std::mem::take(&mut self.tx) {
                    if r.table.name.name == "truncate" {
                        self.big.clear();
                        continue;
                    }
                    if r.table.name.name != "big" {
                        continue;
                    }
                    match (&r.old, &r.new) {
                        (_, Some(new)) => {
                            let id = new.get(0).and_then(Value::as_integer).unwrap();
                            let v = new.get(1).and_then(Value::as_integer).unwrap();
                            if let Some(held) = self.big.get(&id) {
                                if *held > v {
                                    self.violations.push(format!(
                                        "row {id}: version {held} then {v} (snapshot: {})",
                                        r.snapshot
                                    ));
                                }
                            }
                            self.big.insert(id, v);
                        }
                        (Some(old), None) => {
                            let id = old.get(0).and_then(Value::as_integer).unwrap();
                            self.big.remove(&id);
                        }
                        _ => {}
                    }
                }
                self.stored = Some(c.checkpoint.clone());
            }
            ChangeEvent::Keepalive(c) => self.stored = Some(c.clone()),
            ChangeEvent::Snapshot(SnapshotProgress::BackfillChunk { rows_done, .. }) => {
                self.chunks.push(*rows_done)
            }
            ChangeEvent::Snapshot(SnapshotProgress::BackfillDone { id, rows, .. }) => {
                self.done.push((id.clone(), *rows))
            }
            _ => {}
        }
    }
}

fn seeded() -> Shared {
    let mut s = Source::default();
    for id in 0..2_000 {
        s.big.insert(id, 1);
    }
    Arc::new(Mutex::new(s))
}

#[tokio::test]
async fn a_backfill_under_writes_never_moves_a_row_back_and_ends_equal() {
    let source = seeded();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = writer(&source, stop.clone());
    let mut stream = start(&source, None, 100);
    let mut host = Host::default();
    // No schema: the stream's default one (`public`), as the stream names the table.
    let id = stream
        .request_backfill(&[TableName::new("", "big")])
        .unwrap();
    while host.done.is_empty() {
        let batch = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("backfill stalled")
            .unwrap()
            .unwrap();
        batch.events.iter().for_each(|e| host.apply(e));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writes.await.unwrap();
    assert_eq!(host.done[0].0, id);
    // Catch up with the last writes.
    let end = source.lock().unwrap().log.len() as u64;
    while host
        .stored
        .as_ref()
        .is_none_or(|c| PgLsn::from_checkpoint(c).unwrap().0 < end)
    {
        let batch = stream.next().await.unwrap().unwrap();
        batch.events.iter().for_each(|e| host.apply(e));
    }
    assert!(
        host.violations.is_empty(),
        "{:?}",
        &host.violations[..host.violations.len().min(5)]
    );
    assert_eq!(
        host.big,
        source.lock().unwrap().big,
        "after {writes} write transactions"
    );
    assert!(host.chunks.len() >= 19, "{} chunks", host.chunks.len());
    // After the last chunk the checkpoint carries no cursor any more.
    assert_eq!(host.stored.unwrap().backfill().unwrap(), None);
}

#[tokio::test]
async fn a_stream_resumed_from_a_stored_checkpoint_continues_the_backfill_after_its_chunk() {
    let source = seeded();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = writer(&source, stop.clone());
    // A signal inserted into the source, as a person would.
    source
        .lock()
        .unwrap()
        .log
        .push(vec![Item::Signal("req-7".into(), "big".into())]);
    let mut host = Host::default();
    for round in 0..3 {
        let mut stream = start(&source, host.stored.clone(), 100);
        let chunks_before = host.chunks.len();
        let rows_stored = host
            .stored
            .as_ref()
            .and_then(|c| c.backfill().unwrap())
            .map(|s| s.tasks[0].rows);
        // Stop after 4 chunks in the first rounds, as a crash would: what was applied
        // after the last stored checkpoint is what the host lost.
        while host.done.is_empty() && (round == 2 || host.chunks.len() < chunks_before + 4) {
            let batch = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("backfill stalled")
                .unwrap()
                .unwrap();
            batch.events.iter().for_each(|e| host.apply(e));
        }
        if let Some(rows) = rows_stored {
            // The first chunk after the restart starts at the stored cursor: nothing stored is
            // read again.
            let first = host.chunks[chunks_before];
            assert!(
                first > rows && first <= rows + 100,
                "stored {rows}, then {first}"
            );
        }
        drop(stream);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writes.await.unwrap();
    assert_eq!(host.done[0].0, "req-7");
    let mut stream = start(&source, host.stored.clone(), 100);
    let end = source.lock().unwrap().log.len() as u64;
    while host
        .stored
        .as_ref()
        .is_none_or(|c| PgLsn::from_checkpoint(c).unwrap().0 < end)
    {
        let batch = stream.next().await.unwrap().unwrap();
        batch.events.iter().for_each(|e| host.apply(e));
    }
    assert!(
        host.violations.is_empty(),
        "{:?}",
        &host.violations[..host.violations.len().min(5)]
    );
    assert_eq!(host.big, source.lock().unwrap().big);
}

#[test]
fn a_checkpoint_carries_the_cursor_after_its_position() {
    use powersync_source_core::backfill::{BackfillState, BackfillTask};
    let state = BackfillState {
        tasks: vec![BackfillTask {
            id: "r|1".into(),
            table: TableName::new("public", "big"),
            after: Some("[\"a|backfill=b\"]".into()),
            rows: 7,
        }],
    };
    let c = PgLsn(0x16B3748).to_checkpoint().with_backfill(&state);
    let parsed = Checkpoint::parse(c.as_str()).unwrap();
    assert_eq!(parsed.body(), "00000000/016B3748");
    assert_eq!(parsed.position_part(), "postgres:v1:00000000/016B3748");
    assert_eq!(PgLsn::from_checkpoint(&parsed).unwrap(), PgLsn(0x16B3748));
    assert_eq!(parsed.backfill().unwrap(), Some(state));
    assert_eq!(
        parsed.with_backfill(&BackfillState::default()).as_str(),
        "postgres:v1:00000000/016B3748"
    );
    let corrupt = Checkpoint::parse("postgres:v1:00000000/016B3748|backfill=[{").unwrap_err();
    assert!(
        corrupt.message().contains("corrupt backfill cursor"),
        "{corrupt}"
    );
    assert!(Checkpoint::parse("postgres:v1:|backfill=[]").is_err());
}

#[tokio::test]
async fn a_chunk_read_around_a_truncate_is_read_again() {
    let source = seeded();
    let mut stream = start_with(&source, None, 300, Some(2));
    let mut host = Host::default();
    stream
        .request_backfill(&[TableName::new("public", "big")])
        .unwrap();
    while host.done.is_empty() {
        let batch = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("backfill stalled")
            .unwrap()
            .unwrap();
        batch.events.iter().for_each(|e| host.apply(e));
    }
    // The first chunk went out before the truncate, the second was read before it and
    // stopped at its high watermark after it: none of its rows may come back.
    assert!(source.lock().unwrap().big.is_empty());
    assert_eq!(host.big, BTreeMap::new());
}
