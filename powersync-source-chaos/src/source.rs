//! The source servers a campaign runs against (throwaway servers of the test kit) and how the
//! workload and the system under test reach them.

use std::fmt;
use std::time::Duration;

use powersync_source_testkit::{MariaDbServer, PostgresServer, SecantusServer};

use crate::bank::{Bank, MariaDbBank, MongoBank, PostgresBank};
use crate::error::{ChaosError, Result};

/// A kind of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// PostgreSQL (logical replication).
    Postgres,
    /// MariaDB (binlog).
    MariaDb,
    /// SecantusDB (MongoDB wire protocol, change streams).
    Secantus,
}

impl SourceKind {
    /// Every kind, in report order.
    pub const ALL: [SourceKind; 3] = [
        SourceKind::Postgres,
        SourceKind::MariaDb,
        SourceKind::Secantus,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Postgres => "postgres",
            SourceKind::MariaDb => "mariadb",
            SourceKind::Secantus => "secantus",
        }
    }

    /// Parses [`SourceKind::name`].
    pub fn parse(s: &str) -> Option<SourceKind> {
        SourceKind::ALL.into_iter().find(|k| k.name() == s.trim())
    }

    /// Whether every change event carries the row as it was right after the change, so that
    /// every committed state of a copy is a state the source had. Not SecantusDB: it
    /// approximates post-images (and `updateLookup`) with a lookup of the current document when
    /// the event is read, so an update can carry a later state of its row, and an update of a
    /// document deleted since then has no image at all (with `fullDocument: required` that
    /// fails the stream, so the campaign uses `post_images=off`, where such an update is
    /// skipped and its delete follows).
    pub fn exact_row_images(self) -> bool {
        !matches!(self, SourceKind::Secantus)
    }

    /// The silence timeout the system under test is given through its URL, if the source's URL
    /// can carry one (a pause longer than it must make the connector reconnect).
    pub fn silence_timeout(self) -> Option<Duration> {
        match self {
            // `mirror` has no option for it and the PostgreSQL and MongoDB URLs no parameter:
            // their connectors keep the default (StreamOptions: 120 s).
            SourceKind::Postgres | SourceKind::Secantus => None,
            SourceKind::MariaDb => Some(Duration::from_secs(3)),
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A running throwaway source server.
#[derive(Debug)]
pub enum SourceServer {
    /// PostgreSQL.
    Postgres(PostgresServer),
    /// MariaDB.
    MariaDb(MariaDbServer),
    /// SecantusDB.
    Secantus(SecantusServer),
}

fn kit(context: &'static str) -> impl FnOnce(powersync_source_testkit::TestkitError) -> ChaosError {
    move |e| ChaosError::server(context, e)
}

impl SourceServer {
    /// Starts a server of `kind`.
    pub async fn start(kind: SourceKind) -> Result<SourceServer> {
        Ok(match kind {
            SourceKind::Postgres => SourceServer::Postgres(
                PostgresServer::start()
                    .await
                    .map_err(kit("starting PostgreSQL"))?,
            ),
            SourceKind::MariaDb => SourceServer::MariaDb(
                MariaDbServer::start()
                    .await
                    .map_err(kit("starting MariaDB"))?,
            ),
            SourceKind::Secantus => SourceServer::Secantus(
                // By default SecantusDB, like mongod with `j: false`, acknowledges a commit
                // before its journal record is written out: a SIGKILL then forgets the last
                // acknowledged transactions and hands their oplog positions to new writes
                // (measured here: 1563 acknowledged transactions, 11 gone after a kill). A
                // source that rewinds its history breaks every checker however correct the
                // connector is; mongod reports such a resume as ChangeStreamFatalError 280,
                // SecantusDB resumes silently. `--sync-on-commit` (fsync per commit, as
                // PostgreSQL and MariaDB do by default) keeps acknowledged writes.
                SecantusServer::builder()
                    .arg("--sync-on-commit")
                    .start()
                    .await
                    .map_err(kit("starting SecantusDB"))?,
            ),
        })
    }

    /// The kind.
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceServer::Postgres(_) => SourceKind::Postgres,
            SourceServer::MariaDb(_) => SourceKind::MariaDb,
            SourceServer::Secantus(_) => SourceKind::Secantus,
        }
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        match self {
            SourceServer::Postgres(s) => s.port(),
            SourceServer::MariaDb(s) => s.port(),
            SourceServer::Secantus(s) => s.port(),
        }
    }

    /// The URL of the server at `port` (the server's own port for the workload, the proxy's
    /// for the system under test), with the connector options the campaign uses.
    pub fn url_at(&self, port: u16) -> String {
        match self {
            // The smallest decoding memory makes the walsender stream every transaction with
            // a payload rewrite while it is in progress, and a 64 KiB client budget sends
            // those to spill files: kills and faults then land inside streamed transactions
            // and spill files too, not only inside transactions sent whole at commit.
            SourceServer::Postgres(_) => format!(
                "postgres://postgres@127.0.0.1:{port}/postgres\
                 ?logical_decoding_work_mem=64kB&streaming_memory_kb=64"
            ),
            SourceServer::MariaDb(_) => {
                let silence = self
                    .kind()
                    .silence_timeout()
                    .unwrap_or(Duration::from_secs(3));
                format!(
                    "mysql://root@127.0.0.1:{port}/test?heartbeat=1&silence_timeout={}",
                    silence.as_secs().max(2)
                )
            }
            SourceServer::Secantus(_) => {
                // See `SourceKind::exact_row_images`.
                format!("mongodb://127.0.0.1:{port}/test?directConnection=true&post_images=off")
            }
        }
    }

    /// The workload's URL (the server directly).
    pub fn workload_url(&self) -> String {
        match self {
            SourceServer::Postgres(s) => s.url(),
            SourceServer::MariaDb(s) => s.database_url("test"),
            SourceServer::Secantus(s) => format!(
                "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=5000",
                s.port()
            ),
        }
    }

    /// A workload connection.
    pub async fn bank(&self) -> Result<Bank> {
        let url = self.workload_url();
        Ok(match self {
            SourceServer::Postgres(_) => Bank::Postgres(PostgresBank::connect(&url).await?),
            SourceServer::MariaDb(_) => Bank::MariaDb(MariaDbBank::connect(&url).await?),
            SourceServer::Secantus(_) => Bank::Mongo(MongoBank::connect(&url).await?),
        })
    }

    /// SIGKILL of the server and all its processes.
    pub async fn kill(&self) -> Result<()> {
        match self {
            SourceServer::Postgres(s) => s.kill().await,
            SourceServer::MariaDb(s) => s.kill().await,
            SourceServer::Secantus(s) => s.kill().await,
        }
        .map_err(kit("killing the server"))
    }

    /// Starts the server again (same port and data) and waits until it accepts connections.
    pub async fn restart(&self) -> Result<()> {
        match self {
            SourceServer::Postgres(s) => s.restart().await,
            SourceServer::MariaDb(s) => s.restart().await,
            SourceServer::Secantus(s) => s.restart().await,
        }
        .map_err(kit("restarting the server"))
    }

    /// SIGSTOP of the server and all its processes.
    pub async fn pause(&self) -> Result<()> {
        match self {
            SourceServer::Postgres(s) => s.pause().await,
            SourceServer::MariaDb(s) => s.pause().await,
            SourceServer::Secantus(s) => s.pause().await,
        }
        .map_err(kit("pausing the server"))
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub async fn resume(&self) -> Result<()> {
        match self {
            SourceServer::Postgres(s) => s.resume().await,
            SourceServer::MariaDb(s) => s.resume().await,
            SourceServer::Secantus(s) => s.resume().await,
        }
        .map_err(kit("resuming the server"))
    }

    /// Whether the server process is alive.
    pub async fn is_running(&self) -> bool {
        match self {
            SourceServer::Postgres(s) => s.is_running().await,
            SourceServer::MariaDb(s) => s.is_running().await,
            SourceServer::Secantus(s) => s.is_running().await,
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        match self {
            SourceServer::Postgres(s) => s.log_tail(lines),
            SourceServer::MariaDb(s) => s.log_tail(lines),
            SourceServer::Secantus(s) => s.log_tail(lines),
        }
    }
}
