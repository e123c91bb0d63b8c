//! MoMo simulator (one-time payment, API v2).
//!
//! - `POST /momo/v2/gateway/api/create` (JSON [`momo::CreateRequestBody`]): checks `partnerCode` and
//!   the signature (recomputed with [`momo::create_signature_string`]; either wrong → `resultCode` 13
//!   "Merchant authentication failed"), then `orderId` pattern (20), amount range for
//!   `captureWallet` (22) or > 0 (21), non-empty `requestId`/`redirectUrl`/`ipnUrl`/`orderInfo` (20), a
//!   reused `requestId` for another order (40), a reused `orderId` (41; the *same* request replayed
//!   answers the original response again). Answers `resultCode` 0 with
//!   `payUrl = <absolute base>/pay/<orderId>`, the base derived from the `Host` header.
//! - `GET /momo/pay/{orderId}`: wallet page (Approve / Decline + fault).
//! - `POST /momo/pay/{orderId}/decide` (form `action`, `fault`): settles the order, POSTs the IPN
//!   ([`momo::IpnMessage`], signed with [`momo::sign_ipn`]) to the create request's `ipnUrl`
//!   (expects HTTP 204), then 303 to `redirectUrl?<the IPN fields as query params, same signature>`.
//!   Approve → `resultCode` 0 "Thành công.", decline → 1006 "Giao dịch bị từ chối bởi người dùng.".
//!   `payType` is `qr` (captureWallet), `napas` (payWithATM) or `credit` (payWithCC); `orderType` is
//!   `momo_wallet`. Faults: `reorder` sends, after the true IPN, a stale `resultCode` 1000 (initiated,
//!   waiting for the user) with a `responseTime` one minute earlier.
//! - `POST /momo/v2/gateway/api/query` (JSON `partnerCode, requestId, orderId, lang, signature`,
//!   signature as [`momo::query_request`] makes it): unknown order → 42; otherwise the order's state:
//!   `resultCode` 0 paid, 1006 declined, 1000 pending; with `transId`, `payType`, `amount`, and
//!   `refundTrans` (the refunds made).
//! - `POST /momo/v2/gateway/api/refund` (JSON [`momo::RefundRequestBody`], signature as
//!   [`momo::refund_request`] makes it): `transId` of a payment of ours (42 if unknown), paid (1080
//!   otherwise), amount ≤ paid − refunded (1081 otherwise), refund `orderId` and `requestId` unused
//!   (41 / 40). Success → `resultCode` 0 with the refund's own `transId`.
//!
//! Errors use MoMo's shape `{partnerCode, requestId, orderId, amount?, responseTime, message,
//! resultCode}`; HTTP 400 when the body is not the expected JSON, otherwise HTTP 200. No signature
//! on API answers (providers.md documents none). Orders do not expire in the sandbox.
//!
//! Invariants: every request signature is checked (constant time) before other fields are acted on;
//! an order is settled at most once; refunds never exceed the paid amount minus earlier refunds.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::callbacks::{self, Expect, Meta, Outgoing, Variant};
use super::faults::{self, Target};
use super::pages::{error_page, esc, layout, vnd};
use super::settlement::{Book, LedgerEntry};
use super::{AppState, Base, Status, append_query, form_pairs, now, pair, see_other, tamper_hex};
use crate::providers::protocol::momo;
use crate::providers::protocol::signature::{hmac_sha256, mac_matches_hex};

const BRAND: &str = "MoMo";

/// A refund made against a MoMo payment.
#[derive(Debug, Clone)]
pub(crate) struct Refund {
    pub(crate) order_id: String,
    pub(crate) amount: i64,
    pub(crate) trans_id: i64,
    pub(crate) at: DateTime<Utc>,
}

/// A MoMo order as the sandbox knows it.
#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) order_id: String,
    pub(crate) request_id: String,
    pub(crate) amount: i64,
    pub(crate) order_info: String,
    pub(crate) redirect_url: String,
    pub(crate) ipn_url: String,
    pub(crate) request_type: momo::RequestType,
    pub(crate) extra_data: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) status: Status,
    pub(crate) result_code: i64,
    pub(crate) message: String,
    pub(crate) trans_id: Option<i64>,
    pub(crate) response_time: Option<DateTime<Utc>>,
    pub(crate) refunds: Vec<Refund>,
    /// The create answer, replayed for an identical retry.
    pub(crate) create_answer: Value,
}

fn pay_type(t: momo::RequestType) -> &'static str {
    match t {
        momo::RequestType::CaptureWallet => "qr",
        momo::RequestType::PayWithAtm => "napas",
        momo::RequestType::PayWithCc => "credit",
    }
}

fn error(status: StatusCode, partner: &str, request_id: &str, order_id: &str, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({
            "partnerCode": partner,
            "requestId": request_id,
            "orderId": order_id,
            "responseTime": now().timestamp_millis(),
            "message": message,
            "resultCode": code,
        })),
    )
        .into_response()
}

/// Does `provided` equal the hex HMAC our builder computes (`expected_hex`)? Constant time.
fn same_signature(expected_hex: &str, provided: &str) -> bool {
    match hex::decode(expected_hex) {
        Ok(expected) => !provided.is_empty() && mac_matches_hex(&expected, provided),
        Err(_) => false,
    }
}

/// `POST /momo/v2/gateway/api/create`
pub(crate) async fn create(State(app): State<AppState>, base: Base, body: Bytes) -> Response {
    let creds = &app.config.momo;
    let req: momo::CreateRequestBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &creds.partner_code,
                "",
                "",
                20,
                &format!("Bad format request: {e}"),
            );
        }
    };
    let fail =
        |code: i64, msg: &str| error(StatusCode::OK, &req.partner_code, &req.request_id, &req.order_id, code, msg);
    let sign_input = momo::CreateRequest {
        request_id: req.request_id.clone(),
        order_id: req.order_id.clone(),
        amount: req.amount,
        order_info: req.order_info.clone(),
        redirect_url: req.redirect_url.clone(),
        ipn_url: req.ipn_url.clone(),
        request_type: req.request_type,
        extra_data: req.extra_data.clone(),
        lang: req.lang,
    };
    let expected = hmac_sha256(
        creds.secret_key.expose_secret().as_bytes(),
        momo::create_signature_string(creds, &sign_input).as_bytes(),
    );
    if req.partner_code != creds.partner_code || !mac_matches_hex(&expected, &req.signature) {
        return fail(13, "Merchant authentication failed: invalid partnerCode or signature");
    }
    if !momo::is_valid_order_id(&req.order_id) {
        return fail(20, "Bad format request: orderId");
    }
    if req.amount <= 0 {
        return fail(21, "Invalid amount");
    }
    if req.request_type == momo::RequestType::CaptureWallet
        && !(momo::CAPTURE_WALLET_MIN_VND..=momo::CAPTURE_WALLET_MAX_VND).contains(&req.amount)
    {
        return fail(22, "Amount out of range for captureWallet (1,000–50,000,000 VND)");
    }
    for (name, v) in [
        ("requestId", &req.request_id),
        ("orderInfo", &req.order_info),
        ("redirectUrl", &req.redirect_url),
        ("ipnUrl", &req.ipn_url),
    ] {
        if v.is_empty() {
            return fail(20, &format!("Bad format request: {name} is required"));
        }
    }
    for (name, url) in [("ipnUrl", &req.ipn_url), ("redirectUrl", &req.redirect_url)] {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return fail(20, &format!("Bad format request: {name} must be an absolute http(s) URL"));
        }
    }
    let order_path: String = form_urlencoded::byte_serialize(req.order_id.as_bytes()).collect();
    let pay_url = base.url(&format!("/momo/pay/{order_path}"));
    let t = now();
    let mut st = app.state();
    if let Some(existing) = st.momo.get(&req.order_id) {
        if existing.request_id == req.request_id && existing.amount == req.amount {
            return Json(existing.create_answer.clone()).into_response();
        }
        drop(st);
        return fail(41, "Duplicate orderId");
    }
    if st.momo_request_ids.contains_key(&req.request_id) || st.momo_refund_order_ids.contains(&req.order_id) {
        drop(st);
        return fail(40, "Duplicate requestId");
    }
    let answer = json!({
        "partnerCode": req.partner_code,
        "orderId": req.order_id,
        "requestId": req.request_id,
        "amount": req.amount,
        "responseTime": t.timestamp_millis(),
        "message": "Thành công.",
        "resultCode": 0,
        "payUrl": pay_url,
        "deeplink": format!("momo://app?action=payWithApp&orderId={order_path}"),
        "qrCodeUrl": pay_url,
    });
    st.momo_request_ids.insert(req.request_id.clone(), req.order_id.clone());
    st.momo.insert(
        req.order_id.clone(),
        Order {
            order_id: req.order_id.clone(),
            request_id: req.request_id.clone(),
            amount: req.amount,
            order_info: req.order_info.clone(),
            redirect_url: req.redirect_url.clone(),
            ipn_url: req.ipn_url.clone(),
            request_type: req.request_type,
            extra_data: req.extra_data.clone(),
            created_at: t,
            status: Status::Pending,
            result_code: 1000,
            message: "Giao dịch đã được khởi tạo, chờ người dùng xác nhận.".into(),
            trans_id: None,
            response_time: None,
            refunds: vec![],
            create_answer: answer.clone(),
        },
    );
    Json(answer).into_response()
}

/// `GET /momo/pay/{orderId}`
pub(crate) async fn pay_page(State(app): State<AppState>, base: Base, Path(order_id): Path<String>) -> Response {
    let Some(o) = app.state().momo.get(&order_id).cloned() else {
        return error_page(StatusCode::NOT_FOUND, BRAND, "Không tìm thấy đơn hàng", "Unknown orderId");
    };
    let enc: String = form_urlencoded::byte_serialize(o.order_id.as_bytes()).collect();
    let actions = if o.status == Status::Pending {
        format!(
            "<form method=\"post\" action=\"{action}\">{select}\
             <button type=\"submit\" name=\"action\" value=\"approve\">Xác nhận thanh toán (Approve)</button>\
             <button type=\"submit\" name=\"action\" value=\"decline\">Từ chối (Decline)</button></form>",
            action = esc(&base.path(&format!("/momo/pay/{enc}/decide"))),
            select = faults::select_html(&app, Target::Momo),
        )
    } else {
        format!("<p>Đơn hàng đã được xử lý: {}</p>", esc(o.status.label()))
    };
    let body = format!(
        "<table><tr><th>Đối tác</th><td>{partner}</td></tr>\
         <tr><th>Mã đơn hàng</th><td>{order}</td></tr>\
         <tr><th>Nội dung</th><td>{info}</td></tr>\
         <tr><th>Số tiền</th><td class=\"amount\">{amt}</td></tr>\
         <tr><th>Hình thức</th><td>{kind}</td></tr></table>{actions}",
        partner = esc(&app.config.momo.partner_code),
        order = esc(&o.order_id),
        info = esc(&o.order_info),
        amt = esc(&vnd(o.amount)),
        kind = esc(o.request_type.as_str()),
    );
    Html(layout("Ví MoMo — thanh toán", BRAND, &body)).into_response()
}

fn ipn_of(
    app: &AppState,
    o: &Order,
    result_code: i64,
    message: &str,
    at: DateTime<Utc>,
    amount: i64,
) -> momo::IpnMessage {
    let mut ipn = momo::IpnMessage {
        partner_code: app.config.momo.partner_code.clone(),
        order_id: o.order_id.clone(),
        request_id: o.request_id.clone(),
        amount,
        order_info: o.order_info.clone(),
        order_type: "momo_wallet".into(),
        trans_id: o.trans_id.unwrap_or(0),
        result_code,
        message: message.to_owned(),
        pay_type: pay_type(o.request_type).into(),
        response_time: at.timestamp_millis(),
        extra_data: o.extra_data.clone(),
        signature: String::new(),
    };
    momo::sign_ipn(&app.config.momo, &mut ipn);
    ipn
}

fn post_json(url: &str, ipn: &momo::IpnMessage) -> Option<Outgoing> {
    let bytes = serde_json::to_vec(ipn).ok()?;
    Some(Outgoing {
        method: Method::POST,
        url: url.to_owned(),
        body: Some(("application/json", bytes)),
        headers: vec![],
    })
}

/// The redirect query: the IPN's fields, in MoMo's order, same signature.
fn redirect_query(ipn: &momo::IpnMessage) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("partnerCode", &ipn.partner_code)
        .append_pair("orderId", &ipn.order_id)
        .append_pair("requestId", &ipn.request_id)
        .append_pair("amount", &ipn.amount.to_string())
        .append_pair("orderInfo", &ipn.order_info)
        .append_pair("orderType", &ipn.order_type)
        .append_pair("transId", &ipn.trans_id.to_string())
        .append_pair("resultCode", &ipn.result_code.to_string())
        .append_pair("message", &ipn.message)
        .append_pair("payType", &ipn.pay_type)
        .append_pair("responseTime", &ipn.response_time.to_string())
        .append_pair("extraData", &ipn.extra_data)
        .append_pair("signature", &ipn.signature)
        .finish()
}

/// `POST /momo/pay/{orderId}/decide`
pub(crate) async fn decide(State(app): State<AppState>, Path(order_id): Path<String>, body: Bytes) -> Response {
    let form = form_pairs(&body);
    let approve = match pair(&form, "action") {
        Some("approve") => true,
        Some("decline") => false,
        _ => {
            return error_page(
                StatusCode::BAD_REQUEST,
                BRAND,
                "Yêu cầu không hợp lệ",
                "action must be approve or decline",
            );
        }
    };
    let fault = match faults::effective(&app, Target::Momo, pair(&form, "fault")) {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, BRAND, "Yêu cầu không hợp lệ", &e),
    };
    let t = now();
    let order = {
        let mut st = app.state();
        let seq = app.next_seq();
        let Some(o) = st.momo.get_mut(&order_id) else {
            return error_page(StatusCode::NOT_FOUND, BRAND, "Không tìm thấy đơn hàng", "Unknown orderId");
        };
        if o.status != Status::Pending {
            return error_page(StatusCode::CONFLICT, BRAND, "Đơn hàng đã được xử lý", "This order is already settled");
        }
        let trans_id = 4_100_000_000 + i64::try_from(seq).unwrap_or(0);
        o.trans_id = Some(trans_id);
        o.response_time = Some(t);
        if approve {
            o.status = Status::Succeeded;
            o.result_code = 0;
            o.message = "Thành công.".into();
        } else {
            o.status = Status::Failed;
            o.result_code = 1006;
            o.message = "Giao dịch bị từ chối bởi người dùng.".into();
        }
        let o = o.clone();
        if approve {
            st.ledger.push(LedgerEntry {
                book: Book::Momo,
                refund: false,
                type_code: String::new(),
                txn_id: trans_id.to_string(),
                merchant_ref: o.order_id.clone(),
                request_ref: o.request_id.clone(),
                original_txn_id: String::new(),
                original_ref: String::new(),
                amount: o.amount,
                at: t,
                detail: pay_type(o.request_type).into(),
            });
        }
        o
    };
    let ipn = ipn_of(&app, &order, order.result_code, &order.message, t, order.amount);
    let build = |v: Variant| match v {
        Variant::Normal => post_json(&order.ipn_url, &ipn),
        Variant::WrongAmount => post_json(
            &order.ipn_url,
            &ipn_of(&app, &order, order.result_code, &order.message, t, order.amount.checked_add(1)?),
        ),
        Variant::BadSignature => {
            let mut bad = ipn.clone();
            bad.signature = tamper_hex(&bad.signature);
            post_json(&order.ipn_url, &bad)
        }
        Variant::Stale => {
            let stale = ipn_of(
                &app,
                &order,
                1000,
                "Giao dịch đã được khởi tạo, chờ người dùng xác nhận.",
                t - chrono::Duration::minutes(1),
                order.amount,
            );
            post_json(&order.ipn_url, &stale)
        }
    };
    let meta = Meta { provider: "momo".into(), merchant_ref: order.order_id.clone(), expect: Expect::NoContent };
    callbacks::dispatch(&app, meta, fault, build).await;
    see_other(&append_query(&order.redirect_url, &redirect_query(&ipn)), BRAND)
}

fn lang_of(v: &Value) -> momo::Lang {
    match v.get("lang").and_then(Value::as_str) {
        Some("en") => momo::Lang::En,
        _ => momo::Lang::Vi,
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `POST /momo/v2/gateway/api/query`
pub(crate) async fn query(State(app): State<AppState>, body: Bytes) -> Response {
    let creds = &app.config.momo;
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, &creds.partner_code, "", "", 20, "Bad format request");
    };
    let (partner, request_id, order_id) = (str_of(&v, "partnerCode"), str_of(&v, "requestId"), str_of(&v, "orderId"));
    let fail = |code: i64, msg: &str| error(StatusCode::OK, partner, request_id, order_id, code, msg);
    let expected = match momo::query_request(creds, request_id, order_id, lang_of(&v)) {
        Ok(b) => b.signature,
        Err(e) => return fail(20, &format!("Bad format request: {e}")),
    };
    if partner != creds.partner_code || !same_signature(&expected, str_of(&v, "signature")) {
        return fail(13, "Merchant authentication failed: invalid partnerCode or signature");
    }
    let Some(o) = app.state().momo.get(order_id).cloned() else {
        return fail(42, "Invalid orderId or orderId is not found");
    };
    let refund_trans: Vec<Value> = o
        .refunds
        .iter()
        .map(|r| {
            json!({
                "orderId": r.order_id, "amount": r.amount, "resultCode": 0,
                "transId": r.trans_id, "createdTime": r.at.timestamp_millis(),
            })
        })
        .collect();
    let t = now();
    Json(json!({
        "partnerCode": creds.partner_code,
        "orderId": o.order_id,
        "requestId": request_id,
        "extraData": o.extra_data,
        "amount": o.amount,
        "transId": o.trans_id.unwrap_or(0),
        "payType": if o.trans_id.is_some() { pay_type(o.request_type) } else { "" },
        "resultCode": o.result_code,
        "refundTrans": refund_trans,
        "message": o.message,
        "responseTime": t.timestamp_millis(),
        "lastUpdated": o.response_time.unwrap_or(o.created_at).timestamp_millis(),
    }))
    .into_response()
}

/// `POST /momo/v2/gateway/api/refund`
pub(crate) async fn refund(State(app): State<AppState>, body: Bytes) -> Response {
    let creds = &app.config.momo;
    let req: momo::RefundRequestBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &creds.partner_code,
                "",
                "",
                20,
                &format!("Bad format request: {e}"),
            );
        }
    };
    let fail =
        |code: i64, msg: &str| error(StatusCode::OK, &req.partner_code, &req.request_id, &req.order_id, code, msg);
    let sign_input = momo::RefundRequest {
        request_id: req.request_id.clone(),
        order_id: req.order_id.clone(),
        amount: req.amount,
        trans_id: req.trans_id,
        description: req.description.clone(),
        lang: req.lang,
    };
    let expected = match momo::refund_request(creds, &sign_input) {
        Ok(b) => b.signature,
        Err(e) => return fail(20, &format!("Bad format request: {e}")),
    };
    if req.partner_code != creds.partner_code || !same_signature(&expected, &req.signature) {
        return fail(13, "Merchant authentication failed: invalid partnerCode or signature");
    }
    let t = now();
    let mut st = app.state();
    if st.momo_request_ids.contains_key(&req.request_id) {
        drop(st);
        return fail(40, "Duplicate requestId");
    }
    if st.momo.contains_key(&req.order_id) || st.momo_refund_order_ids.contains(&req.order_id) {
        drop(st);
        return fail(41, "Duplicate orderId");
    }
    let seq = app.next_seq();
    let Some(o) = st.momo.values_mut().find(|o| o.trans_id == Some(req.trans_id)) else {
        drop(st);
        return fail(42, "Invalid transId or transId is not found");
    };
    if o.status != Status::Succeeded {
        drop(st);
        return fail(1080, "Refund failed: the original transaction was not successful");
    }
    let refunded: i64 = o.refunds.iter().map(|r| r.amount).sum();
    if req.amount > o.amount - refunded {
        drop(st);
        return fail(1081, "Refund rejected: amount exceeds the refundable amount");
    }
    let refund_trans_id = 4_100_000_000 + i64::try_from(seq).unwrap_or(0);
    o.refunds.push(Refund { order_id: req.order_id.clone(), amount: req.amount, trans_id: refund_trans_id, at: t });
    let original_order = o.order_id.clone();
    st.momo_refund_order_ids.insert(req.order_id.clone());
    st.momo_request_ids.insert(req.request_id.clone(), req.order_id.clone());
    st.ledger.push(LedgerEntry {
        book: Book::Momo,
        refund: true,
        type_code: String::new(),
        txn_id: refund_trans_id.to_string(),
        merchant_ref: req.order_id.clone(),
        request_ref: req.request_id.clone(),
        original_txn_id: req.trans_id.to_string(),
        original_ref: original_order,
        amount: req.amount,
        at: t,
        detail: String::new(),
    });
    drop(st);
    Json(json!({
        "partnerCode": req.partner_code,
        "orderId": req.order_id,
        "requestId": req.request_id,
        "amount": req.amount,
        "transId": refund_trans_id,
        "resultCode": 0,
        "message": "Thành công.",
        "responseTime": t.timestamp_millis(),
    }))
    .into_response()
}
