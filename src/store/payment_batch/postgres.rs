//! The PostgreSQL half of a payment batch. Every statement takes whole columns as arrays
//! (`= ANY($n)` to read, `UNNEST(…)` to write), so its text never depends on the batch's size:
//! sqlx prepares each once per connection, where multi-row `VALUES` had PostgreSQL parse,
//! analyse and plan a new statement for every batch (about 9% of the machine in the callback
//! benchmark, per `perf`).
//!
//! A batch is six statements' round trips: begin (with the plan settings and the transaction's
//! id), lock the notices, lock the payments, read the sequence numbers and notice lines, write
//! everything, commit. (The writer's pool adds two of its own: sqlx checks the connection when it
//! is taken and when it goes back.) The writes are one statement of data-modifying CTEs: each
//! runs to completion whether or not the final `SELECT` reads it, in no set order, all seeing the
//! snapshot taken after the locks; the tables' `AFTER` triggers (the ledger's reference checks,
//! the history's foreign key) run once the whole statement is done, so they see every row it
//! wrote. The transfers' `BEFORE` trigger (migration 0007) asks that the transaction already hold
//! its id, which it took at `BEGIN` (`PG_BEGIN_BATCH` in the parent module).

use std::sync::LazyLock;

use sqlx::PgConnection;

use super::{BatchKeys, decide, expect_rows, posting_accounts};
use crate::payments::batch::{
    BatchWrites, Job, JobOutcome, NoticeState, PAYMENT_STATE_COLUMNS, PaymentState, Snapshot,
};
use crate::store::{StoreError, StoreResult};

/// The ids of the batch's payments: `$1` (ids) and those of `$2` (merchant references).
const BATCH_PAYMENT_IDS: &str = "$1::text[] || ARRAY(SELECT id FROM payments WHERE merchant_ref = ANY($2::text[]))";

/// After the locks, in one statement: the last history sequence number of each payment
/// (`$1`, part 0), the last outbox sequence number of each notice code (`$2`, part 1), and the
/// lines of the notices still unpaid (`$3`, part 2, in line order).
const SEQUENCES_AND_LINES: &str = "\
     SELECT 0 AS part, payment_id AS key, NULL::text AS budget_code, CAST(MAX(seq) AS BIGINT) AS n, 0 AS line_no \
       FROM payment_events WHERE payment_id = ANY($1::text[]) GROUP BY payment_id \
     UNION ALL SELECT 1, notice_code, NULL, MAX(notice_seq), 0 \
       FROM outbox_events WHERE notice_code = ANY($2::text[]) GROUP BY notice_code \
     UNION ALL SELECT 2, notice_id, budget_code, amount, line_no \
       FROM notice_lines WHERE notice_id = ANY($3::text[]) \
     ORDER BY part, key, line_no";

/// Everything a batch writes, one table per CTE (see the module's comment); answers how many
/// payments moved and how many notices were marked paid, which the caller checks against the plan.
static WRITE_BATCH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH moved AS (UPDATE payments SET status = v.status, provider_txn_id = v.provider_txn_id, \
           late_success = v.late_success, overpayment = v.overpayment, refund_due = v.refund_due, \
           updated_at = v.updated_at \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::bool[], $7::int8[], \
           $8::timestamptz[]) \
           AS v (id, expected_status, status, provider_txn_id, late_success, overpayment, refund_due, updated_at) \
         WHERE payments.id = v.id AND payments.status = v.expected_status RETURNING 1), \
       history AS (INSERT INTO payment_events (payment_id, seq, from_status, to_status, cause, detail, at) \
         SELECT * FROM UNNEST($9::text[], $10::int4[], $11::text[], $12::text[], $13::text[], $14::text[], \
           $15::timestamptz[])), \
       paid AS (UPDATE notices SET status = 'paid', paid_at = v.paid_at, paid_by_payment = v.payment_id \
         FROM UNNEST($16::text[], $17::timestamptz[], $18::text[]) AS v (id, paid_at, payment_id) \
         WHERE notices.id = v.id AND notices.status = 'unpaid' RETURNING 1), \
       accounts AS (INSERT INTO ledger_accounts (name, kind, created_at) \
         SELECT name, kind, $21::timestamptz FROM UNNEST($19::text[], $20::text[]) AS a (name, kind) \
         ON CONFLICT (name) DO NOTHING), \
       transactions AS (INSERT INTO ledger_transactions \
           (id, posting_key, kind, payment_id, notice_code, corrects, memo, created_at) \
         SELECT * FROM UNNEST($22::text[], $23::text[], $24::text[], $25::text[], $26::text[], $27::text[], \
           $28::text[], $29::timestamptz[])), \
       transfers AS (INSERT INTO ledger_transfers (transaction_id, debit_account, credit_account, amount, created_at) \
         SELECT * FROM UNNEST($30::text[], $31::text[], $32::text[], $33::int8[], $34::timestamptz[])), \
       outbox AS (INSERT INTO outbox_events (id, dedupe_key, notice_code, notice_seq, event_type, payload, created_at) \
         SELECT * FROM UNNEST($35::text[], $36::text[], $37::text[], $38::int8[], $39::text[], $40::text[], \
           $41::timestamptz[]) \
         ON CONFLICT (dedupe_key) DO NOTHING), \
       inbox AS (INSERT INTO callback_inbox ({inbox_columns}) \
         SELECT * FROM UNNEST($42::text[], $43::text[], $44::text[], $45::text[], $46::text[], $47::text[], \
           $48::text[], $49::text[], $50::int8[], $51::text[], $52::timestamptz[], $53::text[], $54::text[], \
           $55::text[], $56::text[], $57::timestamptz[])) \
       SELECT (SELECT COUNT(*) FROM moved), (SELECT COUNT(*) FROM paid)",
        inbox_columns = crate::store::inbox::COLUMNS
    )
});

/// One column of `rows`, ready to bind as an array.
fn col<'a, T, U>(rows: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}

/// Reads, locks, decides and writes one batch inside the caller's transaction, which began with
/// [`crate::store::PG_KEYED_PLANS`].
pub(super) async fn apply(conn: &mut PgConnection, keys: &BatchKeys, jobs: &[Job]) -> StoreResult<Vec<JobOutcome>> {
    let snapshot = if keys.is_empty() { Snapshot::default() } else { snapshot(conn, keys).await? };
    let (writes, outcomes) = decide(snapshot, jobs)?;
    write(conn, &writes).await?;
    Ok(outcomes)
}

/// Locks the batch's notices, then its payments (the lock order of every writer), and reads what
/// the plan needs of them. The sequence numbers and lines are read by a statement of their own,
/// after the locks: its snapshot then sees whatever the holder of a lock this batch waited for
/// committed.
async fn snapshot(conn: &mut PgConnection, keys: &BatchKeys) -> StoreResult<Snapshot> {
    let ids: Vec<&str> = keys.ids.iter().map(String::as_str).collect();
    let refs: Vec<&str> = keys.refs.iter().map(String::as_str).collect();
    let notices = sqlx::query_as::<_, NoticeState>(&format!(
        "SELECT id, code, status FROM notices WHERE id = ANY(ARRAY(SELECT notice_id FROM payments \
         WHERE id = ANY({BATCH_PAYMENT_IDS}))) ORDER BY id FOR UPDATE"
    ))
    .bind(&ids)
    .bind(&refs)
    .fetch_all(&mut *conn)
    .await?;
    let payments = sqlx::query_as::<_, PaymentState>(&format!(
        "SELECT {PAYMENT_STATE_COLUMNS} FROM payments WHERE id = ANY({BATCH_PAYMENT_IDS}) ORDER BY id FOR UPDATE"
    ))
    .bind(&ids)
    .bind(&refs)
    .fetch_all(&mut *conn)
    .await?;
    let mut snapshot = Snapshot { notices, payments, ..Snapshot::default() };
    let unpaid: Vec<&str> = snapshot.notices.iter().filter(|n| n.status == "unpaid").map(|n| n.id.as_str()).collect();
    let rows: Vec<(i32, String, Option<String>, i64, i32)> = sqlx::query_as(SEQUENCES_AND_LINES)
        .bind(col(&snapshot.payments, |p| p.id.as_str()))
        .bind(col(&snapshot.notices, |n| n.code.as_str()))
        .bind(unpaid)
        .fetch_all(&mut *conn)
        .await?;
    for (part, key, budget_code, n, _) in rows {
        match (part, budget_code) {
            (0, _) => snapshot.event_seqs.push((key, n)),
            (1, _) => snapshot.notice_seqs.push((key, n)),
            (2, Some(budget_code)) => snapshot.lines.push((key, budget_code, n)),
            _ => return Err(StoreError::Invariant(format!("a batch snapshot row of part {part} is malformed"))),
        }
    }
    Ok(snapshot)
}

/// Writes what the plan decided, in one statement.
async fn write(conn: &mut PgConnection, writes: &BatchWrites) -> StoreResult<()> {
    let BatchWrites { payments, history, notices_paid, postings, outbox, inbox } = writes;
    if payments.is_empty()
        && history.is_empty()
        && notices_paid.is_empty()
        && postings.is_empty()
        && outbox.is_empty()
        && inbox.is_empty()
    {
        return Ok(());
    }
    let seqs = history
        .iter()
        .map(|h| i32::try_from(h.seq))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| StoreError::Invariant("a payment's history outgrew its sequence numbers".into()))?;
    let accounts = posting_accounts(writes);
    let transfers: Vec<_> = postings
        .iter()
        .flat_map(|p| p.plan.transfers.iter().map(move |t| (p.ledger_tx_id.as_str(), t, p.at)))
        .collect();
    let (moved, paid): (i64, i64) = sqlx::query_as(WRITE_BATCH.as_str())
        .bind(col(payments, |c| c.id.as_str()))
        .bind(col(payments, |c| c.expected_status.as_str()))
        .bind(col(payments, |c| c.status.as_str()))
        .bind(col(payments, |c| c.provider_txn_id.as_deref()))
        .bind(col(payments, |c| c.late_success))
        .bind(col(payments, |c| c.overpayment))
        .bind(col(payments, |c| c.refund_due))
        .bind(col(payments, |c| c.updated_at))
        .bind(col(history, |h| h.payment_id.as_str()))
        .bind(seqs)
        .bind(col(history, |h| h.from_status))
        .bind(col(history, |h| h.to_status))
        .bind(col(history, |h| h.cause))
        .bind(col(history, |h| h.detail.as_str()))
        .bind(col(history, |h| h.at))
        .bind(col(notices_paid, |n| n.notice_id.as_str()))
        .bind(col(notices_paid, |n| n.paid_at))
        .bind(col(notices_paid, |n| n.payment_id.as_str()))
        .bind(&accounts)
        .bind(col(&accounts, |a| crate::ledger::account_kind(a)))
        .bind(postings.first().map(|p| p.at))
        .bind(col(postings, |p| p.ledger_tx_id.as_str()))
        .bind(col(postings, |p| p.plan.posting_key.as_str()))
        .bind(col(postings, |p| p.plan.kind))
        .bind(col(postings, |p| p.plan.payment_id.as_deref()))
        .bind(col(postings, |p| p.plan.notice_code.as_deref()))
        .bind(col(postings, |p| p.plan.corrects.as_deref()))
        .bind(col(postings, |p| p.plan.memo.as_str()))
        .bind(col(postings, |p| p.at))
        .bind(col(&transfers, |x| x.0))
        .bind(col(&transfers, |x| x.1.debit.as_str()))
        .bind(col(&transfers, |x| x.1.credit.as_str()))
        .bind(col(&transfers, |x| x.1.amount))
        .bind(col(&transfers, |x| x.2))
        .bind(col(outbox, |e| e.id.as_str()))
        .bind(col(outbox, |e| e.dedupe_key.as_str()))
        .bind(col(outbox, |e| e.notice_code.as_str()))
        .bind(col(outbox, |e| e.notice_seq))
        .bind(col(outbox, |e| e.event_type))
        .bind(col(outbox, |e| e.payload.as_str()))
        .bind(col(outbox, |e| e.created_at))
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
        .fetch_one(&mut *conn)
        .await?;
    expect_rows(moved as u64, payments.len(), "a payment")?;
    expect_rows(paid as u64, notices_paid.len(), "a notice")
}
