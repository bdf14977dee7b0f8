//! The bank on MariaDB: table `test.accounts` (InnoDB).

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, TxOpts};

use super::{initial_payload, AccountRow, BankSettings, Op, Outcome, PayloadDigest, TABLE};
use crate::error::{ChaosError, Result};

/// A workload connection to MariaDB.
#[derive(Debug)]
pub struct MariaDbBank {
    conn: Conn,
}

fn db(context: &str) -> impl FnOnce(mysql_async::Error) -> ChaosError + '_ {
    move |e| ChaosError::database(format!("MariaDB: {context}"), e)
}

impl MariaDbBank {
    /// Connects to `url` (`mysql://root@127.0.0.1:PORT/test`, directly to the server).
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = Opts::from_url(url).map_err(|e| ChaosError::database("MariaDB URL", e))?;
        let conn = Conn::new(opts).await.map_err(db("connecting"))?;
        Ok(MariaDbBank { conn })
    }

    pub(crate) async fn create(&mut self, settings: &BankSettings) -> Result<()> {
        self.conn
            .query_drop(format!(
                "CREATE TABLE {TABLE} (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL, \
                 version BIGINT NOT NULL, payload LONGTEXT NOT NULL) ENGINE=InnoDB"
            ))
            .await
            .map_err(db("creating the bank"))?;
        let mut tx = self
            .conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(db("creating the accounts"))?;
        for id in 1..=i64::from(settings.accounts) {
            tx.exec_drop(
                format!("INSERT INTO {TABLE} VALUES (?, ?, 1, ?)"),
                (id, super::INITIAL_BALANCE, initial_payload(id)),
            )
            .await
            .map_err(db("creating the accounts"))?;
        }
        tx.commit().await.map_err(db("creating the accounts"))
    }

    pub(crate) async fn apply(&mut self, op: &Op) -> Result<Outcome> {
        let context = op.name();
        let mut tx = self
            .conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(db(context))?;
        let complete = match op {
            Op::Transfer { legs } => {
                let mut all = true;
                for (id, delta) in legs {
                    tx.exec_drop(
                        format!(
                            "UPDATE {TABLE} SET balance = balance + ?, version = version + 1 \
                             WHERE id = ?"
                        ),
                        (delta, id),
                    )
                    .await
                    .map_err(db(context))?;
                    all &= tx.affected_rows() == 1;
                }
                all
            }
            Op::Open { id } => {
                tx.exec_drop(
                    format!("INSERT IGNORE INTO {TABLE} VALUES (?, 0, 1, ?)"),
                    (id, initial_payload(*id)),
                )
                .await
                .map_err(db(context))?;
                tx.affected_rows() == 1
            }
            Op::Close { id, heir } => {
                let balance: Option<i64> = tx
                    .exec_first(
                        format!("SELECT balance FROM {TABLE} WHERE id = ? FOR UPDATE"),
                        (id,),
                    )
                    .await
                    .map_err(db(context))?;
                match balance {
                    None => false,
                    Some(balance) => {
                        tx.exec_drop(
                            format!(
                                "UPDATE {TABLE} SET balance = balance + ?, version = version + 1 \
                                 WHERE id = ?"
                            ),
                            (balance, heir),
                        )
                        .await
                        .map_err(db(context))?;
                        let updated = tx.affected_rows() == 1;
                        tx.exec_drop(format!("DELETE FROM {TABLE} WHERE id = ?"), (id,))
                            .await
                            .map_err(db(context))?;
                        updated && tx.affected_rows() == 1
                    }
                }
            }
            Op::Rekey { from, to } => {
                tx.exec_drop(
                    format!("UPDATE {TABLE} SET id = ?, version = version + 1 WHERE id = ?"),
                    (to, from),
                )
                .await
                .map_err(db(context))?;
                tx.affected_rows() == 1
            }
            Op::Rewrite { id, payload } => {
                tx.exec_drop(
                    format!("UPDATE {TABLE} SET payload = ?, version = version + 1 WHERE id = ?"),
                    (payload, id),
                )
                .await
                .map_err(db(context))?;
                tx.affected_rows() == 1
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
        let rows: Vec<(i64, i64, i64, Vec<u8>)> = self
            .conn
            .query(format!("SELECT id, balance, version, payload FROM {TABLE}"))
            .await
            .map_err(db("reading the accounts"))?;
        Ok(rows
            .into_iter()
            .map(|(id, balance, version, payload)| AccountRow {
                id,
                balance,
                version,
                payload: Some(PayloadDigest::of(&payload)),
            })
            .collect())
    }
}
