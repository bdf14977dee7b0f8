//! The bank on SecantusDB (MongoDB wire): collection `test.accounts`, documents
//! `{_id, balance, version, payload}`, every operation a multi-document transaction.

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::{Client, ClientSession, Collection};

use super::{initial_payload, AccountRow, BankSettings, Op, Outcome, PayloadDigest, TABLE};
use crate::error::{ChaosError, Result};

/// The database holding the bank.
pub const DATABASE: &str = "test";

/// A workload client of SecantusDB / MongoDB.
#[derive(Debug)]
pub struct MongoBank {
    client: Client,
    accounts: Collection<Document>,
}

fn db(context: &str) -> impl FnOnce(mongodb::error::Error) -> ChaosError + '_ {
    move |e| ChaosError::database(format!("MongoDB: {context}"), e)
}

impl MongoBank {
    /// Connects to `url` (directly to the server, not through the proxy).
    pub async fn connect(url: &str) -> Result<Self> {
        let client = Client::with_uri_str(url).await.map_err(db("connecting"))?;
        let accounts = client.database(DATABASE).collection(TABLE);
        Ok(MongoBank { client, accounts })
    }

    pub(crate) async fn create(&mut self, settings: &BankSettings) -> Result<()> {
        self.client
            .database(DATABASE)
            .create_collection(TABLE)
            .await
            .map_err(db("creating the bank"))?;
        let docs: Vec<Document> = (1..=i64::from(settings.accounts))
            .map(|id| {
                doc! {
                    "_id": id,
                    "balance": super::INITIAL_BALANCE,
                    "version": 1i64,
                    "payload": initial_payload(id),
                }
            })
            .collect();
        self.accounts
            .insert_many(docs)
            .await
            .map_err(db("creating the accounts"))?;
        Ok(())
    }

    pub(crate) async fn apply(&mut self, op: &Op) -> Result<Outcome> {
        let context = op.name();
        let mut session = self.client.start_session().await.map_err(db(context))?;
        session.start_transaction().await.map_err(db(context))?;
        let complete = match self.apply_in(op, &mut session).await {
            Ok(complete) => complete,
            Err(e) => {
                let _ = session.abort_transaction().await;
                return Err(db(context)(e));
            }
        };
        if complete {
            session.commit_transaction().await.map_err(db(context))?;
            Ok(Outcome::Committed)
        } else {
            session.abort_transaction().await.map_err(db(context))?;
            Ok(Outcome::Skipped)
        }
    }

    async fn apply_in(&self, op: &Op, session: &mut ClientSession) -> mongodb::error::Result<bool> {
        let accounts = &self.accounts;
        Ok(match op {
            Op::Transfer { legs } => {
                let mut all = true;
                for (id, delta) in legs {
                    let r = accounts
                        .update_one(
                            doc! {"_id": id},
                            doc! {"$inc": {"balance": delta, "version": 1i64}},
                        )
                        .session(&mut *session)
                        .await?;
                    all &= r.matched_count == 1;
                }
                all
            }
            Op::Open { id } => {
                let existing = accounts
                    .find_one(doc! {"_id": id})
                    .session(&mut *session)
                    .await?;
                if existing.is_some() {
                    false
                } else {
                    accounts
                        .insert_one(doc! {
                            "_id": id, "balance": 0i64, "version": 1i64,
                            "payload": initial_payload(*id),
                        })
                        .session(&mut *session)
                        .await?;
                    true
                }
            }
            Op::Close { id, heir } => {
                let closing = accounts
                    .find_one(doc! {"_id": id})
                    .session(&mut *session)
                    .await?;
                match closing.and_then(|d| d.get_i64("balance").ok()) {
                    None => false,
                    Some(balance) => {
                        let r = accounts
                            .update_one(
                                doc! {"_id": heir},
                                doc! {"$inc": {"balance": balance, "version": 1i64}},
                            )
                            .session(&mut *session)
                            .await?;
                        let d = accounts
                            .delete_one(doc! {"_id": id})
                            .session(&mut *session)
                            .await?;
                        r.matched_count == 1 && d.deleted_count == 1
                    }
                }
            }
            Op::Rekey { from, to } => {
                let found = accounts
                    .find_one(doc! {"_id": from})
                    .session(&mut *session)
                    .await?;
                match found {
                    None => false,
                    Some(mut moved) => {
                        let version = moved.get_i64("version").unwrap_or(0);
                        moved.insert("_id", *to);
                        moved.insert("version", version + 1);
                        let d = accounts
                            .delete_one(doc! {"_id": from})
                            .session(&mut *session)
                            .await?;
                        accounts.insert_one(moved).session(&mut *session).await?;
                        d.deleted_count == 1
                    }
                }
            }
            Op::Rewrite { id, payload } => {
                let r = accounts
                    .update_one(
                        doc! {"_id": id},
                        doc! {"$set": {"payload": payload}, "$inc": {"version": 1i64}},
                    )
                    .session(&mut *session)
                    .await?;
                r.matched_count == 1
            }
        })
    }

    pub(crate) async fn rows(&mut self) -> Result<Vec<AccountRow>> {
        let docs: Vec<Document> = self
            .accounts
            .find(doc! {})
            .await
            .map_err(db("reading the accounts"))?
            .try_collect()
            .await
            .map_err(db("reading the accounts"))?;
        Ok(docs
            .iter()
            .map(|d| AccountRow {
                id: d.get_i64("_id").unwrap_or(i64::MIN),
                balance: d.get_i64("balance").unwrap_or(i64::MIN),
                version: d.get_i64("version").unwrap_or(i64::MIN),
                payload: d
                    .get_str("payload")
                    .ok()
                    .map(|p| PayloadDigest::of(p.as_bytes())),
            })
            .collect())
    }
}
