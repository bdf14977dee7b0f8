//! Replication slot health: what the server still holds for us, and zombie walsenders.

use powersync_source_core::position::PgLsn;
use powersync_source_core::{Position, SourceError};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::sql_error;

/// What `pg_replication_slots` says about our slot.
#[derive(Debug, Clone)]
pub(crate) struct SlotState {
    pub confirmed_flush: Option<PgLsn>,
    /// `reserved`, `extended`, `unreserved` or `lost` (PostgreSQL 13+).
    pub wal_status: Option<String>,
    pub plugin: Option<String>,
}

pub(crate) async fn slot_state(
    client: &Client,
    slot: &str,
) -> Result<Option<SlotState>, SourceError> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, to_jsonb(s) ->> 'wal_status', plugin::text
             FROM pg_catalog.pg_replication_slots s WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| sql_error(e, "reading the replication slot"))?;
    Ok(row.map(|r| SlotState {
        confirmed_flush: r.get::<_, Option<String>>(0).and_then(|s| s.parse().ok()),
        wal_status: r.get(1),
        plugin: r.get(2),
    }))
}

/// How much WAL `slot` holds and how much more the server lets it hold
/// (`pg_replication_slots`, PostgreSQL 13+; older servers report neither).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SlotHealth {
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// Bytes of WAL that can still be written before the slot is in danger of losing WAL it
    /// needs; `None` when unbounded (`max_slot_wal_keep_size = -1`) or the slot is lost.
    pub safe_wal_size: Option<i64>,
    /// WAL held for the slot: from its `restart_lsn` to the server's current position.
    pub retained_bytes: Option<i64>,
    /// Why the slot was invalidated (PostgreSQL 17+: `wal_removed`, `idle_timeout`, …).
    pub invalidation_reason: Option<String>,
    /// `max_slot_wal_keep_size` in bytes; `None` when unbounded (-1).
    pub keep_size: Option<i64>,
}

impl SlotHealth {
    /// Whether the slot can no longer be streamed from.
    pub(crate) fn is_lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost") || self.invalidation_reason.is_some()
    }

    /// The share of the WAL budget the slot uses (0.0 to 1.0), when the budget is bounded.
    pub(crate) fn budget_used(&self) -> Option<f64> {
        let safe = self.safe_wal_size?.max(0) as f64;
        let retained = self.retained_bytes?.max(0) as f64;
        // `safe_wal_size` counts from the current position; the budget is what the slot holds
        // plus what may still come (a segment-rounded `max_slot_wal_keep_size`).
        let budget = retained + safe;
        (budget > 0.0).then(|| (retained / budget).clamp(0.0, 1.0))
    }

    /// The error ending a stream whose slot was invalidated: the reason where the server
    /// gives it, and the fix.
    pub(crate) fn lost_error(&self, slot: &str) -> SourceError {
        let reason = match &self.invalidation_reason {
            Some(reason) => format!(" (reason: {reason})"),
            None => String::new(),
        };
        let keep = match self.keep_size {
            Some(n) => format!(
                "raise max_slot_wal_keep_size (now {} MB)",
                n / (1024 * 1024)
            ),
            None => "check max_slot_wal_keep_size and idle_replication_slot_timeout".to_string(),
        };
        SourceError::history_lost(format!(
            "replication slot `{slot}` was invalidated{reason}: the server removed WAL the stream still needed"
        ))
        .with_hint(format!(
            "start from scratch (snapshot); to keep it from happening again, {keep}, or make the stream keep up (a faster snapshot, fewer tables per stream)"
        ))
    }
}

/// Reads [`SlotHealth`] of `slot`; `None` when the slot does not exist.
pub(crate) async fn slot_health(
    client: &Client,
    slot: &str,
) -> Result<Option<SlotHealth>, SourceError> {
    // `to_jsonb(s)` reads columns that exist only on newer servers (wal_status and
    // safe_wal_size 13+, invalidation_reason 17+) without failing on older ones. On a standby
    // the current position is the last one received.
    let row = client
        .query_opt(
            "SELECT to_jsonb(s) ->> 'wal_status',
                    (to_jsonb(s) ->> 'safe_wal_size')::bigint,
                    pg_catalog.pg_wal_lsn_diff(
                        CASE WHEN pg_catalog.pg_is_in_recovery()
                             THEN pg_catalog.pg_last_wal_receive_lsn()
                             ELSE pg_catalog.pg_current_wal_lsn() END,
                        s.restart_lsn)::bigint,
                    to_jsonb(s) ->> 'invalidation_reason',
                    (SELECT CASE WHEN setting::bigint < 0 THEN NULL
                                 ELSE setting::bigint * 1024 * 1024 END
                     FROM pg_catalog.pg_settings WHERE name = 'max_slot_wal_keep_size')
             FROM pg_catalog.pg_replication_slots s WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| sql_error(e, "reading the replication slot's WAL retention"))?;
    Ok(row.map(|r| SlotHealth {
        wal_status: r.get(0),
        safe_wal_size: r.get(1),
        retained_bytes: r.get(2),
        invalidation_reason: r.get(3),
        keep_size: r.get(4),
    }))
}

/// Checks that `slot` can resume exactly from `from`: it exists, uses pgoutput, still holds its
/// WAL, and has not confirmed anything past `from` (the server would silently start later).
pub(crate) async fn check_resumable(
    client: &Client,
    slot: &str,
    from: PgLsn,
) -> Result<(), SourceError> {
    let Some(state) = slot_state(client, slot).await? else {
        return Err(SourceError::history_lost(format!(
            "replication slot `{slot}` does not exist, so changes after {} are gone",
            from.to_checkpoint()
        ))
        .with_hint("start from scratch (snapshot) to recreate the slot"));
    };
    if state.plugin.as_deref().is_some_and(|p| p != "pgoutput") {
        return Err(SourceError::config(format!(
            "replication slot `{slot}` uses plugin {} instead of pgoutput",
            state.plugin.unwrap_or_default()
        ))
        .with_hint("choose another slot name, or drop the slot"));
    }
    if state.wal_status.as_deref() == Some("lost") {
        let health = slot_health(client, slot).await?.unwrap_or_default();
        return Err(health.lost_error(slot));
    }
    match state.confirmed_flush {
        Some(confirmed) if confirmed > from => Err(SourceError::history_lost(format!(
            "replication slot `{slot}` already confirmed {} which is past the resume checkpoint {}: the server would skip the changes in between",
            confirmed.to_checkpoint(),
            from.to_checkpoint()
        ))
        .with_hint("resume from the latest stored checkpoint, or start from scratch")),
        None => Err(SourceError::history_lost(format!(
            "replication slot `{slot}` has no confirmed position (it is not a usable logical slot)"
        ))),
        _ => Ok(()),
    }
}

/// Ends a walsender still holding `slot` (a zombie from a connection that died without the
/// server noticing). Returns whether one was terminated.
pub(crate) async fn terminate_holder(client: &Client, slot: &str) -> Result<bool, SourceError> {
    let row = client
        .query_one(
            "SELECT coalesce(bool_or(pg_catalog.pg_terminate_backend(active_pid)), false)
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
            &[&slot],
        )
        .await
        .map_err(|e| sql_error(e, "terminating the walsender holding the slot"))?;
    Ok(row.get(0))
}

/// Drops `slot` if it exists, ending a walsender that still holds it.
pub(crate) async fn drop_slot(client: &Client, slot: &str) -> Result<(), SourceError> {
    for _ in 0..10 {
        terminate_holder(client, slot).await?;
        let result = client
            .execute(
                "SELECT pg_catalog.pg_drop_replication_slot(slot_name)
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        match result {
            Ok(_) => return Ok(()),
            // Still active: the terminated walsender has not exited yet.
            Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(sql_error(e, &format!("dropping replication slot `{slot}`"))),
        }
    }
    Err(SourceError::connection(format!(
        "replication slot `{slot}` stays in use; cannot drop it"
    )))
}
