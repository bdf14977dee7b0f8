//! The binlog reader: one replication connection at a time, binlog events → change events,
//! reconnects on the core runtime's [`Reconnect`] (one retry budget per outage).
//!
//! - `open`: the binlog dump request per flavour (MariaDB GTID position, MySQL GTID set, or
//!   file and offset).
//! - `events`: one event at a time: transaction framing, commits, heartbeats, GTIDs.
//! - `rows`: rows events → row changes (images decoded by [`crate::row_image`]).
//! - `ddl`: what a DDL statement does to the stream (the classifier is [`crate::ddl`]).

mod ddl;
mod events;
mod open;
mod rows;

pub(crate) use rows::change as row_change;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use mysql_async::Conn;
use powersync_source_core::position::{BinlogPosition, GtidState};
use powersync_source_core::runtime::{Emitter, Reconnect, Step, Stop};
use powersync_source_core::{AckReceiver, ChangeEvent, RetryPolicy, SourceError, UnixMicros};

use crate::catalog::TableInfo;
use crate::config::MySqlConfig;
use crate::connection::sql_error;
use crate::gtid::{MariaPos, MySqlGtidSet};
use crate::row_image::ColumnFormat;
use crate::server::{Flavour, ServerInfo};

/// Which tables are in scope.
#[derive(Debug, Clone)]
pub(crate) enum Selection {
    /// Every base table of these databases (except the checkpoint table).
    Databases(Vec<String>),
    /// These tables.
    List(HashSet<(String, String)>),
}

impl Selection {
    /// Whether `db.table` is replicated; the connector's own tables (checkpoints, signals)
    /// never are.
    pub(crate) fn wants(&self, db: &str, table: &str, checkpoint: &(String, String)) -> bool {
        if crate::markers::is_internal(db, table, checkpoint) {
            return false;
        }
        match self {
            Selection::Databases(dbs) => dbs.iter().any(|d| d == db),
            Selection::List(set) => set.contains(&(db.to_owned(), table.to_owned())),
        }
    }
}

/// The GTID of the transaction being read, applied to the GTID state at its commit.
#[derive(Debug, Clone, Copy)]
enum TxnGtid {
    Maria { domain: u32, server: u32, seq: u64 },
    MySql { uuid: [u8; 16], gno: u64 },
}

/// What the table id of a table map refers to.
#[derive(Debug, Clone)]
enum Mapped {
    Table(Arc<TableInfo>),
    Checkpoints,
    /// The backfill signal table (read even when the selection does not name it).
    Signals,
    Ignored,
}

/// Stream settings the replicator needs from [`powersync_source_core::StreamOptions`] and the
/// URL, resolved once by the source.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub retry: RetryPolicy,
    pub silence_timeout: Duration,
}

pub(crate) struct Replicator {
    config: MySqlConfig,
    info: ServerInfo,
    selection: Selection,
    tables: HashMap<(String, String), Arc<TableInfo>>,
    settings: Settings,
    acks: AckReceiver,
    out: Emitter,
    /// Last emitted transaction boundary.
    pos: BinlogPosition,
    checkpoint_table: (String, String),
    /// The backfill signal table, next to the checkpoint table.
    signal_table: (String, String),
    maria: MariaPos,
    mysql: MySqlGtidSet,
    file: String,
    table_ids: HashMap<u64, Mapped>,
    sql: Option<Conn>,
    // Transaction state.
    in_txn: bool,
    begun: bool,
    txn_gtid: Option<TxnGtid>,
    txn_time: Option<UnixMicros>,
    /// The transaction held something the backfill machinery acts on at its end (a
    /// watermark, a signal, a table entering the scope): it ends with a keepalive even when
    /// the host saw none of its rows.
    boundary_due: bool,
    /// The transaction held a backfill watermark (a chunk may go out at its end).
    watermark_passed: bool,
    /// Tables whose shape the stream read again (DDL) since the last watermark boundary: a
    /// chunk emitted at the next one may carry the shape its read saw, older than the
    /// stream's, so their current schema follows it.
    reshaped: HashSet<(String, String)>,
    last_keepalive: Instant,
    /// Events still to come from inside the last transaction payload event (MySQL 8
    /// compression); they carry no binlog position of their own.
    pending_payload: usize,
    /// Whether the event being handled came from inside a transaction payload.
    inside_payload: bool,
    /// Schema events still to send once the server accepted the resume position.
    announce: bool,
    /// End position of the last transaction payload event: the events inside it carry no
    /// position of their own.
    payload_end: u64,
    /// Column storage formats per table id.
    formats: HashMap<u64, Arc<[ColumnFormat]>>,
    /// The last acknowledged checkpoint and its position (parsed once per acknowledgement).
    acked: Option<(powersync_source_core::Checkpoint, BinlogPosition)>,
    /// Where the binlog retention watch measures from: the last emitted boundary.
    position_feed: Option<tokio::sync::watch::Sender<crate::retention::FilePosition>>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

/// Checks that a start position can be used on this server (flavour, GTID text).
pub(crate) fn validate_start(pos: &BinlogPosition, info: &ServerInfo) -> Result<(), SourceError> {
    match (&pos.gtid, info.flavour) {
        (GtidState::MariaDb(_), Flavour::MySql) | (GtidState::MySql(_), Flavour::MariaDb) => {
            return Err(SourceError::config(
                "the checkpoint was made on a server of the other flavour (MySQL vs MariaDB)",
            ))
        }
        (GtidState::MariaDb(g), _) => {
            MariaPos::parse(g).map_err(|e| SourceError::config(format!("checkpoint GTID: {e}")))?;
        }
        (GtidState::MySql(g), _) => {
            MySqlGtidSet::parse(g)
                .map_err(|e| SourceError::config(format!("checkpoint GTID: {e}")))?;
        }
        (GtidState::None, _) => {}
    }
    Ok(())
}

impl Replicator {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: MySqlConfig,
        info: ServerInfo,
        selection: Selection,
        tables: Vec<Arc<TableInfo>>,
        settings: Settings,
        acks: AckReceiver,
        out: Emitter,
        pos: BinlogPosition,
    ) -> Self {
        let (maria, mysql) = match &pos.gtid {
            GtidState::MariaDb(g) => (
                MariaPos::parse(g).unwrap_or_default(),
                MySqlGtidSet::default(),
            ),
            GtidState::MySql(g) => (
                MariaPos::default(),
                MySqlGtidSet::parse(g).unwrap_or_default(),
            ),
            GtidState::None => Default::default(),
        };
        let checkpoint_table = config.checkpoint_table();
        let signal_table = crate::markers::signal_table(&checkpoint_table);
        Replicator {
            file: pos.file_name(),
            tables: tables
                .into_iter()
                .map(|t| ((t.name().schema.clone(), t.name().name.clone()), t))
                .collect(),
            config,
            info,
            selection,
            settings,
            acks,
            out,
            pos,
            checkpoint_table,
            signal_table,
            maria,
            mysql,
            table_ids: HashMap::new(),
            sql: None,
            in_txn: false,
            begun: false,
            txn_gtid: None,
            txn_time: None,
            boundary_due: false,
            watermark_passed: false,
            reshaped: HashSet::new(),
            last_keepalive: Instant::now(),
            pending_payload: 0,
            inside_payload: false,
            announce: false,
            payload_end: 0,
            formats: HashMap::new(),
            acked: None,
            position_feed: None,
        }
    }

    /// Publishes each new boundary to `feed` (the binlog retention watch's position).
    pub fn with_position_feed(
        mut self,
        feed: tokio::sync::watch::Sender<crate::retention::FilePosition>,
    ) -> Self {
        self.position_feed = Some(feed);
        self
    }

    /// Streams until the host drops the stream (`Ok`) or a failure that is not retried
    /// (already sent to the host). `announce_schemas`: send every table's schema once the
    /// server accepted the start position (a resumed stream has had no snapshot to send them).
    pub async fn run(mut self, announce_schemas: bool) -> Step<()> {
        self.announce = announce_schemas;
        let mut reconnect = Reconnect::new(self.settings.retry.clone());
        let result = loop {
            let err = match self.stream_once(&mut reconnect).await {
                Ok(()) => SourceError::connection("the server ended the binlog stream"),
                Err(Stop::Closed) => break Err(Stop::Closed),
                Err(Stop::Failed(e)) => e,
            };
            // Drop the open transaction: after the reconnect it comes again from its GTID.
            if let Err(stop) = self.out.abort_open_transaction().await {
                break Err(stop);
            }
            self.reset_txn();
            self.table_ids.clear();
            self.formats.clear();
            self.sql = None;
            if let Err(stop) = reconnect.after_failure(err, &mut self.out).await {
                break Err(stop);
            }
        };
        match result {
            Err(Stop::Failed(e)) => {
                self.out.fail(e).await;
                Ok(())
            }
            other => other,
        }
    }

    fn reset_txn(&mut self) {
        self.in_txn = false;
        self.begun = false;
        self.txn_gtid = None;
        self.txn_time = None;
        self.boundary_due = false;
        self.watermark_passed = false;
        self.pending_payload = 0;
        self.file = self.pos.file_name();
        // GTID state back to the last boundary.
        match &self.pos.gtid {
            GtidState::MariaDb(g) => self.maria = MariaPos::parse(g).unwrap_or_default(),
            GtidState::MySql(g) => self.mysql = MySqlGtidSet::parse(g).unwrap_or_default(),
            GtidState::None => {}
        }
    }

    /// One binlog connection: reads until it fails or the host goes away.
    async fn stream_once(&mut self, reconnect: &mut Reconnect) -> Step<()> {
        let mut stream = self.open().await?;
        let mut healthy = false;
        loop {
            let next = match stream.next().now_or_never() {
                Some(x) => x,
                None => {
                    // Nothing buffered: hand the host what is collected before waiting.
                    self.out.flush().await?;
                    match tokio::time::timeout(self.settings.silence_timeout, stream.next()).await {
                        Ok(x) => x,
                        Err(_) => {
                            return Err(SourceError::connection(format!(
                                "the binlog connection was silent for {:?} (heartbeat {:?})",
                                self.settings.silence_timeout, self.config.heartbeat
                            ))
                            .into())
                        }
                    }
                }
            };
            let event = match next {
                None => return Ok(()),
                Some(Err(e)) => return Err(sql_error(e, "reading the binlog").into()),
                Some(Ok(ev)) => ev,
            };
            if !healthy {
                healthy = true;
                reconnect.healthy();
            }
            if std::mem::take(&mut self.announce) {
                let schemas: Vec<_> = self.tables.values().map(|t| t.schema.clone()).collect();
                for s in schemas {
                    self.out.push(ChangeEvent::Schema(s)).await?;
                }
            }
            self.out
                .stats()
                .add_bytes(event.header().event_size() as u64);
            self.handle(&stream, event).await?;
        }
    }
}
