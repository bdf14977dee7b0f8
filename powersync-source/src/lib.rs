//! Change-data-capture from PostgreSQL, MySQL/MariaDB, MongoDB, SQL Server and Convex: one
//! ordered stream of row changes with transaction boundaries, resumable checkpoints, and
//! values normalized to SQLite's type model.
//!
//! This is the facade crate: it re-exports the core contract ([`ChangeSource`],
//! [`ChangeStream`], [`ChangeEvent`], [`Checkpoint`], [`SourceError`], [`StreamOptions`], …)
//! and, per Cargo feature, one connector crate, and opens a source from a URL.
//!
//! # Using it
//! Pick the connectors you need; nothing else is compiled (no SQL Server driver to read
//! PostgreSQL):
//!
//! ```toml
//! [dependencies]
//! powersync-source = { version = "0.1", features = ["postgres"] }
//! ```
//!
//! | feature | connector (re-exported as) | URL schemes |
//! |---|---|---|
//! | `postgres` | `powersync_source_postgres` (`postgres`) | `postgres://`, `postgresql://` |
//! | `mysql` | `powersync_source_mysql` (`mysql`) | `mysql://`, `mariadb://` |
//! | `mongodb` | `powersync_source_mongodb` (`mongodb`) | `mongodb://`, `mongodb+srv://` |
//! | `mssql` | `powersync_source_mssql` (`mssql`) | `sqlserver://` |
//! | `convex` | `powersync_source_convex` (`convex`) | `convex+https://`, `https://` with a deploy key |
//! | `metrics` | stream metrics through the `metrics` facade (names in `telemetry`), for every enabled connector | |
//! | `provision` | each enabled connector's `provision` module: the plan that makes a database ready (what `setup` prints and applies) | |
//!
//! Then open a source by URL and read its stream, acknowledging what you stored:
//!
//! ```no_run
//! # async fn run() -> Result<(), powersync_source::SourceError> {
//! use futures::StreamExt;
//! use powersync_source::{ChangeEvent, Options, StartFrom};
//!
//! let source = powersync_source::open(
//!     "postgres://replicator:secret@db.internal:5432/app",
//!     &Options::new().with_tables(["items", "sales.orders"]),
//! )?;
//! let mut stream = source.start(StartFrom::Beginning).await?;
//! while let Some(batch) = stream.next().await {
//!     for event in &batch?.events {
//!         if let ChangeEvent::Commit(commit) = event {
//!             // … store the transaction's rows and `commit.checkpoint` durably, then:
//!             stream.ack(&commit.checkpoint)?;
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//! (`futures` is the host's dependency.) `start` runs the source's prerequisite check
//! ([`ChangeSource::check`]) first; call `check` yourself to show warnings too. A host that
//! needs connector-specific settings builds the source itself, the same way for every
//! connector: `XSource::new(XConfig::parse(url)?).with_stream_options(…)` (e.g.
//! `postgres::PostgresSource`). The SQLite sink is the crate `powersync-source-sqlite`.
//!
//! Opening never echoes the URL past its scheme, and [`Options`]' `Debug` hides the deploy
//! key: connection secrets stay out of errors and logs.

mod open;

pub use open::{open, source_kind, table_names, Options, SourceKind};
pub use powersync_source_core::*;

/// The PostgreSQL connector (feature `postgres`).
#[cfg(feature = "postgres")]
pub use powersync_source_postgres as postgres;

/// The MySQL and MariaDB connector (feature `mysql`).
#[cfg(feature = "mysql")]
pub use powersync_source_mysql as mysql;

/// The MongoDB connector (feature `mongodb`).
#[cfg(feature = "mongodb")]
pub use powersync_source_mongodb as mongodb;

/// The SQL Server connector (feature `mssql`).
#[cfg(feature = "mssql")]
pub use powersync_source_mssql as mssql;

/// The Convex connector (feature `convex`).
#[cfg(feature = "convex")]
pub use powersync_source_convex as convex;
