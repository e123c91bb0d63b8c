//! Refunds: reserve the amount, ask the provider, settle with its answer.
//!
//! Invariants: a refund never exceeds what remains of the payment (reserved under the payment's
//! row lock); it is posted to the ledger only when the provider confirms it; a provider that
//! refuses it leaves a `failed` refund and releases the reservation; a provider that cannot be
//! reached, answers garbage or answers without deciding (still processing) leaves the refund
//! `pending` and reserved — it may have been made, so it must not be sent twice — until a
//! treasurer records the outcome they confirmed with the provider ([`record_outcome`]); a refund's
//! outcome is settled once and never changed, and a provider's answer that contradicts an outcome
//! recorded meanwhile is reported as a conflict, not posted; a refund of a payment whose provider
//! makes none through paygate is refused before anything is reserved or written; once reserved, a
//! refund is sent and settled by a task the request does not own, and a request made again under
//! the same key is answered with the refund it made.

use crate::app::AppState;
use crate::auth::Principal;
use crate::http::problem::Problem;
use crate::providers::{ProviderError, REFUNDS_OUTSIDE, RefundCall};
use crate::store::payments::{PaymentKey, PaymentRecord};
use crate::store::refunds::{RefundAnswer, RefundRecord, ReserveError, Settled};
use crate::store::{StoreError, now};

/// A treasurer's refund request.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct RefundRequest {
    /// Whole đồng; omitted: everything that remains refundable.
    pub amount: Option<i64>,
    /// Why; kept with the refund.
    pub reason: String,
}

/// Requests a refund: reserves it, then has the provider make it and settles it with the answer.
/// `idempotency_key` is the request's `Idempotency-Key`, if any: the refund remembers it, so the
/// same request made again is answered with that refund rather than making another.
pub async fn request(
    state: &AppState,
    payment_id: &str,
    req: &RefundRequest,
    by: &Principal,
    idempotency_key: Option<&str>,
) -> Result<(RefundRecord, PaymentRecord), Problem> {
    // The request's answer is due before its own time limit ends, counted from now.
    let answer_by = tokio::time::Instant::now() + state.config.server.request_timeout() * 3 / 4;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(Problem::validation("reason", "must be 1 to 500 characters"));
    }
    if let Some(a) = req.amount
        && a <= 0
    {
        return Err(Problem::validation("amount", "must be a positive whole number of đồng"));
    }
    // Refused before anything is reserved or written: a payment whose provider's refunds are made
    // outside paygate.
    if let Some(payment) = state.store.find_payment(PaymentKey::Id(payment_id)).await? {
        match state.providers.get(&payment.provider) {
            Some(c) if c.makes_refunds() => {}
            Some(_) => return Err(not_supported(&payment.provider, REFUNDS_OUTSIDE)),
            None => return Err(not_supported(&payment.provider, "not a provider this service is configured for")),
        }
    }
    let request_key = idempotency_key.map(|k| format!("{}:{payment_id}:{k}", by.token_id));
    let reserved = state.store.reserve_refund(payment_id, req.amount, reason, &by.name, request_key.as_deref(), now());
    let (refund, payment) = match reserved.await {
        Err(ReserveError::AlreadyRequested(made)) => return as_it_stands(state, &made).await,
        other => other,
    }
    .map_err(|e| match e {
        ReserveError::NotFound => Problem::not_found(format!("No payment with id {payment_id:?}.")),
        ReserveError::NotRefundable(status) => Problem::conflict(
            "payment-not-refundable",
            "Nothing to refund",
            format!("This payment is {status}: no money was received, so there is nothing to refund."),
        ),
        ReserveError::ExceedsRemaining { remaining } => {
            let mut p = Problem::validation(
                "amount",
                format!("only {remaining} đồng of this payment remain refundable (pending refunds included)"),
            );
            p.code = Some("exceeds_remaining".into());
            p
        }
        ReserveError::AnotherPending(refund) => Problem::conflict(
            "refund-pending",
            "Another refund is pending",
            format!(
                "Refund {refund} of this payment is still pending: it is in flight or its outcome is not yet \
                     known, and it may have been made. Request another refund once it is settled."
            ),
        ),
        ReserveError::AlreadyRequested(made) => Problem::internal(&format!("refund {made} answered twice")),
        ReserveError::Store(e) => e.into(),
    })?;
    // The provider's call and the recording of its answer run as a task of their own: if the
    // request goes away meanwhile (its caller gone, its timeout), the refund is still sent and its
    // answer still recorded, never left pending after the money moved; the same request made again
    // finds it by its key. The request waits for it for most of its own time limit.
    let (refund_id, payment_id, provider) = (refund.id.clone(), payment.id.clone(), payment.provider.clone());
    let task = state.in_flight.spawn({
        let (state, by) = (state.clone(), by.name.clone());
        async move { send_and_settle(&state, refund, payment, &by).await }
    });
    match tokio::time::timeout_at(answer_by, task).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => Err(Problem::internal(&e)),
        Err(_) => {
            tracing::info!(refund = %refund_id, payment = %payment_id, provider = %provider,
                "refund still in flight when its request had to answer; settled when the provider answers");
            as_it_stands(state, &refund_id).await
        }
    }
}

/// A refund and its payment as they stand, read back after a change to them.
async fn read_back(state: &AppState, refund_id: &str) -> Result<(RefundRecord, PaymentRecord), StoreError> {
    let refund = state.store.find_refund(refund_id).await?.ok_or_else(|| vanished("refund"))?;
    let payment =
        state.store.find_payment(PaymentKey::Id(&refund.payment_id)).await?.ok_or_else(|| vanished("payment"))?;
    Ok((refund, payment))
}

fn vanished(what: &str) -> StoreError {
    StoreError::Invariant(format!("a {what} read back after a change to it is gone"))
}

/// A refund as it stands, for a request that could not wait for it, or made again (its key): made,
/// or still pending (answered 202, settled when its provider answers); one the provider did not
/// make is that request's failure.
async fn as_it_stands(state: &AppState, refund_id: &str) -> Result<(RefundRecord, PaymentRecord), Problem> {
    let (refund, payment) = read_back(state, refund_id).await?;
    if refund.status == "failed" {
        return Err(Problem::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "refund-failed",
            "Refund failed",
            format!(
                "{} did not make refund {}, which this request made: {}. Nothing was posted; the amount is \
                 refundable again under a new Idempotency-Key.",
                payment.provider,
                refund.id,
                refund.detail.as_deref().unwrap_or("no reason given")
            ),
        ));
    }
    Ok((refund, payment))
}

fn not_supported(provider: &str, why: &str) -> Problem {
    Problem::new(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "refund-not-supported",
        "Refund not supported",
        format!("{provider}: {why}."),
    )
}

/// Sends a reserved refund to its provider and settles it with the answer.
async fn send_and_settle(
    state: &AppState,
    refund: RefundRecord,
    payment: PaymentRecord,
    by: &str,
) -> Result<(RefundRecord, PaymentRecord), Problem> {
    let connector = state.providers.get(&payment.provider).ok_or_else(|| Problem::internal(&"unknown provider"))?;
    let call = RefundCall {
        refund_id: refund.id.clone(),
        merchant_ref: payment.merchant_ref.clone(),
        provider_txn_id: payment.provider_txn_id.clone(),
        amount: refund.amount,
        full: refund.amount == payment.amount && payment.refunded_amount == 0,
        payment_created_at: payment.created_at,
        requested_by: by.to_string(),
    };
    let answer = connector.refund(&call).await;
    if let Err(e @ (ProviderError::Unreachable(_) | ProviderError::BadAnswer(_) | ProviderError::Undecided(_))) =
        &answer
    {
        // The provider may have refunded: the refund stays pending and keeps its amount
        // reserved, so no second refund can be sent for it, until someone confirms the outcome.
        tracing::error!(refund = %refund.id, payment = %payment.id, error = %e,
            "refund outcome unknown; left pending with its amount reserved");
        return Err(Problem::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "refund-outcome-unknown",
            "Refund outcome unknown",
            format!(
                "{} did not answer clearly ({e}). Refund {} stays pending with its amount reserved until its \
                 outcome is confirmed with the provider; do not request it again.",
                payment.provider, refund.id
            ),
        ));
    }
    let refused = answer.as_ref().err().map(ToString::to_string);
    let settled_with = match refused.as_deref() {
        Some(why) => RefundAnswer::NotMade { why },
        None => RefundAnswer::Made { provider_ref: answer.as_ref().ok().and_then(Option::as_deref), note: None },
    };
    // The provider has answered: record it, retrying a busy database a few times, because a
    // refund left pending would keep its amount reserved.
    let mut attempt = 0;
    let settled = loop {
        match state.store.settle_refund(&refund.id, settled_with, now()).await {
            Ok(settled) => break settled,
            Err(crate::store::StoreError::Unavailable(_)) if attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => {
                tracing::error!(refund = %refund.id, error = %e, "provider answered but the refund could not be settled");
                // Not the store's own 503: that would free the Idempotency-Key for a retry, and the
                // provider has acted on this refund.
                return Err(Problem::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "refund-not-recorded",
                    "Refund answer not recorded",
                    format!(
                        "{} answered, but its answer could not be recorded. Refund {} stays pending with its \
                         amount reserved until a treasurer records the outcome confirmed with the provider; do \
                         not request it again.",
                        payment.provider, refund.id
                    ),
                ));
            }
        }
    };
    // A treasurer may have recorded an outcome while the provider was still answering: if it is
    // not what the provider has now said, neither is posted over the other; staff must look.
    if let Settled::AlreadySettled(recorded) = &settled {
        let provider_says = if answer.is_ok() { "succeeded" } else { "failed" };
        if recorded != provider_says {
            tracing::error!(refund = %refund.id, payment = %payment.id, recorded = %recorded, provider_says,
                "a refund's recorded outcome contradicts the provider's answer");
            return Err(Problem::conflict(
                "refund-outcome-conflict",
                "Refund outcome contradicts the provider",
                format!(
                    "{} answered that refund {} {provider_says}, but it was already recorded as {recorded} while \
                     the request was in flight. Nothing more was posted; check the refund with the provider and \
                     correct the ledger with a compensating entry.",
                    payment.provider, refund.id
                ),
            ));
        }
    }
    match answer {
        Ok(_) => {
            tracing::info!(refund = %refund.id, payment = %payment.id, amount = refund.amount, by = %by, "refund confirmed");
            // Made and posted: no answer from here on may be the store's 503, which frees the
            // Idempotency-Key, or a retry under it would send a second refund.
            match read_back(state, &refund.id).await {
                Ok(both) => Ok(both),
                Err(e) => {
                    tracing::error!(refund = %refund.id, error = %e, "refund made and posted, but not read back");
                    Err(Problem::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "refund-made-not-read",
                        "Refund made; its record could not be read",
                        format!(
                            "{} made refund {} and it is posted, but reading it back failed; see GET \
                             /v1/payments/{}. Do not request it again.",
                            payment.provider, refund.id, payment.id
                        ),
                    ))
                }
            }
        }
        Err(ProviderError::Unsupported(why)) => Err(not_supported(&payment.provider, why)),
        Err(e) => Err(Problem::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "refund-failed",
            "Refund failed",
            format!("{} did not refund: {e}. Nothing was posted; the amount is refundable again.", payment.provider),
        )),
    }
}

/// What a treasurer confirmed with the provider about a refund whose outcome was unknown.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct RefundOutcome {
    /// `succeeded` (the provider made it: it is posted) or `failed` (it did not: the amount is
    /// refundable again).
    pub outcome: String,
    /// The provider's reference for the refund it made; only with `succeeded`.
    pub provider_ref: Option<String>,
    /// How the outcome was confirmed (the provider's portal, its support desk…); kept with the
    /// refund together with who recorded it.
    pub note: String,
}

/// Settles a pending refund with the outcome a treasurer confirmed with the provider: posted if
/// it succeeded, its reservation released if it failed. Only a pending refund can be settled.
pub async fn record_outcome(
    state: &AppState,
    refund_id: &str,
    req: &RefundOutcome,
    by: &Principal,
) -> Result<(RefundRecord, PaymentRecord), Problem> {
    let succeeded = match req.outcome.as_str() {
        "succeeded" => true,
        "failed" => false,
        _ => return Err(Problem::validation("outcome", "must be \"succeeded\" or \"failed\"")),
    };
    let note = req.note.trim();
    if note.is_empty() || note.chars().count() > 500 {
        return Err(Problem::validation("note", "must be 1 to 500 characters"));
    }
    let provider_ref = req.provider_ref.as_deref().map(str::trim);
    match provider_ref {
        Some(_) if !succeeded => {
            return Err(Problem::validation("provider_ref", "only a refund that succeeded has a provider reference"));
        }
        Some(r) if r.is_empty() || r.chars().count() > 100 => {
            return Err(Problem::validation("provider_ref", "must be 1 to 100 characters"));
        }
        _ => {}
    }
    let recorded = format!("outcome confirmed with the provider, recorded by {}: {note}", by.name);
    let answer = if succeeded {
        RefundAnswer::Made { provider_ref, note: Some(&recorded) }
    } else {
        RefundAnswer::NotMade { why: &recorded }
    };
    match state.store.settle_refund(refund_id, answer, now()).await? {
        Settled::NotFound => Err(Problem::not_found(format!("No refund with id {refund_id:?}."))),
        Settled::AlreadySettled(status) => Err(Problem::conflict(
            "refund-already-settled",
            "Refund already settled",
            format!("Refund {refund_id} is {status}; a settled refund's outcome is never changed."),
        )),
        Settled::Applied { .. } => {
            tracing::info!(refund = %refund_id, outcome = %req.outcome, by = %by.name, "refund outcome recorded");
            Ok(read_back(state, refund_id).await?)
        }
    }
}
