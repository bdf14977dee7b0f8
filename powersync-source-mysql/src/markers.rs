//! What the connector writes into its own tables and recognises in the binlog: write-checkpoint
//! markers and backfill watermarks (rows of the checkpoint table) and backfill signals (rows of
//! the signal table).
//!
//! Both kinds of checkpoint-table rows use the same columns (`id`, `checkpoint`,
//! `written_at`): a write checkpoint is row 1 holding a checkpoint text, a watermark is row 2
//! holding [`WATERMARK_PREFIX`] and the watermark. A checkpoint text never starts with that
//! prefix, so a stream of an older version of this crate, which parses column 2 as a
//! checkpoint, ignores watermark rows; and tables created by older versions need no change.

use powersync_source_core::backfill::SIGNAL_TABLE;

/// The checkpoint-table row a write checkpoint updates.
pub(crate) const CHECKPOINT_ROW: i32 = 1;

/// The checkpoint-table row a backfill watermark updates (one row whatever the number of
/// watermarks: the binlog keeps every update's after image).
pub(crate) const WATERMARK_ROW: i32 = 2;

/// What a watermark row's `checkpoint` column starts with.
pub(crate) const WATERMARK_PREFIX: &str = "backfill:";

/// The signal table's columns, as `setup` creates it (and a backfill request when missing).
pub(crate) const SIGNAL_COLUMNS: &str = "(id VARCHAR(255) PRIMARY KEY, kind VARCHAR(64) NOT NULL, \
     tables TEXT NOT NULL) ENGINE=InnoDB";

/// The `checkpoint` column text of the watermark `mark`.
pub(crate) fn watermark_text(mark: &str) -> String {
    format!("{WATERMARK_PREFIX}{mark}")
}

/// The watermark a checkpoint-table row's `checkpoint` column carries, if it is one.
pub(crate) fn watermark_of(text: &str) -> Option<&str> {
    text.strip_prefix(WATERMARK_PREFIX)
}

/// The signal table (database, name): next to the checkpoint table, in the same database.
pub(crate) fn signal_table(checkpoint_table: &(String, String)) -> (String, String) {
    (checkpoint_table.0.clone(), SIGNAL_TABLE.to_owned())
}

/// Whether `db.table` is one of the connector's own tables (never replicated as user data).
pub(crate) fn is_internal(db: &str, table: &str, checkpoint_table: &(String, String)) -> bool {
    db == checkpoint_table.0 && (table == checkpoint_table.1 || table == SIGNAL_TABLE)
}

#[cfg(test)]
mod tests {
    use powersync_source_core::Checkpoint;

    use super::*;

    #[test]
    fn watermarks_are_not_checkpoints() {
        let text = watermark_text("low:abc");
        assert_eq!(watermark_of(&text), Some("low:abc"));
        assert!(Checkpoint::parse(&text).is_err());
        assert_eq!(watermark_of("v1|mysql|…"), None);
    }

    #[test]
    fn internal_tables() {
        let cp = ("app".to_owned(), "_powersync_checkpoints".to_owned());
        assert!(is_internal("app", "_powersync_checkpoints", &cp));
        assert!(is_internal("app", "_powersync_signals", &cp));
        assert!(!is_internal("other", "_powersync_signals", &cp));
        assert!(!is_internal("app", "orders", &cp));
        assert_eq!(signal_table(&cp).1, "_powersync_signals");
    }
}
