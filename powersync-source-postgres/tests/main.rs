//! Integration tests.
mod pgoutput;
