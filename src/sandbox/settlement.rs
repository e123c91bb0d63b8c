//! Daily settlement files (CSV), one per provider, as a reconciliation job would download them.
//!
//! `GET /vnpay/settlement?date=YYYY-MM-DD`, `GET /momo/settlement?…`, `GET /zalopay/settlement?…`,
//! `GET /bank/{bank}/settlement?…` → `text/csv; charset=utf-8` with a `Content-Disposition` file name.
//! A file lists the **successful payments and the refunds** whose time (payment time / refund time /
//! credit time) falls on `date` **in GMT+7**, oldest first. Declined, pending and expired orders never
//! appear. Amounts are always the true amounts (a `wrong_amount` fault only affects the callback).
//!
//! Format: RFC 4180 — comma-separated, a header row, CRLF line ends, a field is double-quoted (with
//! `"` doubled) only when it contains `,`, `"`, CR or LF. Values are written verbatim (no
//! spreadsheet-formula escaping). Amounts are positive integers; the type column says whether a row
//! is a payment or a refund. Fees are flat sandbox constants per successful payment ([`VNPAY_FEE_VND`],
//! [`MOMO_FEE_VND`], [`ZALOPAY_FEE_VND`], [`BANK_FEE_VND`]); refunds carry fee 0.
//!
//! ## VNPAY — `vnpay_<TmnCode>_<yyyyMMdd>.csv`
//! | Column | Content |
//! |---|---|
//! | `TmnCode` | merchant code |
//! | `TransactionNo` | VNPAY transaction number of the row (the refund's own number for refunds) |
//! | `TxnRef` | `vnp_TxnRef` of the payment (of the refunded payment for refunds) |
//! | `TransactionType` | `01` payment, `02` full refund, `03` partial refund |
//! | `Amount` | đồng **× 100** (VNPAY's scale) |
//! | `Fee` | đồng × 100 (`165000` = 1,650 đ per payment) |
//! | `BankCode` | `NCB` unless the pay URL named a bank |
//! | `PayDate` | `dd/MM/yyyy HH:mm:ss`, GMT+7 |
//! | `OriginalTransactionNo` | refunds: the payment's `TransactionNo`; empty for payments |
//! | `Status` | `Thanh cong` (payment) / `Hoan tien thanh cong` (refund) |
//!
//! ## MoMo — `momo_<partnerCode>_<yyyyMMdd>.csv`
//! | Column | Content |
//! |---|---|
//! | `partnerCode` | |
//! | `transId` | MoMo transaction id of the row (the refund's own id for refunds) |
//! | `orderId` | payment: our `orderId`; refund: the refund request's `orderId` |
//! | `requestId` | the create / refund request's `requestId` |
//! | `transType` | `payment` or `refund` |
//! | `amount` | whole đồng |
//! | `fee` | whole đồng (1,000 per payment) |
//! | `payType` | `qr`, `napas` or `credit` (from `requestType`); empty for refunds |
//! | `transTime` | `yyyy-MM-dd HH:mm:ss`, GMT+7 |
//! | `originalTransId` | refunds: the payment's `transId`; empty for payments |
//! | `originalOrderId` | refunds: the payment's `orderId`; empty for payments |
//! | `status` | `SUCCESS` |
//!
//! ## ZaloPay — `zalopay_<app_id>_<yyyyMMdd>.csv`
//! | Column | Content |
//! |---|---|
//! | `app_id` | |
//! | `zp_trans_id` | ZaloPay transaction id of the payment (also on its refund rows) |
//! | `app_trans_id` | our `app_trans_id` of the payment |
//! | `type` | `PAYMENT` or `REFUND` |
//! | `refund_id` | refunds: ZaloPay's refund id; empty for payments |
//! | `m_refund_id` | refunds: our `m_refund_id`; empty for payments |
//! | `amount` | whole đồng |
//! | `fee` | whole đồng (1,000 per payment) |
//! | `server_time` | `yyyy-MM-dd HH:mm:ss`, GMT+7 |
//! | `status` | `SUCCESS` |
//!
//! ## Bank — `<bank>_<yyyyMMdd>.csv` (incoming credits to the collection account)
//! | Column | Content |
//! |---|---|
//! | `bank` | bank name (path segment) |
//! | `account` | credited account |
//! | `transaction_id` | bank transaction id (as in the notification) |
//! | `event_id` | `event_id` of the (first) notification |
//! | `amount` | whole đồng |
//! | `fee` | whole đồng (0: NAPAS 247 credits are free to the beneficiary) |
//! | `credited_at` | RFC 3339 with `+07:00` (as in the notification) |
//! | `description` | the transfer text as the payer typed it |
//!
//! Invariants: a ledger entry is appended exactly once per successful payment/refund, under the state
//! lock, at the moment the sandbox decides it; the file for a date is a pure function of the ledger.

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};

use super::{AppState, form_pairs, gmt7, pair};

/// Flat fee per successful VNPAY payment, đồng.
pub const VNPAY_FEE_VND: i64 = 1_650;
/// Flat fee per successful MoMo payment, đồng.
pub const MOMO_FEE_VND: i64 = 1_000;
/// Flat fee per successful ZaloPay payment, đồng.
pub const ZALOPAY_FEE_VND: i64 = 1_000;
/// Fee per incoming bank credit, đồng.
pub const BANK_FEE_VND: i64 = 0;

/// Which provider's book an entry belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Book {
    Vnpay,
    Momo,
    Zalopay,
    Bank(String),
}

/// A successful payment or refund.
#[derive(Debug, Clone)]
pub(crate) struct LedgerEntry {
    pub(crate) book: Book,
    pub(crate) refund: bool,
    /// VNPAY `TransactionType` (`01`/`02`/`03`); empty elsewhere.
    pub(crate) type_code: String,
    /// Provider id of this row (payment or refund).
    pub(crate) txn_id: String,
    /// Our reference: TxnRef / orderId (refund's orderId for MoMo refunds) / app_trans_id / transfer text.
    pub(crate) merchant_ref: String,
    /// MoMo requestId / ZaloPay m_refund_id / bank event_id; empty otherwise.
    pub(crate) request_ref: String,
    /// Refunds: the payment's provider id.
    pub(crate) original_txn_id: String,
    /// Refunds: the payment's merchant reference.
    pub(crate) original_ref: String,
    /// Whole đồng, > 0.
    pub(crate) amount: i64,
    pub(crate) at: DateTime<Utc>,
    /// VNPAY bank code / MoMo payType / bank account; empty otherwise.
    pub(crate) detail: String,
}

/// RFC 4180 field.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

fn csv_row(fields: &[String]) -> String {
    let mut line = fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
    line.push_str("\r\n");
    line
}

/// The `date` query parameter; `Err` is the plain-text 400 message.
fn parse_date(query: Option<&str>) -> Result<NaiveDate, String> {
    let pairs = form_pairs(query.unwrap_or("").as_bytes());
    let raw = pair(&pairs, "date").unwrap_or("");
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| format!("query parameter date=YYYY-MM-DD is required (got {raw:?})\n"))
}

fn bad_date(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

fn entries_on(app: &AppState, book: &Book, date: NaiveDate) -> Vec<LedgerEntry> {
    let st = app.state();
    let mut v: Vec<LedgerEntry> = st
        .ledger
        .iter()
        .filter(|e| &e.book == book && e.at.with_timezone(&gmt7()).date_naive() == date)
        .cloned()
        .collect();
    v.sort_by_key(|e| e.at);
    v
}

fn csv_response(filename: String, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        body,
    )
        .into_response()
}

fn safe_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// The VNPAY file for `date` (see module docs).
pub(crate) fn vnpay_csv(app: &AppState, date: NaiveDate) -> String {
    let tmn = &app.config.vnpay.tmn_code;
    let mut out = csv_row(
        &[
            "TmnCode",
            "TransactionNo",
            "TxnRef",
            "TransactionType",
            "Amount",
            "Fee",
            "BankCode",
            "PayDate",
            "OriginalTransactionNo",
            "Status",
        ]
        .map(String::from),
    );
    for e in entries_on(app, &Book::Vnpay, date) {
        let fee = if e.refund { 0 } else { VNPAY_FEE_VND };
        out.push_str(&csv_row(&[
            tmn.clone(),
            e.txn_id,
            e.merchant_ref,
            e.type_code,
            (i128::from(e.amount) * 100).to_string(),
            (i128::from(fee) * 100).to_string(),
            e.detail,
            e.at.with_timezone(&gmt7()).format("%d/%m/%Y %H:%M:%S").to_string(),
            e.original_txn_id,
            if e.refund { "Hoan tien thanh cong" } else { "Thanh cong" }.to_owned(),
        ]));
    }
    out
}

/// The MoMo file for `date` (see module docs).
pub(crate) fn momo_csv(app: &AppState, date: NaiveDate) -> String {
    let partner = &app.config.momo.partner_code;
    let mut out = csv_row(
        &[
            "partnerCode",
            "transId",
            "orderId",
            "requestId",
            "transType",
            "amount",
            "fee",
            "payType",
            "transTime",
            "originalTransId",
            "originalOrderId",
            "status",
        ]
        .map(String::from),
    );
    for e in entries_on(app, &Book::Momo, date) {
        let fee = if e.refund { 0 } else { MOMO_FEE_VND };
        out.push_str(&csv_row(&[
            partner.clone(),
            e.txn_id,
            e.merchant_ref,
            e.request_ref,
            if e.refund { "refund" } else { "payment" }.to_owned(),
            e.amount.to_string(),
            fee.to_string(),
            e.detail,
            e.at.with_timezone(&gmt7()).format("%Y-%m-%d %H:%M:%S").to_string(),
            e.original_txn_id,
            e.original_ref,
            "SUCCESS".to_owned(),
        ]));
    }
    out
}

/// The ZaloPay file for `date` (see module docs).
pub(crate) fn zalopay_csv(app: &AppState, date: NaiveDate) -> String {
    let app_id = app.config.zalopay.app_id.to_string();
    let mut out = csv_row(
        &[
            "app_id",
            "zp_trans_id",
            "app_trans_id",
            "type",
            "refund_id",
            "m_refund_id",
            "amount",
            "fee",
            "server_time",
            "status",
        ]
        .map(String::from),
    );
    for e in entries_on(app, &Book::Zalopay, date) {
        let fee = if e.refund { 0 } else { ZALOPAY_FEE_VND };
        let (zp_trans_id, refund_id) = if e.refund { (e.original_txn_id, e.txn_id) } else { (e.txn_id, String::new()) };
        out.push_str(&csv_row(&[
            app_id.clone(),
            zp_trans_id,
            if e.refund { e.original_ref } else { e.merchant_ref },
            if e.refund { "REFUND" } else { "PAYMENT" }.to_owned(),
            refund_id,
            e.request_ref,
            e.amount.to_string(),
            fee.to_string(),
            e.at.with_timezone(&gmt7()).format("%Y-%m-%d %H:%M:%S").to_string(),
            "SUCCESS".to_owned(),
        ]));
    }
    out
}

/// The file of bank `name` for `date` (see module docs).
pub(crate) fn bank_csv(app: &AppState, name: &str, date: NaiveDate) -> String {
    let mut out = csv_row(
        &["bank", "account", "transaction_id", "event_id", "amount", "fee", "credited_at", "description"]
            .map(String::from),
    );
    for e in entries_on(app, &Book::Bank(name.to_owned()), date) {
        out.push_str(&csv_row(&[
            name.to_owned(),
            e.detail,
            e.txn_id,
            e.request_ref,
            e.amount.to_string(),
            BANK_FEE_VND.to_string(),
            e.at.with_timezone(&gmt7()).to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            e.merchant_ref,
        ]));
    }
    out
}

/// `GET /vnpay/settlement?date=`
pub(crate) async fn vnpay(State(app): State<AppState>, RawQuery(q): RawQuery) -> Response {
    match parse_date(q.as_deref()) {
        Ok(d) => csv_response(
            format!("vnpay_{}_{}.csv", safe_name(&app.config.vnpay.tmn_code), d.format("%Y%m%d")),
            vnpay_csv(&app, d),
        ),
        Err(m) => bad_date(m),
    }
}

/// `GET /momo/settlement?date=`
pub(crate) async fn momo(State(app): State<AppState>, RawQuery(q): RawQuery) -> Response {
    match parse_date(q.as_deref()) {
        Ok(d) => csv_response(
            format!("momo_{}_{}.csv", safe_name(&app.config.momo.partner_code), d.format("%Y%m%d")),
            momo_csv(&app, d),
        ),
        Err(m) => bad_date(m),
    }
}

/// `GET /zalopay/settlement?date=`
pub(crate) async fn zalopay(State(app): State<AppState>, RawQuery(q): RawQuery) -> Response {
    match parse_date(q.as_deref()) {
        Ok(d) => csv_response(
            format!("zalopay_{}_{}.csv", app.config.zalopay.app_id, d.format("%Y%m%d")),
            zalopay_csv(&app, d),
        ),
        Err(m) => bad_date(m),
    }
}

/// `GET /bank/{bank}/settlement?date=`
pub(crate) async fn bank(State(app): State<AppState>, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    if app.bank(&name).is_none() {
        return (StatusCode::NOT_FOUND, format!("unknown bank {name:?}\n")).into_response();
    }
    match parse_date(q.as_deref()) {
        Ok(d) => csv_response(format!("{}_{}.csv", safe_name(&name), d.format("%Y%m%d")), bank_csv(&app, &name, d)),
        Err(m) => bad_date(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("x\ny"), "\"x\ny\"");
        assert_eq!(csv_row(&["a".into(), "b,c".into()]), "a,\"b,c\"\r\n");
    }
}
