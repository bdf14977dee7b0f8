//! Integration tests of the core crate.
mod position;
mod error;
mod stream;
mod testkit;
mod normalize;
