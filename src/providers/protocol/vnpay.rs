//! VNPAY payment gateway, API 2.1.0: pay URL, IPN/return-URL verification, IPN reply, querydr and
//! refund (request builders and response verifiers), and a signer for simulators.
//!
//! Invariants:
//! - `vnp_SecureHash` is HMAC-SHA512 (lowercase hex) over: every `vnp_*` parameter except
//!   `vnp_SecureHash`/`vnp_SecureHashType`, empty values dropped, sorted by key (byte order), keys and
//!   values form-URL-encoded (`application/x-www-form-urlencoded`: space → `+`, `:` → `%3A`, `/` → `%2F`,
//!   `*-._` and ASCII alphanumerics kept), joined `k=v&k=v`. The pay URL's query string is exactly that
//!   canonical string plus `&vnp_SecureHash=…`, so what we sign is what VNPAY receives.
//! - querydr/refund requests and responses are signed over `|`-joined raw (unencoded) values in the
//!   fixed orders documented by VNPAY; a missing response field contributes an empty string.
//! - Every signature check is constant time (`signature::mac_matches_hex`) and happens before any field
//!   is interpreted; then `vnp_TmnCode` must equal ours.
//! - Amounts at this API are whole đồng (`i64`). `vnp_Amount` is đồng × 100: outbound uses checked
//!   multiplication; inbound must be an unsigned decimal integer, divisible by 100, and the result > 0.
//! - Dates on the wire are `yyyyMMddHHmmss` in GMT+7 (no DST in Vietnam); at the API they are UTC.
//! - Success is `vnp_ResponseCode == "00"` AND `vnp_TransactionStatus == "00"`, nothing else.
//! - No I/O, no clock: `now`, request ids and client IPs are arguments.
//!
//! Encoding caveat: VNPAY's own samples differ on a few characters (PHP `urlencode` encodes `*` and
//! `~`; JS `encodeURIComponent` keeps `!'()*~`). We follow the form-encoding rule in providers.md;
//! callers should keep `vnp_OrderInfo` to ASCII letters, digits, spaces and `-_.:/` so the choice never
//! matters.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::event::{BuildError, Outcome, PROVIDER_VNPAY, ProviderEvent, RefundVerdict, VerifyError, parse_digits_i64};
use super::signature::{hmac_sha512, hmac_sha512_hex, mac_matches_hex};

/// API version sent in `vnp_Version`.
pub const VERSION: &str = "2.1.0";
/// Sandbox pay endpoint (pass as `base_url` to [`pay_url`]).
pub const SANDBOX_PAY_URL: &str = "https://sandbox.vnpayment.vn/paymentv2/vpcpay.html";
/// Sandbox querydr/refund endpoint (POST JSON).
pub const SANDBOX_API_URL: &str = "https://sandbox.vnpayment.vn/merchant_webapi/api/transaction";

const SECURE_HASH: &str = "vnp_SecureHash";
const SECURE_HASH_TYPE: &str = "vnp_SecureHashType";
const DATE_FMT: &str = "%Y%m%d%H%M%S";

/// Merchant credentials. `Debug` redacts the secret.
#[derive(Debug, Clone, Deserialize)]
pub struct VnpayCredentials {
    pub tmn_code: String,
    pub hash_secret: SecretString,
}

/// `vnp_Locale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    Vn,
    En,
}

impl Locale {
    pub fn as_str(self) -> &'static str {
        match self {
            Locale::Vn => "vn",
            Locale::En => "en",
        }
    }
}

/// Inputs of a pay URL.
#[derive(Debug, Clone)]
pub struct PayRequest {
    /// `vnp_TxnRef`: our reference, unique within the day.
    pub txn_ref: String,
    /// Whole đồng (sent ×100).
    pub amount_vnd: i64,
    pub order_info: String,
    pub return_url: String,
    pub ip_addr: String,
    pub locale: Locale,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub bank_code: Option<String>,
}

fn gmt7() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).expect("GMT+7 is a valid offset")
}

/// `yyyyMMddHHmmss` in GMT+7.
pub fn format_vn_datetime(t: DateTime<Utc>) -> String {
    t.with_timezone(&gmt7()).format(DATE_FMT).to_string()
}

/// Parse `yyyyMMddHHmmss` (GMT+7) into UTC.
pub fn parse_vn_datetime(s: &str) -> Option<DateTime<Utc>> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let naive = NaiveDateTime::parse_from_str(s, DATE_FMT).ok()?;
    gmt7().from_local_datetime(&naive).single().map(|t| t.with_timezone(&Utc))
}

fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The canonical string that `vnp_SecureHash` signs (see module docs). Exposed for debugging and tests.
pub fn hash_data<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let mut kept: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .filter(|(k, v)| k.starts_with("vnp_") && *k != SECURE_HASH && *k != SECURE_HASH_TYPE && !v.is_empty())
        .collect();
    kept.sort_by(|a, b| a.0.cmp(b.0)); // stable: duplicate keys keep their order
    let mut out = String::new();
    for (i, (k, v)) in kept.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&form_encode(k));
        out.push('=');
        out.push_str(&form_encode(v));
    }
    out
}

/// `vnp_SecureHash` of `params` (lowercase hex HMAC-SHA512 over [`hash_data`]).
pub fn secure_hash<K: AsRef<str>, V: AsRef<str>>(secret: &SecretString, params: &[(K, V)]) -> String {
    hmac_sha512_hex(secret, &hash_data(params))
}

/// Signed query string (`canonical&vnp_SecureHash=…`, no leading `?`) for arbitrary `vnp_*` params.
/// Used by [`pay_url`] and by simulators to produce IPN / return-URL queries.
pub fn sign_params<K: AsRef<str>, V: AsRef<str>>(secret: &SecretString, params: &[(K, V)]) -> String {
    let data = hash_data(params);
    let hash = hmac_sha512_hex(secret, &data);
    if data.is_empty() { format!("{SECURE_HASH}={hash}") } else { format!("{data}&{SECURE_HASH}={hash}") }
}

/// Decode a raw query string (with or without leading `?`) into pairs, form-decoding keys and values.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    let q = query.strip_prefix('?').unwrap_or(query);
    form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn to_vnp_amount(amount_vnd: i64) -> Result<i64, BuildError> {
    if amount_vnd <= 0 {
        return Err(BuildError::InvalidAmount(format!("{amount_vnd} must be > 0")));
    }
    amount_vnd.checked_mul(100).ok_or_else(|| BuildError::InvalidAmount(format!("{amount_vnd} × 100 overflows")))
}

/// Exact inverse of ×100: rejects non-digits, overflow, non-multiples of 100 and zero.
fn from_vnp_amount(field: &str, raw: &str) -> Result<i64, VerifyError> {
    let v = parse_digits_i64(field, raw)?;
    if v % 100 != 0 {
        return Err(VerifyError::amount(field, "not a multiple of 100"));
    }
    let vnd = v / 100;
    if vnd <= 0 {
        return Err(VerifyError::amount(field, "must be > 0"));
    }
    Ok(vnd)
}

fn require_nonempty(field: &str, v: &str) -> Result<(), BuildError> {
    if v.is_empty() { Err(BuildError::field(field, "must not be empty")) } else { Ok(()) }
}

fn require_txn_ref(v: &str) -> Result<(), BuildError> {
    require_nonempty("vnp_TxnRef", v)?;
    if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err(BuildError::field("vnp_TxnRef", "only ASCII letters, digits and -_. are allowed"));
    }
    Ok(())
}

/// Full redirect URL: `{base_url}?{signed query}`. `base_url` is the complete endpoint, e.g.
/// [`SANDBOX_PAY_URL`].
pub fn pay_url(base_url: &str, creds: &VnpayCredentials, req: &PayRequest) -> Result<String, BuildError> {
    let amount = to_vnp_amount(req.amount_vnd)?;
    require_txn_ref(&req.txn_ref)?;
    require_nonempty("vnp_TmnCode", &creds.tmn_code)?;
    require_nonempty("vnp_OrderInfo", &req.order_info)?;
    require_nonempty("vnp_ReturnUrl", &req.return_url)?;
    require_nonempty("vnp_IpAddr", &req.ip_addr)?;
    if req.expires_at <= req.created_at {
        return Err(BuildError::field("vnp_ExpireDate", "must be after vnp_CreateDate"));
    }
    let mut params: Vec<(&str, String)> = vec![
        ("vnp_Version", VERSION.to_owned()),
        ("vnp_Command", "pay".to_owned()),
        ("vnp_TmnCode", creds.tmn_code.clone()),
        ("vnp_Amount", amount.to_string()),
        ("vnp_CreateDate", format_vn_datetime(req.created_at)),
        ("vnp_ExpireDate", format_vn_datetime(req.expires_at)),
        ("vnp_CurrCode", "VND".to_owned()),
        ("vnp_IpAddr", req.ip_addr.clone()),
        ("vnp_Locale", req.locale.as_str().to_owned()),
        ("vnp_OrderInfo", req.order_info.clone()),
        ("vnp_OrderType", "other".to_owned()),
        ("vnp_ReturnUrl", req.return_url.clone()),
        ("vnp_TxnRef", req.txn_ref.clone()),
    ];
    if let Some(bank) = req.bank_code.as_deref().filter(|b| !b.is_empty()) {
        params.push(("vnp_BankCode", bank.to_owned()));
    }
    let sep = if base_url.contains('?') { '&' } else { '?' };
    Ok(format!("{base_url}{sep}{}", sign_params(&creds.hash_secret, &params)))
}

/// Check `vnp_SecureHash` of a query (IPN, return URL, or a pay URL in tests) and return the `vnp_*`
/// fields as a lookup. Rejects duplicated `vnp_*` keys (ambiguous).
pub fn verify_query_signature<'a>(
    creds: &VnpayCredentials,
    query: &'a [(String, String)],
) -> Result<Fields<'a>, VerifyError> {
    for (i, (k, _)) in query.iter().enumerate() {
        if k.starts_with("vnp_") && query[..i].iter().any(|(k2, _)| k2 == k) {
            return Err(VerifyError::Duplicate(k.clone()));
        }
    }
    let provided = query
        .iter()
        .find(|(k, _)| k == SECURE_HASH)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| VerifyError::missing(SECURE_HASH))?;
    let expected = hmac_sha512(creds.hash_secret.expose_secret().as_bytes(), hash_data(query).as_bytes());
    if !mac_matches_hex(&expected, provided) {
        return Err(VerifyError::BadSignature);
    }
    Ok(Fields(query))
}

/// Verified `vnp_*` query fields.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a>(&'a [(String, String)]);

impl<'a> Fields<'a> {
    /// Value of `key`, `None` when absent or empty.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }
    fn require(&self, key: &str) -> Result<&'a str, VerifyError> {
        self.get(key).ok_or_else(|| VerifyError::missing(key))
    }
}

/// Human-readable meaning of a `vnp_ResponseCode` (pay/IPN).
pub fn response_code_text(code: &str) -> &'static str {
    match code {
        "00" => "success",
        "07" => "debited but suspicious",
        "09" => "internet banking not registered",
        "10" => "wrong authentication more than 3 times",
        "11" => "payment timed out",
        "24" => "customer cancelled",
        "51" => "insufficient balance",
        "65" => "daily limit exceeded",
        "75" => "bank under maintenance",
        _ => "unknown response code",
    }
}

/// Human-readable meaning of a `vnp_TransactionStatus`.
pub fn transaction_status_text(code: &str) -> &'static str {
    match code {
        "00" => "success",
        "01" => "not completed",
        "02" => "error",
        "04" => "reversed",
        "05" => "refund processing",
        "06" => "refund sent to bank",
        "07" => "suspected fraud",
        "09" => "refund rejected",
        _ => "unknown transaction status",
    }
}

/// Outcome rule shared by IPN and querydr.
/// - `00`/`00` → Succeeded (the only success).
/// - TransactionStatus `01` (not completed) or ResponseCode/TransactionStatus `07` (debited but
///   suspicious / suspected fraud: money may have moved, needs review or a later querydr) → Pending.
/// - anything else → Failed.
fn outcome_of(response_code: &str, status: &str) -> Outcome {
    if response_code == "00" && status == "00" {
        Outcome::Succeeded
    } else if status == "01" || status == "07" || response_code == "07" {
        Outcome::Pending
    } else {
        Outcome::Failed {
            reason: format!(
                "vnp_ResponseCode {response_code} ({}), vnp_TransactionStatus {status} ({})",
                response_code_text(response_code),
                transaction_status_text(status)
            ),
        }
    }
}

/// Verify an IPN (or return-URL) query and normalise it.
///
/// Order: signature → `vnp_TmnCode` → fields. The caller then applies the reply order in
/// [`IpnReply`] (order exists → amount equals ours → not already confirmed).
pub fn verify_ipn(creds: &VnpayCredentials, query: &[(String, String)]) -> Result<ProviderEvent, VerifyError> {
    let f = verify_query_signature(creds, query)?;
    if f.require("vnp_TmnCode")? != creds.tmn_code {
        return Err(VerifyError::WrongMerchant);
    }
    let txn_ref = f.require("vnp_TxnRef")?;
    let amount = from_vnp_amount("vnp_Amount", f.require("vnp_Amount")?)?;
    let response_code = f.require("vnp_ResponseCode")?;
    let status = f.require("vnp_TransactionStatus")?;
    let pay_date = match f.get("vnp_PayDate") {
        Some(s) => {
            Some(parse_vn_datetime(s).ok_or_else(|| VerifyError::malformed("vnp_PayDate", "not yyyyMMddHHmmss"))?)
        }
        None => None,
    };
    let outcome = outcome_of(response_code, status);
    let paid_at =
        if outcome.is_success() { Some(pay_date.ok_or_else(|| VerifyError::missing("vnp_PayDate"))?) } else { None };
    Ok(ProviderEvent {
        provider: PROVIDER_VNPAY,
        merchant_ref: txn_ref.to_owned(),
        provider_txn_id: f.get("vnp_TransactionNo").map(str::to_owned),
        amount,
        outcome,
        provider_code: response_code.to_owned(),
        paid_at,
    })
}

/// The merchant's JSON reply to an IPN: `{"RspCode":"00","Message":"Confirm Success"}`.
///
/// Check order (providers.md): signature (97) → order exists (01) → amount (04) → not already
/// confirmed (02) → 00, also when a failed payment was recorded. 99 makes VNPAY retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpnReply {
    #[serde(rename = "RspCode")]
    pub rsp_code: String,
    #[serde(rename = "Message")]
    pub message: String,
}

impl IpnReply {
    fn new(code: &str, message: &str) -> Self {
        IpnReply { rsp_code: code.to_owned(), message: message.to_owned() }
    }
    /// `00` "Confirm Success".
    pub fn confirm_success() -> Self {
        Self::new("00", "Confirm Success")
    }
    /// `01` "Order not found".
    pub fn order_not_found() -> Self {
        Self::new("01", "Order not found")
    }
    /// `02` "Order already confirmed".
    pub fn order_already_confirmed() -> Self {
        Self::new("02", "Order already confirmed")
    }
    /// `04` "invalid amount".
    pub fn invalid_amount() -> Self {
        Self::new("04", "invalid amount")
    }
    /// `97` "Invalid signature".
    pub fn invalid_signature() -> Self {
        Self::new("97", "Invalid signature")
    }
    /// `99` "Unknown error" — VNPAY retries. (providers.md gives the code but not its message text.)
    pub fn unknown_error() -> Self {
        Self::new("99", "Unknown error")
    }
    /// Reply for an IPN that [`verify_ipn`] rejected: bad or missing signature, or a repeated
    /// `vnp_*` key (which of the two values was signed cannot be told) → 97; an amount that is not
    /// whole đồng → 04; anything else (wrong merchant, malformed fields) → 99.
    pub fn for_verify_error(e: &VerifyError) -> Self {
        match e {
            VerifyError::BadSignature | VerifyError::Duplicate(_) => Self::invalid_signature(),
            VerifyError::Missing(f) if f == SECURE_HASH => Self::invalid_signature(),
            VerifyError::InvalidAmount(..) => Self::invalid_amount(),
            _ => Self::unknown_error(),
        }
    }
    /// JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("two strings always serialise")
    }
}

// ---------------------------------------------------------------------------------------------
// querydr / refund (POST JSON to merchant_webapi/api/transaction)
// ---------------------------------------------------------------------------------------------

/// Field order of the querydr request hash.
pub const QUERYDR_REQUEST_HASH_FIELDS: &[&str] = &[
    "vnp_RequestId",
    "vnp_Version",
    "vnp_Command",
    "vnp_TmnCode",
    "vnp_TxnRef",
    "vnp_TransactionDate",
    "vnp_CreateDate",
    "vnp_IpAddr",
    "vnp_OrderInfo",
];
/// Field order of the refund request hash.
pub const REFUND_REQUEST_HASH_FIELDS: &[&str] = &[
    "vnp_RequestId",
    "vnp_Version",
    "vnp_Command",
    "vnp_TmnCode",
    "vnp_TransactionType",
    "vnp_TxnRef",
    "vnp_Amount",
    "vnp_TransactionNo",
    "vnp_TransactionDate",
    "vnp_CreateBy",
    "vnp_CreateDate",
    "vnp_IpAddr",
    "vnp_OrderInfo",
];
/// Field order of the querydr response hash.
pub const QUERYDR_RESPONSE_HASH_FIELDS: &[&str] = &[
    "vnp_ResponseId",
    "vnp_Command",
    "vnp_ResponseCode",
    "vnp_Message",
    "vnp_TmnCode",
    "vnp_TxnRef",
    "vnp_Amount",
    "vnp_BankCode",
    "vnp_PayDate",
    "vnp_TransactionNo",
    "vnp_TransactionType",
    "vnp_TransactionStatus",
    "vnp_OrderInfo",
    "vnp_PromotionCode",
    "vnp_PromotionAmount",
];
/// Field order of the refund response hash (querydr's without the two promotion fields).
pub const REFUND_RESPONSE_HASH_FIELDS: &[&str] = &[
    "vnp_ResponseId",
    "vnp_Command",
    "vnp_ResponseCode",
    "vnp_Message",
    "vnp_TmnCode",
    "vnp_TxnRef",
    "vnp_Amount",
    "vnp_BankCode",
    "vnp_PayDate",
    "vnp_TransactionNo",
    "vnp_TransactionType",
    "vnp_TransactionStatus",
    "vnp_OrderInfo",
];

/// Text of a JSON field as VNPAY hashes it: strings verbatim, integers in decimal, absent/null → "".
fn json_text(obj: &Map<String, Value>, key: &str) -> Result<String, VerifyError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(_) => Err(VerifyError::malformed(key, "expected a string or an integer")),
    }
}

/// `|`-joined values of `fields` taken from `obj`.
pub fn pipe_hash_data(obj: &Map<String, Value>, fields: &[&str]) -> Result<String, VerifyError> {
    let parts = fields.iter().map(|f| json_text(obj, f)).collect::<Result<Vec<_>, _>>()?;
    Ok(parts.join("|"))
}

fn sign_object(secret: &SecretString, obj: &mut Map<String, Value>, fields: &[&str]) {
    let data = pipe_hash_data(obj, fields).expect("objects we build hold only strings");
    obj.insert(SECURE_HASH.to_owned(), Value::String(hmac_sha512_hex(secret, &data)));
}

fn verify_object<'a>(
    creds: &VnpayCredentials,
    body: &'a Value,
    fields: &[&str],
) -> Result<&'a Map<String, Value>, VerifyError> {
    let obj = body.as_object().ok_or_else(|| VerifyError::Body("expected a JSON object".into()))?;
    let provided = match obj.get(SECURE_HASH) {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        _ => return Err(VerifyError::missing(SECURE_HASH)),
    };
    let data = pipe_hash_data(obj, fields)?;
    let expected = hmac_sha512(creds.hash_secret.expose_secret().as_bytes(), data.as_bytes());
    if !mac_matches_hex(&expected, provided) {
        return Err(VerifyError::BadSignature);
    }
    let tmn = json_text(obj, "vnp_TmnCode")?;
    if tmn != creds.tmn_code {
        return Err(VerifyError::WrongMerchant);
    }
    Ok(obj)
}

fn require_request_id(id: &str) -> Result<(), BuildError> {
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(BuildError::field("vnp_RequestId", "must be 1–32 ASCII alphanumerics"));
    }
    Ok(())
}

/// Inputs of a querydr (transaction status query).
#[derive(Debug, Clone)]
pub struct QueryDrRequest {
    /// ≤ 32 alphanumerics, unique per day.
    pub request_id: String,
    pub txn_ref: String,
    /// `vnp_CreateDate` of the original pay request.
    pub transaction_date: DateTime<Utc>,
    /// Now.
    pub create_date: DateTime<Utc>,
    /// Our server's IP.
    pub ip_addr: String,
    pub order_info: String,
}

/// Signed querydr JSON body.
pub fn querydr_request(creds: &VnpayCredentials, req: &QueryDrRequest) -> Result<Value, BuildError> {
    require_request_id(&req.request_id)?;
    require_txn_ref(&req.txn_ref)?;
    require_nonempty("vnp_IpAddr", &req.ip_addr)?;
    require_nonempty("vnp_OrderInfo", &req.order_info)?;
    let mut obj = Map::new();
    for (k, v) in [
        ("vnp_RequestId", req.request_id.clone()),
        ("vnp_Version", VERSION.to_owned()),
        ("vnp_Command", "querydr".to_owned()),
        ("vnp_TmnCode", creds.tmn_code.clone()),
        ("vnp_TxnRef", req.txn_ref.clone()),
        ("vnp_OrderInfo", req.order_info.clone()),
        ("vnp_TransactionDate", format_vn_datetime(req.transaction_date)),
        ("vnp_CreateDate", format_vn_datetime(req.create_date)),
        ("vnp_IpAddr", req.ip_addr.clone()),
    ] {
        obj.insert(k.to_owned(), Value::String(v));
    }
    sign_object(&creds.hash_secret, &mut obj, QUERYDR_REQUEST_HASH_FIELDS);
    Ok(Value::Object(obj))
}

/// A verified querydr response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryDrResult {
    /// API result (`00` ok, `02` bad TmnCode, `03` bad format, `91` not found, `94` duplicate,
    /// `97` bad checksum, `99` other).
    pub response_code: String,
    pub message: String,
    /// The transaction's state, present when `response_code == "00"`.
    pub event: Option<ProviderEvent>,
}

/// Verify a querydr response (signature over [`QUERYDR_RESPONSE_HASH_FIELDS`], then TmnCode) and,
/// when the query succeeded, normalise the transaction it describes.
pub fn verify_querydr_response(creds: &VnpayCredentials, body: &Value) -> Result<QueryDrResult, VerifyError> {
    let obj = verify_object(creds, body, QUERYDR_RESPONSE_HASH_FIELDS)?;
    let response_code = json_text(obj, "vnp_ResponseCode")?;
    if response_code.is_empty() {
        return Err(VerifyError::missing("vnp_ResponseCode"));
    }
    let message = json_text(obj, "vnp_Message")?;
    if response_code != "00" {
        return Ok(QueryDrResult { response_code, message, event: None });
    }
    let txn_ref = json_text(obj, "vnp_TxnRef")?;
    if txn_ref.is_empty() {
        return Err(VerifyError::missing("vnp_TxnRef"));
    }
    let amount = from_vnp_amount("vnp_Amount", &json_text(obj, "vnp_Amount")?)?;
    let status = json_text(obj, "vnp_TransactionStatus")?;
    if status.is_empty() {
        return Err(VerifyError::missing("vnp_TransactionStatus"));
    }
    // For querydr the transaction's own state is vnp_TransactionStatus; vnp_ResponseCode is the API's.
    let outcome = outcome_of("00", &status);
    let paid_at = if outcome.is_success() {
        let d = json_text(obj, "vnp_PayDate")?;
        Some(parse_vn_datetime(&d).ok_or_else(|| VerifyError::malformed("vnp_PayDate", "not yyyyMMddHHmmss"))?)
    } else {
        None
    };
    let txn_no = json_text(obj, "vnp_TransactionNo")?;
    Ok(QueryDrResult {
        response_code,
        message,
        event: Some(ProviderEvent {
            provider: PROVIDER_VNPAY,
            merchant_ref: txn_ref,
            provider_txn_id: Some(txn_no).filter(|s| !s.is_empty()),
            amount,
            outcome,
            provider_code: status,
            paid_at,
        }),
    })
}

/// `vnp_TransactionType` of a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundKind {
    /// `02`
    Full,
    /// `03`
    Partial,
}

impl RefundKind {
    pub fn code(self) -> &'static str {
        match self {
            RefundKind::Full => "02",
            RefundKind::Partial => "03",
        }
    }
}

/// Inputs of a refund.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub request_id: String,
    pub kind: RefundKind,
    pub txn_ref: String,
    /// Whole đồng to refund (sent ×100).
    pub amount_vnd: i64,
    /// VNPAY's `vnp_TransactionNo` of the original payment, when known (empty in the hash otherwise).
    pub transaction_no: Option<String>,
    /// `vnp_CreateDate` of the original pay request.
    pub transaction_date: DateTime<Utc>,
    /// Operator who initiated the refund.
    pub create_by: String,
    pub create_date: DateTime<Utc>,
    pub ip_addr: String,
    pub order_info: String,
}

/// Signed refund JSON body.
pub fn refund_request(creds: &VnpayCredentials, req: &RefundRequest) -> Result<Value, BuildError> {
    require_request_id(&req.request_id)?;
    require_txn_ref(&req.txn_ref)?;
    let amount = to_vnp_amount(req.amount_vnd)?;
    require_nonempty("vnp_CreateBy", &req.create_by)?;
    require_nonempty("vnp_IpAddr", &req.ip_addr)?;
    require_nonempty("vnp_OrderInfo", &req.order_info)?;
    let mut obj = Map::new();
    for (k, v) in [
        ("vnp_RequestId", req.request_id.clone()),
        ("vnp_Version", VERSION.to_owned()),
        ("vnp_Command", "refund".to_owned()),
        ("vnp_TmnCode", creds.tmn_code.clone()),
        ("vnp_TransactionType", req.kind.code().to_owned()),
        ("vnp_TxnRef", req.txn_ref.clone()),
        ("vnp_Amount", amount.to_string()),
        ("vnp_TransactionNo", req.transaction_no.clone().unwrap_or_default()),
        ("vnp_TransactionDate", format_vn_datetime(req.transaction_date)),
        ("vnp_CreateBy", req.create_by.clone()),
        ("vnp_CreateDate", format_vn_datetime(req.create_date)),
        ("vnp_IpAddr", req.ip_addr.clone()),
        ("vnp_OrderInfo", req.order_info.clone()),
    ] {
        obj.insert(k.to_owned(), Value::String(v));
    }
    sign_object(&creds.hash_secret, &mut obj, REFUND_REQUEST_HASH_FIELDS);
    Ok(Value::Object(obj))
}

/// A verified refund response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundResult {
    /// `00` accepted; `02` bad TmnCode, `03` bad format, `91` not found, `94` duplicate request,
    /// `95` original not successful, `97` bad checksum, `99` other.
    pub response_code: String,
    pub message: String,
    pub txn_ref: String,
    /// Refunded whole đồng, when present.
    pub amount_vnd: Option<i64>,
    pub transaction_no: Option<String>,
    pub transaction_type: String,
    pub transaction_status: String,
}

impl RefundResult {
    /// VNPAY accepted the refund request.
    pub fn accepted(&self) -> bool {
        self.response_code == "00"
    }

    /// What this answer says about the refund: `00` made it; `94` (a request with this id was
    /// already received, so an earlier one may have gone through) and `99` (an unspecified error)
    /// leave it undecided; every other code is a refusal that made nothing.
    pub fn verdict(&self) -> RefundVerdict {
        let what = format!("VNPAY refund {}: {}", self.response_code, self.message);
        match self.response_code.as_str() {
            "00" => RefundVerdict::Made,
            "94" | "99" => RefundVerdict::Undecided(what),
            _ => RefundVerdict::Refused(what),
        }
    }
}

/// Verify a refund response (signature over [`REFUND_RESPONSE_HASH_FIELDS`], then TmnCode).
pub fn verify_refund_response(creds: &VnpayCredentials, body: &Value) -> Result<RefundResult, VerifyError> {
    let obj = verify_object(creds, body, REFUND_RESPONSE_HASH_FIELDS)?;
    let response_code = json_text(obj, "vnp_ResponseCode")?;
    if response_code.is_empty() {
        return Err(VerifyError::missing("vnp_ResponseCode"));
    }
    let raw_amount = json_text(obj, "vnp_Amount")?;
    let amount_vnd = if raw_amount.is_empty() { None } else { Some(from_vnp_amount("vnp_Amount", &raw_amount)?) };
    Ok(RefundResult {
        response_code,
        message: json_text(obj, "vnp_Message")?,
        txn_ref: json_text(obj, "vnp_TxnRef")?,
        amount_vnd,
        transaction_no: Some(json_text(obj, "vnp_TransactionNo")?).filter(|s| !s.is_empty()),
        transaction_type: json_text(obj, "vnp_TransactionType")?,
        transaction_status: json_text(obj, "vnp_TransactionStatus")?,
    })
}

/// For simulators: add `vnp_SecureHash` to a querydr response object.
pub fn sign_querydr_response(secret: &SecretString, body: &mut Value) -> Result<(), VerifyError> {
    sign_response(secret, body, QUERYDR_RESPONSE_HASH_FIELDS)
}

/// For simulators: add `vnp_SecureHash` to a refund response object.
pub fn sign_refund_response(secret: &SecretString, body: &mut Value) -> Result<(), VerifyError> {
    sign_response(secret, body, REFUND_RESPONSE_HASH_FIELDS)
}

fn sign_response(secret: &SecretString, body: &mut Value, fields: &[&str]) -> Result<(), VerifyError> {
    let obj = body.as_object_mut().ok_or_else(|| VerifyError::Body("expected a JSON object".into()))?;
    let data = pipe_hash_data(obj, fields)?;
    obj.insert(SECURE_HASH.to_owned(), Value::String(hmac_sha512_hex(secret, &data)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const V1_STRING: &str = "vnp_Amount=1000000&vnp_BankCode=NCB&vnp_BankTranNo=VNP14422574&vnp_CardType=ATM&vnp_OrderInfo=Thanh+toan+don+hang+2024-05-21T02%3A17%3A31.249Z&vnp_PayDate=20240521091806&vnp_ResponseCode=00&vnp_TmnCode=TEST_TMN_CODE&vnp_TransactionNo=14422574&vnp_TransactionStatus=00&vnp_TxnRef=1716257871703";
    const V1_HASH: &str = "649982421beb422556a1374713c74e58e716ecbd05007c0c0e1f7effdfaf361dbf146889ca446139afe11b9954c4d5c486e99e3b86fcfab6957f29eb0be72895";
    const V2_HASH: &str = "503194f6d93b57b357b2d1d09742565e67e86d771352c5dca4fc8d39df3d392c6b3809add9405f97cfb9631f445e36c80656cfbf47eac67d97fa165865c13e1b";

    fn creds() -> VnpayCredentials {
        VnpayCredentials { tmn_code: "TEST_TMN_CODE".into(), hash_secret: SecretString::from("test_secret") }
    }

    /// The vector's fields, decoded, in a deliberately unsorted order.
    fn vector_params(response_code: &str) -> Vec<(String, String)> {
        [
            ("vnp_TxnRef", "1716257871703"),
            ("vnp_Amount", "1000000"),
            ("vnp_TmnCode", "TEST_TMN_CODE"),
            ("vnp_BankCode", "NCB"),
            ("vnp_BankTranNo", "VNP14422574"),
            ("vnp_CardType", "ATM"),
            ("vnp_OrderInfo", "Thanh toan don hang 2024-05-21T02:17:31.249Z"),
            ("vnp_PayDate", "20240521091806"),
            ("vnp_ResponseCode", response_code),
            ("vnp_TransactionNo", "14422574"),
            ("vnp_TransactionStatus", "00"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn with_hash(mut p: Vec<(String, String)>, hash: &str) -> Vec<(String, String)> {
        p.push((SECURE_HASH.into(), hash.into()));
        p
    }

    #[test]
    fn vector_1_canonical_string_and_hash() {
        let p = vector_params("00");
        assert_eq!(hash_data(&p), V1_STRING);
        assert_eq!(secure_hash(&creds().hash_secret, &p), V1_HASH);
        assert_eq!(hmac_sha512_hex(&creds().hash_secret, V1_STRING), V1_HASH);
    }

    #[test]
    fn vector_2_response_code_99() {
        let p = vector_params("99");
        assert_eq!(hash_data(&p), V1_STRING.replace("vnp_ResponseCode=00", "vnp_ResponseCode=99"));
        assert_eq!(secure_hash(&creds().hash_secret, &p), V2_HASH);
    }

    #[test]
    fn vector_1_verifies_as_ipn() {
        let q = parse_query(&format!("{V1_STRING}&vnp_SecureHashType=HmacSHA512&vnp_SecureHash={V1_HASH}"));
        let ev = verify_ipn(&creds(), &q).unwrap();
        assert_eq!(
            ev,
            ProviderEvent {
                provider: "vnpay",
                merchant_ref: "1716257871703".into(),
                provider_txn_id: Some("14422574".into()),
                amount: 10_000,
                outcome: Outcome::Succeeded,
                provider_code: "00".into(),
                paid_at: Some(Utc.with_ymd_and_hms(2024, 5, 21, 2, 18, 6).unwrap()),
            }
        );
        // Uppercase hex is accepted too.
        let q2 = with_hash(vector_params("00"), &V1_HASH.to_uppercase());
        assert!(verify_ipn(&creds(), &q2).is_ok());
    }

    #[test]
    fn vector_2_is_a_failed_payment() {
        let ev = verify_ipn(&creds(), &with_hash(vector_params("99"), V2_HASH)).unwrap();
        assert!(matches!(ev.outcome, Outcome::Failed { .. }));
        assert_eq!(ev.provider_code, "99");
        assert_eq!(ev.paid_at, None);
    }

    #[test]
    fn empty_values_and_foreign_keys_are_ignored() {
        let mut p = vector_params("00");
        p.push(("vnp_Extra".into(), String::new()));
        p.push(("utm_source".into(), "x y".into()));
        p.push((SECURE_HASH_TYPE.into(), "HmacSHA512".into()));
        assert_eq!(hash_data(&p), V1_STRING);
    }

    fn pay_req() -> PayRequest {
        let created = Utc.with_ymd_and_hms(2024, 12, 31, 17, 30, 0).unwrap(); // 2025-01-01 00:30 GMT+7
        PayRequest {
            txn_ref: "ORD-2025-0001".into(),
            amount_vnd: 150_000,
            order_info: "Thanh toan phi truoc ba: ho so 12/34".into(),
            return_url: "https://paygate.example.vn/return?x=1".into(),
            ip_addr: "203.0.113.5".into(),
            locale: Locale::Vn,
            created_at: created,
            expires_at: created + chrono::Duration::minutes(15),
            bank_code: None,
        }
    }

    #[test]
    fn pay_url_round_trip() {
        let url = pay_url(SANDBOX_PAY_URL, &creds(), &pay_req()).unwrap();
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, SANDBOX_PAY_URL);
        assert!(query.contains("vnp_CreateDate=20250101003000"));
        assert!(query.contains("vnp_ExpireDate=20250101004500"));
        assert!(query.contains("vnp_Amount=15000000&"));
        assert!(query.contains("vnp_OrderInfo=Thanh+toan+phi+truoc+ba%3A+ho+so+12%2F34"));
        assert!(query.contains("vnp_ReturnUrl=https%3A%2F%2Fpaygate.example.vn%2Freturn%3Fx%3D1"));
        assert!(!query.contains("vnp_BankCode"));
        assert!(!query.contains("vnp_SecureHashType"));
        let q = parse_query(query);
        let f = verify_query_signature(&creds(), &q).unwrap();
        assert_eq!(f.get("vnp_Version"), Some("2.1.0"));
        assert_eq!(f.get("vnp_Command"), Some("pay"));
        assert_eq!(f.get("vnp_CurrCode"), Some("VND"));
        assert_eq!(f.get("vnp_OrderType"), Some("other"));
        assert_eq!(f.get("vnp_Locale"), Some("vn"));
        assert_eq!(f.get("vnp_TxnRef"), Some("ORD-2025-0001"));
        assert_eq!(f.get("vnp_OrderInfo"), Some("Thanh toan phi truoc ba: ho so 12/34"));
        assert_eq!(from_vnp_amount("vnp_Amount", f.get("vnp_Amount").unwrap()), Ok(150_000));
        // Keys are sorted in the URL, hash last.
        let keys: Vec<&str> = q.iter().map(|(k, _)| k.as_str()).collect();
        let mut sorted = keys[..keys.len() - 1].to_vec();
        sorted.sort();
        assert_eq!(&keys[..keys.len() - 1], &sorted[..]);
        assert_eq!(keys.last(), Some(&SECURE_HASH));

        let mut with_bank = pay_req();
        with_bank.bank_code = Some("NCB".into());
        let url = pay_url(SANDBOX_PAY_URL, &creds(), &with_bank).unwrap();
        assert!(url.contains("vnp_BankCode=NCB"));
        assert!(verify_query_signature(&creds(), &parse_query(url.split_once('?').unwrap().1)).is_ok());
    }

    #[test]
    fn pay_url_rejects_bad_input() {
        for amount in [0, -1, i64::MAX / 100 + 1] {
            let mut r = pay_req();
            r.amount_vnd = amount;
            assert!(matches!(pay_url(SANDBOX_PAY_URL, &creds(), &r), Err(BuildError::InvalidAmount(_))), "{amount}");
        }
        let mut r = pay_req();
        r.amount_vnd = i64::MAX / 100;
        assert!(pay_url(SANDBOX_PAY_URL, &creds(), &r).is_ok());
        let mut r = pay_req();
        r.expires_at = r.created_at;
        assert!(pay_url(SANDBOX_PAY_URL, &creds(), &r).is_err());
        let mut r = pay_req();
        r.txn_ref = "a b".into();
        assert!(pay_url(SANDBOX_PAY_URL, &creds(), &r).is_err());
    }

    fn signed_ipn(overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut p = vector_params("00");
        for (k, v) in overrides {
            match p.iter_mut().find(|(pk, _)| pk == k) {
                Some(e) => e.1 = (*v).to_owned(),
                None => p.push(((*k).to_owned(), (*v).to_owned())),
            }
        }
        parse_query(&sign_params(&creds().hash_secret, &p))
    }

    #[test]
    fn simulator_sign_params_round_trip() {
        let q = signed_ipn(&[("vnp_Amount", "15000000"), ("vnp_TxnRef", "ORD-1")]);
        let ev = verify_ipn(&creds(), &q).unwrap();
        assert_eq!(ev.amount, 150_000);
        assert_eq!(ev.merchant_ref, "ORD-1");
    }

    #[test]
    fn tampering_rejected() {
        let q = signed_ipn(&[]);
        let mut amount = q.clone();
        amount.iter_mut().find(|(k, _)| k == "vnp_Amount").unwrap().1 = "100000000".into();
        assert_eq!(verify_ipn(&creds(), &amount), Err(VerifyError::BadSignature));

        let mut sig = q.clone();
        let h = &mut sig.iter_mut().find(|(k, _)| k == SECURE_HASH).unwrap().1;
        let flipped = if h.starts_with('0') { "1" } else { "0" };
        h.replace_range(0..1, flipped);
        assert_eq!(verify_ipn(&creds(), &sig), Err(VerifyError::BadSignature));

        let mut truncated = q.clone();
        truncated.iter_mut().find(|(k, _)| k == SECURE_HASH).unwrap().1.truncate(64);
        assert_eq!(verify_ipn(&creds(), &truncated), Err(VerifyError::BadSignature));

        let mut added = q.clone();
        added.push(("vnp_Extra".into(), "1".into()));
        assert_eq!(verify_ipn(&creds(), &added), Err(VerifyError::BadSignature));

        let no_hash: Vec<_> = q.iter().filter(|(k, _)| k != SECURE_HASH).cloned().collect();
        assert_eq!(verify_ipn(&creds(), &no_hash), Err(VerifyError::missing(SECURE_HASH)));

        let other_secret =
            VnpayCredentials { tmn_code: "TEST_TMN_CODE".into(), hash_secret: SecretString::from("other") };
        assert_eq!(verify_ipn(&other_secret, &q), Err(VerifyError::BadSignature));

        let mut dup = q.clone();
        dup.insert(0, ("vnp_Amount".into(), "1000000".into()));
        assert_eq!(verify_ipn(&creds(), &dup), Err(VerifyError::Duplicate("vnp_Amount".into())));
    }

    proptest::proptest! {
        /// Whatever the order info (any Unicode), the signed query survives encode → decode → verify.
        #[test]
        fn signed_query_round_trips(info in "\\PC{1,40}", amount in 1i64..=1_000_000_000_000) {
            let amount_x100 = (amount * 100).to_string();
            let q = signed_ipn(&[("vnp_OrderInfo", info.as_str()), ("vnp_Amount", amount_x100.as_str())]);
            let ev = verify_ipn(&creds(), &q).unwrap();
            proptest::prop_assert_eq!(ev.amount, amount);
            proptest::prop_assert_eq!(Fields(&q).get("vnp_OrderInfo"), Some(info.as_str()));
        }
    }

    #[test]
    fn wrong_tmn_rejected() {
        let q = signed_ipn(&[("vnp_TmnCode", "OTHERTMN")]);
        assert_eq!(verify_ipn(&creds(), &q), Err(VerifyError::WrongMerchant));
    }

    #[test]
    fn bad_amounts_rejected() {
        for bad in ["1000050", "-1000000", "+1000000", "99", "0", "1e6", "99999999999999999999", "10000.00"] {
            let q = signed_ipn(&[("vnp_Amount", bad)]);
            let err = verify_ipn(&creds(), &q).unwrap_err();
            assert!(matches!(err, VerifyError::InvalidAmount(..)), "{bad}: {err:?}");
            assert_eq!(IpnReply::for_verify_error(&err), IpnReply::invalid_amount());
        }
        let q = signed_ipn(&[("vnp_Amount", "922337203685477500")]);
        assert_eq!(verify_ipn(&creds(), &q).unwrap().amount, 9_223_372_036_854_775);
    }

    #[test]
    fn outcomes() {
        let pending = verify_ipn(&creds(), &signed_ipn(&[("vnp_TransactionStatus", "01")])).unwrap();
        assert_eq!(pending.outcome, Outcome::Pending);
        let cancelled =
            verify_ipn(&creds(), &signed_ipn(&[("vnp_ResponseCode", "24"), ("vnp_TransactionStatus", "02")])).unwrap();
        match cancelled.outcome {
            Outcome::Failed { reason } => assert!(reason.contains("customer cancelled"), "{reason}"),
            o => panic!("{o:?}"),
        }
        let missing_status: Vec<_> =
            signed_ipn(&[("vnp_TransactionStatus", "")]).into_iter().filter(|(_, v)| !v.is_empty()).collect();
        assert_eq!(verify_ipn(&creds(), &missing_status), Err(VerifyError::missing("vnp_TransactionStatus")));
        let bad_date = signed_ipn(&[("vnp_PayDate", "20241341000000")]);
        assert!(matches!(verify_ipn(&creds(), &bad_date), Err(VerifyError::Malformed(..))));
    }

    #[test]
    fn ipn_replies() {
        assert_eq!(IpnReply::confirm_success().to_json(), r#"{"RspCode":"00","Message":"Confirm Success"}"#);
        assert_eq!(IpnReply::order_not_found().to_json(), r#"{"RspCode":"01","Message":"Order not found"}"#);
        assert_eq!(
            IpnReply::order_already_confirmed().to_json(),
            r#"{"RspCode":"02","Message":"Order already confirmed"}"#
        );
        assert_eq!(IpnReply::invalid_amount().to_json(), r#"{"RspCode":"04","Message":"invalid amount"}"#);
        assert_eq!(IpnReply::invalid_signature().to_json(), r#"{"RspCode":"97","Message":"Invalid signature"}"#);
        assert_eq!(IpnReply::unknown_error().rsp_code, "99");
        assert_eq!(IpnReply::for_verify_error(&VerifyError::BadSignature), IpnReply::invalid_signature());
        assert_eq!(
            IpnReply::for_verify_error(&VerifyError::Duplicate("vnp_Amount".into())),
            IpnReply::invalid_signature()
        );
        assert_eq!(IpnReply::for_verify_error(&VerifyError::WrongMerchant), IpnReply::unknown_error());
    }

    #[test]
    fn dates_are_gmt7() {
        let t = Utc.with_ymd_and_hms(2024, 5, 21, 2, 18, 6).unwrap();
        assert_eq!(format_vn_datetime(t), "20240521091806");
        assert_eq!(parse_vn_datetime("20240521091806"), Some(t));
        assert_eq!(parse_vn_datetime("2024052109180"), None);
        assert_eq!(parse_vn_datetime("2024052109180x"), None);
    }

    fn querydr_req() -> QueryDrRequest {
        QueryDrRequest {
            request_id: "REQ20250101A".into(),
            txn_ref: "ORD-1".into(),
            transaction_date: Utc.with_ymd_and_hms(2024, 12, 31, 17, 30, 0).unwrap(),
            create_date: Utc.with_ymd_and_hms(2024, 12, 31, 18, 0, 0).unwrap(),
            ip_addr: "10.0.0.1".into(),
            order_info: "Query ORD-1".into(),
        }
    }

    #[test]
    fn querydr_request_hash_order() {
        let body = querydr_request(&creds(), &querydr_req()).unwrap();
        let expected_data =
            "REQ20250101A|2.1.0|querydr|TEST_TMN_CODE|ORD-1|20250101003000|20250101010000|10.0.0.1|Query ORD-1";
        assert_eq!(body["vnp_SecureHash"], hmac_sha512_hex(&creds().hash_secret, expected_data));
        assert_eq!(body["vnp_Command"], "querydr");
        let mut bad = querydr_req();
        bad.request_id = "x".repeat(33);
        assert!(querydr_request(&creds(), &bad).is_err());
    }

    fn querydr_response(status: &str) -> Value {
        serde_json::json!({
            "vnp_ResponseId": "4f3a",
            "vnp_Command": "querydr",
            "vnp_ResponseCode": "00",
            "vnp_Message": "QueryDR Success",
            "vnp_TmnCode": "TEST_TMN_CODE",
            "vnp_TxnRef": "ORD-1",
            "vnp_Amount": "15000000",
            "vnp_BankCode": "NCB",
            "vnp_PayDate": "20250101003512",
            "vnp_TransactionNo": "14422574",
            "vnp_TransactionType": "01",
            "vnp_TransactionStatus": status,
            "vnp_OrderInfo": "Thanh toan",
            "vnp_PromotionCode": "",
            "vnp_PromotionAmount": ""
        })
    }

    #[test]
    fn querydr_response_round_trip_and_tamper() {
        let mut body = querydr_response("00");
        sign_querydr_response(&creds().hash_secret, &mut body).unwrap();
        let data = "4f3a|querydr|00|QueryDR Success|TEST_TMN_CODE|ORD-1|15000000|NCB|20250101003512|14422574|01|00|Thanh toan||";
        assert_eq!(body["vnp_SecureHash"], hmac_sha512_hex(&creds().hash_secret, data));
        let r = verify_querydr_response(&creds(), &body).unwrap();
        let ev = r.event.unwrap();
        assert_eq!(ev.amount, 150_000);
        assert_eq!(ev.outcome, Outcome::Succeeded);
        assert_eq!(ev.paid_at, Some(Utc.with_ymd_and_hms(2024, 12, 31, 17, 35, 12).unwrap()));

        let mut tampered = body.clone();
        tampered["vnp_TransactionStatus"] = "02".into();
        assert_eq!(verify_querydr_response(&creds(), &tampered), Err(VerifyError::BadSignature));

        let mut other = querydr_response("00");
        other["vnp_TmnCode"] = "OTHER".into();
        sign_querydr_response(&creds().hash_secret, &mut other).unwrap();
        assert_eq!(verify_querydr_response(&creds(), &other), Err(VerifyError::WrongMerchant));

        let mut not_found = serde_json::json!({
            "vnp_ResponseId": "1", "vnp_Command": "querydr", "vnp_ResponseCode": "91",
            "vnp_Message": "Not found", "vnp_TmnCode": "TEST_TMN_CODE"
        });
        sign_querydr_response(&creds().hash_secret, &mut not_found).unwrap();
        let r = verify_querydr_response(&creds(), &not_found).unwrap();
        assert_eq!((r.response_code.as_str(), r.event), ("91", None));
    }

    #[test]
    fn refund_request_and_response() {
        let req = RefundRequest {
            request_id: "RF1".into(),
            kind: RefundKind::Partial,
            txn_ref: "ORD-1".into(),
            amount_vnd: 50_000,
            transaction_no: Some("14422574".into()),
            transaction_date: Utc.with_ymd_and_hms(2024, 12, 31, 17, 30, 0).unwrap(),
            create_by: "ops@paygate".into(),
            create_date: Utc.with_ymd_and_hms(2025, 1, 2, 3, 0, 0).unwrap(),
            ip_addr: "10.0.0.1".into(),
            order_info: "Hoan tien".into(),
        };
        let body = refund_request(&creds(), &req).unwrap();
        let data = "RF1|2.1.0|refund|TEST_TMN_CODE|03|ORD-1|5000000|14422574|20250101003000|ops@paygate|20250102100000|10.0.0.1|Hoan tien";
        assert_eq!(body["vnp_SecureHash"], hmac_sha512_hex(&creds().hash_secret, data));
        assert_eq!(RefundKind::Full.code(), "02");
        let mut bad = req.clone();
        bad.amount_vnd = -5;
        assert!(refund_request(&creds(), &bad).is_err());

        let mut resp = querydr_response("05");
        let obj = resp.as_object_mut().unwrap();
        obj.remove("vnp_PromotionCode");
        obj.remove("vnp_PromotionAmount");
        obj.insert("vnp_Command".into(), "refund".into());
        obj.insert("vnp_TransactionType".into(), "03".into());
        obj.insert("vnp_Amount".into(), 5_000_000.into()); // numbers are accepted too
        sign_refund_response(&creds().hash_secret, &mut resp).unwrap();
        let r = verify_refund_response(&creds(), &resp).unwrap();
        assert!(r.accepted());
        assert_eq!(r.amount_vnd, Some(50_000));
        assert_eq!(r.transaction_status, "05");
        let mut tampered = resp.clone();
        tampered["vnp_Amount"] = 6_000_000.into();
        assert_eq!(verify_refund_response(&creds(), &tampered), Err(VerifyError::BadSignature));
    }

    /// Only `00` made a refund; `94` and `99` may have, so they release nothing; the rest refused.
    #[test]
    fn refund_verdicts() {
        let answer = |code: &str| RefundResult {
            response_code: code.into(),
            message: "m".into(),
            txn_ref: "ORD-1".into(),
            amount_vnd: None,
            transaction_no: None,
            transaction_type: "03".into(),
            transaction_status: String::new(),
        };
        assert_eq!(answer("00").verdict(), RefundVerdict::Made);
        for code in ["94", "99"] {
            assert!(matches!(answer(code).verdict(), RefundVerdict::Undecided(_)), "{code}");
        }
        for code in ["02", "03", "91", "95", "97"] {
            assert!(matches!(answer(code).verdict(), RefundVerdict::Refused(_)), "{code}");
        }
    }
}
