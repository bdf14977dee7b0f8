//! The binlog reader: one replication connection, events → change events, reconnects.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use mysql_async::binlog::events::{Event, EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use mysql_common::packets::{GnoInterval, Sid};
use powersync_source_core::position::{BinlogPosition, GtidState};
use powersync_source_core::{
    AckReceiver, Begin, ChangeEvent, Checkpoint, Commit, OldImage, Op, Position, RetryPolicy, Row,
    RowChange, SourceError, TableName, Truncate, UnixMicros, Value,
};

use crate::catalog::{self, TableInfo};
use crate::config::MySqlConfig;
use crate::connection::{connect, connect_to, literal, sql_error};
use crate::ddl::{classify, Ddl};
use crate::emit::{Closed, Emitter};
use crate::gtid::{MariaPos, MySqlGtidSet};
use crate::row_image::{self, ColumnFormat};
use crate::server::{Flavour, ServerInfo};
use crate::snapshot::{self, Stop};
use crate::values::convert_binlog;
use crate::{mariadb_events as maria, payload};

/// Which tables are in scope.
#[derive(Debug, Clone)]
pub(crate) enum Selection {
    /// Every base table of a database (except the checkpoint table).
    Database(String),
    /// These tables.
    List(HashSet<(String, String)>),
}

impl Selection {
    fn wants(&self, db: &str, table: &str, checkpoint: &(String, String)) -> bool {
        match self {
            Selection::Database(d) => d == db && !(checkpoint.0 == db && checkpoint.1 == table),
            Selection::List(set) => set.contains(&(db.to_owned(), table.to_owned())),
        }
    }
}

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
    Ignored,
}

pub(crate) struct Replicator {
    pub config: MySqlConfig,
    pub info: ServerInfo,
    pub selection: Selection,
    pub tables: HashMap<(String, String), Arc<TableInfo>>,
    pub retry: RetryPolicy,
    pub acks: AckReceiver,
    pub out: Emitter,
    /// Last emitted transaction boundary.
    pub pos: BinlogPosition,
    checkpoint_table: (String, String),
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
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

enum Outcome {
    Closed,
    Failed(SourceError),
}

impl From<Closed> for Outcome {
    fn from(_: Closed) -> Self {
        Outcome::Closed
    }
}

impl From<SourceError> for Outcome {
    fn from(e: SourceError) -> Self {
        Outcome::Failed(e)
    }
}

impl From<Stop> for Outcome {
    fn from(s: Stop) -> Self {
        match s {
            Stop::Closed => Outcome::Closed,
            Stop::Failed(e) => Outcome::Failed(e),
        }
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
        retry: RetryPolicy,
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
        Replicator {
            file: pos.file_name(),
            tables: tables
                .into_iter()
                .map(|t| ((t.name().schema.clone(), t.name().name.clone()), t))
                .collect(),
            config,
            info,
            selection,
            retry,
            acks,
            out,
            pos,
            checkpoint_table,
            maria,
            mysql,
            table_ids: HashMap::new(),
            sql: None,
            in_txn: false,
            begun: false,
            txn_gtid: None,
            txn_time: None,
            last_keepalive: Instant::now(),
            pending_payload: 0,
            inside_payload: false,
            announce: false,
            payload_end: 0,
            formats: HashMap::new(),
        }
    }

    /// Streams until the host drops the stream or a permanent error.
    pub async fn run(mut self, announce_schemas: bool) {
        self.announce = announce_schemas;
        let mut backoff = self.retry.backoff();
        loop {
            let err = match self.stream_once(&mut backoff).await {
                Ok(()) => SourceError::connection("the server ended the binlog stream"),
                Err(Outcome::Closed) => return,
                Err(Outcome::Failed(e)) => e,
            };
            // Drop the open transaction: after the reconnect it comes again from its GTID.
            if self.begun && self.out.push(ChangeEvent::Abort).await.is_err() {
                return;
            }
            self.reset_txn();
            self.table_ids.clear();
            self.formats.clear();
            self.sql = None;
            if !err.is_retryable() {
                self.out.fail(err).await;
                return;
            }
            if self.out.flush().await.is_err() {
                return;
            }
            match backoff.next_delay(&err) {
                Some(d) => {
                    tracing::warn!(error = %err, delay = ?d, "binlog stream interrupted; reconnecting");
                    tokio::time::sleep(d).await;
                    self.out.stats.record_reconnect();
                }
                None => {
                    self.out.fail(err).await;
                    return;
                }
            }
        }
    }

    fn reset_txn(&mut self) {
        self.in_txn = false;
        self.begun = false;
        self.txn_gtid = None;
        self.txn_time = None;
        self.pending_payload = 0;
        self.file = self.pos.file_name();
        // GTID state back to the last boundary.
        match &self.pos.gtid {
            GtidState::MariaDb(g) => self.maria = MariaPos::parse(g).unwrap_or_default(),
            GtidState::MySql(g) => self.mysql = MySqlGtidSet::parse(g).unwrap_or_default(),
            GtidState::None => {}
        }
    }

    async fn open(&self) -> Result<BinlogStream, SourceError> {
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

    async fn stream_once(
        &mut self,
        backoff: &mut powersync_source_core::Backoff,
    ) -> Result<(), Outcome> {
        let mut stream = self.open().await?;
        let mut healthy = false;
        loop {
            let next = match stream.next().now_or_never() {
                Some(x) => x,
                None => {
                    self.out.flush().await?;
                    match tokio::time::timeout(self.config.silence_timeout, stream.next()).await {
                        Ok(x) => x,
                        Err(_) => {
                            return Err(SourceError::connection(format!(
                                "the binlog connection was silent for {:?} (heartbeat {:?})",
                                self.config.silence_timeout, self.config.heartbeat
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
                *backoff = self.retry.backoff();
            }
            if std::mem::take(&mut self.announce) {
                let schemas: Vec<_> = self.tables.values().map(|t| t.schema.clone()).collect();
                for s in schemas {
                    self.out.push(ChangeEvent::Schema(s)).await?;
                }
            }
            self.out.stats.add_bytes(event.header().event_size() as u64);
            self.handle(&stream, event).await?;
        }
    }

    async fn handle(&mut self, stream: &BinlogStream, event: Event) -> Result<(), Outcome> {
        let header = event.header();
        let raw_type = header.event_type_raw();
        let log_pos = header.log_pos() as u64;
        let time = UnixMicros(header.timestamp() as i64 * 1_000_000);
        match raw_type {
            maria::GTID => {
                let g = maria::gtid(event.data())
                    .map_err(|e| SourceError::decode(format!("MariaDB GTID event: {e}")))?;
                self.txn_gtid = Some(TxnGtid::Maria {
                    domain: g.domain,
                    server: header.server_id(),
                    seq: g.seq,
                });
                self.txn_time = Some(time);
                // A standalone group (DDL) has no BEGIN: the next query event is the group.
                self.in_txn = !g.standalone();
                return Ok(());
            }
            maria::GTID_LIST | maria::BINLOG_CHECKPOINT | maria::ANNOTATE_ROWS => return Ok(()),
            maria::START_ENCRYPTION => return Err(SourceError::unsupported(
                "the binlog is encrypted (encrypt_binlog=ON); a replication client cannot read it",
            )
            .into()),
            payload::TRANSACTION_PAYLOAD => {
                let n = payload::check(&event).map_err(SourceError::decode)?;
                self.pending_payload = n;
                self.payload_end = log_pos;
                return Ok(());
            }
            _ => {}
        }
        self.inside_payload = self.pending_payload > 0;
        self.pending_payload = self.pending_payload.saturating_sub(1);
        let data = match event.read_data() {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(SourceError::decode(format!(
                    "binlog event type {raw_type} at {}:{log_pos}: {e}",
                    self.file
                ))
                .into())
            }
        };
        match data {
            EventData::RotateEvent(r) => {
                if let Some(name) = rotate_name(r.name_raw()) {
                    self.file = name;
                }
            }
            EventData::GtidEvent(g) => {
                self.txn_gtid = Some(TxnGtid::MySql {
                    uuid: g.sid(),
                    gno: g.gno(),
                });
                self.txn_time = Some(time);
            }
            EventData::QueryEvent(q) => {
                let sql = q.query().into_owned();
                let trimmed = sql.trim();
                if trimmed.eq_ignore_ascii_case("BEGIN")
                    || trimmed.to_ascii_uppercase().starts_with("XA START")
                {
                    self.in_txn = true;
                    self.txn_time.get_or_insert(time);
                } else if trimmed.eq_ignore_ascii_case("COMMIT") {
                    self.commit(log_pos, time).await?;
                } else if trimmed.eq_ignore_ascii_case("ROLLBACK") {
                    // Non-transactional statements in a rolled-back group: the group still
                    // ends here.
                    self.commit(log_pos, time).await?;
                } else {
                    let db = q.schema().into_owned();
                    self.ddl(&sql, &db).await?;
                    if !self.in_txn {
                        self.commit(log_pos, time).await?;
                    }
                }
            }
            EventData::XidEvent(_) => self.commit(log_pos, time).await?,
            EventData::TableMapEvent(tme) => {
                let db = tme.database_name().into_owned();
                let table = tme.table_name().into_owned();
                let mapped = if (db.as_str(), table.as_str())
                    == (
                        self.checkpoint_table.0.as_str(),
                        self.checkpoint_table.1.as_str(),
                    ) {
                    Mapped::Checkpoints
                } else {
                    match self.tables.get(&(db.clone(), table.clone())).cloned() {
                        Some(t) if t.columns.len() as u64 == tme.columns_count() => {
                            Mapped::Table(t)
                        }
                        Some(_) => {
                            // The table changed since we read its schema: read it again.
                            let t = self.reload(&db, &table).await?;
                            match t {
                                Some(t) if t.columns.len() as u64 == tme.columns_count() => Mapped::Table(t),
                                _ => {
                                    return Err(SourceError::schema(format!(
                                        "table {db}.{table}: the binlog has {} columns, the table now has a different number; the stream cannot decode these rows",
                                        tme.columns_count()
                                    ))
                                    .with_hint("resnapshot the table (start from the beginning)")
                                    .into())
                                }
                            }
                        }
                        None => Mapped::Ignored,
                    }
                };
                self.formats.remove(&tme.table_id());
                self.table_ids.insert(tme.table_id(), mapped);
            }
            EventData::RowsEvent(rows) => self.rows(stream, &rows, time).await?,
            EventData::HeartbeatEvent if !self.in_txn && log_pos > 0 => {
                self.heartbeat(log_pos).await?;
            }
            EventData::IncidentEvent(i) => {
                return Err(SourceError::history_lost(format!(
                    "the binlog records an incident ({}): the server may have lost changes",
                    i.message()
                ))
                .with_hint("resnapshot (start from the beginning)")
                .into())
            }
            _ => {}
        }
        Ok(())
    }

    async fn ensure_begin(&mut self, time: UnixMicros) -> Result<(), Closed> {
        if !self.begun {
            self.begun = true;
            self.out
                .push(ChangeEvent::Begin(Begin {
                    xid: None,
                    commit_time: Some(self.txn_time.unwrap_or(time)),
                }))
                .await?;
        }
        Ok(())
    }

    fn apply_gtid(&mut self) {
        match self.txn_gtid.take() {
            Some(TxnGtid::Maria {
                domain,
                server,
                seq,
            }) => self.maria.apply(domain, server, seq),
            Some(TxnGtid::MySql { uuid, gno }) => self.mysql.add(uuid, gno),
            None => {}
        }
    }

    fn gtid_state(&self) -> GtidState {
        match self.info.flavour {
            Flavour::MariaDb if !self.maria.is_empty() => {
                GtidState::MariaDb(self.maria.to_string())
            }
            Flavour::MySql if self.mysql != MySqlGtidSet::default() => {
                GtidState::MySql(self.mysql.to_string())
            }
            _ => self.pos.gtid.clone(),
        }
    }

    async fn commit(&mut self, log_pos: u64, time: UnixMicros) -> Result<(), Outcome> {
        self.apply_gtid();
        let end = match log_pos {
            _ if self.inside_payload => self.payload_end,
            0 => self.pos.offset,
            p => p,
        };
        self.pos = crate::server::position(&self.file, end, self.gtid_state())?;
        let checkpoint = self.pos.to_checkpoint();
        if self.begun {
            let commit_time = self.txn_time.unwrap_or(time);
            self.out
                .push(ChangeEvent::Commit(Commit {
                    checkpoint,
                    commit_time: Some(commit_time),
                }))
                .await?;
            self.out.stats.record_commit(Some(commit_time));
            self.last_keepalive = Instant::now();
        } else if self.last_keepalive.elapsed() >= Duration::from_millis(500) {
            self.out.push(ChangeEvent::Keepalive(checkpoint)).await?;
            self.last_keepalive = Instant::now();
        }
        self.update_lag(log_pos);
        self.in_txn = false;
        self.begun = false;
        self.txn_time = None;
        Ok(())
    }

    async fn heartbeat(&mut self, log_pos: u64) -> Result<(), Outcome> {
        if log_pos > self.pos.offset && self.pos.file_name() == self.file {
            self.pos.offset = log_pos;
        }
        self.out.stats.record_idle();
        self.update_lag(log_pos);
        self.out
            .push(ChangeEvent::Keepalive(self.pos.to_checkpoint()))
            .await?;
        self.last_keepalive = Instant::now();
        self.out.flush().await?;
        Ok(())
    }

    /// Bytes between the server's position (the last event's end) and the acknowledged
    /// position, within the current binlog file (a file switch counts from the file start).
    fn update_lag(&self, head: u64) {
        let acked = self
            .acks
            .latest()
            .and_then(|c| BinlogPosition::from_checkpoint(&c).ok());
        let lag = match acked {
            Some(a) if a.file_name() == self.file => head.saturating_sub(a.offset),
            Some(_) => head,
            None => head.saturating_sub(self.pos.offset.min(head)),
        };
        self.out.stats.set_lag_bytes(lag);
    }

    async fn rows(
        &mut self,
        stream: &BinlogStream,
        rows: &RowsEventData<'_>,
        time: UnixMicros,
    ) -> Result<(), Outcome> {
        let mapped = self.table_ids.get(&rows.table_id()).cloned();
        let Some(tme) = stream.get_tme(rows.table_id()) else {
            return Err(SourceError::decode(format!(
                "rows event for table id {} without a table map",
                rows.table_id()
            ))
            .into());
        };
        let (op, has_before, has_after) = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => {
                (Op::Insert, false, true)
            }
            RowsEventData::UpdateRowsEventV1(_)
            | RowsEventData::UpdateRowsEvent(_)
            | RowsEventData::PartialUpdateRowsEvent(_) => (Op::Update, true, true),
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
                (Op::Delete, true, false)
            }
        };
        match mapped {
            None | Some(Mapped::Ignored) => Ok(()),
            Some(Mapped::Checkpoints) => {
                for r in rows.rows(tme) {
                    let (_, after) =
                        r.map_err(|e| SourceError::decode(format!("checkpoint table row: {e}")))?;
                    let marker = after.and_then(|a| {
                        a.unwrap().into_iter().nth(1).and_then(|v| match v {
                            mysql_common::binlog::value::BinlogValue::Value(
                                mysql_common::value::Value::Bytes(b),
                            ) => String::from_utf8(b).ok(),
                            _ => None,
                        })
                    });
                    if let Some(c) = marker.and_then(|m| Checkpoint::parse(&m).ok()) {
                        self.out.push(ChangeEvent::CheckpointObserved(c)).await?;
                    }
                }
                Ok(())
            }
            Some(Mapped::Table(table)) => {
                let before_bits: Option<Vec<bool>> = rows
                    .columns_before_image()
                    .filter(|_| has_before)
                    .map(|b| b.iter().map(|x| *x).collect());
                let after_bits: Option<Vec<bool>> = rows
                    .columns_after_image()
                    .filter(|_| has_after)
                    .map(|b| b.iter().map(|x| *x).collect());
                let decoded = if let RowsEventData::PartialUpdateRowsEvent(_) = rows {
                    // Partial JSON diffs need mysql_common's shared-image handling (and are
                    // refused when they reach a JSON column).
                    let mut v = Vec::new();
                    for r in rows.rows(tme) {
                        let (before, after) = r.map_err(|e| {
                            SourceError::decode(format!("rows event of {}: {e}", table.name()))
                        })?;
                        let old = match before {
                            Some(b) => Some(image(&table, b, before_bits.as_deref())?),
                            None => None,
                        };
                        let new = match after {
                            Some(a) => Some(image(&table, a, after_bits.as_deref())?),
                            None => None,
                        };
                        v.push((old, new));
                    }
                    v
                } else {
                    let formats = self.formats(tme, &table)?;
                    row_image::decode(
                        rows.rows_data(),
                        &formats,
                        before_bits.as_deref(),
                        after_bits.as_deref(),
                        &table,
                    )?
                };
                let mut changes = Vec::with_capacity(decoded.len());
                for (old, new) in decoded {
                    let old_image = match &old {
                        None => OldImage::None,
                        Some(o) if o.values().iter().any(Value::is_unchanged) => OldImage::Key,
                        Some(_) => OldImage::Full,
                    };
                    changes.push(RowChange {
                        op,
                        table: table.schema.clone(),
                        old,
                        old_image,
                        new,
                        snapshot: false,
                    });
                }
                self.ensure_begin(time).await?;
                for c in changes {
                    self.out.push(ChangeEvent::Row(c)).await?;
                }
                Ok(())
            }
        }
    }

    /// The storage formats of a mapped table's columns (cached per table id).
    fn formats(
        &mut self,
        tme: &mysql_common::binlog::events::TableMapEvent<'_>,
        table: &TableInfo,
    ) -> Result<Arc<[ColumnFormat]>, SourceError> {
        if let Some(f) = self.formats.get(&tme.table_id()) {
            return Ok(f.clone());
        }
        let n = tme.columns_count() as usize;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let ty = tme
                .get_column_type(i)
                .map_err(|e| SourceError::decode(format!("table map of {}: {e}", table.name())))?
                .ok_or_else(|| {
                    SourceError::decode(format!(
                        "table map of {}: no type for column {i}",
                        table.name()
                    ))
                })?;
            let meta = tme.get_column_metadata(i).unwrap_or(&[]);
            out.push(ColumnFormat::new(ty, meta).map_err(|e| {
                SourceError::decode(format!("table map of {}: column {i}: {e}", table.name()))
            })?);
        }
        let f: Arc<[ColumnFormat]> = out.into();
        self.formats.insert(tme.table_id(), f.clone());
        Ok(f)
    }

    async fn sql_conn(&mut self) -> Result<&mut Conn, SourceError> {
        if self.sql.is_none() {
            self.sql = Some(connect(&self.config).await?);
        }
        self.sql
            .as_mut()
            .ok_or_else(|| SourceError::connection("no SQL connection"))
    }

    async fn reload(
        &mut self,
        db: &str,
        table: &str,
    ) -> Result<Option<Arc<TableInfo>>, SourceError> {
        let name = TableName::new(db, table);
        let conn = self.sql_conn().await?;
        let info = catalog::table_info(conn, &name).await?.map(Arc::new);
        match &info {
            Some(t) => {
                self.tables
                    .insert((db.to_owned(), table.to_owned()), t.clone());
                self.out
                    .push(ChangeEvent::Schema(t.schema.clone()))
                    .await
                    .map_err(|_| SourceError::connection("stream closed"))?;
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

    async fn ddl(&mut self, sql: &str, default_db: &str) -> Result<(), Outcome> {
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
                        // The table arrives with rows: read them now (see the crate docs on
                        // tables entering the scope).
                        if let Some(t) = self.reload(&to.0, &to.1).await? {
                            self.ensure_begin(time).await?;
                            let chunk = self.config.chunk_rows;
                            let mut conn = connect(&self.config).await?;
                            snapshot::read_table_now(&mut conn, &t, chunk, &mut self.out).await?;
                        }
                    }
                }
            }
            Ddl::Create(name) => {
                let name = resolve(name);
                if self
                    .selection
                    .wants(&name.0, &name.1, &self.checkpoint_table)
                {
                    self.reload(&name.0, &name.1).await?;
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

/// The file name of a rotate event. The artificial rotate a server sends before the format
/// description event may still carry a 4-byte checksum the reader does not know about yet:
/// drop it when the name does not end in the binlog index otherwise.
fn rotate_name(raw: &[u8]) -> Option<String> {
    let valid = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .filter(|s| BinlogPosition::split_file_name(s).is_some())
            .map(str::to_owned)
    };
    valid(raw).or_else(|| raw.len().checked_sub(4).and_then(|n| valid(&raw[..n])))
}

/// A row image in schema column order; columns missing from the image are `Unchanged`.
fn image(
    table: &TableInfo,
    row: mysql_common::binlog::row::BinlogRow,
    present: Option<&[bool]>,
) -> Result<Row, SourceError> {
    let mut values = row.unwrap().into_iter();
    let mut out = Vec::with_capacity(table.columns.len());
    for (i, col) in table.columns.iter().enumerate() {
        let here = present
            .map(|p| p.get(i).copied().unwrap_or(false))
            .unwrap_or(true);
        if !here {
            out.push(Value::Unchanged);
            continue;
        }
        match values.next() {
            Some(v) => out.push(convert_binlog(v, col, table.name())?),
            None => out.push(Value::Unchanged),
        }
    }
    Ok(Row::new(out))
}
