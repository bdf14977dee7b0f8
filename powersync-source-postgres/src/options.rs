//! PostgreSQL-specific stream settings and the logical-message prefix of write checkpoints.
//!
//! The settings every source shares (tables, retry, batch size, silence timeout) are in
//! [`powersync_source_core::StreamOptions`], given through
//! [`PostgresSource::with_stream_options`](crate::PostgresSource::with_stream_options).

use std::time::Duration;

/// Prefix of the logical messages written by
/// [`ChangeSource::write_checkpoint`](powersync_source_core::ChangeSource::write_checkpoint);
/// the stream reports a message with this prefix as a `CheckpointObserved` event.
pub(crate) const CHECKPOINT_MESSAGE_PREFIX: &str = "powersync";

/// Settings of a PostgreSQL stream that have no meaning for other sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Interval of standby status updates reporting the acknowledged position. The server
    /// ends a connection that sends none for `wal_sender_timeout` (60 s by default).
    pub status_interval: Duration,
    /// Request pgoutput's binary value format when the server offers it (14+) and every
    /// selected column type can be read in binary; text otherwise.
    pub binary: bool,
    /// How often, between transactions, the stream compares what the publication publishes
    /// (row filters, partitions) with what it read: a changed row filter on a table whose
    /// stream is idle, or a partition detached from a table published through its root,
    /// comes with no message in the stream. A table found changed is read again once the
    /// stream has passed the moment of the comparison; a table added to the publication that
    /// the stream has not met yet is backfilled (14+).
    pub publication_check_interval: Duration,
    /// How often the stream reads its slot's WAL retention (`pg_replication_slots`:
    /// `wal_status`, `safe_wal_size`), during the snapshot and while streaming: it warns at
    /// 50% and 80% of `max_slot_wal_keep_size`, records the retained WAL and the budget left
    /// in the stream's statistics, and ends the stream with `HistoryLost` (and the server's
    /// reason, 17+) within one interval of the slot's invalidation. The reads use one more
    /// SQL connection per stream; `Duration::ZERO` turns the watch off.
    pub slot_check_interval: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            status_interval: Duration::from_secs(10),
            binary: true,
            publication_check_interval: Duration::from_secs(10),
            slot_check_interval: Duration::from_secs(10),
        }
    }
}
