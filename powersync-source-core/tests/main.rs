//! Integration tests of the core crate.
mod error;
mod normalize;
mod position;
mod runtime;
mod stream;
