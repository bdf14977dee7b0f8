//! Driver errors → [`SourceError`] kinds, and server error codes worth naming.

use mongodb::error::{Error, ErrorKind as DriverKind, WriteFailure};
use powersync_source_core::{ErrorKind, SourceError};

/// `ChangeStreamHistoryLost`: the oplog no longer holds the resume point.
pub const CHANGE_STREAM_HISTORY_LOST: i32 = 286;
/// `ChangeStreamFatalError` (older servers: resume token not found in the oplog).
pub const CHANGE_STREAM_FATAL: i32 = 280;
/// `InvalidResumeToken`.
pub const INVALID_RESUME_TOKEN: i32 = 260;
/// `FailedToParse` (a malformed resume token, among others).
pub const FAILED_TO_PARSE: i32 = 9;
/// `Unauthorized`: the user lacks a privilege.
pub const UNAUTHORIZED: i32 = 13;
/// `AuthenticationFailed`.
pub const AUTHENTICATION_FAILED: i32 = 18;
/// `NoMatchingDocument`: `fullDocument: 'required'` found no post-image.
pub const NO_MATCHING_DOCUMENT: i32 = 47;

/// Server error codes after which retrying (and resuming a change stream) can succeed: the
/// driver's list of resumable change-stream errors plus shutdown/step-down codes.
const TRANSIENT_CODES: &[i32] = &[
    6, 7, 89, 91, 133, 150, 189, 262, 9001, 10107, 11600, 11602, 13388, 13435, 13436, 63, 234, 43,
];

/// The server error code of a driver error, if it has one.
pub fn server_code(e: &Error) -> Option<i32> {
    match e.kind.as_ref() {
        DriverKind::Command(c) => Some(c.code),
        DriverKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        DriverKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        _ => None,
    }
}

/// The kind a driver error belongs to.
pub fn classify(e: &Error) -> ErrorKind {
    match e.kind.as_ref() {
        DriverKind::Authentication { .. } => ErrorKind::Auth,
        DriverKind::InvalidArgument { .. }
        | DriverKind::InvalidTlsConfig { .. }
        | DriverKind::DnsResolve { .. } => ErrorKind::Config,
        DriverKind::Io(_)
        | DriverKind::ServerSelection { .. }
        | DriverKind::ConnectionPoolCleared { .. } => ErrorKind::Connection,
        DriverKind::BsonDeserialization(_) | DriverKind::InvalidResponse { .. } => {
            ErrorKind::Decode
        }
        _ => match server_code(e) {
            Some(CHANGE_STREAM_HISTORY_LOST) | Some(CHANGE_STREAM_FATAL) => ErrorKind::HistoryLost,
            Some(AUTHENTICATION_FAILED) => ErrorKind::Auth,
            Some(UNAUTHORIZED) | Some(NO_MATCHING_DOCUMENT) => ErrorKind::Prerequisite,
            Some(code) if TRANSIENT_CODES.contains(&code) => ErrorKind::Connection,
            _ if e.contains_label("ResumableChangeStreamError")
                || e.contains_label("RetryableWriteError")
                || e.contains_label("NetworkError") =>
            {
                ErrorKind::Connection
            }
            _ => ErrorKind::Unsupported,
        },
    }
}

/// Wraps a driver error with what was being done, keeping the server's error code
/// ([`SourceError::code`], e.g. `286` for `ChangeStreamHistoryLost`). The driver's message
/// never contains the password (it prints no connection string), so it is kept as the cause.
pub fn driver_error(context: impl std::fmt::Display, e: Error) -> SourceError {
    let kind = classify(&e);
    let hint = match kind {
        ErrorKind::Auth => Some("check the user name, password and authSource in the URL"),
        ErrorKind::HistoryLost => Some(
            "the oplog no longer holds this position: start from the beginning (resnapshot), and size the oplog (replSetResizeOplog) to cover the longest pause",
        ),
        ErrorKind::Prerequisite if server_code(&e) == Some(NO_MATCHING_DOCUMENT) => Some(
            "a post-image was not available: enable changeStreamPreAndPostImages on the collection (post_images=auto_configure does it) or use post_images=off",
        ),
        ErrorKind::Prerequisite => Some(
            "grant the user the privileges listed by check() (e.g. the read role on the database, plus readWrite on _powersync_checkpoints)",
        ),
        _ => None,
    };
    let code = server_code(&e);
    let mut err = SourceError::new(kind, context.to_string()).with_source(e);
    if let Some(code) = code {
        err = err.with_code(code.to_string());
    }
    match hint {
        Some(h) => err.with_hint(h),
        None => err,
    }
}

/// Maps an error from opening or reading a change stream at a stored position: an invalid or
/// unknown token is `HistoryLost` as well (the position cannot be honoured).
pub fn resume_error(context: impl std::fmt::Display, e: Error) -> SourceError {
    match server_code(&e) {
        Some(code @ (INVALID_RESUME_TOKEN | FAILED_TO_PARSE)) => {
            SourceError::history_lost(format!("{context}: the server rejected the resume token"))
                .with_code(code.to_string())
                .with_source(e)
                .with_hint("start from the beginning (resnapshot)")
        }
        _ => driver_error(context, e),
    }
}
