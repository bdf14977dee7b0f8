//! `powersync_source_snapshot_tables{state}`: the snapshot plans every table it reads (so
//! `pending` is reported) and ends with all of them done, on both transports.

use powersync_source_convex::testing::FakeConvex;
use powersync_source_convex::ConvexApi;
use powersync_source_core::{ChangeEvent, ChangeSource, SnapshotProgress, StartFrom};

use crate::behaviour::{read_until, seed, source_on};
use crate::workload::KEY;
use powersync_source_testkit::gauges::Gauges;

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
