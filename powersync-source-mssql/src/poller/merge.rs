//! The k-way merge of one poll window: every change table read in pages of `page_rows`, the
//! pages merged into the one order of the database's commits, (`__$start_lsn`, `__$seqval`,
//! `__$operation`). Memory stays bounded by the page size whatever the transaction size.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use powersync_source_core::position::MssqlLsn;
use powersync_source_core::{ErrorKind, Result, SourceError, StreamStats, Value};

use crate::backend::{timed, CaptureInstance, CdcBackend, ChangeKey, ChangeRow};

/// Where a change row goes: a replicated table (by index) or the checkpoint table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Table(usize),
    Marker,
}

/// One capture instance's part of the window.
pub(super) struct Cursor {
    slot: Slot,
    // Shared with every row taken from this cursor (no per-row copy of the column list).
    instance: Arc<CaptureInstance>,
    lo: MssqlLsn,
    hi: MssqlLsn,
    /// Rows at or above this LSN belong to the successor instance.
    below: Option<MssqlLsn>,
    buf: VecDeque<ChangeRow>,
    after: Option<ChangeKey>,
    done: bool,
}

/// The changes of `instance` from `lo` to `hi` (both inclusive), without those at or above
/// `below` (read from the successor instance instead).
pub(super) fn cursor(
    slot: Slot,
    instance: &CaptureInstance,
    lo: MssqlLsn,
    hi: MssqlLsn,
    below: Option<MssqlLsn>,
) -> Cursor {
    Cursor {
        slot,
        instance: Arc::new(instance.clone()),
        lo,
        hi,
        below,
        buf: VecDeque::new(),
        after: None,
        done: lo > hi,
    }
}

/// The merge of a window's cursors.
pub(super) struct Merge {
    cursors: Vec<Cursor>,
    page_rows: u32,
    call_timeout: Duration,
}

impl Merge {
    pub(super) fn new(cursors: Vec<Cursor>, page_rows: u32, call_timeout: Duration) -> Merge {
        Merge {
            cursors,
            page_rows,
            call_timeout,
        }
    }

    /// The next change row of the window in commit order, with where it goes and the
    /// instance it was read from; `None` once every cursor is exhausted. Reads the next page
    /// of a cursor whose buffered rows are used up, counting its bytes in `stats`.
    pub(super) async fn next(
        &mut self,
        b: &mut dyn CdcBackend,
        stats: &StreamStats,
    ) -> Result<Option<(Slot, Arc<CaptureInstance>, ChangeRow)>> {
        for c in self.cursors.iter_mut() {
            while c.buf.is_empty() && !c.done {
                // A later page starts at the commit LSN it continues in: the keyset excludes
                // everything below it anyway, and the change function then scans the change
                // table (clustered on __$start_lsn) from there, not from the window's start
                // again for every page.
                let lo = c.after.map_or(c.lo, |a| a.start_lsn.max(c.lo));
                let rows = match timed(
                    self.call_timeout,
                    b.changes(&c.instance, lo, c.hi, c.after, self.page_rows),
                )
                .await
                {
                    Ok(rows) => rows,
                    Err(e) => {
                        return Err(dropped_meanwhile(b, self.call_timeout, &c.instance, e).await)
                    }
                };
                if rows.len() < self.page_rows as usize {
                    c.done = true;
                }
                if let Some(last) = rows.last() {
                    c.after = Some(last.order_key());
                }
                stats.add_bytes(rows.iter().map(approx_size).sum());
                c.buf.extend(rows.into_iter().filter(|r| match c.below {
                    Some(below) => r.start_lsn < below,
                    None => true,
                }));
            }
        }
        let Some(ci) = self
            .cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.buf.front().map(|r| (r.order_key(), i)))
            .min()
            .map(|(_, i)| i)
        else {
            return Ok(None);
        };
        let Some(c) = self.cursors.get_mut(ci) else {
            return Ok(None);
        };
        Ok(c.buf
            .pop_front()
            .map(|row| (c.slot, c.instance.clone(), row)))
    }
}

/// Bytes a change row took on the wire, roughly (for the stream's statistics).
fn approx_size(r: &ChangeRow) -> u64 {
    let values: usize = r
        .values
        .iter()
        .map(|v| match v {
            Value::Text(s) => s.len(),
            Value::Blob(b) => b.len(),
            _ => 8,
        })
        .sum();
    (21 + r.update_mask.len() + values) as u64
}

/// A change-table read that failed because its capture instance was dropped after this poll
/// listed it (the DBA removing an old instance) is retried: the next poll's refresh switches
/// to the successor or reports the loss. Other failures pass through.
async fn dropped_meanwhile(
    b: &mut dyn CdcBackend,
    t_out: Duration,
    instance: &CaptureInstance,
    e: SourceError,
) -> SourceError {
    if e.kind() != ErrorKind::Schema {
        return e;
    }
    match timed(t_out, b.capture_instances()).await {
        Ok(all) if !all.iter().any(|i| i.name == instance.name) => {
            SourceError::connection(format!(
                "capture instance {} was dropped during the poll; polling again",
                instance.name
            ))
        }
        _ => e,
    }
}
