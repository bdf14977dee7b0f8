//! Integration tests.
mod backfill;
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
