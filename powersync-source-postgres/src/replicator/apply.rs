//! pgoutput messages to change events: transaction boundaries, relations (schema events, and
//! the first read of a table seen mid-stream), row changes, truncates and checkpoint messages.

use std::sync::Arc;

use powersync_source_core::position::PgLsn;
use powersync_source_core::runtime::{Emitter, Step, Stop};
use powersync_source_core::{
    Begin, ChangeEvent, Column, Commit, OldImage, Op, Position, Row, RowChange, RowIdentity,
    SourceError, TableName, TableSchema, Truncate, UnixMicros, Value,
};

use super::replay_ahead::DecodedRow;
use super::{RelationState, Replicator};
use crate::backfill::{is_signal_table, same_shape};
use crate::catalog;
use crate::options::CHECKPOINT_MESSAGE_PREFIX;
use crate::pgoutput::{ColumnValue, OldTuple, PgOutputMessage, PgTimestamp, TupleData};
use crate::types::{self, ColumnType, Format, TypeRegistry};
use powersync_source_core::backfill::WATERMARK_PREFIX;

impl Replicator {
    /// Turns one pgoutput message into change events.
    pub(super) async fn apply(&mut self, msg: PgOutputMessage<'_>, out: &mut Emitter) -> Step<()> {
        self.apply_decoded(msg, None, out).await
    }

    /// [`Replicator::apply`] with an insert's new row possibly decoded ahead (see
    /// [`super::replay_ahead`]): used when it was decoded with the relation's current column
    /// types.
    pub(super) async fn apply_decoded(
        &mut self,
        msg: PgOutputMessage<'_>,
        decoded: Option<DecodedRow>,
        out: &mut Emitter,
    ) -> Step<()> {
        match msg {
            PgOutputMessage::Begin(b) => {
                self.in_transaction = true;
                self.pending_begin = Some(Begin {
                    xid: Some(b.xid as u64),
                    commit_time: Some(UnixMicros(b.commit_time.unix_micros())),
                });
            }
            PgOutputMessage::Commit(c) => {
                self.commit(c.end_lsn, c.commit_time, out).await?;
            }
            PgOutputMessage::Relation(r) => {
                self.on_relation(r, out).await?;
            }
            PgOutputMessage::Insert(i) => {
                if self
                    .relations
                    .get(&i.relation_oid)
                    .is_some_and(|r| r.signal)
                {
                    self.on_signal(i.relation_oid, i.new, out)?;
                    return Ok(());
                }
                let Some(rel) = self.relation(i.relation_oid)? else {
                    return Ok(());
                };
                let new = match decoded {
                    Some(d) if *d.types == rel.types[..] => d.row,
                    _ => decode_tuple(&self.registry, rel, i.new, false)?,
                };
                let table = rel.schema.clone();
                self.row(
                    RowChange {
                        op: Op::Insert,
                        table,
                        old: None,
                        old_image: OldImage::None,
                        new: Some(new),
                        snapshot: false,
                    },
                    out,
                )
                .await?;
            }
            PgOutputMessage::Update(u) => {
                let Some(rel) = self.relation(u.relation_oid)? else {
                    return Ok(());
                };
                let (old, old_image) = match u.old {
                    Some(OldTuple::Key(t)) => (
                        Some(decode_tuple(&self.registry, rel, t, true)?),
                        OldImage::Key,
                    ),
                    Some(OldTuple::Full(t)) => (
                        Some(decode_tuple(&self.registry, rel, t, false)?),
                        OldImage::Full,
                    ),
                    None => (None, OldImage::None),
                };
                let mut new = decode_tuple(&self.registry, rel, u.new, false)?;
                if let Some(old) = &old {
                    fill_unchanged(&mut new, old);
                }
                let table = rel.schema.clone();
                self.row(
                    RowChange {
                        op: Op::Update,
                        table,
                        old,
                        old_image,
                        new: Some(new),
                        snapshot: false,
                    },
                    out,
                )
                .await?;
            }
            PgOutputMessage::Delete(d) => {
                let Some(rel) = self.relation(d.relation_oid)? else {
                    return Ok(());
                };
                let (old, old_image) = match d.old {
                    OldTuple::Key(t) => {
                        (decode_tuple(&self.registry, rel, t, true)?, OldImage::Key)
                    }
                    OldTuple::Full(t) => {
                        (decode_tuple(&self.registry, rel, t, false)?, OldImage::Full)
                    }
                };
                let table = rel.schema.clone();
                self.row(
                    RowChange {
                        op: Op::Delete,
                        table,
                        old: Some(old),
                        old_image,
                        new: None,
                        snapshot: false,
                    },
                    out,
                )
                .await?;
            }
            PgOutputMessage::Truncate(t) => {
                let tables: Vec<TableName> = t
                    .relation_oids
                    .into_iter()
                    .filter_map(|oid| self.relations.get(&oid))
                    .filter(|r| r.selected)
                    .map(|r| r.schema.name.clone())
                    .collect();
                if !tables.is_empty() {
                    self.emit_begin(out).await?;
                    out.push(ChangeEvent::Truncate(Truncate { tables })).await?;
                }
            }
            PgOutputMessage::Message(m) if m.prefix == CHECKPOINT_MESSAGE_PREFIX => {
                if let Some(lsn) = std::str::from_utf8(m.content)
                    .ok()
                    .and_then(|s| s.parse::<PgLsn>().ok())
                {
                    if m.transactional {
                        self.emit_begin(out).await?;
                    }
                    out.push(ChangeEvent::CheckpointObserved(lsn.to_checkpoint()))
                        .await?;
                }
            }
            PgOutputMessage::Message(m) if m.prefix == WATERMARK_PREFIX => {
                // Inside its own transaction (written in autocommit), which then ends in a
                // keepalive: the emitter acts on it at that boundary.
                match std::str::from_utf8(m.content) {
                    Ok(text) => out.backfill_watermark(text),
                    Err(_) => tracing::warn!(
                        target: "powersync_source_postgres",
                        "ignoring a backfill watermark that is not UTF-8"
                    ),
                }
            }
            // Origins, types (we read types from the catalog), foreign messages; the session
            // handles streaming messages (see `streamed`); two-phase ones are not requested.
            _ => {}
        }
        Ok(())
    }

    /// The end of a transaction at `end_lsn`: its `Commit`, or a keepalive when none of its
    /// changes reached the host (the Begin is still pending).
    pub(super) async fn commit(
        &mut self,
        end_lsn: PgLsn,
        commit_time: PgTimestamp,
        out: &mut Emitter,
    ) -> Step<()> {
        self.in_transaction = false;
        let checkpoint = end_lsn.to_checkpoint();
        self.last_emitted = end_lsn;
        if out.in_transaction() {
            let commit_time = Some(UnixMicros(commit_time.unix_micros()));
            out.push(ChangeEvent::Commit(Commit {
                checkpoint,
                commit_time,
            }))
            .await?;
        } else {
            out.push(ChangeEvent::Keepalive(checkpoint)).await?;
        }
        self.pending_begin = None;
        self.txn_relations.clear();
        self.txn_new_tables.clear();
        self.txn_publishing.clear();
        Ok(())
    }

    /// An insert into the signal table: a request handed to the emitter (at the end of its
    /// transaction), never a row for the host.
    fn on_signal(
        &self,
        oid: u32,
        tuple: TupleData<'_>,
        out: &mut Emitter,
    ) -> Result<(), SourceError> {
        let Some(rel) = self.relations.get(&oid) else {
            return Ok(());
        };
        let row = decode_tuple(&self.registry, rel, tuple, false)?;
        let text = |column: &str| -> Option<String> {
            let i = rel.schema.columns.iter().position(|c| c.name == column)?;
            match row.get(i)? {
                Value::Text(s) => Some(s.clone()),
                Value::Integer(n) => Some(n.to_string()),
                _ => None,
            }
        };
        match (text("id"), text("kind"), text("tables")) {
            (Some(id), Some(kind), Some(tables)) => out.backfill_signal(&id, &kind, &tables),
            _ => tracing::warn!(
                target: "powersync_source_postgres",
                "ignoring a row of {} without text columns id, kind and tables",
                rel.schema.name
            ),
        }
        Ok(())
    }

    fn relation(&self, oid: u32) -> Result<Option<&RelationState>, SourceError> {
        match self.relations.get(&oid) {
            Some(r) if r.selected => Ok(Some(r)),
            Some(_) => Ok(None),
            None => Err(SourceError::decode(format!(
                "row for relation {oid} before its Relation message"
            ))),
        }
    }

    async fn on_relation(
        &mut self,
        r: crate::pgoutput::Relation<'_>,
        out: &mut Emitter,
    ) -> Step<()> {
        let name = TableName::new(r.namespace, r.name);
        let selected = self.selects(&name);
        let signal = is_signal_table(&name);
        let types: Vec<ColumnType> = r
            .columns
            .iter()
            .map(|c| ColumnType::new(c.type_oid, c.type_modifier))
            .collect();
        if selected || signal {
            let missing: Vec<(u32, i32)> = types
                .iter()
                .filter(|t| !self.registry.is_known(t.oid))
                .map(|t| (t.oid, t.typmod))
                .collect();
            if !missing.is_empty() {
                Arc::make_mut(&mut self.registry)
                    .load_columns(&self.sql, &missing)
                    .await
                    .map_err(|e| crate::sql_error(e, &format!("loading types of {name}")))?;
            }
        }
        if selected && self.binary && types.iter().any(|t| !self.registry.supports_binary(t.oid)) {
            // pgoutput's binary format is all-or-nothing per connection: restart this session
            // in text format from the last boundary (nothing is lost or repeated).
            self.options.binary = false;
            return Err(Stop::Failed(SourceError::connection(format!(
                "{name} has a column type without a binary decoder; continuing in text format"
            ))));
        }
        let identity = match r.replica_identity.as_byte() {
            b'f' => RowIdentity::Full,
            b'i' => RowIdentity::Index,
            b'n' => RowIdentity::Nothing,
            _ => RowIdentity::PrimaryKey,
        };
        // FULL identity flags every column; key rows by the primary key when there is one.
        let primary: Option<Vec<String>> = if identity == RowIdentity::Full {
            catalog::identity_columns(&self.sql, &[r.oid])
                .await?
                .remove(&r.oid)
                .and_then(|i| i.primary)
        } else {
            None
        };
        let columns: Vec<Column> = r
            .columns
            .iter()
            .map(|c| Column {
                name: c.name.to_string(),
                type_name: self.registry.type_name(c.type_oid, c.type_modifier),
                is_key: match &primary {
                    Some(pk) => pk.iter().any(|k| k == c.name),
                    None => c.is_key(),
                },
                nullable: None,
            })
            .collect();
        let schema = TableSchema {
            name: name.clone(),
            source_id: Some(r.oid as u64),
            columns,
            identity,
        };
        let changed = match self.relations.get(&r.oid) {
            Some(prev) => !same_shape(&prev.schema, &schema),
            None => true,
        };
        if changed {
            let schema = Arc::new(schema);
            self.relations.insert(
                r.oid,
                RelationState {
                    schema: schema.clone(),
                    types,
                    selected,
                    signal,
                },
            );
            if selected {
                self.emit_begin(out).await?;
                self.schemas.emitted(&schema);
                out.push(ChangeEvent::Schema(schema)).await?;
                if self.in_transaction {
                    self.txn_relations.push(r.oid);
                }
            }
        }
        let mut republished = false;
        if selected && self.publishing.contains_key(&r.oid) {
            // ALTER PUBLICATION … SET TABLE (row filter, column list) and ATTACH/DETACH
            // PARTITION change which rows are published without a row change in the WAL; the
            // server sends the table's Relation message again after them (they invalidate its
            // cache of the table), so that is when to compare with what was read.
            let now = catalog::publishing(&self.sql, self.config.publication(), r.oid).await?;
            if let Some(now) = now {
                if self.publishing.get(&r.oid) != Some(&now) {
                    tracing::info!(
                        target: "powersync_source_postgres",
                        "what the publication publishes of {name} changed; reading it again"
                    );
                    self.known.remove(&r.oid);
                    republished = true;
                }
            }
        }
        if selected && self.known.insert(r.oid) {
            // A re-created table: the host still holds the rows of the old one.
            let replaced: Vec<u32> = self
                .relations
                .iter()
                .filter(|(oid, rel)| **oid != r.oid && rel.schema.name == name)
                .map(|(oid, _)| *oid)
                .collect();
            if self.in_transaction {
                self.txn_new_tables.push(r.oid);
            }
            // A table published differently: the rows held may no longer be published.
            if !replaced.is_empty() || republished {
                self.emit_begin(out).await?;
                out.push(ChangeEvent::Truncate(Truncate {
                    tables: vec![name.clone()],
                }))
                .await?;
            }
            // First sight of this table (added to the publication or re-created while we
            // stream): read its current rows. With backfills, in watermarked chunks from this
            // transaction's end while every table keeps streaming; without (a server before
            // 14), inline: changes after this point follow in the stream, ones before it that
            // the read already reflects are re-applied idempotently.
            if out.backfill_enabled() {
                if let Some(rel) = self.relations.get(&r.oid) {
                    let schema = rel.schema.clone();
                    self.note_read_publishing(r.oid, &schema).await?;
                }
                tracing::info!(
                    target: "powersync_source_postgres",
                    "{name} first seen in the stream: backfilling it"
                );
                out.backfill_added_table(name);
            } else {
                self.snapshot_new_table(r.oid, out).await?;
            }
        }
        Ok(())
    }
}

/// Decodes a tuple into a row in the relation's column order. In a key-only old image the
/// non-key columns are not sent (null on the wire): they become `Unchanged`.
fn decode_tuple(
    registry: &TypeRegistry,
    rel: &RelationState,
    tuple: TupleData<'_>,
    key_only: bool,
) -> Result<Row, SourceError> {
    if tuple.len() != rel.types.len() {
        return Err(SourceError::schema(format!(
            "tuple of {} has {} columns, its relation has {}",
            rel.schema.name,
            tuple.len(),
            rel.types.len()
        )));
    }
    decode_values(registry, &rel.types, tuple, |i| {
        key_only && !rel.schema.columns[i].is_key
    })
    .map_err(|(i, e)| value_error(rel, i, e))
}

/// The values of `tuple` (which has as many as `types`: callers check) as a row; a null
/// column `i` for which `unsent(i)` holds was not sent (a key-only image's other columns) and
/// becomes `Unchanged`. A value that does not decode gives its column index and the error.
pub(super) fn decode_values(
    registry: &TypeRegistry,
    types: &[ColumnType],
    tuple: TupleData<'_>,
    unsent: impl Fn(usize) -> bool,
) -> Result<Row, (usize, types::ValueError)> {
    let mut values = Vec::with_capacity(types.len());
    for (i, (value, column)) in tuple.iter().zip(types).enumerate() {
        let v = match value {
            ColumnValue::Null if unsent(i) => Value::Unchanged,
            ColumnValue::Null => Value::Null,
            ColumnValue::UnchangedToast => Value::Unchanged,
            ColumnValue::Text(b) => column
                .decode(registry, Format::Text, b)
                .map_err(|e| (i, e))?,
            ColumnValue::Binary(b) => column
                .decode(registry, Format::Binary, b)
                .map_err(|e| (i, e))?,
        };
        values.push(v);
    }
    Ok(Row::new(values))
}

/// Fills the `Unchanged` values of an update's new row from its old image, where that has
/// them: every column of a `REPLICA IDENTITY FULL` image (the server detoasts the old tuple
/// for it, so it is complete), the key columns of a key-only one. `Unchanged` then remains
/// only where the source sent the value nowhere.
fn fill_unchanged(new: &mut Row, old: &Row) {
    for (value, old) in new.values_mut().iter_mut().zip(old.values()) {
        if value.is_unchanged() && !old.is_unchanged() {
            *value = old.clone();
        }
    }
}

fn value_error(rel: &RelationState, i: usize, e: types::ValueError) -> SourceError {
    let c = &rel.schema.columns[i];
    SourceError::decode_value(&rel.schema.name.to_string(), &c.name, &c.type_name, e)
}
