//! An in-memory `metrics` recorder for tests of a connector's gauges.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Gauges of one test, recorded in memory: `name{label=value,…}` → value (counters and
/// histograms are dropped). Installed with [`metrics::with_local_recorder`] around a
/// current-thread runtime, so the stream task (spawned on that thread) records into it and
/// tests running in parallel do not see each other's series.
#[derive(Debug, Default)]
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
