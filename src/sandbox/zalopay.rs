//! ZaloPay simulator (API v2). Requests may be `application/x-www-form-urlencoded` (as ZaloPay's
//! samples send them) or JSON (as [`zalopay::CreateRequestBody`] serialises); numbers may be JSON
//! numbers or decimal strings.
//!
//! - `POST /zalopay/v2/create`: checks the fields (`return_code` 2, `sub_return_code` -401 when one is
//!   missing or malformed, or `app_id` is not ours), then
//!   `mac = HMAC-SHA256(key1, app_id|app_trans_id|app_user|amount|app_time|embed_data|item)` via
//!   [`zalopay::create_mac_data`] (-402 when wrong), then a reused `app_trans_id` (-68, except an
//!   identical retry, which gets the original answer). Answers `{return_code: 1, order_url:
//!   <absolute base>/pay/<app_trans_id>, zp_trans_token, order_token}`, the base derived from `Host`.
//!   Orders expire after `expire_duration_seconds` (default 900).
//! - `GET /zalopay/pay/{app_trans_id}`, `POST /zalopay/pay/{app_trans_id}/decide` (form `action`,
//!   `fault`): on approve the callback `{data, mac, type: 1}` ([`zalopay::sign_callback`],
//!   `mac = HMAC-SHA256(key2, data)`) is POSTed as JSON to the create request's `callback_url`
//!   (none when the create request had none) and `{return_code: 1}` is expected; on decline there is
//!   **no callback**, as with ZaloPay. Then 303 to `embed_data.redirecturl` when present, with
//!   ZaloPay's redirect query `amount, appid, apptransid, bankcode, checksum, discountamount, pmcid,
//!   status` where `checksum = HMAC-SHA256(key2, appid|apptransid|pmcid|bankcode|amount|discountamount|status)`
//!   and `status` is `1` (paid) or `-49` (declined; a sandbox choice); otherwise a result page.
//!   Fault `reorder`: a ZaloPay callback can only say "paid", so the stale message is a second,
//!   correctly signed callback for the same transaction with a `server_time` one minute earlier.
//! - `POST /zalopay/v2/query` (`app_id, app_trans_id, mac`; `mac = HMAC-SHA256(key1,
//!   app_id|app_trans_id|key1)` as [`zalopay::query_request`] makes it): `return_code` 1 paid
//!   (`amount`, `zp_trans_id`, `server_time`), 2 failed (declined, expired unpaid, unknown order
//!   (`sub_return_code` -101) or bad mac (-402)), 3 processing (`is_processing: true`).
//! - `POST /zalopay/v2/refund` (`app_id, m_refund_id, zp_trans_id, amount, timestamp, description,
//!   mac`; `mac = HMAC-SHA256(key1, app_id|zp_trans_id|amount|description|timestamp)`, ZaloPay's
//!   documented form; `m_refund_id` = `yymmdd_<app_id>_<ref>`): -401/-402 as above, -68 reused
//!   `m_refund_id`, -101 unknown or unpaid payment or amount above paid − refunded. Success is final at
//!   once in the sandbox: `{return_code: 1, refund_id}` (real ZaloPay may answer 3 and need a refund
//!   status query, which the sandbox does not simulate).
//!
//! The sub-return codes other than 1 are sandbox choices modelled on ZaloPay's (UNCONFIRMED).
//! Invariants: every MAC is checked in constant time before the request is acted on; an order is
//! settled at most once; refunds never exceed the paid amount minus earlier refunds.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::callbacks::{self, Expect, Meta, Outgoing, Variant};
use super::faults::{self, Target};
use super::pages::{error_page, esc, layout, vnd};
use super::settlement::{Book, LedgerEntry};
use super::{AppState, Base, Status, append_query, form_pairs, now, pair, random_id, see_other, tamper_hex};
use crate::providers::protocol::signature::{hmac_sha256, hmac_sha256_hex, mac_matches_hex};
use crate::providers::protocol::zalopay;

const BRAND: &str = "ZaloPay";
const DEFAULT_EXPIRE_SECS: i64 = 900;
/// `pmcid` (payment channel) reported in callbacks and redirects: 38 = ZaloPay wallet.
const CHANNEL: i64 = 38;

/// A refund made against a ZaloPay payment.
#[derive(Debug, Clone)]
pub(crate) struct Refund {
    pub(crate) amount: i64,
}

/// A ZaloPay order as the sandbox knows it.
#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) app_trans_id: String,
    pub(crate) app_user: String,
    pub(crate) app_time: i64,
    pub(crate) amount: i64,
    pub(crate) item: String,
    pub(crate) embed_data: String,
    pub(crate) description: String,
    pub(crate) bank_code: String,
    pub(crate) callback_url: Option<String>,
    pub(crate) redirect_url: Option<String>,
    pub(crate) mac: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) status: Status,
    pub(crate) zp_trans_id: Option<i64>,
    pub(crate) server_time: Option<DateTime<Utc>>,
    pub(crate) refunds: Vec<Refund>,
    pub(crate) create_answer: Value,
}

/// Request fields as text, from a form or a JSON object (numbers in decimal).
fn fields(headers: &HeaderMap, body: &[u8]) -> Option<BTreeMap<String, String>> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        let v: Value = serde_json::from_slice(body).ok()?;
        let mut out = BTreeMap::new();
        for (k, v) in v.as_object()? {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Null => continue,
                _ => return None,
            };
            out.insert(k.clone(), s);
        }
        Some(out)
    } else {
        Some(form_pairs(body).into_iter().collect())
    }
}

fn int(f: &BTreeMap<String, String>, key: &str) -> Option<i64> {
    let s = f.get(key)?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn fail(sub: i64, message: &str) -> Response {
    Json(json!({
        "return_code": 2,
        "return_message": "Giao dịch thất bại",
        "sub_return_code": sub,
        "sub_return_message": message,
    }))
    .into_response()
}

fn mac_ok(key: &secrecy::SecretString, data: &str, provided: &str) -> bool {
    !provided.is_empty() && mac_matches_hex(&hmac_sha256(key.expose_secret().as_bytes(), data.as_bytes()), provided)
}

/// `POST /zalopay/v2/create`
pub(crate) async fn create(State(app): State<AppState>, base: Base, headers: HeaderMap, body: Bytes) -> Response {
    let creds = &app.config.zalopay;
    let Some(f) = fields(&headers, &body) else { return fail(-401, "Dữ liệu yêu cầu không hợp lệ: body") };
    let (Some(app_id), Some(app_time), Some(amount)) = (int(&f, "app_id"), int(&f, "app_time"), int(&f, "amount"))
    else {
        return fail(-401, "Dữ liệu yêu cầu không hợp lệ: app_id, app_time and amount must be integers");
    };
    if app_id != creds.app_id {
        return fail(-401, "Dữ liệu yêu cầu không hợp lệ: unknown app_id");
    }
    let text = |k: &str| f.get(k).cloned().unwrap_or_default();
    let expire = match f.get("expire_duration_seconds") {
        None => None,
        Some(_) => match int(&f, "expire_duration_seconds") {
            Some(d) if zalopay::EXPIRE_DURATION_RANGE.contains(&d) => Some(d),
            _ => return fail(-401, "Dữ liệu yêu cầu không hợp lệ: expire_duration_seconds"),
        },
    };
    let req = zalopay::CreateRequest {
        app_user: text("app_user"),
        app_trans_id: text("app_trans_id"),
        app_time_ms: app_time,
        expire_duration_seconds: expire,
        amount,
        item: text("item"),
        embed_data: text("embed_data"),
        description: text("description"),
        bank_code: text("bank_code"),
        callback_url: f.get("callback_url").filter(|u| !u.is_empty()).cloned(),
    };
    let mac = text("mac");
    if !mac_ok(&creds.key1, &zalopay::create_mac_data(app_id, &req), &mac) {
        return fail(-402, "Chữ ký không hợp lệ (mac)");
    }
    if zalopay::split_app_trans_id(&req.app_trans_id).is_none()
        || req.app_trans_id.len() > zalopay::APP_TRANS_ID_MAX_LEN
    {
        return fail(-401, "Dữ liệu yêu cầu không hợp lệ: app_trans_id must be yymmdd_<ref>");
    }
    if req.app_user.is_empty() || amount <= 0 || app_time <= 0 {
        return fail(-401, "Dữ liệu yêu cầu không hợp lệ: app_user, amount, app_time");
    }
    if !serde_json::from_str::<Value>(&req.item).is_ok_and(|v| v.is_array()) {
        return fail(-401, "Dữ liệu yêu cầu không hợp lệ: item must be a JSON array string");
    }
    let Some(embed) = serde_json::from_str::<Value>(&req.embed_data).ok().filter(Value::is_object) else {
        return fail(-401, "Dữ liệu yêu cầu không hợp lệ: embed_data must be a JSON object string");
    };
    if req.callback_url.as_deref().is_some_and(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
        return fail(-401, "Dữ liệu yêu cầu không hợp lệ: callback_url");
    }
    let redirect_url = embed
        .get("redirecturl")
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .map(str::to_owned);
    let t = now();
    let mut st = app.state();
    if let Some(existing) = st.zalopay.get(&req.app_trans_id) {
        if existing.mac.eq_ignore_ascii_case(&mac) {
            return Json(existing.create_answer.clone()).into_response();
        }
        drop(st);
        return fail(-68, "Mã giao dịch bị trùng (app_trans_id)");
    }
    let token = random_id();
    let path: String = form_urlencoded::byte_serialize(req.app_trans_id.as_bytes()).collect();
    let answer = json!({
        "return_code": 1,
        "return_message": "Giao dịch thành công",
        "sub_return_code": 1,
        "sub_return_message": "Giao dịch thành công",
        "zp_trans_token": token,
        "order_url": base.url(&format!("/zalopay/pay/{path}")),
        "order_token": token,
    });
    st.zalopay.insert(
        req.app_trans_id.clone(),
        Order {
            app_trans_id: req.app_trans_id.clone(),
            app_user: req.app_user,
            app_time,
            amount,
            item: req.item,
            embed_data: req.embed_data,
            description: req.description,
            bank_code: req.bank_code,
            callback_url: req.callback_url,
            redirect_url,
            mac,
            created_at: t,
            expires_at: t + chrono::Duration::seconds(expire.unwrap_or(DEFAULT_EXPIRE_SECS)),
            status: Status::Pending,
            zp_trans_id: None,
            server_time: None,
            refunds: vec![],
            create_answer: answer.clone(),
        },
    );
    Json(answer).into_response()
}

/// `GET /zalopay/pay/{app_trans_id}`
pub(crate) async fn pay_page(State(app): State<AppState>, base: Base, Path(id): Path<String>) -> Response {
    let Some(o) = app.state().zalopay.get(&id).cloned() else {
        return error_page(StatusCode::NOT_FOUND, BRAND, "Không tìm thấy đơn hàng", "Unknown app_trans_id");
    };
    let enc: String = form_urlencoded::byte_serialize(o.app_trans_id.as_bytes()).collect();
    let actions = if o.status != Status::Pending {
        format!("<p>Đơn hàng đã được xử lý: {}</p>", esc(o.status.label()))
    } else if o.expires_at <= now() {
        "<p class=\"error\">Đơn hàng đã hết hạn (expired).</p>".to_owned()
    } else {
        format!(
            "<form method=\"post\" action=\"{action}\">{select}\
             <button type=\"submit\" name=\"action\" value=\"approve\">Thanh toán (Approve)</button>\
             <button type=\"submit\" name=\"action\" value=\"decline\">Hủy (Decline)</button></form>",
            action = esc(&base.path(&format!("/zalopay/pay/{enc}/decide"))),
            select = faults::select_html(&app, Target::Zalopay),
        )
    };
    let body = format!(
        "<table><tr><th>app_id</th><td>{app_id}</td></tr>\
         <tr><th>Mã giao dịch</th><td>{id}</td></tr>\
         <tr><th>Mô tả</th><td>{desc}</td></tr>\
         <tr><th>Số tiền</th><td class=\"amount\">{amt}</td></tr>\
         <tr><th>Người dùng</th><td>{user}</td></tr></table>{actions}",
        app_id = app.config.zalopay.app_id,
        id = esc(&o.app_trans_id),
        desc = esc(&o.description),
        amt = esc(&vnd(o.amount)),
        user = esc(&o.app_user),
    );
    Html(layout("ZaloPay — thanh toán", BRAND, &body)).into_response()
}

/// The callback's `data` string.
fn callback_data(app: &AppState, o: &Order, amount: i64, server_time: DateTime<Utc>) -> String {
    json!({
        "app_id": app.config.zalopay.app_id,
        "app_trans_id": o.app_trans_id,
        "app_time": o.app_time,
        "app_user": o.app_user,
        "amount": amount,
        "embed_data": o.embed_data,
        "item": o.item,
        "zp_trans_id": o.zp_trans_id.unwrap_or(0),
        "server_time": server_time.timestamp_millis(),
        "channel": CHANNEL,
        "merchant_user_id": "",
        "user_fee_amount": 0,
        "discount_amount": 0,
    })
    .to_string()
}

fn post_callback(url: &str, cb: &zalopay::CallbackBody) -> Option<Outgoing> {
    Some(Outgoing {
        method: Method::POST,
        url: url.to_owned(),
        body: Some(("application/json", serde_json::to_vec(cb).ok()?)),
        headers: vec![],
    })
}

/// `POST /zalopay/pay/{app_trans_id}/decide`
pub(crate) async fn decide(State(app): State<AppState>, Path(id): Path<String>, body: Bytes) -> Response {
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
    let fault = match faults::effective(&app, Target::Zalopay, pair(&form, "fault")) {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, BRAND, "Yêu cầu không hợp lệ", &e),
    };
    let t = now();
    let order = {
        let mut st = app.state();
        let seq = app.next_seq();
        let Some(o) = st.zalopay.get_mut(&id) else {
            return error_page(StatusCode::NOT_FOUND, BRAND, "Không tìm thấy đơn hàng", "Unknown app_trans_id");
        };
        if o.status != Status::Pending {
            return error_page(StatusCode::CONFLICT, BRAND, "Đơn hàng đã được xử lý", "This order is already settled");
        }
        if o.expires_at <= t {
            return error_page(StatusCode::CONFLICT, BRAND, "Đơn hàng đã hết hạn", "This order has expired");
        }
        let date = t.with_timezone(&super::gmt7()).format("%y%m%d").to_string();
        let zp_trans_id = format!("{date}{:09}", seq % 1_000_000_000).parse::<i64>().unwrap_or(0);
        o.status = if approve { Status::Succeeded } else { Status::Failed };
        o.zp_trans_id = Some(zp_trans_id);
        o.server_time = Some(t);
        let o = o.clone();
        if approve {
            st.ledger.push(LedgerEntry {
                book: Book::Zalopay,
                refund: false,
                type_code: String::new(),
                txn_id: zp_trans_id.to_string(),
                merchant_ref: o.app_trans_id.clone(),
                request_ref: String::new(),
                original_txn_id: String::new(),
                original_ref: String::new(),
                amount: o.amount,
                at: t,
                detail: CHANNEL.to_string(),
            });
        }
        o
    };
    if let (true, Some(url)) = (approve, order.callback_url.clone()) {
        let creds = app.config.zalopay.clone();
        let data = callback_data(&app, &order, order.amount, t);
        let build = |v: Variant| match v {
            Variant::Normal => post_callback(&url, &zalopay::sign_callback(&creds, &data, 1)),
            Variant::WrongAmount => {
                let d = callback_data(&app, &order, order.amount.checked_add(1)?, t);
                post_callback(&url, &zalopay::sign_callback(&creds, &d, 1))
            }
            Variant::BadSignature => {
                let mut cb = zalopay::sign_callback(&creds, &data, 1);
                cb.mac = tamper_hex(&cb.mac);
                post_callback(&url, &cb)
            }
            Variant::Stale => {
                let d = callback_data(&app, &order, order.amount, t - chrono::Duration::minutes(1));
                post_callback(&url, &zalopay::sign_callback(&creds, &d, 1))
            }
        };
        let meta = Meta {
            provider: "zalopay".into(),
            merchant_ref: order.app_trans_id.clone(),
            expect: Expect::ZalopayReturnCode1,
        };
        callbacks::dispatch(&app, meta, fault, build).await;
    }
    let status = if approve { "1" } else { "-49" };
    match &order.redirect_url {
        Some(url) => {
            let app_id = app.config.zalopay.app_id.to_string();
            let amount = order.amount.to_string();
            let pmcid = CHANNEL.to_string();
            let checksum_data =
                format!("{app_id}|{}|{pmcid}|{}|{amount}|0|{status}", order.app_trans_id, order.bank_code);
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("amount", &amount)
                .append_pair("appid", &app_id)
                .append_pair("apptransid", &order.app_trans_id)
                .append_pair("bankcode", &order.bank_code)
                .append_pair("checksum", &hmac_sha256_hex(&app.config.zalopay.key2, &checksum_data))
                .append_pair("discountamount", "0")
                .append_pair("pmcid", &pmcid)
                .append_pair("status", status)
                .finish();
            see_other(&append_query(url, &query), BRAND)
        }
        None => {
            let body = format!(
                "<p>Giao dịch <b>{}</b>: {}</p><p>{}</p>",
                esc(&order.app_trans_id),
                if approve { "thành công (paid)" } else { "đã hủy (declined)" },
                esc(&vnd(order.amount))
            );
            Html(layout("ZaloPay — kết quả", BRAND, &body)).into_response()
        }
    }
}

/// `POST /zalopay/v2/query`
pub(crate) async fn query(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let creds = &app.config.zalopay;
    let Some(f) = fields(&headers, &body) else { return fail(-401, "Dữ liệu yêu cầu không hợp lệ: body") };
    let id = f.get("app_trans_id").cloned().unwrap_or_default();
    if int(&f, "app_id") != Some(creds.app_id) {
        return fail(-401, "Dữ liệu yêu cầu không hợp lệ: app_id");
    }
    let expected = match zalopay::query_request(creds, &id) {
        Ok(q) => q.mac,
        Err(_) => return fail(-401, "Dữ liệu yêu cầu không hợp lệ: app_trans_id"),
    };
    let provided = f.get("mac").map(String::as_str).unwrap_or("");
    let ok = hex::decode(&expected).is_ok_and(|e| !provided.is_empty() && mac_matches_hex(&e, provided));
    if !ok {
        return fail(-402, "Chữ ký không hợp lệ (mac)");
    }
    let Some(o) = app.state().zalopay.get(&id).cloned() else {
        return fail(-101, "Giao dịch không tồn tại");
    };
    let (code, message, processing) = match o.status {
        Status::Succeeded => (1, "Giao dịch thành công", false),
        Status::Failed => (2, "Giao dịch thất bại: người dùng hủy", false),
        Status::Pending if o.expires_at <= now() => (2, "Giao dịch hết hạn", false),
        Status::Pending => (3, "Giao dịch chưa thanh toán hoặc đang xử lý", true),
    };
    Json(json!({
        "return_code": code,
        "return_message": message,
        "sub_return_code": code,
        "sub_return_message": message,
        "is_processing": processing,
        "amount": o.amount,
        "discount_amount": 0,
        "zp_trans_id": o.zp_trans_id.unwrap_or(0),
        "server_time": o.server_time.map(|t| t.timestamp_millis()).unwrap_or(0),
    }))
    .into_response()
}

/// `m_refund_id` = `yymmdd_<app_id>_<ref>`.
fn valid_refund_id(id: &str, app_id: i64) -> bool {
    let mut parts = id.splitn(3, '_');
    let (Some(date), Some(app), Some(rest)) = (parts.next(), parts.next(), parts.next()) else { return false };
    date.len() == 6
        && date.bytes().all(|b| b.is_ascii_digit())
        && app == app_id.to_string()
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `POST /zalopay/v2/refund`
pub(crate) async fn refund(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let creds = &app.config.zalopay;
    let Some(f) = fields(&headers, &body) else { return fail(-401, "Dữ liệu yêu cầu không hợp lệ: body") };
    let (Some(app_id), Some(zp_trans_id), Some(amount), Some(timestamp)) =
        (int(&f, "app_id"), int(&f, "zp_trans_id"), int(&f, "amount"), int(&f, "timestamp"))
    else {
        return fail(-401, "Dữ liệu yêu cầu không hợp lệ: app_id, zp_trans_id, amount, timestamp must be integers");
    };
    if app_id != creds.app_id {
        return fail(-401, "Dữ liệu yêu cầu không hợp lệ: app_id");
    }
    let description = f.get("description").cloned().unwrap_or_default();
    let data = format!("{app_id}|{zp_trans_id}|{amount}|{description}|{timestamp}");
    if !mac_ok(&creds.key1, &data, f.get("mac").map(String::as_str).unwrap_or("")) {
        return fail(-402, "Chữ ký không hợp lệ (mac)");
    }
    let m_refund_id = f.get("m_refund_id").cloned().unwrap_or_default();
    if !valid_refund_id(&m_refund_id, app_id) || amount <= 0 {
        return fail(-401, "Dữ liệu yêu cầu không hợp lệ: m_refund_id must be yymmdd_<app_id>_<ref>, amount > 0");
    }
    let t = now();
    let mut st = app.state();
    if st.zalopay_refund_ids.contains(&m_refund_id) {
        drop(st);
        return fail(-68, "Mã hoàn tiền bị trùng (m_refund_id)");
    }
    let seq = app.next_seq();
    let Some(o) = st.zalopay.values_mut().find(|o| o.zp_trans_id == Some(zp_trans_id)) else {
        drop(st);
        return fail(-101, "Giao dịch không tồn tại");
    };
    if o.status != Status::Succeeded {
        drop(st);
        return fail(-101, "Giao dịch chưa thanh toán thành công");
    }
    let refunded: i64 = o.refunds.iter().map(|r| r.amount).sum();
    if amount > o.amount - refunded {
        drop(st);
        return fail(-101, "Số tiền hoàn vượt quá số tiền có thể hoàn");
    }
    o.refunds.push(Refund { amount });
    let app_trans_id = o.app_trans_id.clone();
    let refund_id = 9_000_000_000 + i64::try_from(seq).unwrap_or(0);
    st.zalopay_refund_ids.insert(m_refund_id.clone());
    st.ledger.push(LedgerEntry {
        book: Book::Zalopay,
        refund: true,
        type_code: String::new(),
        txn_id: refund_id.to_string(),
        merchant_ref: m_refund_id.clone(),
        request_ref: m_refund_id,
        original_txn_id: zp_trans_id.to_string(),
        original_ref: app_trans_id,
        amount,
        at: t,
        detail: String::new(),
    });
    drop(st);
    Json(json!({
        "return_code": 1,
        "return_message": "Hoàn tiền thành công",
        "sub_return_code": 1,
        "sub_return_message": "Hoàn tiền thành công",
        "refund_id": refund_id,
    }))
    .into_response()
}
