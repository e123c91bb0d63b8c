//! Provider callback routes. Authenticated by the provider's own signature only; each answers
//! in its provider's protocol. Every callback is kept in the inbox: in the same transaction as the
//! change it causes, or on its own when it causes none; one whose effect cannot be written gets
//! the protocol's "retry" answer.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use crate::app::AppState;
use crate::callbacks::{self, Arrival, BankOutcome, Handled, ReceivedBody};
use crate::providers::RawCallback;
use crate::providers::protocol::event::VerifyError;
use crate::providers::protocol::vnpay::IpnReply;
use crate::providers::protocol::zalopay::CallbackReply;
use crate::store::payments::Applied;

/// Precheck, verify, apply and keep in the inbox: the provider-neutral part of every callback route.
async fn intake(state: &AppState, arrival: &Arrival<'_>, raw_query: &str) -> Handled {
    let record = callbacks::arrival_record(arrival);
    match callbacks::precheck(arrival) {
        Some(e) => {
            callbacks::keep(state, record, "rejected", "rejected", Some(e.to_string())).await.ok();
            Handled::Rejected(e)
        }
        None => {
            let body = arrival.body_bytes();
            callbacks::handle(state, arrival.provider, &RawCallback { query: raw_query, body }, record).await
        }
    }
}

/// VNPAY IPN (GET with a query string; POST form bodies are accepted too).
#[utoipa::path(get, path = "/callbacks/vnpay", tag = "callbacks",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "vnp_* fields (POST); GET carries them in the query"),
    responses((status = 200, description = "VNPAY's {RspCode, Message}")))]
pub async fn vnpay(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Json<IpnReply> {
    let query = query.unwrap_or_default();
    let body = ReceivedBody::receive(body).await;
    let params = match (&body, query.is_empty()) {
        // Not UTF-8: refused by the precheck before these are read.
        (Some(b), true) => String::from_utf8_lossy(b.bytes()).into_owned(),
        _ => query.clone(),
    };
    let arrival = Arrival {
        provider: "vnpay",
        method: method.as_str(),
        path: "/callbacks/vnpay",
        query: &query,
        headers: &headers,
        body: body.as_ref(),
        source_addr: peer.to_string(),
    };
    let reply = match intake(&state, &arrival, &params).await {
        Handled::Unavailable(_) => IpnReply::unknown_error(),
        Handled::Rejected(e) => IpnReply::for_verify_error(&e),
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
pub async fn momo(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = ReceivedBody::receive(body).await;
    let arrival = Arrival {
        provider: "momo",
        method: "POST",
        path: "/callbacks/momo",
        query: "",
        headers: &headers,
        body: body.as_ref(),
        source_addr: peer.to_string(),
    };
    match intake(&state, &arrival, "").await {
        Handled::Rejected(e) => rejected(e).into_response(),
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
pub async fn zalopay(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Json<CallbackReply> {
    let body = ReceivedBody::receive(body).await;
    let arrival = Arrival {
        provider: "zalopay",
        method: "POST",
        path: "/callbacks/zalopay",
        query: "",
        headers: &headers,
        body: body.as_ref(),
        source_addr: peer.to_string(),
    };
    let reply = match intake(&state, &arrival, "").await {
        Handled::Unavailable(_) => CallbackReply::retry("temporarily unavailable"),
        Handled::Rejected(e) => CallbackReply::for_verify_error(&e),
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
              (status = 400, description = "unusable notification (size, body, currency, amount)"),
              (status = 401, description = "signature missing or not valid"), (status = 404),
              (status = 422, description = "amount mismatch, or a credit not to the collection account")))]
pub async fn bank(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(bank): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = ReceivedBody::receive(body).await;
    let path = format!("/callbacks/bank/{bank}");
    let arrival = Arrival {
        provider: "bank",
        method: "POST",
        path: &path,
        query: "",
        headers: &headers,
        body: body.as_ref(),
        source_addr: peer.to_string(),
    };
    let record = callbacks::arrival_record(&arrival);
    let signature = headers.get("paygate-signature").and_then(|v| v.to_str().ok());
    let outcome = match callbacks::precheck(&arrival) {
        Some(e) => {
            callbacks::keep(&state, record, "rejected", "rejected", Some(e.to_string())).await.ok();
            BankOutcome::Rejected(e.to_string())
        }
        None => callbacks::handle_bank(&state, &bank, signature, arrival.body_bytes(), record).await,
    };
    match outcome {
        BankOutcome::UnknownBank => Problem::not_found(format!("No partner bank {bank:?}.")).into_response(),
        BankOutcome::Unauthenticated(why) => {
            Problem::new(StatusCode::UNAUTHORIZED, "callback-rejected", "Notification rejected", why).into_response()
        }
        BankOutcome::Rejected(why) => {
            Problem::bad_request("callback-rejected", "Notification rejected", why).into_response()
        }
        BankOutcome::NotCollectionAccount => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not-collection-account",
            "Not the collection account",
            "The credit is not to the collection account paygate's VietQR codes name; nothing was changed.",
        )
        .into_response(),
        BankOutcome::Unavailable(e) => Problem::from(e).into_response(),
        BankOutcome::Unmatched { .. } => {
            (StatusCode::ACCEPTED, Json(serde_json::json!({"status": "unmatched"}))).into_response()
        }
        BankOutcome::Applied(Some(Applied::AmountMismatch { .. })) => amount_mismatch().into_response(),
        BankOutcome::Applied(_) => Json(serde_json::json!({"status": "applied"})).into_response(),
    }
}

fn rejected(e: VerifyError) -> Problem {
    Problem::bad_request("callback-rejected", "Callback rejected", e.to_string())
}

fn amount_mismatch() -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "amount-mismatch",
        "Amount mismatch",
        "The amount does not equal the payment's amount; nothing was changed.",
    )
}
