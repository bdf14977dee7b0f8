//! Rows events → row changes: the checkpoint table's marker rows, and the selected tables'
//! before and after images.

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
                    let marker = after.and_then(|a| {
                        a.unwrap().into_iter().nth(1).and_then(|v| match v {
                            BinlogValue::Value(mysql_common::value::Value::Bytes(b)) => {
                                String::from_utf8(b).ok()
                            }
                            _ => None,
                        })
                    });
                    if let Some(c) = marker.and_then(|m| Checkpoint::parse(&m).ok()) {
                        self.out.push(ChangeEvent::CheckpointObserved(c)).await?;
                    }
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
