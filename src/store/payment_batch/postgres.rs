//! The PostgreSQL half of a payment batch. Every statement takes whole columns as arrays
//! (`= ANY($n)` to read, `UNNEST(…)` to write), so its text never depends on the batch's size:
//! sqlx prepares each once per connection, where multi-row `VALUES` had PostgreSQL parse,
//! analyse and plan a new statement for every batch (about 9% of the machine in the callback
//! benchmark, per `perf`).

use sqlx::PgConnection;

use super::{BatchKeys, decide, expect_rows, posting_accounts};
use crate::payments::batch::{
    BatchWrites, Job, JobOutcome, NoticeState, PAYMENT_STATE_COLUMNS, PaymentState, Snapshot,
};
use crate::store::StoreResult;

/// The ids of the batch's payments: `$1` (ids) and those of `$2` (merchant references).
const BATCH_PAYMENT_IDS: &str = "$1::text[] || ARRAY(SELECT id FROM payments WHERE merchant_ref = ANY($2::text[]))";

const UPDATE_PAYMENTS: &str = "UPDATE payments SET status = v.status, provider_txn_id = v.provider_txn_id, \
     late_success = v.late_success, overpayment = v.overpayment, refund_due = v.refund_due, updated_at = v.updated_at \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::bool[], $7::int8[], $8::timestamptz[]) \
     AS v (id, expected_status, status, provider_txn_id, late_success, overpayment, refund_due, updated_at) \
     WHERE payments.id = v.id AND payments.status = v.expected_status";

const INSERT_HISTORY: &str = "INSERT INTO payment_events (payment_id, seq, from_status, to_status, cause, detail, at) \
     SELECT * FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])";

const MARK_NOTICES_PAID: &str = "UPDATE notices SET status = 'paid', paid_at = v.paid_at, paid_by_payment = v.payment_id \
     FROM UNNEST($1::text[], $2::timestamptz[], $3::text[]) AS v (id, paid_at, payment_id) \
     WHERE notices.id = v.id AND notices.status = 'unpaid'";

const INSERT_ACCOUNTS: &str = "INSERT INTO ledger_accounts (name, kind, created_at) \
     SELECT name, kind, $3::timestamptz FROM UNNEST($1::text[], $2::text[]) AS a (name, kind) \
     ON CONFLICT (name) DO NOTHING";

const INSERT_LEDGER_TRANSACTIONS: &str = "INSERT INTO ledger_transactions \
     (id, posting_key, kind, payment_id, notice_code, corrects, memo, created_at) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
     $8::timestamptz[])";

const INSERT_TRANSFERS: &str = "INSERT INTO ledger_transfers (transaction_id, debit_account, credit_account, amount, created_at) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::timestamptz[])";

const INSERT_OUTBOX: &str = "INSERT INTO outbox_events (id, dedupe_key, notice_code, notice_seq, event_type, payload, created_at) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::timestamptz[]) \
     ON CONFLICT (dedupe_key) DO NOTHING";

/// After `INSERT INTO callback_inbox (<inbox columns>)`.
const INBOX_ROWS: &str = "SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
     $9::int8[], $10::text[], $11::timestamptz[], $12::text[], $13::text[], $14::text[], $15::text[], $16::timestamptz[])";

/// One column of `rows`, ready to bind as an array.
fn col<'a, T, U>(rows: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}

/// Reads, locks, decides and writes one batch inside the caller's transaction.
pub(super) async fn apply(conn: &mut PgConnection, keys: &BatchKeys, jobs: &[Job]) -> StoreResult<Vec<JobOutcome>> {
    let snapshot = if keys.is_empty() { Snapshot::default() } else { snapshot(conn, keys).await? };
    let (writes, outcomes) = decide(snapshot, jobs)?;
    write(conn, &writes).await?;
    Ok(outcomes)
}

/// Locks the batch's notices, then its payments (the lock order of every writer), and reads what
/// the plan needs of them.
async fn snapshot(conn: &mut PgConnection, keys: &BatchKeys) -> StoreResult<Snapshot> {
    sqlx::query(crate::store::PG_KEYED_PLANS).execute(&mut *conn).await?;
    let ids: Vec<&str> = keys.ids.iter().map(String::as_str).collect();
    let refs: Vec<&str> = keys.refs.iter().map(String::as_str).collect();
    let mut snapshot = Snapshot::default();
    snapshot.notices = sqlx::query_as::<_, NoticeState>(&format!(
        "SELECT id, code, status FROM notices WHERE id = ANY(ARRAY(SELECT notice_id FROM payments \
         WHERE id = ANY({BATCH_PAYMENT_IDS}))) ORDER BY id FOR UPDATE"
    ))
    .bind(&ids)
    .bind(&refs)
    .fetch_all(&mut *conn)
    .await?;
    snapshot.payments = sqlx::query_as::<_, PaymentState>(&format!(
        "SELECT {PAYMENT_STATE_COLUMNS} FROM payments WHERE id = ANY({BATCH_PAYMENT_IDS}) ORDER BY id FOR UPDATE"
    ))
    .bind(&ids)
    .bind(&refs)
    .fetch_all(&mut *conn)
    .await?;
    snapshot.event_seqs = sqlx::query_as(
        "SELECT payment_id, CAST(MAX(seq) AS BIGINT) FROM payment_events WHERE payment_id = ANY($1) GROUP BY payment_id",
    )
    .bind(col(&snapshot.payments, |p| p.id.as_str()))
    .fetch_all(&mut *conn)
    .await?;
    snapshot.notice_seqs = sqlx::query_as(
        "SELECT notice_code, CAST(MAX(notice_seq) AS BIGINT) FROM outbox_events WHERE notice_code = ANY($1) \
         GROUP BY notice_code",
    )
    .bind(col(&snapshot.notices, |n| n.code.as_str()))
    .fetch_all(&mut *conn)
    .await?;
    let unpaid: Vec<&str> = snapshot.notices.iter().filter(|n| n.status == "unpaid").map(|n| n.id.as_str()).collect();
    snapshot.lines = sqlx::query_as(
        "SELECT notice_id, budget_code, amount FROM notice_lines WHERE notice_id = ANY($1) ORDER BY notice_id, line_no",
    )
    .bind(unpaid)
    .fetch_all(&mut *conn)
    .await?;
    Ok(snapshot)
}

/// Writes what the plan decided, one statement per table; ledger transaction rows before their
/// transfers.
async fn write(conn: &mut PgConnection, writes: &BatchWrites) -> StoreResult<()> {
    let BatchWrites { payments, history, notices_paid, postings, outbox, inbox } = writes;
    if !payments.is_empty() {
        let moved = sqlx::query(UPDATE_PAYMENTS)
            .bind(col(payments, |c| c.id.as_str()))
            .bind(col(payments, |c| c.expected_status.as_str()))
            .bind(col(payments, |c| c.status.as_str()))
            .bind(col(payments, |c| c.provider_txn_id.as_deref()))
            .bind(col(payments, |c| c.late_success))
            .bind(col(payments, |c| c.overpayment))
            .bind(col(payments, |c| c.refund_due))
            .bind(col(payments, |c| c.updated_at))
            .execute(&mut *conn)
            .await?
            .rows_affected();
        expect_rows(moved, payments.len(), "a payment")?;
    }
    if !history.is_empty() {
        let seqs = history.iter().map(|h| i32::try_from(h.seq)).collect::<Result<Vec<_>, _>>().map_err(|_| {
            crate::store::StoreError::Invariant("a payment's history outgrew its sequence numbers".into())
        })?;
        sqlx::query(INSERT_HISTORY)
            .bind(col(history, |h| h.payment_id.as_str()))
            .bind(seqs)
            .bind(col(history, |h| h.from_status))
            .bind(col(history, |h| h.to_status))
            .bind(col(history, |h| h.cause))
            .bind(col(history, |h| h.detail.as_str()))
            .bind(col(history, |h| h.at))
            .execute(&mut *conn)
            .await?;
    }
    if !notices_paid.is_empty() {
        let paid = sqlx::query(MARK_NOTICES_PAID)
            .bind(col(notices_paid, |n| n.notice_id.as_str()))
            .bind(col(notices_paid, |n| n.paid_at))
            .bind(col(notices_paid, |n| n.payment_id.as_str()))
            .execute(&mut *conn)
            .await?
            .rows_affected();
        expect_rows(paid, notices_paid.len(), "a notice")?;
    }
    if let Some(first) = postings.first() {
        let accounts = posting_accounts(writes);
        sqlx::query(INSERT_ACCOUNTS)
            .bind(&accounts)
            .bind(col(&accounts, |a| crate::ledger::account_kind(a)))
            .bind(first.at)
            .execute(&mut *conn)
            .await?;
        sqlx::query(INSERT_LEDGER_TRANSACTIONS)
            .bind(col(postings, |p| p.ledger_tx_id.as_str()))
            .bind(col(postings, |p| p.plan.posting_key.as_str()))
            .bind(col(postings, |p| p.plan.kind))
            .bind(col(postings, |p| p.plan.payment_id.as_deref()))
            .bind(col(postings, |p| p.plan.notice_code.as_deref()))
            .bind(col(postings, |p| p.plan.corrects.as_deref()))
            .bind(col(postings, |p| p.plan.memo.as_str()))
            .bind(col(postings, |p| p.at))
            .execute(&mut *conn)
            .await?;
        let transfers: Vec<_> = postings
            .iter()
            .flat_map(|p| p.plan.transfers.iter().map(move |t| (p.ledger_tx_id.as_str(), t, p.at)))
            .collect();
        sqlx::query(INSERT_TRANSFERS)
            .bind(col(&transfers, |x| x.0))
            .bind(col(&transfers, |x| x.1.debit.as_str()))
            .bind(col(&transfers, |x| x.1.credit.as_str()))
            .bind(col(&transfers, |x| x.1.amount))
            .bind(col(&transfers, |x| x.2))
            .execute(&mut *conn)
            .await?;
    }
    if !outbox.is_empty() {
        sqlx::query(INSERT_OUTBOX)
            .bind(col(outbox, |e| e.id.as_str()))
            .bind(col(outbox, |e| e.dedupe_key.as_str()))
            .bind(col(outbox, |e| e.notice_code.as_str()))
            .bind(col(outbox, |e| e.notice_seq))
            .bind(col(outbox, |e| e.event_type))
            .bind(col(outbox, |e| e.payload.as_str()))
            .bind(col(outbox, |e| e.created_at))
            .execute(&mut *conn)
            .await?;
    }
    if !inbox.is_empty() {
        sqlx::query(&format!("INSERT INTO callback_inbox ({}) {INBOX_ROWS}", crate::store::inbox::COLUMNS))
            .bind(col(inbox, |r| r.id.as_str()))
            .bind(col(inbox, |r| r.provider.as_str()))
            .bind(col(inbox, |r| r.method.as_str()))
            .bind(col(inbox, |r| r.path.as_str()))
            .bind(col(inbox, |r| r.query.as_str()))
            .bind(col(inbox, |r| r.headers.as_str()))
            .bind(col(inbox, |r| r.body.as_str()))
            .bind(col(inbox, |r| r.body_sha256.as_str()))
            .bind(col(inbox, |r| r.body_bytes))
            .bind(col(inbox, |r| r.source_addr.as_str()))
            .bind(col(inbox, |r| r.received_at))
            .bind(col(inbox, |r| r.verification.as_deref()))
            .bind(col(inbox, |r| r.outcome.as_deref()))
            .bind(col(inbox, |r| r.detail.as_deref()))
            .bind(col(inbox, |r| r.merchant_ref.as_deref()))
            .bind(col(inbox, |r| r.processed_at))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
