//! Integration tests.
mod pgoutput;
mod conformance;
mod types;
