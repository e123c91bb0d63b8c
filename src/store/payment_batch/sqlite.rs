//! The SQLite half of a payment batch: the snapshot packed into one JSON row (sqlx hands SQLite
//! rows over one at a time, with a thread wake-up each), and every write, as multi-row `VALUES`,
//! in one [`Script`] handed to the connection's thread at once.

use sqlx::SqliteConnection;

use super::{BatchKeys, decide, expect_rows, posting_accounts};
use crate::payments::batch::{BatchWrites, Job, JobOutcome, NoticeState, PaymentState, Snapshot};
use futures::TryStreamExt;
use sqlx::query_builder::Separated;
use sqlx::{QueryBuilder, Sqlite};

use crate::store::{ROWS_PER_STATEMENT, StoreError, StoreResult};

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

/// Reads, decides and writes one batch inside the caller's write transaction.
pub(super) async fn apply(conn: &mut SqliteConnection, keys: &BatchKeys, jobs: &[Job]) -> StoreResult<Vec<JobOutcome>> {
    let snapshot = if keys.is_empty() {
        Snapshot::default()
    } else {
        let ids = serde_json::to_string(&keys.ids).map_err(|e| StoreError::Invariant(e.to_string()))?;
        let refs = serde_json::to_string(&keys.refs).map_err(|e| StoreError::Invariant(e.to_string()))?;
        let packed: String = sqlx::query_scalar(SQLITE_SNAPSHOT).bind(ids).bind(refs).fetch_one(&mut *conn).await?;
        unpack_snapshot(&packed)?
    };
    let (writes, outcomes) = decide(snapshot, jobs)?;
    let mut script = Script::default();
    let BatchWrites { payments, history, notices_paid, postings, outbox, inbox } = &writes;
    script.values(
        "payments",
        "WITH v (id, expected_status, status, provider_txn_id, late_success, overpayment, refund_due, updated_at) AS (",
        payments,
        ") UPDATE payments SET status = v.status, provider_txn_id = v.provider_txn_id, \
         late_success = v.late_success, overpayment = v.overpayment, refund_due = v.refund_due, \
         updated_at = v.updated_at FROM v WHERE payments.id = v.id AND payments.status = v.expected_status",
        |mut b, c| {
            b.push_bind(c.id.as_str())
                .push_bind(c.expected_status.as_str())
                .push_bind(c.status.as_str())
                .push_bind(c.provider_txn_id.as_deref())
                .push_bind(c.late_success)
                .push_bind(c.overpayment)
                .push_bind(c.refund_due)
                .push_bind(c.updated_at);
        },
    );
    script.values(
        "history",
        "INSERT INTO payment_events (payment_id, seq, from_status, to_status, cause, detail, at) ",
        history,
        "",
        |mut b, h| {
            b.push_bind(h.payment_id.as_str())
                .push_bind(h.seq)
                .push_bind(h.from_status)
                .push_bind(h.to_status)
                .push_bind(h.cause)
                .push_bind(h.detail.as_str())
                .push_bind(h.at);
        },
    );
    script.values(
        "notices",
        "WITH v (id, paid_at, payment_id) AS (",
        notices_paid,
        ") UPDATE notices SET status = 'paid', paid_at = v.paid_at, paid_by_payment = v.payment_id \
         FROM v WHERE notices.id = v.id AND notices.status = 'unpaid'",
        |mut b, n| {
            b.push_bind(n.notice_id.as_str()).push_bind(n.paid_at).push_bind(n.payment_id.as_str());
        },
    );
    let accounts = posting_accounts(&writes);
    if let Some(first_at) = postings.first().map(|p| p.at) {
        script.values(
            "accounts",
            "INSERT INTO ledger_accounts (name, kind, created_at) ",
            &accounts,
            " ON CONFLICT (name) DO NOTHING",
            |mut b, a| {
                b.push_bind(*a).push_bind(crate::ledger::account_kind(a)).push_bind(first_at);
            },
        );
    }
    script.values(
        "ledger transactions",
        "INSERT INTO ledger_transactions (id, posting_key, kind, payment_id, notice_code, corrects, memo, created_at) ",
        postings,
        "",
        |mut b, p| {
            b.push_bind(p.ledger_tx_id.as_str())
                .push_bind(p.plan.posting_key.as_str())
                .push_bind(p.plan.kind)
                .push_bind(p.plan.payment_id.as_deref())
                .push_bind(p.plan.notice_code.as_deref())
                .push_bind(p.plan.corrects.as_deref())
                .push_bind(p.plan.memo.as_str())
                .push_bind(p.at);
        },
    );
    let transfers: Vec<(&str, &crate::ledger::Transfer, chrono::DateTime<chrono::Utc>)> = postings
        .iter()
        .flat_map(|p| p.plan.transfers.iter().map(move |t| (p.ledger_tx_id.as_str(), t, p.at)))
        .collect();
    script.values(
        "transfers",
        "INSERT INTO ledger_transfers (transaction_id, debit_account, credit_account, amount, created_at) ",
        &transfers,
        "",
        |mut b, x| {
            b.push_bind(x.0)
                .push_bind(x.1.debit.as_str())
                .push_bind(x.1.credit.as_str())
                .push_bind(x.1.amount)
                .push_bind(x.2);
        },
    );
    script.values(
        "outbox",
        "INSERT INTO outbox_events (id, dedupe_key, notice_code, notice_seq, event_type, payload, created_at) ",
        outbox,
        " ON CONFLICT (dedupe_key) DO NOTHING",
        |mut b, e| {
            b.push_bind(e.id.as_str())
                .push_bind(e.dedupe_key.as_str())
                .push_bind(e.notice_code.as_str())
                .push_bind(e.notice_seq)
                .push_bind(e.event_type)
                .push_bind(e.payload.as_str())
                .push_bind(e.created_at);
        },
    );
    script.values(
        "inbox",
        &format!("INSERT INTO callback_inbox ({}) ", crate::store::inbox::COLUMNS),
        inbox,
        "",
        |mut b, r| {
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
        },
    );
    let affected = script.run(conn).await?;
    expect_rows(affected.of("payments"), payments.len(), "a payment")?;
    expect_rows(affected.of("notices"), notices_paid.len(), "a notice")?;
    Ok(outcomes)
}

/// A batch's writes as one text of several statements, run by a single call to the connection's
/// worker thread: sqlx's SQLite driver runs a connection on a thread of its own, and every call
/// is a hand-off to it and back, which under load waits for a core each way. The statements bind
/// plain `?` placeholders, which sqlx numbers on from one statement to the next.
#[derive(Default)]
struct Script<'a> {
    sql: Option<QueryBuilder<'a, Sqlite>>,
    /// What each statement writes, in order, for its count of rows.
    statements: Vec<&'static str>,
}

/// Rows each kind of statement of a [`Script`] touched.
struct Affected(Vec<(&'static str, u64)>);

impl Affected {
    fn of(&self, what: &str) -> u64 {
        self.0.iter().filter(|(w, _)| *w == what).map(|(_, n)| n).sum()
    }
}

impl<'a> Script<'a> {
    /// Appends `head VALUES (…), (…) tail` for `rows`, [`ROWS_PER_STATEMENT`] at a time.
    fn values<T>(
        &mut self,
        what: &'static str,
        head: &str,
        rows: &'a [T],
        tail: &str,
        mut push: impl FnMut(Separated<'_, 'a, Sqlite, &'static str>, &'a T),
    ) {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = self.sql.get_or_insert_with(|| QueryBuilder::new(""));
            sql.push(head);
            sql.push_values(chunk, &mut push);
            sql.push(tail);
            sql.push(";\n");
            self.statements.push(what);
        }
    }

    /// Runs every statement in order; the first error stops the rest (the caller's transaction
    /// is then rolled back).
    async fn run(self, conn: &mut SqliteConnection) -> StoreResult<Affected> {
        let Some(mut sql) = self.sql else {
            return Ok(Affected(Vec::new()));
        };
        // Deprecated because only SQLite can prepare several statements at once; this is the
        // SQLite half, and the one call is the point.
        #[allow(deprecated)]
        let mut steps = sql.build().persistent(false).fetch_many(&mut *conn);
        let mut counts = Vec::with_capacity(self.statements.len());
        while let Some(step) = steps.try_next().await? {
            if let sqlx::Either::Left(done) = step {
                let what = self.statements.get(counts.len()).copied().unwrap_or("?");
                counts.push((what, done.rows_affected()));
            }
        }
        if counts.len() != self.statements.len() {
            return Err(StoreError::Invariant(format!(
                "a batch ran {} of its {} statements",
                counts.len(),
                self.statements.len()
            )));
        }
        Ok(Affected(counts))
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    async fn table() -> SqliteConnection {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.expect("connect");
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)")
            .execute(&mut conn)
            .await
            .expect("create");
        conn
    }

    #[tokio::test]
    async fn a_script_binds_across_its_statements_and_counts_rows_per_statement() {
        let mut conn = table().await;
        let rows: Vec<(i64, String)> = (1..=3).map(|i| (i, format!("v{i}"))).collect();
        let renames = vec![(1i64, "w1".to_string()), (3, "w3".to_string()), (9, "w9".to_string())];
        let mut script = Script::default();
        script.values("insert", "INSERT INTO t (id, v) ", &rows, "", |mut b, r| {
            b.push_bind(r.0).push_bind(r.1.as_str());
        });
        script.values(
            "rename",
            "WITH x (id, v) AS (",
            &renames,
            ") UPDATE t SET v = x.v FROM x WHERE t.id = x.id",
            |mut b, r| {
                b.push_bind(r.0).push_bind(r.1.as_str());
            },
        );
        let affected = script.run(&mut conn).await.expect("run");
        assert_eq!((affected.of("insert"), affected.of("rename"), affected.of("other")), (3, 2, 0));
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT v FROM t ORDER BY id").fetch_all(&mut conn).await.expect("read");
        assert_eq!(stored, ["w1", "v2", "w3"]);
    }

    #[tokio::test]
    async fn a_failing_statement_stops_the_script_with_its_error() {
        let mut conn = table().await;
        let first = vec![(1i64, "a".to_string())];
        let clash = vec![(2i64, "a".to_string())];
        let after = vec![(3i64, "c".to_string())];
        let mut script = Script::default();
        for (what, rows) in [("first", &first), ("clash", &clash), ("after", &after)] {
            script.values(what, "INSERT INTO t (id, v) ", rows, "", |mut b, r| {
                b.push_bind(r.0).push_bind(r.1.as_str());
            });
        }
        let err = script.run(&mut conn).await.err().expect("a unique violation");
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM t ORDER BY id").fetch_all(&mut conn).await.expect("read");
        assert_eq!(ids, [1], "the statement after the failing one did not run");
    }

    #[tokio::test]
    async fn an_empty_script_runs_nothing() {
        let mut conn = table().await;
        let affected = Script::default().run(&mut conn).await.expect("run");
        assert_eq!(affected.of("insert"), 0);
    }
}
