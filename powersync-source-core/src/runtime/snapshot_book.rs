//! Snapshot progress bookkeeping: which tables are done, where a partly read table resumes,
//! and the progress events a host stores to resume an interrupted snapshot.

use std::collections::BTreeMap;

use crate::checkpoint::Checkpoint;
use crate::event::{ChangeEvent, SnapshotProgress};
use crate::schema::TableName;
use crate::snapshot::{SnapshotResume, TableProgress};

/// Where reading one table starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableStart {
    /// The table was read completely before: skip it.
    Skip,
    /// Read the table from its first row.
    Fresh,
    /// Read the rows after `after_key` (the connector's encoding of the last emitted key);
    /// `rows` were emitted before.
    Resume {
        /// The connector-specific key encoding given to [`SnapshotBook::chunk_done`].
        after_key: String,
        /// Rows already emitted.
        rows: u64,
    },
}

/// The resume map of one snapshot and the events that report it.
///
/// Every [`SnapshotProgress::ChunkDone`] carries the whole map as a [`SnapshotResume`], so a
/// host that stores the rows before it and then its `resume` can restart the snapshot from
/// there ([`crate::StartFrom::Snapshot`]) without reading a finished chunk again.
#[derive(Debug, Clone)]
pub struct SnapshotBook {
    stream_from: Checkpoint,
    tables: BTreeMap<String, TableProgress>,
    source_state: Option<String>,
}

impl SnapshotBook {
    /// A snapshot consistent with `stream_from`, with nothing read yet.
    pub fn new(stream_from: Checkpoint) -> Self {
        SnapshotBook {
            stream_from,
            tables: BTreeMap::new(),
            source_state: None,
        }
    }

    /// Continues an interrupted snapshot.
    pub fn resume(from: &SnapshotResume) -> Self {
        SnapshotBook {
            stream_from: from.stream_from.clone(),
            tables: from.tables.clone(),
            source_state: from.source_state.clone(),
        }
    }

    /// Sets the connector-specific state carried in every resume token (e.g. a pinned
    /// snapshot timestamp).
    pub fn set_source_state(&mut self, state: Option<String>) {
        self.source_state = state;
    }

    /// The connector-specific state.
    pub fn source_state(&self) -> Option<&str> {
        self.source_state.as_deref()
    }

    /// Where streaming continues once the snapshot is done.
    pub fn stream_from(&self) -> &Checkpoint {
        &self.stream_from
    }

    /// Where reading `table` starts.
    pub fn start(&self, table: &TableName) -> TableStart {
        match self.tables.get(&table.to_string()) {
            Some(TableProgress::Done { .. }) => TableStart::Skip,
            Some(TableProgress::Partial { after_key, rows }) => TableStart::Resume {
                after_key: after_key.clone(),
                rows: *rows,
            },
            None => TableStart::Fresh,
        }
    }

    /// Whether every table in `tables` is done.
    pub fn all_done<'a>(&self, mut tables: impl Iterator<Item = &'a TableName>) -> bool {
        tables.all(|t| self.start(t) == TableStart::Skip)
    }

    /// The event that reports reading `table` starts (or resumes).
    pub fn table_started(&self, table: &TableName, estimated_rows: Option<u64>) -> ChangeEvent {
        ChangeEvent::Snapshot(SnapshotProgress::TableStarted {
            table: table.clone(),
            estimated_rows,
        })
    }

    /// Records that every row of `table` up to and including the key encoded as `after_key`
    /// was emitted (`rows_done` in all), and returns the event carrying the resume token.
    pub fn chunk_done(
        &mut self,
        table: &TableName,
        after_key: String,
        rows_done: u64,
        estimated_rows: Option<u64>,
    ) -> ChangeEvent {
        self.tables.insert(
            table.to_string(),
            TableProgress::Partial {
                after_key,
                rows: rows_done,
            },
        );
        ChangeEvent::Snapshot(SnapshotProgress::ChunkDone {
            table: table.clone(),
            rows_done,
            estimated_rows,
            resume: Box::new(self.token()),
        })
    }

    /// Records that `table` was read completely (`rows` in all) and returns its event.
    pub fn table_done(&mut self, table: &TableName, rows: u64) -> ChangeEvent {
        self.tables
            .insert(table.to_string(), TableProgress::Done { rows });
        ChangeEvent::Snapshot(SnapshotProgress::TableDone {
            table: table.clone(),
            rows,
        })
    }

    /// The event that ends the snapshot; streaming continues from [`Self::stream_from`].
    pub fn done(&self) -> ChangeEvent {
        ChangeEvent::Snapshot(SnapshotProgress::Done {
            checkpoint: self.stream_from.clone(),
        })
    }

    /// The resume token as of now.
    pub fn token(&self) -> SnapshotResume {
        SnapshotResume {
            stream_from: self.stream_from.clone(),
            tables: self.tables.clone(),
            source_state: self.source_state.clone(),
        }
    }
}
