//! `powersync_source_snapshot_tables{state}`: the snapshot plans every collection it reads (so
//! `pending` is reported) and ends with all of them done.

use std::time::Duration;

use powersync_source_core::{ChangeSource, StartFrom};
use powersync_source_mongodb::bson::{doc, Document};
use powersync_source_mongodb::{MongoConfig, MongoSource};
use powersync_source_testkit::conformance::{drive, Oracle};

use crate::common::{client, fast_retry, secantus, url};
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
