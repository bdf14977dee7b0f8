//! tiberius errors → [`SourceError`] kinds.

use powersync_source_core::SourceError;

/// Maps a tiberius error raised while doing `what`.
pub fn sql_error(e: tiberius::error::Error, what: &str) -> SourceError {
    use tiberius::error::Error as E;
    let err = match &e {
        E::Io { .. } | E::Tls(_) | E::Routing { .. } => {
            SourceError::connection(format!("{what}: connection failed"))
        }
        E::Protocol(_)
        | E::Encoding(_)
        | E::Conversion(_)
        | E::Utf8
        | E::Utf16
        | E::ParseInt(_) => {
            SourceError::decode(format!("{what}: the server sent something unreadable"))
        }
        E::Server(t) => server_error(t.code(), t.class(), what),
        _ => SourceError::connection(format!("{what}: connection failed")),
    };
    // tiberius messages carry no credentials (login errors say "Login failed for user 'x'").
    err.with_source(e)
}

/// Maps a server error number (and severity class) raised while doing `what`. The number is
/// kept as the error's [`SourceError::code`]: hosts branch on it, never on the text.
fn server_error(code: u32, class: u8, what: &str) -> SourceError {
    let msg = format!("{what}: server error {code} (class {class})");
    let err = match code {
        // Login failed; cannot open the database named at login.
        18456 | 18452 | 4060 => SourceError::auth(msg),
        // Permission denied on an object, schema or database; 916: the login cannot enter a
        // database (msdb with its guest user disabled), which capture_job reports as unknown.
        229 | 230 | 262 | 297 | 300 | 916 => {
            SourceError::prerequisite(msg).with_hint("grant the permissions listed by check()")
        }
        // Snapshot isolation not allowed in this database.
        3952 => SourceError::prerequisite(msg)
            .with_hint("ALTER DATABASE <db> SET ALLOW_SNAPSHOT_ISOLATION ON;"),
        // Invalid column / object name: a table or capture instance changed.
        207 | 208 => SourceError::schema(msg),
        // Deadlock victim, lock timeout, database in transition, server shutting down; 3961:
        // DDL on a table during the snapshot transaction (a new snapshot transaction reads the
        // new version).
        1205 | 1222 | 952 | 3961 | 6005 | 40197 | 40501 | 40613 | 49918 | 49919 | 49920 => {
            SourceError::connection(msg)
        }
        // LSN range outside what the capture instance holds.
        313 => SourceError::history_lost(msg)
            .with_hint("the change table no longer holds the requested LSN range; resnapshot"),
        _ if class >= 20 => SourceError::connection(msg),
        _ => SourceError::decode(msg),
    };
    err.with_code(code.to_string())
}

#[cfg(test)]
mod tests {
    use powersync_source_core::ErrorKind;

    use super::server_error;

    #[test]
    fn server_errors_keep_their_number_as_the_code() {
        for (code, class, kind) in [
            (18456, 14, ErrorKind::Auth),
            (229, 14, ErrorKind::Prerequisite),
            (916, 14, ErrorKind::Prerequisite),
            (3952, 16, ErrorKind::Prerequisite),
            (3961, 16, ErrorKind::Connection),
            (1222, 16, ErrorKind::Connection),
            (207, 16, ErrorKind::Schema),
            (208, 16, ErrorKind::Schema),
            (1205, 13, ErrorKind::Connection),
            (313, 16, ErrorKind::HistoryLost),
            (50000, 21, ErrorKind::Connection),
            (50000, 16, ErrorKind::Decode),
        ] {
            let e = server_error(code, class, "reading");
            assert_eq!(e.kind(), kind, "{code}");
            assert_eq!(e.code(), Some(code.to_string().as_str()));
        }
    }
}
