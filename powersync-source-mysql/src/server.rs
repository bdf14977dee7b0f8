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
                let oldest = oldest_binlog(conn).await?.unwrap_or_else(|| "none".into());
                return Err(lost(format!(
                    "@@gtid_purged holds transactions the checkpoint has not seen (the oldest binlog kept is {oldest})"
                )));
            }
        }
        (GtidState::MariaDb(state), Flavour::MariaDb) if !state.is_empty() => {
            let Some(oldest) = oldest_binlog(conn).await? else {
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
            let Some(oldest) = oldest_binlog(conn).await? else {
                return Ok(());
            };
            let purged = BinlogPosition::split_file_name(&oldest)
                .is_some_and(|(_, index)| pos.file_index < index);
            if purged {
                return Err(lost(format!(
                    "{} was purged (the oldest binlog kept is {oldest})",
                    pos.file_name()
                )));
            }
        }
    }
    Ok(())
}

/// The oldest binlog file the server keeps (`SHOW BINARY LOGS`), `None` when it lists none.
async fn oldest_binlog(conn: &mut Conn) -> Result<Option<String>, SourceError> {
    let logs: Vec<Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| sql_error(e, "listing binary logs"))?;
    Ok(logs.first().and_then(|r| r.get::<String, _>(0)))
}

#[cfg(test)]
mod tests {
    use mysql_async::prelude::Queryable;
    use powersync_source_core::position::{BinlogPosition, GtidState};
    use powersync_source_core::ErrorKind;
    use powersync_source_testkit::{start_or_skip, MariaDbServer};

    use super::{ensure_history, oldest_binlog, ServerInfo};
    use crate::MySqlConfig;

    /// A position in a purged binlog file is `HistoryLost` naming that file and the oldest one
    /// the server still keeps.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purged_binlog_file_is_named() {
        let server = start_or_skip!(MariaDbServer::builder().start().await);
        let config = MySqlConfig::parse(&server.database_url("test")).expect("url");
        let mut conn = crate::connect_sql(&config).await.expect("connect");
        let first = oldest_binlog(&mut conn)
            .await
            .expect("binlogs")
            .expect("one binlog");
        conn.query_drop("FLUSH BINARY LOGS").await.expect("flush");
        conn.query_drop("FLUSH BINARY LOGS").await.expect("flush");
        let logs: Vec<(String, u64)> = conn.query("SHOW BINARY LOGS").await.expect("list");
        let last = logs.last().expect("a binlog").0.clone();
        // MariaDB keeps a file until its binlog checkpoint (InnoDB flushed its commits), which
        // comes a moment after the flush: purge until it is gone.
        for _ in 0..50 {
            conn.query_drop(format!(
                "PURGE BINARY LOGS TO {}",
                crate::connection::literal(&last)
            ))
            .await
            .expect("purge");
            if oldest_binlog(&mut conn).await.expect("binlogs").as_deref() == Some(last.as_str()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let (basename, index) = BinlogPosition::split_file_name(&first).expect("a binlog name");
        let pos = BinlogPosition {
            file_index: index,
            offset: 4,
            basename: basename.to_string(),
            gtid: GtidState::None,
        };
        let info = ServerInfo::detect(&mut conn).await.expect("server info");
        let e = ensure_history(&mut conn, &info, &pos)
            .await
            .expect_err("the file is purged");
        assert_eq!(e.kind(), ErrorKind::HistoryLost);
        let text = e.to_string();
        assert!(text.contains(&format!("{first} was purged")), "{text}");
        assert!(
            text.contains(&format!("the oldest binlog kept is {last}")),
            "{text}"
        );
    }
}
