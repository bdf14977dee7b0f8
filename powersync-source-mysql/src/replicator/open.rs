//! The binlog dump request: where the server starts sending, per flavour.

use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use mysql_common::packets::{GnoInterval, Sid};
use powersync_source_core::position::GtidState;
use powersync_source_core::SourceError;

use super::Replicator;
use crate::connection::{connect_to, literal, sql_error};
use crate::server::Flavour;

impl Replicator {
    /// Opens a binlog connection that starts right after the last emitted boundary:
    /// - MariaDB with a GTID position: `@slave_connect_state` (strict mode) and an empty file
    ///   name, so the server finds the position itself, also after a failover;
    /// - MySQL with a GTID set: `COM_BINLOG_DUMP_GTID` with the executed set;
    /// - otherwise (no GTIDs on the server): the file and offset.
    pub(super) async fn open(&self) -> Result<BinlogStream, SourceError> {
        let mut conn = connect_to(&self.config, None).await?;
        let ctx = "preparing the binlog connection";
        let hb = self
            .config
            .heartbeat
            .as_nanos()
            .min(u32::MAX as u128 * 1_000_000) as u64;
        // MySQL 8.0.26+ reads the `source_` spellings, older servers and MariaDB `master_`;
        // setting both is harmless (they are plain user variables).
        conn.query_drop(format!(
            "SET @master_heartbeat_period = {hb}, @source_heartbeat_period = {hb}, \
             @source_binlog_checksum = 'ALL'"
        ))
        .await
        .map_err(|e| sql_error(e, ctx))?;
        let file = self.pos.file_name();
        let mut request = BinlogStreamRequest::new(self.config.server_id);
        match (self.info.flavour, &self.pos.gtid) {
            (Flavour::MariaDb, gtid) => {
                conn.query_drop("SET @mariadb_slave_capability = 4")
                    .await
                    .map_err(|e| sql_error(e, ctx))?;
                if let GtidState::MariaDb(g) = gtid {
                    if !self.maria.is_empty() {
                        conn.query_drop(format!("SET @slave_connect_state = {}", literal(g)))
                            .await
                            .map_err(|e| sql_error(e, ctx))?;
                        conn.query_drop("SET @slave_gtid_strict_mode = 1")
                            .await
                            .map_err(|e| sql_error(e, ctx))?;
                    }
                }
                if self.maria.is_empty() {
                    request = request
                        .with_filename(file.as_bytes())
                        .with_pos(self.pos.offset);
                } else {
                    request = request.with_filename(b"").with_pos(4u64);
                }
                conn.get_binlog_stream(request)
                    .await
                    .map_err(|e| sql_error(e, "starting the binlog dump"))
            }
            (Flavour::MySql, GtidState::MySql(_)) => {
                let sids: Vec<Sid<'static>> = self
                    .mysql
                    .half_open()
                    .map(|(u, ivs)| {
                        Sid::new(u).with_intervals(
                            ivs.into_iter()
                                .map(|(a, b)| GnoInterval::new(a, b))
                                .collect(),
                        )
                    })
                    .collect();
                request = request
                    .with_gtid()
                    .with_gtid_set(sids)
                    .with_filename(b"")
                    .with_pos(4u64);
                conn.get_binlog_stream(request)
                    .await
                    .map_err(|e| sql_error(e, "starting the binlog dump (GTID)"))
            }
            (Flavour::MySql, _) => {
                request = request
                    .with_filename(file.as_bytes())
                    .with_pos(self.pos.offset);
                conn.get_binlog_stream(request)
                    .await
                    .map_err(|e| sql_error(e, "starting the binlog dump"))
            }
        }
    }
}
