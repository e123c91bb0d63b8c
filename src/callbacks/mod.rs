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
    let payment = match find_notice_code(&credit.description) {
        Some(code) => match state.store.find_pending_transfer(code.as_str(), credit.amount).await {
            Ok(p) => p,
            Err(e) => return BankOutcome::Unavailable(e),
        },
        None => None,
    };
    let Some(payment) = payment else {
        let raw = String::from_utf8_lossy(body);
        return match state
            .store
            .insert_unmatched_credit(bank, &credit.transaction_id, credit.amount, &credit.description, &raw)
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
        provider_txn_id: Some(format!("{bank}:{}", credit.transaction_id)),
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
