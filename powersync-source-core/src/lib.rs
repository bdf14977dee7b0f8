//! Core contract of **powersync-source**: change-data-capture connectors that turn PostgreSQL,
//! MongoDB, MySQL/MariaDB, SQL Server and Convex into one kind of stream — ordered row changes
//! with transaction boundaries, resumable checkpoints, and values normalized to SQLite's types.
//!
//! A host depends on this crate plus the connector crates it needs, opens a source, and reads
//! a [`ChangeStream`]:
//!
//! ```no_run
//! # async fn run(source: &dyn powersync_source_core::ChangeSource) -> Result<(), powersync_source_core::SourceError> {
//! use futures::StreamExt;
//! use powersync_source_core::{ChangeEvent, StartFrom};
//!
//! source.check().await?.into_result()?;
//! let mut stream = source.start(StartFrom::Beginning).await?;
//! while let Some(batch) = stream.next().await {
//!     for event in batch?.events {
//!         if let ChangeEvent::Commit(commit) = &event {
//!             // store everything up to here durably, then:
//!             stream.ack(&commit.checkpoint)?;
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Values
//! Every value is a [`Value`]: `Null`, `Integer(i64)`, `Real(f64)`, `Text`, `Blob`, or
//! `Unchanged` (the source did not send it; keep what you have). The rules that map source
//! types onto these live in [`normalize`] and are shared by every connector, so a timestamp
//! from MySQL and one from SQL Server look alike.
//!
//! # Positions and checkpoints
//! Each source has a typed [`Position`] (see [`position`]); hosts store the string form,
//! [`Checkpoint`], which orders as strings exactly as positions order within one source.

pub mod backfill;
pub mod checkpoint;
pub mod error;
pub mod event;
pub mod normalize;
pub mod options;
pub mod position;
pub mod provision;
pub mod retry;
pub mod runtime;
pub mod schema;
pub mod secret;
pub mod snapshot;
pub mod source;
pub mod stream;
pub mod telemetry;
#[cfg(feature = "tls")]
pub mod tls;
pub mod value;

pub use checkpoint::Checkpoint;
pub use error::{ErrorKind, Result, SourceError};
pub use event::{
    Begin, ChangeBatch, ChangeEvent, Commit, OldImage, Op, RowChange, SnapshotProgress, Truncate,
    UnixMicros,
};
pub use options::StreamOptions;
pub use position::Position;
pub use retry::{Backoff, RetryPolicy};
pub use schema::{Column, RowIdentity, TableName, TableSchema};
pub use secret::Secret;
pub use snapshot::{SnapshotResume, TableProgress};
pub use source::{ChangeSource, CheckReport, Problem, Severity, StartFrom};
pub use stream::{AckHandle, AckReceiver, ChangeStream, StatsSnapshot, StreamStats};
pub use value::{Row, Value};
