//! The one error type every connector returns, split by what a host can do about it.

use std::error::Error as StdError;
use std::fmt;

/// What kind of failure happened, i.e. what the host should do next.
///
/// Only [`ErrorKind::Connection`] is transient: retrying the same operation later may succeed.
/// Every other kind needs a human or a decision (fix a setting, resnapshot, change a table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A connection URL or option is malformed or inconsistent.
    Config,
    /// The server rejected the credentials.
    Auth,
    /// The server is not set up for replication; the message says what and how to fix it.
    Prerequisite,
    /// A network or server failure that may go away (refused, reset, timeout, server restart).
    Connection,
    /// The source no longer holds the history needed to resume (slot invalidated, binlog
    /// purged, resume token too old, CDC retention passed, cursor expired). The host must
    /// start from scratch (resnapshot); a connector never skips the gap silently.
    HistoryLost,
    /// A table changed in a way the stream cannot follow.
    Schema,
    /// A value or message from the server could not be read.
    Decode,
    /// The server or the request uses a feature this connector does not support.
    Unsupported,
    /// A bug in the connector (a panicked stream task, a broken invariant). Not retried;
    /// report it.
    Internal,
}

impl ErrorKind {
    /// Whether retrying the failed operation later can succeed without anyone changing anything.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Connection)
    }

    fn label(self) -> &'static str {
        match self {
            ErrorKind::Config => "configuration error",
            ErrorKind::Auth => "authentication failed",
            ErrorKind::Prerequisite => "source not ready for replication",
            ErrorKind::Connection => "connection error",
            ErrorKind::HistoryLost => "replication history lost",
            ErrorKind::Schema => "schema change not supported",
            ErrorKind::Decode => "could not decode",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// An error from a source, with a kind to act on, a message saying what happened and where,
/// an optional operator hint saying what to do, and the underlying cause.
///
/// Messages must never contain secrets: connectors build them from redacted configuration
/// (see [`crate::secret`]), and the cause chain is rendered through the same `Display`.
pub struct SourceError {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
    code: Option<String>,
    cause: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl SourceError {
    /// A new error of `kind` with a message that says what happened and where.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SourceError {
            kind,
            message: message.into(),
            hint: None,
            code: None,
            cause: None,
        }
    }

    /// Shorthand for [`ErrorKind::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    /// Shorthand for [`ErrorKind::Auth`].
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Auth, message)
    }
    /// Shorthand for [`ErrorKind::Prerequisite`].
    pub fn prerequisite(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Prerequisite, message)
    }
    /// Shorthand for [`ErrorKind::Connection`].
    pub fn connection(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Connection, message)
    }
    /// Shorthand for [`ErrorKind::HistoryLost`].
    pub fn history_lost(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::HistoryLost, message)
    }
    /// Shorthand for [`ErrorKind::Schema`].
    pub fn schema(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Schema, message)
    }
    /// Shorthand for [`ErrorKind::Decode`].
    pub fn decode(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Decode, message)
    }
    /// A value that could not be read, naming the table, column and source type.
    pub fn decode_value(
        table: &str,
        column: &str,
        type_name: &str,
        what: impl fmt::Display,
    ) -> Self {
        Self::new(
            ErrorKind::Decode,
            format!("column {column} ({type_name}) of table {table}: {what}"),
        )
    }
    /// Shorthand for [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Records the server's own code for this failure: a PostgreSQL SQLSTATE (`55006`), a
    /// MySQL error number (`1236`), a MongoDB error code (`286`), a SQL Server error number
    /// (`22985`) or an HTTP status (`401`).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The server's code for this failure, when the server sent one (see
    /// [`SourceError::with_code`]). Branch on this, never on the message text.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Adds what the operator should do.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Attaches the underlying error. Its `Display` becomes part of this error's message, so
    /// it must not carry secrets either.
    pub fn with_source(mut self, cause: impl StdError + Send + Sync + 'static) -> Self {
        self.cause = Some(Box::new(cause));
        self
    }

    /// Prefixes the message with where it happened (e.g. `"snapshot of public.users"`).
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// What happened, without the hint or the cause.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// What the operator should do, if the connector knows.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
    /// Whether retrying later can succeed (see [`ErrorKind::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Render the cause through Display only: foreign Debug impls may print configs.
        let mut d = f.debug_struct("SourceError");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(code) = &self.code {
            d.field("code", code);
        }
        if let Some(hint) = &self.hint {
            d.field("hint", hint);
        }
        if let Some(cause) = &self.cause {
            d.field("cause", &format_args!("{cause}"));
        }
        d.finish()
    }
}

impl StdError for SourceError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Result alias used across the crates.
pub type Result<T, E = SourceError> = std::result::Result<T, E>;
