//! Payments of notices: the state machine ([`state`], pure), creating a payment through a
//! provider, applying what providers report, and the background job ([`poller`]) that finds out
//! what happened to payments whose callback never came.
//!
//! Invariants: a payment's amount is fixed at creation (principal + late interest as of that
//! Vietnamese date); a paid or cancelled notice cannot get a new payment; a provider that cannot
//! be reached leaves a `failed` payment with its cause, never a half-started one; the payer's
//! browser (return page) is never what marks a payment paid.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;

use crate::app::AppState;
use crate::clock::vn_date;
use crate::http::problem::Problem;
use crate::notices;
use crate::obligations::NoticeCode;
use crate::providers::protocol::event::{Outcome, ProviderEvent};
use crate::providers::{Instructions, StartPayment};
use crate::store::now;
use crate::store::payments::{Applied, PaymentKey, PaymentRecord, PaymentUpdate};
use state::{PaymentEvent, PaymentStatus};

pub mod batch;
pub mod poller;
pub mod state;

/// A payer's request to pay a notice.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct PaymentRequest {
    /// `vnpay`, `momo`, `zalopay` or `vietqr`.
    pub provider: String,
    /// Where to send the payer after the result page; must be under an allowed prefix.
    pub return_url: Option<String>,
    /// `vi` (default) or `en`.
    pub locale: Option<String>,
}

const REF_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A fresh base reference: `PG` + 14 symbols (70 random bits).
fn new_base_ref() -> String {
    let mut rng = rand::rng();
    let tail: String = (0..14).map(|_| REF_ALPHABET[rng.random_range(0..REF_ALPHABET.len())] as char).collect();
    format!("PG{tail}")
}

fn validate_return_url(state: &AppState, url: &str) -> Result<(), Problem> {
    let refuse = || {
        Problem::validation(
            "return_url",
            "must be an absolute URL under this service or a prefix in providers.return_url_allowlist",
        )
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| refuse())?;
    if url.len() > 2000 || !matches!(parsed.scheme(), "http" | "https") {
        return Err(refuse());
    }
    let allowed = std::iter::once(state.public_base_url.as_str())
        .chain(state.config.providers.return_url_allowlist.iter().map(String::as_str))
        .filter_map(|prefix| reqwest::Url::parse(prefix).ok())
        .any(|prefix| same_origin_under(&prefix, &parsed));
    if allowed { Ok(()) } else { Err(refuse()) }
}

/// `url` has `prefix`'s scheme, host and port, and a path at or below `prefix`'s path (compared
/// on parsed URLs, so `https://pay.example.gov.vn.evil.com` is not under `https://pay.example.gov.vn`).
fn same_origin_under(prefix: &reqwest::Url, url: &reqwest::Url) -> bool {
    let base = prefix.path().trim_end_matches('/');
    prefix.scheme() == url.scheme()
        && prefix.host_str() == url.host_str()
        && prefix.port_or_known_default() == url.port_or_known_default()
        && (url.path() == base || url.path().starts_with(&format!("{base}/")) || base.is_empty())
}

/// Creates a payment of a notice's current total due through `req.provider`.
pub async fn create(
    state: &AppState,
    code: &NoticeCode,
    req: &PaymentRequest,
    client_ip: &str,
) -> Result<PaymentRecord, Problem> {
    let providers = &state.providers;
    let Some(connector) = providers.get(&req.provider) else {
        let known: Vec<&str> = providers.known().collect();
        return Err(Problem::validation(
            "provider",
            format!("unknown provider {:?}; choose one of {}", req.provider, known.join(", ")),
        ));
    };
    if !providers.is_enabled(&req.provider) {
        let enabled: Vec<&str> = providers.enabled().collect();
        let mut p = Problem::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "provider-disabled",
            "Provider not available",
            format!("{} is not offered here; choose one of {}", req.provider, enabled.join(", ")),
        );
        p.field = Some("provider".into());
        return Err(p);
    }
    if let Some(url) = &req.return_url {
        validate_return_url(state, url)?;
    }
    let locale = match req.locale.as_deref() {
        None | Some("vi") => "vi",
        Some("en") => "en",
        Some(_) => return Err(Problem::validation("locale", "must be vi or en")),
    };
    let (notice, lines) =
        state.store.find_notice(code.as_str()).await?.ok_or_else(|| notices::notice_not_found(code))?;
    match notice.status.as_str() {
        "unpaid" => {}
        "paid" => {
            return Err(Problem::conflict(
                "notice-already-paid",
                "Notice already paid",
                format!("Notice {code} has been paid; there is nothing left to pay."),
            ));
        }
        _ => {
            return Err(Problem::conflict(
                "notice-cancelled",
                "Notice cancelled",
                format!("Notice {code} was cancelled and cannot be paid."),
            ));
        }
    }
    let created_at = now();
    let interest = notices::late_interest(state, &notice, &lines, vn_date(created_at))?;
    let amount = notice
        .principal
        .checked_add(interest.amount.get())
        .ok_or_else(|| Problem::internal(&"amount due overflows"))?;
    let (min, max) = connector.amount_limits();
    if amount < min || amount > max {
        let mut p = Problem::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "amount-outside-provider-limits",
            "Amount outside the provider's limits",
            format!(
                "{} takes payments of {} to {} đồng; this notice's total due is {} đồng. Choose another provider.",
                connector.name(),
                group(min),
                group(max),
                group(amount)
            ),
        );
        p.field = Some("provider".into());
        return Err(p);
    }
    let cfg = &state.config.providers;
    let merchant_ref = connector.merchant_ref(&new_base_ref(), created_at).map_err(|e| Problem::internal(&e))?;
    let expires_at = created_at + Duration::seconds(cfg.payment_ttl_secs as i64);
    let payment = PaymentRecord {
        id: format!("pay_{}", uuid::Uuid::now_v7().simple()),
        merchant_ref,
        notice_id: notice.id.clone(),
        notice_code: notice.code.clone(),
        provider: connector.name().to_string(),
        amount,
        status: PaymentStatus::Pending.as_str().into(),
        provider_txn_id: None,
        redirect_url: None,
        qr_payload: None,
        return_url: req.return_url.clone(),
        locale: locale.into(),
        overpayment: false,
        late_success: false,
        refund_due: 0,
        created_at,
        expires_at,
        updated_at: created_at,
        next_poll_at: created_at + Duration::seconds(cfg.status_poll_after_secs as i64),
        poll_attempts: 0,
        interest_part: interest.amount.get(),
        interest_budget_code: (interest.amount.get() > 0).then(|| interest.budget_code.clone()),
        refunded_amount: 0,
    };
    state.store.insert_payment(&payment).await?;
    let base = &state.public_base_url;
    let start = StartPayment {
        merchant_ref: payment.merchant_ref.clone(),
        amount,
        notice_code: notice.code.clone(),
        order_info: format!("Thanh toan {}", notice.code),
        return_url: format!("{base}/pay/return/{}", payment.provider),
        callback_url: format!("{base}/callbacks/{}", payment.provider),
        client_ip: client_ip.to_string(),
        locale: locale.into(),
        created_at,
        expires_at,
    };
    match connector.start(&start).await {
        Ok(instructions) => {
            let (redirect, qr) = match &instructions {
                Instructions::Redirect(url) => (Some(url.as_str()), None),
                Instructions::Qr(payload) => (None, Some(payload.as_str())),
            };
            state.store.set_payment_instructions(&payment.id, redirect, qr).await?;
            let mut payment = payment;
            payment.redirect_url = redirect.map(str::to_string);
            payment.qr_payload = qr.map(str::to_string);
            tracing::info!(payment = %payment.id, notice = %payment.notice_code, provider = %payment.provider,
                amount, "payment created");
            Ok(payment)
        }
        Err(e) => {
            tracing::warn!(payment = %payment.id, provider = %payment.provider, error = %e, "provider did not start the payment");
            let update = PaymentUpdate {
                event: PaymentEvent::ProviderFailed,
                amount: None,
                provider_txn_id: None,
                cause: "provider_error",
                detail: serde_json::json!({"error": e.to_string()}),
                at: now(),
                inbox: None,
            };
            state.store.apply_payment_update(PaymentKey::Id(&payment.id), update).await?;
            Err(Problem::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "provider-unavailable",
                "Provider unavailable",
                format!(
                    "{} could not start the payment ({e}). Nothing was charged; try again or choose another provider.",
                    payment.provider
                ),
            )
            .with_retry_after(30))
        }
    }
}

/// `50000000` → `50.000.000`.
fn group(amount: i64) -> String {
    let digits = amount.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    out
}

/// Applies a verified provider event to the payment it names. `Pending` outcomes change
/// nothing (`None`).
pub async fn apply_provider_event(
    state: &AppState,
    event: &ProviderEvent,
    cause: &'static str,
    inbox: Option<crate::store::inbox::InboxRecord>,
) -> Result<Option<Applied>, crate::store::StoreError> {
    let payment_event = match &event.outcome {
        Outcome::Succeeded => PaymentEvent::ProviderSucceeded,
        Outcome::Failed { .. } => PaymentEvent::ProviderFailed,
        Outcome::Pending => return Ok(None),
    };
    let reason = match &event.outcome {
        Outcome::Failed { reason } => Some(reason.as_str()),
        _ => None,
    };
    let update = PaymentUpdate {
        event: payment_event,
        amount: Some(event.amount),
        provider_txn_id: event.provider_txn_id.clone(),
        cause,
        detail: serde_json::json!({
            "provider": event.provider, "provider_code": event.provider_code,
            "provider_txn_id": event.provider_txn_id, "reason": reason,
            "paid_at": event.paid_at.map(|t: DateTime<Utc>| t.to_rfc3339()),
        }),
        at: now(),
        inbox,
    };
    let applied = state.payment_writer.apply(PaymentKey::MerchantRef(&event.merchant_ref), update).await?;
    match &applied {
        Applied::Moved { status, paid_notice, refund_due } => {
            tracing::info!(merchant_ref = %event.merchant_ref, status = status.as_str(), paid_notice,
                refund_due, cause, "payment updated");
        }
        Applied::LateSuccess(status) => {
            tracing::warn!(merchant_ref = %event.merchant_ref, status = status.as_str(), cause,
                "money arrived after the payment ended; held for refund");
        }
        Applied::AmountMismatch { expected } => {
            tracing::warn!(merchant_ref = %event.merchant_ref, reported = event.amount, expected, cause,
                "provider reported another amount; nothing changed");
        }
        other => tracing::info!(merchant_ref = %event.merchant_ref, outcome = ?other, cause, "payment unchanged"),
    }
    Ok(Some(applied))
}

/// Asks the provider about one pending payment now and applies a definitive answer (the return
/// page uses this: the payer's browser never marks a payment paid, the provider's answer does).
pub async fn refresh(state: &AppState, payment: &PaymentRecord) -> Result<PaymentRecord, Problem> {
    if payment.status() != PaymentStatus::Pending {
        return Ok(payment.clone());
    }
    if let Some(connector) = state.providers.get(&payment.provider) {
        match connector.query(&payment.merchant_ref, payment.created_at, payment.amount).await {
            Ok(Some(event)) => {
                apply_provider_event(state, &event, "status_query", None).await?;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(payment = %payment.id, error = %e, "status query from the return page failed"),
        }
    }
    Ok(state.store.find_payment(PaymentKey::Id(&payment.id)).await?.unwrap_or_else(|| payment.clone()))
}

#[cfg(test)]
mod tests {
    use super::same_origin_under;

    #[test]
    fn return_urls_are_compared_by_origin_and_path() {
        let p = |s: &str| reqwest::Url::parse(s).unwrap();
        let base = p("https://pay.example.gov.vn");
        assert!(same_origin_under(&base, &p("https://pay.example.gov.vn/done?x=1")));
        assert!(!same_origin_under(&base, &p("https://pay.example.gov.vn.evil.com/done")));
        assert!(!same_origin_under(&base, &p("http://pay.example.gov.vn/done")));
        assert!(!same_origin_under(&base, &p("https://pay.example.gov.vn:8443/done")));
        let dossier = p("https://dichvucong.example.gov.vn/hoso/");
        assert!(same_origin_under(&dossier, &p("https://dichvucong.example.gov.vn/hoso/123")));
        assert!(!same_origin_under(&dossier, &p("https://dichvucong.example.gov.vn/hosox")));
        assert!(!same_origin_under(&dossier, &p("https://user@evil.com/hoso/1")));
    }
}
