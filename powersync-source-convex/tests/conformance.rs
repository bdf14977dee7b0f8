//! The core conformance scenarios against `FakeConvex`, and against a real deployment when
//! `CONVEX_TEST_URL` and `CONVEX_TEST_DEPLOY_KEY` are set.

use powersync_source_testkit::conformance::{self, Workload};

use powersync_source_convex::testing::{CheckpointMutation, FakeConvex};
use powersync_source_convex::ConvexApi;

use crate::workload::{FakeWorkload, WRONG_KEY};

/// The suite, without the fault scenarios where they cannot run (a hosted deployment cannot be
/// restarted or made to lose history on demand).
pub(crate) async fn run_all<W: Workload>(w: &W, faults: bool, large: i64) {
    let mut suite = conformance::Suite {
        wrong_password: WRONG_KEY.into(),
        large_rows: large,
        ..conformance::Suite::default()
    };
    if !faults {
        suite.skip = vec![
            conformance::Scenario::HistoryLost,
            conformance::Scenario::ServerRestart,
        ];
    }
    suite.assert_passes(w, &String::new).await;
}

/// Runs the suite against a fresh fake (after `set_up`) with sources told `api`, and checks
/// the transport they used: `data_sync` says which one it must be.
async fn run_fake(api: ConvexApi, set_up: impl FnOnce(&FakeConvex), data_sync: bool, large: i64) {
    powersync_source_testkit::init_tracing();
    let w = FakeWorkload::start_with(api).await;
    set_up(&w.fake);
    run_all(&w, true, large).await;
    let (sync, snapshots) = (
        w.fake.requests_to("/api/v1/data/sync"),
        w.fake.requests_to("/api/list_snapshot"),
    );
    if data_sync {
        assert!(
            sync > 0 && snapshots == 0,
            "data sync {sync}, list_snapshot {snapshots}"
        );
    } else {
        assert!(snapshots > 0, "list_snapshot {snapshots}");
        if api == ConvexApi::StreamingExport {
            assert_eq!(sync, 0);
        }
    }
}

/// The default (`api=auto`) on a deployment that serves the Data Sync API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fake_convex() {
    run_fake(ConvexApi::Auto, |_| {}, true, 50_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fake_convex_data_sync() {
    // The Data Sync API has one encoding of its own, whatever streaming export accepts; the
    // walk alternates with the log as the server's does when it falls behind.
    run_fake(
        ConvexApi::DataSync,
        |f| {
            f.set_typed_format(false);
            f.set_data_sync_interleave(true);
        },
        true,
        5_000,
    )
    .await;
}

/// `api=auto` on a deployment from before the Data Sync API: streaming export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fake_convex_auto_without_data_sync() {
    run_fake(
        ConvexApi::Auto,
        |f| f.set_data_sync_available(false),
        false,
        5_000,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fake_convex_streaming_export() {
    run_fake(ConvexApi::StreamingExport, |_| {}, false, 50_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fake_convex_json_fallback() {
    // A deployment that refuses convex_encoded_json: the stream falls back to json.
    run_fake(
        ConvexApi::StreamingExport,
        |f| f.set_typed_format(false),
        false,
        5_000,
    )
    .await;
}

/// PowerSync's createCheckpoint: one marker row patched in place, `null` returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fake_convex_prepared_for_powersync() {
    for api in [ConvexApi::DataSync, ConvexApi::StreamingExport] {
        run_fake(
            api,
            |f| f.set_checkpoint_mutation(CheckpointMutation::PowerSync),
            api == ConvexApi::DataSync,
            5_000,
        )
        .await;
    }
}
