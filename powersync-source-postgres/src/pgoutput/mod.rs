//! pgoutput: the logical replication wire format.
//!
//! A hand-written, zero-copy decoder for the two layers a `START_REPLICATION ... LOGICAL`
//! connection receives inside CopyData messages:
//!
//! - [`ReplicationMessage`]: the streaming replication protocol's `w` (XLogData) and `k`
//!   (primary keepalive) payloads; [`StandbyStatusUpdate`] encodes the client's `r` reply.
//! - [`PgOutputMessage`]: the pgoutput messages carried by XLogData, protocol versions 1 to 4,
//!   including streamed (`S`, `E`, `c`, `A`) and two-phase (`b`, `P`, `K`, `r`, `p`) ones.
//!   [`PgOutputDecoder`] tracks stream blocks so streamed messages' xids are read.
//!
//! Decoded messages borrow from the input (`&str`, `&[u8]`, [`TupleData`]); decoding allocates
//! nothing, never panics, and rejects malformed input with a [`DecodeError`] that names the
//! message and the byte offset. Length and count fields are only ever checked against the
//! bytes that are actually there.
//!
//! ```
//! use powersync_source_postgres::pgoutput::{ColumnValue, PgOutputDecoder, PgOutputMessage};
//!
//! // An Insert into relation 16384 of one text column "42".
//! let msg = b"I\0\0\x40\x00N\0\x01t\0\0\0\x0242";
//! let mut decoder = PgOutputDecoder::new();
//! match decoder.decode(msg).unwrap() {
//!     PgOutputMessage::Insert(insert) => {
//!         assert_eq!(insert.relation_oid, 16384);
//!         let values: Vec<_> = insert.new.iter().collect();
//!         assert_eq!(values, [ColumnValue::Text(b"42")]);
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```

mod error;
mod logical_message;
mod reader;
mod relation;
mod replication_message;
mod tuple_data;

pub use error::{DecodeError, DecodeErrorKind};
pub use logical_message::{
    Begin, BeginPrepare, Commit, CommitPrepared, Delete, Insert, LogicalDecodingMessage, OidIter,
    OidList, OldTuple, Origin, PgOutputDecoder, PgOutputMessage, Prepare, RollbackPrepared,
    StreamAbort, StreamCommit, StreamStart, Truncate, Type, Update,
};
pub use relation::{
    Relation, RelationColumn, RelationColumnIter, RelationColumns, ReplicaIdentity,
};
pub use replication_message::{
    PrimaryKeepalive, ReplicationMessage, StandbyStatusUpdate, XLogData,
};
pub use tuple_data::{ColumnValue, TupleData, TupleIter};

/// Microseconds from the Unix epoch (1970-01-01) to the PostgreSQL epoch (2000-01-01).
pub const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Converts PostgreSQL-epoch microseconds to Unix-epoch microseconds (saturating, so the
/// `infinity` timestamps stay at the ends of the range).
#[inline]
pub const fn pg_to_unix_micros(pg_micros: i64) -> i64 {
    pg_micros.saturating_add(PG_EPOCH_UNIX_MICROS)
}

/// Converts Unix-epoch microseconds to PostgreSQL-epoch microseconds (saturating).
#[inline]
pub const fn unix_to_pg_micros(unix_micros: i64) -> i64 {
    unix_micros.saturating_sub(PG_EPOCH_UNIX_MICROS)
}

/// A PostgreSQL `TimestampTz` on the wire: microseconds since 2000-01-01 00:00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// Microseconds since the Unix epoch.
    #[inline]
    pub const fn unix_micros(self) -> i64 {
        pg_to_unix_micros(self.0)
    }

    /// From microseconds since the Unix epoch.
    #[inline]
    pub const fn from_unix_micros(unix_micros: i64) -> Self {
        PgTimestamp(unix_to_pg_micros(unix_micros))
    }

    /// The current time (for [`StandbyStatusUpdate::client_time`]).
    pub fn now() -> Self {
        let unix = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
        };
        Self::from_unix_micros(unix)
    }
}
