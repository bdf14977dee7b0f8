//! The core conformance scenarios against a throwaway MariaDB.

use std::time::Duration;

use powersync_source_core::testkit::conformance;

use crate::workload::MariaWorkload;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_mariadb() {
    powersync_source_core::testkit::init_tracing();
    let Some(w) = MariaWorkload::start().await else {
        return;
    };
    let w = &w;
    let mut failures = Vec::new();
    macro_rules! scenario {
        ($name:literal, $e:expr) => {
            let started = std::time::Instant::now();
            match $e.await {
                Ok(()) => eprintln!("conformance {}: ok ({:?})", $name, started.elapsed()),
                Err(e) => {
                    eprintln!(
                        "conformance {}: FAILED: {e}\n{}",
                        $name,
                        w.server.log_tail(20)
                    );
                    failures.push(format!("{}: {e}", $name));
                }
            }
        };
    }
    scenario!(
        "bad credentials give Auth",
        conformance::bad_credentials(w, "wrong-Secret-77")
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
        conformance::large_transaction(w, 20_000, 1000)
    );
    scenario!(
        "server killed and restarted",
        conformance::server_restart(w)
    );
    scenario!("history lost", conformance::history_lost(w));
    assert!(
        failures.is_empty(),
        "conformance failures:\n{}",
        failures.join("\n")
    );
}
