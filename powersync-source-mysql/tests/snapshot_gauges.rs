//! `powersync_source_snapshot_tables{state}`: the snapshot plans every table it reads (so
//! `pending` is reported) and ends with all of them done.

use std::time::Duration;

use powersync_source_core::{ChangeSource, StartFrom, TableName};
use powersync_source_mysql::mysql_async::prelude::Queryable;
use powersync_source_mysql::{MySqlConfig, MySqlSource};
use powersync_source_testkit::conformance::{drive, Oracle};

use crate::workload::{MariaWorkload, PASSWORD};
use powersync_source_testkit::gauges::Gauges;

#[test]
fn snapshot_tables_reach_all_done() {
    let gauges = Gauges::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ran = metrics::with_local_recorder(&gauges, || {
        runtime.block_on(async {
            let Some(w) = MariaWorkload::start().await else {
                return false;
            };
            let mut conn = w.conn().await.expect("connect");
            conn.query_drop(
                "CREATE TABLE test.gauge_a (id INT PRIMARY KEY, v TEXT); \
                 CREATE TABLE test.gauge_b (id INT PRIMARY KEY, v TEXT); \
                 INSERT INTO test.gauge_a VALUES (1, 'a'), (2, 'b'); \
                 INSERT INTO test.gauge_b VALUES (1, 'c')",
            )
            .await
            .expect("create");
            let source =
                MySqlSource::new(MySqlConfig::parse(&w.url("rep", PASSWORD)).expect("url"))
                    .with_tables(vec![
                        TableName::new("test", "gauge_a"),
                        TableName::new("test", "gauge_b"),
                    ]);
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
            gauges.snapshot_tables("mysql"),
            [Some(0.0), Some(0.0), Some(2.0)],
            "pending, copying, done"
        );
    }
}
