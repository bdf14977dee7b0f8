//! The sink's error type.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;

use powersync_source_core::SourceError;

/// Why the SQLite sink could not apply or commit a change.
///
/// Every variant keeps its cause as [`std::error::Error::source`]; `Display` renders the cause
/// too, so a host that prints only the top-level error still shows what SQLite said. No
/// variant carries row values or connection settings.
#[derive(Debug)]
#[non_exhaustive]
pub enum SinkError {
    /// SQLite refused a statement (disk full, locked file, I/O error, …).
    Sqlite(rusqlite::Error),
    /// The SQLite file could not be opened or prepared.
    Open {
        /// The file.
        path: PathBuf,
        /// What failed.
        cause: Box<SinkError>,
    },
    /// The stored position is neither a checkpoint nor a snapshot resume token (a
    /// [`powersync_source_core::ErrorKind::Config`] error from the core's parser).
    Position(SourceError),
    /// The state table holds an entry this sink cannot read.
    CorruptState {
        /// The state key.
        key: String,
        /// The JSON error.
        cause: serde_json::Error,
    },
    /// A table SQLite cannot hold (e.g. one without columns); the message says what to do.
    Unsupported(String),
}

impl SinkError {
    /// The source-side error inside, if this error came from parsing a position.
    pub fn as_source_error(&self) -> Option<&SourceError> {
        match self {
            SinkError::Position(e) => Some(e),
            SinkError::Open { cause, .. } => cause.as_source_error(),
            _ => None,
        }
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Sqlite(e) => write!(f, "SQLite error: {e}"),
            SinkError::Open { path, cause } => write!(f, "opening {}: {cause}", path.display()),
            SinkError::Position(e) => e.fmt(f),
            SinkError::CorruptState { key, cause } => write!(
                f,
                "{} entry `{key}` is corrupt ({cause}); delete the SQLite file to start over",
                crate::state::STATE_TABLE
            ),
            SinkError::Unsupported(message) => f.write_str(message),
        }
    }
}

impl StdError for SinkError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            SinkError::Sqlite(e) => Some(e),
            SinkError::Open { cause, .. } => Some(cause.as_ref()),
            SinkError::Position(e) => Some(e),
            SinkError::CorruptState { cause, .. } => Some(cause),
            SinkError::Unsupported(_) => None,
        }
    }
}

impl From<rusqlite::Error> for SinkError {
    fn from(e: rusqlite::Error) -> Self {
        SinkError::Sqlite(e)
    }
}
