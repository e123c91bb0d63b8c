//! Applying a batch of payment updates in one transaction: read what the batch names, let
//! [`crate::payments::batch::plan`] decide, write the result (one statement per table on SQLite,
//! one statement for all of them on PostgreSQL).
//!
//! Invariants: all of a batch commits or none of it; on PostgreSQL the batch's notices and then
//! its payments are locked `FOR UPDATE` in id order (the lock order of every other writer:
//! notice, then payment), so batches of several processes queue instead of deadlocking; a payment
//! is written only where its status is still what the batch read, and a notice is marked paid only
//! where it is still unpaid — a count that differs aborts the whole batch; posting keys and
//! outbox dedupe keys stay unique in the database, so a money event is posted at most once
//! whatever the batching; ledger accounts are created in name order; a batch's database
//! transaction holds its id before any transfer takes one (the PostgreSQL sealer relies on it,
//! migration 0007 checks it).
//!
//! Each backend reads and writes in the shape it handles best: on SQLite the batch runs through
//! SQLite's C API on the writer's thread, a prepared statement stepped once per row; PostgreSQL
//! binds arrays to statements that are prepared once per connection, so no batch pays for
//! parsing and planning its own SQL.

mod postgres;
mod sqlite;

use std::collections::BTreeSet;
use std::sync::LazyLock;

use super::{Store, StoreError, StoreResult};
use crate::payments::batch::{BatchWrites, Job, JobOutcome, PaymentRef, Snapshot, plan};

/// The payments a batch names: by id and by merchant reference.
#[derive(Debug, Default)]
struct BatchKeys {
    ids: BTreeSet<String>,
    refs: BTreeSet<String>,
}

impl BatchKeys {
    fn of(jobs: &[Job]) -> BatchKeys {
        let mut keys = BatchKeys::default();
        for job in jobs {
            match job {
                Job::Apply { payment: PaymentRef::Id(id), .. } => keys.ids.insert(id.clone()),
                Job::Apply { payment: PaymentRef::MerchantRef(r), .. } => keys.refs.insert(r.clone()),
                Job::Keep(_) => false,
            };
        }
        keys
    }

    fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.refs.is_empty()
    }
}

/// A PostgreSQL batch's `BEGIN`, in one round trip with the plan settings and the transaction's
/// id. The batch's writes are one statement whose parts PostgreSQL does not promise to run in any
/// order, and the ledger's transfers must be inserted by a transaction that already holds its id
/// (migration 0007): in a batch that locks no row, the inbox's insert would be what assigns it.
/// (PostgreSQL 15 happens to run that insert first, so no test can show the other order.)
static PG_BEGIN_BATCH: LazyLock<String> =
    LazyLock::new(|| format!("BEGIN; {}; SELECT pg_current_xact_id()", super::PG_KEYED_PLANS));

impl Store {
    /// Applies `jobs` in one transaction and returns each one's outcome, in order. An error means
    /// nothing of the batch was written.
    pub async fn apply_payment_batch(&self, jobs: &[Job]) -> StoreResult<Vec<JobOutcome>> {
        let keys = BatchKeys::of(jobs);
        match self {
            Store::Sqlite(db) => db.write_direct(|tx| sqlite::apply(tx, &keys, jobs)).await,
            Store::Postgres(db) => {
                let mut tx = db.pool.begin_with(PG_BEGIN_BATCH.as_str()).await?;
                let outcomes = postgres::apply(&mut tx, &keys, jobs).await?;
                tx.commit().await?;
                Ok(outcomes)
            }
        }
    }
}

/// Decides the batch against its snapshot; an error means nothing of it may be written.
fn decide(snapshot: Snapshot, jobs: &[Job]) -> StoreResult<(BatchWrites, Vec<JobOutcome>)> {
    plan(snapshot, jobs).map_err(|e| StoreError::Invariant(e.to_string()))
}

/// A guarded write touched fewer rows than the batch planned: something changed a row the batch
/// holds locked (or, on SQLite, read inside its write transaction). The batch is aborted.
fn expect_rows(touched: u64, planned: usize, what: &str) -> StoreResult<()> {
    if touched == planned as u64 {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!("{what} changed under a held lock ({touched} of {planned} rows written)")))
    }
}

/// Ledger accounts a batch's postings name, in the order every writer creates them.
fn posting_accounts(writes: &BatchWrites) -> Vec<&str> {
    crate::ledger::accounts_in_order(writes.postings.iter().map(|p| &p.plan))
}
