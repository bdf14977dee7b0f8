//! Watching the slot's WAL budget while the stream runs (snapshot and streaming alike).
//!
//! A server with `max_slot_wal_keep_size` set invalidates a slot that holds more WAL than
//! that at a checkpoint. A long snapshot keeps the slot at its start position the whole time,
//! so without a watch the stream learns of the loss only when it starts streaming, hours of
//! copying later. The watch polls `pg_replication_slots` on its own connection every
//! [`PostgresOptions::slot_check_interval`](crate::PostgresOptions::slot_check_interval),
//! records the retained WAL and the budget left in the stream's statistics (and metrics),
//! warns at 50% and 80% of the budget, and reports the invalidation (with its reason on
//! PostgreSQL 17+) as soon as it sees it.

use std::time::Duration;

use powersync_source_core::{SourceError, StreamStats};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::config::PostgresConfig;
use crate::connection::sql;
use crate::slot::{slot_health, SlotHealth};

/// The budget shares that log a warning, highest first.
const WARN_AT: [u8; 2] = [80, 50];

/// A running watch; dropping it stops the polling.
pub(super) struct SlotWatch {
    lost: oneshot::Receiver<SourceError>,
    task: JoinHandle<()>,
}

impl Drop for SlotWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SlotWatch {
    /// Starts polling the slot of `config` every `interval`.
    pub(super) fn spawn(config: PostgresConfig, interval: Duration, stats: StreamStats) -> Self {
        let (tx, lost) = oneshot::channel();
        let task = tokio::spawn(watch(config, interval, stats, tx));
        SlotWatch { lost, task }
    }

    /// Resolves with the error to end the stream with once the slot is invalidated; never
    /// otherwise.
    pub(super) async fn lost(&mut self) -> SourceError {
        match (&mut self.lost).await {
            Ok(error) => error,
            // The watch ended without a loss (it does not, short of a panic): keep waiting.
            Err(_) => std::future::pending().await,
        }
    }
}

async fn watch(
    config: PostgresConfig,
    interval: Duration,
    stats: StreamStats,
    lost: oneshot::Sender<SourceError>,
) {
    let slot = config.slot();
    let mut client: Option<Client> = None;
    let mut warnings = Warnings::default();
    loop {
        if client.as_ref().is_none_or(Client::is_closed) {
            // A failure here is not the stream's: the stream has its own connections and
            // reconnect loop. Try again at the next poll.
            client = match sql::connect(&config).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::debug!(target: "powersync_source_postgres", error = %e, "slot watch: cannot connect");
                    None
                }
            };
        }
        if let Some(c) = &client {
            match slot_health(c, &slot).await {
                Ok(Some(health)) => {
                    record(&health, &stats);
                    if health.is_lost() {
                        let _ = lost.send(health.lost_error(&slot));
                        return;
                    }
                    warnings.update(&health, &slot);
                }
                // Dropped: the stream's next START_REPLICATION reports it.
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(target: "powersync_source_postgres", error = %e, "slot watch: cannot read the slot");
                    client = None;
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

fn record(health: &SlotHealth, stats: &StreamStats) {
    if let Some(n) = health.retained_bytes {
        stats.set_retained_bytes(n.max(0) as u64);
    }
    if let Some(n) = health.safe_wal_size {
        stats.set_history_budget_bytes(n.max(0) as u64);
    }
}

/// Which budget warning was logged last, so each level is logged once per climb.
#[derive(Debug, Default)]
struct Warnings {
    level: u8,
    unreserved: bool,
}

impl Warnings {
    fn update(&mut self, health: &SlotHealth, slot: &str) {
        if let Some(used) = health.budget_used() {
            let percent = (used * 100.0) as u8;
            let level = WARN_AT.into_iter().find(|l| percent >= *l).unwrap_or(0);
            if level > self.level {
                tracing::warn!(
                    target: "powersync_source_postgres",
                    slot,
                    retained_bytes = health.retained_bytes.unwrap_or(0),
                    safe_wal_size = health.safe_wal_size.unwrap_or(0),
                    "replication slot `{slot}` holds {percent}% of the WAL the server keeps for it (max_slot_wal_keep_size): at 100% the slot is invalidated and the stream must start from scratch"
                );
                self.level = level;
            } else if percent + 10 < self.level {
                // Well below the level again: warn again if it climbs back.
                self.level = level;
            }
        }
        let unreserved = health.wal_status.as_deref() == Some("unreserved");
        if unreserved && !self.unreserved {
            tracing::warn!(
                target: "powersync_source_postgres",
                slot,
                "replication slot `{slot}` is past max_slot_wal_keep_size (wal_status unreserved): the next checkpoint invalidates it unless the stream catches up"
            );
        }
        self.unreserved = unreserved;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(retained: i64, safe: i64) -> SlotHealth {
        SlotHealth {
            wal_status: Some("reserved".into()),
            safe_wal_size: Some(safe),
            retained_bytes: Some(retained),
            invalidation_reason: None,
            keep_size: Some(16 << 20),
        }
    }

    #[test]
    fn each_level_warns_once_per_climb() {
        let mut w = Warnings::default();
        w.update(&health(1, 9), "s");
        assert_eq!(w.level, 0);
        w.update(&health(5, 5), "s");
        assert_eq!(w.level, 50);
        w.update(&health(6, 4), "s");
        assert_eq!(w.level, 50);
        w.update(&health(9, 1), "s");
        assert_eq!(w.level, 80);
        w.update(&health(1, 9), "s");
        assert_eq!(w.level, 0);
    }

    #[test]
    fn the_lost_error_names_the_reason_and_the_setting() {
        let h = SlotHealth {
            wal_status: Some("lost".into()),
            invalidation_reason: Some("wal_removed".into()),
            keep_size: Some(16 << 20),
            ..SlotHealth::default()
        };
        assert!(h.is_lost());
        let e = h.lost_error("powersync_db");
        assert_eq!(e.kind(), powersync_source_core::ErrorKind::HistoryLost);
        let text = e.to_string();
        assert!(text.contains("reason: wal_removed"), "{text}");
        assert!(
            text.contains("max_slot_wal_keep_size (now 16 MB)"),
            "{text}"
        );
    }
}
