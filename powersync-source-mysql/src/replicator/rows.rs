//! Rows events → row changes: the checkpoint table's marker and watermark rows, the signal
//! table's backfill requests, and the selected tables' before and after images.

use std::sync::Arc;

use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use mysql_async::BinlogStream;
use mysql_common::binlog::row::BinlogRow;
use mysql_common::binlog::value::BinlogValue;
use powersync_source_core::runtime::Step;
use powersync_source_core::{
    ChangeEvent, Checkpoint, OldImage, Op, Row, RowChange, SourceError, UnixMicros, Value,
};

use super::{Mapped, Replicator};
use crate::catalog::TableInfo;
use crate::markers;
use crate::row_image::{self, ColumnFormat, RowImages};
use crate::values::convert_binlog;

impl Replicator {
    pub(super) async fn rows(
        &mut self,
        stream: &BinlogStream,
        rows: &RowsEventData<'_>,
        time: UnixMicros,
    ) -> Step<()> {
        let mapped = self.table_ids.get(&rows.table_id()).cloned();
        let Some(tme) = stream.get_tme(rows.table_id()) else {
            return Err(SourceError::decode(format!(
                "rows event for table id {} without a table map",
                rows.table_id()
            ))
            .into());
        };
        let (op, has_before, has_after) = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => {
                (Op::Insert, false, true)
            }
            RowsEventData::UpdateRowsEventV1(_)
            | RowsEventData::UpdateRowsEvent(_)
            | RowsEventData::PartialUpdateRowsEvent(_) => (Op::Update, true, true),
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
                (Op::Delete, true, false)
            }
        };
        match mapped {
            None | Some(Mapped::Ignored) => Ok(()),
            Some(Mapped::Checkpoints) => {
                for r in rows.rows(tme) {
                    let (_, after) =
                        r.map_err(|e| SourceError::decode("checkpoint table row").with_source(e))?;
                    let Some(marker) = after.and_then(|a| text_at(a, 1)) else {
                        continue;
                    };
                    if let Some(mark) = markers::watermark_of(&marker) {
                        // Where it lies in the stream, inside its transaction; never a row
                        // or a checkpoint for the host.
                        self.out.backfill_watermark(mark);
                        self.boundary_due = true;
                        self.watermark_passed = true;
                    } else if let Ok(c) = Checkpoint::parse(&marker) {
                        self.out.push(ChangeEvent::CheckpointObserved(c)).await?;
                    }
                }
                Ok(())
            }
            Some(Mapped::Signals) => {
                if op != Op::Insert {
                    return Ok(());
                }
                for r in rows.rows(tme) {
                    let (_, after) =
                        r.map_err(|e| SourceError::decode("signal table row").with_source(e))?;
                    let Some(after) = after else { continue };
                    let mut values = after.unwrap().into_iter().map(binlog_text);
                    // Columns as `setup` creates them: id, kind, tables.
                    let (Some(Some(id)), Some(Some(kind)), Some(Some(tables))) =
                        (values.next(), values.next(), values.next())
                    else {
                        tracing::warn!(
                            "ignoring a row of {}.{} without text id, kind and tables",
                            self.signal_table.0,
                            self.signal_table.1
                        );
                        continue;
                    };
                    self.out.backfill_signal(&id, &kind, &tables);
                    self.boundary_due = true;
                }
                Ok(())
            }
            Some(Mapped::Table(table)) => {
                let before_bits: Option<Vec<bool>> = rows
                    .columns_before_image()
                    .filter(|_| has_before)
                    .map(|b| b.iter().map(|x| *x).collect());
                let after_bits: Option<Vec<bool>> = rows
                    .columns_after_image()
                    .filter(|_| has_after)
                    .map(|b| b.iter().map(|x| *x).collect());
                if let RowsEventData::PartialUpdateRowsEvent(_) = rows {
                    // Partial JSON diffs need mysql_common's shared-image handling (and are
                    // refused when they reach a JSON column).
                    self.ensure_begin(time).await?;
                    for r in rows.rows(tme) {
                        let (before, after) = r.map_err(|e| {
                            SourceError::decode(format!("rows event of {}", table.name()))
                                .with_source(e)
                        })?;
                        let old = match before {
                            Some(b) => Some(image(&table, b, before_bits.as_deref())?),
                            None => None,
                        };
                        let new = match after {
                            Some(a) => Some(image(&table, a, after_bits.as_deref())?),
                            None => None,
                        };
                        self.out.push(change(op, &table, old, new)).await?;
                    }
                    return Ok(());
                }
                let formats = self.formats(tme, &table)?;
                let mut images = RowImages::new(
                    rows.rows_data(),
                    &formats,
                    before_bits.as_deref(),
                    after_bits.as_deref(),
                    &table,
                );
                // Rows go to the batch as they are decoded. The first row is decoded before
                // `Begin` is emitted, so a malformed event fails before the host sees anything
                // of it.
                let Some(first) = images.next() else {
                    return Ok(());
                };
                let (old, new) = first?;
                self.ensure_begin(time).await?;
                self.out.push(change(op, &table, old, new)).await?;
                for r in images {
                    let (old, new) = r?;
                    self.out.push(change(op, &table, old, new)).await?;
                }
                Ok(())
            }
        }
    }

    /// The storage formats of a mapped table's columns (cached per table id).
    fn formats(
        &mut self,
        tme: &TableMapEvent<'_>,
        table: &TableInfo,
    ) -> Result<Arc<[ColumnFormat]>, SourceError> {
        if let Some(f) = self.formats.get(&tme.table_id()) {
            return Ok(f.clone());
        }
        let f = row_image::formats_of(tme, table)?;
        self.formats.insert(tme.table_id(), f.clone());
        Ok(f)
    }
}

/// The text of a string column's binlog value (`None` for NULL or non-text values).
fn binlog_text(v: BinlogValue<'_>) -> Option<String> {
    match v {
        BinlogValue::Value(mysql_common::value::Value::Bytes(b)) => {
            Some(String::from_utf8_lossy(&b).into_owned())
        }
        _ => None,
    }
}

/// The text of column `i` of a checkpoint-table row image.
fn text_at(row: BinlogRow, i: usize) -> Option<String> {
    row.unwrap().into_iter().nth(i).and_then(binlog_text)
}

/// A row change of `table` from its images.
pub(crate) fn change(op: Op, table: &TableInfo, old: Option<Row>, new: Option<Row>) -> ChangeEvent {
    let old_image = match &old {
        None => OldImage::None,
        Some(o) if o.values().iter().any(Value::is_unchanged) => OldImage::Key,
        Some(_) => OldImage::Full,
    };
    ChangeEvent::Row(RowChange {
        op,
        table: table.schema.clone(),
        old,
        old_image,
        new,
        snapshot: false,
    })
}

/// A row image in schema column order; columns missing from the image are `Unchanged`.
fn image(table: &TableInfo, row: BinlogRow, present: Option<&[bool]>) -> Result<Row, SourceError> {
    let mut values = row.unwrap().into_iter();
    let mut out = Vec::with_capacity(table.columns.len());
    for (i, col) in table.columns.iter().enumerate() {
        let here = present
            .map(|p| p.get(i).copied().unwrap_or(false))
            .unwrap_or(true);
        if !here {
            out.push(Value::Unchanged);
            continue;
        }
        match values.next() {
            Some(v) => out.push(convert_binlog(v, col, table.name())?),
            None => out.push(Value::Unchanged),
        }
    }
    Ok(Row::new(out))
}
