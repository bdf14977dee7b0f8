//! `powersync_source_snapshot_tables{state}`: the snapshot plans every table it reads (so
//! `pending` is reported) and ends with all of them done.

use powersync_source_core::{ChangeSource, StartFrom};

use crate::fake::FakeServer;
use crate::support::*;
use crate::workload::fake_source;
use powersync_source_testkit::gauges::Gauges;

#[test]
fn snapshot_tables_reach_all_done() {
    let gauges = Gauges::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    metrics::with_local_recorder(&gauges, || {
        runtime.block_on(async {
            let server = FakeServer::new();
            let a = simple_table(&server, "a");
            let b = simple_table(&server, "b");
            let c = simple_table(&server, "c");
            server.transaction(&[ins(&a, 1, "a1"), ins(&b, 1, "b1"), ins(&a, 2, "a2")]);
            let source = fake_source(&server, vec![a, b, c], "");
            let mut stream = source.start(StartFrom::Beginning).await.expect("start");
            read_until(&mut stream, snapshot_done)
                .await
                .expect("the snapshot");
        })
    });
    assert_eq!(
        gauges.snapshot_tables("mssql"),
        [Some(0.0), Some(0.0), Some(3.0)],
        "pending, copying, done"
    );
}
