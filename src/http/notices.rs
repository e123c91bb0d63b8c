//! Quotes and notices: issuer routes (`issuer` role) and the public notice lookup.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Caller;
use super::json::ApiJson;
use super::problem::{ApiResult, Problem, ProblemDetails};
use crate::app::AppState;
use crate::auth::Role;
use crate::clock::vn_date;
use crate::notices;
use crate::privacy::{mask_identifier, mask_name};
use crate::store::notices::{LineRecord, NoticeRecord, QuoteRecord};
use crate::store::now;

/// One itemised line with where its number comes from.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LineView {
    /// Obligation kind, e.g. `registration_fee`.
    pub kind: String,
    pub description: String,
    /// Assessment base, đồng.
    pub base: i64,
    /// Multiplier applied to the base (0.005 = 0.5%), exact decimal as a string.
    pub rate: String,
    /// Amount owed for this line, whole đồng.
    pub amount: i64,
    pub legal_basis: String,
    pub rule_id: String,
    pub rule_version: i64,
    /// Treasury budget code (chapter-sub-item).
    pub budget_code: String,
    /// The exemption or reduction applied, if any.
    #[schema(value_type = Option<Object>)]
    pub exemption: Option<Value>,
    /// The amount rests on a value marked UNCONFIRMED or SAMPLE in the rule tables.
    pub unconfirmed: bool,
}

impl From<&LineRecord> for LineView {
    fn from(l: &LineRecord) -> Self {
        LineView {
            kind: l.kind.clone(),
            description: l.description.clone(),
            base: l.base,
            rate: l.rate.clone(),
            amount: l.amount,
            legal_basis: l.legal_basis.clone(),
            rule_id: l.rule_id.clone(),
            rule_version: l.rule_version,
            budget_code: l.budget_code.clone(),
            exemption: l.exemption.as_deref().and_then(|e| serde_json::from_str(e).ok()),
            unconfirmed: l.unconfirmed,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QuoteView {
    pub quote_id: String,
    pub jurisdiction: String,
    pub valuation_date: NaiveDate,
    /// The amounts are locked until then; a notice can be issued from the quote until then.
    pub valid_until: DateTime<Utc>,
    pub lines: Vec<LineView>,
    /// Sum of the lines, whole đồng.
    pub total: i64,
    pub currency: &'static str,
    /// Some line rests on an UNCONFIRMED or SAMPLE value.
    pub unconfirmed: bool,
}

impl From<&QuoteRecord> for QuoteView {
    fn from(q: &QuoteRecord) -> Self {
        let lines: Vec<LineView> = q.line_records().iter().map(LineView::from).collect();
        QuoteView {
            quote_id: q.id.clone(),
            jurisdiction: q.jurisdiction.clone(),
            valuation_date: q.valuation_date,
            valid_until: q.valid_until,
            unconfirmed: lines.iter().any(|l| l.unconfirmed),
            lines,
            total: q.total,
            currency: "VND",
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PayerView {
    /// Family name and initials only.
    pub name: String,
    /// Masked: only the last characters are shown.
    pub identifier: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LateInterestView {
    /// Interest owed as of `as_of`, whole đồng.
    pub amount: i64,
    /// Days overdue: from the day after the due date to `as_of`, inclusive.
    pub days: i64,
    /// Total rate over those days (0.0003 per day).
    pub rate: String,
    /// Asia/Ho_Chi_Minh date the interest is computed for.
    pub as_of: NaiveDate,
    pub legal_basis: String,
    pub rule_id: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CancellationView {
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct NoticeView {
    pub code: String,
    /// `unpaid`, `paid` or `cancelled`.
    pub status: String,
    pub jurisdiction: String,
    pub payer: PayerView,
    pub dossier_ref: String,
    pub lines: Vec<LineView>,
    /// Sum of the lines, whole đồng.
    pub principal: i64,
    pub late_interest: LateInterestView,
    /// Principal plus late interest for an unpaid notice; 0 once paid or cancelled.
    pub total_due: i64,
    pub due_date: NaiveDate,
    pub issued_at: DateTime<Utc>,
    pub currency: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<CancellationView>,
}

fn notice_view(
    state: &AppState,
    n: &NoticeRecord,
    lines: &[LineRecord],
    as_of: NaiveDate,
) -> Result<NoticeView, Problem> {
    let interest = notices::late_interest(state, n, lines, as_of)?;
    let unpaid = n.status == "unpaid";
    let interest_amount = if unpaid { interest.amount.get() } else { 0 };
    let total_due = if unpaid {
        n.principal.checked_add(interest_amount).ok_or_else(|| Problem::internal(&"total due overflows"))?
    } else {
        0
    };
    Ok(NoticeView {
        code: n.code.clone(),
        status: n.status.clone(),
        jurisdiction: n.jurisdiction.clone(),
        payer: PayerView { name: mask_name(&n.payer_name), identifier: mask_identifier(&n.payer_identifier) },
        dossier_ref: n.dossier_ref.clone(),
        lines: lines.iter().map(LineView::from).collect(),
        principal: n.principal,
        late_interest: LateInterestView {
            amount: interest_amount,
            days: (as_of - n.due_date).num_days().max(0),
            rate: interest.rate.normalize().to_string(),
            as_of,
            legal_basis: interest.legal_basis,
            rule_id: interest.rule_id,
        },
        total_due,
        due_date: n.due_date,
        issued_at: n.issued_at,
        currency: "VND",
        cancellation: match (&n.cancel_reason, n.cancelled_at) {
            (Some(reason), Some(at)) => Some(CancellationView { reason: reason.clone(), at }),
            _ => None,
        },
    })
}

/// Calculate obligations without issuing a notice; the quote is stored and locked until `valid_until`.
#[utoipa::path(post, path = "/v1/quotes", tag = "issuer",
    request_body(content = Object, description = "jurisdiction, valuation_date, parcel, items", example = json!({
        "jurisdiction": "VN-57", "valuation_date": "2026-11-26",
        "parcel": {"area_m2": "120", "land_type": "ODT", "list_price_per_m2": 25000000},
        "items": [{"kind": "registration_fee", "contract_price": 2800000000u64},
                  {"kind": "personal_income_tax", "transfer_price": 2800000000u64}]})),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = QuoteView),
              (status = 422, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_quote(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<QuoteView>)> {
    let who = caller.require(&[Role::Issuer])?;
    let quote = notices::create_quote(&state, &body, who).await?;
    tracing::info!(quote_id = %quote.id, total = quote.total, "quote created");
    Ok((StatusCode::CREATED, Json(QuoteView::from(&quote))))
}

/// Issue a payment notice from a `quote_id`, or from calculation inputs given in the same body.
#[utoipa::path(post, path = "/v1/notices", tag = "issuer",
    request_body(content = Object, description = "quote_id (or the quote inputs), payer {name, identifier}, dossier_ref, due_date", example = json!({
        "quote_id": "q_0193…", "payer": {"name": "Nguyễn Văn An", "identifier": "079123456789"},
        "dossier_ref": "HS-2026-000123", "due_date": "2026-12-26"})),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = NoticeView),
              (status = 409, body = ProblemDetails, content_type = "application/problem+json"),
              (status = 422, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<NoticeView>)> {
    let who = caller.require(&[Role::Issuer])?;
    let (notice, lines) = notices::issue_notice(&state, &body, who).await?;
    tracing::info!(notice = %notice.code, principal = notice.principal, "notice issued");
    let view = notice_view(&state, &notice, &lines, vn_date(now()))?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct NoticeQuery {
    /// Compute late interest for this Asia/Ho_Chi_Minh date (today or later; default today).
    pub as_of: Option<String>,
}

/// A payment notice, with late interest to today (public: no authentication).
#[utoipa::path(get, path = "/v1/notices/{code}", tag = "public",
    params(("code" = String, Path, description = "Notice code, e.g. TB-2026-4Q7K9M"), NoticeQuery),
    responses((status = 200, body = NoticeView),
              (status = 400, body = ProblemDetails, content_type = "application/problem+json",
               description = "not a valid notice code (a typo)"),
              (status = 404, body = ProblemDetails, content_type = "application/problem+json",
               description = "no such notice")))]
pub async fn show(
    State(state): State<AppState>,
    Path(code): Path<String>,
    Query(query): Query<NoticeQuery>,
) -> ApiResult<Json<NoticeView>> {
    let code = notices::parse_code(&code)?;
    let today = vn_date(now());
    let as_of = match query.as_of.as_deref() {
        None => today,
        Some(s) => match s.parse::<NaiveDate>() {
            Ok(d) if d >= today => d,
            Ok(_) => return Err(Problem::validation("as_of", format!("must be today ({today}) or later"))),
            Err(_) => return Err(Problem::validation("as_of", "must be a date, YYYY-MM-DD")),
        },
    };
    let (notice, lines) =
        state.store.find_notice(code.as_str()).await?.ok_or_else(|| notices::notice_not_found(&code))?;
    Ok(Json(notice_view(&state, &notice, &lines, as_of)?))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CancelRequest {
    /// Why the notice is withdrawn; kept with the notice.
    pub reason: String,
}

/// Cancel an unpaid notice, with a reason.
#[utoipa::path(post, path = "/v1/notices/{code}/cancel", tag = "issuer", request_body = CancelRequest,
    params(("code" = String, Path, description = "Notice code"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 200, body = NoticeView),
              (status = 409, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    ApiJson(req): ApiJson<CancelRequest>,
) -> ApiResult<Json<NoticeView>> {
    let who = caller.require(&[Role::Issuer])?;
    let code = notices::parse_code(&code)?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(Problem::validation("reason", "must be 1 to 500 characters"));
    }
    let notice = notices::cancel_notice(&state, &code, reason, who).await?;
    tracing::info!(notice = %notice.code, by = %who.name, "notice cancelled");
    let (notice, lines) =
        state.store.find_notice(&notice.code).await?.ok_or_else(|| notices::notice_not_found(&code))?;
    Ok(Json(notice_view(&state, &notice, &lines, vn_date(now()))?))
}
