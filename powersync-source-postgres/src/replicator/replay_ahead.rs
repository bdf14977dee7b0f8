//! The replay of a committed streamed transaction, read and decoded ahead of the session.
//!
//! After a Stream Commit the session applies the transaction's kept messages in order (see
//! [`super::streamed`]). Reading them back (from memory or the spill file) and decoding the
//! values of their inserts is most of that work and depends on nothing the session does, so
//! a blocking thread does it while the session applies the messages before: a big
//! transaction's replay uses two cores instead of one, and the spill file is read off the
//! async runtime.
//!
//! A decoded row is only a shortcut. The thread follows the relations' column types through
//! the transaction's own Relation messages (pgoutput sends one inside a streamed transaction
//! before its first change of each relation), decodes only relations whose columns are all
//! built-in scalar types (no registry lookups that could go stale) and gives up on anything
//! it cannot decode; the session uses a decoded row only when it was decoded with the column
//! types the relation has when the session applies the insert, and decodes the tuple itself
//! otherwise. Errors are the session's to report: the thread hands on the raw message.

use std::collections::HashMap;
use std::sync::Arc;

use powersync_source_core::{Row, SourceError};
use tokio::sync::mpsc;

use super::apply::decode_values;
use super::streamed::Replay;
use crate::pgoutput::PgOutputMessage;
use crate::types::{ColumnType, TypeRegistry};

/// Messages per batch handed to the session.
const BATCH_MESSAGES: usize = 256;
/// Batches read ahead of the session (bounds the memory the thread can fill).
const BATCHES_AHEAD: usize = 4;

/// An insert's new row, decoded with `types`.
pub(super) struct DecodedRow {
    pub(super) types: Arc<[ColumnType]>,
    pub(super) row: Row,
}

/// Consecutive messages of the replay: their raw bytes, back to back, and for each its
/// range and (for inserts the thread could decode) the new row.
pub(super) struct ReplayBatch {
    bytes: Vec<u8>,
    items: Vec<(usize, usize, Option<DecodedRow>)>,
}

impl ReplayBatch {
    /// The messages in order: raw bytes and decoded row.
    pub(super) fn messages(&mut self) -> impl Iterator<Item = (&[u8], Option<DecodedRow>)> {
        let bytes = &self.bytes;
        self.items
            .drain(..)
            .map(move |(start, end, decoded)| (&bytes[start..end], decoded))
    }
}

/// Starts reading `replay` on a blocking thread. `relations` are the column types of the
/// relations known when the transaction committed; the thread follows Relation messages
/// from there. The receiver yields the batches in order, then ends; a read error is its last
/// item. Dropping the receiver stops the thread.
pub(super) fn spawn(
    replay: Replay,
    relations: HashMap<u32, Arc<[ColumnType]>>,
    registry: Arc<TypeRegistry>,
) -> mpsc::Receiver<Result<ReplayBatch, SourceError>> {
    let (tx, rx) = mpsc::channel(BATCHES_AHEAD);
    tokio::task::spawn_blocking(move || read_ahead(replay, relations, &registry, &tx));
    rx
}

fn read_ahead(
    mut replay: Replay,
    mut relations: HashMap<u32, Arc<[ColumnType]>>,
    registry: &TypeRegistry,
    tx: &mpsc::Sender<Result<ReplayBatch, SourceError>>,
) {
    let mut batch = new_batch();
    loop {
        let bytes = match replay.next_message() {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let decoded = decode_ahead(bytes, &mut relations, registry);
        let start = batch.bytes.len();
        batch.bytes.extend_from_slice(bytes);
        batch.items.push((start, batch.bytes.len(), decoded));
        if batch.items.len() >= BATCH_MESSAGES {
            let full = std::mem::replace(&mut batch, new_batch());
            if tx.blocking_send(Ok(full)).is_err() {
                return;
            }
        }
    }
    if !batch.items.is_empty() {
        let _ = tx.blocking_send(Ok(batch));
    }
}

fn new_batch() -> ReplayBatch {
    ReplayBatch {
        bytes: Vec::with_capacity(BATCH_MESSAGES * 128),
        items: Vec::with_capacity(BATCH_MESSAGES),
    }
}

/// Follows a Relation message, or decodes an insert's new row when its relation is all
/// built-in scalars; `None` for everything else (the session does it).
fn decode_ahead(
    bytes: &[u8],
    relations: &mut HashMap<u32, Arc<[ColumnType]>>,
    registry: &TypeRegistry,
) -> Option<DecodedRow> {
    match PgOutputMessage::decode(bytes, true).ok()? {
        PgOutputMessage::Relation(r) => {
            let types: Arc<[ColumnType]> = r
                .columns
                .iter()
                .map(|c| ColumnType::new(c.type_oid, c.type_modifier))
                .collect();
            relations.insert(r.oid, types);
            None
        }
        PgOutputMessage::Insert(i) => {
            let types = relations.get(&i.relation_oid)?;
            if i.new.len() != types.len() || !types.iter().all(ColumnType::is_builtin_scalar) {
                return None;
            }
            let row = decode_values(registry, types, i.new, |_| false).ok()?;
            Some(DecodedRow {
                types: types.clone(),
                row,
            })
        }
        _ => None,
    }
}
