//! The demo's error: a message for the user and an exit status.

/// Why the demo stopped, and its exit status.
#[derive(Debug)]
pub(crate) struct DemoError {
    pub(crate) message: String,
    /// 2 when PostgreSQL is missing (nothing to demonstrate), 1 otherwise.
    pub(crate) status: u8,
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A failure with status 1.
pub(crate) fn fail(message: impl Into<String>) -> DemoError {
    DemoError {
        message: message.into(),
        status: 1,
    }
}

/// Words a foreign error for the user: `what: error`.
pub(crate) trait Context<T> {
    fn context(self, what: &str) -> Result<T, DemoError>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: &str) -> Result<T, DemoError> {
        self.map_err(|e| fail(format!("{what}: {e}")))
    }
}
