//! The seam the tests drive the connector through (feature `testing`): the [`CdcBackend`]
//! and [`CdcConnector`] traits with the rows they exchange, so an in-memory model of SQL
//! Server CDC can stand in for a server ([`crate::MssqlSource::with_connector`]), plus the
//! decoders a model or a test needs to read what the stream reports.
//!
//! Not part of the stable API: it changes with the connector's queries.

pub use crate::backend::{
    checkpoint_table, CaptureInstance, CaptureJob, CapturedColumn, CatalogStamp, CdcBackend,
    CdcConnector, ChangeKey, ChangeRow, CheckpointShape, LsnTime, Marker, Permissions, ServerInfo,
    SqlType, CHECKPOINT_SCHEMA, CHECKPOINT_TABLE, RECOMMENDED_JOB,
};
pub use crate::checkpoint::StreamPoint;
pub use crate::poller::mask_bit;
