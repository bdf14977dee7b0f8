//! Publication changes that come with no message in the stream: a row filter changed on a
//! table that has no write since (`ALTER PUBLICATION … SET TABLE … WHERE`), a partition
//! attached to or detached from a table published through its root. Neither writes a row
//! change to the WAL, so the rows the host holds are no longer the published ones.
//!
//! Between transactions, every `publication_check_interval`, the stream compares what the
//! publication publishes now with what it read, and notes the server's WAL position `L` at
//! that moment. Once the stream has passed `L` (the change is then in the stream's past, so
//! no later replayed change is decoded under the old publication), each changed table is
//! emptied and read again inside one transaction of its own (an idle stream asks the server
//! for keepalives meanwhile, which carry its position). Changes after `L` replay on top
//! of that read, which the idempotent-replay argument of the crate docs covers. (A column
//! list change always brings a Relation message; `apply` handles it there, as soon as it
//! arrives.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use powersync_source_core::position::PgLsn;
use powersync_source_core::runtime::{Emitter, Step};
use powersync_source_core::{
    Begin, ChangeEvent, Commit, Position, SourceError, TableName, Truncate,
};

use super::Replicator;
use crate::catalog::{self, Publishing};
use crate::sql_error;

/// When the publication was last compared, and the tables found changed, to read again once
/// the stream passed the position of that comparison.
#[derive(Debug, Default)]
pub(super) struct PublicationCheck {
    last: Option<Instant>,
    pending: Option<(PgLsn, Vec<u32>)>,
    /// When the server was last asked for a keepalive on behalf of `pending`.
    asked: Option<Instant>,
}

/// How often an idle stream asks the server for its position while a read waits for it.
const ASK_EVERY: Duration = Duration::from_secs(1);

impl Replicator {
    /// Runs between messages: cheap unless a comparison is due or changed tables wait for
    /// the stream to pass their position. Returns whether to ask the server for a keepalive
    /// now: an idle stream learns the server's position only from keepalives, which the
    /// server otherwise sends rarely.
    pub(super) async fn check_publication(&mut self, out: &mut Emitter) -> Step<bool> {
        if self.in_transaction {
            return Ok(false);
        }
        if let Some((at, _)) = &self.publication_check.pending {
            if self.last_emitted >= *at {
                let (_, oids) = self.publication_check.pending.take().unwrap_or_default();
                self.publication_check.asked = None;
                for oid in oids {
                    self.read_again(oid, out).await?;
                }
                return Ok(false);
            }
            let ask = self
                .publication_check
                .asked
                .is_none_or(|asked| asked.elapsed() >= ASK_EVERY);
            if ask {
                self.publication_check.asked = Some(Instant::now());
            }
            return Ok(ask);
        }
        let interval = self.options.publication_check_interval;
        if self
            .publication_check
            .last
            .is_some_and(|last| last.elapsed() < interval)
        {
            return Ok(false);
        }
        self.publication_check.last = Some(Instant::now());
        let at = self.wal_position().await?;
        let now = catalog::publishing_all(&self.sql, self.config.publication()).await?;
        self.backfill_added_tables(&now, out);
        let changed: Vec<u32> = self
            .publishing
            .iter()
            .filter(|(oid, read)| {
                self.known.contains(oid)
                    && self.relations.get(oid).is_some_and(|r| r.selected)
                    && now.get(oid).is_some_and(|(_, p)| p.rows_differ(read))
            })
            .map(|(oid, _)| *oid)
            .collect();
        if changed.is_empty() {
            return Ok(false);
        }
        self.publication_check.pending = Some((at, changed));
        self.publication_check.asked = Some(Instant::now());
        Ok(true)
    }

    /// Tables in the publication that the stream has not met: added to it since the stream
    /// started, and not written since (a written one arrives with its Relation message, and
    /// `apply` reads it then). Each is backfilled from here, so a table added to the
    /// publication shows up whether or not anything writes to it. Only with backfills (14+):
    /// the inline read needs the table's Relation message. A table whose name the stream
    /// already holds under another OID (re-created) is left to its Relation message, which
    /// also empties the old one's rows.
    fn backfill_added_tables(
        &mut self,
        now: &HashMap<u32, (TableName, Publishing)>,
        out: &mut Emitter,
    ) {
        if !out.backfill_enabled() {
            return;
        }
        let mut added: Vec<(u32, TableName, Publishing)> = now
            .iter()
            .filter(|(oid, (name, _))| {
                !self.known.contains(oid)
                    && self.selects(name)
                    && !self.relations.values().any(|r| r.schema.name == *name)
            })
            .map(|(oid, (name, publishing))| (*oid, name.clone(), publishing.clone()))
            .collect();
        // Backfills are read in request order: make it the names' order, not the map's.
        added.sort_by(|a, b| a.1.cmp(&b.1));
        for (oid, name, publishing) in added {
            self.known.insert(oid);
            self.publishing.insert(oid, publishing);
            tracing::info!(
                target: "powersync_source_postgres",
                "{name} was added to the publication: backfilling it"
            );
            out.backfill_added_table(name);
        }
    }

    /// The interval of status updates: shorter while a read waits for the stream to pass a
    /// position (the replies are keepalives carrying the server's position).
    pub(super) fn publication_status_interval(&self, interval: Duration) -> Duration {
        if self.publication_check.pending.is_some() {
            interval.min(ASK_EVERY)
        } else {
            interval
        }
    }

    /// The server's flushed WAL position now (its replay position on a standby): every
    /// committed catalog change is before it, and the walsender reads up to it.
    async fn wal_position(&self) -> Result<PgLsn, SourceError> {
        let row = self
            .sql
            .query_one(
                "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery()
                              THEN pg_catalog.pg_last_wal_replay_lsn()
                              ELSE pg_catalog.pg_current_wal_flush_lsn() END)::text",
                &[],
            )
            .await
            .map_err(|e| sql_error(e, "reading the WAL position"))?;
        let text: String = row.get(0);
        text.parse::<PgLsn>().map_err(|_| {
            SourceError::decode(format!("the server's WAL position `{text}` is not an LSN"))
        })
    }

    /// Empties the table `oid` and reads it again, in a transaction of its own whose commit
    /// carries the last emitted position (nothing new to acknowledge).
    async fn read_again(&mut self, oid: u32, out: &mut Emitter) -> Step<()> {
        let Some(rel) = self.relations.get(&oid) else {
            return Ok(());
        };
        let name = rel.schema.name.clone();
        // Its Relation message may have had it read again meanwhile.
        let now = catalog::publishing(&self.sql, self.config.publication(), oid).await?;
        let read = self.publishing.get(&oid);
        if !now.is_some_and(|now| read.is_none_or(|read| now.rows_differ(read))) {
            return Ok(());
        }
        tracing::info!(
            target: "powersync_source_postgres",
            "the rows the publication publishes of {name} changed; reading it again"
        );
        // As a transaction: a host applies the emptying and the new rows at once, and a
        // failure half-way ends in Abort (restoring what was recorded, so it is redone).
        self.in_transaction = true;
        out.push(ChangeEvent::Begin(Begin {
            xid: None,
            commit_time: None,
        }))
        .await?;
        out.push(ChangeEvent::Truncate(Truncate { tables: vec![name] }))
            .await?;
        self.snapshot_new_table(oid, out).await?;
        out.push(ChangeEvent::Commit(Commit {
            checkpoint: self.last_emitted.to_checkpoint(),
            commit_time: None,
        }))
        .await?;
        self.in_transaction = false;
        self.txn_publishing.clear();
        Ok(())
    }
}
