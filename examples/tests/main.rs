//! Integration tests of the example binaries, run against throwaway PostgreSQL servers from
//! the core test kit (skipped with one `SKIPPED:` line when PostgreSQL is not installed).

mod apply_log;
#[cfg(feature = "postgres")]
mod backfill;
#[cfg(feature = "mysql")]
mod backfill_mariadb;
#[cfg(feature = "mongodb")]
mod backfill_mongodb;
mod common;
#[cfg(feature = "convex")]
mod convex;
#[cfg(feature = "jetstream")]
mod jetstream;
#[cfg(feature = "mysql")]
mod mariadb;
mod metrics;
mod mirror;
#[cfg(feature = "mongodb")]
mod mongodb;
mod setup;
mod tail;
