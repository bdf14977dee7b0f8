//! Stream metrics through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! Every connector's events pass through the runtime ([`crate::runtime::Emitter`],
//! [`crate::runtime::Reconnect`], [`crate::StreamStats`]), so the metrics are recorded there,
//! once, for every source. With the crate feature `metrics` off (the default) nothing is
//! recorded and the facade is not linked; with it on, the metrics go to whatever recorder the
//! host installed (a Prometheus exporter, …) **before it started the stream**: a stream binds
//! its metric handles when it starts, and handles bound without a recorder stay silent.
//!
//! Labels: `source` is the stream's checkpoint tag (`postgres`, `mysql`, …), `table` is
//! `schema.table`. The names, kinds and labels are a stable interface (dashboards and alerts
//! are built on them):
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | [`ROWS_TOTAL`] | counter | source, table, op | streamed row changes emitted (`op` = insert/update/delete) |
//! | [`SNAPSHOT_ROWS_TOTAL`] | counter | source, table | rows emitted by the snapshot |
//! | [`TRANSACTIONS_TOTAL`] | counter | source | transactions (commits) emitted |
//! | [`BYTES_TOTAL`] | counter | source | bytes received from the source |
//! | [`RECONNECTS_TOTAL`] | counter | source | reconnects after a transient failure |
//! | [`LAG_SECONDS`] | gauge | source | now − commit time of the last emitted transaction; 0 when caught up and idle |
//! | [`LAG_BYTES`] | gauge | source | source history between its head and the stream's position |
//! | [`RETAINED_BYTES`] | gauge | source | history the source keeps for this stream (PostgreSQL: WAL held by the slot; MySQL/MariaDB: binlog from the stream's position to the head) |
//! | [`HISTORY_BUDGET_BYTES`] | gauge | source | history left before the source drops it (PostgreSQL `safe_wal_size`); absent where unbounded |
//! | [`SNAPSHOT_TABLES`] | gauge | source, state | snapshot tables `pending` / `copying` / `done` |
//!
//! Rows sent again after a [`crate::ChangeEvent::Abort`] (a connection lost inside a
//! transaction) are counted again: the counters count what was emitted, not what the host
//! stored.

/// Counter `{source, table, op}`: streamed row changes emitted.
pub const ROWS_TOTAL: &str = "powersync_source_rows_total";
/// Counter `{source, table}`: rows emitted by the snapshot.
pub const SNAPSHOT_ROWS_TOTAL: &str = "powersync_source_snapshot_rows_total";
/// Counter `{source}`: transactions (commits) emitted.
pub const TRANSACTIONS_TOTAL: &str = "powersync_source_transactions_total";
/// Counter `{source}`: bytes received from the source.
pub const BYTES_TOTAL: &str = "powersync_source_bytes_total";
/// Counter `{source}`: reconnects after a transient failure.
pub const RECONNECTS_TOTAL: &str = "powersync_source_reconnects_total";
/// Gauge `{source}`: seconds between now and the commit time of the last emitted transaction
/// (0 when caught up and idle).
pub const LAG_SECONDS: &str = "powersync_source_lag_seconds";
/// Gauge `{source}`: bytes of source history between its head and the stream's position.
pub const LAG_BYTES: &str = "powersync_source_lag_bytes";
/// Gauge `{source}`: bytes of history the source retains for this stream.
pub const RETAINED_BYTES: &str = "powersync_source_retained_bytes";
/// Gauge `{source}`: bytes of history left before the source may drop what the stream needs
/// (PostgreSQL `pg_replication_slots.safe_wal_size`); not set where unbounded.
pub const HISTORY_BUDGET_BYTES: &str = "powersync_source_history_budget_bytes";
/// Gauge `{source, state}`: snapshot tables by state (`pending`, `copying`, `done`).
pub const SNAPSHOT_TABLES: &str = "powersync_source_snapshot_tables";

/// Registers the help text of every metric with the installed recorder (so an exporter can
/// print `# HELP` lines). Call once after installing the recorder; without the `metrics`
/// feature it does nothing.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use metrics::{describe_counter, describe_gauge, Unit};
        describe_counter!(ROWS_TOTAL, "Streamed row changes emitted");
        describe_counter!(SNAPSHOT_ROWS_TOTAL, "Rows emitted by the snapshot");
        describe_counter!(TRANSACTIONS_TOTAL, "Transactions (commits) emitted");
        describe_counter!(BYTES_TOTAL, Unit::Bytes, "Bytes received from the source");
        describe_counter!(RECONNECTS_TOTAL, "Reconnects after a transient failure");
        describe_gauge!(
            LAG_SECONDS,
            Unit::Seconds,
            "Now minus the commit time of the last emitted transaction (0 when idle)"
        );
        describe_gauge!(
            LAG_BYTES,
            Unit::Bytes,
            "Source history between its head and the stream's position"
        );
        describe_gauge!(
            RETAINED_BYTES,
            Unit::Bytes,
            "Source history retained for this stream"
        );
        describe_gauge!(
            HISTORY_BUDGET_BYTES,
            Unit::Bytes,
            "History left before the source may drop what the stream needs"
        );
        describe_gauge!(SNAPSHOT_TABLES, "Snapshot tables by state");
    }
}

#[cfg(feature = "metrics")]
pub(crate) use enabled::{EventMetrics, SourceMetrics};

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::{EventMetrics, SourceMetrics};

#[cfg(feature = "metrics")]
mod enabled {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, OnceLock};

    use metrics::{counter, gauge, Counter, Gauge};

    use super::*;
    use crate::event::{ChangeEvent, Op, SnapshotProgress};
    use crate::schema::{TableName, TableSchema};

    /// The per-stream (`source`-labelled) handles, bound when the stream starts.
    #[derive(Default)]
    pub(crate) struct SourceMetrics {
        handles: Option<SourceHandles>,
    }

    struct SourceHandles {
        source: &'static str,
        transactions: Counter,
        bytes: Counter,
        reconnects: Counter,
        lag_seconds: Gauge,
        // Bound on first use: a source without byte positions or a history budget has no
        // such series at all (an exporter would show a registered gauge as 0).
        lag_bytes: OnceLock<Gauge>,
        retained_bytes: OnceLock<Gauge>,
        history_budget_bytes: OnceLock<Gauge>,
    }

    impl SourceHandles {
        fn lazy<'a>(&self, cell: &'a OnceLock<Gauge>, name: &'static str) -> &'a Gauge {
            let source = self.source;
            cell.get_or_init(|| gauge!(name, "source" => source))
        }
    }

    impl SourceMetrics {
        pub(crate) fn new(source: &'static str) -> Self {
            SourceMetrics {
                handles: Some(SourceHandles {
                    source,
                    transactions: counter!(TRANSACTIONS_TOTAL, "source" => source),
                    bytes: counter!(BYTES_TOTAL, "source" => source),
                    reconnects: counter!(RECONNECTS_TOTAL, "source" => source),
                    lag_seconds: gauge!(LAG_SECONDS, "source" => source),
                    lag_bytes: OnceLock::new(),
                    retained_bytes: OnceLock::new(),
                    history_budget_bytes: OnceLock::new(),
                }),
            }
        }

        pub(crate) fn transaction(&self) {
            if let Some(h) = &self.handles {
                h.transactions.increment(1);
            }
        }

        pub(crate) fn bytes(&self, n: u64) {
            if let Some(h) = &self.handles {
                h.bytes.increment(n);
            }
        }

        pub(crate) fn reconnect(&self) {
            if let Some(h) = &self.handles {
                h.reconnects.increment(1);
            }
        }

        pub(crate) fn lag_seconds(&self, seconds: f64) {
            if let Some(h) = &self.handles {
                h.lag_seconds.set(seconds);
            }
        }

        pub(crate) fn lag_bytes(&self, n: u64) {
            if let Some(h) = &self.handles {
                h.lazy(&h.lag_bytes, LAG_BYTES).set(n as f64);
            }
        }

        pub(crate) fn retained_bytes(&self, n: u64) {
            if let Some(h) = &self.handles {
                h.lazy(&h.retained_bytes, RETAINED_BYTES).set(n as f64);
            }
        }

        pub(crate) fn history_budget_bytes(&self, n: u64) {
            if let Some(h) = &self.handles {
                h.lazy(&h.history_budget_bytes, HISTORY_BUDGET_BYTES)
                    .set(n as f64);
            }
        }
    }

    /// Row counters of one table, bound on its first row (label strings are built once per
    /// table, not per row).
    struct TableCounters {
        insert: Counter,
        update: Counter,
        delete: Counter,
        snapshot: Counter,
    }

    /// What the emitter records per event: rows by table and op, snapshot tables by state.
    pub(crate) struct EventMetrics {
        source: Option<&'static str>,
        tables: HashMap<TableName, Arc<TableCounters>>,
        /// The table of the last row and its counters.
        last: Option<(Arc<TableSchema>, Arc<TableCounters>)>,
        /// Tables started and not done. Sets, not counts: a table started again after a
        /// reconnect is still one table.
        copying: HashSet<TableName>,
        done: HashSet<TableName>,
        planned: Option<usize>,
    }

    impl std::fmt::Debug for EventMetrics {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("EventMetrics")
                .field("source", &self.source)
                .field("tables", &self.tables.len())
                .field("copying", &self.copying.len())
                .field("done", &self.done.len())
                .field("planned", &self.planned)
                .finish()
        }
    }

    impl EventMetrics {
        pub(crate) fn new(source: Option<&'static str>) -> Self {
            EventMetrics {
                source,
                tables: HashMap::new(),
                last: None,
                copying: HashSet::new(),
                done: HashSet::new(),
                planned: None,
            }
        }

        pub(crate) fn observe(&mut self, event: &ChangeEvent) {
            let Some(source) = self.source else {
                return;
            };
            match event {
                ChangeEvent::Row(row) => {
                    let counters = self.counters(source, &row.table);
                    let counter = match (row.snapshot, row.op) {
                        (true, _) => &counters.snapshot,
                        (false, Op::Insert) => &counters.insert,
                        (false, Op::Update) => &counters.update,
                        (false, Op::Delete) => &counters.delete,
                    };
                    counter.increment(1);
                }
                ChangeEvent::Snapshot(SnapshotProgress::TableStarted { table, .. }) => {
                    self.copying.insert(table.clone());
                    self.publish_tables(source);
                }
                ChangeEvent::Snapshot(SnapshotProgress::TableDone { table, .. }) => {
                    self.copying.remove(table);
                    self.done.insert(table.clone());
                    self.publish_tables(source);
                }
                ChangeEvent::Snapshot(SnapshotProgress::Done { .. }) => {
                    // Tables a resumed snapshot had finished before get a start event and no
                    // done event: at the end, every table is done.
                    let copying = std::mem::take(&mut self.copying);
                    self.done.extend(copying);
                    self.planned = self.planned.map(|_| self.done.len());
                    self.publish_tables(source);
                }
                _ => {}
            }
        }

        /// The counters of `table`: rows come in runs of one table, so the last table's are
        /// kept at hand (compared by schema pointer, which the held `Arc` keeps unique) and
        /// the map is searched only when the table changes.
        fn counters(
            &mut self,
            source: &'static str,
            table: &Arc<TableSchema>,
        ) -> Arc<TableCounters> {
            if let Some((last, counters)) = &self.last {
                if Arc::ptr_eq(last, table) {
                    return counters.clone();
                }
            }
            let counters = match self.tables.get(&table.name) {
                Some(c) => c.clone(),
                None => {
                    let name = table.name.to_string();
                    let c = Arc::new(TableCounters {
                        insert: counter!(ROWS_TOTAL, "source" => source, "table" => name.clone(), "op" => Op::Insert.as_str()),
                        update: counter!(ROWS_TOTAL, "source" => source, "table" => name.clone(), "op" => Op::Update.as_str()),
                        delete: counter!(ROWS_TOTAL, "source" => source, "table" => name.clone(), "op" => Op::Delete.as_str()),
                        snapshot: counter!(SNAPSHOT_ROWS_TOTAL, "source" => source, "table" => name),
                    });
                    self.tables.insert(table.name.clone(), c.clone());
                    c
                }
            };
            self.last = Some((table.clone(), counters.clone()));
            counters
        }

        pub(crate) fn plan_snapshot(&mut self, tables: usize) {
            self.planned = Some(tables);
            if let Some(source) = self.source {
                self.publish_tables(source);
            }
        }

        fn publish_tables(&self, source: &'static str) {
            let copying = self.copying.len();
            let done = self.done.len();
            gauge!(SNAPSHOT_TABLES, "source" => source, "state" => "copying").set(copying as f64);
            gauge!(SNAPSHOT_TABLES, "source" => source, "state" => "done").set(done as f64);
            if let Some(planned) = self.planned {
                let pending = planned.saturating_sub(copying + done);
                gauge!(SNAPSHOT_TABLES, "source" => source, "state" => "pending")
                    .set(pending as f64);
            }
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    use crate::event::ChangeEvent;

    /// Without the feature: records nothing, costs nothing.
    #[derive(Default)]
    pub(crate) struct SourceMetrics;

    impl SourceMetrics {
        pub(crate) fn new(_source: &'static str) -> Self {
            SourceMetrics
        }
        pub(crate) fn transaction(&self) {}
        pub(crate) fn bytes(&self, _n: u64) {}
        pub(crate) fn reconnect(&self) {}
        pub(crate) fn lag_seconds(&self, _seconds: f64) {}
        pub(crate) fn lag_bytes(&self, _n: u64) {}
        pub(crate) fn retained_bytes(&self, _n: u64) {}
        pub(crate) fn history_budget_bytes(&self, _n: u64) {}
    }

    /// Without the feature: records nothing.
    #[derive(Debug)]
    pub(crate) struct EventMetrics;

    impl EventMetrics {
        pub(crate) fn new(_source: Option<&'static str>) -> Self {
            EventMetrics
        }
        pub(crate) fn observe(&mut self, _event: &ChangeEvent) {}
        pub(crate) fn plan_snapshot(&mut self, _tables: usize) {}
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use super::{EventMetrics, SourceMetrics};
    use crate::event::{ChangeEvent, OldImage, Op, RowChange, SnapshotProgress};
    use crate::schema::{RowIdentity, TableName, TableSchema};
    use crate::Checkpoint;

    /// Every series as `name{label=value,…}` → its value (counters as integers, gauges as
    /// f64 bits, as `metrics` stores them in an `AtomicU64`).
    #[derive(Default)]
    struct Memory {
        series: Mutex<BTreeMap<String, (bool, Arc<AtomicU64>)>>,
    }

    impl Memory {
        fn cell(&self, key: &Key, gauge: bool) -> Arc<AtomicU64> {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let mut series = self.series.lock().unwrap();
            series
                .entry(name)
                .or_insert_with(|| (gauge, Arc::new(AtomicU64::new(0))))
                .1
                .clone()
        }

        fn get(&self, name: &str) -> Option<f64> {
            let series = self.series.lock().unwrap();
            let (gauge, cell) = series.get(name)?;
            let bits = cell.load(Ordering::Relaxed);
            Some(if *gauge {
                f64::from_bits(bits)
            } else {
                bits as f64
            })
        }
    }

    impl Recorder for Memory {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.cell(key, false))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.cell(key, true))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    fn table(name: &str) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            name: TableName::new("public", name),
            source_id: None,
            columns: Vec::new(),
            identity: RowIdentity::PrimaryKey,
        })
    }

    fn row(table: &Arc<TableSchema>, op: Op, snapshot: bool) -> ChangeEvent {
        ChangeEvent::Row(RowChange {
            op,
            table: table.clone(),
            old: None,
            old_image: OldImage::None,
            new: None,
            snapshot,
        })
    }

    #[test]
    fn rows_by_table_and_op_and_snapshot_tables_by_state() {
        let memory = Memory::default();
        metrics::with_local_recorder(&memory, || {
            let (a, b) = (table("a"), table("b"));
            let mut m = EventMetrics::new(Some("postgres"));
            m.plan_snapshot(3);
            let started = |t: &str| {
                ChangeEvent::Snapshot(SnapshotProgress::TableStarted {
                    table: TableName::new("public", t),
                    estimated_rows: None,
                })
            };
            m.observe(&started("a"));
            m.observe(&row(&a, Op::Insert, true));
            m.observe(&row(&a, Op::Insert, true));
            let tables = |state: &str| {
                memory.get(&format!(
                    "powersync_source_snapshot_tables{{source=postgres,state={state}}}"
                ))
            };
            assert_eq!(
                (tables("pending"), tables("copying"), tables("done")),
                (Some(2.0), Some(1.0), Some(0.0))
            );
            m.observe(&ChangeEvent::Snapshot(SnapshotProgress::TableDone {
                table: TableName::new("public", "a"),
                rows: 2,
            }));
            // Started again after a reconnect: still one table.
            m.observe(&started("b"));
            m.observe(&started("b"));
            assert_eq!(
                (tables("pending"), tables("copying"), tables("done")),
                (Some(1.0), Some(1.0), Some(1.0))
            );
            m.observe(&ChangeEvent::Snapshot(SnapshotProgress::Done {
                checkpoint: Checkpoint::from_parts("postgres", 1, "00000000/00000000"),
            }));
            assert_eq!(
                (tables("pending"), tables("copying"), tables("done")),
                (Some(0.0), Some(0.0), Some(2.0))
            );
            // Streamed rows, alternating tables (the cache of the last table must follow).
            for op in [Op::Insert, Op::Update, Op::Update, Op::Delete] {
                m.observe(&row(&b, op, false));
                m.observe(&row(&a, op, false));
            }
            let rows = |t: &str, op: &str| {
                memory.get(&format!(
                    "powersync_source_rows_total{{source=postgres,table=public.{t},op={op}}}"
                ))
            };
            assert_eq!(rows("a", "update"), Some(2.0));
            assert_eq!(rows("b", "insert"), Some(1.0));
            assert_eq!(rows("b", "delete"), Some(1.0));
            assert_eq!(
                memory.get("powersync_source_snapshot_rows_total{source=postgres,table=public.a}"),
                Some(2.0)
            );
        });
    }

    #[test]
    fn byte_gauges_exist_only_once_measured() {
        let memory = Memory::default();
        metrics::with_local_recorder(&memory, || {
            let m = SourceMetrics::new("mysql");
            m.transaction();
            m.lag_seconds(1.5);
            assert_eq!(
                memory.get("powersync_source_transactions_total{source=mysql}"),
                Some(1.0)
            );
            assert_eq!(
                memory.get("powersync_source_lag_seconds{source=mysql}"),
                Some(1.5)
            );
            assert_eq!(
                memory.get("powersync_source_history_budget_bytes{source=mysql}"),
                None
            );
            m.retained_bytes(4096);
            assert_eq!(
                memory.get("powersync_source_retained_bytes{source=mysql}"),
                Some(4096.0)
            );
        });
    }
}
