//! Applying a batch of payment updates in one transaction: read what the batch names, let
//! [`crate::payments::batch::plan`] decide, write the result with one statement per table.
//!
//! Invariants: all of a batch commits or none of it; on PostgreSQL the batch's notices and then
//! its payments are locked `FOR UPDATE` in id order (the lock order of every other writer:
//! notice, then payment), so batches of several processes queue instead of deadlocking; a payment
//! is written only where its status is still what the batch read, and a notice is marked paid only
//! where it is still unpaid — a count that differs aborts the whole batch; posting keys and
//! outbox dedupe keys stay unique in the database, so a money event is posted at most once
//! whatever the batching.

use std::collections::BTreeSet;

use super::{Store, StoreError, StoreResult, begin_write, push_in_list, values_statements};
use crate::payments::batch::{
    BatchWrites, Job, JobOutcome, NoticeState, PAYMENT_STATE_COLUMNS, PaymentRef, PaymentState, Snapshot, plan,
};

/// A batch's [`Snapshot`] on SQLite, as one JSON object (`$1`: payment ids, `$2`: merchant
/// references, both JSON arrays). Lines carry their number and are put in order after unpacking.
const SQLITE_SNAPSHOT: &str = "WITH p AS MATERIALIZED (SELECT id, merchant_ref, notice_id, notice_code, provider, amount, \
     status, provider_txn_id, overpayment, late_success, refund_due, interest_part, interest_budget_code FROM payments \
     WHERE id IN (SELECT value FROM json_each($1)) OR merchant_ref IN (SELECT value FROM json_each($2))), \
     n AS MATERIALIZED (SELECT id, code, status FROM notices WHERE id IN (SELECT notice_id FROM p)) \
     SELECT json_object( \
     'payments', json((SELECT json_group_array(json_array(id, merchant_ref, notice_id, notice_code, provider, amount, \
        status, provider_txn_id, overpayment, late_success, refund_due, interest_part, interest_budget_code)) FROM p)), \
     'notices', json((SELECT json_group_array(json_array(id, code, status)) FROM n)), \
     'event_seqs', json((SELECT json_group_array(json_array(payment_id, s)) FROM \
        (SELECT payment_id, MAX(seq) AS s FROM payment_events WHERE payment_id IN (SELECT id FROM p) GROUP BY payment_id))), \
     'notice_seqs', json((SELECT json_group_array(json_array(notice_code, s)) FROM \
        (SELECT notice_code, MAX(notice_seq) AS s FROM outbox_events WHERE notice_code IN (SELECT code FROM n) \
         GROUP BY notice_code))), \
     'lines', json((SELECT json_group_array(json_array(notice_id, line_no, budget_code, amount)) FROM notice_lines \
        WHERE notice_id IN (SELECT id FROM n WHERE status = 'unpaid'))))";

/// PostgreSQL: for the rest of the transaction, plan lookups by key as index scans in nested
/// loops (`set_config(…, true)` is `SET LOCAL`).
const PG_KEYED_PLANS: &str = "SELECT set_config('enable_seqscan', 'off', true), \
     set_config('enable_bitmapscan', 'off', true), set_config('enable_hashjoin', 'off', true), \
     set_config('enable_mergejoin', 'off', true)";

/// Rows as JSON arrays; SQLite's booleans are 0 and 1.
type PackedPayment =
    (String, String, String, String, String, i64, String, Option<String>, i64, i64, i64, i64, Option<String>);

#[derive(serde::Deserialize)]
struct Packed {
    payments: Vec<PackedPayment>,
    notices: Vec<(String, String, String)>,
    event_seqs: Vec<(String, i64)>,
    notice_seqs: Vec<(String, i64)>,
    lines: Vec<(String, i64, String, i64)>,
}

fn unpack_snapshot(packed: &str) -> StoreResult<Snapshot> {
    let mut p: Packed = serde_json::from_str(packed).map_err(|e| StoreError::Invariant(format!("snapshot: {e}")))?;
    p.lines.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    Ok(Snapshot {
        payments: p
            .payments
            .into_iter()
            .map(|r| PaymentState {
                id: r.0,
                merchant_ref: r.1,
                notice_id: r.2,
                notice_code: r.3,
                provider: r.4,
                amount: r.5,
                status: r.6,
                provider_txn_id: r.7,
                overpayment: r.8 != 0,
                late_success: r.9 != 0,
                refund_due: r.10,
                interest_part: r.11,
                interest_budget_code: r.12,
            })
            .collect(),
        notices: p.notices.into_iter().map(|(id, code, status)| NoticeState { id, code, status }).collect(),
        lines: p.lines.into_iter().map(|(notice, _, code, amount)| (notice, code, amount)).collect(),
        event_seqs: p.event_seqs,
        notice_seqs: p.notice_seqs,
    })
}

impl Store {
    /// Applies `jobs` in one transaction and returns each one's outcome, in order. An error means
    /// nothing of the batch was written.
    pub async fn apply_payment_batch(&self, jobs: &[Job]) -> StoreResult<Vec<JobOutcome>> {
        let mut ids = BTreeSet::new();
        let mut refs = BTreeSet::new();
        for job in jobs {
            match job {
                Job::Apply { payment: PaymentRef::Id(id), .. } => ids.insert(id.clone()),
                Job::Apply { payment: PaymentRef::MerchantRef(r), .. } => refs.insert(r.clone()),
                Job::Keep(_) => false,
            };
        }
        let lock = self.lock_clause_pub();
        let sqlite = matches!(self, Store::Sqlite(_));
        let outcomes = begin_write!(self, pool, tx => {
            let snapshot = if ids.is_empty() && refs.is_empty() {
                Snapshot::default()
            } else if sqlite {
                // One statement, one row: sqlx hands SQLite rows over one at a time, so the
                // snapshot comes packed as JSON.
                let ids = serde_json::to_string(&ids).map_err(|e| StoreError::Invariant(e.to_string()))?;
                let refs = serde_json::to_string(&refs).map_err(|e| StoreError::Invariant(e.to_string()))?;
                let packed: String = sqlx::query_scalar(SQLITE_SNAPSHOT).bind(ids).bind(refs).fetch_one(&mut *tx).await?;
                unpack_snapshot(&packed)?
            } else {
                // Every statement of a batch finds its rows by key (a few hundred keys). Without
                // fresh statistics — a busy table outgrows its last ANALYZE within minutes — the
                // planner answers long key lists with whole-table scans and hash joins, whose cost
                // grows with the table; this transaction may use only index lookups.
                sqlx::query(PG_KEYED_PLANS).execute(&mut *tx).await?;
                let mut snapshot = Snapshot::default();
                // Notices first, then payments: the lock order of every writer.
                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT id, code, status FROM notices WHERE id IN (SELECT notice_id FROM payments WHERE id IN ",
                );
                push_in_list!(qb, &ids);
                qb.push(" OR merchant_ref IN ");
                push_in_list!(qb, &refs);
                qb.push(format!(") ORDER BY id{lock}"));
                snapshot.notices = qb.build_query_as::<NoticeState>().persistent(false).fetch_all(&mut *tx).await?;

                let mut qb = sqlx::QueryBuilder::new(format!("SELECT {PAYMENT_STATE_COLUMNS} FROM payments WHERE id IN "));
                push_in_list!(qb, &ids);
                qb.push(" OR merchant_ref IN ");
                push_in_list!(qb, &refs);
                qb.push(format!(" ORDER BY id{lock}"));
                snapshot.payments =
                    qb.build_query_as::<PaymentState>().persistent(false).fetch_all(&mut *tx).await?;

                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT payment_id, CAST(MAX(seq) AS BIGINT) FROM payment_events WHERE payment_id IN ",
                );
                push_in_list!(qb, snapshot.payments.iter().map(|p| &p.id));
                qb.push(" GROUP BY payment_id");
                snapshot.event_seqs = qb.build_query_as().persistent(false).fetch_all(&mut *tx).await?;

                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT notice_code, CAST(MAX(notice_seq) AS BIGINT) FROM outbox_events WHERE notice_code IN ",
                );
                push_in_list!(qb, snapshot.notices.iter().map(|n| &n.code));
                qb.push(" GROUP BY notice_code");
                snapshot.notice_seqs = qb.build_query_as().persistent(false).fetch_all(&mut *tx).await?;

                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT notice_id, budget_code, amount FROM notice_lines WHERE notice_id IN ",
                );
                push_in_list!(qb, snapshot.notices.iter().filter(|n| n.status == "unpaid").map(|n| &n.id));
                qb.push(" ORDER BY notice_id, line_no");
                snapshot.lines = qb.build_query_as().persistent(false).fetch_all(&mut *tx).await?;
                snapshot
            };
            let (writes, outcomes) = plan(snapshot, jobs).map_err(|e| StoreError::Invariant(e.to_string()))?;
            let BatchWrites { payments, history, notices_paid, postings, outbox, inbox } = &writes;

            let moved = values_statements!(tx,
                "WITH v (id, expected_status, status, provider_txn_id, late_success, overpayment, refund_due, updated_at) AS (",
                payments,
                ") UPDATE payments SET status = v.status, provider_txn_id = v.provider_txn_id, \
                 late_success = v.late_success, overpayment = v.overpayment, refund_due = v.refund_due, \
                 updated_at = v.updated_at FROM v WHERE payments.id = v.id AND payments.status = v.expected_status",
                |b, c| {
                    b.push_bind(c.id.as_str())
                        .push_bind(c.expected_status.as_str())
                        .push_bind(c.status.as_str())
                        .push_bind(c.provider_txn_id.as_deref())
                        .push_bind(c.late_success)
                        .push_bind(c.overpayment)
                        .push_bind(c.refund_due)
                        .push_bind(c.updated_at);
                });
            if moved != payments.len() as u64 {
                return Err(StoreError::Conflict("a payment changed under a held lock".into()));
            }
            values_statements!(tx,
                "INSERT INTO payment_events (payment_id, seq, from_status, to_status, cause, detail, at) ",
                history, "",
                |b, h| {
                    b.push_bind(h.payment_id.as_str())
                        .push_bind(h.seq)
                        .push_bind(h.from_status)
                        .push_bind(h.to_status)
                        .push_bind(h.cause)
                        .push_bind(h.detail.as_str())
                        .push_bind(h.at);
                });
            let paid = values_statements!(tx,
                "WITH v (id, paid_at, payment_id) AS (",
                notices_paid,
                ") UPDATE notices SET status = 'paid', paid_at = v.paid_at, paid_by_payment = v.payment_id \
                 FROM v WHERE notices.id = v.id AND notices.status = 'unpaid'",
                |b, n| {
                    b.push_bind(n.notice_id.as_str()).push_bind(n.paid_at).push_bind(n.payment_id.as_str());
                });
            if paid != notices_paid.len() as u64 {
                return Err(StoreError::Conflict("a notice changed under a held lock".into()));
            }
            if !postings.is_empty() {
                // Accounts in one order in every transaction (no deadlock when two create them at once).
                let accounts: BTreeSet<&str> = postings
                    .iter()
                    .flat_map(|p| p.plan.transfers.iter().flat_map(|t| [t.debit.as_str(), t.credit.as_str()]))
                    .collect();
                let accounts: Vec<&str> = accounts.into_iter().collect();
                let first_at = postings[0].at;
                values_statements!(tx, "INSERT INTO ledger_accounts (name, kind, created_at) ", accounts,
                    " ON CONFLICT (name) DO NOTHING",
                    |b, a| {
                        b.push_bind(*a).push_bind(crate::ledger::account_kind(a)).push_bind(first_at);
                    });
            }
            values_statements!(tx,
                "INSERT INTO ledger_transactions (id, posting_key, kind, payment_id, notice_code, corrects, memo, created_at) ",
                postings, "",
                |b, p| {
                    b.push_bind(p.ledger_tx_id.as_str())
                        .push_bind(p.plan.posting_key.as_str())
                        .push_bind(p.plan.kind)
                        .push_bind(p.plan.payment_id.as_deref())
                        .push_bind(p.plan.notice_code.as_deref())
                        .push_bind(p.plan.corrects.as_deref())
                        .push_bind(p.plan.memo.as_str())
                        .push_bind(p.at);
                });
            let transfers: Vec<(&str, &crate::ledger::Transfer, chrono::DateTime<chrono::Utc>)> = postings
                .iter()
                .flat_map(|p| p.plan.transfers.iter().map(move |t| (p.ledger_tx_id.as_str(), t, p.at)))
                .collect();
            values_statements!(tx,
                "INSERT INTO ledger_transfers (transaction_id, debit_account, credit_account, amount, created_at) ",
                transfers, "",
                |b, x| {
                    b.push_bind(x.0).push_bind(x.1.debit.as_str()).push_bind(x.1.credit.as_str()).push_bind(x.1.amount).push_bind(x.2);
                });
            values_statements!(tx,
                "INSERT INTO outbox_events (id, dedupe_key, notice_code, notice_seq, event_type, payload, created_at) ",
                outbox, " ON CONFLICT (dedupe_key) DO NOTHING",
                |b, e| {
                    b.push_bind(e.id.as_str())
                        .push_bind(e.dedupe_key.as_str())
                        .push_bind(e.notice_code.as_str())
                        .push_bind(e.notice_seq)
                        .push_bind(e.event_type)
                        .push_bind(e.payload.as_str())
                        .push_bind(e.created_at);
                });
            values_statements!(tx,
                &format!("INSERT INTO callback_inbox ({}) ", super::inbox::COLUMNS),
                inbox, "",
                |b, r| {
                    b.push_bind(r.id.as_str())
                        .push_bind(r.provider.as_str())
                        .push_bind(r.method.as_str())
                        .push_bind(r.path.as_str())
                        .push_bind(r.query.as_str())
                        .push_bind(r.headers.as_str())
                        .push_bind(r.body.as_str())
                        .push_bind(r.body_sha256.as_str())
                        .push_bind(r.body_bytes)
                        .push_bind(r.source_addr.as_str())
                        .push_bind(r.received_at)
                        .push_bind(r.verification.as_deref())
                        .push_bind(r.outcome.as_deref())
                        .push_bind(r.detail.as_deref())
                        .push_bind(r.merchant_ref.as_deref())
                        .push_bind(r.processed_at);
                });
            tx.commit().await?;
            outcomes
        });
        Ok(outcomes)
    }
}
