//! Tests of the SQL Server connector: the conformance scenarios and CDC-specific scenarios on an
//! in-memory model of SQL Server CDC (always run), and the same against a real server when
//! `MSSQL_TEST_URL` is set.

mod cdc_rules;
mod check;
mod conformance;
mod fake;
mod property;
mod real;
mod scenarios;
mod snapshot_gauges;
mod support;
mod workload;
