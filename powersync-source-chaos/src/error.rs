//! The runner's error type: something kept a campaign from running (a server that would not
//! start, a workload query that failed for good), as opposed to a violation the campaign found.

/// Why a campaign could not run. Messages name what was being done; causes are attached as
/// sources. Nothing here carries a password (the throwaway servers have none).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A throwaway server could not be started or driven.
    #[error("{context}: {source}")]
    Server {
        /// What was being done.
        context: String,
        /// The test kit's error.
        #[source]
        source: powersync_source_testkit::TestkitError,
    },
    /// A query of the workload or of the checkers failed.
    #[error("{context}: {message}")]
    Database {
        /// What was being done.
        context: String,
        /// The client's message.
        message: String,
    },
    /// Reading the mirror's SQLite file failed.
    #[error("reading the mirror file: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Starting or signalling a process, or a file of the campaign.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else, already worded for the user.
    #[error("{0}")]
    Other(String),
}

impl ChaosError {
    /// A database error with its context.
    pub fn database(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        ChaosError::Database {
            context: context.into(),
            message: err.to_string(),
        }
    }

    /// An I/O error with its context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ChaosError::Io {
            context: context.into(),
            source,
        }
    }

    /// A test-kit error with its context.
    pub fn server(
        context: impl Into<String>,
        source: powersync_source_testkit::TestkitError,
    ) -> Self {
        ChaosError::Server {
            context: context.into(),
            source,
        }
    }
}

/// Result of the runner's operations.
pub type Result<T, E = ChaosError> = std::result::Result<T, E>;
