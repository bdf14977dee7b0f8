//! Measuring the binlog the stream has not read yet (snapshot and streaming alike).
//!
//! MySQL and MariaDB keep no history for a reader (there is no slot): the binlog between the
//! stream's position and the head is what the server must still hold for the stream to go
//! on, and what expiry (`binlog_expire_logs_seconds`, `expire_logs_days`) may purge under it.
//! The watch sums it from `SHOW BINARY LOGS` on its own connection every
//! [`MySqlConfig::with_binlog_check_interval`] (never on the replication connection, which is
//! busy with the dump) and records it as the stream's retained bytes (and the
//! `powersync_source_retained_bytes` gauge).

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use powersync_source_core::position::BinlogPosition;
use powersync_source_core::StreamStats;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::MySqlConfig;
use crate::connection::{connect_to, sql_error};

/// The stream's position as the watch reads it: binlog file name and offset.
pub(crate) type FilePosition = (String, u64);

/// A running watch; dropping it stops the polling.
pub(crate) struct BinlogWatch {
    task: JoinHandle<()>,
}

impl Drop for BinlogWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BinlogWatch {
    /// Starts measuring every `config.binlog_check_interval` from the position `position`
    /// holds (updated by the stream as it advances).
    pub(crate) fn spawn(
        config: MySqlConfig,
        stats: StreamStats,
        position: watch::Receiver<FilePosition>,
    ) -> Self {
        BinlogWatch {
            task: tokio::spawn(run(config, stats, position)),
        }
    }
}

/// A position feed starting at `pos`.
pub(crate) fn feed(
    pos: &BinlogPosition,
) -> (watch::Sender<FilePosition>, watch::Receiver<FilePosition>) {
    watch::channel((pos.file_name(), pos.offset))
}

async fn run(config: MySqlConfig, stats: StreamStats, position: watch::Receiver<FilePosition>) {
    let interval = config.binlog_check_interval;
    let mut conn: Option<Conn> = None;
    loop {
        if conn.is_none() {
            // A failure here is not the stream's: the stream has its own connection and
            // reconnect loop. Try again at the next poll.
            // (The crate does not log: the gauge simply keeps its last value.)
            conn = connect_to(&config, None).await.ok();
        }
        if let Some(c) = conn.as_mut() {
            match binary_logs(c).await {
                Ok(logs) => {
                    let (file, offset) = position.borrow().clone();
                    if let Some(n) = retained_bytes(&logs, &file, offset) {
                        stats.set_retained_bytes(n);
                    }
                }
                // Reconnect at the next poll (the connection may be the broken part).
                Err(_) => conn = None,
            }
        }
        tokio::time::sleep(interval.max(Duration::from_millis(10))).await;
    }
}

/// `SHOW BINARY LOGS`: (file name, size) in order, oldest first.
async fn binary_logs(
    conn: &mut Conn,
) -> Result<Vec<(String, u64)>, powersync_source_core::SourceError> {
    let rows: Vec<Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| sql_error(e, "listing binary logs"))?;
    // MySQL 8 adds an `Encrypted` column: read the first two by position.
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some((
                r.get_opt::<String, _>(0)?.ok()?,
                r.get_opt::<u64, _>(1)?.ok()?,
            ))
        })
        .collect())
}

/// Bytes from `offset` in `file` to the end of the last binlog: the rest of that file plus
/// every later file. `None` when `file` is not listed (purged, or a name the stream has not
/// learnt yet): the gauge keeps its last value rather than reporting a wrong one.
fn retained_bytes(logs: &[(String, u64)], file: &str, offset: u64) -> Option<u64> {
    let at = logs.iter().position(|(name, _)| name == file)?;
    let rest = logs[at].1.saturating_sub(offset);
    Some(
        logs[at + 1..]
            .iter()
            .fold(rest, |sum, (_, size)| sum.saturating_add(*size)),
    )
}

#[cfg(test)]
mod tests {
    use super::retained_bytes;

    #[test]
    fn sums_the_rest_of_the_file_and_every_later_one() {
        let logs = vec![
            ("bin.000001".to_owned(), 1000),
            ("bin.000002".to_owned(), 500),
            ("bin.000003".to_owned(), 300),
        ];
        assert_eq!(retained_bytes(&logs, "bin.000002", 200), Some(600));
        assert_eq!(retained_bytes(&logs, "bin.000003", 300), Some(0));
        // An offset past the listed size (the file grew since the listing): zero, not a wrap.
        assert_eq!(retained_bytes(&logs, "bin.000003", 400), Some(0));
        assert_eq!(retained_bytes(&logs, "bin.000009", 4), None);
    }
}
