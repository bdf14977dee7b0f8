//! What real deployments do that the connector must survive (issue 17): deployments prepared
//! for PowerSync, floats that need 17 digits, odd tables, read-only keys, long snapshot pages,
//! components, replaced tables. Each test drives a `FakeConvex` behaviour that follows the
//! Convex server code cited in `src/testing/`.

use powersync_source_convex::testing::{CheckpointMutation, FakeConvex};
use powersync_source_convex::CHECKPOINT_TABLE;
use powersync_source_core::{ChangeEvent, ChangeSource, SnapshotProgress, StartFrom};
use serde_json::json;

use crate::behaviour::{read_until, rows, seed, source};
use crate::workload::KEY;

/// Item 1: PowerSync's `createCheckpoint` (patches one row in place, returns `null`) is
/// accepted by `check()`, and its markers still give checkpoints the stream observes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_prepared_for_powersync_checks_starts_and_checkpoints() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_checkpoint_mutation(CheckpointMutation::PowerSync);
    seed(&fake, "items", 2);
    let src = source(&fake, &["items"]);
    let report = src.check().await.unwrap();
    assert!(report.is_ready(), "{report:?}");
    let mut stream = src.start(StartFrom::Beginning).await.unwrap();
    read_until(&mut stream, |e| {
        matches!(e, ChangeEvent::Snapshot(SnapshotProgress::Done { .. }))
    })
    .await
    .unwrap();
    let mut last = None;
    for _ in 0..3 {
        let marker = src.write_checkpoint().await.unwrap();
        if let Some(prev) = &last {
            assert!(marker > *prev, "{marker} <= {prev}");
        }
        let events = read_until(
            &mut stream,
            |e| matches!(e, ChangeEvent::CheckpointObserved(c) if *c == marker),
        )
        .await
        .unwrap();
        assert_eq!(rows(&events).count(), 0, "marker rows reached the host");
        last = Some(marker);
    }
    // PowerSync's mutation keeps one row, patched in place.
    let markers = fake.documents(CHECKPOINT_TABLE);
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert!(markers[0]
        .get("last_updated")
        .is_some_and(|v| v != &json!(null)));
}
