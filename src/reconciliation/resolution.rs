//! Resolving a discrepancy by a named action.
//!
//! Invariants: only an action allowed for the discrepancy's class is taken
//! ([`super::matcher::allowed_actions`]); a note (why) is required; a confirmation goes through the
//! payment's own state machine (so it posts once, whatever else confirmed it meanwhile); money
//! moves only by new, compensating ledger entries; every resolution is in the audit log.

use axum::http::StatusCode;

use super::matcher::{DiscrepancyClass, ResolutionAction, allowed_actions};
use super::postings::{ResolutionFacts, plan_resolution};
use super::reader::RowKind;
use crate::http::problem::Problem;
use crate::payments::state::PaymentEvent;
use crate::store::payments::{Applied, PaymentKey, PaymentUpdate};
use crate::store::reconciliation::{DiscrepancyRecord, Resolved};
use crate::store::{Store, now};

/// A treasurer's resolution.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub action: ResolutionAction,
    /// Why: kept in the audit log. 1 to 2,000 characters.
    pub note: String,
}

/// The resolved discrepancy and the ledger transactions the resolution wrote (or found written).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ResolveResponse {
    pub discrepancy: DiscrepancyRecord,
    pub ledger_transactions: Vec<String>,
}

pub async fn resolve(store: &Store, id: &str, req: &ResolveRequest, actor: &str) -> Result<ResolveResponse, Problem> {
    let note = req.note.trim();
    if note.is_empty() || note.chars().count() > 2_000 {
        return Err(Problem::validation("note", "must be 1 to 2000 characters: say why"));
    }
    let d = store.find_discrepancy(id).await?.ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "discrepancy-not-found",
            "Discrepancy not found",
            format!("No discrepancy {id}."),
        )
    })?;
    if d.status != "open" || d.resolution.as_deref().is_some_and(|r| r != req.action.as_str()) {
        return Err(not_open(&d));
    }
    let class = DiscrepancyClass::parse(&d.class)
        .ok_or_else(|| Problem::internal(&format!("unknown discrepancy class {}", d.class)))?;
    let kind = if d.row_kind == "refund" { RowKind::Refund } else { RowKind::Payment };
    let payment_id = (d.target_kind.as_deref() == Some("payment")).then(|| d.target_id.clone()).flatten();
    let file_exceeds = matches!((d.file_amount, d.ledger_amount), (Some(f), Some(l)) if f > l);
    let allowed = allowed_actions(class, kind, payment_id.is_some(), file_exceeds);
    if !allowed.contains(&req.action) {
        let names: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "action-not-allowed",
            "Action not allowed for this discrepancy",
            format!("A {} discrepancy can be resolved by: {}.", d.class, names.join(", ")),
        ));
    }
    let run =
        store.find_run(&d.run_id).await?.ok_or_else(|| Problem::internal(&format!("discrepancy {id} names no run")))?;
    let payment = match &payment_id {
        Some(pid) => store.find_payment(PaymentKey::Id(pid)).await?,
        None => None,
    };

    if req.action == ResolutionAction::ConfirmPayment {
        let p = payment.as_ref().ok_or_else(|| Problem::internal(&"the discrepancy's payment is gone"))?;
        // The confirmation commits on its own: first hold the discrepancy for this action, so that
        // no other action is taken on it meanwhile (a retry of this one may finish it).
        match store.claim_discrepancy(id, req.action.as_str(), actor).await? {
            Some((true, _)) => {}
            Some((false, d)) => return Err(not_open(&d)),
            None => return Err(Problem::not_found(format!("No discrepancy {id}."))),
        }
        if d.file_amount != Some(p.amount) {
            release(store, id, req.action).await;
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "amount-differs",
                "The provider's amount is not the payment's",
                format!(
                    "The file says {} đồng, the payment is for {} đồng: confirming would post the wrong amount. \
                     Use move_to_suspense or mark_for_refund.",
                    d.file_amount.unwrap_or_default(),
                    p.amount
                ),
            ));
        }
        let update = PaymentUpdate {
            event: PaymentEvent::ProviderSucceeded,
            amount: d.file_amount,
            provider_txn_id: d.provider_txn_id.clone(),
            cause: "reconciliation",
            // The payment's history is public (whoever holds its id): who resolved it and their
            // note stay with the discrepancy and its audit log.
            detail: serde_json::json!({"discrepancy_id": d.id, "run_id": d.run_id, "line": d.line_no}),
            at: now(),
            inbox: None,
        };
        match store.apply_payment_update(PaymentKey::Id(&p.id), update).await? {
            Applied::Moved { .. } | Applied::Duplicate(_) | Applied::LateSuccess(_) => {}
            other => {
                release(store, id, req.action).await;
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "payment-not-confirmable",
                    "The payment cannot be confirmed",
                    format!("The payment's state machine refused the confirmation ({}).", other.label()),
                ));
            }
        }
    }

    let facts = ResolutionFacts {
        discrepancy_id: &d.id,
        provider: &run.provider,
        class,
        provider_txn_id: d.provider_txn_id.as_deref(),
        occurrence: d.occurrence,
        file_amount: d.file_amount,
        file_fee: d.file_fee,
        ledger_amount: d.ledger_amount,
        payment_id: payment.as_ref().map(|p| p.id.as_str()),
        notice_code: payment.as_ref().map(|p| p.notice_code.as_str()),
    };
    let plan = plan_resolution(&facts, req.action).map_err(|e| Problem::internal(&e))?;
    match store.resolve_discrepancy(id, req.action.as_str(), note, actor, &plan).await? {
        Resolved::Done { discrepancy, ledger_tx_ids } => {
            Ok(ResolveResponse { discrepancy, ledger_transactions: ledger_tx_ids })
        }
        Resolved::NotOpen(d) => Err(not_open(&d)),
        Resolved::NotFound => Err(Problem::not_found(format!("No discrepancy {id}."))),
        Resolved::AlreadyBooked(other) => Err(Problem::conflict(
            "transaction-already-booked",
            "Transaction already booked",
            format!(
                "{} transaction {} was already booked as unexplained money when discrepancy {other} (another \
                 day's file) was resolved; booking it again would count the money twice. Resolve this one with \
                 accept if the provider listed it again, or have the other resolution reversed first.",
                run.provider,
                d.provider_txn_id.as_deref().unwrap_or("?")
            ),
        )),
    }
}

/// Gives the claim back; if that fails, the claim stays (only the same action can then finish the
/// discrepancy) and the caller still gets the answer that explains what went wrong.
async fn release(store: &Store, id: &str, action: ResolutionAction) {
    if let Err(e) = store.release_discrepancy(id, action.as_str()).await {
        tracing::warn!(error = %e, discrepancy = id, "could not release a discrepancy's claim");
    }
}

fn not_open(d: &DiscrepancyRecord) -> Problem {
    let state = if d.status == "open" { "being resolved" } else { d.status.as_str() };
    Problem::conflict(
        "discrepancy-not-open",
        "Discrepancy is not open",
        format!(
            "Discrepancy {} is {}{}; nothing was done.",
            d.id,
            state,
            d.resolution
                .as_ref()
                .map(|r| format!(" ({r} by {})", d.resolved_by.as_deref().unwrap_or("?")))
                .unwrap_or_default()
        ),
    )
}
