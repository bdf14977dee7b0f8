//! Row images of binlog rows events (v1 and v2 carry the same row data) → rows of SQLite
//! values, decoded straight from the event bytes.
//!
//! Layout (MySQL `rows_event.h`, MariaDB `log_event.h`): after the header and the column
//! bitmaps come the rows; each image is a null bitmap with one bit per column *present in the
//! image*, then the values of the present, non-null columns in the storage format the table map
//! describes (type and metadata per column). An update row is the before image followed by the
//! after image. Each value is read by `mysql_common`'s storage-format decoder; this module does
//! the framing, checks the metadata the decoder indexes into (so a malformed table map is an
//! error, not a crash), and converts straight to [`Value`]s without the per-row column objects
//! `mysql_common`'s own row type allocates.

use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;
use powersync_source_core::{Row, SourceError, Value};

use crate::catalog::TableInfo;
use crate::values::convert_binlog;

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

/// Decodes every row of a rows event: `(before image, after image)` pairs, images present as
/// `has_before` / `has_after` say, columns missing from an image as [`Value::Unchanged`].
pub(crate) fn decode(
    data: &[u8],
    formats: &[ColumnFormat],
    before: Option<&[bool]>,
    after: Option<&[bool]>,
    table: &TableInfo,
) -> Result<Vec<Images>, SourceError> {
    let mut buf = ParseBuf(data);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let old = match before {
            Some(bits) => Some(image(&mut buf, formats, bits, table)?),
            None => None,
        };
        let new = match after {
            Some(bits) => Some(image(&mut buf, formats, bits, table)?),
            None => None,
        };
        if old.is_none() && new.is_none() {
            break;
        }
        out.push((old, new));
    }
    Ok(out)
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
        let v: BinlogValue<'_> = buf
            .parse((f.ty, &f.meta[..], false, false))
            .map_err(|e| bad(format!("column {}", table.columns[i].name)).with_source(e))?;
        values.push(convert_binlog(v, &table.columns[i], table.name())?);
    }
    Ok(Row::new(values))
}
