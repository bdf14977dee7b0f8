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
        E::Server(t) => {
            let msg = format!("{what}: server error {} (class {})", t.code(), t.class());
            match t.code() {
                // Login failed; cannot open the database named at login.
                18456 | 18452 | 4060 => SourceError::auth(msg),
                // Permission denied on an object, schema or database.
                229 | 230 | 262 | 297 | 300 => SourceError::prerequisite(msg)
                    .with_hint("grant the permissions listed by check()"),
                // Snapshot isolation not allowed in this database.
                3952 => SourceError::prerequisite(msg)
                    .with_hint("ALTER DATABASE <db> SET ALLOW_SNAPSHOT_ISOLATION ON;"),
                // Invalid column / object name: a table or capture instance changed.
                207 | 208 => SourceError::schema(msg),
                // Deadlock victim, lock timeout, database in transition, server shutting down.
                1205 | 1222 | 952 | 6005 | 40197 | 40501 | 40613 | 49918 | 49919 | 49920 => {
                    SourceError::connection(msg)
                }
                // LSN range outside what the capture instance holds.
                313 => SourceError::history_lost(msg).with_hint(
                    "the change table no longer holds the requested LSN range; resnapshot",
                ),
                _ if t.class() >= 20 => SourceError::connection(msg),
                _ => SourceError::decode(msg),
            }
        }
        _ => SourceError::connection(format!("{what}: connection failed")),
    };
    // tiberius messages carry no credentials (login errors say "Login failed for user 'x'").
    err.with_source(e)
}
