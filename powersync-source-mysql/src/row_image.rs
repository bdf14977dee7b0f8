//! Row images of binlog rows events (v1 and v2 carry the same row data) → rows of SQLite
//! values, decoded straight from the event bytes.
//!
//! Layout (MySQL `rows_event.h`, MariaDB `log_event.h`): after the header and the column
//! bitmaps come the rows; each image is a null bitmap with one bit per column *present in the
//! image*, then the values of the present, non-null columns in the storage format the table map
//! describes (type and metadata per column). An update row is the before image followed by the
//! after image. This module does the framing and checks the metadata the value decoders index into
//! (so a malformed table map is an error, not a crash); [`crate::binlog_values`] reads each
//! value straight into a [`Value`], without the per-row column objects `mysql_common`'s own
//! row type allocates.

use std::sync::Arc;

use mysql_common::binlog::events::TableMapEvent;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;
use powersync_source_core::{Row, SourceError, Value};

use crate::binlog_values;
use crate::catalog::TableInfo;

/// One column's storage type and metadata, from the table map.
#[derive(Debug, Clone)]
pub(crate) struct ColumnFormat {
    pub ty: ColumnType,
    pub meta: Vec<u8>,
}

impl ColumnFormat {
    /// Checks the metadata the value decoder reads for this type.
    pub fn new(ty: ColumnType, meta: &[u8]) -> Result<ColumnFormat, String> {
        use ColumnType::*;
        let need = match ty {
            MYSQL_TYPE_STRING
            | MYSQL_TYPE_BIT
            | MYSQL_TYPE_NEWDECIMAL
            | MYSQL_TYPE_ENUM
            | MYSQL_TYPE_SET
            | MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING => 2,
            MYSQL_TYPE_TIMESTAMP2
            | MYSQL_TYPE_DATETIME2
            | MYSQL_TYPE_TIME2
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB
            | MYSQL_TYPE_GEOMETRY
            | MYSQL_TYPE_VECTOR
            | MYSQL_TYPE_TYPED_ARRAY => 1,
            _ => 0,
        };
        if meta.len() < need {
            return Err(format!("{ty:?} column with {} metadata bytes", meta.len()));
        }
        match ty {
            MYSQL_TYPE_TIMESTAMP2 | MYSQL_TYPE_DATETIME2 | MYSQL_TYPE_TIME2 if meta[0] > 6 => {
                return Err(format!("{ty:?} with {} fraction digits", meta[0]))
            }
            MYSQL_TYPE_NEWDECIMAL
                if meta[0] == 0 || meta[0] > 65 || meta[1] > 30 || meta[1] > meta[0] =>
            {
                return Err(format!("DECIMAL({},{})", meta[0], meta[1]))
            }
            MYSQL_TYPE_TYPED_ARRAY => return Err("typed array columns are not supported".into()),
            _ => {}
        }
        Ok(ColumnFormat {
            ty,
            meta: meta.to_vec(),
        })
    }
}

/// The before and after image of one row of a rows event.
pub(crate) type Images = (Option<Row>, Option<Row>);

/// The storage formats of a table map's columns, checked (see [`ColumnFormat::new`]).
pub(crate) fn formats_of(
    tme: &TableMapEvent<'_>,
    table: &TableInfo,
) -> Result<Arc<[ColumnFormat]>, SourceError> {
    let n = tme.columns_count() as usize;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let ty = tme
            .get_column_type(i)
            .map_err(|e| {
                SourceError::decode(format!("table map of {}", table.name())).with_source(e)
            })?
            .ok_or_else(|| {
                SourceError::decode(format!(
                    "table map of {}: no type for column {i}",
                    table.name()
                ))
            })?;
        let meta = tme.get_column_metadata(i).unwrap_or(&[]);
        out.push(ColumnFormat::new(ty, meta).map_err(|e| {
            SourceError::decode(format!("table map of {}: column {i}: {e}", table.name()))
        })?);
    }
    Ok(out.into())
}

/// The rows of a rows event, one `(before image, after image)` pair at a time, decoded as
/// they are read from the event bytes (nothing is collected per event): images present as
/// `before` / `after` say (the column bitmaps of the event), columns missing from an image as
/// [`Value::Unchanged`]. The first malformed row ends the iteration with its error.
pub(crate) struct RowImages<'a> {
    buf: ParseBuf<'a>,
    formats: &'a [ColumnFormat],
    before: Option<&'a [bool]>,
    after: Option<&'a [bool]>,
    table: &'a TableInfo,
    failed: bool,
}

impl<'a> RowImages<'a> {
    pub fn new(
        data: &'a [u8],
        formats: &'a [ColumnFormat],
        before: Option<&'a [bool]>,
        after: Option<&'a [bool]>,
        table: &'a TableInfo,
    ) -> Self {
        RowImages {
            buf: ParseBuf(data),
            formats,
            before,
            after,
            table,
            failed: false,
        }
    }

    fn next_images(&mut self) -> Result<Option<Images>, SourceError> {
        if self.buf.is_empty() || (self.before.is_none() && self.after.is_none()) {
            return Ok(None);
        }
        let old = match self.before {
            Some(bits) => Some(image(&mut self.buf, self.formats, bits, self.table)?),
            None => None,
        };
        let new = match self.after {
            Some(bits) => Some(image(&mut self.buf, self.formats, bits, self.table)?),
            None => None,
        };
        Ok(Some((old, new)))
    }
}

impl Iterator for RowImages<'_> {
    type Item = Result<Images, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_images() {
            Ok(images) => images.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Decodes every row of a rows event (see [`RowImages`]).
pub(crate) fn decode(
    data: &[u8],
    formats: &[ColumnFormat],
    before: Option<&[bool]>,
    after: Option<&[bool]>,
    table: &TableInfo,
) -> Result<Vec<Images>, SourceError> {
    RowImages::new(data, formats, before, after, table).collect()
}

fn image<'a>(
    buf: &mut ParseBuf<'a>,
    formats: &'a [ColumnFormat],
    present: &[bool],
    table: &TableInfo,
) -> Result<Row, SourceError> {
    let bad = |what: String| SourceError::decode(format!("rows event of {}: {what}", table.name()));
    let n = formats.len();
    if present.len() < n || table.columns.len() != n {
        return Err(bad(format!(
            "{n} columns in the table map, {} in the image bitmap, {} in the table",
            present.len(),
            table.columns.len()
        )));
    }
    let count = present[..n].iter().filter(|p| **p).count();
    let nulls = buf
        .checked_eat(count.div_ceil(8))
        .ok_or_else(|| bad("truncated null bitmap".into()))?;
    let mut values = Vec::with_capacity(n);
    let mut k = 0;
    for (i, f) in formats.iter().enumerate() {
        if !present[i] {
            values.push(Value::Unchanged);
            continue;
        }
        let is_null = nulls[k / 8] & (1 << (k % 8)) != 0;
        k += 1;
        if is_null {
            values.push(Value::Null);
            continue;
        }
        values.push(binlog_values::read(
            buf,
            f,
            &table.columns[i],
            table.name(),
        )?);
    }
    Ok(Row::new(values))
}
