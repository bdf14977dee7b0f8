//! `powersync_source_snapshot_tables{state}`: the snapshot plans every table it reads (so
//! `pending` is reported) and ends with all of them done, on both transports.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use powersync_source_convex::testing::FakeConvex;
use powersync_source_convex::ConvexApi;
use powersync_source_core::{ChangeEvent, ChangeSource, SnapshotProgress, StartFrom};

use crate::behaviour::{read_until, seed, source_on};
use crate::workload::KEY;

/// Gauges of one test, recorded in memory: `name{label=value,…}` → value (counters and
/// histograms are dropped). Installed with [`metrics::with_local_recorder`] around a
/// current-thread runtime, so the stream task (spawned on that thread) records into it and
/// tests running in parallel do not see each other's series.
#[derive(Default)]
pub struct Gauges {
    series: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

impl Gauges {
    /// The gauge's value, `None` when never set.
    pub fn get(&self, name: &str) -> Option<f64> {
        let series = self.series.lock().expect("not poisoned");
        series
            .get(name)
            .map(|cell| f64::from_bits(cell.load(Ordering::Relaxed)))
    }

    /// `powersync_source_snapshot_tables{source,state}` for pending, copying and done.
    pub fn snapshot_tables(&self, source: &str) -> [Option<f64>; 3] {
        ["pending", "copying", "done"].map(|state| {
            self.get(&format!(
                "powersync_source_snapshot_tables{{source={source},state={state}}}"
            ))
        })
    }
}

impl Recorder for Gauges {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut series = self.series.lock().expect("not poisoned");
        Gauge::from_arc(series.entry(name).or_default().clone())
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Snapshots two seeded tables over `api` and returns the gauges recorded meanwhile.
fn snapshot_gauges(api: ConvexApi) -> [Option<f64>; 3] {
    let gauges = Gauges::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    metrics::with_local_recorder(&gauges, || {
        runtime.block_on(async {
            let fake = FakeConvex::start(KEY).await.expect("fake deployment");
            seed(&fake, "items", 5);
            seed(&fake, "other", 3);
            let source = source_on(&fake, &["items", "other"], api);
            let mut stream = source.start(StartFrom::Beginning).await.expect("start");
            read_until(&mut stream, |e| {
                matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
            })
            .await
            .expect("the snapshot");
        })
    });
    gauges.snapshot_tables("convex")
}

#[test]
fn snapshot_tables_reach_all_done() {
    for api in [ConvexApi::StreamingExport, ConvexApi::DataSync] {
        assert_eq!(
            snapshot_gauges(api),
            [Some(0.0), Some(0.0), Some(2.0)],
            "pending, copying, done over {api:?}"
        );
    }
}
