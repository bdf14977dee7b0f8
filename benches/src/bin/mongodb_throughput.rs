//! End-to-end throughput of the MongoDB connector against the raw driver in the same run, on
//! the same server and the same data: `find` (snapshot) and `watch` (streaming) with raw BSON
//! documents and no conversion are the baseline; the connector's rows/s and peak memory are
//! printed next to them as ratios.
//!
//! ```text
//! cargo run --release -p benches --features mongodb --bin mongodb-throughput -- \
//!     [--docs N] [--runs K] [--url mongodb://host/db?replicaSet=rs0]
//! ```
//!
//! Without `--url` a throwaway SecantusDB is started (testkit). SecantusDB is a Python server,
//! so absolute figures there measure mostly the server; the ratios say how much the connector
//! adds on top of reading the same bytes with the driver. SecantusDB answers every sorted,
//! limited query in time proportional to the whole collection (about 1 s per query at 20 000
//! documents, whatever the bounds), so the connector's batched snapshot (one query per
//! `--snapshot-batch-size` documents, which MongoDB answers from the `_id` index in time
//! proportional to the batch) is slower there by that constant per batch; a batch size above
//! `--docs` compares one query with one query.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use benches::{machine, median, RssSampler};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use powersync_source_core::{
    ChangeEvent, ChangeSource, Checkpoint, Position, SnapshotProgress, StartFrom, TableName,
};
use powersync_source_mongodb::bson::{doc, DateTime, Decimal128, Document, RawDocumentBuf};
use powersync_source_mongodb::core::position::MongoPosition;
use powersync_source_mongodb::mongodb::change_stream::event::ResumeToken;
use powersync_source_mongodb::mongodb::options::FullDocumentType;
use powersync_source_mongodb::mongodb::Client;
use powersync_source_mongodb::{MongoConfig, MongoSource};
use powersync_source_testkit::SecantusServer;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const SNAPSHOT_COLL: &str = "bench_snapshot";
const STREAM_COLL: &str = "bench_stream";
const TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Parser, Debug)]
#[command(about = "MongoDB connector throughput against the raw driver")]
struct Args {
    /// Documents snapshotted and streamed.
    #[arg(long, default_value_t = 20_000)]
    docs: u64,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A MongoDB URL whose path names a scratch database (its bench collections are
    /// replaced); default: a throwaway SecantusDB.
    #[arg(long)]
    url: Option<String>,
    /// The connector's `snapshot_batch_size` (documents per snapshot query).
    #[arg(long, default_value_t = 10_000)]
    snapshot_batch_size: u32,
}

struct Measure {
    elapsed: Duration,
    peak_kb: u64,
}

fn bench_doc(i: u64) -> Document {
    // Every 50th document has a null float.
    let every_50th = i % 50;
    doc! {
        "_id": i as i64,
        "n": (i % 100_000) as i32,
        "s": format!("{:032x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        "f": if every_50th == 0 { None } else { Some(i as f64 * 1.25) },
        "ts": DateTime::from_millis(1_704_067_200_000 + i as i64 * 1000),
        "amount": format!("{}.{:02}", i / 100, i % 100).parse::<Decimal128>().unwrap_or_else(|_| Decimal128::from_bytes([0; 16])),
        "tags": ["a", "b"],
    }
}

async fn load(client: &Client, db: &str, coll: &str, docs: u64) -> Result<()> {
    let c = client.database(db).collection::<Document>(coll);
    let mut i = 0;
    while i < docs {
        let end = (i + 1000).min(docs);
        c.insert_many((i..end).map(bench_doc)).await?;
        i = end;
    }
    Ok(())
}

async fn measured<F, Fut>(f: F) -> Result<Measure>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let sampler = RssSampler::start();
    let started = Instant::now();
    let n = tokio::time::timeout(TIMEOUT, f()).await??;
    let elapsed = started.elapsed();
    let (_start_kb, peak_kb) = sampler.finish();
    let _ = n;
    // Peak resident set of the whole process during the phase (absolute, not a delta: the
    // deltas of a streaming reader are often below the sampling noise).
    Ok(Measure { elapsed, peak_kb })
}

async fn raw_find(client: &Client, db: &str, expected: u64) -> Result<u64> {
    let coll = client
        .database(db)
        .collection::<RawDocumentBuf>(SNAPSHOT_COLL);
    let mut cursor = coll
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .batch_size(10_000)
        .await?;
    let mut n = 0;
    while let Some(d) = cursor.try_next().await? {
        std::hint::black_box(d.as_bytes().len());
        n += 1;
    }
    if n != expected {
        return Err(format!("raw find read {n} documents, expected {expected}").into());
    }
    Ok(n)
}

async fn connector_snapshot(source: &MongoSource, expected: u64) -> Result<u64> {
    let started = Instant::now();
    let mut stream = source.start(StartFrom::Beginning).await?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        for e in batch?.events {
            match e {
                ChangeEvent::Snapshot(SnapshotProgress::TableStarted { .. }) => {
                    // start() (server version, barrier write and its event) + listCollections.
                    println!(
                        "  connector snapshot setup before the first query: {:?}",
                        started.elapsed()
                    );
                }
                ChangeEvent::Row(r) => {
                    std::hint::black_box(&r);
                    rows += 1
                }
                ChangeEvent::Snapshot(SnapshotProgress::Done { .. }) => {
                    if rows != expected {
                        return Err(
                            format!("snapshot emitted {rows} rows, expected {expected}").into()
                        );
                    }
                    return Ok(rows);
                }
                _ => {}
            }
        }
    }
    Err("stream ended before the snapshot was done".into())
}

async fn raw_watch(client: &Client, db: &str, from: &Checkpoint, expected: u64) -> Result<u64> {
    let position = MongoPosition::from_checkpoint(from)?;
    let token: ResumeToken =
        powersync_source_mongodb::bson::from_bson(doc! {"_data": position.resume_token}.into())?;
    let mut stream = client
        .database(db)
        .watch()
        .pipeline([doc! {"$match": {"ns.coll": STREAM_COLL}}])
        .full_document(FullDocumentType::UpdateLookup)
        .start_after(token)
        .await?
        .with_type::<RawDocumentBuf>();
    let mut n = 0;
    while n < expected {
        match stream.next().await {
            Some(event) => {
                std::hint::black_box(event?.as_bytes().len());
                n += 1;
            }
            None => return Err("raw change stream ended".into()),
        }
    }
    Ok(n)
}

async fn connector_stream(source: &MongoSource, from: &Checkpoint, expected: u64) -> Result<u64> {
    let mut stream = source.start(StartFrom::Checkpoint(from.clone())).await?;
    let mut rows = 0;
    while rows < expected {
        match stream.next().await {
            Some(batch) => {
                for e in batch?.events {
                    if let ChangeEvent::Row(r) = e {
                        std::hint::black_box(&r);
                        rows += 1;
                    }
                }
            }
            None => return Err("connector stream ended".into()),
        }
    }
    Ok(rows)
}

fn report(name: &str, docs: u64, raw: &[Measure], ours: &[Measure]) {
    let raw_t = median(raw.iter().map(|m| m.elapsed).collect());
    let our_t = median(ours.iter().map(|m| m.elapsed).collect());
    let raw_mem = raw.iter().map(|m| m.peak_kb).max().unwrap_or(0);
    let our_mem = ours.iter().map(|m| m.peak_kb).max().unwrap_or(0);
    let rate = |t: Duration| docs as f64 / t.as_secs_f64().max(1e-9);
    println!(
        "{name:<10} raw driver {:>10.0} docs/s  peak RSS {:>7} KiB | connector {:>10.0} rows/s  peak RSS {:>7} KiB | throughput ratio {:.2}, memory ratio {:.2}",
        rate(raw_t),
        raw_mem,
        rate(our_t),
        our_mem,
        rate(our_t) / rate(raw_t),
        (our_mem.max(1)) as f64 / (raw_mem.max(1)) as f64,
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let server;
    let (url, db) = match &args.url {
        Some(u) => {
            let config = MongoConfig::parse(u)?;
            (u.clone(), config.database().to_owned())
        }
        None => {
            server = SecantusServer::start().await?;
            (
                format!(
                    "mongodb://127.0.0.1:{}/bench?directConnection=true",
                    server.port()
                ),
                "bench".to_owned(),
            )
        }
    };
    println!("{}", machine());
    println!(
        "server: {}",
        if args.url.is_some() {
            "MongoDB (--url)"
        } else {
            "SecantusDB (throwaway)"
        }
    );
    let client = Client::with_uri_str(&url).await?;
    let database = client.database(&db);
    for coll in [SNAPSHOT_COLL, STREAM_COLL] {
        let _ = database.collection::<Document>(coll).drop().await;
    }
    database.create_collection(STREAM_COLL).await?;
    let sep = if url.contains('?') { '&' } else { '?' };
    let source_url = format!(
        "{url}{sep}post_images=off&max_await_ms=200&snapshot_batch_size={}",
        args.snapshot_batch_size
    );
    let source = |coll: &str| {
        MongoConfig::parse(&source_url)
            .map(|c| MongoSource::new(c).with_tables(vec![TableName::new("", coll)]))
    };

    // Snapshot: the same collection read by `find` and by the connector.
    load(&client, &db, SNAPSHOT_COLL, args.docs).await?;
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        raw.push(measured(|| raw_find(&client, &db, args.docs)).await?);
        let s = source(SNAPSHOT_COLL)?;
        ours.push(measured(|| connector_snapshot(&s, args.docs)).await?);
    }
    report("snapshot", args.docs, &raw, &ours);

    // Streaming: the same stored change history read from the same position.
    let stream_source = source(STREAM_COLL)?;
    let started = Instant::now();
    let from = stream_source.write_checkpoint().await?;
    println!("  write_checkpoint round trip: {:?}", started.elapsed());
    load(&client, &db, STREAM_COLL, args.docs).await?;
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        raw.push(measured(|| raw_watch(&client, &db, &from, args.docs)).await?);
        ours.push(measured(|| connector_stream(&stream_source, &from, args.docs)).await?);
    }
    report("streaming", args.docs, &raw, &ours);
    Ok(())
}
