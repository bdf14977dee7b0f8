//! MongoDB connector tests: unit-level decoding on documented shapes, and end-to-end runs
//! against a throwaway SecantusDB (or a real MongoDB with `MONGODB_TEST_URL`).

mod backfill;
mod common;
mod conformance;
mod databases;
mod events;
mod faults;
mod golden;
mod properties;
mod resume_shape;
mod runtime;
mod snapshot_gauges;
mod streaming;
