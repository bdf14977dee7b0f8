//! Integration tests against `FakeConvex` (and a real deployment when `CONVEX_TEST_URL` and
//! `CONVEX_TEST_DEPLOY_KEY` are set).
mod behaviour;
mod config;
mod conformance;
mod data_sync;
mod decode_props;
mod deployments;
mod double_data_sync;
mod golden;
mod real;
mod snapshot_gauges;
mod workload;
