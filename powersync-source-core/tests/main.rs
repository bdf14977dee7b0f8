//! Integration tests of the core crate.
mod backfill;
mod error;
mod normalize;
mod position;
mod runtime;
mod stream;
