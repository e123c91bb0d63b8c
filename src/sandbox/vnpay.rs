//! VNPAY simulator (API 2.1.0).
//!
//! - `GET /vnpay/paymentv2/vpcpay.html?<signed params>`: checks `vnp_SecureHash` with
//!   [`vnpay::verify_query_signature`] (bad → HTML error page, 400, "code=70" like VNPAY's), then
//!   `vnp_TmnCode`, `vnp_Version` 2.1.0, `vnp_Command` pay, `vnp_CurrCode` VND, `vnp_Amount` (×100,
//!   exact), `vnp_TxnRef`, `vnp_ReturnUrl`, `vnp_CreateDate`, `vnp_ExpireDate` (not yet past). Records
//!   the order and shows the payment page (Approve / Decline + fault). Re-opening the URL of a pending
//!   order shows the page again; a `vnp_TxnRef` that was already used for another amount or that is
//!   settled is refused.
//! - `POST /vnpay/paymentv2/decide` (form `txn_ref`, `action`=approve|decline, `fault`): settles the
//!   order, sends the IPN (`GET vnpay_ipn_url?<signed>`), then 303 to `vnp_ReturnUrl?<same signed>`.
//!   Approve → `vnp_ResponseCode=00`, `vnp_TransactionStatus=00`, `vnp_TransactionNo` (8 digits),
//!   `vnp_BankCode` (NCB unless the pay URL named one), `vnp_BankTranNo=VNP<no>`, `vnp_CardType=ATM`,
//!   `vnp_PayDate` (GMT+7). Approve after `vnp_ExpireDate` → `11`/`02` (timeout). Decline → `24`/`02`
//!   with `vnp_TransactionNo=0` (as VNPAY does for cancelled payments).
//!   Faults: `reorder` sends, after the true IPN, a stale one with a `PayDate` one minute earlier:
//!   `24`/`02` after a success, `99`/`01` (not completed) after a failure.
//! - `POST /vnpay/merchant_webapi/api/transaction` (JSON, `vnp_Command` querydr|refund): checks in
//!   order: JSON shape and `vnp_Version` (03) → pipe-joined request hash (97) → `vnp_TmnCode` (02) →
//!   `vnp_RequestId` 1–32 alphanumerics (03) and not seen before (94) → the order `vnp_TxnRef` with
//!   `vnp_TransactionDate` equal to its `vnp_CreateDate` (91; for refunds also `vnp_TransactionNo`,
//!   when given, equal to the payment's). querydr answers `00` with the order's state
//!   (`vnp_TransactionStatus` `00` paid, `02` failed or expired unpaid, `01` pending). refund requires a
//!   paid order (95) and an amount within what is left: full (`02`) only for the whole, never-refunded
//!   amount, partial (`03`) at most the paid amount minus earlier refunds — otherwise `93` "Invalid
//!   refund amount" (VNPAY's code for it; not in providers.md). Accepted refunds answer `00` with
//!   `vnp_TransactionStatus=05` and are final in the sandbox. Every answer is HTTP 200 JSON signed with
//!   [`vnpay::sign_querydr_response`] / [`vnpay::sign_refund_response`].
//!
//! Invariants: the signature is checked before any other field is interpreted; amounts are whole
//! đồng internally and ×100 only on the wire (checked arithmetic); an order is settled at most once;
//! refunds never exceed the paid amount minus earlier refunds.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use super::callbacks::{self, Expect, Meta, Outgoing, Variant};
use super::faults::{self, Target};
use super::pages::{error_page, esc, layout, vn_time, vnd};
use super::settlement::{Book, LedgerEntry};
use super::{AppState, Base, Status, append_query, form_pairs, now, pair, random_id, see_other, tamper_hex};
use crate::providers::protocol::signature::{hmac_sha512, mac_matches_hex};
use crate::providers::protocol::vnpay;

const BRAND: &str = "VNPAY";
const DEFAULT_BANK: &str = "NCB";

/// A VNPAY order as the sandbox knows it.
#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) txn_ref: String,
    /// Whole đồng.
    pub(crate) amount: i64,
    pub(crate) order_info: String,
    pub(crate) return_url: String,
    pub(crate) bank_code: String,
    /// `vnp_CreateDate` exactly as received (querydr/refund must echo it as `vnp_TransactionDate`).
    pub(crate) create_date: String,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) status: Status,
    pub(crate) response_code: String,
    pub(crate) transaction_status: String,
    /// Empty while pending; `0` for a cancelled payment.
    pub(crate) transaction_no: String,
    pub(crate) pay_date: Option<DateTime<Utc>>,
    /// Whole đồng refunded so far.
    pub(crate) refunded: i64,
}

fn bad(title: &str, message: &str) -> Response {
    error_page(StatusCode::BAD_REQUEST, BRAND, title, message)
}

/// Exact `vnp_Amount` (×100) → whole đồng, > 0.
fn parse_amount_x100(raw: &str) -> Option<i64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = raw.parse().ok()?;
    (v % 100 == 0 && v / 100 > 0).then_some(v / 100)
}

fn x100(amount: i64) -> String {
    (i128::from(amount) * 100).to_string()
}

/// `GET /vnpay/paymentv2/vpcpay.html`
pub(crate) async fn pay_page(State(app): State<AppState>, base: Base, RawQuery(q): RawQuery) -> Response {
    let query = vnpay::parse_query(q.as_deref().unwrap_or(""));
    let creds = &app.config.vnpay;
    let f = match vnpay::verify_query_signature(creds, &query) {
        Ok(f) => f,
        Err(crate::providers::protocol::event::VerifyError::Duplicate(k)) => {
            return bad(
                "Giao dịch không hợp lệ",
                &format!("Dữ liệu gửi sang không đúng định dạng: {k} lặp lại (code=03)"),
            );
        }
        Err(_) => return bad("Giao dịch không hợp lệ", "Sai chữ ký — invalid signature (code=70)"),
    };
    if f.get("vnp_TmnCode") != Some(creds.tmn_code.as_str()) {
        return bad("Giao dịch không hợp lệ", "Không tìm thấy website — merchant not found (code=02)");
    }
    let format_error = |what: &str| bad("Giao dịch không hợp lệ", &format!("{what} (code=03)"));
    if f.get("vnp_Version") != Some(vnpay::VERSION) {
        return format_error("vnp_Version must be 2.1.0");
    }
    if f.get("vnp_Command") != Some("pay") {
        return format_error("vnp_Command must be pay");
    }
    if f.get("vnp_CurrCode") != Some("VND") {
        return format_error("vnp_CurrCode must be VND");
    }
    let Some(txn_ref) = f.get("vnp_TxnRef") else { return format_error("vnp_TxnRef is missing") };
    let Some(amount) = f.get("vnp_Amount").and_then(parse_amount_x100) else {
        return format_error("Số tiền không hợp lệ — vnp_Amount must be đồng × 100");
    };
    let Some(order_info) = f.get("vnp_OrderInfo") else { return format_error("vnp_OrderInfo is missing") };
    let Some(return_url) = f.get("vnp_ReturnUrl").filter(|u| u.starts_with("http://") || u.starts_with("https://"))
    else {
        return format_error("vnp_ReturnUrl must be an absolute http(s) URL");
    };
    let Some(create_date) = f.get("vnp_CreateDate").filter(|d| vnpay::parse_vn_datetime(d).is_some()) else {
        return format_error("vnp_CreateDate must be yyyyMMddHHmmss");
    };
    let expires_at = match f.get("vnp_ExpireDate") {
        None => None,
        Some(d) => match vnpay::parse_vn_datetime(d) {
            Some(t) => Some(t),
            None => return format_error("vnp_ExpireDate must be yyyyMMddHHmmss"),
        },
    };
    let t = now();
    if expires_at.is_some_and(|e| e <= t) {
        return bad("Giao dịch đã quá thời gian chờ thanh toán", "The payment link has expired (code=11)");
    }
    let bank_code = f.get("vnp_BankCode").unwrap_or(DEFAULT_BANK).to_owned();
    let order = {
        let mut st = app.state();
        match st.vnpay.get(txn_ref) {
            Some(o) if o.status == Status::Pending && o.amount == amount => o.clone(),
            Some(_) => {
                return bad("Giao dịch không hợp lệ", "Đơn hàng đã tồn tại — vnp_TxnRef was already used (code=94)");
            }
            None => {
                let o = Order {
                    txn_ref: txn_ref.to_owned(),
                    amount,
                    order_info: order_info.to_owned(),
                    return_url: return_url.to_owned(),
                    bank_code,
                    create_date: create_date.to_owned(),
                    expires_at,
                    created_at: t,
                    status: Status::Pending,
                    response_code: String::new(),
                    transaction_status: "01".into(),
                    transaction_no: String::new(),
                    pay_date: None,
                    refunded: 0,
                };
                st.vnpay.insert(txn_ref.to_owned(), o.clone());
                o
            }
        }
    };
    let expiry = order.expires_at.map(vn_time).unwrap_or_else(|| "—".into());
    let body = format!(
        "<table><tr><th>Nhà cung cấp (TmnCode)</th><td>{tmn}</td></tr>\
         <tr><th>Mã đơn hàng (vnp_TxnRef)</th><td>{txn}</td></tr>\
         <tr><th>Nội dung</th><td>{info}</td></tr>\
         <tr><th>Số tiền</th><td class=\"amount\">{amt}</td></tr>\
         <tr><th>Ngân hàng</th><td>{bank}</td></tr>\
         <tr><th>Hết hạn (GMT+7)</th><td>{expiry}</td></tr></table>\
         <form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"txn_ref\" value=\"{txn}\">{select}\
         <button type=\"submit\" name=\"action\" value=\"approve\">Thanh toán (Approve)</button>\
         <button type=\"submit\" name=\"action\" value=\"decline\">Hủy giao dịch (Decline)</button></form>",
        tmn = esc(&creds.tmn_code),
        txn = esc(&order.txn_ref),
        info = esc(&order.order_info),
        amt = esc(&vnd(order.amount)),
        bank = esc(&order.bank_code),
        expiry = esc(&expiry),
        action = esc(&base.path("/vnpay/paymentv2/decide")),
        select = faults::select_html(&app, Target::Vnpay),
    );
    Html(layout("Cổng thanh toán VNPAY", BRAND, &body)).into_response()
}

/// IPN / return-URL parameters of a settled order (unsigned).
fn result_params(app: &AppState, o: &Order) -> Vec<(String, String)> {
    let mut p: Vec<(&str, String)> = vec![
        ("vnp_Amount", x100(o.amount)),
        ("vnp_BankCode", o.bank_code.clone()),
        ("vnp_OrderInfo", o.order_info.clone()),
        ("vnp_PayDate", o.pay_date.map(vnpay::format_vn_datetime).unwrap_or_default()),
        ("vnp_ResponseCode", o.response_code.clone()),
        ("vnp_TmnCode", app.config.vnpay.tmn_code.clone()),
        ("vnp_TransactionNo", o.transaction_no.clone()),
        ("vnp_TransactionStatus", o.transaction_status.clone()),
        ("vnp_TxnRef", o.txn_ref.clone()),
    ];
    if o.status == Status::Succeeded {
        p.push(("vnp_BankTranNo", format!("VNP{}", o.transaction_no)));
        p.push(("vnp_CardType", "ATM".into()));
    }
    p.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn set(params: &mut Vec<(String, String)>, key: &str, value: String) {
    params.retain(|(k, _)| k != key);
    params.push((key.to_owned(), value));
}

/// `POST /vnpay/paymentv2/decide`
pub(crate) async fn decide(State(app): State<AppState>, body: Bytes) -> Response {
    let form = form_pairs(&body);
    let Some(txn_ref) = pair(&form, "txn_ref") else {
        return bad("Yêu cầu không hợp lệ", "txn_ref is missing");
    };
    let approve = match pair(&form, "action") {
        Some("approve") => true,
        Some("decline") => false,
        _ => return bad("Yêu cầu không hợp lệ", "action must be approve or decline"),
    };
    let fault = match faults::effective(&app, Target::Vnpay, pair(&form, "fault")) {
        Ok(f) => f,
        Err(e) => return bad("Yêu cầu không hợp lệ", &e),
    };
    let t = now();
    let order = {
        let mut st = app.state();
        let seq = app.next_seq();
        let Some(o) = st.vnpay.get_mut(txn_ref) else {
            return error_page(StatusCode::NOT_FOUND, BRAND, "Không tìm thấy giao dịch", "Unknown vnp_TxnRef");
        };
        if o.status != Status::Pending {
            return error_page(StatusCode::CONFLICT, BRAND, "Giao dịch đã được xử lý", "This order is already settled");
        }
        let expired = o.expires_at.is_some_and(|e| e <= t);
        let (status, code, txn_status, txn_no) = match (approve, expired) {
            (true, false) => (Status::Succeeded, "00", "00", format!("{}", 14_000_000 + seq)),
            (true, true) => (Status::Failed, "11", "02", format!("{}", 14_000_000 + seq)),
            (false, _) => (Status::Failed, "24", "02", "0".to_owned()),
        };
        o.status = status;
        o.response_code = code.into();
        o.transaction_status = txn_status.into();
        o.transaction_no = txn_no;
        o.pay_date = Some(t);
        let o = o.clone();
        if o.status == Status::Succeeded {
            st.ledger.push(LedgerEntry {
                book: Book::Vnpay,
                refund: false,
                type_code: "01".into(),
                txn_id: o.transaction_no.clone(),
                merchant_ref: o.txn_ref.clone(),
                request_ref: String::new(),
                original_txn_id: String::new(),
                original_ref: String::new(),
                amount: o.amount,
                at: t,
                detail: o.bank_code.clone(),
            });
        }
        o
    };
    let secret = app.config.vnpay.hash_secret.clone();
    let params = result_params(&app, &order);
    let signed = vnpay::sign_params(&secret, &params);
    let ipn_url = app.config.vnpay_ipn_url.clone();
    let get = |query: String| {
        Some(Outgoing { method: Method::GET, url: append_query(&ipn_url, &query), body: None, headers: vec![] })
    };
    let build = |v: Variant| match v {
        Variant::Normal => get(signed.clone()),
        Variant::WrongAmount => {
            let mut p = params.clone();
            set(&mut p, "vnp_Amount", x100(order.amount.checked_add(1)?));
            get(vnpay::sign_params(&secret, &p))
        }
        Variant::BadSignature => {
            let (data, hash) = signed.rsplit_once("vnp_SecureHash=")?;
            get(format!("{data}vnp_SecureHash={}", tamper_hex(hash)))
        }
        Variant::Stale => {
            let mut p = params.clone();
            p.retain(|(k, _)| k != "vnp_BankTranNo" && k != "vnp_CardType");
            let (code, status) = if order.status == Status::Succeeded { ("24", "02") } else { ("99", "01") };
            set(&mut p, "vnp_ResponseCode", code.into());
            set(&mut p, "vnp_TransactionStatus", status.into());
            set(&mut p, "vnp_PayDate", vnpay::format_vn_datetime(t - chrono::Duration::minutes(1)));
            get(vnpay::sign_params(&secret, &p))
        }
    };
    let meta = Meta { provider: "vnpay".into(), merchant_ref: order.txn_ref.clone(), expect: Expect::VnpayConfirm };
    callbacks::dispatch(&app, meta, fault, build).await;
    see_other(&append_query(&order.return_url, &signed), BRAND)
}

// ---------------------------------------------------------------------------------------------
// merchant_webapi/api/transaction: querydr and refund
// ---------------------------------------------------------------------------------------------

fn text(obj: &Map<String, Value>, key: &str) -> String {
    match obj.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// A signed API answer. `refund` selects the refund response hash fields.
fn answer(app: &AppState, refund: bool, fields: Vec<(&str, String)>) -> Json<Value> {
    let mut obj = Map::new();
    for (k, v) in fields {
        obj.insert(k.to_owned(), Value::String(v));
    }
    let mut body = Value::Object(obj);
    let secret = &app.config.vnpay.hash_secret;
    // Signing only fails for a non-object or non-string fields; we built an object of strings.
    let _ = if refund {
        vnpay::sign_refund_response(secret, &mut body)
    } else {
        vnpay::sign_querydr_response(secret, &mut body)
    };
    Json(body)
}

fn api_error(app: &AppState, command: &str, txn_ref: &str, code: &str, message: &str) -> Json<Value> {
    answer(
        app,
        command == "refund",
        vec![
            ("vnp_ResponseId", random_id()),
            ("vnp_Command", command.to_owned()),
            ("vnp_ResponseCode", code.to_owned()),
            ("vnp_Message", message.to_owned()),
            ("vnp_TmnCode", app.config.vnpay.tmn_code.clone()),
            ("vnp_TxnRef", txn_ref.to_owned()),
        ],
    )
}

/// `POST /vnpay/merchant_webapi/api/transaction`
pub(crate) async fn transaction_api(State(app): State<AppState>, body: Bytes) -> Json<Value> {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let Some(obj) = parsed.as_ref().and_then(Value::as_object) else {
        return api_error(&app, "querydr", "", "03", "Invalid format: expected a JSON object");
    };
    let command = text(obj, "vnp_Command");
    let txn_ref = text(obj, "vnp_TxnRef");
    let hash_fields = match command.as_str() {
        "querydr" => vnpay::QUERYDR_REQUEST_HASH_FIELDS,
        "refund" => vnpay::REFUND_REQUEST_HASH_FIELDS,
        _ => {
            return api_error(&app, "querydr", &txn_ref, "03", "Invalid format: vnp_Command must be querydr or refund");
        }
    };
    if text(obj, "vnp_Version") != vnpay::VERSION {
        return api_error(&app, &command, &txn_ref, "03", "Invalid format: vnp_Version must be 2.1.0");
    }
    let Ok(data) = vnpay::pipe_hash_data(obj, hash_fields) else {
        return api_error(&app, &command, &txn_ref, "03", "Invalid format: fields must be strings");
    };
    let provided = text(obj, "vnp_SecureHash");
    let expected = hmac_sha512(app.config.vnpay.hash_secret.expose_secret().as_bytes(), data.as_bytes());
    if provided.is_empty() || !mac_matches_hex(&expected, &provided) {
        return api_error(&app, &command, &txn_ref, "97", "Invalid Checksum");
    }
    if text(obj, "vnp_TmnCode") != app.config.vnpay.tmn_code {
        return api_error(&app, &command, &txn_ref, "02", "Invalid TmnCode");
    }
    let request_id = text(obj, "vnp_RequestId");
    if request_id.is_empty() || request_id.len() > 32 || !request_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return api_error(&app, &command, &txn_ref, "03", "Invalid format: vnp_RequestId");
    }
    if !app.state().vnpay_request_ids.insert(request_id) {
        return api_error(&app, &command, &txn_ref, "94", "Duplicate request");
    }
    if command == "querydr" { querydr(&app, obj, &txn_ref) } else { refund(&app, obj, &txn_ref) }
}

fn querydr(app: &AppState, obj: &Map<String, Value>, txn_ref: &str) -> Json<Value> {
    let order = app.state().vnpay.get(txn_ref).cloned();
    let Some(o) = order.filter(|o| o.create_date == text(obj, "vnp_TransactionDate")) else {
        return api_error(app, "querydr", txn_ref, "91", "Transaction not found");
    };
    let status = match o.status {
        Status::Pending if o.expires_at.is_some_and(|e| e <= now()) => "02".to_owned(),
        _ => o.transaction_status.clone(),
    };
    answer(
        app,
        false,
        vec![
            ("vnp_ResponseId", random_id()),
            ("vnp_Command", "querydr".into()),
            ("vnp_ResponseCode", "00".into()),
            ("vnp_Message", "QueryDR Success".into()),
            ("vnp_TmnCode", app.config.vnpay.tmn_code.clone()),
            ("vnp_TxnRef", o.txn_ref.clone()),
            ("vnp_Amount", x100(o.amount)),
            ("vnp_OrderInfo", o.order_info.clone()),
            ("vnp_BankCode", o.bank_code.clone()),
            ("vnp_PayDate", o.pay_date.map(vnpay::format_vn_datetime).unwrap_or_default()),
            ("vnp_TransactionNo", o.transaction_no.clone()),
            ("vnp_TransactionType", "01".into()),
            ("vnp_TransactionStatus", status),
            ("vnp_PromotionCode", String::new()),
            ("vnp_PromotionAmount", String::new()),
        ],
    )
}

fn refund(app: &AppState, obj: &Map<String, Value>, txn_ref: &str) -> Json<Value> {
    let kind = text(obj, "vnp_TransactionType");
    if kind != "02" && kind != "03" {
        return api_error(app, "refund", txn_ref, "03", "Invalid format: vnp_TransactionType must be 02 or 03");
    }
    let Some(amount) = parse_amount_x100(&text(obj, "vnp_Amount")) else {
        return api_error(app, "refund", txn_ref, "03", "Invalid format: vnp_Amount");
    };
    if text(obj, "vnp_CreateBy").is_empty() {
        return api_error(app, "refund", txn_ref, "03", "Invalid format: vnp_CreateBy");
    }
    let t = now();
    let mut st = app.state();
    let seq = app.next_seq();
    let given_no = text(obj, "vnp_TransactionNo");
    let Some(o) = st.vnpay.get_mut(txn_ref).filter(|o| {
        o.create_date == text(obj, "vnp_TransactionDate") && (given_no.is_empty() || given_no == o.transaction_no)
    }) else {
        drop(st);
        return api_error(app, "refund", txn_ref, "91", "Transaction not found");
    };
    if o.status != Status::Succeeded {
        drop(st);
        return api_error(app, "refund", txn_ref, "95", "Original transaction was not successful");
    }
    let remaining = o.amount - o.refunded;
    let ok = if kind == "02" { o.refunded == 0 && amount == o.amount } else { amount <= remaining };
    if !ok {
        drop(st);
        return api_error(app, "refund", txn_ref, "93", "Invalid refund amount");
    }
    o.refunded += amount;
    let payment_no = o.transaction_no.clone();
    let bank_code = o.bank_code.clone();
    let refund_no = format!("{}", 14_000_000 + seq);
    st.ledger.push(LedgerEntry {
        book: Book::Vnpay,
        refund: true,
        type_code: kind.clone(),
        txn_id: refund_no.clone(),
        merchant_ref: txn_ref.to_owned(),
        request_ref: text(obj, "vnp_RequestId"),
        original_txn_id: payment_no,
        original_ref: txn_ref.to_owned(),
        amount,
        at: t,
        detail: bank_code.clone(),
    });
    drop(st);
    answer(
        app,
        true,
        vec![
            ("vnp_ResponseId", random_id()),
            ("vnp_Command", "refund".into()),
            ("vnp_ResponseCode", "00".into()),
            ("vnp_Message", "Refund success".into()),
            ("vnp_TmnCode", app.config.vnpay.tmn_code.clone()),
            ("vnp_TxnRef", txn_ref.to_owned()),
            ("vnp_Amount", x100(amount)),
            ("vnp_OrderInfo", text(obj, "vnp_OrderInfo")),
            ("vnp_BankCode", bank_code),
            ("vnp_PayDate", vnpay::format_vn_datetime(t)),
            ("vnp_TransactionNo", refund_no),
            ("vnp_TransactionType", kind),
            ("vnp_TransactionStatus", "05".into()),
        ],
    )
}
