//! Provider callback routes. Authenticated by the provider's own signature only; each answers
//! in its provider's protocol.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use crate::app::AppState;
use crate::callbacks::{self, BankOutcome, Handled};
use crate::providers::RawCallback;
use crate::providers::protocol::vnpay::IpnReply;
use crate::providers::protocol::zalopay::CallbackReply;
use crate::store::payments::Applied;

/// VNPAY IPN (GET with a query string; POST form bodies are accepted too).
#[utoipa::path(get, path = "/callbacks/vnpay", tag = "callbacks",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "vnp_* fields (POST); GET carries them in the query"),
    responses((status = 200, description = "VNPAY's {RspCode, Message}")))]
pub async fn vnpay(State(state): State<AppState>, RawQuery(query): RawQuery, body: Bytes) -> Json<IpnReply> {
    let query = query.unwrap_or_default();
    let params = if query.is_empty() { String::from_utf8_lossy(&body).into_owned() } else { query };
    let raw = RawCallback { query: &params, body: &[] };
    let reply = match callbacks::handle(&state, "vnpay", &raw).await {
        Handled::Rejected(e) => IpnReply::for_verify_error(&e),
        Handled::Unavailable(_) => IpnReply::unknown_error(),
        Handled::Applied(_, applied) => match applied {
            None | Some(Applied::Moved { .. }) => IpnReply::confirm_success(),
            Some(Applied::NotFound) => IpnReply::order_not_found(),
            Some(Applied::AmountMismatch { .. }) => IpnReply::invalid_amount(),
            Some(Applied::Duplicate(_) | Applied::Stale(_) | Applied::LateSuccess(_)) => {
                IpnReply::order_already_confirmed()
            }
        },
    };
    Json(reply)
}

/// MoMo IPN: 204 when taken (including duplicates), a problem otherwise.
#[utoipa::path(post, path = "/callbacks/momo", tag = "callbacks",
    request_body(content = Object, description = "MoMo IPN JSON"), responses((status = 204)))]
pub async fn momo(State(state): State<AppState>, body: Bytes) -> Response {
    let raw = RawCallback { query: "", body: &body };
    match callbacks::handle(&state, "momo", &raw).await {
        Handled::Rejected(e) => {
            Problem::bad_request("callback-rejected", "Callback rejected", e.to_string()).into_response()
        }
        Handled::Unavailable(e) => Problem::from(e).into_response(),
        Handled::Applied(_, Some(Applied::NotFound)) => {
            Problem::not_found("No payment with this orderId.").into_response()
        }
        Handled::Applied(_, Some(Applied::AmountMismatch { .. })) => amount_mismatch().into_response(),
        Handled::Applied(..) => StatusCode::NO_CONTENT.into_response(),
    }
}

/// ZaloPay callback: `{return_code, return_message}`.
#[utoipa::path(post, path = "/callbacks/zalopay", tag = "callbacks",
    request_body(content = Object, description = "{data, mac, type}"), responses((status = 200)))]
pub async fn zalopay(State(state): State<AppState>, body: Bytes) -> Json<CallbackReply> {
    let raw = RawCallback { query: "", body: &body };
    let reply = match callbacks::handle(&state, "zalopay", &raw).await {
        Handled::Rejected(e) => CallbackReply::for_verify_error(&e),
        Handled::Unavailable(_) => CallbackReply::retry("temporarily unavailable"),
        Handled::Applied(_, Some(Applied::NotFound)) => {
            CallbackReply { return_code: -1, return_message: "order not found".into() }
        }
        Handled::Applied(_, Some(Applied::AmountMismatch { .. })) => {
            CallbackReply { return_code: -1, return_message: "amount mismatch".into() }
        }
        Handled::Applied(..) => CallbackReply::success(),
    };
    Json(reply)
}

/// Partner-bank credit notification, signed with `Paygate-Signature`.
#[utoipa::path(post, path = "/callbacks/bank/{bank}", tag = "callbacks",
    request_body(content = Object, description = "credit notification JSON; header Paygate-Signature"),
    params(("bank" = String, Path, description = "Partner bank name")),
    responses((status = 200), (status = 202, description = "kept as an unmatched credit"),
              (status = 401), (status = 404)))]
pub async fn bank(
    State(state): State<AppState>,
    Path(bank): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signature = headers.get("paygate-signature").and_then(|v| v.to_str().ok());
    match callbacks::handle_bank(&state, &bank, signature, &body).await {
        BankOutcome::UnknownBank => Problem::not_found(format!("No partner bank {bank:?}.")).into_response(),
        BankOutcome::Rejected(why) => {
            Problem::new(StatusCode::UNAUTHORIZED, "callback-rejected", "Notification rejected", why).into_response()
        }
        BankOutcome::Unavailable(e) => Problem::from(e).into_response(),
        BankOutcome::Unmatched { .. } => {
            (StatusCode::ACCEPTED, Json(serde_json::json!({"status": "unmatched"}))).into_response()
        }
        BankOutcome::Applied(Some(Applied::AmountMismatch { .. })) => amount_mismatch().into_response(),
        BankOutcome::Applied(_) => Json(serde_json::json!({"status": "applied"})).into_response(),
    }
}

fn amount_mismatch() -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "amount-mismatch",
        "Amount mismatch",
        "The amount does not equal the payment's amount; nothing was changed.",
    )
}
