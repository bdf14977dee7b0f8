//! Convex connector for powersync-source: the streaming export API (`/api/list_snapshot`,
//! `/api/document_deltas`, `/api/json_schemas`) over one shared `reqwest` client (rustls).
//!
//! ```no_run
//! # async fn run() -> Result<(), powersync_source_core::SourceError> {
//! use powersync_source_core::{ChangeSource, StartFrom, StreamOptions, TableName};
//! use powersync_source_convex::{ConvexConfig, ConvexSource};
//!
//! let key = std::env::var("CONVEX_DEPLOY_KEY").ok();
//! let config = ConvexConfig::parse("convex+https://happy-animal-123.convex.cloud", key.as_deref())?;
//! let source = ConvexSource::new(config).with_stream_options(
//!     StreamOptions::default().with_tables(vec![TableName::new("convex", "todos")]),
//! );
//! source.check().await?.into_result()?; // every missing prerequisite, each with its fix
//! let stream = source.start(StartFrom::Beginning).await?; // runs check() again first
//! # Ok(()) }
//! ```
//!
//! # Consistency model
//!
//! **One pinned snapshot.** Convex names every committed state by a timestamp (nanoseconds).
//! `start(Beginning)` asks `list_snapshot` for the first page of the first table without a
//! `snapshot` parameter; the answer's `snapshot` timestamp `S` is then passed with every
//! later page of every table, so all tables are read at the same instant `S`, page by page
//! (`cursor`, `hasMore`). A page answered at any other timestamp is an error: the snapshot
//! would no longer be one state.
//!
//! **Handoff.** `document_deltas` with `cursor = S` returns every document version committed
//! after `S` (the cursor is exclusive), in timestamp order, from every table. So the snapshot
//! holds exactly the state at `S` and the deltas exactly what came after: nothing is seen
//! twice or missed. [`SnapshotProgress::Done`] carries `S` as its checkpoint.
//!
//! **Resumable snapshot.** After each page a [`SnapshotProgress::ChunkDone`] carries a
//! [`SnapshotResume`] token: the pinned `S`, the finished tables and, for the table being
//! read, the opaque page cursor. `start(Snapshot(token))` reads the remaining pages at the same
//! `S`, so a resumed snapshot is still exact (no replay window). Convex serves a pinned
//! snapshot for a limited time (days); an expired one is
//! [`HistoryLost`](powersync_source_core::ErrorKind::HistoryLost).
//!
//! **Streaming.** `document_deltas` pages are read in order; within a page, the documents of
//! one commit timestamp (one Convex mutation: all its writes share the timestamp, and no two
//! mutations share one) become one transaction: begin, the selected tables' documents (full
//! documents: inserts and updates arrive as
//! [`Op::Update`](powersync_source_core::Op::Update) with the whole new row, to apply as an
//! upsert, since Convex does not say which it was; deletes carry only `_id`), commit. A
//! transaction that ends before its page does commits at its own timestamp, the page's last
//! one at the page cursor; since the cursor is exclusive and Convex never ends a page inside a
//! timestamp, resuming from any commit asks for exactly the transactions after it. Pages with
//! `hasMore` are
//! fetched at once, otherwise the stream waits `polling_interval_ms` (default 1000). A `_ts`
//! or cursor that goes backwards is an error. A page with no selected rows (only other
//! tables, or only checkpoint markers) is a [`ChangeEvent::Keepalive`] at its cursor, so an
//! idle deployment still advances the position.
//!
//! **Failures.** 429, 5xx, timeouts and refused connections are retried with backoff
//! ([`StreamOptions::retry`](powersync_source_core::StreamOptions::retry), one budget per
//! outage: every answered request resets it) from the same cursor, so nothing is repeated; 401/403 are `Auth`; a cursor older than the deployment's retention
//! (`InvalidWindowToReadDocuments`) or an expired snapshot is `HistoryLost`. Acknowledgements
//! release nothing on Convex: history is kept for the retention window whatever readers do.
//!
//! **Deleted tables.** A table deleted in the dashboard emits no deltas. A periodic schema
//! check (`schema_check_interval_ms`, default 60 s) compares `/api/json_schemas` with the
//! tables the stream replicates and reports a vanished table as a
//! [`ChangeEvent::Truncate`] transaction at the current cursor, so the host's copy does not
//! silently go stale.
//!
//! # Values
//!
//! The stream asks for `format=convex_encoded_json` (the typed encoding Convex's own Fivetran
//! and Airbyte connectors use) and falls back to the documented `format=json`, typed through
//! `/api/json_schemas`, when the deployment refuses it (`encoding=auto`; pin one with
//! `encoding=typed|json`). Column type names say which: `int64 (convex_encoded_json)` or
//! `int64 (json+json_schemas)`.
//!
//! | Convex | SQLite value |
//! |---|---|
//! | `Int64` | `Text`, base 10 (`int64=integer`: `Integer`) |
//! | `Float64` | `Real`, whole numbers too; NaN → `Null`; ±∞ stay `Real` |
//! | `Boolean` | `Integer` 0/1 |
//! | `String`, `Id` | `Text` |
//! | `Bytes` | `Blob` |
//! | `Null`, missing field | `Null` |
//! | `Array`, `Object` | `Text`, JSON (nested Int64 as a base-10 string, Bytes as base64, NaN/±∞ as `"NaN"`/`"Infinity"`/`"-Infinity"`) |
//!
//! Columns: `_id` (the key), `_creationTime` (float64 milliseconds), then the fields
//! `json_schemas` lists, then fields first seen in documents (a new field sends a new schema
//! event). Other `_`-prefixed fields (`_ts`, `_table`, …) are metadata and dropped. Only the
//! default component is replicated; tables are named `convex.<table>`.
//!
//! # What to deploy
//!
//! Write checkpoints ([`ChangeSource::write_checkpoint`]) need a marker table and a mutation.
//! Add the table to `convex/schema.ts`:
//!
//! ```ts
#![doc = include_str!("convex/schema.ts")]
//! ```
//!
//! and add `convex/powersync_checkpoints.ts`:
//!
//! ```ts
#![doc = include_str!("convex/powersync_checkpoints.ts")]
//! ```
//!
//! then `npx convex deploy`. `write_checkpoint` runs the mutation, reads the marker row's
//! commit timestamp `T` back through `list_snapshot`, and returns `T` as a checkpoint; the
//! stream reports [`ChangeEvent::CheckpointObserved`] with exactly that checkpoint when its
//! delta passes. Marker rows never reach the host as rows.
//!
//! # URLs
//!
//! `convex+https://host` or `https://host` (Convex cloud, or a self-hosted backend behind
//! TLS); `convex+http://host:port` or `http://host:port` for a local or self-hosted backend
//! without TLS. Options go in the query: see [`ConvexConfig::parse`]. The deploy key is passed
//! separately and sent as `Authorization: Convex <key>`.
//!
//! [`SnapshotProgress::Done`]: powersync_source_core::SnapshotProgress::Done
//! [`SnapshotProgress::ChunkDone`]: powersync_source_core::SnapshotProgress::ChunkDone
//! [`SnapshotResume`]: powersync_source_core::SnapshotResume
//! [`ChangeEvent::Keepalive`]: powersync_source_core::ChangeEvent::Keepalive
//! [`ChangeEvent::Truncate`]: powersync_source_core::ChangeEvent::Truncate
//! [`ChangeEvent::CheckpointObserved`]: powersync_source_core::ChangeEvent::CheckpointObserved
//! [`ChangeSource::write_checkpoint`]: powersync_source_core::ChangeSource::write_checkpoint

mod api;
mod catalog;
mod check;
pub mod config;
pub mod decode;
mod discovery;
mod marker;
#[cfg(feature = "provision")]
pub mod provision;
mod replicator;
mod selection;
mod source;
#[cfg(feature = "testing")]
pub mod testing;

pub use catalog::{CHECKPOINT_TABLE, SCHEMA};
pub use config::{ConvexConfig, Int64Mode, ValueEncoding};
pub use marker::{CHECKPOINTS_TS, CHECKPOINT_MUTATION, SCHEMA_TS};
/// The core crate this connector implements.
pub use powersync_source_core as core;
pub use source::ConvexSource;
