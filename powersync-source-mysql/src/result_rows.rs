//! Binary result sets of the snapshot reader's connection as connector rows: each row decoded
//! from the connection's buffer and normalized value by value as the binlog path normalizes
//! the same row. The snapshot and backfills read their chunks with it.

use mysql_async::Value as My;
use powersync_source_core::{Row, SourceError};

use crate::catalog::TableInfo;
use crate::client::{Client, Columns, Statement};
use crate::connection::sql_error;
use crate::values::{convert, Path};

/// The rows of a statement executed on the snapshot reader's connection, each normalized as
/// the binlog path normalizes the same row as it is decoded. The snapshot and backfills read
/// their chunks with it.
pub(crate) struct ResultRows<'a> {
    snap: &'a mut Client,
    columns: Columns,
    table: &'a TableInfo,
    context: &'a str,
}

impl<'a> ResultRows<'a> {
    /// Executes `stmt` with `params`; `None` when it returns no result set.
    pub(crate) async fn open(
        snap: &'a mut Client,
        stmt: &Statement,
        params: &[My],
        table: &'a TableInfo,
        context: &'a str,
    ) -> Result<Option<ResultRows<'a>>, SourceError> {
        let Some(columns) = snap
            .execute(stmt, params)
            .await
            .map_err(|e| sql_error(e, context))?
        else {
            return Ok(None);
        };
        if columns.len() != table.columns.len() {
            return Err(SourceError::schema(format!(
                "{context}: the server returned {} columns, the catalog lists {}",
                columns.len(),
                table.columns.len()
            )));
        }
        Ok(Some(ResultRows {
            snap,
            columns,
            table,
            context,
        }))
    }

    /// The next row, `None` after the last; its key columns (wire values: they bind back
    /// exactly) replace the contents of `last`.
    pub(crate) async fn next(
        &mut self,
        mut last: Option<&mut Vec<My>>,
    ) -> Result<Option<Row>, SourceError> {
        let (table, context) = (self.table, self.context);
        let failed = |e| sql_error(e, context);
        let Some(mut wire) = self.snap.next_row(&self.columns).await.map_err(failed)? else {
            return Ok(None);
        };
        let mut values = Vec::with_capacity(table.columns.len());
        if let Some(last) = last.as_deref_mut() {
            last.clear();
            last.resize(table.key.len(), My::NULL);
        }
        for (i, col) in table.columns.iter().enumerate() {
            let v = wire
                .next_value()
                .map_err(|e| failed(e.into()))?
                .unwrap_or(My::NULL);
            if let Some(last) = last.as_deref_mut() {
                if let Some(k) = table.key.iter().position(|&c| c == i) {
                    last[k] = v.clone();
                }
            }
            values.push(convert(v, col, table.name(), Path::Snapshot)?);
        }
        Ok(Some(values.into()))
    }
}
