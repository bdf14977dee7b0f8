//! Fault campaigns against the `mirror` of powersync-source.
//!
//! A campaign starts a throwaway source server (PostgreSQL, MariaDB or SecantusDB), puts a TCP
//! [`proxy`] between it and the system under test (the `mirror` binary, run as a black box by
//! [`target`]), and for a fixed time runs a [`bank`] workload on the server while injecting
//! faults from a seeded [`schedule`]: SIGKILL of the mirror, SIGKILL and restart of the server,
//! SIGSTOP/SIGCONT of the server, and network faults in the proxy. The [`check`]ers read every
//! committed state of the mirror's SQLite file ([`mirror_file`]) and, at the end, compare it
//! with the source row for row. [`campaign::run`] ties it together; the `chaos` binary is its
//! command line.
//!
//! The seed is printed; the same seed (and settings) replays the same fault schedule and the
//! same workload choices. Timing still varies from run to run (where in the stream a fault
//! lands), so a replay reproduces the conditions, not necessarily the exact interleaving.

pub mod bank;
pub mod campaign;
pub mod check;
pub mod error;
pub mod mirror_file;
pub mod proxy;
pub mod schedule;
pub mod seed;
pub mod source;
pub mod target;

pub use error::{ChaosError, Result};
