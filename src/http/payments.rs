//! Public payment routes: start paying a notice, follow a payment.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::auth::Authentication;
use super::json::ApiJson;
use super::problem::{ApiResult, Problem, ProblemDetails};
use crate::app::AppState;
use crate::auth::Role;
use crate::notices;
use crate::payments::{self, PaymentRequest};
use crate::store::payments::{PaymentEventRecord, PaymentKey, PaymentRecord};
use crate::store::refunds::RefundRecord;

#[derive(Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    pub id: String,
    /// `pending`, `succeeded`, `failed`, `expired`, `cancelled`, `refunded`, `partially_refunded`.
    pub status: String,
    pub provider: String,
    /// Whole đồng, fixed when the payment was created.
    pub amount: i64,
    pub currency: &'static str,
    pub notice_code: String,
    /// Send the payer here (VNPAY, MoMo, ZaloPay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    /// Show this as a QR code (VietQR).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr_payload: Option<String>,
    /// Our reference at the provider.
    pub merchant_ref: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_txn_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Paid while the notice was already paid: recorded for refund.
    pub overpayment: bool,
    /// Money that arrived after the payment ended: held in suspense for refund.
    pub late_success: bool,
    /// Amount owed back to the payer, đồng.
    pub refund_due: i64,
    /// Refunds the provider confirmed, đồng.
    pub refunded_amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunds: Option<Vec<RefundSummary>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<PaymentEventRecord>>,
}

/// A refund on the payment's page. Who asked for it and the notes of whoever recorded its outcome
/// are staff matters: shown to `treasurer` and `auditor` tokens only.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RefundSummary {
    pub id: String,
    /// Whole đồng.
    pub amount: i64,
    pub reason: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// The provider's reference for the refund it made.
    pub provider_ref: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Staff only: the token that requested it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Staff only: the provider's refusal, or the outcome a treasurer recorded, how it was
    /// confirmed and by whom.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl RefundSummary {
    fn of(r: RefundRecord, staff: bool) -> RefundSummary {
        RefundSummary {
            id: r.id,
            amount: r.amount,
            reason: r.reason,
            status: r.status,
            provider_ref: r.provider_ref,
            created_at: r.created_at,
            updated_at: r.updated_at,
            requested_by: staff.then_some(r.requested_by),
            detail: r.detail.filter(|_| staff),
        }
    }
}

impl PaymentView {
    pub fn new(p: &PaymentRecord, history: Option<Vec<PaymentEventRecord>>) -> PaymentView {
        PaymentView {
            id: p.id.clone(),
            status: p.status.clone(),
            provider: p.provider.clone(),
            amount: p.amount,
            currency: "VND",
            notice_code: p.notice_code.clone(),
            redirect_url: p.redirect_url.clone(),
            qr_payload: p.qr_payload.clone(),
            merchant_ref: p.merchant_ref.clone(),
            provider_txn_id: p.provider_txn_id.clone(),
            created_at: p.created_at,
            expires_at: p.expires_at,
            overpayment: p.overpayment,
            late_success: p.late_success,
            refund_due: p.refund_due,
            refunded_amount: p.refunded_amount,
            refunds: None,
            history,
        }
    }
}

/// Start paying a notice (public). The amount is the notice's total due now, fixed for this payment.
#[utoipa::path(post, path = "/v1/notices/{code}/payments", tag = "public", request_body = PaymentRequest,
    params(("code" = String, Path, description = "Notice code"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = PaymentView),
              (status = 409, body = ProblemDetails, content_type = "application/problem+json",
               description = "notice already paid or cancelled"),
              (status = 422, body = ProblemDetails, content_type = "application/problem+json"),
              (status = 502, body = ProblemDetails, content_type = "application/problem+json",
               description = "the provider could not be reached")))]
pub async fn create(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(code): Path<String>,
    ApiJson(req): ApiJson<PaymentRequest>,
) -> ApiResult<(StatusCode, Json<PaymentView>)> {
    let code = notices::parse_code(&code)?;
    let payment = payments::create(&state, &code, &req, &peer.ip().to_string()).await?;
    Ok((StatusCode::CREATED, Json(PaymentView::new(&payment, None))))
}

/// A payment's status and history (public: the id is unguessable; a `treasurer` or `auditor`
/// token also sees who requested each refund and its recorded detail).
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "public",
    params(("id" = String, Path, description = "Payment id")),
    responses((status = 200, body = PaymentView),
              (status = 404, body = ProblemDetails, content_type = "application/problem+json")))]
pub async fn show(
    State(state): State<AppState>,
    Extension(auth): Extension<Authentication>,
    Path(id): Path<String>,
) -> ApiResult<Json<PaymentView>> {
    let payment = state
        .store
        .find_payment(PaymentKey::Id(&id))
        .await?
        .ok_or_else(|| Problem::not_found(format!("No payment with id {id:?}.")))?;
    let history = state.store.payment_history(&payment.id).await?;
    let mut view = PaymentView::new(&payment, Some(history));
    let staff = matches!(&auth, Authentication::Authenticated(p) if matches!(p.role, Role::Treasurer | Role::Auditor));
    let refunds = state.store.payment_refunds(&payment.id).await?;
    view.refunds = Some(refunds.into_iter().map(|r| RefundSummary::of(r, staff)).collect());
    Ok(Json(view))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RefundView {
    pub refund: RefundRecord,
    pub payment: PaymentView,
}

/// Refund all or part of a payment (`treasurer`), through the provider's refund API.
#[utoipa::path(post, path = "/v1/payments/{id}/refunds", tag = "ledger", request_body = crate::refunds::RefundRequest,
    params(("id" = String, Path, description = "Payment id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = RefundView, description = "Made and posted"),
              (status = 202, body = RefundView, description = "Still in flight: pending, settled when the provider answers"),
              (status = 409, body = ProblemDetails, content_type = "application/problem+json"),
              (status = 422, body = ProblemDetails, content_type = "application/problem+json"),
              (status = 502, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn refund(
    State(state): State<AppState>,
    caller: super::auth::Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<crate::refunds::RefundRequest>,
) -> ApiResult<(StatusCode, Json<RefundView>)> {
    let who = caller.require(&[Role::Treasurer])?;
    // Checked by the idempotency layer before the handler runs.
    let key = headers.get(super::idempotency::HEADER).and_then(|v| v.to_str().ok());
    let (refund, payment) = crate::refunds::request(&state, &id, &req, who, key).await?;
    // 202: still in flight when the request had to answer; settled when the provider answers.
    let status = if refund.status == "pending" { StatusCode::ACCEPTED } else { StatusCode::CREATED };
    Ok((status, Json(RefundView { refund, payment: PaymentView::new(&payment, None) })))
}

/// Record the outcome of a refund left pending because its provider did not answer clearly
/// (`treasurer`), once it has been confirmed with the provider.
#[utoipa::path(post, path = "/v1/refunds/{id}/outcome", tag = "ledger", request_body = crate::refunds::RefundOutcome,
    params(("id" = String, Path, description = "Refund id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 200, body = RefundView),
              (status = 404, body = ProblemDetails, content_type = "application/problem+json"),
              (status = 409, body = ProblemDetails, content_type = "application/problem+json"),
              (status = 422, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn refund_outcome(
    State(state): State<AppState>,
    caller: super::auth::Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<crate::refunds::RefundOutcome>,
) -> ApiResult<Json<RefundView>> {
    let who = caller.require(&[Role::Treasurer])?;
    let (refund, payment) = crate::refunds::record_outcome(&state, &id, &req, who).await?;
    Ok(Json(RefundView { refund, payment: PaymentView::new(&payment, None) }))
}
