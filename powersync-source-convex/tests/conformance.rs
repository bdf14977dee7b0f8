//! The core conformance scenarios against `FakeConvex`, and against a real deployment when
//! `CONVEX_TEST_URL` and `CONVEX_TEST_DEPLOY_KEY` are set.

use std::time::Duration;

use powersync_source_core::testkit::conformance::{self, Workload};

use crate::workload::{FakeWorkload, WRONG_KEY};

pub(crate) async fn run_all<W: Workload>(w: &W, faults: bool, large: i64) {
    let mut failures = Vec::new();
    macro_rules! scenario {
        ($name:literal, $e:expr) => {
            let started = std::time::Instant::now();
            match $e.await {
                Ok(()) => eprintln!("conformance {}: ok ({:?})", $name, started.elapsed()),
                Err(e) => {
                    eprintln!("conformance {}: FAILED: {e}", $name);
                    failures.push(format!("{}: {e}", $name));
                }
            }
        };
    }
    scenario!(
        "bad credentials give Auth",
        conformance::bad_credentials(w, WRONG_KEY)
    );
    scenario!(
        "missing prerequisite names the setting",
        conformance::missing_prerequisite(w)
    );
    scenario!(
        "snapshot while writing converges",
        conformance::snapshot_while_writing(w)
    );
    scenario!(
        "resume from checkpoint",
        conformance::resume_from_checkpoint(w)
    );
    scenario!("truncate", conformance::truncate(w));
    scenario!("add/drop column", conformance::add_drop_column(w));
    scenario!(
        "idle write checkpoint",
        conformance::idle_write_checkpoint(w, Duration::from_secs(5))
    );
    scenario!(
        "large transaction",
        conformance::large_transaction(w, large, 1000)
    );
    if faults {
        scenario!("history lost", conformance::history_lost(w));
        scenario!(
            "server killed and restarted",
            conformance::server_restart(w)
        );
    }
    assert!(
        failures.is_empty(),
        "conformance failures:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fake_convex() {
    powersync_source_core::testkit::init_tracing();
    let w = FakeWorkload::start().await;
    run_all(&w, true, 50_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fake_convex_json_fallback() {
    powersync_source_core::testkit::init_tracing();
    let w = FakeWorkload::start().await;
    // A deployment that refuses convex_encoded_json: the stream falls back to json.
    w.fake.set_typed_format(false);
    run_all(&w, true, 5_000).await;
}
