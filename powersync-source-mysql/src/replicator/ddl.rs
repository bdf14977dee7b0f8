//! What a DDL statement in the binlog does to the stream: truncates, tables leaving the scope,
//! schema changes, and tables created or renamed into the scope (read by a backfill). The statement is
//! classified by [`crate::ddl::classify`].

use std::sync::Arc;

use mysql_async::Conn;
use powersync_source_core::runtime::Step;
use powersync_source_core::{ChangeEvent, SourceError, TableName, Truncate, UnixMicros};

use super::{Mapped, Replicator};
use crate::catalog::{self, TableInfo};
use crate::connection::connect;
use crate::ddl::{classify, Ddl};

impl Replicator {
    /// The SQL connection for catalog reads while streaming (opened on first use, dropped on
    /// reconnect).
    async fn sql_conn(&mut self) -> Result<&mut Conn, SourceError> {
        if self.sql.is_none() {
            self.sql = Some(connect(&self.config).await?);
        }
        self.sql
            .as_mut()
            .ok_or_else(|| SourceError::connection("no SQL connection"))
    }

    /// Reads `db.table`'s shape again and announces it (or forgets a table that is gone).
    pub(super) async fn reload(&mut self, db: &str, table: &str) -> Step<Option<Arc<TableInfo>>> {
        let name = TableName::new(db, table);
        let conn = self.sql_conn().await?;
        let info = catalog::table_info(conn, &name).await?.map(Arc::new);
        self.reshaped.insert((db.to_owned(), table.to_owned()));
        match &info {
            Some(t) => {
                self.tables
                    .insert((db.to_owned(), table.to_owned()), t.clone());
                self.out.push(ChangeEvent::Schema(t.schema.clone())).await?;
            }
            None => {
                self.tables.remove(&(db.to_owned(), table.to_owned()));
            }
        }
        // Forget only this table's mappings: other tables mapped in the same transaction stay.
        self.table_ids.retain(|_, m| match m {
            Mapped::Table(t) => !(t.name().schema == db && t.name().name == table),
            _ => true,
        });
        Ok(info)
    }

    /// A table entered the scope while streaming: its schema now, and its rows through a
    /// backfill from the end of this event group (never an inline copy that would hold up
    /// every other table's changes).
    async fn enters_scope(&mut self, db: &str, table: &str) -> Step<()> {
        if let Some(t) = self.reload(db, table).await? {
            self.out.backfill_added_table(t.name().clone());
            self.boundary_due = true;
        }
        Ok(())
    }

    pub(super) async fn ddl(&mut self, sql: &str, default_db: &str) -> Step<()> {
        let resolve = |(d, t): (String, String)| {
            if d.is_empty() {
                (default_db.to_owned(), t)
            } else {
                (d, t)
            }
        };
        let time = UnixMicros::now();
        match classify(sql) {
            Ddl::Truncate(names) => {
                let hit: Vec<TableName> = names
                    .into_iter()
                    .map(resolve)
                    .filter(|k| self.tables.contains_key(k))
                    .map(|(d, t)| TableName::new(d, t))
                    .collect();
                if !hit.is_empty() {
                    self.ensure_begin(time).await?;
                    self.out
                        .push(ChangeEvent::Truncate(Truncate { tables: hit }))
                        .await?;
                }
            }
            Ddl::Drop(names) => {
                // A dropped table is emptied for the host and leaves the scope.
                let hit: Vec<TableName> = names
                    .into_iter()
                    .map(resolve)
                    .filter(|k| self.tables.remove(k).is_some())
                    .map(|(d, t)| TableName::new(d, t))
                    .collect();
                if !hit.is_empty() {
                    self.ensure_begin(time).await?;
                    self.out
                        .push(ChangeEvent::Truncate(Truncate { tables: hit }))
                        .await?;
                }
            }
            Ddl::Rename(pairs) => {
                for (from, to) in pairs {
                    let (from, to) = (resolve(from), resolve(to));
                    if self.tables.remove(&from).is_some() {
                        self.ensure_begin(time).await?;
                        self.out
                            .push(ChangeEvent::Truncate(Truncate {
                                tables: vec![TableName::new(from.0.clone(), from.1.clone())],
                            }))
                            .await?;
                    }
                    if self.selection.wants(&to.0, &to.1, &self.checkpoint_table) {
                        // The table arrives with rows: a backfill reads them while the stream
                        // goes on (see the crate docs on tables entering the scope).
                        self.enters_scope(&to.0, &to.1).await?;
                    }
                }
            }
            Ddl::Create(name) => {
                let name = resolve(name);
                if self
                    .selection
                    .wants(&name.0, &name.1, &self.checkpoint_table)
                {
                    // `CREATE TABLE … SELECT`, or rows written before the stream read this
                    // event, are already in the table: a backfill reads what is there.
                    self.enters_scope(&name.0, &name.1).await?;
                }
            }
            Ddl::Alter(name) => {
                let name = resolve(name);
                if self.tables.contains_key(&name) {
                    self.reload(&name.0, &name.1).await?;
                }
            }
            Ddl::Other => {}
        }
        Ok(())
    }
}
