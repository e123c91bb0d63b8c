//! Deciding many payment updates at once: the pure half of group commit.
//!
//! The store reads a [`Snapshot`] of every payment a batch of jobs names (with their notices, the
//! notices' lines and the last sequence numbers), [`plan`] decides each job in arrival order
//! against the state the batch has reached so far, and the store writes the resulting
//! [`BatchWrites`] in one transaction — all of them or none.
//!
//! Invariants: every transition goes through [`decide`]; a job sees the effects of the jobs
//! before it in the same batch exactly as if they had committed first (a second delivery of a
//! success in one batch is a duplicate, a success for a notice another payment of the batch just
//! paid is an over-payment); amounts are whole đồng (`i64`); every job that carries a callback
//! leaves exactly one inbox row with its outcome. Nothing here does I/O.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::ledger::{Confirmation, PlanError, PostingPlan, plan_payment, plan_suspense};
use crate::payments::state::{Decision, PaymentStatus, decide};
use crate::store::inbox::InboxRecord;
use crate::store::payments::{Applied, PaymentKey, PaymentUpdate};

/// How a job names its payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentRef {
    Id(String),
    MerchantRef(String),
}

impl From<PaymentKey<'_>> for PaymentRef {
    fn from(key: PaymentKey<'_>) -> PaymentRef {
        match key {
            PaymentKey::Id(v) => PaymentRef::Id(v.to_string()),
            PaymentKey::MerchantRef(v) => PaymentRef::MerchantRef(v.to_string()),
        }
    }
}

/// One unit of work for the payment writer.
#[derive(Debug, Clone)]
pub enum Job {
    /// Apply a provider's (or the clock's) word to a payment; its callback, if any, is kept with
    /// the outcome.
    Apply { payment: PaymentRef, update: PaymentUpdate },
    /// Keep a callback that changes nothing (rejected, still pending, not applied).
    Keep(InboxRecord),
}

/// What a job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Applied(Applied),
    Kept,
}

/// A notice as the batch needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NoticeState {
    pub id: String,
    pub code: String,
    pub status: String,
}

/// What a batch needs of a payment.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentState {
    pub id: String,
    pub merchant_ref: String,
    pub notice_id: String,
    pub notice_code: String,
    pub provider: String,
    pub amount: i64,
    pub status: String,
    pub provider_txn_id: Option<String>,
    pub overpayment: bool,
    pub late_success: bool,
    pub refund_due: i64,
    pub interest_part: i64,
    pub interest_budget_code: Option<String>,
}

/// The columns of [`PaymentState`], in its field order.
pub const PAYMENT_STATE_COLUMNS: &str = "id, merchant_ref, notice_id, notice_code, provider, amount, status, \
     provider_txn_id, overpayment, late_success, refund_due, interest_part, interest_budget_code";

impl PaymentState {
    fn status(&self) -> PaymentStatus {
        PaymentStatus::parse(&self.status).unwrap_or(PaymentStatus::Pending)
    }

    fn confirmation(&self, lines: Vec<(String, i64)>) -> Confirmation<'_> {
        Confirmation {
            payment_id: &self.id,
            notice_code: &self.notice_code,
            provider: &self.provider,
            amount: self.amount,
            lines,
            interest: self.interest_budget_code.clone().map(|code| (code, self.interest_part)),
        }
    }
}

/// What the store read for a batch (the payments locked, on PostgreSQL).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub payments: Vec<PaymentState>,
    pub notices: Vec<NoticeState>,
    /// (notice id, budget code, amount), in line order.
    pub lines: Vec<(String, String, i64)>,
    /// (payment id, last `payment_events.seq`).
    pub event_seqs: Vec<(String, i64)>,
    /// (notice code, last `outbox_events.notice_seq`).
    pub notice_seqs: Vec<(String, i64)>,
}

/// A payment's state after the batch; written only where `status` is still `expected_status`.
#[derive(Debug, Clone)]
pub struct PaymentChange {
    pub id: String,
    pub expected_status: String,
    pub status: String,
    pub provider_txn_id: Option<String>,
    pub late_success: bool,
    pub overpayment: bool,
    pub refund_due: i64,
    pub updated_at: DateTime<Utc>,
}

/// A row of a payment's history.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub payment_id: String,
    pub seq: i64,
    pub from_status: &'static str,
    pub to_status: &'static str,
    pub cause: &'static str,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// A notice this batch paid; written only where the notice is still unpaid.
#[derive(Debug, Clone)]
pub struct NoticePaid {
    pub notice_id: String,
    pub paid_at: DateTime<Utc>,
    pub payment_id: String,
}

/// A ledger posting with the id of its transaction.
#[derive(Debug, Clone)]
pub struct Posting {
    pub ledger_tx_id: String,
    pub plan: PostingPlan,
    pub at: DateTime<Utc>,
}

/// An outbox event, payload complete.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: String,
    pub dedupe_key: String,
    pub notice_code: String,
    pub notice_seq: i64,
    pub event_type: &'static str,
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

/// Everything a batch writes, in one transaction.
#[derive(Debug, Default)]
pub struct BatchWrites {
    pub payments: Vec<PaymentChange>,
    pub history: Vec<HistoryRow>,
    pub notices_paid: Vec<NoticePaid>,
    pub postings: Vec<Posting>,
    pub outbox: Vec<OutboxRow>,
    pub inbox: Vec<InboxRecord>,
}

/// An outbox event's payload as receivers get it: the event's own fields plus its envelope.
pub fn outbox_payload(
    mut payload: serde_json::Value,
    id: &str,
    event_type: &str,
    notice_code: &str,
    seq: i64,
) -> String {
    payload["id"] = serde_json::json!(id);
    payload["type"] = serde_json::json!(event_type);
    payload["notice_code"] = serde_json::json!(notice_code);
    payload["sequence"] = serde_json::json!(seq);
    payload.to_string()
}

/// The batch's working state: the snapshot, indexed, as the jobs before the current one left it;
/// `changed` lists the payments changed, in the order of their first change.
struct Working {
    payments: HashMap<String, PaymentState>,
    changed_at: HashMap<String, DateTime<Utc>>,
    by_ref: HashMap<String, String>,
    original_status: HashMap<String, String>,
    notice_status: HashMap<String, String>,
    lines: HashMap<String, Vec<(String, i64)>>,
    last_event_seq: HashMap<String, i64>,
    last_notice_seq: HashMap<String, i64>,
    changed: Vec<String>,
}

/// Decides `jobs` in order against `snapshot`; returns the writes and each job's outcome (same
/// order as `jobs`). An error means a posting could not be planned: nothing of the batch may be
/// written.
pub fn plan(snapshot: Snapshot, jobs: &[Job]) -> Result<(BatchWrites, Vec<JobOutcome>), PlanError> {
    let mut lines: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for (notice_id, code, amount) in snapshot.lines {
        lines.entry(notice_id).or_default().push((code, amount));
    }
    let mut w = Working {
        by_ref: snapshot.payments.iter().map(|p| (p.merchant_ref.clone(), p.id.clone())).collect(),
        original_status: snapshot.payments.iter().map(|p| (p.id.clone(), p.status.clone())).collect(),
        payments: snapshot.payments.into_iter().map(|p| (p.id.clone(), p)).collect(),
        changed_at: HashMap::new(),
        notice_status: snapshot.notices.into_iter().map(|n| (n.id, n.status)).collect(),
        lines,
        last_event_seq: snapshot.event_seqs.into_iter().collect(),
        last_notice_seq: snapshot.notice_seqs.into_iter().collect(),
        changed: Vec::new(),
    };
    let mut writes = BatchWrites::default();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        match job {
            Job::Keep(record) => {
                writes.inbox.push(record.clone());
                outcomes.push(JobOutcome::Kept);
            }
            Job::Apply { payment, update } => {
                let applied = apply_one(&mut w, &mut writes, payment, update)?;
                if let Some(inbox) = &update.inbox {
                    let mut record = inbox.clone();
                    record.verification = Some("verified".into());
                    record.outcome = Some(applied.label());
                    if let Applied::AmountMismatch { expected } = &applied {
                        record.detail = Some(format!("reported amount {:?}, payment amount {expected}", update.amount));
                    }
                    record.processed_at = Some(update.at);
                    writes.inbox.push(record);
                }
                outcomes.push(JobOutcome::Applied(applied));
            }
        }
    }
    for id in &w.changed {
        let (Some(p), Some(expected_status), Some(at)) =
            (w.payments.get(id), w.original_status.get(id), w.changed_at.get(id))
        else {
            continue;
        };
        writes.payments.push(PaymentChange {
            id: id.clone(),
            expected_status: expected_status.clone(),
            status: p.status.clone(),
            provider_txn_id: p.provider_txn_id.clone(),
            late_success: p.late_success,
            overpayment: p.overpayment,
            refund_due: p.refund_due,
            updated_at: *at,
        });
    }
    Ok((writes, outcomes))
}

fn apply_one(
    w: &mut Working,
    writes: &mut BatchWrites,
    payment: &PaymentRef,
    u: &PaymentUpdate,
) -> Result<Applied, PlanError> {
    let id = match payment {
        PaymentRef::Id(id) => w.payments.contains_key(id).then(|| id.clone()),
        PaymentRef::MerchantRef(r) => w.by_ref.get(r).cloned(),
    };
    let Some(p) = id.and_then(|id| w.payments.get(&id)).cloned() else { return Ok(Applied::NotFound) };
    if let Some(amount) = u.amount
        && amount != p.amount
    {
        return Ok(Applied::AmountMismatch { expected: p.amount });
    }
    let current = p.status();
    let detail = u.detail.to_string();
    let history = |w: &mut Working, writes: &mut BatchWrites, from: PaymentStatus, to: PaymentStatus, cause| {
        let seq = w.last_event_seq.entry(p.id.clone()).or_insert(0);
        *seq += 1;
        writes.history.push(HistoryRow {
            payment_id: p.id.clone(),
            seq: *seq,
            from_status: from.as_str(),
            to_status: to.as_str(),
            cause,
            detail: detail.clone(),
            at: u.at,
        });
    };
    let applied = match decide(current, u.event) {
        Decision::Duplicate => Applied::Duplicate(current),
        Decision::Stale => Applied::Stale(current),
        // Already held in suspense: a repeat of the late success.
        Decision::LateSuccess if p.late_success => Applied::Duplicate(current),
        Decision::LateSuccess => {
            history(w, writes, current, current, "late_success");
            let plan = plan_suspense(&p.confirmation(Vec::new()), "money arrived after the payment ended")?;
            writes.postings.push(posting(plan, u.at));
            if let Some(q) = w.payments.get_mut(&p.id) {
                q.late_success = true;
                q.refund_due = q.amount;
                // The late money came with this success: its refund goes against this
                // transaction, not against the one that failed or expired before it.
                q.provider_txn_id = u.provider_txn_id.clone().or_else(|| q.provider_txn_id.take());
            }
            Applied::LateSuccess(current)
        }
        Decision::MoveTo(status) => {
            history(w, writes, current, status, u.cause);
            let mut paid_notice = false;
            let mut refund_due = 0;
            let (mut overpayment, mut late_success) = (p.overpayment, p.late_success);
            if status == PaymentStatus::Succeeded {
                let notice_status = w.notice_status.get(&p.notice_id).cloned().unwrap_or_default();
                if notice_status == "unpaid" {
                    paid_notice = true;
                    w.notice_status.insert(p.notice_id.clone(), "paid".into());
                    writes.notices_paid.push(NoticePaid {
                        notice_id: p.notice_id.clone(),
                        paid_at: u.at,
                        payment_id: p.id.clone(),
                    });
                    let lines = w.lines.get(&p.notice_id).cloned().unwrap_or_default();
                    writes.postings.push(posting(plan_payment(&p.confirmation(lines))?, u.at));
                    let payload = serde_json::json!({
                        "payment_id": p.id, "provider": p.provider, "amount": p.amount,
                        "paid_at": u.at.to_rfc3339(), "merchant_ref": p.merchant_ref,
                    });
                    event(
                        w,
                        writes,
                        format!("notice.paid:{}", p.notice_code),
                        &p.notice_code,
                        "notice.paid",
                        payload,
                        u.at,
                    );
                } else {
                    // Paid already (over-payment) or cancelled: hold the money for refund.
                    let reason = if notice_status == "paid" {
                        overpayment = true;
                        "over-payment: the notice was already paid"
                    } else {
                        late_success = true;
                        "the notice was cancelled"
                    };
                    refund_due = p.amount;
                    writes.postings.push(posting(plan_suspense(&p.confirmation(Vec::new()), reason)?, u.at));
                }
            }
            if status == PaymentStatus::Failed {
                let payload = serde_json::json!({
                    "payment_id": p.id, "provider": p.provider, "amount": p.amount, "detail": u.detail,
                });
                event(w, writes, format!("payment.failed:{}", p.id), &p.notice_code, "payment.failed", payload, u.at);
            }
            if let Some(q) = w.payments.get_mut(&p.id) {
                q.status = status.as_str().into();
                q.provider_txn_id = u.provider_txn_id.clone().or_else(|| q.provider_txn_id.take());
                q.overpayment = overpayment;
                q.late_success = late_success;
                if refund_due > 0 {
                    q.refund_due = refund_due;
                }
            }
            Applied::Moved { status, paid_notice, refund_due }
        }
    };
    if matches!(applied, Applied::Moved { .. } | Applied::LateSuccess(_))
        && w.changed_at.insert(p.id.clone(), u.at).is_none()
    {
        w.changed.push(p.id.clone());
    }
    Ok(applied)
}

fn posting(plan: PostingPlan, at: DateTime<Utc>) -> Posting {
    Posting { ledger_tx_id: format!("lt_{}", uuid::Uuid::now_v7().simple()), plan, at }
}

fn event(
    w: &mut Working,
    writes: &mut BatchWrites,
    dedupe_key: String,
    notice_code: &str,
    event_type: &'static str,
    payload: serde_json::Value,
    at: DateTime<Utc>,
) {
    let seq = w.last_notice_seq.entry(notice_code.to_string()).or_insert(0);
    *seq += 1;
    let id = format!("ev_{}", uuid::Uuid::now_v7().simple());
    writes.outbox.push(OutboxRow {
        payload: outbox_payload(payload, &id, event_type, notice_code, *seq),
        id,
        dedupe_key,
        notice_code: notice_code.to_string(),
        notice_seq: *seq,
        event_type,
        created_at: at,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::state::PaymentEvent;

    fn payment(id: &str, notice: &str, status: &str) -> PaymentState {
        PaymentState {
            id: id.into(),
            merchant_ref: format!("ref-{id}"),
            notice_id: format!("n-{notice}"),
            notice_code: format!("code-{notice}"),
            provider: "vnpay".into(),
            amount: 150_000,
            status: status.into(),
            provider_txn_id: None,
            overpayment: false,
            late_success: false,
            refund_due: 0,
            interest_part: 0,
            interest_budget_code: None,
        }
    }

    fn notice(id: &str, status: &str) -> NoticeState {
        NoticeState { id: format!("n-{id}"), code: format!("code-{id}"), status: status.into() }
    }

    fn snapshot(payments: Vec<PaymentState>, notices: Vec<NoticeState>) -> Snapshot {
        let lines = notices.iter().map(|n| (n.id.clone(), "1003".to_string(), 150_000)).collect();
        Snapshot { payments, notices, lines, ..Snapshot::default() }
    }

    fn inbox(n: usize) -> InboxRecord {
        InboxRecord {
            id: format!("cb_{n}"),
            provider: "vnpay".into(),
            method: "GET".into(),
            path: "/callbacks/vnpay".into(),
            query: String::new(),
            headers: "{}".into(),
            body: String::new(),
            body_sha256: String::new(),
            body_bytes: 0,
            source_addr: "127.0.0.1:1".into(),
            received_at: Utc::now(),
            verification: None,
            outcome: None,
            detail: None,
            merchant_ref: None,
            processed_at: None,
        }
    }

    fn update(event: PaymentEvent, amount: Option<i64>, n: usize) -> PaymentUpdate {
        PaymentUpdate {
            event,
            amount,
            provider_txn_id: Some(format!("txn-{n}")),
            cause: "callback",
            detail: serde_json::json!({}),
            at: Utc::now(),
            inbox: Some(inbox(n)),
        }
    }

    fn success(reference: &str, n: usize) -> Job {
        Job::Apply {
            payment: PaymentRef::MerchantRef(reference.into()),
            update: update(PaymentEvent::ProviderSucceeded, Some(150_000), n),
        }
    }

    fn outcomes(o: &[JobOutcome]) -> Vec<String> {
        o.iter()
            .map(|o| match o {
                JobOutcome::Applied(a) => a.label(),
                JobOutcome::Kept => "kept".into(),
            })
            .collect()
    }

    #[test]
    fn a_repeated_success_in_one_batch_is_applied_once() {
        let snap = snapshot(vec![payment("p1", "a", "pending")], vec![notice("a", "unpaid")]);
        let jobs = [success("ref-p1", 1), success("ref-p1", 2), success("ref-p1", 3)];
        let (w, o) = plan(snap, &jobs).unwrap();
        assert_eq!(outcomes(&o), ["applied:succeeded", "duplicate", "duplicate"]);
        assert_eq!(w.payments.len(), 1);
        assert_eq!((w.payments[0].expected_status.as_str(), w.payments[0].status.as_str()), ("pending", "succeeded"));
        assert_eq!(w.payments[0].provider_txn_id.as_deref(), Some("txn-1"));
        assert_eq!(w.history.len(), 1);
        assert_eq!(w.history[0].seq, 1);
        assert_eq!(w.notices_paid.len(), 1);
        assert_eq!(w.postings.len(), 1);
        assert_eq!(w.postings[0].plan.transfers.iter().map(|t| t.amount).sum::<i64>(), 150_000);
        assert_eq!(w.outbox.len(), 1);
        assert_eq!(w.outbox[0].notice_seq, 1);
        let kept: Vec<_> = w.inbox.iter().map(|r| r.outcome.clone().unwrap_or_default()).collect();
        assert_eq!(kept, ["applied:succeeded", "duplicate", "duplicate"]);
    }

    #[test]
    fn a_second_payment_of_a_notice_paid_earlier_in_the_batch_is_an_over_payment() {
        let snap =
            snapshot(vec![payment("p1", "a", "pending"), payment("p2", "a", "pending")], vec![notice("a", "unpaid")]);
        let (w, o) = plan(snap, &[success("ref-p1", 1), success("ref-p2", 2)]).unwrap();
        assert_eq!(outcomes(&o), ["applied:succeeded", "applied:succeeded"]);
        assert_eq!(
            o[1],
            JobOutcome::Applied(Applied::Moved {
                status: PaymentStatus::Succeeded,
                paid_notice: false,
                refund_due: 150_000
            })
        );
        assert_eq!(w.notices_paid.len(), 1);
        let kinds: Vec<_> = w.postings.iter().map(|p| p.plan.kind).collect();
        assert_eq!(kinds, ["payment_confirmed", "suspense"]);
        let p2 = w.payments.iter().find(|c| c.id == "p2").unwrap();
        assert!(p2.overpayment && !p2.late_success && p2.refund_due == 150_000);
        assert_eq!(w.outbox.len(), 1, "one notice.paid");
    }

    #[test]
    fn success_after_expiry_in_the_same_batch_is_held_in_suspense() {
        let snap = snapshot(vec![payment("p1", "a", "pending")], vec![notice("a", "unpaid")]);
        let expire = Job::Apply {
            payment: PaymentRef::Id("p1".into()),
            update: PaymentUpdate { inbox: None, ..update(PaymentEvent::Expired, None, 0) },
        };
        let (w, o) = plan(snap, &[expire, success("ref-p1", 1), success("ref-p1", 2)]).unwrap();
        assert_eq!(outcomes(&o), ["applied:expired", "late_success", "duplicate"]);
        assert_eq!(w.payments.len(), 1);
        let c = &w.payments[0];
        assert_eq!((c.status.as_str(), c.late_success, c.refund_due), ("expired", true, 150_000));
        assert_eq!(w.history.iter().map(|h| h.seq).collect::<Vec<_>>(), [1, 2]);
        assert!(w.notices_paid.is_empty());
        assert_eq!(w.postings.iter().map(|p| p.plan.kind).collect::<Vec<_>>(), ["suspense"]);
        assert_eq!(w.inbox.len(), 2, "the expiry came with no callback");
    }

    #[test]
    fn a_late_success_keeps_the_transaction_that_carried_the_money() {
        let snap = snapshot(vec![payment("p1", "a", "pending")], vec![notice("a", "unpaid")]);
        let failed = Job::Apply {
            payment: PaymentRef::MerchantRef("ref-p1".into()),
            update: update(PaymentEvent::ProviderFailed, Some(150_000), 9),
        };
        let (w, o) = plan(snap, &[failed, success("ref-p1", 1)]).unwrap();
        assert_eq!(outcomes(&o), ["applied:failed", "late_success"]);
        let c = &w.payments[0];
        assert_eq!((c.status.as_str(), c.late_success, c.refund_due), ("failed", true, 150_000));
        assert_eq!(c.provider_txn_id.as_deref(), Some("txn-1"), "refunds go against the success's transaction");
    }

    #[test]
    fn success_for_a_cancelled_notice_is_held_for_refund() {
        let snap = snapshot(vec![payment("p1", "a", "pending")], vec![notice("a", "cancelled")]);
        let (w, o) = plan(snap, &[success("ref-p1", 1)]).unwrap();
        assert_eq!(
            o[0],
            JobOutcome::Applied(Applied::Moved {
                status: PaymentStatus::Succeeded,
                paid_notice: false,
                refund_due: 150_000
            })
        );
        assert!(w.payments[0].late_success);
        assert!(w.notices_paid.is_empty() && w.outbox.is_empty());
        assert_eq!(w.postings[0].plan.kind, "suspense");
    }

    #[test]
    fn unknown_payments_wrong_amounts_and_kept_callbacks_write_only_the_inbox() {
        let snap = snapshot(vec![payment("p1", "a", "pending")], vec![notice("a", "unpaid")]);
        let wrong = Job::Apply {
            payment: PaymentRef::MerchantRef("ref-p1".into()),
            update: update(PaymentEvent::ProviderSucceeded, Some(149_999), 2),
        };
        let (w, o) = plan(snap, &[success("ref-nobody", 1), wrong, Job::Keep(inbox(3))]).unwrap();
        assert_eq!(outcomes(&o), ["unknown_payment", "amount_mismatch", "kept"]);
        assert!(w.payments.is_empty() && w.history.is_empty() && w.postings.is_empty() && w.outbox.is_empty());
        assert_eq!(w.inbox.len(), 3);
        assert_eq!(w.inbox[1].detail.as_deref(), Some("reported amount Some(149999), payment amount 150000"));
    }

    #[test]
    fn history_and_event_numbers_continue_from_the_snapshot() {
        let mut snap = snapshot(vec![payment("p1", "a", "pending")], vec![notice("a", "unpaid")]);
        snap.event_seqs = vec![("p1".into(), 4)];
        snap.notice_seqs = vec![("code-a".into(), 7)];
        let (w, _) = plan(snap, &[success("ref-p1", 1)]).unwrap();
        assert_eq!(w.history[0].seq, 5);
        assert_eq!(w.outbox[0].notice_seq, 8);
        let payload: serde_json::Value = serde_json::from_str(&w.outbox[0].payload).unwrap();
        assert_eq!(payload["sequence"], 8);
        assert_eq!(payload["type"], "notice.paid");
    }
}
