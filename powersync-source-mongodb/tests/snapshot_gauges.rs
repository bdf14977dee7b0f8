//! `powersync_source_snapshot_tables{state}`: the snapshot plans every collection it reads (so
//! `pending` is reported) and ends with all of them done.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use powersync_source_core::{ChangeSource, StartFrom};
use powersync_source_mongodb::bson::{doc, Document};
use powersync_source_mongodb::{MongoConfig, MongoSource};
use powersync_source_testkit::conformance::{drive, Oracle};

use crate::common::{client, fast_retry, secantus, url};

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

#[test]
fn snapshot_tables_reach_all_done() {
    let gauges = Gauges::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ran = metrics::with_local_recorder(&gauges, || {
        runtime.block_on(async {
            let Some(server) = secantus(&[]).await else {
                return false;
            };
            let driver = client(&url(&server, "", "")).await;
            let shop = driver.database("shop");
            shop.collection::<Document>("a")
                .insert_many([doc! {"_id": 1, "v": "a1"}, doc! {"_id": 2, "v": "a2"}])
                .await
                .expect("insert");
            shop.collection::<Document>("b")
                .insert_one(doc! {"_id": 1, "v": "b1"})
                .await
                .expect("insert");
            let source_url = url(&server, "shop", "post_images=off&max_await_ms=200");
            let source = MongoSource::new(MongoConfig::parse(&source_url).expect("url"))
                .with_retry(fast_retry());
            let mut stream = source.start(StartFrom::Beginning).await.expect("start");
            let mut oracle = Oracle::default();
            drive(&mut stream, &mut oracle, Duration::from_secs(30), |o| {
                o.snapshot_done
            })
            .await
            .expect("the snapshot");
            true
        })
    });
    if ran {
        assert_eq!(
            gauges.snapshot_tables("mongodb"),
            [Some(0.0), Some(0.0), Some(2.0)],
            "pending, copying, done"
        );
    }
}
