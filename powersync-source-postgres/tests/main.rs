//! Integration tests.
mod backfill;
#[cfg(feature = "provision")]
mod backfill_setup;
mod conformance;
mod connection;
mod faults;
mod pgoutput;
mod publication_changes;
mod publication_exact;
mod retention;
mod streaming;
mod type_paths;
mod types;
