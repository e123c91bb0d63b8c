//! The SQLite half of a payment batch, run through SQLite's C API on the payment writer's thread
//! ([`crate::store::direct`]): the snapshot read by key with small prepared statements, every
//! write a prepared statement stepped once per row. Each statement is prepared once per batch
//! (rusqlite's cache lives with the transaction's connection wrapper) instead of a multi-row text
//! parsed and compiled for every batch.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{OptionalExtension, Transaction, params};

use super::{BatchKeys, decide, expect_rows, posting_accounts};
use crate::payments::batch::{
    BatchWrites, Job, JobOutcome, NoticeState, PAYMENT_STATE_COLUMNS, PaymentState, Snapshot,
};
use crate::store::StoreResult;
use crate::store::direct::sqlite_time;
use crate::store::ledger::{SEAL_BATCH, seal_in_transaction};

/// Reads, decides and writes one batch inside the caller's write transaction.
pub(super) fn apply(tx: &Transaction<'_>, keys: &BatchKeys, jobs: &[Job]) -> StoreResult<Vec<JobOutcome>> {
    let snapshot = if keys.is_empty() { Snapshot::default() } else { snapshot(tx, keys)? };
    let (writes, outcomes) = decide(snapshot, jobs)?;
    write(tx, &writes)?;
    seal(tx, &writes)?;
    Ok(outcomes)
}

/// Chains, oldest first, as many unsealed transfers as the batch wrote plus [`SEAL_BATCH`], in the
/// batch's own transaction ([`seal_in_transaction`]): the batch's own and up to that many left
/// before them (with more left, the oldest; the batch's own follow later). A failure there costs the
/// batch nothing: its seals are rolled back to a savepoint, logged, and the background sealer
/// chains the transfers later; the payments still commit.
fn seal(tx: &Transaction<'_>, writes: &BatchWrites) -> StoreResult<()> {
    let transfers: usize = writes.postings.iter().map(|p| p.plan.transfers.len()).sum();
    if transfers == 0 {
        return Ok(());
    }
    tx.execute_batch("SAVEPOINT batch_seals")?;
    match seal_in_transaction(tx, transfers as i64 + SEAL_BATCH) {
        Ok(_) => tx.execute_batch("RELEASE batch_seals")?,
        Err(e) => {
            tracing::warn!(error = %e, "sealing inside a payment batch failed; the background sealer will chain it");
            tx.execute_batch("ROLLBACK TO batch_seals; RELEASE batch_seals")?;
        }
    }
    Ok(())
}

fn payment_state(row: &rusqlite::Row<'_>) -> rusqlite::Result<PaymentState> {
    Ok(PaymentState {
        id: row.get(0)?,
        merchant_ref: row.get(1)?,
        notice_id: row.get(2)?,
        notice_code: row.get(3)?,
        provider: row.get(4)?,
        amount: row.get(5)?,
        status: row.get(6)?,
        provider_txn_id: row.get(7)?,
        overpayment: row.get(8)?,
        late_success: row.get(9)?,
        refund_due: row.get(10)?,
        interest_part: row.get(11)?,
        interest_budget_code: row.get(12)?,
    })
}

/// Every payment the batch names (by id or merchant reference), their notices, the last
/// sequence numbers, and the lines of the notices still unpaid — in notice and line order.
fn snapshot(tx: &Transaction<'_>, keys: &BatchKeys) -> StoreResult<Snapshot> {
    let mut payments: BTreeMap<String, PaymentState> = BTreeMap::new();
    {
        let mut by_id = tx.prepare_cached(&format!("SELECT {PAYMENT_STATE_COLUMNS} FROM payments WHERE id = ?1"))?;
        for id in &keys.ids {
            if let Some(p) = by_id.query_row([id], payment_state).optional()? {
                payments.insert(p.id.clone(), p);
            }
        }
        let mut by_ref =
            tx.prepare_cached(&format!("SELECT {PAYMENT_STATE_COLUMNS} FROM payments WHERE merchant_ref = ?1"))?;
        for merchant_ref in &keys.refs {
            if let Some(p) = by_ref.query_row([merchant_ref], payment_state).optional()? {
                payments.insert(p.id.clone(), p);
            }
        }
    }
    let notice_ids: BTreeSet<&str> = payments.values().map(|p| p.notice_id.as_str()).collect();
    let mut snapshot = Snapshot::default();
    {
        let mut notice = tx.prepare_cached("SELECT id, code, status FROM notices WHERE id = ?1")?;
        for id in notice_ids {
            let found = notice
                .query_row([id], |r| Ok(NoticeState { id: r.get(0)?, code: r.get(1)?, status: r.get(2)? }))
                .optional()?;
            snapshot.notices.extend(found);
        }
        let mut last_event = tx.prepare_cached("SELECT MAX(seq) FROM payment_events WHERE payment_id = ?1")?;
        for id in payments.keys() {
            if let Some(seq) = last_event.query_row([id], |r| r.get::<_, Option<i64>>(0))? {
                snapshot.event_seqs.push((id.clone(), seq));
            }
        }
        let mut last_notice_seq =
            tx.prepare_cached("SELECT MAX(notice_seq) FROM outbox_events WHERE notice_code = ?1")?;
        let mut lines =
            tx.prepare_cached("SELECT budget_code, amount FROM notice_lines WHERE notice_id = ?1 ORDER BY line_no")?;
        for n in &snapshot.notices {
            if let Some(seq) = last_notice_seq.query_row([&n.code], |r| r.get::<_, Option<i64>>(0))? {
                snapshot.notice_seqs.push((n.code.clone(), seq));
            }
            if n.status == "unpaid" {
                let rows = lines.query_map([&n.id], |r| Ok((n.id.clone(), r.get(0)?, r.get(1)?)))?;
                for line in rows {
                    snapshot.lines.push(line?);
                }
            }
        }
    }
    snapshot.payments = payments.into_values().collect();
    Ok(snapshot)
}

/// Writes what the plan decided, table by table in the order of the PostgreSQL half; a guarded
/// update that touches fewer rows than planned aborts the batch.
fn write(tx: &Transaction<'_>, writes: &BatchWrites) -> StoreResult<()> {
    let BatchWrites { payments, history, notices_paid, postings, outbox, inbox } = writes;
    if !payments.is_empty() {
        let mut update = tx.prepare_cached(
            "UPDATE payments SET status = ?3, provider_txn_id = ?4, late_success = ?5, overpayment = ?6, \
             refund_due = ?7, updated_at = ?8 WHERE id = ?1 AND status = ?2",
        )?;
        let mut moved = 0;
        for c in payments {
            moved += update.execute(params![
                c.id,
                c.expected_status,
                c.status,
                c.provider_txn_id,
                c.late_success,
                c.overpayment,
                c.refund_due,
                sqlite_time(&c.updated_at),
            ])?;
        }
        expect_rows(moved as u64, payments.len(), "a payment")?;
    }
    if !history.is_empty() {
        let mut insert = tx.prepare_cached(
            "INSERT INTO payment_events (payment_id, seq, from_status, to_status, cause, detail, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for h in history {
            insert.execute(params![
                h.payment_id,
                h.seq,
                h.from_status,
                h.to_status,
                h.cause,
                h.detail,
                sqlite_time(&h.at)
            ])?;
        }
    }
    if !notices_paid.is_empty() {
        let mut mark = tx.prepare_cached(
            "UPDATE notices SET status = 'paid', paid_at = ?2, paid_by_payment = ?3 WHERE id = ?1 AND status = 'unpaid'",
        )?;
        let mut paid = 0;
        for n in notices_paid {
            paid += mark.execute(params![n.notice_id, sqlite_time(&n.paid_at), n.payment_id])?;
        }
        expect_rows(paid as u64, notices_paid.len(), "a notice")?;
    }
    if let Some(first_at) = postings.first().map(|p| sqlite_time(&p.at)) {
        let mut account = tx.prepare_cached(
            "INSERT INTO ledger_accounts (name, kind, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
        )?;
        for a in posting_accounts(writes) {
            account.execute(params![a, crate::ledger::account_kind(a), first_at])?;
        }
        let mut transaction = tx.prepare_cached(
            "INSERT INTO ledger_transactions (id, posting_key, kind, payment_id, notice_code, corrects, memo, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut transfer = tx.prepare_cached(
            "INSERT INTO ledger_transfers (transaction_id, debit_account, credit_account, amount, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        // Every transaction row first, then the transfers, as on PostgreSQL.
        for p in postings {
            let at = sqlite_time(&p.at);
            transaction.execute(params![
                p.ledger_tx_id,
                p.plan.posting_key,
                p.plan.kind,
                p.plan.payment_id,
                p.plan.notice_code,
                p.plan.corrects,
                p.plan.memo,
                at,
            ])?;
        }
        for p in postings {
            let at = sqlite_time(&p.at);
            for t in &p.plan.transfers {
                transfer.execute(params![p.ledger_tx_id, t.debit, t.credit, t.amount, at])?;
            }
        }
    }
    if !outbox.is_empty() {
        let mut insert = tx.prepare_cached(
            "INSERT INTO outbox_events (id, dedupe_key, notice_code, notice_seq, event_type, payload, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (dedupe_key) DO NOTHING",
        )?;
        for e in outbox {
            insert.execute(params![
                e.id,
                e.dedupe_key,
                e.notice_code,
                e.notice_seq,
                e.event_type,
                e.payload,
                sqlite_time(&e.created_at),
            ])?;
        }
    }
    if !inbox.is_empty() {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO callback_inbox ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            crate::store::inbox::COLUMNS
        ))?;
        for r in inbox {
            insert.execute(params![
                r.id,
                r.provider,
                r.method,
                r.path,
                r.query,
                r.headers,
                r.body,
                r.body_sha256,
                r.body_bytes,
                r.source_addr,
                sqlite_time(&r.received_at),
                r.verification,
                r.outcome,
                r.detail,
                r.merchant_ref,
                r.processed_at.as_ref().map(sqlite_time),
            ])?;
        }
    }
    Ok(())
}
