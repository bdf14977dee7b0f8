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
        return Err(SourceError::history_lost(format!(
            "replication slot `{slot}` was invalidated: the server removed WAL it needed (max_slot_wal_keep_size)"
        ))
        .with_hint("start from scratch (snapshot); consider raising max_slot_wal_keep_size"));
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
