//! Ledger storage: postings (inside the caller's transaction), the sealing step of the hash
//! chain, verification, balances and entry listings.
//!
//! Invariants: ledger rows are only ever inserted (the database refuses UPDATE, DELETE and, on
//! PostgreSQL, TRUNCATE); a posting's `posting_key` is unique, so a money event is posted at
//! most once even if two transactions race; sealing assigns a gap-free `seq` in transfer order
//! under a lock held by one sealer at a time: on PostgreSQL an advisory lock taken by the
//! background sealer only, in rounds, so confirming payments never waits on the chain; on SQLite
//! the database's one write lock, held by whatever writes — a payment batch seals its own
//! transfers before it commits, the background sealer what other writers left.

use chrono::{DateTime, Utc};

use rusqlite::OptionalExtension;

use super::{Store, StoreError, StoreResult, now, on_pool};
use crate::ledger::{Anchor, AnchorCheck, BrokenLink, ChainedTransfer, GENESIS, Seal, chain_hash, verify_links};

/// Transfers chained per sealing round; on SQLite also how many left unsealed by other writers a
/// payment batch chains besides its own. On SQLite a round holds the one write lock, and payment
/// batches wait behind it: at 500, on the slowest machine measured, a round at 1,000
/// confirmations/s held the writer twice for ~20 ms and the callbacks' p99 was 43–51 ms; at 128,
/// 19–21 ms (docs/callback-benchmark.md, machine (j)). On PostgreSQL payment batches never wait on a
/// round; rounds of 1,024 and 4,096 ran the benchmark no faster (machine (n)).
pub const SEAL_BATCH: i64 = 128;

/// One link of the chain as a sealing round writes it: (seq, transfer id, previous hash, hash).
type Link = (i64, i64, String, String);

/// Chains `rows` (unsealed transfers, in id order) after the chain's head, if any: the links a
/// round writes.
fn chain(head: Option<(i64, String)>, rows: Vec<ChainRow>) -> Vec<Link> {
    let (mut seq, mut prev) = head.map(|(s, h)| (s + 1, h)).unwrap_or((1, GENESIS.to_string()));
    let mut links = Vec::with_capacity(rows.len());
    for row in rows {
        let transfer = row.into_transfer();
        let hash = chain_hash(&prev, &transfer);
        links.push((seq, transfer.transfer_id, std::mem::replace(&mut prev, hash.clone()), hash));
        seq += 1;
    }
    links
}

/// PostgreSQL: a round's links, columns as arrays: one statement text whatever the round's
/// size, prepared once.
async fn insert_seals_pg(conn: &mut sqlx::PgConnection, links: &[Link], at: DateTime<Utc>) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO ledger_seals (seq, transfer_id, prev_hash, hash, sealed_at) \
         SELECT seq, transfer_id, prev_hash, hash, $5 FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[]) \
         AS l (seq, transfer_id, prev_hash, hash)",
    )
    .bind(links.iter().map(|l| l.0).collect::<Vec<_>>())
    .bind(links.iter().map(|l| l.1).collect::<Vec<_>>())
    .bind(links.iter().map(|l| l.2.as_str()).collect::<Vec<_>>())
    .bind(links.iter().map(|l| l.3.as_str()).collect::<Vec<_>>())
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// SQLite: seals, inside the caller's write transaction, up to `limit` of the transfers not yet
/// sealed — those committed before it and those it wrote itself — oldest first; returns how many.
///
/// A SQLite write transaction holds the database's one write lock, so it is the only sealer
/// while it runs, and transfers commit in id order: everything at or below the last sealed
/// transfer is sealed, everything above it is not. Payment batches call this before they commit
/// (`store::payment_batch`), so on SQLite a confirmation is chained in its own commit instead of
/// waiting for a sealing transaction of its own, which took the write lock (and a sync) apart
/// from the batches, dozens of times a second at full speed; the background sealer chains what
/// other writers (refunds, reconciliation corrections) leave.
pub(crate) fn seal_in_transaction(tx: &rusqlite::Connection, limit: i64) -> StoreResult<usize> {
    let mut head_stmt =
        tx.prepare_cached("SELECT seq, transfer_id, hash FROM ledger_seals ORDER BY seq DESC LIMIT 1")?;
    let head: Option<(i64, i64, String)> =
        head_stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?;
    let floor = head.as_ref().map_or(0, |h| h.1);
    let mut unsealed = tx.prepare_cached(&format!(
        "{CHAIN_SELECT} LEFT JOIN ledger_seals s ON s.transfer_id = t.id WHERE s.transfer_id IS NULL AND t.id > ?1 \
         ORDER BY t.id LIMIT ?2"
    ))?;
    // Times are the RFC 3339 text sqlx writes, read back to the microsecond (rusqlite's `chrono`).
    let rows = unsealed
        .query_map(rusqlite::params![floor, limit], |r| {
            Ok(ChainRow {
                seq: None,
                prev_hash: None,
                hash: None,
                transfer_id: r.get(3)?,
                transaction_id: r.get(4)?,
                posting_key: r.get(5)?,
                kind: r.get(6)?,
                payment_id: r.get(7)?,
                notice_code: r.get(8)?,
                corrects: r.get(9)?,
                debit_account: r.get(10)?,
                credit_account: r.get(11)?,
                amount: r.get(12)?,
                created_at: r.get(13)?,
                memo: r.get(14)?,
                transaction_created_at: r.get(15)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<ChainRow>>>()?;
    let links = chain(head.map(|(seq, _, hash)| (seq, hash)), rows);
    let mut insert = tx.prepare_cached(
        "INSERT INTO ledger_seals (seq, transfer_id, prev_hash, hash, sealed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let at = super::direct::sqlite_time(&now());
    for (seq, transfer_id, prev_hash, hash) in &links {
        insert.execute(rusqlite::params![seq, transfer_id, prev_hash, hash, at])?;
    }
    Ok(links.len())
}

/// Inserts a [`crate::ledger::PostingPlan`] inside the transaction `$tx`; evaluates to the new
/// ledger transaction's id. A macro so that one text serves both backends' transactions.
macro_rules! insert_posting {
    ($tx:ident, $plan:expr, $at:expr) => {{
        let plan: &$crate::ledger::PostingPlan = $plan;
        let at: chrono::DateTime<chrono::Utc> = $at;
        let ledger_tx_id = format!("lt_{}", uuid::Uuid::now_v7().simple());
        {
            for account in $crate::ledger::accounts_in_order([plan]) {
                sqlx::query(
                    "INSERT INTO ledger_accounts (name, kind, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(account)
                .bind($crate::ledger::account_kind(account))
                .bind(at)
                .execute(&mut *$tx)
                .await?;
            }
        }
        sqlx::query(
            "INSERT INTO ledger_transactions (id, posting_key, kind, payment_id, notice_code, corrects, memo, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&ledger_tx_id)
        .bind(&plan.posting_key)
        .bind(plan.kind)
        .bind(&plan.payment_id)
        .bind(&plan.notice_code)
        .bind(&plan.corrects)
        .bind(&plan.memo)
        .bind(at)
        .execute(&mut *$tx)
        .await?;
        for t in &plan.transfers {
            sqlx::query(
                "INSERT INTO ledger_transfers (transaction_id, debit_account, credit_account, amount, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&ledger_tx_id)
            .bind(&t.debit)
            .bind(&t.credit)
            .bind(t.amount)
            .bind(at)
            .execute(&mut *$tx)
            .await?;
        }
        ledger_tx_id
    }};
}
pub(crate) use insert_posting;

#[derive(sqlx::FromRow)]
struct ChainRow {
    seq: Option<i64>,
    prev_hash: Option<String>,
    hash: Option<String>,
    transfer_id: i64,
    transaction_id: String,
    posting_key: String,
    kind: String,
    payment_id: Option<String>,
    notice_code: Option<String>,
    corrects: Option<String>,
    debit_account: String,
    credit_account: String,
    amount: i64,
    created_at: DateTime<Utc>,
    memo: String,
    transaction_created_at: DateTime<Utc>,
}

impl ChainRow {
    /// What the hash covers, moved out of the row (sealing builds one per transfer).
    fn into_transfer(self) -> ChainedTransfer {
        ChainedTransfer {
            transfer_id: self.transfer_id,
            transaction_id: self.transaction_id,
            posting_key: self.posting_key,
            kind: self.kind,
            payment_id: self.payment_id,
            notice_code: self.notice_code,
            corrects: self.corrects,
            debit: self.debit_account,
            credit: self.credit_account,
            amount: self.amount,
            created_at_micros: self.created_at.timestamp_micros(),
            memo: self.memo,
            transaction_created_at_micros: self.transaction_created_at.timestamp_micros(),
        }
    }

    /// A sealed row as verification reads it.
    fn into_seal(mut self) -> Seal {
        let (seq, prev_hash, hash) = (
            self.seq.unwrap_or_default(),
            self.prev_hash.take().unwrap_or_default(),
            self.hash.take().unwrap_or_default(),
        );
        Seal { seq, prev_hash, hash, transfer: self.into_transfer() }
    }
}

const CHAIN_SELECT: &str = "SELECT s.seq, s.prev_hash, s.hash, t.id AS transfer_id, t.transaction_id, x.posting_key, \
     x.kind, x.payment_id, x.notice_code, x.corrects, t.debit_account, t.credit_account, t.amount, t.created_at, \
     x.memo, x.created_at AS transaction_created_at FROM ledger_transfers t JOIN ledger_transactions x ON x.id = t.transaction_id";

/// PostgreSQL: the oldest transaction id still running (every lower one has ended), and the
/// last transfer id handed out (to any session: the sequence's cache is 1).
const PG_OLDEST_RUNNING_AND_IDS_HANDED_OUT: &str = "SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT), \
     CASE WHEN is_called THEN last_value ELSE 0 END FROM ledger_transfers_id_seq";
/// PostgreSQL: this transaction's id, assigned now if it has none. (Not a snapshot's `xmax`:
/// a transaction that started after the last one to finish can hold an id above it.)
const PG_OWN_TRANSACTION: &str = "SELECT CAST(CAST(pg_current_xact_id() AS TEXT) AS BIGINT)";
/// PostgreSQL: how many ids the transfer sequence hands a session at once.
const PG_SEQUENCE_CACHE: &str = "SELECT cache_size FROM pg_sequences \
     WHERE schemaname = current_schema() AND sequencename = 'ledger_transfers_id_seq'";

fn poisoned() -> StoreError {
    StoreError::Invariant("the seal floor's lock was poisoned".into())
}

/// Marks kept at most; an older one is dropped first (the floor then rises a little later).
const MAX_SEAL_MARKS: usize = 1024;

/// What a PostgreSQL sealer has proved about the ledger: every transfer with an id at or below
/// `floor` is sealed or was never committed, so a round need not look there.
///
/// Ids are handed out when a transfer is inserted, not when it commits, so "the last sealed
/// id" proves nothing about lower ids. A round that finds new ids handed out leaves a *mark*
/// `(handed_out, xid)`: every id up to `handed_out` was taken by a transaction whose id is
/// below `xid`. Once the oldest running transaction is at or past `xid`, all of those have
/// ended, so a round that starts then sees every such transfer that committed; when it has
/// sealed all it found, the floor may rise to `handed_out`. Pure bookkeeping, kept per process:
/// what one process proves stays true whichever process seals next. Its two premises are rules
/// of the database (migration `0007_ledger_sealing_order.sql`): the sequence has no cache, and a
/// transfer is inserted only by a transaction that already holds an id. PostgreSQL 13 or later
/// (`pg_current_xact_id`, `pg_current_snapshot`).
#[derive(Debug, Default)]
pub struct SealFloor {
    floor: i64,
    marks: std::collections::VecDeque<(i64, i64)>,
    /// The transfer sequence was found to hand out one id at a time.
    sequence_checked: bool,
}

impl SealFloor {
    /// For a round starting when the oldest running transaction is `xmin`: the floor to look
    /// above now, and the floor proved if the round seals everything it finds.
    fn at(&self, xmin: i64) -> (i64, i64) {
        let ready = self.marks.iter().rev().find(|(_, xid)| *xid <= xmin).map(|(ids, _)| *ids);
        (self.floor, ready.unwrap_or(self.floor).max(self.floor))
    }

    fn raise(&mut self, proved: i64) {
        self.floor = self.floor.max(proved);
        let floor = self.floor;
        self.marks.retain(|(ids, _)| *ids > floor);
    }

    /// The highest id already covered by the floor or a mark: a round marks only beyond it.
    fn noted(&self) -> i64 {
        self.marks.back().map_or(self.floor, |(ids, _)| *ids).max(self.floor)
    }

    fn mark(&mut self, handed_out: i64, xid: i64) {
        if handed_out <= self.floor || self.marks.back().is_some_and(|(ids, _)| *ids >= handed_out) {
            return;
        }
        if self.marks.len() >= MAX_SEAL_MARKS {
            self.marks.pop_front();
        }
        self.marks.push_back((handed_out, xid));
    }
}

/// The result of recomputing the chain.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ChainReport {
    /// Every sealed link matches, the sequence has no gap and the anchor, if one was given, held.
    pub ok: bool,
    pub sealed: i64,
    /// Transfers committed but not yet sealed (the sealer runs continuously).
    pub unsealed: i64,
    /// Hash of the last link verified: with `head_seq`, the anchor (`SEQ:HASH`) to keep outside
    /// the database and check later.
    pub head: String,
    /// Seq of the last link verified (0: none).
    pub head_seq: i64,
    pub first_broken: Option<BrokenLink>,
    /// The anchor checked, when one was given; `ok` is false unless it held.
    pub anchor: Option<AnchorCheck>,
}

/// An account's totals.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AccountBalance {
    pub account: String,
    pub kind: String,
    /// Sum of amounts moved out of (debited from) the account's counterpart into it, đồng.
    pub debits: i64,
    pub credits: i64,
    /// `debits − credits`: positive for money held (clearing, bank), negative for money owed
    /// (treasury payable, suspense).
    pub balance: i64,
}

/// One ledger transfer with its transaction, for listings.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EntryRecord {
    /// Monotonic id; also the pagination cursor.
    pub id: i64,
    pub transaction_id: String,
    pub kind: String,
    pub payment_id: Option<String>,
    pub notice_code: Option<String>,
    pub corrects: Option<String>,
    pub debit_account: String,
    pub credit_account: String,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
    /// Place in the hash chain once sealed.
    pub seq: Option<i64>,
    pub hash: Option<String>,
}

/// Filters of the entry listing.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    pub account: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub payment_id: Option<String>,
    pub notice_code: Option<String>,
    /// Entries with an id greater than this.
    pub after: Option<i64>,
    /// Chain order instead: sealed entries whose seq is greater than this, by seq.
    pub sealed_after: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Chains up to `limit` committed, unsealed transfers; returns how many were sealed. Safe
    /// on every instance: only one sealer works at a time, the others return 0.
    pub async fn seal_ledger(&self, limit: i64) -> StoreResult<usize> {
        self.seal(limit, false).await
    }

    /// Seals everything committed so far, waiting for a sealer at work on another instance
    /// (or in the background) instead of skipping the round: what `verify` needs. It stops at the
    /// first round that seals fewer than `limit`, which found everything committed when it looked:
    /// under steady writes a round always finds something new, and waiting for one that finds
    /// nothing would keep `verify` going as long as the writes do.
    pub async fn seal_ledger_fully(&self, limit: i64) -> StoreResult<()> {
        while (self.seal(limit, true).await? as i64) >= limit {}
        Ok(())
    }

    async fn seal(&self, limit: i64, wait: bool) -> StoreResult<usize> {
        match self {
            // The write lock makes a SQLite write transaction the only sealer; whoever holds it
            // next seals what this one did not.
            Store::Sqlite(db) => db.write_direct(|tx| seal_in_transaction(tx, limit)).await,
            Store::Postgres(db) => Self::seal_postgres(db, limit, wait).await,
        }
    }

    /// A PostgreSQL sealing round, under an advisory lock so that one sealer works at a time.
    /// Only transfers above a floor are looked at, so a round does not scan the whole ledger; a
    /// transaction that took a lower transfer id can commit later, so the floor is what
    /// [`SealFloor`] has proved, and the round reads, before it looks, the oldest transaction
    /// still running (`pg_snapshot_xmin`) to know which of its marks have become safe.
    async fn seal_postgres(db: &super::PgDb, limit: i64, wait: bool) -> StoreResult<usize> {
        let select_unsealed = format!(
            "{CHAIN_SELECT} LEFT JOIN ledger_seals s ON s.transfer_id = t.id WHERE s.transfer_id IS NULL \
             AND t.id > $2 ORDER BY t.id LIMIT $1"
        );
        let mut tx = db.pool.begin().await?;
        if wait {
            sqlx::query("SELECT pg_advisory_xact_lock(7461001)").execute(&mut *tx).await?;
        } else {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(7461001)").fetch_one(&mut *tx).await?;
            if !got {
                return Ok(0);
            }
        }
        let (noted, sequence_checked) = {
            let floor = db.seal_floor.lock().map_err(|_| poisoned())?;
            (floor.noted(), floor.sequence_checked)
        };
        if !sequence_checked {
            // Marks need ids handed out one at a time (migration 0007 sets it).
            let cache: Option<i64> = sqlx::query_scalar(PG_SEQUENCE_CACHE).fetch_optional(&mut *tx).await?;
            if cache != Some(1) {
                return Err(StoreError::Invariant(format!(
                    "ledger_transfers_id_seq must hand out ids one at a time (CACHE 1), not {cache:?}"
                )));
            }
            db.seal_floor.lock().map_err(|_| poisoned())?.sequence_checked = true;
        }
        let (xmin, handed_out): (i64, i64) =
            sqlx::query_as(PG_OLDEST_RUNNING_AND_IDS_HANDED_OUT).fetch_one(&mut *tx).await?;
        // (floor used, floor proved once this round has sealed everything it found)
        let pg_floor = db.seal_floor.lock().map_err(|_| poisoned())?.at(xmin);
        // A new mark: the ids handed out so far, then a transaction id assigned after reading
        // them (this round's own). Every posting's database transaction holds its id before its
        // transfers take ids (migration 0007's trigger rejects a transfer inserted otherwise):
        // each transaction holding one of these ids has a lower transaction id.
        let new_mark = if handed_out > noted {
            let xid: i64 = sqlx::query_scalar(PG_OWN_TRANSACTION).fetch_one(&mut *tx).await?;
            Some((handed_out, xid))
        } else {
            None
        };
        // Without it the planner, its statistics behind the ledger's growth, anti-joined the
        // transfers above the floor against a hash of every seal: a whole-table scan each round,
        // 28 ms at 60,000 seals (a third of PostgreSQL's time in the callback benchmark, per
        // pg_stat_statements); by key, about 2 ms under that load.
        sqlx::query(super::PG_KEYED_PLANS).execute(&mut *tx).await?;
        let rows: Vec<ChainRow> =
            sqlx::query_as(&select_unsealed).bind(limit).bind(pg_floor.0).fetch_all(&mut *tx).await?;
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM ledger_seals ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let (sealed, last_id) = (rows.len(), rows.last().map(|r| r.transfer_id));
        let links = chain(head, rows);
        if !links.is_empty() {
            insert_seals_pg(&mut tx, &links, now()).await?;
        }
        tx.commit().await?;
        // Everything visible above the floor up to the last row sealed is now sealed (all of it
        // if the round was not cut short by `limit`).
        let proved = if (sealed as i64) < limit { pg_floor.1 } else { pg_floor.1.min(last_id.unwrap_or(0)) };
        let mut floor = db.seal_floor.lock().map_err(|_| poisoned())?;
        floor.raise(proved);
        if let Some((handed_out, xid)) = new_mark {
            floor.mark(handed_out, xid);
        }
        Ok(sealed)
    }

    /// Recomputes the whole chain, in batches, and names the first link that does not match;
    /// with an anchor, also checks that the verified chain still has its hash at its seq.
    pub async fn verify_ledger(&self, anchor: Option<&Anchor>) -> StoreResult<ChainReport> {
        let batch: i64 = 2_000;
        let select = format!(
            "{CHAIN_SELECT} JOIN ledger_seals s ON s.transfer_id = t.id WHERE s.seq >= $1 ORDER BY s.seq LIMIT $2"
        );
        let mut prev = GENESIS.to_string();
        let mut next_seq = 1i64;
        let mut first_broken: Option<BrokenLink> = None;
        let mut anchored: Option<String> = None;
        loop {
            let rows: Vec<ChainRow> = on_pool!(self, pool => {
                sqlx::query_as(&select).bind(next_seq).bind(batch).fetch_all(pool).await
            })?;
            let links: Vec<Seal> = rows.into_iter().map(ChainRow::into_seal).collect();
            let outcome = verify_links(&prev, next_seq, &links);
            // The links before the broken one (all of them if none is) verified.
            let verified = match &outcome {
                Ok(_) => &links[..],
                Err(b) => {
                    let at = links.iter().position(|l| l.seq == b.seq && l.transfer.transfer_id == b.transfer_id);
                    &links[..at.unwrap_or(0)]
                }
            };
            if let Some(a) = anchor
                && let Some(link) = verified.iter().find(|l| l.seq == a.seq)
            {
                anchored = Some(link.hash.clone());
            }
            if let Some(last) = verified.last() {
                prev = last.hash.clone();
                next_seq = last.seq + 1;
            }
            if let Err(broken) = outcome {
                first_broken = Some(broken);
                break;
            }
            if (links.len() as i64) < batch {
                break;
            }
        }
        let (sealed, unsealed): (i64, i64) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM ledger_seals), \
                 (SELECT COUNT(*) FROM ledger_transfers t WHERE NOT EXISTS \
                  (SELECT 1 FROM ledger_seals s WHERE s.transfer_id = t.id))",
            )
            .fetch_one(pool)
            .await
        })?;
        let head_seq = next_seq - 1;
        let anchor = anchor.map(|a| a.check(anchored.as_deref(), head_seq, first_broken.as_ref().map(|b| b.seq)));
        let ok = first_broken.is_none() && anchor.as_ref().is_none_or(|a| a.held);
        Ok(ChainReport { ok, sealed, unsealed, head: prev, head_seq, first_broken, anchor })
    }

    pub async fn ledger_balances(&self) -> StoreResult<Vec<AccountBalance>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT a.name AS account, a.kind, \
                 CAST(COALESCE((SELECT SUM(amount) FROM ledger_transfers WHERE debit_account = a.name), 0) AS BIGINT) AS debits, \
                 CAST(COALESCE((SELECT SUM(amount) FROM ledger_transfers WHERE credit_account = a.name), 0) AS BIGINT) AS credits, \
                 CAST(COALESCE((SELECT SUM(amount) FROM ledger_transfers WHERE debit_account = a.name), 0) \
                    - COALESCE((SELECT SUM(amount) FROM ledger_transfers WHERE credit_account = a.name), 0) AS BIGINT) AS balance \
                 FROM ledger_accounts a ORDER BY a.name",
            )
            .fetch_all(pool)
            .await
        })?)
    }

    pub async fn ledger_entries(&self, f: &EntryFilter) -> StoreResult<Vec<EntryRecord>> {
        // Only the filters given become conditions, so each can use its index (a `$n IS NULL OR`
        // condition would make every listing scan the ledger).
        let in_set = match self {
            Store::Sqlite(_) => ("IN", ")"),
            Store::Postgres(_) => ("= ANY(ARRAY", "))"),
        };
        Ok(on_pool!(self, pool => {
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT t.id, t.transaction_id, x.kind, x.payment_id, x.notice_code, x.corrects, t.debit_account, \
                 t.credit_account, t.amount, t.created_at, s.seq, s.hash \
                 FROM ledger_transfers t JOIN ledger_transactions x ON x.id = t.transaction_id ",
            );
            // Id order can pass over a transfer that commits after a page was read (PostgreSQL hands
            // ids out at insert); chain order cannot: seals are given under the chain's lock (the
            // sealer's advisory lock, SQLite's write lock), in the order transfers became visible.
            let order = match f.sealed_after {
                Some(seq) => {
                    qb.push("JOIN ledger_seals s ON s.transfer_id = t.id WHERE s.seq > ").push_bind(seq);
                    " ORDER BY s.seq LIMIT "
                }
                None => {
                    qb.push("LEFT JOIN ledger_seals s ON s.transfer_id = t.id WHERE t.id > ");
                    qb.push_bind(f.after.unwrap_or(0));
                    " ORDER BY t.id LIMIT "
                }
            };
            if let Some(account) = &f.account {
                qb.push(" AND (t.debit_account = ").push_bind(account.as_str());
                qb.push(" OR t.credit_account = ").push_bind(account.as_str()).push(")");
            }
            if let Some(from) = f.from {
                qb.push(" AND t.created_at >= ").push_bind(from);
            }
            if let Some(to) = f.to {
                qb.push(" AND t.created_at < ").push_bind(to);
            }
            // A payment's or a notice's few transactions lead to their transfers. On PostgreSQL
            // they are handed over as an array whose length the planner cannot guess, so it looks
            // the transfers up by transaction instead of walking the ledger in id order.
            for (column, value) in [("payment_id", &f.payment_id), ("notice_code", &f.notice_code)] {
                if let Some(value) = value {
                    qb.push(format!(" AND t.transaction_id {} (SELECT id FROM ledger_transactions WHERE {column} = ", in_set.0));
                    qb.push_bind(value.as_str()).push(in_set.1);
                }
            }
            qb.push(order).push_bind(f.limit);
            qb.build_query_as::<EntryRecord>().fetch_all(pool).await
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::SealFloor;

    #[test]
    fn the_floor_rises_only_once_every_holder_of_the_ids_has_ended() {
        let mut f = SealFloor::default();
        assert_eq!(f.at(100), (0, 0));
        f.mark(50, 110); // ids up to 50 were held by transactions below 110
        // Transaction 105 may still be running and hold id 40: not yet.
        assert_eq!(f.at(105), (0, 0));
        // All below 110 have ended: a complete round proves 50.
        assert_eq!(f.at(110), (0, 50));
        f.raise(50);
        assert_eq!(f.at(110), (50, 50));
    }

    #[test]
    fn a_round_cut_short_proves_only_what_it_sealed_and_marks_stay_ordered() {
        let mut f = SealFloor::default();
        f.mark(50, 110);
        f.mark(80, 120);
        f.mark(70, 130); // not above the last mark: ignored
        assert_eq!(f.at(125), (0, 80));
        f.raise(60); // the round stopped at id 60
        assert_eq!(f.at(125), (60, 80));
        f.raise(80);
        assert_eq!(f.at(200), (80, 80));
        f.mark(80, 140); // nothing new handed out
        assert_eq!(f.at(200), (80, 80));
    }
}
