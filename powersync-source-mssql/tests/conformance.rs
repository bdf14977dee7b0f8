//! The core conformance scenarios on the in-memory CDC model (always run).

use std::time::Duration;

use powersync_source_testkit::conformance as c;

use crate::workload::FakeWorkload;

#[tokio::test]
async fn snapshot_while_writing() {
    c::snapshot_while_writing(&FakeWorkload::new())
        .await
        .unwrap();
}

#[tokio::test]
async fn resume_from_checkpoint() {
    c::resume_from_checkpoint(&FakeWorkload::new())
        .await
        .unwrap();
}

#[tokio::test]
async fn server_restart() {
    c::server_restart(&FakeWorkload::new()).await.unwrap();
}

#[tokio::test]
async fn large_transaction() {
    c::large_transaction(&FakeWorkload::new(), 20_000, 4096)
        .await
        .unwrap();
}

#[tokio::test]
async fn add_drop_column_through_new_capture_instances() {
    c::add_drop_column(&FakeWorkload::new()).await.unwrap();
}

#[tokio::test]
async fn idle_write_checkpoint() {
    c::idle_write_checkpoint(&FakeWorkload::new(), Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn history_lost() {
    c::history_lost(&FakeWorkload::new()).await.unwrap();
}

#[tokio::test]
async fn bad_credentials() {
    c::bad_credentials(&FakeWorkload::new(), "not-the-password")
        .await
        .unwrap();
}

#[tokio::test]
async fn missing_prerequisite() {
    c::missing_prerequisite(&FakeWorkload::new()).await.unwrap();
}
