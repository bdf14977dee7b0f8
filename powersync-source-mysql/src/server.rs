//! Server flavour, version and binlog positions.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use powersync_source_core::position::{BinlogPosition, GtidState};
use powersync_source_core::SourceError;

use crate::connection::sql_error;
use crate::gtid::{MariaPos, MySqlGtidSet};

/// Which server family: they resume differently (GTID position vs GTID set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// MariaDB 10.x / 11.x.
    MariaDb,
    /// MySQL 5.7 / 8.x (and Percona).
    MySql,
}

/// Flavour and version of a server.
#[derive(Debug, Clone)]
pub(crate) struct ServerInfo {
    pub flavour: Flavour,
    /// `VERSION()`, e.g. `10.11.6-MariaDB-0+deb12u1`.
    pub version: String,
    /// (major, minor, patch).
    pub numbers: (u32, u32, u32),
}

impl ServerInfo {
    pub async fn detect(conn: &mut Conn) -> Result<ServerInfo, SourceError> {
        let (version, comment): (String, String) = conn
            .query_first("SELECT VERSION(), @@version_comment")
            .await
            .map_err(|e| sql_error(e, "reading the server version"))?
            .unwrap_or_default();
        Ok(Self::from_strings(version, &comment))
    }

    pub fn from_strings(version: String, comment: &str) -> ServerInfo {
        let flavour = if version.to_ascii_lowercase().contains("mariadb")
            || comment.to_ascii_lowercase().contains("mariadb")
        {
            Flavour::MariaDb
        } else {
            Flavour::MySql
        };
        let mut nums = version
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().unwrap_or(0));
        let numbers = (
            nums.next().unwrap_or(0),
            nums.next().unwrap_or(0),
            nums.next().unwrap_or(0),
        );
        ServerInfo {
            flavour,
            version,
            numbers,
        }
    }

    /// `SHOW BINARY LOG STATUS` on MySQL 8.2+, `SHOW MASTER STATUS` elsewhere.
    pub fn master_status_sql(&self) -> &'static str {
        if self.flavour == Flavour::MySql && self.numbers >= (8, 2, 0) {
            "SHOW BINARY LOG STATUS"
        } else {
            "SHOW MASTER STATUS"
        }
    }
}

/// A binlog position from a file name, offset and GTID state.
pub(crate) fn position(
    file: &str,
    offset: u64,
    gtid: GtidState,
) -> Result<BinlogPosition, SourceError> {
    let (base, index) = BinlogPosition::split_file_name(file).ok_or_else(|| {
        SourceError::decode(format!("binlog file name `{file}` has no numeric suffix"))
    })?;
    Ok(BinlogPosition {
        file_index: index,
        offset,
        basename: base.to_owned(),
        gtid,
    })
}

/// The server's current binlog head: `SHOW MASTER STATUS` file and position, with the
/// GTID state at that position (MariaDB: `BINLOG_GTID_POS(file, pos)`, exactly that point;
/// MySQL: `Executed_Gtid_Set` of the same statement).
pub(crate) async fn head(
    conn: &mut Conn,
    info: &ServerInfo,
) -> Result<BinlogPosition, SourceError> {
    let row: Option<Row> = conn
        .query_first(info.master_status_sql())
        .await
        .map_err(|e| sql_error(e, "reading the binlog position"))?;
    let row = row.ok_or_else(|| {
        SourceError::prerequisite("the binary log is off (SHOW MASTER STATUS is empty) [log_bin]")
            .with_hint("start the server with log_bin (and binlog_format=ROW)")
    })?;
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or_default();
    let gtid = match info.flavour {
        Flavour::MariaDb => GtidState::MariaDb(gtid_pos_at(conn, &file, pos).await?),
        Flavour::MySql => {
            let set: String = row.get(4).unwrap_or_default();
            GtidState::MySql(
                MySqlGtidSet::parse(&set)
                    .map_err(SourceError::decode)?
                    .to_string(),
            )
        }
    };
    position(&file, pos, gtid)
}

/// MariaDB's GTID position at a binlog file/offset.
pub(crate) async fn gtid_pos_at(
    conn: &mut Conn,
    file: &str,
    pos: u64,
) -> Result<String, SourceError> {
    let gtid: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file, pos))
        .await
        .map_err(|e| sql_error(e, "reading BINLOG_GTID_POS"))?;
    let gtid = gtid.flatten().unwrap_or_default();
    MariaPos::parse(&gtid).map_err(SourceError::decode)?;
    Ok(gtid)
}

/// Fails with [`HistoryLost`](powersync_source_core::ErrorKind::HistoryLost) when the server
/// no longer holds every transaction after `pos`.
///
/// MariaDB: the oldest binlog's `Gtid_list` event is the GTID state at its start; a domain
/// whose sequence there is beyond ours (or a domain we have never seen) means transactions
/// after `pos` were purged. MySQL: `@@gtid_purged` must be a subset of our executed set.
/// Without GTIDs: the file must not be older than the oldest binlog.
pub(crate) async fn ensure_history(
    conn: &mut Conn,
    info: &ServerInfo,
    pos: &BinlogPosition,
) -> Result<(), SourceError> {
    let lost = |why: String| {
        SourceError::history_lost(format!(
            "the server no longer has the binlog after {}: {why}",
            pos.file_name()
        ))
        .with_hint("start from the beginning (resnapshot); keep binlogs longer (binlog_expire_logs_seconds)")
    };
    match (&pos.gtid, info.flavour) {
        (GtidState::MySql(set), Flavour::MySql) => {
            let ok: Option<i64> = conn
                .exec_first(
                    "SELECT GTID_SUBSET(@@GLOBAL.gtid_purged, ?)",
                    (set.as_str(),),
                )
                .await
                .map_err(|e| sql_error(e, "comparing with gtid_purged"))?;
            if ok != Some(1) {
                return Err(lost(
                    "@@gtid_purged holds transactions the checkpoint has not seen".into(),
                ));
            }
        }
        (GtidState::MariaDb(state), Flavour::MariaDb) if !state.is_empty() => {
            let logs: Vec<Row> = conn
                .query("SHOW BINARY LOGS")
                .await
                .map_err(|e| sql_error(e, "listing binary logs"))?;
            let Some(oldest) = logs.first().and_then(|r| r.get::<String, _>(0)) else {
                return Ok(());
            };
            let events: Vec<Row> = conn
                .query(format!(
                    "SHOW BINLOG EVENTS IN {} LIMIT 4",
                    crate::connection::literal(&oldest)
                ))
                .await
                .map_err(|e| sql_error(e, "reading the oldest binlog's GTID list"))?;
            let list = events.iter().find_map(|r| {
                let kind: String = r.get(2)?;
                (kind == "Gtid_list")
                    .then(|| r.get::<String, _>(5))
                    .flatten()
            });
            let ours = MariaPos::parse(state).map_err(SourceError::config)?;
            if let Some(list) = list {
                let list = MariaPos::parse(list.trim_matches(|c| c == '[' || c == ']'))
                    .map_err(SourceError::decode)?;
                for (domain, (_, seq)) in list.domains() {
                    match ours.seq(domain) {
                        Some(mine) if mine >= seq => {}
                        Some(mine) => {
                            return Err(lost(format!(
                                "domain {domain}: the oldest binlog {oldest} starts after sequence {seq}, the checkpoint is at {mine}"
                            )))
                        }
                        None => {
                            return Err(lost(format!(
                                "domain {domain} was purged up to {seq} and the checkpoint has no position in it"
                            )))
                        }
                    }
                }
            }
        }
        _ => {
            let logs: Vec<Row> = conn
                .query("SHOW BINARY LOGS")
                .await
                .map_err(|e| sql_error(e, "listing binary logs"))?;
            let oldest = logs
                .first()
                .and_then(|r| r.get::<String, _>(0))
                .and_then(|f| BinlogPosition::split_file_name(&f).map(|(_, i)| i));
            if oldest.is_some_and(|o| pos.file_index < o) {
                return Err(lost("the binlog file was purged".into()));
            }
        }
    }
    Ok(())
}
