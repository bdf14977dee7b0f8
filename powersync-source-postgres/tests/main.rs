//! Integration tests.
mod pgoutput;
mod conformance;
mod types;
mod faults;
mod connection;
mod publication_changes;
mod type_paths;
