//! Partner-bank simulator: a bank app's "transfer money" screen, and the credit notification the
//! bank sends to paygate when the transfer reaches the collection account.
//!
//! - `GET /bank/{bank}/transfer[?qr=<EMVCo payload>]`: the transfer form. With `qr`, the payload is
//!   parsed and CRC-checked with [`vietqr::parse`] and the form is prefilled (account, amount,
//!   purpose as the transfer text); a bad payload is reported on the page and the form left empty.
//! - `POST /bank/{bank}/transfer` (form `account`, `amount` (đồng; `.`/`,`/space grouping allowed),
//!   `description`, `fault`): books the credit, then POSTs to the bank's `notify_url` the JSON body
//!   `{"event_id","bank","account","amount","currency":"VND","description","transaction_id","credited_at"}`
//!   (that field order; `amount` whole đồng; `credited_at` RFC 3339 with `+07:00`) with header
//!   `Paygate-Signature: t=<unix>,v1=<hex>` from [`signature::sign`] over the exact body bytes, and
//!   expects any 2xx. Shows a result page with the delivery outcome.
//!
//! Fault specifics: a bank only ever reports credits, so `reorder` sends, after the true
//! notification, a second one for the same `transaction_id` with a new `event_id` and a
//! `credited_at` one minute earlier; `duplicate` re-sends the identical bytes (same `event_id`).
//! Messages are signed when the transfer is made, so a `delay` longer than the receiver's tolerance
//! (300 s by default) arrives with a stale timestamp.
//!
//! Invariants: the notification body is serialised once per message and signed over exactly the
//! bytes sent; the ledger records the true credit whatever the fault; unknown bank names are 404.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde::Serialize;

use super::callbacks::{self, Expect, Meta, Outgoing, Variant};
use super::faults::{self, Target};
use super::pages::{error_page, esc, layout, vnd};
use super::settlement::{Book, LedgerEntry};
use super::{AppState, Base, form_pairs, gmt7, now, pair, random_id};
use crate::providers::protocol::{signature, vietqr};

/// Longest transfer text accepted (NAPAS 247 allows 210 characters).
pub const MAX_DESCRIPTION_CHARS: usize = 210;

/// A credit booked by a simulated bank.
#[derive(Debug, Clone)]
pub(crate) struct Transfer {
    pub(crate) bank: String,
    pub(crate) event_id: String,
    pub(crate) transaction_id: String,
    pub(crate) account: String,
    pub(crate) amount: i64,
    pub(crate) description: String,
    pub(crate) credited_at: DateTime<Utc>,
}

/// The notification body, in this field order.
#[derive(Debug, Serialize)]
struct Notification<'a> {
    event_id: &'a str,
    bank: &'a str,
    account: &'a str,
    amount: i64,
    currency: &'static str,
    description: &'a str,
    transaction_id: &'a str,
    credited_at: &'a str,
}

fn brand(bank: &str) -> String {
    format!("Ngân hàng {bank}")
}

fn unknown_bank(name: &str) -> Response {
    error_page(StatusCode::NOT_FOUND, &brand(name), "Không tìm thấy ngân hàng", "Unknown bank")
}

fn form_html(
    app: &AppState,
    base: &Base,
    bank: &str,
    account: &str,
    amount: Option<i64>,
    description: &str,
    notice: &str,
) -> String {
    let enc: String = form_urlencoded::byte_serialize(bank.as_bytes()).collect();
    format!(
        "{notice}<form method=\"post\" action=\"{action}\">\
         <label>Tài khoản nhận (to account) <input name=\"account\" value=\"{account}\" required></label>\
         <label>Số tiền (đồng) <input name=\"amount\" value=\"{amount}\" inputmode=\"numeric\" required></label>\
         <label>Nội dung chuyển khoản (description) <input name=\"description\" value=\"{desc}\" size=\"40\" maxlength=\"{max}\"></label>\
         {select}<button type=\"submit\">Chuyển tiền (Transfer)</button></form>",
        action = esc(&base.path(&format!("/bank/{enc}/transfer"))),
        account = esc(account),
        amount = amount.map(|a| a.to_string()).unwrap_or_default(),
        desc = esc(description),
        max = MAX_DESCRIPTION_CHARS,
        select = faults::select_html(app, Target::Bank),
    )
}

/// `GET /bank/{bank}/transfer[?qr=…]`
pub(crate) async fn transfer_form(
    State(app): State<AppState>,
    base: Base,
    Path(bank): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    if app.bank(&bank).is_none() {
        return unknown_bank(&bank);
    }
    let pairs = form_pairs(q.as_deref().unwrap_or("").as_bytes());
    let (notice, account, amount, description) = match pair(&pairs, "qr").map(str::trim).filter(|s| !s.is_empty()) {
        None => (String::new(), String::new(), None, String::new()),
        Some(payload) => match vietqr::parse(payload) {
            Ok(p) => {
                let notice = format!(
                    "<table><tr><th>VietQR</th><td>{kind} — {service}</td></tr>\
                     <tr><th>BIN</th><td>{bin}</td></tr><tr><th>Tài khoản</th><td>{acct}</td></tr>\
                     <tr><th>Số tiền</th><td class=\"amount\">{amt}</td></tr>\
                     <tr><th>Mã hóa đơn</th><td>{bill}</td></tr><tr><th>Nội dung</th><td>{purpose}</td></tr></table>",
                    kind = if p.dynamic { "dynamic" } else { "static" },
                    service = esc(p.service.code()),
                    bin = esc(&p.bin),
                    acct = esc(&p.account),
                    amt = p.amount.map(|a| esc(&vnd(a))).unwrap_or_else(|| "—".into()),
                    bill = esc(p.bill_number.as_deref().unwrap_or("—")),
                    purpose = esc(p.purpose.as_deref().unwrap_or("—")),
                );
                let desc = p.purpose.clone().or(p.bill_number.clone()).unwrap_or_default();
                (notice, p.account, p.amount, desc)
            }
            Err(e) => (
                format!("<p class=\"error\">Mã QR không hợp lệ: {}</p>", esc(&e.to_string())),
                String::new(),
                None,
                String::new(),
            ),
        },
    };
    let body = form_html(&app, &base, &bank, &account, amount, &description, &notice);
    Html(layout("Chuyển tiền", &brand(&bank), &body)).into_response()
}

/// Whole đồng from a form field; `.`, `,` and spaces are accepted as digit grouping.
fn parse_amount(raw: &str) -> Option<i64> {
    let digits: String = raw.chars().filter(|c| !matches!(c, '.' | ',' | ' ')).collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok().filter(|a| *a > 0)
}

fn message(secret: &secrecy::SecretString, n: &Notification<'_>, url: &str, tamper: bool) -> Option<Outgoing> {
    let body = serde_json::to_vec(n).ok()?;
    let mut header = signature::sign(secret, now().timestamp(), &body);
    if tamper {
        let (head, v1) = header.rsplit_once("v1=")?;
        header = format!("{head}v1={}", super::tamper_hex(v1));
    }
    Some(Outgoing {
        method: Method::POST,
        url: url.to_owned(),
        body: Some(("application/json", body)),
        headers: vec![(signature::HEADER_NAME, header)],
    })
}

/// `POST /bank/{bank}/transfer`
pub(crate) async fn transfer(
    State(app): State<AppState>,
    base: Base,
    Path(bank): Path<String>,
    body: Bytes,
) -> Response {
    let Some(cfg) = app.bank(&bank).cloned() else { return unknown_bank(&bank) };
    let brand = brand(&bank);
    let form = form_pairs(&body);
    let account = pair(&form, "account").unwrap_or("").trim().to_owned();
    let description = pair(&form, "description").unwrap_or("").trim().to_owned();
    let amount = pair(&form, "amount").and_then(parse_amount);
    let problem = if account.is_empty() {
        Some("Tài khoản nhận là bắt buộc (account is required)".to_owned())
    } else if amount.is_none() {
        Some("Số tiền không hợp lệ (amount must be a positive whole number of đồng)".to_owned())
    } else if description.chars().count() > MAX_DESCRIPTION_CHARS {
        Some(format!("Nội dung tối đa {MAX_DESCRIPTION_CHARS} ký tự"))
    } else {
        None
    };
    let fault = match faults::effective(&app, Target::Bank, pair(&form, "fault")) {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &brand, "Yêu cầu không hợp lệ", &e),
    };
    let (Some(amount), None) = (amount, &problem) else {
        let notice = format!("<p class=\"error\">{}</p>", esc(problem.as_deref().unwrap_or("")));
        let body = form_html(&app, &base, &bank, &account, None, &description, &notice);
        return (StatusCode::BAD_REQUEST, Html(layout("Chuyển tiền", &brand, &body))).into_response();
    };
    let t = now();
    let seq = app.next_seq();
    let transfer = Transfer {
        bank: bank.clone(),
        event_id: format!("evt_{}", random_id()),
        transaction_id: format!("FT{}{:08}", t.with_timezone(&gmt7()).format("%y%m%d"), seq % 100_000_000),
        account,
        amount,
        description,
        credited_at: t,
    };
    {
        let mut st = app.state();
        st.bank.push(transfer.clone());
        st.ledger.push(LedgerEntry {
            book: Book::Bank(bank.clone()),
            refund: false,
            type_code: String::new(),
            txn_id: transfer.transaction_id.clone(),
            merchant_ref: transfer.description.clone(),
            request_ref: transfer.event_id.clone(),
            original_txn_id: String::new(),
            original_ref: String::new(),
            amount,
            at: t,
            detail: transfer.account.clone(),
        });
    }
    let rfc3339 = |at: DateTime<Utc>| at.with_timezone(&gmt7()).to_rfc3339_opts(SecondsFormat::Secs, false);
    let credited_at = rfc3339(t);
    let normal = Notification {
        event_id: &transfer.event_id,
        bank: &bank,
        account: &transfer.account,
        amount,
        currency: "VND",
        description: &transfer.description,
        transaction_id: &transfer.transaction_id,
        credited_at: &credited_at,
    };
    let stale_event = format!("evt_{}", random_id());
    let stale_at = rfc3339(t - chrono::Duration::minutes(1));
    let build = |v: Variant| match v {
        Variant::Normal => message(&cfg.secret, &normal, &cfg.notify_url, false),
        Variant::BadSignature => message(&cfg.secret, &normal, &cfg.notify_url, true),
        Variant::WrongAmount => {
            let n = Notification { amount: amount.checked_add(1)?, ..normal };
            message(&cfg.secret, &n, &cfg.notify_url, false)
        }
        Variant::Stale => {
            let n = Notification { event_id: &stale_event, credited_at: &stale_at, ..normal };
            message(&cfg.secret, &n, &cfg.notify_url, false)
        }
    };
    let meta = Meta {
        provider: format!("bank:{bank}"),
        merchant_ref: transfer.transaction_id.clone(),
        expect: Expect::Success2xx,
    };
    let fault_name = fault.as_ref().map(|f| f.to_string());
    callbacks::dispatch(&app, meta, fault, build).await;

    let deliveries: Vec<String> = app
        .state()
        .callbacks
        .iter()
        .filter(|r| r.merchant_ref == transfer.transaction_id)
        .map(|r| {
            let outcome = match (r.status, &r.error) {
                (Some(s), _) => format!("HTTP {s}{}", if r.accepted { "" } else { " (not accepted)" }),
                (None, Some(e)) => format!("failed: {e}"),
                (None, None) => "failed".into(),
            };
            format!("<li>{} — {}</li>", esc(&r.variant), esc(&outcome))
        })
        .collect();
    let delivery_html = if deliveries.is_empty() {
        match fault_name {
            Some(f) => format!("<p>No notification delivered yet (fault {}).</p>", esc(&f)),
            None => "<p>No notification delivered.</p>".to_owned(),
        }
    } else {
        format!("<ul>{}</ul>", deliveries.concat())
    };
    let enc: String = form_urlencoded::byte_serialize(bank.as_bytes()).collect();
    let body = format!(
        "<p>Giao dịch thành công (transfer completed).</p><table>\
         <tr><th>Mã giao dịch</th><td>{txn}</td></tr><tr><th>Tài khoản nhận</th><td>{acct}</td></tr>\
         <tr><th>Số tiền</th><td class=\"amount\">{amt}</td></tr><tr><th>Nội dung</th><td>{desc}</td></tr>\
         <tr><th>Thời gian</th><td>{at}</td></tr></table><h2>Credit notification</h2>{delivery_html}\
         <p><a href=\"{again}\">New transfer</a></p>",
        txn = esc(&transfer.transaction_id),
        acct = esc(&transfer.account),
        amt = esc(&vnd(amount)),
        desc = esc(&transfer.description),
        at = esc(&credited_at),
        again = esc(&base.path(&format!("/bank/{enc}/transfer"))),
    );
    Html(layout("Chuyển tiền", &brand, &body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("180000"), Some(180_000));
        assert_eq!(parse_amount("1.500.000"), Some(1_500_000));
        assert_eq!(parse_amount("1,500,000"), Some(1_500_000));
        assert_eq!(parse_amount("0"), None);
        assert_eq!(parse_amount("-5"), None);
        assert_eq!(parse_amount("12a"), None);
        assert_eq!(parse_amount(""), None);
        assert_eq!(parse_amount("99999999999999999999"), None);
    }
}
