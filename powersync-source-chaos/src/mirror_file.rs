//! Reading the committed state of a `mirror` SQLite file (layout: `powersync_source_sqlite`'s
//! docs: the table `accounts`, and the stored position under the key `checkpoint` of
//! `_powersync_mirror_state`) while the mirror writes it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::bank::{AccountRow, PayloadDigest, TABLE};
use crate::check::MirrorState;
use crate::error::Result;

/// The state table of the SQLite sink.
const STATE_TABLE: &str = "_powersync_mirror_state";
/// Its key of the stored position.
const POSITION_KEY: &str = "checkpoint";

/// A reader of a mirror file. The file is in WAL mode, so a read transaction sees one
/// committed state while the mirror goes on writing.
#[derive(Debug)]
pub struct MirrorFile {
    path: PathBuf,
    conn: Option<Connection>,
}

impl MirrorFile {
    /// A reader of `path` (which may not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MirrorFile {
            path: path.into(),
            conn: None,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&mut self) -> Result<Option<&mut Connection>> {
        if self.conn.is_none() {
            if !self.path.exists() {
                return Ok(None);
            }
            // Read-write without create: a reader of a WAL file needs to write the shared
            // memory index, and SQLite's recovery after a killed writer is atomic.
            let conn = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(Duration::from_secs(5))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut())
    }

    /// The committed state, or `None` when the file or its tables do not exist yet. With
    /// `payloads`, every payload is read and digested (slower); without, payloads are `None`.
    pub fn read(&mut self, payloads: bool) -> Result<Option<MirrorState>> {
        let Some(conn) = self.conn()? else {
            return Ok(None);
        };
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
        let tables: i64 = tx.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?1, ?2)",
            [STATE_TABLE, TABLE],
            |r| r.get(0),
        )?;
        if tables < 2 {
            return Ok(None);
        }
        let checkpoint: Option<String> = tx
            .query_row(
                &format!("SELECT value FROM {STATE_TABLE} WHERE key = ?1"),
                [POSITION_KEY],
                |r| r.get(0),
            )
            .optional()?
            .flatten()
            .filter(|c: &String| !c.trim().is_empty());
        let sql = if payloads {
            format!("SELECT id, balance, version, payload FROM {TABLE} ORDER BY id")
        } else {
            format!("SELECT id, balance, version, NULL FROM {TABLE} ORDER BY id")
        };
        let mut stmt = tx.prepare(&sql)?;
        let rows = stmt
            .query_map([], |r| {
                let payload = match r.get_ref(3)? {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        Some(PayloadDigest::of(t))
                    }
                    _ => None,
                };
                Ok(AccountRow {
                    id: integer(r, 0)?,
                    balance: integer(r, 1)?,
                    version: integer(r, 2)?,
                    payload,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        tx.finish()?;
        Ok(Some(MirrorState { checkpoint, rows }))
    }
}

/// An integer column; NULL or another type reads as `i64::MIN` so that the checkers report
/// the row instead of the reader failing.
fn integer(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<i64> {
    Ok(match r.get_ref(i)? {
        rusqlite::types::ValueRef::Integer(v) => v,
        _ => i64::MIN,
    })
}
