//! Provider callbacks: verification dispatch and exactly-once application, with the reply each
//! provider's protocol expects.
//!
//! Invariants: nothing in a callback is trusted before its provider's signature (and merchant)
//! verifies; the amount must equal the payment's to the đồng; applying goes through the
//! store's single transaction per payment, so duplicates, concurrent deliveries and stale or
//! out-of-order callbacks change nothing twice and never move a final state backwards; a bank
//! credit we cannot attribute is kept (`unmatched_credits`), never dropped.

mod arrival;

pub use arrival::{Arrival, ReceivedBody, arrival_record, precheck};

use crate::app::AppState;
use crate::payments;
use crate::providers::RawCallback;
use crate::providers::protocol::event::{ProviderEvent, VerifyError};
use crate::store::StoreError;
use crate::store::inbox::InboxRecord;
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

/// Verifies a callback with `provider`'s connector and applies it; `record` (the callback as
/// received) is stored with its outcome — in the same transaction as the change it causes.
pub async fn handle(state: &AppState, provider: &str, raw: &RawCallback<'_>, record: InboxRecord) -> Handled {
    let Some(connector) = state.providers.get(provider) else {
        let e = VerifyError::Body(format!("unknown provider {provider}"));
        keep(state, record, "rejected", "rejected", Some(e.to_string())).await.ok();
        return Handled::Rejected(e);
    };
    let event = match connector.verify(raw) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(provider, error = %e, "callback rejected");
            keep(state, record, "rejected", "rejected", Some(e.to_string())).await.ok();
            return Handled::Rejected(e);
        }
    };
    let mut record = record;
    record.merchant_ref = Some(event.merchant_ref.clone());
    match payments::apply_provider_event(state, &event, "callback", Some(record.clone())).await {
        Ok(Some(applied)) => Handled::Applied(event, Some(applied)),
        // A report that changes nothing is answered as taken only once it is kept; otherwise the
        // provider is asked to send it again.
        Ok(None) => match keep(state, record, "verified", "pending_reported", None).await {
            Ok(()) => Handled::Applied(event, None),
            Err(e) => Handled::Unavailable(e),
        },
        Err(e) => {
            tracing::error!(provider, error = %e, "callback verified but not applied; provider will retry");
            keep(state, record, "verified", "not_applied", Some(e.to_string())).await.ok();
            Handled::Unavailable(e)
        }
    }
}

/// Stores a callback that changes nothing (rejected, pending, not applied) with its outcome. A
/// failure is logged here; a caller about to tell the provider its callback was taken asks it to
/// retry instead, and a caller answering a rejection or a retry anyway may ignore it.
pub async fn keep(
    state: &AppState,
    mut record: InboxRecord,
    verification: &str,
    outcome: &str,
    detail: Option<String>,
) -> Result<(), StoreError> {
    record.verification = Some(verification.into());
    record.outcome = Some(outcome.into());
    record.detail = detail;
    record.processed_at = Some(crate::store::now());
    let id = record.id.clone();
    state.payment_writer.keep(record).await.inspect_err(|e| {
        tracing::error!(inbox_id = %id, error = %e, "callback could not be kept in the inbox");
    })
}

/// What became of a partner bank's credit notification.
#[derive(Debug)]
pub enum BankOutcome {
    UnknownBank,
    /// The signature did not verify.
    Unauthenticated(String),
    /// Signed or not, the notification is unusable (size, body, currency, amount).
    Rejected(String),
    /// Verified, but the credit is not to the VietQR collection account: not money to attribute.
    NotCollectionAccount,
    /// Attributed to a payment and applied.
    Applied(Option<Applied>),
    /// No payment to attribute it to: kept for staff (`true` if newly kept).
    Unmatched {
        newly_kept: bool,
    },
    Unavailable(StoreError),
}

/// Verifies a partner bank's credit notification and applies it to the notice's transfer.
pub async fn handle_bank(
    state: &AppState,
    bank: &str,
    signature: Option<&str>,
    body: &[u8],
    record: InboxRecord,
) -> BankOutcome {
    use crate::providers::bank::{BankError, find_notice_code};
    let banks = &state.providers.banks;
    let credit = match banks.verify(bank, signature, body, chrono::Utc::now().timestamp()) {
        Ok(c) => c,
        Err(BankError::UnknownBank) => {
            keep(state, record, "rejected", "unknown_bank", None).await.ok();
            return BankOutcome::UnknownBank;
        }
        Err(e) => {
            tracing::warn!(bank, error = %e, "bank notification rejected");
            keep(state, record, "rejected", "rejected", Some(e.to_string())).await.ok();
            return match e {
                BankError::Signature(why) => BankOutcome::Unauthenticated(why),
                _ => BankOutcome::Rejected(e.to_string()),
            };
        }
    };
    // Only a credit that reached the collection account the QR codes name pays a notice.
    let collection = &state.config.providers.vietqr;
    if bank != collection.bank || credit.account != collection.account {
        tracing::warn!(bank, transaction = %credit.transaction_id, "bank credit is not to the collection account");
        let why = "the credit is not to the VietQR collection account".to_string();
        keep(state, record, "verified", "rejected", Some(why)).await.ok();
        return BankOutcome::NotCollectionAccount;
    }
    let provider_txn_id = format!("{bank}:{}", credit.transaction_id);
    let payment = match find_notice_code(&credit.description) {
        Some(code) => match state.store.find_transfer_payment(code.as_str(), credit.amount, &provider_txn_id).await {
            Ok(p) => p,
            Err(e) => {
                keep(state, record, "verified", "not_applied", Some(e.to_string())).await.ok();
                return BankOutcome::Unavailable(e);
            }
        },
        None => None,
    };
    let Some(payment) = payment else {
        return keep_unmatched(state, bank, &credit, body, Some(record)).await;
    };
    let event = ProviderEvent {
        provider: "bank",
        merchant_ref: payment.merchant_ref.clone(),
        provider_txn_id: Some(provider_txn_id.clone()),
        amount: credit.amount,
        outcome: crate::providers::protocol::event::Outcome::Succeeded,
        provider_code: "credited".into(),
        paid_at: Some(credit.credited_at.with_timezone(&chrono::Utc)),
    };
    let mut record = record;
    record.merchant_ref = Some(payment.merchant_ref.clone());
    match payments::apply_provider_event(state, &event, "bank_notification", Some(record.clone())).await {
        // A different transfer that raced another one onto the same payment is new money: kept.
        Ok(Some(Applied::Duplicate(_) | Applied::Stale(_))) => {
            match state.store.find_payment(crate::store::payments::PaymentKey::Id(&payment.id)).await {
                // Its inbox row (outcome `duplicate`) is already stored with the transaction.
                Ok(Some(p)) if p.provider_txn_id.as_deref() != Some(provider_txn_id.as_str()) => {
                    keep_unmatched(state, bank, &credit, body, None).await
                }
                Ok(_) => BankOutcome::Applied(Some(Applied::Duplicate(payment.status()))),
                // Whether it is new money is unknown: the bank is asked to send it again.
                Err(e) => BankOutcome::Unavailable(e),
            }
        }
        Ok(applied) => BankOutcome::Applied(applied),
        Err(e) => {
            keep(state, record, "verified", "not_applied", Some(e.to_string())).await.ok();
            BankOutcome::Unavailable(e)
        }
    }
}

/// Keeps a bank credit that pays no payment in `unmatched_credits` (masked), never dropping it.
async fn keep_unmatched(
    state: &AppState,
    bank: &str,
    credit: &crate::providers::bank::Credit,
    body: &[u8],
    record: Option<InboxRecord>,
) -> BankOutcome {
    let raw = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut json) => {
            crate::privacy::mask_payload(&mut json);
            json.to_string()
        }
        Err(_) => crate::privacy::mask_digit_runs(&String::from_utf8_lossy(body)),
    };
    match state
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
            // Kept as unmatched, but answered as taken only once its inbox row is kept too; a
            // retry finds the credit already kept.
            if let Some(record) = record
                && let Err(e) = keep(state, record, "verified", "unmatched_credit", None).await
            {
                return BankOutcome::Unavailable(e);
            }
            BankOutcome::Unmatched { newly_kept }
        }
        Err(e) => {
            if let Some(record) = record {
                keep(state, record, "verified", "not_applied", Some(e.to_string())).await.ok();
            }
            BankOutcome::Unavailable(e)
        }
    }
}
