//! The core conformance scenarios against a throwaway MariaDB.

use powersync_source_testkit::conformance;

use crate::workload::MariaWorkload;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_mariadb() {
    powersync_source_testkit::init_tracing();
    let Some(w) = MariaWorkload::start().await else {
        return;
    };
    conformance::Suite::default()
        .assert_passes(&w, &|| w.server.log_tail(20))
        .await;
}
