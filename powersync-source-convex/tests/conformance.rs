//! The core conformance scenarios against `FakeConvex`, and against a real deployment when
//! `CONVEX_TEST_URL` and `CONVEX_TEST_DEPLOY_KEY` are set.

use powersync_source_testkit::conformance::{self, Workload};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fake_convex() {
    powersync_source_testkit::init_tracing();
    let w = FakeWorkload::start().await;
    run_all(&w, true, 50_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fake_convex_json_fallback() {
    powersync_source_testkit::init_tracing();
    let w = FakeWorkload::start().await;
    // A deployment that refuses convex_encoded_json: the stream falls back to json.
    w.fake.set_typed_format(false);
    run_all(&w, true, 5_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fake_convex_prepared_for_powersync() {
    powersync_source_testkit::init_tracing();
    let w = FakeWorkload::start().await;
    // PowerSync's createCheckpoint: one marker row patched in place, `null` returned.
    w.fake
        .set_checkpoint_mutation(powersync_source_convex::testing::CheckpointMutation::PowerSync);
    run_all(&w, true, 5_000).await;
}
