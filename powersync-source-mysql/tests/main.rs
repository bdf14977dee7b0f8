//! Integration tests against a throwaway MariaDB (and a real MySQL when `MYSQL_TEST_URL` is set).
mod backfill;
mod backfill_model;
mod conformance;
mod databases;
mod decoders;
mod faults;
mod mysql_env;
mod retention;
mod runtime;
mod snapshot_gauges;
mod snapshot_reader;
mod types;
mod workload;
