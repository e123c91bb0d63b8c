//! Provider callbacks: verification dispatch and exactly-once application, with the reply each
//! provider's protocol expects.
//!
//! Invariants: nothing in a callback is trusted before its provider's signature (and merchant)
//! verifies; the amount must equal the payment's to the đồng; applying goes through the
//! store's single transaction per payment, so duplicates, concurrent deliveries and stale or
//! out-of-order callbacks change nothing twice and never move a final state backwards; a bank
//! credit we cannot attribute is kept (`unmatched_credits`), never dropped.

use crate::app::AppState;
use crate::payments;
use crate::providers::RawCallback;
use crate::providers::protocol::event::{ProviderEvent, VerifyError};
use crate::store::StoreError;
use crate::store::payments::Applied;

/// The provider-neutral result of handling one callback.
#[derive(Debug)]
pub enum Handled {
    /// The signature or content did not verify: nothing was done.
    Rejected(VerifyError),
    /// Verified and applied (or recognised as duplicate/stale/late); `None` for a "still
    /// pending" report that changes nothing.
    Applied(ProviderEvent, Option<Applied>),
    /// Verified, but the store could not be reached: the provider should retry.
    Unavailable(StoreError),
}

/// Verifies a callback with `provider`'s connector and applies it.
pub async fn handle(state: &AppState, provider: &str, raw: &RawCallback<'_>) -> Handled {
    let Some(connector) = state.providers.get(provider) else {
        return Handled::Rejected(VerifyError::Body(format!("unknown provider {provider}")));
    };
    let event = match connector.verify(raw) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(provider, error = %e, "callback rejected");
            return Handled::Rejected(e);
        }
    };
    match payments::apply_provider_event(state, &event, "callback").await {
        Ok(applied) => Handled::Applied(event, applied),
        Err(e) => {
            tracing::error!(provider, error = %e, "callback verified but not applied; provider will retry");
            Handled::Unavailable(e)
        }
    }
}

/// What became of a partner bank's credit notification.
#[derive(Debug)]
pub enum BankOutcome {
    UnknownBank,
    Rejected(String),
    /// Attributed to a payment and applied.
    Applied(Option<Applied>),
    /// No payment to attribute it to: kept for staff (`true` if newly kept).
    Unmatched {
        newly_kept: bool,
    },
    Unavailable(StoreError),
}

/// Verifies a partner bank's credit notification and applies it to the notice's transfer.
pub async fn handle_bank(state: &AppState, bank: &str, signature: Option<&str>, body: &[u8]) -> BankOutcome {
    use crate::providers::bank::{BankError, find_notice_code};
    let banks = &state.providers.banks;
    let credit = match banks.verify(bank, signature, body, chrono::Utc::now().timestamp()) {
        Ok(c) => c,
        Err(BankError::UnknownBank) => return BankOutcome::UnknownBank,
        Err(e) => {
            tracing::warn!(bank, error = %e, "bank notification rejected");
            return BankOutcome::Rejected(e.to_string());
        }
    };
    let provider_txn_id = format!("{bank}:{}", credit.transaction_id);
    let payment = match find_notice_code(&credit.description) {
        Some(code) => match state.store.find_transfer_payment(code.as_str(), credit.amount, &provider_txn_id).await {
            Ok(p) => p,
            Err(e) => return BankOutcome::Unavailable(e),
        },
        None => None,
    };
    let Some(payment) = payment else {
        let raw = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(mut json) => {
                crate::privacy::mask_payload(&mut json);
                json.to_string()
            }
            Err(_) => crate::privacy::mask_digit_runs(&String::from_utf8_lossy(body)),
        };
        return match state
            .store
            .insert_unmatched_credit(
                bank,
                &credit.transaction_id,
                credit.amount,
                &crate::privacy::mask_digit_runs(&credit.description),
                &raw,
            )
            .await
        {
            Ok(newly_kept) => {
                tracing::warn!(bank, transaction = %credit.transaction_id, amount = credit.amount,
                    "bank credit matches no payment; kept as unmatched");
                BankOutcome::Unmatched { newly_kept }
            }
            Err(e) => BankOutcome::Unavailable(e),
        };
    };
    let event = ProviderEvent {
        provider: "bank",
        merchant_ref: payment.merchant_ref.clone(),
        provider_txn_id: Some(provider_txn_id),
        amount: credit.amount,
        outcome: crate::providers::protocol::event::Outcome::Succeeded,
        provider_code: "credited".into(),
        paid_at: Some(credit.credited_at.with_timezone(&chrono::Utc)),
    };
    match payments::apply_provider_event(state, &event, "bank_notification").await {
        Ok(applied) => BankOutcome::Applied(applied),
        Err(e) => BankOutcome::Unavailable(e),
    }
}

/// The largest callback body acted on; anything larger is stored (truncated) and rejected.
pub const MAX_CALLBACK_BODY: usize = 64 * 1024;
/// Bodies are read up to this size so that even an oversized one is kept for the auditor.
pub const READ_LIMIT: usize = 16 * 1024 * 1024;

/// A callback as it arrived, for the inbox.
pub struct Arrival<'a> {
    pub provider: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a axum::http::HeaderMap,
    /// `None` when the body could not be read (larger than [`READ_LIMIT`], broken stream).
    pub body: Option<&'a [u8]>,
    pub source_addr: String,
}

/// Stores the callback in the inbox before anything is done with it; returns its inbox id.
/// `Err` means it could not be stored, and then it must not be acted on.
pub async fn receive(state: &AppState, a: &Arrival<'_>) -> Result<String, StoreError> {
    use sha2::{Digest, Sha256};
    let body = a.body.unwrap_or_default();
    let shown = &body[..body.len().min(MAX_CALLBACK_BODY)];
    let text = match serde_json::from_slice::<serde_json::Value>(shown) {
        Ok(mut json) => {
            crate::privacy::mask_payload(&mut json);
            json.to_string()
        }
        Err(_) => crate::privacy::mask_digit_runs(&String::from_utf8_lossy(shown)),
    }
    // PostgreSQL text cannot hold NUL; the SHA-256 below is of the original bytes.
    .replace('\0', "\u{FFFD}");
    let headers: serde_json::Map<String, serde_json::Value> = ["content-type", "user-agent", "paygate-signature"]
        .iter()
        .filter_map(|h| Some((h.to_string(), serde_json::Value::from(a.headers.get(*h)?.to_str().ok()?))))
        .collect();
    let record = crate::store::inbox::InboxRecord {
        id: format!("cb_{}", uuid::Uuid::now_v7().simple()),
        provider: a.provider.to_string(),
        method: a.method.to_string(),
        path: a.path.to_string(),
        query: a.query.chars().take(8192).collect(),
        headers: serde_json::Value::Object(headers).to_string(),
        body: text,
        body_sha256: hex::encode(Sha256::digest(body)),
        body_bytes: body.len() as i64,
        source_addr: a.source_addr.clone(),
        received_at: crate::store::now(),
        verification: None,
        outcome: None,
        detail: None,
        merchant_ref: None,
        processed_at: None,
    };
    state.store.insert_inbox(&record).await?;
    Ok(record.id)
}

/// Why a callback is refused before verification even starts (size, unreadable body).
pub fn precheck(a: &Arrival<'_>) -> Option<VerifyError> {
    match a.body {
        None => Some(VerifyError::Body(format!("body larger than {READ_LIMIT} bytes or unreadable"))),
        Some(b) if b.len() > MAX_CALLBACK_BODY => {
            Some(VerifyError::Body(format!("body of {} bytes is larger than {MAX_CALLBACK_BODY}", b.len())))
        }
        _ => None,
    }
}

/// Records what was done with an inbox entry.
pub async fn finish(state: &AppState, inbox_id: &str, handled: &Handled) {
    let (verification, outcome, detail, merchant_ref) = match handled {
        Handled::Rejected(e) => ("rejected", "rejected".to_string(), Some(e.to_string()), None),
        Handled::Unavailable(e) => ("verified", "not_applied".to_string(), Some(e.to_string()), None),
        Handled::Applied(event, applied) => {
            let outcome = match applied {
                None => "pending_reported".to_string(),
                Some(Applied::Moved { status, .. }) => format!("applied:{}", status.as_str()),
                Some(Applied::Duplicate(_)) => "duplicate".into(),
                Some(Applied::Stale(_)) => "stale".into(),
                Some(Applied::LateSuccess(_)) => "late_success".into(),
                Some(Applied::NotFound) => "unknown_payment".into(),
                Some(Applied::AmountMismatch { .. }) => "amount_mismatch".into(),
            };
            let detail = matches!(applied, Some(Applied::AmountMismatch { .. }))
                .then(|| format!("reported amount {}", event.amount));
            ("verified", outcome, detail, Some(event.merchant_ref.as_str()))
        }
    };
    if let Err(e) = state
        .store
        .finish_inbox(inbox_id, verification, &outcome, detail.as_deref(), merchant_ref, crate::store::now())
        .await
    {
        tracing::warn!(inbox_id, error = %e, "could not record the callback's outcome in the inbox");
    }
}
