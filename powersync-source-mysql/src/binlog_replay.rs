//! The streaming path's row decoding over recorded binlog events, for the benchmarks
//! (`benches/benches/mysql_rows.rs`): the same framing, table map checks, row image decoding
//! and row changes as the binlog reader, without a server. Exposed through
//! [`crate::decoders`] (not a stable API).

/// One column of a table as `information_schema.COLUMNS` describes it, for
/// [`BinlogRows`].
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    /// `COLUMN_NAME`.
    pub name: String,
    /// `DATA_TYPE`.
    pub data_type: String,
    /// `COLUMN_TYPE`.
    pub column_type: String,
    /// `DATETIME_PRECISION`.
    pub datetime_precision: Option<u64>,
    /// `CHARACTER_SET_NAME`.
    pub charset: Option<String>,
    /// A MariaDB JSON column (LONGTEXT with a `json_valid` check).
    pub json: bool,
}

/// The streaming path's row decoding over recorded binlog events (the benchmarks): events
/// framed and checksummed as in a binlog file, table maps, and rows events of the known
/// tables decoded into row changes exactly as the binlog reader decodes them.
pub struct BinlogRows {
    esr: mysql_common::binlog::EventStreamReader,
    tables: std::collections::HashMap<(String, String), std::sync::Arc<crate::catalog::TableInfo>>,
    mapped: std::collections::HashMap<
        u64,
        (
            std::sync::Arc<crate::catalog::TableInfo>,
            std::sync::Arc<[crate::row_image::ColumnFormat]>,
        ),
    >,
}

impl BinlogRows {
    /// A decoder for rows of `tables` (name and columns in table order).
    pub fn new(tables: Vec<(powersync_source_core::TableName, Vec<ColumnSpec>)>) -> BinlogRows {
        use std::sync::Arc;
        let tables = tables
            .into_iter()
            .map(|(name, cols)| {
                let columns = cols
                    .iter()
                    .map(|c| {
                        powersync_source_core::Column::new(c.name.clone(), c.column_type.clone())
                    })
                    .collect();
                let infos: Vec<crate::catalog::ColumnInfo> = cols
                    .iter()
                    .map(|c| crate::catalog::ColumnInfo {
                        name: c.name.clone(),
                        kind: crate::catalog::kind_of(
                            &c.data_type,
                            &c.column_type,
                            c.datetime_precision,
                            c.charset.as_deref(),
                            c.json,
                        ),
                    })
                    .collect();
                let info = crate::catalog::TableInfo {
                    schema: Arc::new(powersync_source_core::TableSchema {
                        name: name.clone(),
                        source_id: None,
                        columns,
                        identity: powersync_source_core::RowIdentity::Full,
                    }),
                    columns: infos.into(),
                    key: Vec::new(),
                };
                ((name.schema, name.name), Arc::new(info))
            })
            .collect();
        BinlogRows {
            esr: mysql_common::binlog::EventStreamReader::new(
                mysql_common::binlog::consts::BinlogVersion::Version4,
            ),
            tables,
            mapped: Default::default(),
        }
    }

    /// Reads one whole event (header, body, checksum); hands every row change of a known
    /// table to `sink` and returns how many there were.
    pub fn event(
        &mut self,
        bytes: &[u8],
        sink: &mut dyn FnMut(powersync_source_core::RowChange),
    ) -> Result<usize, String> {
        use mysql_common::binlog::events::{EventData, RowsEventData};
        use powersync_source_core::{ChangeEvent, Op};
        let event = self
            .esr
            .read(bytes)
            .map_err(|e| e.to_string())?
            .ok_or("empty event")?;
        match event.read_data().map_err(|e| e.to_string())? {
            Some(EventData::TableMapEvent(tme)) => {
                let key = (
                    tme.database_name().into_owned(),
                    tme.table_name().into_owned(),
                );
                if let Some(t) = self.tables.get(&key) {
                    let formats =
                        crate::row_image::formats_of(&tme, t).map_err(|e| e.to_string())?;
                    self.mapped.insert(tme.table_id(), (t.clone(), formats));
                }
                Ok(0)
            }
            Some(EventData::RowsEvent(rows)) => {
                let Some((table, formats)) = self.mapped.get(&rows.table_id()) else {
                    return Ok(0);
                };
                let (op, has_before, has_after) = match rows {
                    RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => {
                        (Op::Insert, false, true)
                    }
                    RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
                        (Op::Delete, true, false)
                    }
                    _ => (Op::Update, true, true),
                };
                let before: Option<Vec<bool>> = rows
                    .columns_before_image()
                    .filter(|_| has_before)
                    .map(|b| b.iter().map(|x| *x).collect());
                let after: Option<Vec<bool>> = rows
                    .columns_after_image()
                    .filter(|_| has_after)
                    .map(|b| b.iter().map(|x| *x).collect());
                let mut n = 0;
                for r in crate::row_image::RowImages::new(
                    rows.rows_data(),
                    formats,
                    before.as_deref(),
                    after.as_deref(),
                    table,
                ) {
                    let (old, new) = r.map_err(|e| e.to_string())?;
                    if let ChangeEvent::Row(c) = crate::replicator::row_change(op, table, old, new)
                    {
                        sink(c);
                    }
                    n += 1;
                }
                Ok(n)
            }
            _ => Ok(0),
        }
    }
}

impl std::fmt::Debug for BinlogRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinlogRows")
            .field("tables", &self.tables.len())
            .field("mapped", &self.mapped.len())
            .finish_non_exhaustive()
    }
}
