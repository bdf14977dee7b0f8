//! MongoDB connector for powersync-source: a database-level change stream (cluster-level when
//! the source spans several databases), with post-images, a resumable `_id`-ordered snapshot
//! and BSON values normalized to SQLite's model.
//!
//! ```no_run
//! # async fn run() -> Result<(), powersync_source_core::SourceError> {
//! use powersync_source_core::{ChangeSource, StartFrom, StreamOptions, TableName};
//! use powersync_source_mongodb::{MongoConfig, MongoSource};
//!
//! let config = MongoConfig::parse("mongodb://sync:secret@db1,db2/app?replicaSet=rs0&post_images=auto_configure")?;
//! let source = MongoSource::new(config)
//!     .with_stream_options(StreamOptions::default().with_tables(vec![TableName::new("", "orders")]));
//! for problem in &source.check().await?.problems {
//!     eprintln!("{problem}"); // every missing prerequisite, each with its fix
//! }
//! let stream = source.start(StartFrom::Beginning).await?; // runs check() again, fails on errors
//! # Ok(()) }
//! ```
//!
//! Needs MongoDB 6.0+ as a replica set (Atlas included); standalone servers and `mongos` are
//! refused by [`check`](powersync_source_core::ChangeSource::check). `mongodb+srv://` URLs work.
//!
//! # Several databases
//! Collections of more than one database (`database.collection` table names, or
//! `mongodb://host/?databases=app,billing`) are one source: one cluster-level change stream
//! (`Client::watch`, `allChangesForCluster`) carries every database in one order, under one
//! checkpoint, and a multi-document transaction spanning databases is one
//! [`Begin`](powersync_source_core::ChangeEvent::Begin)/[`Commit`](powersync_source_core::ChangeEvent::Commit).
//! The barrier and write-checkpoint markers live in one `_powersync_checkpoints` collection:
//! in `?checkpoint_database=`, else the URL's database, else the first selected database. The
//! user then needs `find` and `changeStream` on the whole cluster (`{db: "", collection: ""}`)
//! as well as the per-database privileges; `check()` asks for them only in that case. Table
//! names stay `database.collection`.
//!
//! # Consistency model
//!
//! **Positions.** Every change event has a cluster time (seconds, increment) and a resume
//! token. A checkpoint is both ([`MongoPosition`](powersync_source_core::position::MongoPosition):
//! fixed-width hex time, then the opaque token), so checkpoints order as strings like the
//! events they follow. The stream reopens with `startAfter: <token>`, which makes the server
//! deliver exactly the events after that event: nothing twice, nothing skipped. Positions are
//! only taken from whole events (after every fragment of a split event).
//!
//! **Barrier, then a fuzzy snapshot.** MongoDB has no exported snapshot a change stream can
//! start from. `start(Beginning)` therefore first writes a barrier document to
//! `_powersync_checkpoints` and reads its insert event from a change stream opened *before* the
//! write: its position `B` is where streaming will start. Only then are the collections read, in
//! `_id` order. Every write that committed before `B` is visible to those reads (they start
//! after the barrier committed); every write after `B` is delivered by the stream. A document
//! read by the snapshot may already contain changes after `B`; they are replayed on top in
//! order. Replaying an insert of a document already present, an update to a state it already
//! has (the events carry whole documents, never deltas), or a delete of a document already gone
//! leaves the same final state when the host applies inserts as upserts and deletes
//! idempotently; once the replay passes the time of the last snapshot read, source and host are
//! identical. This replay window is the only place a host sees a change whose effect it already
//! has.
//!
//! **Resumable snapshot.** Each collection is read in batches of `snapshot_batch_size`
//! documents, each batch one query bounded by the `_id` index (`min`/`hint`, so mixed `_id`
//! types are read in MongoDB's type order). After each batch a
//! [`SnapshotProgress::ChunkDone`](powersync_source_core::SnapshotProgress::ChunkDone) carries a
//! [`SnapshotResume`](powersync_source_core::SnapshotResume): `B`, the finished collections and
//! the last `_id` read (canonical extended JSON; an `_id` holding text that is not valid UTF-8
//! as its exact BSON bytes, so the bound is that `_id`, not a U+FFFD copy that could sort past
//! documents not read yet). Resuming reads the rest from there and still
//! streams from `B`, so the argument above holds unchanged: the replay window just gets longer.
//! The oplog must still hold `B` when streaming starts; if not, that is
//! [`ErrorKind::HistoryLost`](powersync_source_core::ErrorKind::HistoryLost).
//!
//! **Streaming and transactions.** Change events are not framed by transaction on the wire
//! (events of one multi-document transaction share a cluster time). The connector frames runs of
//! events in [`Begin`](powersync_source_core::ChangeEvent::Begin)/[`Commit`](powersync_source_core::ChangeEvent::Commit):
//! a write outside a multi-document transaction is a transaction of its own; the events of one
//! server transaction (same `lsid` and `txnNumber`) share one begin and one commit, which is
//! emitted when the next event belongs elsewhere or the server has nothing more buffered (an
//! empty `getMore`), carrying the last event's position. A transaction larger than
//! `batch_events` spans several batches (the core contract allows it).
//!
//! **Idle advance.** An empty `getMore` carries a post-batch resume token; when its cluster time
//! can be read (MongoDB and SecantusDB encodings, see `resume_token`), the stream emits a
//! [`Keepalive`](powersync_source_core::ChangeEvent::Keepalive) at that position, so an idle
//! database (or one where only unselected collections change) still moves the checkpoint.
//!
//! **Write checkpoints.** [`write_checkpoint`](powersync_source_core::ChangeSource::write_checkpoint)
//! inserts a document into `_powersync_checkpoints` (created on demand), reads its insert
//! event's position from a change stream with the same pipeline, and returns it; the replication
//! stream reports the same position with
//! [`CheckpointObserved`](powersync_source_core::ChangeEvent::CheckpointObserved) when it passes
//! the insert — within `max_await_ms` on an idle server.
//!
//! **Acknowledgement.** MongoDB keeps no per-consumer state: the oplog is a capped collection
//! that does not wait for readers. Acknowledgements are accepted (and ordered) but release
//! nothing on the server; size the oplog to cover the longest time a host may be stopped.
//!
//! **Reconnects.** Network errors, elections and restarts are retried inside the stream with
//! backoff, with the whole [`RetryPolicy`](powersync_source_core::RetryPolicy) budget for each
//! outage (the first successful read after reconnecting resets it): the open transaction is
//! discarded with
//! [`Abort`](powersync_source_core::ChangeEvent::Abort) and the stream reopens after the last
//! emitted checkpoint. A read that gets no answer within the silence timeout (half-open
//! connection) counts as such an error. A resume point the oplog no longer holds (code 286
//! `ChangeStreamHistoryLost`, 280) or a token the server rejects is
//! [`ErrorKind::HistoryLost`](powersync_source_core::ErrorKind::HistoryLost).
//!
//! **DDL.** `drop` of a selected collection and `dropDatabase` emit a
//! [`Truncate`](powersync_source_core::ChangeEvent::Truncate). `rename` empties the source
//! table; a rename *into* a selected collection empties the target and reads it through a
//! backfill (below), never blocking the other collections; the backfill cursor rides on the
//! checkpoints after the rename, so a crash resumes the read. `invalidate` (after
//! `dropDatabase`) reopens the stream after the invalidate event.
//!
//! # Backfills
//! A running stream re-reads chosen collections without pausing (see
//! [`powersync_source_core::backfill`] for the method, the events and the consistency
//! argument): ask with [`ChangeStream::request_backfill`](powersync_source_core::ChangeStream::request_backfill),
//! or insert `{id: "<request id>", kind: "backfill", tables: "app.orders,app.items"}` into
//! `_powersync_signals` in the checkpoint database (`_id` any; `tables` may also be an array;
//! names without a database are in the source's first database). Signals are read from the
//! stream even when the selection does not name that collection, and never emitted as rows;
//! `setup` creates the collection, `check()` warns while it is missing.
//! - **Watermarks** are documents `{backfill: "low:…"/"high:…"}` in `_powersync_checkpoints`,
//!   written on a driver client of the reader's own; the stream passes them as a keepalive
//!   at their position (inside a multi-document transaction, at its commit), never as
//!   [`CheckpointObserved`](powersync_source_core::ChangeEvent::CheckpointObserved).
//! - **Chunks** are read exactly like snapshot batches (`_id` index order with `min`, so a
//!   collection whose `_id`s mix BSON types is read whole, in MongoDB's type order), and the
//!   cursor is the snapshot's resume key of the last `_id` (canonical extended JSON), so it
//!   keeps its BSON type across restarts. Rows are converted under the stream's own collection
//!   shapes (same columns, order, type names and values as the stream and the snapshot).
//! - **Late collections**: the first event of a selected collection the stream did not know
//!   (created while streaming, or renamed in) starts a backfill of it (request id `added-…`).
//!   For a collection created while streaming this repeats what the stream carries, harmlessly
//!   (chunk rows are images at their high watermark).
//! - **Fields learned mid-chunk**: columns grow as the stream sees new top-level fields. A
//!   chunk goes out under the schema it was read with; when the stream announced a wider one
//!   while the chunk was in flight (a new field first seen before the chunk's low watermark
//!   but after its read), a host that drops columns missing from a schema event (the SQLite
//!   sink) would lose those columns' values: the stream then announces its schema again and
//!   reads the collection again, once per collection and stream run (a warning says so; a
//!   later occurrence leaves those values missing until the documents change).
//!
//! # Post-images
//! See [`PostImages`]. With `off`, updates use `fullDocument: 'updateLookup'`: the document as it
//! is when the event is read, possibly later than the update (still convergent: the later
//! changes follow), and none once it was deleted (the update is skipped; its delete follows).
//!
//! # Tables and values
//! A collection is a table keyed by `_id`, exposed as column `id`; top-level fields are columns
//! (see [`document_row`]). Values follow [`bson_value`].

mod backfill_docs;
mod backfill_reader;
mod catalog;
mod change_event;
mod check;
mod config;
mod connection_string;
mod driver_error;
#[cfg(feature = "provision")]
pub mod provision;
mod replicator;
mod resume_token;
mod selection_check;
mod server_info;
mod shapes;
mod snapshot_reader;
mod source;
mod watch;

pub mod bson_value;
pub mod document_row;

pub use config::{MongoConfig, PostImages};
pub use source::MongoSource;

/// The official driver, for hosts and benchmarks that talk to the same server.
pub use mongodb;
/// The BSON crate the driver uses.
pub use mongodb::bson;
/// The core crate.
pub use powersync_source_core as core;

/// Unit-testable pieces exposed for the integration tests and fuzzing: event decoding and
/// server-response decisions. Not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::catalog::{collection_info, CollectionInfo, Selection};
    pub use crate::change_event::{header, Fragment, Operation, Reassembler};
    pub use crate::driver_error::{classify, driver_error, resume_error};
    pub use crate::resume_token::token_cluster_time;
    pub use crate::server_info::{
        parse_version, supports_split_event, topology, Privileges, Topology,
    };
}
