//! The bank on PostgreSQL: table `public.accounts`, publication `powersync` for it.

use tokio_postgres::{Client, NoTls};

use super::{initial_payload, AccountRow, BankSettings, Op, Outcome, PayloadDigest, TABLE};
use crate::error::{ChaosError, Result};

/// A workload connection to PostgreSQL.
#[derive(Debug)]
pub struct PostgresBank {
    client: Client,
}

fn db(context: &str) -> impl FnOnce(tokio_postgres::Error) -> ChaosError + '_ {
    move |e| ChaosError::database(format!("PostgreSQL: {context}"), e)
}

impl PostgresBank {
    /// Connects to `url` (directly to the server, not through the proxy).
    pub async fn connect(url: &str) -> Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(db("connecting"))?;
        tokio::spawn(async move {
            // Ends when the connection breaks; the next query reports it.
            let _ = connection.await;
        });
        Ok(PostgresBank { client })
    }

    /// Transactions the server's walsenders streamed while in progress, and those it spilled
    /// to its own disk, since the server last started (`pg_stat_replication_slots`, 14+; a
    /// crash restart resets it).
    pub async fn streamed_transactions(&self) -> Result<(i64, i64)> {
        let row = self
            .client
            .query_one(
                "SELECT coalesce(sum(stream_txns), 0)::bigint, \
                 coalesce(sum(spill_txns), 0)::bigint FROM pg_stat_replication_slots",
                &[],
            )
            .await
            .map_err(db("reading pg_stat_replication_slots"))?;
        Ok((row.get(0), row.get(1)))
    }

    pub(crate) async fn create(&mut self, settings: &BankSettings) -> Result<()> {
        self.client
            .batch_execute(&format!(
                "CREATE TABLE {TABLE} (id bigint PRIMARY KEY, balance bigint NOT NULL, \
                 version bigint NOT NULL, payload text NOT NULL);
                 CREATE PUBLICATION powersync FOR TABLE {TABLE};"
            ))
            .await
            .map_err(db("creating the bank"))?;
        let tx = self
            .client
            .transaction()
            .await
            .map_err(db("creating the bank"))?;
        for id in 1..=i64::from(settings.accounts) {
            tx.execute(
                &format!("INSERT INTO {TABLE} VALUES ($1, $2, 1, $3)"),
                &[&id, &super::INITIAL_BALANCE, &initial_payload(id)],
            )
            .await
            .map_err(db("creating the accounts"))?;
        }
        tx.commit().await.map_err(db("creating the accounts"))
    }

    pub(crate) async fn apply(&mut self, op: &Op) -> Result<Outcome> {
        let context = op.name();
        let tx = self.client.transaction().await.map_err(db(context))?;
        let complete = match op {
            Op::Transfer { legs } => {
                let mut all = true;
                for (id, delta) in legs {
                    let n = tx
                        .execute(
                            &format!(
                                "UPDATE {TABLE} SET balance = balance + $2, version = version + 1 \
                                 WHERE id = $1"
                            ),
                            &[id, delta],
                        )
                        .await
                        .map_err(db(context))?;
                    all &= n == 1;
                }
                all
            }
            Op::Open { id } => {
                let n = tx
                    .execute(
                        &format!(
                            "INSERT INTO {TABLE} VALUES ($1, 0, 1, $2) ON CONFLICT (id) DO NOTHING"
                        ),
                        &[id, &initial_payload(*id)],
                    )
                    .await
                    .map_err(db(context))?;
                n == 1
            }
            Op::Close { id, heir } => {
                let row = tx
                    .query_opt(
                        &format!("SELECT balance FROM {TABLE} WHERE id = $1 FOR UPDATE"),
                        &[id],
                    )
                    .await
                    .map_err(db(context))?;
                match row {
                    None => false,
                    Some(row) => {
                        let balance: i64 = row.get(0);
                        let n = tx
                            .execute(
                                &format!(
                                    "UPDATE {TABLE} SET balance = balance + $2, \
                                     version = version + 1 WHERE id = $1"
                                ),
                                &[heir, &balance],
                            )
                            .await
                            .map_err(db(context))?;
                        let d = tx
                            .execute(&format!("DELETE FROM {TABLE} WHERE id = $1"), &[id])
                            .await
                            .map_err(db(context))?;
                        n == 1 && d == 1
                    }
                }
            }
            Op::Rekey { from, to } => {
                let n = tx
                    .execute(
                        &format!("UPDATE {TABLE} SET id = $2, version = version + 1 WHERE id = $1"),
                        &[from, to],
                    )
                    .await
                    .map_err(db(context))?;
                n == 1
            }
            Op::Rewrite { id, payload } => {
                let n = tx
                    .execute(
                        &format!(
                            "UPDATE {TABLE} SET payload = $2, version = version + 1 WHERE id = $1"
                        ),
                        &[id, payload],
                    )
                    .await
                    .map_err(db(context))?;
                n == 1
            }
        };
        if complete {
            tx.commit().await.map_err(db(context))?;
            Ok(Outcome::Committed)
        } else {
            tx.rollback().await.map_err(db(context))?;
            Ok(Outcome::Skipped)
        }
    }

    pub(crate) async fn rows(&mut self) -> Result<Vec<AccountRow>> {
        let rows = self
            .client
            .query(
                &format!("SELECT id, balance, version, payload FROM {TABLE}"),
                &[],
            )
            .await
            .map_err(db("reading the accounts"))?;
        Ok(rows
            .iter()
            .map(|r| AccountRow {
                id: r.get(0),
                balance: r.get(1),
                version: r.get(2),
                payload: Some(PayloadDigest::of(r.get::<_, &str>(3).as_bytes())),
            })
            .collect())
    }
}
