//! Convex connector for powersync-source, over Convex's Data Sync API
//! (`POST /api/v1/data/sync`) or its legacy streaming export endpoints
//! (`/api/list_snapshot`, `/api/document_deltas`), with `/api/get_table_column_names` and
//! `/api/json_schemas` for tables and types, over one shared `reqwest` client (rustls).
//!
//! # Which API, and what a deployment needs
//!
//! **API.** Two transports sit behind the same [`ConvexSource`], chosen by `api=` in the URL
//! ([`ConvexApi`]):
//!
//! - `api=auto` (the default): the **Data Sync API** where the deployment serves it, else the
//!   streaming export endpoints. `start(Beginning)` asks for the first Data Sync page and falls
//!   back on a 404; a streaming export checkpoint (`convex:v1:…`) is moved to the Data Sync
//!   API through `POST /api/data_sync_cursor_from_deltas` (again falling back on a 404); a
//!   Data Sync checkpoint (`convex:v2:…`) resumes on the Data Sync API; an interrupted
//!   streaming export snapshot ([`StartFrom::Snapshot`](powersync_source_core::StartFrom::Snapshot))
//!   is finished on streaming export.
//! - `api=data_sync`: always the Data Sync API; a deployment without it fails `start` with a
//!   404 [`Prerequisite`](powersync_source_core::ErrorKind::Prerequisite).
//! - `api=streaming_export`: always the legacy endpoints; a Data Sync checkpoint is a
//!   [`Config`](powersync_source_core::ErrorKind::Config) error.
//!
//! The Data Sync API (out of beta since 2026-08-13) is the successor Convex names for
//! streaming export, whose documentation page it removed on 2026-03-09; both are Pro features
//! (on by default for `npx convex dev` and self-hosted backends), and Convex's own Fivetran and
//! Airbyte connectors still use the legacy endpoints, which every deployment with streaming
//! export serves. `check()`, `discover()` and `write_checkpoint()` use the same calls on both
//! transports (table names, encoding probe, marker).
//!
//! **Snapshot age: 5 days** (streaming export). An initial snapshot is read at one pinned timestamp, which
//! Convex serves for at most 5 days (`LIST_SNAPSHOT_MAX_AGE_SECS`, 30 days before
//! 2026-03-09). A snapshot, resumed or not, must finish within 5 days of its start, or it is
//! [`HistoryLost`](powersync_source_core::ErrorKind::HistoryLost) and starts over. Deltas are
//! kept for the deployment's retention window (14 days by default on self-hosted backends).
//! On the Data Sync API there is no pinned snapshot to expire, but a sync not called for
//! 3 days, or resumed from outside the retention window, is refused (`DataSyncCursorExpired`,
//! `HistoryLost`).
//!
//! **Deploy keys.** Replication only reads: a read-only deploy key is enough. `check()` then
//! warns that write checkpoints are off, and [`ChangeSource::write_checkpoint`] fails with
//! [`Auth`](powersync_source_core::ErrorKind::Auth) saying why.
//!
//! **A deployment prepared for PowerSync needs nothing more.** PowerSync's Convex setup
//! (a `powersync_checkpoints` table and its public `powersync_checkpoints:createCheckpoint`,
//! which patches one row and returns nothing) is accepted as it is. Without either, only write
//! checkpoints are off (a `check()` warning with the files to deploy; the `setup` command lists
//! them as steps). See [What to deploy](#what-to-deploy).
//!
//! **Root component only.** Tables of child components (`app.use(…)` in
//! `convex.config.ts`) are neither discovered nor replicated, and never lend their field
//! types to a root table of the same name (`json_schemas` is read with `byComponent=true`).
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
//! # Consistency model on streaming export
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
//! snapshot for 5 days; an expired one is
//! [`HistoryLost`](powersync_source_core::ErrorKind::HistoryLost). A page may take the
//! server a minute and more (it sets up an iterator that walks the log from `S` to now), so a
//! `list_snapshot` request gets at least 180 s whatever `request_timeout_ms` says. Nothing
//! else calls `list_snapshot` while a snapshot runs: Convex caches one snapshot iterator for
//! the whole deployment, and any other call evicts it.
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
//! **Deleted and replaced tables.** A table deleted in the dashboard emits no deltas, and
//! neither do the old rows of a table replaced wholesale (`npx convex import --replace`,
//! streaming import's `replace_tables` / `clear_tables`: a new tablet under the same name).
//! A periodic check (`schema_check_interval_ms`, default 60 s) compares
//! `/api/get_table_column_names` with the tables the stream replicates and reports a
//! vanished table as a [`ChangeEvent::Truncate`] transaction at the current cursor; for each
//! table the stream read in full (snapshotted or re-read by this stream) it also compares the
//! deployment's row count at the cursor (the dashboard's `_system/frontend/tableSize` query
//! through `/api/query_at_ts`) with the rows the stream holds, and on a difference sends one
//! transaction at the cursor: `Truncate`, then the table read again at the cursor. So the
//! host's copy does not silently go stale. Limits: a stream resumed from a checkpoint holds
//! no row ids, so only a later snapshot or re-read arms the count check for a table; a
//! replacement with the same number of rows whose new rows all arrived as deltas leaves no
//! stale row and is not reported; the count check keeps a 64-bit hash per replicated row
//! (about 16 bytes) in memory. Dashboard "Clear table" deletes row by row and needs none of
//! this.
//!
//! **Odd tables.** `/api/json_schemas` fails (400) for the whole deployment as soon as one
//! table anywhere has documents that are not a plain object (over 64 top-level fields, or
//! field names that are not identifiers) and no `convex/schema.ts` definition. The connector
//! takes table names from `/api/get_table_column_names`, which never fails that way, and
//! `check()` only warns; with the typed encoding field types are not needed, with
//! `format=json` Int64 fields then arrive as base-10 text and Bytes as base64 text.
//!
//! # Consistency model on the Data Sync API
//!
//! One request, `POST /api/v1/data/sync` with an opaque cursor and a selection (the selected
//! root tables and `powersync_checkpoints`, so write-checkpoint markers are observed; other
//! components excluded), answers a page of document versions (`value`, `component`, `table`,
//! `ts`, `deleted`), the tables to `truncate`, a `status` and the next cursor.
//!
//! **Initial snapshot.** A new sync walks every selected table (status `snapshotting`); during
//! the walk the server may send a document more than once, and deletes, and the state is
//! consistent only at the first `stale`/`upToDate` page, at its `snapshotTs`. The pages up to
//! it are the snapshot: [`SnapshotProgress::TableStarted`] where a table's truncate arrives,
//! each document as a snapshot row (`Insert`, or `Update` when the walk sent that document
//! before; a delete as a `Delete`; every one `snapshot: true`, to apply in order), then
//! `TableDone` for every selected table and [`SnapshotProgress::Done`] at the first consistent
//! page. No resume token is given inside the walk, since no position there is a consistent
//! state: a stream stopped during the initial sync starts it again. To tell a document sent
//! again from a new one, the stream keeps a 64-bit hash per document sent (about 16 bytes)
//! until `Done`.
//!
//! **Streaming.** Pages with a consistent status and no truncates follow the log, and become
//! one transaction per commit timestamp as on streaming export. The page's last transaction
//! commits at `(snapshotTs, next cursor)`; an earlier one at `(its ts, the cursor that asked for
//! the page)`: resuming there asks for the same page again and drops what is at or below that
//! timestamp (from every page until one reaches past it), so nothing is repeated. If that
//! page now walks a table instead (one was added or replaced meanwhile), it is taken whole:
//! nothing is lost, rows of the log may be applied a second time as the same upserts and
//! deletes, and the next checkpoint may stand at an earlier timestamp than the one resumed
//! from. `upToDate` pages wait `polling_interval_ms`; `stale` and `snapshotting` pages
//! are followed at once. A page with no selected rows is a keepalive when `snapshotTs` moved.
//!
//! **Tables added, selected or replaced.** The server then sends a truncate for the table and
//! walks it again (status `snapshotting` until done). The connector makes one transaction from
//! that page to the next consistent page: [`ChangeEvent::Truncate`] of the selected tables and
//! every document in between as upserts, committed at that consistent page, so a restart in
//! between resumes before it. Replaced tables need no row-count check on this transport.
//! Tables deleted in the dashboard leave the sync silently; the periodic check reports them
//! as a truncate, as on streaming export.
//!
//! **Positions.** The cursor is opaque and encrypted, so a checkpoint carries it with the
//! timestamp it stands at: `convex:v2:<19-digit ts>:<cursor>` (see
//! [`ConvexCursor`](powersync_source_core::position::ConvexCursor)). Checkpoints of one stream
//! order as strings the way the stream produced them; a `v1` and a `v2` checkpoint are not
//! meant to be compared. [`ChangeEvent::CheckpointObserved`] carries the `v1` checkpoint
//! `write_checkpoint` returned, on both transports; on the Data Sync API it comes at the next
//! consistent page (after `Done` when taken during the initial sync). A sync not called for 3 days expires, and
//! so does a cursor outside the deployment's retention window (`DataSyncCursorExpired`):
//! [`HistoryLost`](powersync_source_core::ErrorKind::HistoryLost). A cursor of another
//! deployment (`InvalidDataSyncCursor`) is a [`Config`](powersync_source_core::ErrorKind::Config)
//! error: starting over would lay a new snapshot over rows from elsewhere.
//!
//! **Values** arrive in the fixed `export_json` encoding: the typed encoding with Int64 as a
//! plain JSON integer (floats always carry a fraction or an exponent), so no `json_schemas`
//! call is ever needed; column type names say `export_json`.
//!
//! # Values
//!
//! On streaming export the stream asks for `format=convex_encoded_json` (the typed encoding Convex's own Fivetran
//! and Airbyte connectors use) and falls back to `format=json`, typed through
//! `/api/json_schemas`, when the deployment refuses it (`encoding=auto`; pin one with
//! `encoding=typed|json`). Column type names say which: `int64 (convex_encoded_json)` or
//! `int64 (json+json_schemas)`. The Data Sync API's `export_json` gives the same values
//! (`int64 (export_json)`).
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
//! Every float64 round-trips exactly, 17-digit ones included (`_creationTime` often needs
//! 17 digits): the workspace's `serde_json` parses numbers with correct rounding
//! (`float_roundtrip`).
//!
//! Columns: `_id` (the key), `_creationTime` (float64 milliseconds), then the fields
//! `json_schemas` lists, then fields first seen in documents (a new field sends a new schema
//! event). Other `_`-prefixed fields (`_ts`, `_table`, …) are metadata and dropped. Only the
//! root component is replicated; tables are named `convex.<table>`.
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
//! then `npx convex deploy`. The mutation is internal: only a deploy key runs it. PowerSync's
//! own `powersync_checkpoints.ts` (public, patches one row, returns `null`) works too, so a
//! deployment prepared for PowerSync needs no change.
//!
//! `write_checkpoint` takes the deployment's timestamp (`/api/query_ts`), runs the mutation,
//! finds the marker's write in the `document_deltas` of `powersync_checkpoints` after that
//! timestamp (by its id when the mutation returns one, else the first marker write), and
//! returns its commit timestamp `T` as a checkpoint; every write acknowledged before the call
//! is below `T`. The stream reports [`ChangeEvent::CheckpointObserved`] with exactly that
//! checkpoint when the marker's delta passes. Marker rows never reach the host as rows.
//! `check()` runs the mutation once too (one marker row), to tell whether write checkpoints
//! work.
//!
//! # URLs
//!
//! `convex+https://host` or `https://host` (Convex cloud, or a self-hosted backend behind
//! TLS); `convex+http://host:port` or `http://host:port` for a local or self-hosted backend
//! without TLS. Options go in the query: see [`ConvexConfig::parse`]. The deploy key is passed
//! separately and sent as `Authorization: Convex <key>`.
//!
//! # Backfills
//! Not supported yet: `ChangeStream::request_backfill` answers `ErrorKind::Unsupported`.
//! Re-read tables with a new snapshot (`StartFrom::Beginning`). Convex's snapshot API reads a
//! consistent snapshot at a timestamp, so a per-table re-read at a pinned timestamp followed by
//! the deltas after it would be this connector's form of a backfill.
//!
//! [`SnapshotProgress::Done`]: powersync_source_core::SnapshotProgress::Done
//! [`SnapshotProgress::TableStarted`]: powersync_source_core::SnapshotProgress::TableStarted
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
pub use config::{ConvexApi, ConvexConfig, Int64Mode, ValueEncoding};
pub use marker::{CHECKPOINTS_TS, CHECKPOINT_MUTATION, SCHEMA_TS};
/// The core crate this connector implements.
pub use powersync_source_core as core;
pub use source::ConvexSource;
