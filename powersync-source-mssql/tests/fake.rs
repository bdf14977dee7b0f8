//! An in-memory model of SQL Server CDC, behind the connector's `CdcBackend` seam.
//!
//! What it models, as SQL Server documents it:
//! - LSNs: 10 bytes, compared as bytes; every transaction gets a begin LSN, one sequence value
//!   per change (`__$seqval`, increasing within the transaction) and a commit LSN
//!   (`__$start_lsn` of all its change rows), all from one increasing log counter;
//! - the capture job: committed transactions wait in the "log" until captured (`capture()`,
//!   or automatically unless paused); capture copies each change into every capture instance of
//!   the table that existed at commit time, with operations 1 delete, 2 insert, 3/4 update
//!   before/after (same seqval) and an update mask, and records the transaction in
//!   `lsn_time_mapping` with its commit time;
//! - capture instances: created with the table's column list at that moment and a start LSN;
//!   later columns are not captured, dropped columns read NULL; at most two per table;
//!   dropping a table drops its instances;
//! - cleanup: removes change rows and mapping entries below a low-water mark and moves each
//!   instance's min LSN there (`sys.fn_cdc_get_min_lsn`);
//! - `fn_cdc_get_all_changes` refuses a range starting below the min LSN or ending above the
//!   max LSN, as SQL Server does (error 313);
//! - snapshot isolation: `begin_snapshot` copies the committed table state; with a marker the
//!   copy and the marker's commit happen atomically, which is what the table locks guarantee
//!   on the server;
//! - faults: `kill` breaks every open connection and refuses new ones for a while; `fail_next`
//!   fails the next N change reads; a wrong password is a login failure.

#![allow(dead_code)]

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use powersync_source_core::position::MssqlLsn;
use powersync_source_core::{Result, SourceError, TableName, UnixMicros, Value};
use powersync_source_mssql::testing::{
    CaptureInstance, CaptureJob, CapturedColumn, CatalogStamp, CdcBackend, CdcConnector, ChangeKey,
    ChangeRow, CheckpointShape, LsnTime, Marker, Permissions, ServerInfo, SqlType,
    CHECKPOINT_TABLE,
};

/// One table of the model.
#[derive(Debug, Clone)]
pub struct FakeTable {
    pub object_id: i64,
    pub columns: Vec<(String, SqlType)>,
    pub key: Vec<String>,
    /// Computed columns (their values are whatever the test stores, as if computed).
    pub computed: Vec<String>,
    /// Key values → row values in `columns` order.
    pub rows: BTreeMap<KeyVals, Vec<Value>>,
}

/// Key values with a total order.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyVals(pub Vec<Value>);
impl Eq for KeyVals {}
impl PartialOrd for KeyVals {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for KeyVals {
    fn cmp(&self, other: &Self) -> Ordering {
        for (a, b) in self.0.iter().zip(&other.0) {
            let o = cmp_value(a, b);
            if o != Ordering::Equal {
                return o;
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

pub fn cmp_value(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::Text(x), Value::Text(y)) => x.cmp(y),
        (Value::Blob(x), Value::Blob(y)) => x.cmp(y),
        (Value::Real(x), Value::Real(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => format!("{a:?}").cmp(&format!("{b:?}")),
    }
}

#[derive(Debug, Clone)]
struct Instance {
    /// As created; `capture_instances` reports `in_source` from the live table.
    info: CaptureInstance,
    /// The LSN the instance was created at: it captures transactions committed after it. Not
    /// `info.start_lsn`, which cleanup moves.
    created_at: MssqlLsn,
    min_lsn: MssqlLsn,
    rows: Vec<ChangeRow>,
}

#[derive(Debug, Clone)]
enum Change {
    Insert(Vec<Value>),
    Update(Vec<Value>, Vec<Value>),
    Delete(Vec<Value>),
}

type Columns = Vec<(String, SqlType)>;

#[derive(Debug, Clone)]
struct LoggedTxn {
    commit: MssqlLsn,
    time: UnixMicros,
    /// (table, seqval, change, the table's columns at that moment).
    changes: Vec<(TableName, MssqlLsn, Change, Columns)>,
}

/// The whole server.
#[derive(Debug)]
pub struct State {
    counter: u64,
    next_object: i64,
    pub tables: BTreeMap<TableName, FakeTable>,
    instances: Vec<Instance>,
    lsn_time: Vec<(MssqlLsn, UnixMicros)>,
    log: Vec<LoggedTxn>,
    pub capture_paused: bool,
    pub cdc_enabled: bool,
    /// Published for transactional replication (the log reader captures; no capture job).
    pub published: bool,
    pub snapshot_isolation: bool,
    pub product_version: String,
    pub engine_edition: i32,
    pub permissions: Permissions,
    pub capture_job: Option<CaptureJob>,
    /// The database roles the connector's user is a member of (gating roles).
    pub user_roles: Vec<String>,
    /// Creation order of capture instances (`cdc.change_tables.create_date`).
    create_clock: i64,
    pub password: String,
    generation: u64,
    down_until: Option<Instant>,
    fail_changes: u32,
    /// Fail one change read after this many more successful ones.
    pub fail_after: Option<u32>,
    /// Break the connection on the snapshot chunk read after this many more.
    pub fail_snapshot_after: Option<u32>,
    /// Drop this capture instance right before the next change read (a DBA racing the poll).
    pub drop_before_next_read: Option<String>,
    /// Seconds subtracted from commit times (models a capture delay for lag tests).
    pub commit_age_secs: i64,
    /// Every `changes` call: (instance, from, to, after, limit).
    pub change_calls: Vec<(String, MssqlLsn, MssqlLsn, Option<ChangeKey>, u32)>,
    /// Delete rows carry NULL for NOT NULL bit columns, as real servers have been seen to do
    /// (Estuary PR 2796: "a pretty clear-cut violation of the documented CDC behavior").
    pub null_bits_in_deletes: bool,
    /// Snapshot starts whose table locks time out (error 1222) before one is granted.
    pub lock_timeouts: u32,
    /// The tables the last exact snapshot start locked.
    pub locked: Vec<TableName>,
    /// How many times the capture instances were listed.
    pub catalog_loads: u32,
    /// Every `lsn_window` call: (from, to, limit, rows returned).
    pub window_calls: Vec<(MssqlLsn, MssqlLsn, u32, usize)>,
}

/// Shared handle to the model.
#[derive(Debug, Clone)]
pub struct FakeServer(pub Arc<Mutex<State>>);

pub fn lsn(n: u64) -> MssqlLsn {
    let mut b = [0u8; 10];
    b[2..].copy_from_slice(&n.to_be_bytes());
    MssqlLsn(b)
}

fn lsn_num(l: MssqlLsn) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&l.0[2..]);
    u64::from_be_bytes(b)
}

pub fn text_type() -> SqlType {
    SqlType {
        name: "nvarchar".into(),
        max_length: -1,
        precision: 0,
        scale: 0,
    }
}

pub fn bigint_type() -> SqlType {
    SqlType::simple("bigint")
}

impl Default for FakeServer {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeServer {
    /// A server with CDC enabled and the checkpoint table set up (the connector's shape).
    pub fn new() -> FakeServer {
        Self::with_checkpoint_shape(CheckpointShape::Token)
    }

    /// A server whose checkpoint table has `shape`: the connector's (what `setup` creates), or
    /// the PowerSync service's (`module-mssql` `ci/init-mssql.sql`: `_powersync_checkpoints
    /// (id INT IDENTITY PRIMARY KEY, last_updated DATETIME)`).
    pub fn with_checkpoint_shape(shape: CheckpointShape) -> FakeServer {
        let s = FakeServer(Arc::new(Mutex::new(State {
            counter: 0x100,
            next_object: 1000,
            tables: BTreeMap::new(),
            instances: Vec::new(),
            lsn_time: Vec::new(),
            log: Vec::new(),
            capture_paused: false,
            cdc_enabled: true,
            published: false,
            snapshot_isolation: true,
            product_version: "16.0.4135.4".into(),
            engine_edition: 3,
            permissions: Permissions {
                select_tables: Vec::new(),
                select_cdc: true,
                checkpoint_rw: true,
                view_database_state: true,
                view_server_state: Some(true),
                gating_roles: Vec::new(),
            },
            capture_job: Some(CaptureJob {
                running: Some(true),
                polling_interval_secs: 1,
                maxtrans: 5000,
                maxscans: 10,
            }),
            user_roles: Vec::new(),
            create_clock: 1_700_000_000_000_000,
            password: "secret".into(),
            generation: 0,
            down_until: None,
            fail_changes: 0,
            fail_after: None,
            drop_before_next_read: None,
            fail_snapshot_after: None,
            commit_age_secs: 0,
            change_calls: Vec::new(),
            catalog_loads: 0,
            lock_timeouts: 0,
            null_bits_in_deletes: false,
            locked: Vec::new(),
            window_calls: Vec::new(),
        })));
        let ck = TableName::new("dbo", CHECKPOINT_TABLE);
        match shape {
            CheckpointShape::Token => s.create_table(
                &ck,
                &[
                    ("id", bigint_type()),
                    (
                        "token",
                        SqlType {
                            name: "varchar".into(),
                            max_length: 64,
                            precision: 0,
                            scale: 0,
                        },
                    ),
                    ("created_at", SqlType::scaled("datetime2", 7)),
                ],
                &["id"],
            ),
            CheckpointShape::Service => s.create_table(
                &ck,
                &[
                    ("id", SqlType::simple("int")),
                    ("last_updated", SqlType::simple("datetime")),
                ],
                &["id"],
            ),
        }
        s.enable_cdc(&ck, "dbo__powersync_checkpoints");
        s
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connector(&self, password: &str) -> Arc<dyn CdcConnector> {
        Arc::new(FakeConnector {
            server: self.clone(),
            password: password.into(),
        })
    }

    pub fn create_table(&self, t: &TableName, columns: &[(&str, SqlType)], key: &[&str]) {
        let mut s = self.lock();
        s.next_object += 1;
        let object_id = s.next_object;
        s.tables.insert(
            t.clone(),
            FakeTable {
                object_id,
                columns: columns
                    .iter()
                    .map(|(n, ty)| (n.to_string(), ty.clone()))
                    .collect(),
                key: key.iter().map(|k| k.to_string()).collect(),
                computed: Vec::new(),
                rows: BTreeMap::new(),
            },
        );
    }

    pub fn drop_table(&self, t: &TableName) {
        let mut s = self.lock();
        s.tables.remove(t);
        s.instances.retain(|i| &i.info.table != t);
    }

    /// `sp_cdc_enable_table` with a capture instance name; returns its start LSN.
    pub fn enable_cdc(&self, t: &TableName, instance: &str) -> MssqlLsn {
        self.enable_cdc_gated(t, instance, None)
    }

    /// `sp_cdc_enable_table` with a gating role (`@role_name`).
    pub fn enable_cdc_gated(&self, t: &TableName, instance: &str, role: Option<&str>) -> MssqlLsn {
        let mut s = self.lock();
        // create_date: instances created later have a later date (datetime, 1/300 s).
        s.create_clock += 3_333;
        let create_date = s.create_clock;
        let start = s.alloc();
        let table = s.tables.get(t).expect("table exists").clone();
        assert!(
            s.instances.iter().filter(|i| &i.info.table == t).count() < 2,
            "at most two capture instances"
        );
        let columns = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, (n, ty))| CapturedColumn {
                name: n.clone(),
                sql_type: ty.clone(),
                ordinal: i as u32 + 1,
                key_ordinal: table.key.iter().position(|k| k == n).map(|p| p as u32 + 1),
                nullable: !table.key.contains(n),
                computed: table.computed.contains(n),
                in_source: true,
                collation: None,
                clr_type: false,
            })
            .collect();
        s.instances.push(Instance {
            info: CaptureInstance {
                table: t.clone(),
                source_object_id: table.object_id,
                name: instance.into(),
                start_lsn: start,
                create_date,
                role_name: role.map(str::to_string),
                columns,
            },
            created_at: start,
            min_lsn: start,
            rows: Vec::new(),
        });
        start
    }

    /// `sp_cdc_disable_table @capture_instance = …`.
    pub fn disable_instance(&self, name: &str) {
        let mut s = self.lock();
        s.instances.retain(|i| i.info.name != name);
    }

    pub fn instance_names(&self, t: &TableName) -> Vec<String> {
        self.lock()
            .instances
            .iter()
            .filter(|i| &i.info.table == t)
            .map(|i| i.info.name.clone())
            .collect()
    }

    /// Declares a column NOT NULL, as the catalog reports it for the existing capture instances.
    pub fn set_not_null(&self, t: &TableName, name: &str) {
        let mut s = self.lock();
        for i in s.instances.iter_mut().filter(|i| &i.info.table == t) {
            for c in i.info.columns.iter_mut().filter(|c| c.name == name) {
                c.nullable = false;
            }
        }
    }

    /// Marks a column as computed (before `enable_cdc`: `cdc.captured_columns.is_computed`).
    pub fn mark_computed(&self, t: &TableName, name: &str) {
        let mut s = self.lock();
        let table = s.tables.get_mut(t).expect("table");
        table.computed.push(name.into());
    }

    pub fn add_column(&self, t: &TableName, name: &str, ty: SqlType) {
        let mut s = self.lock();
        let table = s.tables.get_mut(t).expect("table");
        table.columns.push((name.into(), ty));
        for r in table.rows.values_mut() {
            r.push(Value::Null);
        }
    }

    pub fn drop_column(&self, t: &TableName, name: &str) {
        let mut s = self.lock();
        let table = s.tables.get_mut(t).expect("table");
        let i = table
            .columns
            .iter()
            .position(|(n, _)| n == name)
            .expect("column");
        table.columns.remove(i);
        for r in table.rows.values_mut() {
            r.remove(i);
        }
    }

    /// Runs one transaction; returns its commit LSN.
    pub fn transaction(&self, ops: &[Op]) -> MssqlLsn {
        let mut s = self.lock();
        s.commit(ops)
    }

    /// Two concurrent transactions whose statements interleave; `b` commits first. Returns
    /// their commit LSNs (a, b).
    pub fn interleaved(&self, a: &[Op], b: &[Op]) -> (MssqlLsn, MssqlLsn) {
        self.lock().commit_interleaved(a, b)
    }

    /// A capture-job scan that found no change to a CDC table: it still writes a
    /// `cdc.lsn_time_mapping` row (`tran_id` 0x00), so the max LSN moves on an idle database
    /// ("Entries may also be logged for which there are no change tables entries",
    /// cdc.lsn_time_mapping; Debezium DBZ-2582; Materialize 72-ingestion-lag-when-idle.td).
    pub fn idle_scan(&self) -> MssqlLsn {
        let mut s = self.lock();
        s.capture_all();
        let l = s.alloc();
        s.lsn_time.push((l, UnixMicros::now()));
        l
    }

    pub fn capture(&self) {
        self.lock().capture_all();
    }

    pub fn set_capture_paused(&self, paused: bool) {
        let mut s = self.lock();
        s.capture_paused = paused;
        if !paused {
            s.capture_all();
        }
    }

    /// The cleanup job with a low-water mark.
    pub fn cleanup(&self, low_water: MssqlLsn) {
        let mut s = self.lock();
        s.capture_all();
        for i in &mut s.instances {
            i.rows.retain(|r| r.start_lsn >= low_water);
            // sys.fn_cdc_get_min_lsn returns cdc.change_tables.start_lsn, and cleanup raises it
            // for every instance below the new low-water mark ("the low endpoint of a capture
            // instance changes when cleanup is performed", About Change Data Capture): two
            // instances of a table can end up with equal start LSNs (Debezium DBZ-4273,
            // Materialize 80-deterministic-capture-instance-selection.td).
            if i.min_lsn < low_water {
                i.min_lsn = low_water;
                i.info.start_lsn = low_water;
            }
        }
        s.lsn_time.retain(|(l, _)| *l >= low_water);
    }

    pub fn max_lsn(&self) -> Option<MssqlLsn> {
        self.lock().lsn_time.last().map(|(l, _)| *l)
    }

    /// Breaks every connection and refuses new ones for `down`.
    pub fn kill(&self, down: Duration) {
        let mut s = self.lock();
        s.generation += 1;
        s.down_until = Some(Instant::now() + down);
    }

    /// Fails the next `n` change-table reads with a connection error.
    pub fn fail_next_changes(&self, n: u32) {
        self.lock().fail_changes = n;
    }

    pub fn rows(&self, t: &TableName) -> Vec<Vec<(String, Value)>> {
        let s = self.lock();
        let table = &s.tables[t];
        table
            .rows
            .values()
            .map(|r| {
                table
                    .columns
                    .iter()
                    .map(|(n, _)| n.clone())
                    .zip(r.iter().cloned())
                    .collect()
            })
            .collect()
    }
}

/// One row of [`Op::UpdateKeys`]: its key values and the assignments.
pub type KeyUpdate = (Vec<Value>, Vec<(String, Value)>);

/// One statement of a model transaction (values by column name; missing columns are NULL).
#[derive(Debug, Clone)]
pub enum Op {
    Insert(TableName, Vec<(String, Value)>),
    Update(TableName, Vec<Value>, Vec<(String, Value)>),
    /// One `UPDATE` statement changing the keys of several rows (key values, assignments).
    UpdateKeys(TableName, Vec<KeyUpdate>),
    Delete(TableName, Vec<Value>),
}

/// SQL Server's error 207, as the connector's error mapping classifies it.
fn invalid_column(name: &str) -> SourceError {
    SourceError::schema(format!("Invalid column name '{name}' (207)"))
}

impl State {
    /// `INSERT INTO dbo._powersync_checkpoints …` in the table's shape; a column the table
    /// lacks is error 207, as on the server.
    fn insert_marker(&mut self, shape: CheckpointShape, token: &str) -> Result<Marker> {
        let ck = TableName::new("dbo", CHECKPOINT_TABLE);
        let column = match shape {
            CheckpointShape::Token => "token",
            CheckpointShape::Service => "last_updated",
        };
        if !self.tables[&ck].columns.iter().any(|(n, _)| n == column) {
            return Err(invalid_column(column));
        }
        match shape {
            CheckpointShape::Token => {
                self.commit(&[Op::Insert(
                    ck,
                    vec![
                        ("token".into(), Value::Text(token.into())),
                        (
                            "created_at".into(),
                            Value::Text("2026-01-01 00:00:00".into()),
                        ),
                    ],
                )]);
                Ok(Marker::Token(token.into()))
            }
            CheckpointShape::Service => {
                self.commit(&[Op::Insert(
                    ck.clone(),
                    vec![(
                        "last_updated".into(),
                        Value::Text("2026-01-01 00:00:00".into()),
                    )],
                )]);
                // OUTPUT INSERTED.id: the IDENTITY value just assigned.
                let id = self.tables[&ck]
                    .rows
                    .keys()
                    .last()
                    .and_then(|k| k.0[0].as_integer())
                    .unwrap_or_default();
                Ok(Marker::Id(id))
            }
        }
    }

    /// Whether the user may read an instance: no gating role, or a member of it.
    fn authorized(&self, i: &CaptureInstance) -> bool {
        i.role_name
            .as_ref()
            .is_none_or(|r| self.user_roles.contains(r))
    }

    fn alloc(&mut self) -> MssqlLsn {
        self.counter += 1;
        lsn(self.counter)
    }

    fn commit(&mut self, ops: &[Op]) -> MssqlLsn {
        let _begin = self.alloc();
        let mut changes = Vec::new();
        for op in ops {
            self.apply(op, &mut changes);
        }
        self.finish(changes)
    }

    /// Two transactions whose statements alternate in the log (`a`, `b`, `a`, …), `b`
    /// committing first: their seqvals interleave, but each transaction's rows carry its own
    /// commit LSN (`__$start_lsn`), which orders them (cdc.fn_cdc_get_all_changes: rows are
    /// returned per committed transaction).
    fn commit_interleaved(&mut self, a: &[Op], b: &[Op]) -> (MssqlLsn, MssqlLsn) {
        let _begin_a = self.alloc();
        let _begin_b = self.alloc();
        let (mut ca, mut cb) = (Vec::new(), Vec::new());
        for i in 0..a.len().max(b.len()) {
            if let Some(op) = a.get(i) {
                self.apply(op, &mut ca);
            }
            if let Some(op) = b.get(i) {
                self.apply(op, &mut cb);
            }
        }
        let lb = self.finish(cb);
        let la = self.finish(ca);
        (la, lb)
    }

    fn finish(&mut self, changes: Vec<(TableName, MssqlLsn, Change, Columns)>) -> MssqlLsn {
        let commit = self.alloc();
        let micros = UnixMicros::now().0 - self.commit_age_secs * 1_000_000;
        self.log.push(LoggedTxn {
            commit,
            time: UnixMicros(micros),
            changes,
        });
        if !self.capture_paused {
            self.capture_all();
        }
        commit
    }

    /// One statement: its changes, each with a sequence value from the log counter.
    fn apply(&mut self, op: &Op, changes: &mut Vec<(TableName, MssqlLsn, Change, Columns)>) {
        let seq = self.alloc();
        match op {
            Op::Insert(t, vals) => {
                let table = self.tables.get_mut(t).expect("table");
                if table.key.len() == 1
                    && table.key[0] == "id"
                    && !vals.iter().any(|(n, _)| n == "id")
                {
                    // IDENTITY
                    let next = table
                        .rows
                        .keys()
                        .last()
                        .and_then(|k| k.0[0].as_integer())
                        .unwrap_or(0)
                        + 1;
                    let mut v = vals.clone();
                    v.push(("id".into(), Value::Integer(next)));
                    let row = project(&table.columns, &v);
                    let key = key_of(table, &row);
                    table.rows.insert(key, row.clone());
                    changes.push((t.clone(), seq, Change::Insert(row), table.columns.clone()));
                    return;
                }
                let row = project(&table.columns, vals);
                let key = key_of(table, &row);
                assert!(
                    !table.rows.contains_key(&key),
                    "duplicate key {key:?} in {t}"
                );
                table.rows.insert(key, row.clone());
                changes.push((t.clone(), seq, Change::Insert(row), table.columns.clone()));
            }
            Op::Update(t, key, set) => {
                let table = self.tables.get_mut(t).expect("table");
                let k = KeyVals(key.clone());
                let Some(old) = table.rows.get(&k).cloned() else {
                    return;
                };
                let new = updated(table, &old, set);
                let nk = key_of(table, &new);
                table.rows.remove(&k);
                table.rows.insert(nk.clone(), new.clone());
                let columns = table.columns.clone();
                if nk != k {
                    // A key-changing update of one row is captured as a delete (1) and an
                    // insert (2) sharing one __$seqval (debezium/debezium PR 7728; KB 3030352
                    // was the bug that put the insert first).
                    changes.push((t.clone(), seq, Change::Delete(old), columns.clone()));
                    changes.push((t.clone(), seq, Change::Insert(new), columns));
                } else {
                    changes.push((t.clone(), seq, Change::Update(old, new), columns));
                }
            }
            Op::UpdateKeys(t, rows) => {
                // A bulk key update: the deletes, then the inserts, each with its own
                // __$seqval (debezium/debezium PR 7728: "different seqvals for bulk").
                let table = self.tables.get_mut(t).expect("table");
                let mut pairs = Vec::new();
                for (key, set) in rows {
                    if let Some(old) = table.rows.remove(&KeyVals(key.clone())) {
                        let new = updated(table, &old, set);
                        pairs.push((old, new));
                    }
                }
                for (_, new) in &pairs {
                    let nk = key_of(table, new);
                    table.rows.insert(nk, new.clone());
                }
                let columns = table.columns.clone();
                let mut first = Some(seq);
                for (old, _) in &pairs {
                    let s = first.take().unwrap_or_else(|| self.alloc());
                    changes.push((t.clone(), s, Change::Delete(old.clone()), columns.clone()));
                }
                for (_, new) in pairs {
                    let s = first.take().unwrap_or_else(|| self.alloc());
                    changes.push((t.clone(), s, Change::Insert(new), columns.clone()));
                }
            }
            Op::Delete(t, key) => {
                let table = self.tables.get_mut(t).expect("table");
                if let Some(old) = table.rows.remove(&KeyVals(key.clone())) {
                    changes.push((t.clone(), seq, Change::Delete(old), table.columns.clone()));
                }
            }
        }
    }

    fn capture_all(&mut self) {
        let null_bits = self.null_bits_in_deletes;
        let log = std::mem::take(&mut self.log);
        for txn in log {
            let mut any = false;
            for (t, seq, change, columns) in &txn.changes {
                for inst in self
                    .instances
                    .iter_mut()
                    .filter(|i| &i.info.table == t && i.created_at < txn.commit)
                {
                    any = true;
                    let pick = |row: &Vec<Value>| -> Vec<Value> {
                        inst.info
                            .columns
                            .iter()
                            .map(|c| {
                                // "Computed columns that are included in a capture instance
                                // always have a value of NULL" (cdc.fn_cdc_get_all_changes).
                                if c.computed {
                                    return Value::Null;
                                }
                                columns
                                    .iter()
                                    .position(|(n, _)| n == &c.name)
                                    .map(|i| row[i].clone())
                                    .unwrap_or(Value::Null)
                            })
                            .collect()
                    };
                    let ncols = inst.info.columns.len();
                    let mask_len = ncols.div_ceil(8).max(1);
                    let mut mask = vec![0u8; mask_len];
                    let mut set = |ordinal: u32| {
                        let o = (ordinal - 1) as usize;
                        mask[mask_len - 1 - o / 8] |= 1 << (o % 8);
                    };
                    let rows: Vec<(u8, Vec<Value>)> = match change {
                        Change::Insert(r) => {
                            inst.info.columns.iter().for_each(|c| set(c.ordinal));
                            vec![(2, pick(r))]
                        }
                        Change::Delete(r) => {
                            inst.info.columns.iter().for_each(|c| set(c.ordinal));
                            // text/ntext/image are NULL in delete rows (Estuary connectors
                            // issue 1927, PR 1929; `TestCapture-DeletedTextColumn`).
                            let values = pick(r)
                                .into_iter()
                                .zip(&inst.info.columns)
                                .map(|(v, c)| {
                                    let null_bit = null_bits
                                        && c.sql_type.name == "bit"
                                        && c.key_ordinal.is_none();
                                    if c.sql_type.is_legacy_lob() || null_bit {
                                        Value::Null
                                    } else {
                                        v
                                    }
                                })
                                .collect();
                            vec![(1, values)]
                        }
                        Change::Update(o, n) => {
                            let (po, pn) = (pick(o), pick(n));
                            for (i, c) in inst.info.columns.iter().enumerate() {
                                if po[i] != pn[i] {
                                    set(c.ordinal);
                                }
                            }
                            // Large-value columns the update did not change are NULL in
                            // BOTH images (operations 3 and 4): Microsoft's
                            // cdc.fn_cdc_get_all_changes page ("…(max) … NULL unless the column
                            // changed"), Debezium PR 7452 (dbz#1164) and PR 8078 (verified on
                            // SQL Server 2022: "unavailable" placeholder for a clear mask bit in
                            // both images). The legacy LOBs (text/ntext/image) never have a
                            // before image at all.
                            let po: Vec<Value> = po
                                .into_iter()
                                .zip(&inst.info.columns)
                                .map(|(v, c)| {
                                    let unchanged = !powersync_source_mssql::testing::mask_bit(
                                        &mask, c.ordinal,
                                    );
                                    if c.sql_type.is_legacy_lob()
                                        || (is_max(&c.sql_type) && unchanged)
                                    {
                                        Value::Null
                                    } else {
                                        v
                                    }
                                })
                                .collect();
                            let pn: Vec<Value> = pn
                                .into_iter()
                                .enumerate()
                                .map(|(i, v)| {
                                    let c = &inst.info.columns[i];
                                    if (c.sql_type.is_legacy_lob() || is_max(&c.sql_type))
                                        && !powersync_source_mssql::testing::mask_bit(
                                            &mask, c.ordinal,
                                        )
                                    {
                                        Value::Null
                                    } else {
                                        v
                                    }
                                })
                                .collect();
                            vec![(3, po), (4, pn)]
                        }
                    };
                    for (op, values) in rows {
                        inst.rows.push(ChangeRow {
                            start_lsn: txn.commit,
                            seqval: *seq,
                            operation: op,
                            update_mask: mask.clone(),
                            values,
                        });
                    }
                }
            }
            if any {
                self.lsn_time.push((txn.commit, txn.time));
            }
        }
    }
}

/// `varchar(max)`, `nvarchar(max)`, `varbinary(max)` (and `xml`, stored the same way).
fn is_max(t: &SqlType) -> bool {
    t.max_length == -1 || t.name == "xml"
}

/// `old` with the `set` assignments applied.
fn updated(table: &FakeTable, old: &[Value], set: &[(String, Value)]) -> Vec<Value> {
    let mut new = old.to_vec();
    for (n, v) in set {
        let i = table
            .columns
            .iter()
            .position(|(c, _)| c == n)
            .expect("column");
        new[i] = v.clone();
    }
    new
}

fn project(columns: &[(String, SqlType)], vals: &[(String, Value)]) -> Vec<Value> {
    columns
        .iter()
        .map(|(n, _)| {
            vals.iter()
                .find(|(c, _)| c == n)
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null)
        })
        .collect()
}

fn key_of(t: &FakeTable, row: &[Value]) -> KeyVals {
    KeyVals(
        t.key
            .iter()
            .map(|k| {
                row[t
                    .columns
                    .iter()
                    .position(|(n, _)| n == k)
                    .expect("key column")]
                .clone()
            })
            .collect(),
    )
}

#[derive(Debug)]
struct FakeConnector {
    server: FakeServer,
    password: String,
}

#[async_trait]
impl CdcConnector for FakeConnector {
    async fn connect(&self) -> Result<Box<dyn CdcBackend>> {
        let s = self.server.lock();
        if s.down_until.is_some_and(|d| Instant::now() < d) {
            return Err(SourceError::connection("connection refused (server down)"));
        }
        if s.password != self.password {
            return Err(SourceError::auth("Login failed for user 'powersync'"));
        }
        Ok(Box::new(FakeBackend {
            server: self.server.clone(),
            generation: s.generation,
            snapshot: None,
        }))
    }
}

struct FakeBackend {
    server: FakeServer,
    generation: u64,
    snapshot: Option<BTreeMap<TableName, FakeTable>>,
}

impl FakeBackend {
    fn state(&self) -> Result<MutexGuard<'_, State>> {
        let s = self.server.lock();
        if s.generation != self.generation {
            return Err(SourceError::connection("connection reset by peer"));
        }
        Ok(s)
    }
}

#[async_trait]
impl CdcBackend for FakeBackend {
    async fn server_info(&mut self) -> Result<ServerInfo> {
        let s = self.state()?;
        Ok(ServerInfo {
            product_version: s.product_version.clone(),
            engine_edition: s.engine_edition,
            cdc_enabled: s.cdc_enabled,
            snapshot_isolation: s.snapshot_isolation,
            database: "shop".into(),
            published: s.published,
        })
    }

    async fn max_lsn(&mut self) -> Result<Option<MssqlLsn>> {
        Ok(self.state()?.lsn_time.last().map(|(l, _)| *l))
    }

    async fn min_lsn(&mut self, instance: &str) -> Result<Option<MssqlLsn>> {
        let s = self.state()?;
        // Zeros (None) "when the capture instance does not exist or when the caller is not
        // authorized" (sys.fn_cdc_get_min_lsn): a gating role the user lacks hides it.
        Ok(s.instances
            .iter()
            .find(|i| i.info.name == instance)
            .filter(|i| s.authorized(&i.info))
            .map(|i| i.min_lsn))
    }

    async fn increment_lsn(&mut self, l: MssqlLsn) -> Result<MssqlLsn> {
        drop(self.state()?);
        Ok(l.increment())
    }

    async fn lsn_window(
        &mut self,
        from: MssqlLsn,
        to: MssqlLsn,
        limit: u32,
    ) -> Result<Vec<LsnTime>> {
        let mut s = self.state()?;
        let out: Vec<LsnTime> = s
            .lsn_time
            .iter()
            .filter(|(l, _)| *l >= from && *l <= to)
            .take(limit as usize)
            .map(|(l, t)| LsnTime {
                lsn: *l,
                commit_time: Some(*t),
            })
            .collect();
        s.window_calls.push((from, to, limit, out.len()));
        Ok(out)
    }

    async fn catalog_stamp(&mut self) -> Result<CatalogStamp> {
        use std::hash::{Hash, Hasher};
        let s = self.state()?;
        // Like CHECKSUM_AGG over (object_id, create_date, start_lsn) of cdc.change_tables.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for i in &s.instances {
            (&i.info.name, i.info.create_date, i.info.start_lsn.0).hash(&mut h);
        }
        Ok(CatalogStamp {
            instances: s.instances.len() as i64,
            checksum: h.finish() as i64,
        })
    }

    async fn capture_instances(&mut self) -> Result<Vec<CaptureInstance>> {
        let mut s = self.state()?;
        s.catalog_loads += 1;
        Ok(s.instances
            .iter()
            .map(|i| {
                let mut info = i.info.clone();
                // The join with the source table's columns (sys.columns): a dropped or renamed
                // column is still captured but no longer in the table.
                let live = s.tables.get(&info.table);
                for c in &mut info.columns {
                    c.in_source = live.is_some_and(|t| t.columns.iter().any(|(n, _)| n == &c.name));
                }
                info
            })
            .collect())
    }

    async fn changes(
        &mut self,
        instance: &CaptureInstance,
        from: MssqlLsn,
        to: MssqlLsn,
        after: Option<ChangeKey>,
        limit: u32,
    ) -> Result<Vec<ChangeRow>> {
        let mut s = self.state()?;
        match s.fail_after {
            Some(0) => {
                s.fail_after = None;
                s.fail_changes += 1;
            }
            Some(n) => s.fail_after = Some(n - 1),
            None => {}
        }
        if s.fail_changes > 0 {
            s.fail_changes -= 1;
            s.generation += 1;
            return Err(SourceError::connection(
                "connection reset by peer (injected)",
            ));
        }
        if let Some(name) = s.drop_before_next_read.take() {
            s.instances.retain(|i| i.info.name != name);
        }
        s.change_calls
            .push((instance.name.clone(), from, to, after, limit));
        let max = s.lsn_time.last().map(|(l, _)| *l).unwrap_or_default();
        let Some(inst) = s.instances.iter().find(|i| i.info.name == instance.name) else {
            return Err(SourceError::schema(
                "Invalid object name 'cdc.fn_cdc_get_all_changes_…'",
            ));
        };
        // "…if a gating role for the capture instance was defined, membership in that
        // database role" (cdc.fn_cdc_get_all_changes, Permissions): error 229 otherwise.
        if !s.authorized(&inst.info) {
            return Err(SourceError::prerequisite(
                "The SELECT permission was denied on the object 'fn_cdc_get_all_changes_…' (229)",
            ));
        }
        if from < inst.min_lsn || to > max || from > to {
            return Err(SourceError::history_lost(
                "An insufficient number of arguments were supplied for the procedure or function cdc.fn_cdc_get_all_changes_ (313)",
            ));
        }
        // The select list names the requested columns (the connector leaves some out).
        let positions: Vec<Option<usize>> = instance
            .columns
            .iter()
            .map(|c| inst.info.columns.iter().position(|k| k.name == c.name))
            .collect();
        let mut rows: Vec<ChangeRow> = inst
            .rows
            .iter()
            .filter(|r| {
                r.start_lsn >= from && r.start_lsn <= to && after.is_none_or(|a| r.order_key() > a)
            })
            .cloned()
            .map(|mut r| {
                r.values = positions
                    .iter()
                    .map(|p| p.map_or(Value::Null, |p| r.values[p].clone()))
                    .collect();
                r
            })
            .collect();
        rows.sort_by_key(|r| r.order_key());
        rows.truncate(limit as usize);
        Ok(rows)
    }

    async fn table_exists(&mut self, table: &TableName) -> Result<bool> {
        Ok(self.state()?.tables.contains_key(table))
    }

    async fn estimated_rows(&mut self, table: &TableName) -> Result<Option<u64>> {
        Ok(self.state()?.tables.get(table).map(|t| t.rows.len() as u64))
    }

    async fn begin_snapshot(
        &mut self,
        tables: &[TableName],
        marker: Option<(CheckpointShape, &str)>,
    ) -> Result<Option<Marker>> {
        let server = self.server.clone();
        let mut s = server.lock();
        if s.generation != self.generation {
            return Err(SourceError::connection("connection reset by peer"));
        }
        if !s.snapshot_isolation {
            return Err(SourceError::prerequisite(
                "Snapshot isolation transaction failed (3952)",
            ));
        }
        if marker.is_some() {
            // A writer holds a lock on a table longer than LOCK_TIMEOUT: "Lock request time
            // out period exceeded" (1222), raised to the lock transaction.
            if s.lock_timeouts > 0 {
                s.lock_timeouts -= 1;
                return Err(SourceError::connection(
                    "Lock request time out period exceeded. (1222)",
                )
                .with_code("1222"));
            }
            s.locked = tables.to_vec();
        }
        // Locks held: the copy and the marker's commit are one atomic step.
        self.snapshot = Some(s.tables.clone());
        marker
            .map(|(shape, token)| s.insert_marker(shape, token))
            .transpose()
    }

    async fn snapshot_chunk(
        &mut self,
        instance: &CaptureInstance,
        after: Option<&[Value]>,
        limit: u32,
    ) -> Result<Vec<Vec<Value>>> {
        {
            let mut st = self.state()?;
            match st.fail_snapshot_after {
                Some(0) => {
                    st.fail_snapshot_after = None;
                    st.generation += 1;
                    return Err(SourceError::connection(
                        "connection reset by peer (injected)",
                    ));
                }
                Some(n) => st.fail_snapshot_after = Some(n - 1),
                None => {}
            }
        }
        let snap = self
            .snapshot
            .as_ref()
            .ok_or_else(|| SourceError::decode("no snapshot transaction"))?;
        let table = snap
            .get(&instance.table)
            .ok_or_else(|| SourceError::schema("Invalid object name (208)"))?;
        // The select list: NULL for a column the connector knows is gone, the column
        // otherwise; naming a column the table does not have is error 207.
        let mut positions = Vec::new();
        for c in &instance.columns {
            if !c.in_source {
                positions.push(None);
                continue;
            }
            match table.columns.iter().position(|(n, _)| n == &c.name) {
                Some(i) => positions.push(Some(i)),
                None => {
                    return Err(SourceError::schema(format!(
                        "Invalid column name '{}' (207)",
                        c.name
                    )))
                }
            }
        }
        let after = after.map(|a| KeyVals(a.to_vec()));
        Ok(table
            .rows
            .iter()
            .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
            .take(limit as usize)
            .map(|(_, row)| {
                positions
                    .iter()
                    .map(|p| p.map_or(Value::Null, |i| row[i].clone()))
                    .collect()
            })
            .collect())
    }

    async fn end_snapshot(&mut self) -> Result<()> {
        drop(self.state()?);
        self.snapshot = None;
        Ok(())
    }

    async fn insert_marker(&mut self, shape: CheckpointShape, token: &str) -> Result<Marker> {
        self.state()?.insert_marker(shape, token)
    }

    async fn marker_lsn(
        &mut self,
        instance: &CaptureInstance,
        marker: &Marker,
    ) -> Result<Option<MssqlLsn>> {
        let s = self.state()?;
        let Some(inst) = s.instances.iter().find(|i| i.info.name == instance.name) else {
            return Ok(None);
        };
        let (column, want) = match marker {
            Marker::Token(t) => ("token", Value::Text(t.clone())),
            Marker::Id(id) => ("id", Value::Integer(*id)),
        };
        // `WHERE <column> = @P1` on the change table: a column it lacks is error 207.
        let Some(ci) = inst.info.columns.iter().position(|c| c.name == column) else {
            return Err(invalid_column(column));
        };
        Ok(inst
            .rows
            .iter()
            .find(|r| r.operation == 2 && r.values.get(ci) == Some(&want))
            .map(|r| r.start_lsn))
    }

    async fn delete_old_markers(&mut self, shape: CheckpointShape) -> Result<()> {
        let s = self.state()?;
        let column = match shape {
            CheckpointShape::Token => "created_at",
            CheckpointShape::Service => "last_updated",
        };
        // The model keeps no row ages: only the statement's column is checked.
        if !s.tables[&TableName::new("dbo", CHECKPOINT_TABLE)]
            .columns
            .iter()
            .any(|(n, _)| n == column)
        {
            return Err(invalid_column(column));
        }
        Ok(())
    }

    async fn permissions(
        &mut self,
        tables: &[TableName],
        roles: &[String],
        azure: bool,
    ) -> Result<Permissions> {
        let s = self.state()?;
        let mut p = s.permissions.clone();
        p.gating_roles = roles
            .iter()
            .map(|r| (r.clone(), s.user_roles.contains(r)))
            .collect();
        let denied: Vec<TableName> = p
            .select_tables
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(t, _)| t.clone())
            .collect();
        p.select_tables = tables
            .iter()
            .map(|t| (t.clone(), !denied.contains(t)))
            .collect();
        if azure {
            p.view_server_state = None;
        }
        Ok(p)
    }

    async fn capture_job(&mut self) -> Result<Option<CaptureJob>> {
        Ok(self.state()?.capture_job)
    }
}

/// `lsn_num` for tests that reason about the counter.
pub fn lsn_value(l: MssqlLsn) -> u64 {
    lsn_num(l)
}
