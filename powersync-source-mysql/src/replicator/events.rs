//! One binlog event at a time: transaction framing (GTID, BEGIN, XID/COMMIT), commits and
//! their checkpoints, heartbeats and keepalives, table maps.

use std::time::{Duration, Instant};

use mysql_async::binlog::events::{Event, EventData};
use mysql_async::BinlogStream;
use powersync_source_core::position::{BinlogPosition, GtidState};
use powersync_source_core::runtime::Step;
use powersync_source_core::{Begin, ChangeEvent, Commit, Position, SourceError, UnixMicros};

use super::{Mapped, Replicator, TxnGtid};
use crate::gtid::MySqlGtidSet;
use crate::server::Flavour;
use crate::{mariadb_events as maria, payload};

impl Replicator {
    pub(super) async fn handle(&mut self, stream: &BinlogStream, event: Event) -> Step<()> {
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
                    "binlog event type {raw_type} at {}:{log_pos}",
                    self.file
                ))
                .with_source(e)
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
                let this = (db.as_str(), table.as_str());
                let mapped = if this
                    == (
                        self.checkpoint_table.0.as_str(),
                        self.checkpoint_table.1.as_str(),
                    ) {
                    Mapped::Checkpoints
                } else if this == (self.signal_table.0.as_str(), self.signal_table.1.as_str()) {
                    Mapped::Signals
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

    /// Emits the transaction's `Begin` before its first event for the host.
    pub(super) async fn ensure_begin(&mut self, time: UnixMicros) -> Step<()> {
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

    /// The end of an event group: a `Commit` when the host saw its `Begin`, otherwise a
    /// keepalive (at most every 500 ms, so the position still advances; always after a
    /// watermark, a signal or a table entering the scope).
    async fn commit(&mut self, log_pos: u64, time: UnixMicros) -> Step<()> {
        self.apply_gtid();
        let end = match log_pos {
            _ if self.inside_payload => self.payload_end,
            0 => self.pos.offset,
            p => p,
        };
        // The position stays a typed value: within the same binlog file only its offset and
        // GTID state change (the file name is parsed again only after a rotation).
        let gtid = self.gtid_state();
        if self.in_pos_file(&self.file) {
            self.pos.offset = end;
            self.pos.gtid = gtid;
        } else {
            self.pos = crate::server::position(&self.file, end, gtid)?;
        }
        let checkpoint = self.pos.to_checkpoint();
        if self.begun {
            let commit_time = self.txn_time.unwrap_or(time);
            self.out
                .push(ChangeEvent::Commit(Commit {
                    checkpoint,
                    commit_time: Some(commit_time),
                }))
                .await?;
            self.last_keepalive = Instant::now();
        } else if std::mem::take(&mut self.boundary_due)
            || self.last_keepalive.elapsed() >= Duration::from_millis(500)
        {
            // A transaction the backfill machinery acted on ends with a boundary even when
            // the host saw none of its rows: that is where its watermark or signal takes
            // effect (and where a chunk goes out).
            self.out.push(ChangeEvent::Keepalive(checkpoint)).await?;
            self.last_keepalive = Instant::now();
        }
        if std::mem::take(&mut self.watermark_passed) {
            self.reannounce().await?;
        }
        self.update_lag(log_pos);
        self.in_txn = false;
        self.begun = false;
        self.boundary_due = false;
        self.txn_time = None;
        Ok(())
    }

    /// After a watermark's boundary (where a backfill chunk goes out with the schema its read
    /// saw): the current schema of every table whose shape changed since the last such
    /// boundary, so the host's last schema of a table is always the stream's.
    async fn reannounce(&mut self) -> Step<()> {
        for key in std::mem::take(&mut self.reshaped) {
            if let Some(t) = self.tables.get(&key) {
                let schema = t.schema.clone();
                self.out.push(ChangeEvent::Schema(schema)).await?;
            }
        }
        Ok(())
    }

    async fn heartbeat(&mut self, log_pos: u64) -> Step<()> {
        if log_pos > self.pos.offset && self.in_pos_file(&self.file) {
            self.pos.offset = log_pos;
        }
        self.out.stats().record_idle();
        self.update_lag(log_pos);
        self.out
            .push(ChangeEvent::Keepalive(self.pos.to_checkpoint()))
            .await?;
        self.last_keepalive = Instant::now();
        self.out.flush().await?;
        Ok(())
    }

    /// Bytes between the server's position (the last event's end) and the acknowledged
    /// position, within the current binlog file (a file switch counts from the file start);
    /// and the new boundary to the binlog retention watch.
    fn update_lag(&mut self, head: u64) {
        // The acknowledged checkpoint is parsed once per acknowledgement, not per commit.
        let latest = self.acks.latest();
        if latest.as_ref() != self.acked.as_ref().map(|(c, _)| c) {
            self.acked = latest.and_then(|c| {
                let p = BinlogPosition::from_checkpoint(&c).ok()?;
                Some((c, p))
            });
        }
        let lag = match &self.acked {
            Some((_, a)) if same_file(a, &self.file) => head.saturating_sub(a.offset),
            Some(_) => head,
            None => head.saturating_sub(self.pos.offset.min(head)),
        };
        self.out.stats().set_lag_bytes(lag);
        if let Some(feed) = &self.position_feed {
            // The file name is formatted only when the boundary is in another file than the
            // one being read (after a rotation without a commit since), and stored only when
            // it changed.
            let formatted;
            let file: &str = if self.in_pos_file(&self.file) {
                &self.file
            } else {
                formatted = self.pos.file_name();
                &formatted
            };
            let offset = self.pos.offset;
            feed.send_if_modified(|p| {
                let mut changed = false;
                if p.0 != file {
                    p.0 = file.to_owned();
                    changed = true;
                }
                if p.1 != offset {
                    p.1 = offset;
                    changed = true;
                }
                changed
            });
        }
    }
}

/// Whether `file` (a binlog file name) is the file of `pos`, without formatting its name.
fn same_file(pos: &BinlogPosition, file: &str) -> bool {
    BinlogPosition::split_file_name(file)
        .is_some_and(|(base, index)| base == pos.basename && index == pos.file_index)
}

impl Replicator {
    /// Whether `file` is the file of the last emitted boundary.
    fn in_pos_file(&self, file: &str) -> bool {
        same_file(&self.pos, file)
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
