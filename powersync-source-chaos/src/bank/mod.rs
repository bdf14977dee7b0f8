//! The bank workload: `N` accounts whose balances always sum to the same total, changed by
//! transactions that each preserve the total, every row carrying a version that only grows.
//!
//! A torn transaction (half of a transfer applied) shows in a copy as a wrong total; a change
//! applied twice or an old change replayed shows as a wrong total or a version going back.
//!
//! Operations ([`Op`]), each one source transaction:
//! - **transfer**: 2–5 distinct accounts, amounts summing to zero, each row's version + 1;
//! - **open**: a new account with balance 0 (ids are never reused);
//! - **close**: moves an account's balance to another (its heir) and deletes it;
//! - **rekey**: moves an account to a new id (a primary-key change), version + 1;
//! - **rewrite**: replaces an account's payload with a large text (PostgreSQL keeps it out of
//!   line, so later updates of the row send it as "unchanged"), version + 1.

mod mariadb;
mod mongo;
mod postgres;

use std::collections::BTreeSet;
use std::fmt;

use crate::seed::SeededRng;

pub use mariadb::MariaDbBank;
pub use mongo::MongoBank;
pub use postgres::PostgresBank;

/// The table (MongoDB: collection) of the workload.
pub const TABLE: &str = "accounts";

/// Balance of every initial account.
pub const INITIAL_BALANCE: i64 = 1_000;

/// Settings of the workload.
#[derive(Debug, Clone)]
pub struct BankSettings {
    /// Accounts created before the system under test starts (ids `1..=accounts`).
    pub accounts: u32,
    /// Length range of a rewritten payload, in bytes.
    pub big_value: (usize, usize),
}

impl Default for BankSettings {
    fn default() -> Self {
        BankSettings {
            accounts: 20,
            // Up to past 64 kB, so that with the PostgreSQL campaign's 64 kB decoding memory
            // a rewrite is streamed to the connector while in progress.
            big_value: (3_000, 150_000),
        }
    }
}

impl BankSettings {
    /// The total every consistent state of the bank has.
    pub fn total(&self) -> i64 {
        i64::from(self.accounts) * INITIAL_BALANCE
    }
}

/// One workload transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Adds `delta` to each account (the deltas sum to zero; the ids are distinct).
    Transfer {
        /// `(id, delta)` per account.
        legs: Vec<(i64, i64)>,
    },
    /// Inserts account `id` with balance 0.
    Open {
        /// A never-used id.
        id: i64,
    },
    /// Adds `id`'s balance to `heir` and deletes `id`.
    Close {
        /// The account deleted.
        id: i64,
        /// The account that receives its balance.
        heir: i64,
    },
    /// Moves account `from` to the never-used id `to`.
    Rekey {
        /// Old id.
        from: i64,
        /// New id.
        to: i64,
    },
    /// Replaces `id`'s payload with `payload`.
    Rewrite {
        /// The account.
        id: i64,
        /// The new payload.
        payload: String,
    },
}

impl Op {
    /// The operation's name in counters.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Transfer { .. } => "transfer",
            Op::Open { .. } => "open",
            Op::Close { .. } => "close",
            Op::Rekey { .. } => "rekey",
            Op::Rewrite { .. } => "rewrite",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Transfer { legs } => {
                f.write_str("transfer")?;
                for (id, delta) in legs {
                    write!(f, " {id}:{delta:+}")?;
                }
                Ok(())
            }
            Op::Open { id } => write!(f, "open {id}"),
            Op::Close { id, heir } => write!(f, "close {id} into {heir}"),
            Op::Rekey { from, to } => write!(f, "rekey {from} -> {to}"),
            Op::Rewrite { id, payload } => write!(f, "rewrite {id} ({} bytes)", payload.len()),
        }
    }
}

/// What became of an operation at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed.
    Committed,
    /// Rolled back because a row it needed was not there (the planner's view was stale).
    Skipped,
}

/// Chooses the next operation from the accounts it believes exist.
#[derive(Debug, Clone)]
pub struct Planner {
    rng: SeededRng,
    ids: BTreeSet<i64>,
    next_id: i64,
    settings: BankSettings,
}

/// The [`SeededRng::fork`] stream of the workload.
const WORKLOAD_STREAM: u64 = 2;

impl Planner {
    /// A planner for a freshly created bank (accounts `1..=settings.accounts`).
    pub fn new(seed: u64, settings: BankSettings) -> Self {
        let ids = (1..=i64::from(settings.accounts)).collect();
        Planner {
            rng: SeededRng::fork(seed, WORKLOAD_STREAM),
            ids,
            next_id: i64::from(settings.accounts) + 1,
            settings,
        }
    }

    /// The accounts the planner believes exist.
    pub fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.ids.iter().copied()
    }

    /// Replaces the planner's view with the accounts the source holds (after an operation
    /// whose outcome is unknown, e.g. the connection broke during its commit). New ids stay
    /// above every id ever seen.
    pub fn resync(&mut self, ids: impl IntoIterator<Item = i64>) {
        self.ids = ids.into_iter().collect();
        if let Some(max) = self.ids.last() {
            self.next_id = self.next_id.max(max + 1);
        }
    }

    fn pick(&mut self) -> i64 {
        let i = self.rng.index(self.ids.len());
        self.ids.iter().nth(i).copied().unwrap_or(1)
    }

    fn fresh_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The next operation. Its ids exist in the planner's view (unless the view is empty:
    /// then an account is opened).
    pub fn next_op(&mut self) -> Op {
        let count = self.ids.len();
        let target = usize::try_from(self.settings.accounts).unwrap_or(usize::MAX);
        if count < 2 {
            return Op::Open {
                id: self.fresh_id(),
            };
        }
        let roll = self.rng.between(1, 100);
        match roll {
            1..=64 => {
                let size = usize::try_from(self.rng.between(2, 5))
                    .unwrap_or(2)
                    .min(count);
                let mut chosen = BTreeSet::new();
                while chosen.len() < size {
                    chosen.insert(self.pick());
                }
                let mut legs: Vec<(i64, i64)> = Vec::with_capacity(size);
                let mut sum = 0i64;
                for (n, id) in chosen.into_iter().enumerate() {
                    let delta = if n + 1 == size {
                        -sum
                    } else {
                        let magnitude = i64::try_from(self.rng.between(1, 200)).unwrap_or(1);
                        if self.rng.percent(50) {
                            magnitude
                        } else {
                            -magnitude
                        }
                    };
                    sum += delta;
                    legs.push((id, delta));
                }
                Op::Transfer { legs }
            }
            65..=72 if count < target * 2 => Op::Open {
                id: self.fresh_id(),
            },
            73..=80 if count > target / 2 => {
                let id = self.pick();
                let mut heir = self.pick();
                while heir == id {
                    heir = self.pick();
                }
                Op::Close { id, heir }
            }
            81..=90 => {
                let from = self.pick();
                Op::Rekey {
                    from,
                    to: self.fresh_id(),
                }
            }
            91..=100 => {
                let id = self.pick();
                let (low, high) = self.settings.big_value;
                let len = usize::try_from(self.rng.between(low as u64, high as u64)).unwrap_or(low);
                Op::Rewrite {
                    id,
                    payload: big_text(&mut self.rng, id, len),
                }
            }
            // An open or close the bank's size does not allow: a plain two-way transfer.
            _ => {
                let a = self.pick();
                let mut b = self.pick();
                while b == a {
                    b = self.pick();
                }
                let amount = i64::try_from(self.rng.between(1, 200)).unwrap_or(1);
                Op::Transfer {
                    legs: vec![(a, amount), (b, -amount)],
                }
            }
        }
    }

    /// Updates the view after `op` committed.
    pub fn committed(&mut self, op: &Op) {
        match op {
            Op::Transfer { .. } | Op::Rewrite { .. } => {}
            Op::Open { id } => {
                self.ids.insert(*id);
            }
            Op::Close { id, .. } => {
                self.ids.remove(id);
            }
            Op::Rekey { from, to } => {
                self.ids.remove(from);
                self.ids.insert(*to);
            }
        }
    }
}

/// A text of `len` bytes that does not compress (so PostgreSQL stores it out of line), tagged
/// with the account it was written for.
fn big_text(rng: &mut SeededRng, id: i64, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut text = format!("big:{id}:");
    while text.len() < len {
        let bits = rng.next_u64();
        for shift in (0..60).step_by(6) {
            let i = usize::try_from((bits >> shift) & 63).unwrap_or(0) % ALPHABET.len();
            text.push(char::from(ALPHABET[i]));
        }
    }
    text.truncate(len.max(1));
    text
}

/// The payload of an account that was never rewritten.
pub fn initial_payload(id: i64) -> String {
    format!("small:{id}")
}

/// One account as stored at the source or in a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// Key.
    pub id: i64,
    /// Balance.
    pub balance: i64,
    /// Version: 1 at creation, + 1 at every change of the row.
    pub version: i64,
    /// Payload length in bytes and a digest of its bytes (`None`: not read, or NULL).
    pub payload: Option<PayloadDigest>,
}

/// Length and FNV-1a digest of a payload, to compare payloads without keeping them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadDigest {
    /// Length in bytes.
    pub len: usize,
    /// FNV-1a 64 of the bytes.
    pub fnv: u64,
}

impl PayloadDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
        }
        PayloadDigest {
            len: bytes.len(),
            fnv: hash,
        }
    }
}

impl fmt::Display for AccountRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "id={} balance={} version={}",
            self.id, self.balance, self.version
        )?;
        match &self.payload {
            Some(p) => write!(f, " payload={}B/{:016x}", p.len, p.fnv),
            None => f.write_str(" payload=?"),
        }
    }
}

/// A workload client of one source.
#[derive(Debug)]
pub enum Bank {
    /// PostgreSQL (tokio-postgres).
    Postgres(PostgresBank),
    /// MariaDB (mysql_async).
    MariaDb(MariaDbBank),
    /// SecantusDB / MongoDB (the official driver, multi-document transactions).
    Mongo(MongoBank),
}

impl Bank {
    /// Creates the table and the initial accounts (and whatever the source needs to publish
    /// the table).
    pub async fn create(&mut self, settings: &BankSettings) -> crate::Result<()> {
        match self {
            Bank::Postgres(b) => b.create(settings).await,
            Bank::MariaDb(b) => b.create(settings).await,
            Bank::Mongo(b) => b.create(settings).await,
        }
    }

    /// Runs `op` as one transaction.
    pub async fn apply(&mut self, op: &Op) -> crate::Result<Outcome> {
        match self {
            Bank::Postgres(b) => b.apply(op).await,
            Bank::MariaDb(b) => b.apply(op).await,
            Bank::Mongo(b) => b.apply(op).await,
        }
    }

    /// Every account, ordered by id, with payload digests.
    pub async fn rows(&mut self) -> crate::Result<Vec<AccountRow>> {
        let mut rows = match self {
            Bank::Postgres(b) => b.rows().await?,
            Bank::MariaDb(b) => b.rows().await?,
            Bank::Mongo(b) => b.rows().await?,
        };
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_preserve_the_total_and_use_distinct_accounts() {
        let mut planner = Planner::new(11, BankSettings::default());
        let mut transfers = 0;
        for _ in 0..2_000 {
            let op = planner.next_op();
            if let Op::Transfer { legs } = &op {
                transfers += 1;
                assert!((2..=5).contains(&legs.len()), "{op}");
                assert_eq!(legs.iter().map(|(_, d)| d).sum::<i64>(), 0, "{op}");
                let ids: BTreeSet<i64> = legs.iter().map(|(id, _)| *id).collect();
                assert_eq!(ids.len(), legs.len(), "{op}");
                assert!(ids.iter().all(|id| planner.ids.contains(id)));
            }
            planner.committed(&op);
        }
        assert!(transfers > 1_000);
    }

    #[test]
    fn ids_are_never_reused_and_the_bank_size_stays_bounded() {
        let settings = BankSettings::default();
        let mut planner = Planner::new(3, settings.clone());
        let mut ever = BTreeSet::new();
        ever.extend(planner.ids());
        let mut kinds = BTreeSet::new();
        for _ in 0..5_000 {
            let op = planner.next_op();
            kinds.insert(op.name());
            match &op {
                Op::Open { id } | Op::Rekey { to: id, .. } => {
                    assert!(ever.insert(*id), "id {id} reused by {op}")
                }
                Op::Close { id, heir } => assert_ne!(id, heir),
                Op::Rewrite { payload, .. } => {
                    assert!(payload.len() >= settings.big_value.0);
                    assert!(payload.len() <= settings.big_value.1);
                }
                Op::Transfer { .. } => {}
            }
            planner.committed(&op);
            let n = planner.ids.len();
            assert!(n >= 2 && n <= 2 * settings.accounts as usize + 1, "{n}");
        }
        assert_eq!(
            kinds.len(),
            5,
            "every kind of operation shows up: {kinds:?}"
        );
    }

    #[test]
    fn same_seed_same_operations() {
        let run = |seed| {
            let mut planner = Planner::new(seed, BankSettings::default());
            (0..200)
                .map(|_| {
                    let op = planner.next_op();
                    planner.committed(&op);
                    op
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(8), run(8));
        assert_ne!(run(8), run(9));
    }

    #[test]
    fn resync_keeps_new_ids_above_everything_seen() {
        let mut planner = Planner::new(1, BankSettings::default());
        planner.resync([5, 700]);
        match planner.next_op() {
            Op::Open { id } | Op::Rekey { to: id, .. } => assert!(id > 700),
            _ => {}
        }
        assert!(planner.next_id > 700);
    }

    #[test]
    fn digest_tells_payloads_apart() {
        assert_eq!(PayloadDigest::of(b"abc"), PayloadDigest::of(b"abc"));
        assert_ne!(PayloadDigest::of(b"abc"), PayloadDigest::of(b"abd"));
        // FNV-1a 64 of the empty input is the offset basis.
        assert_eq!(PayloadDigest::of(b"").fnv, 0xcbf2_9ce4_8422_2325);
    }
}
