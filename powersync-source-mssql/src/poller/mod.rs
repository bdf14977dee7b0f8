//! The polling loop: reads the change tables window by window and turns change rows into
//! transactions.
//!
//! One poll:
//! 1. `from = sys.fn_cdc_increment_lsn(last)` where `last` is the commit LSN of the last
//!    transaction emitted (so nothing is read twice: both bounds of the CDC functions are
//!    inclusive);
//! 2. refresh the capture instances, listed again only when a one-row fingerprint of
//!    `cdc.change_tables` changed (a new instance of a table is its successor, the newer by
//!    creation date when start LSNs tie; a vanished one is a switch when the successor already
//!    covers `from`, else a `Schema` error, as is an instance now on another object: the table
//!    was dropped and created again);
//! 3. `max = sys.fn_cdc_get_max_lsn()`; nothing above `last` → keepalive and sleep;
//! 4. cap the window at `polling_batch_size` transactions: `to` is the last of the first N rows
//!    of `cdc.lsn_time_mapping` from `from` (their `tran_end_time`s are the commit times and
//!    give the lag);
//! 5. retention: each instance's `sys.fn_cdc_get_min_lsn` must not be above where we read from
//!    it, else the cleanup job purged changes we never read → `HistoryLost`;
//! 6. read every instance with `cdc.fn_cdc_get_all_changes_<instance>(from, to, N'all update
//!    old')` in pages of `page_rows` ordered by (`__$start_lsn`, `__$seqval`,
//!    `__$operation`), and merge the pages of all tables into that one order (a k-way merge, so
//!    memory stays bounded by the page size whatever the transaction size: [`merge`]);
//! 7. pair each update-before image (operation 3) with its update-after image (4, same
//!    `__$seqval`), frame rows of one `__$start_lsn` as one transaction (begin, rows, commit),
//!    and report rows of `dbo._powersync_checkpoints` as observed write checkpoints instead of
//!    row changes;
//! 8. `last = to`; a keepalive marks the end of the window when no commit did.
//!
//! Capture-instance switch: while a table has two instances, the old one is read below the new
//! one's `start_lsn` and the new one from it on; its schema event precedes its first row.
//!
//! Failures: a retryable error drops the connection, sends [`ChangeEvent::Abort`] if a
//! transaction was open, and resumes after backoff from the last committed transaction, with
//! the capture instances of that point.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use powersync_source_core::position::{MssqlLsn, MssqlPosition};
use powersync_source_core::runtime::{Emitter, Reconnect, Step, Stop};
use powersync_source_core::{
    Begin, ChangeEvent, Commit, OldImage, Op, Position, Result, RetryPolicy, Row, RowChange,
    SourceError, TableName, TableSchema, UnixMicros, Value,
};

use crate::backend::{
    checkpoint_table, timed, CaptureInstance, CatalogStamp, CdcBackend, CdcConnector, ChangeRow,
};
use crate::checkpoint::StreamPoint;
use crate::tables::{by_table, instance_for, load_instances, newer, successor, table_schema};

mod merge;

use merge::{cursor, Merge, Slot};

/// Polling settings.
#[derive(Debug, Clone)]
pub(crate) struct PollOptions {
    /// Pause once caught up.
    pub interval: Duration,
    /// Transactions per window.
    pub batch_size: u32,
    /// Change rows per query.
    pub page_rows: u32,
    /// Reconnect policy.
    pub retry: RetryPolicy,
    /// Longest a single query may take before the connection is treated as dead (half-open).
    pub call_timeout: Duration,
}

struct Tracked {
    name: TableName,
    instance: CaptureInstance,
    schema: Arc<TableSchema>,
    next: Option<CaptureInstance>,
    /// The instance whose schema event was last sent on this stream.
    sent: Option<String>,
}

/// The transaction being emitted.
struct Txn {
    lsn: MssqlLsn,
    began: bool,
    marker: bool,
}

/// The stream state machine. It does not own the [`Emitter`]: the stream task does, and
/// lends it to the snapshot first, then to [`Poller::run`].
pub(crate) struct Poller {
    connector: Arc<dyn CdcConnector>,
    opts: PollOptions,
    tables: Vec<Tracked>,
    /// Instances of each table at the last commit (restored after a failure).
    committed_instances: Vec<(CaptureInstance, Option<CaptureInstance>)>,
    /// Commit LSN of the last transaction emitted.
    last: MssqlLsn,
    /// The last position a commit or keepalive reported.
    reported: Option<MssqlLsn>,
    /// The capture instances as last listed, with the catalog fingerprint and time of that
    /// listing: polls list them again only when the fingerprint changed, after
    /// [`CATALOG_MAX_AGE`], or after a failure.
    catalog: Option<(CatalogStamp, Instant, Vec<CaptureInstance>)>,
}

/// Longest a poller goes without listing the capture instances again, whatever the
/// fingerprint says (a checksum can collide; powersync-service re-reads them every 60 s).
const CATALOG_MAX_AGE: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller").field("last", &self.last).finish()
    }
}

impl Poller {
    /// A poller that continues after `start` (its position and instance map). Resolves each
    /// table's capture instance with one query on `backend`.
    pub(crate) async fn new(
        connector: Arc<dyn CdcConnector>,
        backend: &mut dyn CdcBackend,
        opts: PollOptions,
        start: &StreamPoint,
        tables: &[TableName],
    ) -> Result<Poller> {
        let all = by_table(&load_instances(backend, opts.call_timeout).await?);
        let from = timed(opts.call_timeout, backend.increment_lsn(start.position.lsn)).await?;
        let mut tracked = Vec::new();
        for t in tables {
            let list = all.get(t).map(Vec::as_slice).unwrap_or(&[]);
            let chosen = match start.instances.get(t) {
                Some(name) => match list.iter().find(|i| &i.name == name) {
                    Some(i) => i.clone(),
                    None => match instance_for(list, from) {
                        // The stored instance is gone but its successor covers the resume
                        // point: nothing is missing.
                        Some(i) => i.clone(),
                        None => return Err(lost(backend, &opts, t, name).await),
                    },
                },
                None => match instance_for(list, from).or(list.first()) {
                    Some(i) => i.clone(),
                    None => return Err(lost(backend, &opts, t, "(none)").await),
                },
            };
            tracked.push(Tracked {
                name: t.clone(),
                schema: table_schema(&chosen),
                next: successor(list, &chosen).cloned(),
                instance: chosen,
                sent: None,
            });
        }
        let committed_instances = tracked
            .iter()
            .map(|t| (t.instance.clone(), t.next.clone()))
            .collect();
        Ok(Poller {
            connector,
            opts,
            tables: tracked,
            committed_instances,
            last: start.position.lsn,
            reported: None,
            catalog: None,
        })
    }

    /// Marks schemas as already sent (the snapshot sent them).
    pub(crate) fn schemas_sent(&mut self) {
        for t in &mut self.tables {
            t.sent = Some(t.instance.name.clone());
        }
    }

    /// Each table with the capture instance the stream starts on.
    pub(crate) fn instances(&self) -> Vec<(TableName, CaptureInstance, Arc<TableSchema>)> {
        self.tables
            .iter()
            .map(|t| (t.name.clone(), t.instance.clone(), t.schema.clone()))
            .collect()
    }

    /// The stream point after the transaction at `lsn`, with the current instances.
    pub(crate) fn point(&self, lsn: MssqlLsn) -> StreamPoint {
        StreamPoint::after(
            lsn,
            self.tables
                .iter()
                .map(|t| (t.name.clone(), t.instance.name.clone()))
                .collect(),
        )
    }

    /// Polls until the host drops the stream ([`Stop::Closed`]) or a permanent error ends it
    /// ([`Stop::Failed`]). A retryable failure drops the connection, aborts an open
    /// transaction (the host discards it; it is read again), and resumes after backoff from
    /// the last committed transaction with the capture instances of that point. The retry
    /// budget is per outage: every successful poll ends the outage.
    pub(crate) async fn run(
        mut self,
        out: &mut Emitter,
        mut backend: Option<Box<dyn CdcBackend>>,
    ) -> Step<()> {
        let mut reconnect = Reconnect::new(self.opts.retry.clone());
        loop {
            if out.is_closed() {
                return Err(Stop::Closed);
            }
            let result = match backend.as_mut() {
                Some(b) => self.poll(b.as_mut(), out).await,
                None => match timed(self.opts.call_timeout, self.connector.connect()).await {
                    Ok(b) => {
                        backend = Some(b);
                        continue;
                    }
                    Err(e) => Err(Stop::Failed(e)),
                },
            };
            match result {
                Ok(more) => {
                    reconnect.healthy();
                    if !more {
                        tokio::select! {
                            _ = tokio::time::sleep(self.opts.interval) => {}
                            _ = out.closed() => return Err(Stop::Closed),
                        }
                    }
                }
                Err(Stop::Closed) => return Err(Stop::Closed),
                Err(Stop::Failed(e)) => {
                    backend = None;
                    self.catalog = None;
                    self.restore_committed();
                    reconnect.after_failure(e, out).await?;
                }
            }
        }
    }

    fn restore_committed(&mut self) {
        for (t, (inst, next)) in self.tables.iter_mut().zip(&self.committed_instances) {
            if t.instance.name != inst.name {
                t.schema = table_schema(inst);
            }
            t.instance = inst.clone();
            t.next = next.clone();
            // Schema events inside an aborted transaction are discarded by the host.
            t.sent = None;
        }
    }

    fn remember_committed(&mut self) {
        self.committed_instances = self
            .tables
            .iter()
            .map(|t| (t.instance.clone(), t.next.clone()))
            .collect();
    }

    /// Refreshes the capture instances as seen at `from`.
    async fn refresh(
        &mut self,
        b: &mut dyn CdcBackend,
        from: MssqlLsn,
    ) -> Result<Option<CaptureInstance>> {
        let t_out = self.opts.call_timeout;
        let stamp = timed(t_out, b.catalog_stamp()).await?;
        let listed = match &self.catalog {
            Some((s, at, list)) if *s == stamp && at.elapsed() < CATALOG_MAX_AGE => list.clone(),
            _ => {
                let list = load_instances(b, t_out).await?;
                self.catalog = Some((stamp, Instant::now(), list.clone()));
                list
            }
        };
        let all = by_table(&listed);
        let ckpt = all.get(&checkpoint_table()).and_then(|l| l.last()).cloned();
        for t in &mut self.tables {
            let list = all.get(&t.name).map(Vec::as_slice).unwrap_or(&[]);
            match list.iter().find(|i| i.name == t.instance.name) {
                // The same instance name on another object: see `recreated`.
                Some(i) if i.source_object_id != t.instance.source_object_id => {
                    return Err(recreated(&t.name));
                }
                Some(i) => t.instance = i.clone(),
                None => match instance_for(list, from) {
                    Some(i) if i.source_object_id != t.instance.source_object_id => {
                        return Err(recreated(&t.name));
                    }
                    Some(i) if newer(i, &t.instance) => {
                        t.instance = i.clone();
                        t.schema = table_schema(i);
                    }
                    _ => {
                        let name = t.instance.name.clone();
                        return Err(lost(b, &self.opts, &t.name, &name).await);
                    }
                },
            }
            t.next = successor(list, &t.instance).cloned();
            if let Some(n) = t.next.clone().filter(|n| n.start_lsn <= from) {
                t.schema = table_schema(&n);
                t.instance = n;
                t.next = successor(list, &t.instance).cloned();
            }
        }
        Ok(ckpt)
    }

    /// One window. `Ok(true)`: more is waiting (the window was capped).
    async fn poll(&mut self, b: &mut dyn CdcBackend, out: &mut Emitter) -> Step<bool> {
        let t_out = self.opts.call_timeout;
        let from = timed(t_out, b.increment_lsn(self.last)).await?;
        let ckpt = self.refresh(b, from).await?;
        // Checked on idle polls too: a stream resumed after the retention passed must fail
        // even when nothing new was committed since.
        for t in &self.tables {
            check_retention(b, t_out, &t.instance, from, &t.name).await?;
        }
        let max = timed(t_out, b.max_lsn()).await?;
        let Some(max) = max.filter(|m| *m >= from) else {
            if self.reported != Some(self.last) {
                let c = self.point(self.last).to_checkpoint();
                out.push(ChangeEvent::Keepalive(c)).await?;
                self.reported = Some(self.last);
            }
            out.stats().record_idle();
            out.flush().await?;
            return Ok(false);
        };
        let window = timed(t_out, b.lsn_window(from, max, self.opts.batch_size)).await?;
        let capped = window.len() >= self.opts.batch_size as usize
            && window.last().is_some_and(|w| w.lsn < max);
        let to = match window.last() {
            Some(w) if capped => w.lsn,
            _ => max,
        };
        let times: HashMap<MssqlLsn, Option<UnixMicros>> =
            window.iter().map(|w| (w.lsn, w.commit_time)).collect();

        let mut cursors = Vec::new();
        for (idx, t) in self.tables.iter().enumerate() {
            let switch_at = t.next.as_ref().filter(|n| n.start_lsn <= to);
            cursors.push(cursor(
                Slot::Table(idx),
                &t.instance,
                from,
                to,
                switch_at.map(|n| n.start_lsn),
            ));
            if let Some(n) = switch_at {
                check_retention(b, t_out, n, n.start_lsn, &t.name).await?;
                cursors.push(cursor(Slot::Table(idx), n, n.start_lsn, to, None));
            }
        }
        if let Some(ci) = &ckpt {
            // Marker history older than the retention window is simply not observed.
            match timed(t_out, b.min_lsn(&ci.name)).await? {
                Some(min) => {
                    let lo = from.max(min);
                    if lo <= to {
                        cursors.push(cursor(Slot::Marker, ci, lo, to, None));
                    }
                }
                // Without its changes no checkpoint would ever be observed.
                None if ci.role_name.is_some() => return Err(not_in_gating_role(ci).into()),
                None => {}
            }
        }

        let mut merge = Merge::new(cursors, self.opts.page_rows, t_out);
        let mut txn: Option<Txn> = None;
        let mut before: Option<(usize, ChangeRow)> = None;
        while let Some((slot, instance, row)) = merge.next(b, out.stats()).await? {
            if txn.as_ref().map(|t| t.lsn) != Some(row.start_lsn) {
                if let Some(done) = txn.take() {
                    if before.is_some() {
                        return Err(unpaired(&done.lsn).into());
                    }
                    self.close(done, &times, out).await?;
                }
                txn = Some(Txn {
                    lsn: row.start_lsn,
                    began: false,
                    marker: false,
                });
            }
            let Some(cur) = txn.as_mut() else { break };
            match slot {
                Slot::Marker => {
                    if row.operation == 2 {
                        cur.marker = true;
                    }
                }
                Slot::Table(idx) => {
                    if !cur.began {
                        cur.began = true;
                        let commit_time = times.get(&row.start_lsn).copied().flatten();
                        out.push(ChangeEvent::Begin(Begin {
                            xid: None,
                            commit_time,
                        }))
                        .await?;
                    }
                    self.on_row(idx, &instance, row, &mut before, out).await?;
                }
            }
        }
        if let Some(done) = txn.take() {
            if before.is_some() {
                return Err(unpaired(&done.lsn).into());
            }
            self.close(done, &times, out).await?;
        }
        // Successors starting inside this window are current from now on.
        for t in &mut self.tables {
            if let Some(n) = t.next.clone().filter(|n| n.start_lsn <= to) {
                t.schema = table_schema(&n);
                t.instance = n;
                t.next = None;
            }
        }
        self.last = to;
        self.remember_committed();
        if self.reported != Some(to) {
            let c = self.point(to).to_checkpoint();
            out.push(ChangeEvent::Keepalive(c)).await?;
            self.reported = Some(to);
        }
        out.flush().await?;
        Ok(capped)
    }

    async fn on_row(
        &mut self,
        idx: usize,
        instance: &CaptureInstance,
        row: ChangeRow,
        before: &mut Option<(usize, ChangeRow)>,
        out: &mut Emitter,
    ) -> Step<()> {
        let t = &mut self.tables[idx];
        if t.instance.name != instance.name {
            // The first row of the successor instance: switch.
            t.instance = instance.clone();
            t.schema = table_schema(instance);
            t.next = None;
        }
        if t.sent.as_deref() != Some(instance.name.as_str()) {
            t.sent = Some(instance.name.clone());
            let schema = t.schema.clone();
            out.push(ChangeEvent::Schema(schema)).await?;
        }
        let t = &self.tables[idx];
        if row.values.len() != instance.columns.len() {
            return Err(SourceError::decode(format!(
                "change row of {} has {} values for {} captured columns",
                instance.name,
                row.values.len(),
                instance.columns.len()
            ))
            .into());
        }
        let change = match row.operation {
            1 => RowChange {
                op: Op::Delete,
                table: t.schema.clone(),
                // CDC records no text/ntext/image value in a delete row (Estuary PR 1929),
                // and real servers have sent NULL for a NOT NULL bit column there (Estuary PR
                // 2796, `TestDatatypes-BitNotNullDeletion`): such a value was not sent, it is
                // not NULL.
                old: Some(Row::new(
                    row.values
                        .into_iter()
                        .zip(&instance.columns)
                        .map(|(v, c)| {
                            if v.is_null() && (c.sql_type.is_legacy_lob() || !c.nullable) {
                                Value::Unchanged
                            } else {
                                v
                            }
                        })
                        .collect(),
                )),
                old_image: OldImage::Full,
                new: None,
                snapshot: false,
            },
            2 => RowChange {
                op: Op::Insert,
                table: t.schema.clone(),
                old: None,
                old_image: OldImage::None,
                new: Some(Row::new(row.values)),
                snapshot: false,
            },
            3 => {
                if before.is_some() {
                    return Err(unpaired(&row.start_lsn).into());
                }
                *before = Some((idx, row));
                return Ok(());
            }
            4 => {
                let Some((bidx, old)) = before.take() else {
                    return Err(unpaired(&row.start_lsn).into());
                };
                if bidx != idx || old.seqval != row.seqval || old.start_lsn != row.start_lsn {
                    return Err(unpaired(&row.start_lsn).into());
                }
                // A NULL with a clear mask bit in a column CDC may leave unsent is "not
                // sent", not NULL: the replica keeps its value. The legacy LOBs have no
                // before image at all.
                let unsent = |v: Value, c: &crate::backend::CapturedColumn, always: bool| {
                    if c.sql_type.may_be_unsent()
                        && (always || (v.is_null() && !mask_bit(&row.update_mask, c.ordinal)))
                    {
                        Value::Unchanged
                    } else {
                        v
                    }
                };
                let old_values = old
                    .values
                    .into_iter()
                    .zip(&instance.columns)
                    .map(|(v, c)| unsent(v, c, c.sql_type.is_legacy_lob()))
                    .collect();
                let new_values = row
                    .values
                    .iter()
                    .cloned()
                    .zip(&instance.columns)
                    .map(|(v, c)| unsent(v, c, false))
                    .collect();
                RowChange {
                    op: Op::Update,
                    table: t.schema.clone(),
                    old: Some(Row::new(old_values)),
                    old_image: OldImage::Full,
                    new: Some(Row::new(new_values)),
                    snapshot: false,
                }
            }
            op => {
                return Err(SourceError::decode(format!(
                    "change row of {} has __$operation {op} (expected 1 to 4)",
                    instance.name
                ))
                .into())
            }
        };
        out.push(ChangeEvent::Row(change)).await
    }

    async fn close(
        &mut self,
        txn: Txn,
        times: &HashMap<MssqlLsn, Option<UnixMicros>>,
        out: &mut Emitter,
    ) -> Step<()> {
        let commit_time = times.get(&txn.lsn).copied().flatten();
        if txn.began {
            let checkpoint = self.point(txn.lsn).to_checkpoint();
            out.push(ChangeEvent::Commit(Commit {
                checkpoint,
                commit_time,
            }))
            .await?;
            self.reported = Some(txn.lsn);
        }
        if txn.marker {
            let observed = MssqlPosition::after_transaction(txn.lsn).to_checkpoint();
            out.push(ChangeEvent::CheckpointObserved(observed)).await?;
            if !txn.began {
                let c = self.point(txn.lsn).to_checkpoint();
                out.push(ChangeEvent::Keepalive(c)).await?;
                self.reported = Some(txn.lsn);
            }
        }
        if txn.began || txn.marker {
            self.last = txn.lsn;
            self.remember_committed();
        }
        Ok(())
    }
}

/// Bit of `column_ordinal` in `__$update_mask` (ordinal 1 is the lowest bit of the last byte).
pub fn mask_bit(mask: &[u8], ordinal: u32) -> bool {
    let Some(o) = ordinal.checked_sub(1) else {
        return false;
    };
    let byte = (o / 8) as usize;
    if byte >= mask.len() {
        return false;
    }
    mask[mask.len() - 1 - byte] & (1 << (o % 8)) != 0
}

fn unpaired(lsn: &MssqlLsn) -> SourceError {
    SourceError::decode(format!(
        "transaction {lsn:?}: an update-before image (__$operation 3) without its update-after image (4), or the reverse"
    ))
}

async fn check_retention(
    b: &mut dyn CdcBackend,
    t_out: Duration,
    instance: &CaptureInstance,
    from: MssqlLsn,
    table: &TableName,
) -> Result<()> {
    match timed(t_out, b.min_lsn(&instance.name)).await? {
        None if instance.role_name.is_some() => Err(not_in_gating_role(instance)),
        None => Err(SourceError::schema(format!(
            "capture instance {} of table {table} disappeared while it was being read",
            instance.name
        ))),
        Some(min) if min > from => Err(SourceError::history_lost(format!(
            "capture instance {} of table {table} holds changes from LSN {min:?} on, but the stream needs them from {from:?}: the CDC cleanup job purged changes that were never read (retention passed while the stream was away)",
            instance.name
        ))
        .with_hint("start again from the beginning (resnapshot); raise the cleanup job's @retention (EXEC sys.sp_cdc_change_job @job_type = N'cleanup', @retention = <minutes>) if streams stay away longer")),
        Some(_) => Ok(()),
    }
}

/// The error for an instance that SQL Server hides from the user: `sys.fn_cdc_get_min_lsn`
/// answers zeros "when the capture instance does not exist or when the caller is not
/// authorized"; an instance just listed with a gating role exists.
fn not_in_gating_role(instance: &CaptureInstance) -> SourceError {
    let role = instance.role_name.as_deref().unwrap_or_default();
    SourceError::prerequisite(format!(
        "capture instance {} of table {} is gated by role {role}, and the user is not a member: SQL Server hides its changes",
        instance.name, instance.table
    ))
    .with_hint(format!(
        "ALTER ROLE {} ADD MEMBER <user>;",
        crate::tables::quote_ident(role)
    ))
}

/// A table dropped and created again under the same name (the capture instance now belongs
/// to another object): the old table's rows went without delete events (Estuary re-backfills
/// it, `TestCapture-DroppedAndRecreatedTable`), so the replica must be rebuilt.
fn recreated(table: &TableName) -> SourceError {
    SourceError::schema(format!(
        "table {table} was dropped and created again (its object id changed): the old table's rows are gone without delete events"
    ))
    .with_hint("resnapshot")
}

/// The error for a table whose capture instance vanished.
async fn lost(
    b: &mut dyn CdcBackend,
    opts: &PollOptions,
    table: &TableName,
    instance: &str,
) -> SourceError {
    match timed(opts.call_timeout, b.table_exists(table)).await {
        Ok(false) => SourceError::schema(format!(
            "table {table} was dropped (its capture instance {instance} went with it)"
        ))
        .with_hint("remove the table from the replicated set, or recreate it with CDC and resnapshot"),
        Err(e) => e,
        Ok(true) => SourceError::schema(format!(
            "capture instance {instance} of table {table} was dropped before the stream read all of its changes, and no other instance covers them"
        ))
        .with_hint(format!(
            "keep the old capture instance until the stream has passed the new one's start LSN; now resnapshot ({})",
            crate::tables::enable_table_sql(table)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ChangeKey;

    #[test]
    fn update_mask_bits_count_from_the_last_byte() {
        // Columns 1 and 10 of a 10-column capture instance: 0x02 0x01.
        let mask = [0x02, 0x01];
        assert!(mask_bit(&mask, 1));
        assert!(!mask_bit(&mask, 2));
        assert!(mask_bit(&mask, 10));
        assert!(!mask_bit(&mask, 9));
        assert!(!mask_bit(&mask, 17));
        assert!(!mask_bit(&mask, 0));
        assert!(!mask_bit(&[], 1));
    }

    #[test]
    fn lsns_order_as_bytes_and_increment_with_carry() {
        let a = MssqlLsn([0, 0, 0, 0x2A, 0, 0, 0x01, 0xF0, 0, 0xFF]);
        let b = a.increment();
        assert_eq!(b, MssqlLsn([0, 0, 0, 0x2A, 0, 0, 0x01, 0xF0, 0x01, 0x00]));
        assert!(b > a);
        let key = |l: MssqlLsn, s: u8, op: u8| ChangeKey {
            start_lsn: l,
            seqval: MssqlLsn([0, 0, 0, 0, 0, 0, 0, 0, 0, s]),
            operation: op,
        };
        // Commit LSN first, then seqval, then operation (3 before 4).
        assert!(key(a, 9, 4) < key(b, 1, 1));
        assert!(key(a, 1, 4) < key(a, 2, 1));
        assert!(key(a, 1, 3) < key(a, 1, 4));
    }
}
