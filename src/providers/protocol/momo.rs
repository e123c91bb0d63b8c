//! MoMo one-time payment (API v2): create request, IPN verification, query and refund request
//! builders, and an IPN signer for simulators.
//!
//! Invariants:
//! - Every MoMo signature is lowercase-hex HMAC-SHA256 (secret key) over the **raw, unencoded** string
//!   `k1=v1&k2=v2…` whose keys are listed in a fixed a–z order (the `*_SIGNATURE_FIELDS` constants);
//!   `accessKey` comes from our credentials, every other value from the message itself, numbers in
//!   plain decimal.
//! - IPN: the signature is checked in constant time before any field is interpreted; then
//!   `partnerCode` must equal ours; then `amount` must be a positive integer (whole đồng; MoMo has no
//!   minor unit).
//! - resultCode 0 and 9000 → Succeeded (9000 = authorized, which is final only with auto-capture, the
//!   default); 1000/7000/7002/8000 → Pending; anything else → Failed.
//! - UNCONFIRMED (providers.md): the IPN signature field list (consistent with MoMo's a–z rule but not
//!   on MoMo's own pages), the query and refund signature field lists (MoMo's a–z rule; not listed in
//!   providers.md), and the meanings of resultCode 1001–1006. Each list is a public constant and every
//!   function that uses one has a `*_with_fields` variant taking the list, so it can be changed by
//!   configuration without code changes.
//! - No I/O, no clock: request ids and times are arguments. The IPN reply is HTTP 204 with no body.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::event::{BuildError, Outcome, PROVIDER_MOMO, ProviderEvent, RefundVerdict, VerifyError};
use super::signature::{hmac_sha256, hmac_sha256_hex, mac_matches_hex};

/// Sandbox host.
pub const SANDBOX_HOST: &str = "https://test-payment.momo.vn";
/// Create path (POST JSON).
pub const CREATE_PATH: &str = "/v2/gateway/api/create";
/// Query path (POST JSON). From MoMo's docs, not providers.md.
pub const QUERY_PATH: &str = "/v2/gateway/api/query";
/// Refund path (POST JSON). From MoMo's docs, not providers.md.
pub const REFUND_PATH: &str = "/v2/gateway/api/refund";
/// HTTP status the merchant must answer an IPN with (within 15 s), empty body.
pub const IPN_REPLY_STATUS: u16 = 204;

/// Minimum/maximum amount for `captureWallet`.
pub const CAPTURE_WALLET_MIN_VND: i64 = 1_000;
pub const CAPTURE_WALLET_MAX_VND: i64 = 50_000_000;

/// Create-request signature keys (documented in providers.md).
pub const CREATE_SIGNATURE_FIELDS: &[&str] = &[
    "accessKey",
    "amount",
    "extraData",
    "ipnUrl",
    "orderId",
    "orderInfo",
    "partnerCode",
    "redirectUrl",
    "requestId",
    "requestType",
];
/// IPN signature keys. UNCONFIRMED in MoMo's own pages (consistent with its a–z rule).
pub const IPN_SIGNATURE_FIELDS: &[&str] = &[
    "accessKey",
    "amount",
    "extraData",
    "message",
    "orderId",
    "orderInfo",
    "orderType",
    "partnerCode",
    "payType",
    "requestId",
    "responseTime",
    "resultCode",
    "transId",
];
/// Query signature keys. UNCONFIRMED: MoMo's a–z rule, not listed in providers.md.
pub const QUERY_SIGNATURE_FIELDS: &[&str] = &["accessKey", "orderId", "partnerCode", "requestId"];
/// Refund signature keys. UNCONFIRMED: MoMo's a–z rule, not listed in providers.md.
pub const REFUND_SIGNATURE_FIELDS: &[&str] =
    &["accessKey", "amount", "description", "orderId", "partnerCode", "requestId", "transId"];

/// Partner credentials. `Debug` redacts the secret.
#[derive(Debug, Clone, Deserialize)]
pub struct MomoCredentials {
    pub partner_code: String,
    pub access_key: String,
    pub secret_key: SecretString,
}

/// `requestType` of a create request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestType {
    #[serde(rename = "captureWallet")]
    CaptureWallet,
    #[serde(rename = "payWithATM")]
    PayWithAtm,
    #[serde(rename = "payWithCC")]
    PayWithCc,
}

impl RequestType {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestType::CaptureWallet => "captureWallet",
            RequestType::PayWithAtm => "payWithATM",
            RequestType::PayWithCc => "payWithCC",
        }
    }
}

/// `lang`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Vi,
    En,
}

/// Inputs of a create request.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Idempotency key.
    pub request_id: String,
    /// Our reference (`^[0-9a-zA-Z]([-_.]*[0-9a-zA-Z]+)*$`).
    pub order_id: String,
    /// Whole đồng.
    pub amount: i64,
    pub order_info: String,
    pub redirect_url: String,
    pub ipn_url: String,
    pub request_type: RequestType,
    /// Base64 JSON or "".
    pub extra_data: String,
    pub lang: Lang,
}

/// JSON body of `POST /v2/gateway/api/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequestBody {
    pub partner_code: String,
    pub request_id: String,
    pub amount: i64,
    pub order_id: String,
    pub order_info: String,
    pub redirect_url: String,
    pub ipn_url: String,
    pub request_type: RequestType,
    pub extra_data: String,
    pub lang: Lang,
    pub signature: String,
}

/// `k=v&k=v` over `fields`, raw and unencoded; `values` must hold every key.
fn raw_signature_string(fields: &[&str], values: &Map<String, Value>) -> Result<String, String> {
    let mut out = String::new();
    for (i, k) in fields.iter().enumerate() {
        let v = match values.get(*k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(Value::Null) | None => return Err(format!("missing `{k}`")),
            Some(_) => return Err(format!("`{k}` must be a string or an integer")),
        };
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(&v);
    }
    Ok(out)
}

/// Checks MoMo's documented `orderId` pattern `^[0-9a-zA-Z]([-_.]*[0-9a-zA-Z]+)*$`, i.e. ASCII
/// alphanumerics and `-_.`, starting and ending with an alphanumeric.
pub fn is_valid_order_id(id: &str) -> bool {
    let b = id.as_bytes();
    let ok_char = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    !b.is_empty() && b.iter().all(ok_char) && b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric()
}

fn require_nonempty(field: &str, v: &str) -> Result<(), BuildError> {
    if v.is_empty() { Err(BuildError::field(field, "must not be empty")) } else { Ok(()) }
}

fn with_access_key(creds: &MomoCredentials, mut m: Map<String, Value>) -> Map<String, Value> {
    m.insert("accessKey".into(), Value::String(creds.access_key.clone()));
    m
}

/// The raw create signature string (exposed for tests and debugging).
pub fn create_signature_string(creds: &MomoCredentials, req: &CreateRequest) -> String {
    let body = unsigned_create_body(creds, req);
    let m = serde_json::to_value(&body).ok().and_then(|v| v.as_object().cloned()).unwrap_or_default();
    raw_signature_string(CREATE_SIGNATURE_FIELDS, &with_access_key(creds, m)).expect("create body has every field")
}

fn unsigned_create_body(creds: &MomoCredentials, req: &CreateRequest) -> CreateRequestBody {
    CreateRequestBody {
        partner_code: creds.partner_code.clone(),
        request_id: req.request_id.clone(),
        amount: req.amount,
        order_id: req.order_id.clone(),
        order_info: req.order_info.clone(),
        redirect_url: req.redirect_url.clone(),
        ipn_url: req.ipn_url.clone(),
        request_type: req.request_type,
        extra_data: req.extra_data.clone(),
        lang: req.lang,
        signature: String::new(),
    }
}

/// Signed create request body.
pub fn create_request(creds: &MomoCredentials, req: &CreateRequest) -> Result<CreateRequestBody, BuildError> {
    if req.amount <= 0 {
        return Err(BuildError::InvalidAmount(format!("{} must be > 0", req.amount)));
    }
    if req.request_type == RequestType::CaptureWallet
        && !(CAPTURE_WALLET_MIN_VND..=CAPTURE_WALLET_MAX_VND).contains(&req.amount)
    {
        return Err(BuildError::InvalidAmount(format!(
            "{} outside {CAPTURE_WALLET_MIN_VND}..={CAPTURE_WALLET_MAX_VND} for captureWallet",
            req.amount
        )));
    }
    if !is_valid_order_id(&req.order_id) {
        return Err(BuildError::field("orderId", "does not match ^[0-9a-zA-Z]([-_.]*[0-9a-zA-Z]+)*$"));
    }
    require_nonempty("partnerCode", &creds.partner_code)?;
    require_nonempty("requestId", &req.request_id)?;
    require_nonempty("orderInfo", &req.order_info)?;
    require_nonempty("redirectUrl", &req.redirect_url)?;
    require_nonempty("ipnUrl", &req.ipn_url)?;
    let mut body = unsigned_create_body(creds, req);
    body.signature = hmac_sha256_hex(&creds.secret_key, &create_signature_string(creds, req));
    Ok(body)
}

/// An IPN message (as MoMo sends it; also what a simulator builds and signs with [`sign_ipn`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpnMessage {
    pub partner_code: String,
    pub order_id: String,
    pub request_id: String,
    pub amount: i64,
    pub order_info: String,
    pub order_type: String,
    pub trans_id: i64,
    pub result_code: i64,
    pub message: String,
    pub pay_type: String,
    /// Unix milliseconds.
    pub response_time: i64,
    pub extra_data: String,
    pub signature: String,
}

/// For simulators: fill in `ipn.signature` using [`IPN_SIGNATURE_FIELDS`].
pub fn sign_ipn(creds: &MomoCredentials, ipn: &mut IpnMessage) {
    sign_ipn_with_fields(creds, ipn, IPN_SIGNATURE_FIELDS)
}

/// [`sign_ipn`] with an explicit signature field list.
pub fn sign_ipn_with_fields(creds: &MomoCredentials, ipn: &mut IpnMessage, fields: &[&str]) {
    let m = serde_json::to_value(&*ipn).ok().and_then(|v| v.as_object().cloned()).unwrap_or_default();
    let s = raw_signature_string(fields, &with_access_key(creds, m)).expect("IpnMessage has every IPN field");
    ipn.signature = hmac_sha256_hex(&creds.secret_key, &s);
}

fn text_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, VerifyError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(VerifyError::missing(key)),
        Some(_) => Err(VerifyError::malformed(key, "expected a string")),
    }
}

/// Integer field that MoMo sends as a JSON number; a decimal string is tolerated.
fn int_field(obj: &Map<String, Value>, key: &str) -> Result<i64, VerifyError> {
    match obj.get(key) {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| VerifyError::malformed(key, "not an i64 integer")),
        Some(Value::String(s)) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(VerifyError::malformed(key, "not an integer"));
            }
            s.parse().map_err(|_| VerifyError::malformed(key, "overflows i64"))
        }
        None | Some(Value::Null) => Err(VerifyError::missing(key)),
        Some(_) => Err(VerifyError::malformed(key, "expected an integer")),
    }
}

/// Normalise a resultCode.
pub fn outcome_of(result_code: i64, message: &str) -> Outcome {
    match result_code {
        0 | 9000 => Outcome::Succeeded,
        1000 | 7000 | 7002 | 8000 => Outcome::Pending,
        // 10–13 are documented errors; 1001–1006 (insufficient funds, rejected, …, user denied) are
        // UNCONFIRMED meanings — all of them, and anything unknown, are failures.
        code => Outcome::Failed { reason: format!("MoMo resultCode {code}: {message}") },
    }
}

/// What MoMo's answer to a refund request says about the refund: `resultCode` 0 made it; a
/// pending code (1000, 7000, 7002, 8000: still processing) or no integer `resultCode` at all leaves
/// it undecided; any other code is a refusal that made nothing.
pub fn refund_verdict(answer: &Value) -> RefundVerdict {
    let message = answer.get("message").and_then(Value::as_str).unwrap_or("");
    match answer.get("resultCode").and_then(Value::as_i64) {
        Some(0) => RefundVerdict::Made,
        Some(code) if outcome_of(code, message) == Outcome::Pending => {
            RefundVerdict::Undecided(format!("MoMo refund resultCode {code} (still processing): {message}"))
        }
        Some(code) => RefundVerdict::Refused(format!("MoMo refund resultCode {code}: {message}")),
        None => RefundVerdict::Undecided(format!("MoMo refund answer without a resultCode: {message}")),
    }
}

/// Verify a raw IPN body (JSON) with [`IPN_SIGNATURE_FIELDS`] and normalise it.
pub fn verify_ipn(creds: &MomoCredentials, body: &[u8]) -> Result<ProviderEvent, VerifyError> {
    verify_ipn_with_fields(creds, body, IPN_SIGNATURE_FIELDS)
}

/// [`verify_ipn`] with an explicit (configurable, UNCONFIRMED) signature field list.
pub fn verify_ipn_with_fields(
    creds: &MomoCredentials,
    body: &[u8],
    fields: &[&str],
) -> Result<ProviderEvent, VerifyError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| VerifyError::Body(e.to_string()))?;
    let obj = v.as_object().ok_or_else(|| VerifyError::Body("expected a JSON object".into()))?;
    let provided = text_field(obj, "signature").map_err(|_| VerifyError::missing("signature"))?;
    if provided.is_empty() {
        return Err(VerifyError::missing("signature"));
    }
    // `accessKey` always comes from our credentials, even if the message carries one.
    let data = raw_signature_string(fields, &with_access_key(creds, obj.clone())).map_err(VerifyError::Body)?;
    let expected = hmac_sha256(creds.secret_key.expose_secret().as_bytes(), data.as_bytes());
    if !mac_matches_hex(&expected, provided) {
        return Err(VerifyError::BadSignature);
    }
    if text_field(obj, "partnerCode")? != creds.partner_code {
        return Err(VerifyError::WrongMerchant);
    }
    let order_id = text_field(obj, "orderId")?;
    if order_id.is_empty() {
        return Err(VerifyError::missing("orderId"));
    }
    let amount = int_field(obj, "amount").map_err(|e| match e {
        VerifyError::Malformed(f, why) => VerifyError::InvalidAmount(f, why),
        e => e,
    })?;
    if amount <= 0 {
        return Err(VerifyError::amount("amount", "must be > 0"));
    }
    let result_code = int_field(obj, "resultCode")?;
    let message = text_field(obj, "message").unwrap_or_default();
    let trans_id = match obj.get("transId") {
        Some(Value::Null) | None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(_) => Some(int_field(obj, "transId")?.to_string()),
    };
    let outcome = outcome_of(result_code, message);
    let paid_at = if outcome.is_success() {
        let ms = int_field(obj, "responseTime")?;
        Some(
            chrono::DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| VerifyError::malformed("responseTime", "out of range"))?,
        )
    } else {
        None
    };
    Ok(ProviderEvent {
        provider: PROVIDER_MOMO,
        merchant_ref: order_id.to_owned(),
        provider_txn_id: trans_id,
        amount,
        outcome,
        provider_code: result_code.to_string(),
        paid_at,
    })
}

/// JSON body of `POST /v2/gateway/api/query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryRequestBody {
    pub partner_code: String,
    pub request_id: String,
    pub order_id: String,
    pub lang: Lang,
    pub signature: String,
}

/// Signed query (transaction status) request, signature over [`QUERY_SIGNATURE_FIELDS`].
pub fn query_request(
    creds: &MomoCredentials,
    request_id: &str,
    order_id: &str,
    lang: Lang,
) -> Result<QueryRequestBody, BuildError> {
    query_request_with_fields(creds, request_id, order_id, lang, QUERY_SIGNATURE_FIELDS)
}

/// [`query_request`] with an explicit (configurable, UNCONFIRMED) signature field list.
pub fn query_request_with_fields(
    creds: &MomoCredentials,
    request_id: &str,
    order_id: &str,
    lang: Lang,
    fields: &[&str],
) -> Result<QueryRequestBody, BuildError> {
    require_nonempty("requestId", request_id)?;
    if !is_valid_order_id(order_id) {
        return Err(BuildError::field("orderId", "does not match ^[0-9a-zA-Z]([-_.]*[0-9a-zA-Z]+)*$"));
    }
    let mut body = QueryRequestBody {
        partner_code: creds.partner_code.clone(),
        request_id: request_id.to_owned(),
        order_id: order_id.to_owned(),
        lang,
        signature: String::new(),
    };
    body.signature = sign_body(creds, &body, fields)?;
    Ok(body)
}

/// Inputs of a refund.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub request_id: String,
    /// A new, unique orderId for the refund itself (MoMo convention).
    pub order_id: String,
    /// Whole đồng to refund.
    pub amount: i64,
    /// MoMo `transId` of the original payment.
    pub trans_id: i64,
    pub description: String,
    pub lang: Lang,
}

/// JSON body of `POST /v2/gateway/api/refund`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundRequestBody {
    pub partner_code: String,
    pub order_id: String,
    pub request_id: String,
    pub amount: i64,
    pub trans_id: i64,
    pub lang: Lang,
    pub description: String,
    pub signature: String,
}

/// Signed refund request, signature over [`REFUND_SIGNATURE_FIELDS`].
pub fn refund_request(creds: &MomoCredentials, req: &RefundRequest) -> Result<RefundRequestBody, BuildError> {
    refund_request_with_fields(creds, req, REFUND_SIGNATURE_FIELDS)
}

/// [`refund_request`] with an explicit (configurable, UNCONFIRMED) signature field list.
pub fn refund_request_with_fields(
    creds: &MomoCredentials,
    req: &RefundRequest,
    fields: &[&str],
) -> Result<RefundRequestBody, BuildError> {
    if req.amount <= 0 {
        return Err(BuildError::InvalidAmount(format!("{} must be > 0", req.amount)));
    }
    if req.trans_id <= 0 {
        return Err(BuildError::field("transId", "must be > 0"));
    }
    require_nonempty("requestId", &req.request_id)?;
    if !is_valid_order_id(&req.order_id) {
        return Err(BuildError::field("orderId", "does not match ^[0-9a-zA-Z]([-_.]*[0-9a-zA-Z]+)*$"));
    }
    let mut body = RefundRequestBody {
        partner_code: creds.partner_code.clone(),
        order_id: req.order_id.clone(),
        request_id: req.request_id.clone(),
        amount: req.amount,
        trans_id: req.trans_id,
        lang: req.lang,
        description: req.description.clone(),
        signature: String::new(),
    };
    body.signature = sign_body(creds, &body, fields)?;
    Ok(body)
}

fn sign_body<T: Serialize>(creds: &MomoCredentials, body: &T, fields: &[&str]) -> Result<String, BuildError> {
    let m = serde_json::to_value(body).ok().and_then(|v| v.as_object().cloned()).unwrap_or_default();
    let s = raw_signature_string(fields, &with_access_key(creds, m)).map_err(|e| BuildError::field("signature", e))?;
    Ok(hmac_sha256_hex(&creds.secret_key, &s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn creds() -> MomoCredentials {
        MomoCredentials {
            partner_code: "MOMO".into(),
            access_key: "F8BBA842ECF85".into(),
            secret_key: SecretString::from("K951B6PE1waDMi640xX08PD3vg6EkVlz"),
        }
    }

    fn create_req() -> CreateRequest {
        CreateRequest {
            request_id: "MOMO1700000000000".into(),
            order_id: "MOMO1700000000000".into(),
            amount: 50_000,
            order_info: "pay with MoMo".into(),
            redirect_url: "https://momo.vn/return".into(),
            ipn_url: "https://callback.url/notify".into(),
            request_type: RequestType::CaptureWallet,
            extra_data: String::new(),
            lang: Lang::Vi,
        }
    }

    #[test]
    fn create_signature_vector() {
        assert_eq!(
            create_signature_string(&creds(), &create_req()),
            "accessKey=F8BBA842ECF85&amount=50000&extraData=&ipnUrl=https://callback.url/notify&orderId=MOMO1700000000000&orderInfo=pay with MoMo&partnerCode=MOMO&redirectUrl=https://momo.vn/return&requestId=MOMO1700000000000&requestType=captureWallet"
        );
        let body = create_request(&creds(), &create_req()).unwrap();
        assert_eq!(body.signature, "4378bb95714712f6be833da81f743910a01e5ba6279bfe596b8a08e891259424");
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["partnerCode"], "MOMO");
        assert_eq!(json["requestType"], "captureWallet");
        assert_eq!(json["amount"], 50_000);
        assert_eq!(json["lang"], "vi");
        assert!(json.get("accessKey").is_none());
    }

    #[test]
    fn create_validation() {
        let mut r = create_req();
        r.amount = 999;
        assert!(matches!(create_request(&creds(), &r), Err(BuildError::InvalidAmount(_))));
        r.amount = 50_000_001;
        assert!(create_request(&creds(), &r).is_err());
        r.request_type = RequestType::PayWithAtm;
        assert!(create_request(&creds(), &r).is_ok());
        r.amount = 0;
        assert!(create_request(&creds(), &r).is_err());
        for (id, ok) in [
            ("A", true),
            ("a-b_c.d", true),
            ("a--b", true),
            ("-a", false),
            ("a.", false),
            ("", false),
            ("a b", false),
            ("đơn", false),
        ] {
            assert_eq!(is_valid_order_id(id), ok, "{id}");
        }
    }

    fn ipn(result_code: i64) -> IpnMessage {
        let mut m = IpnMessage {
            partner_code: "MOMO".into(),
            order_id: "PG-20250101-0001".into(),
            request_id: "PG-20250101-0001".into(),
            amount: 150_000,
            order_info: "Le phi truoc ba".into(),
            order_type: "momo_wallet".into(),
            trans_id: 4_088_878_653,
            result_code,
            message: "Successful.".into(),
            pay_type: "qr".into(),
            response_time: 1_735_666_512_000,
            extra_data: String::new(),
            signature: String::new(),
        };
        sign_ipn(&creds(), &mut m);
        m
    }

    fn body(v: &impl Serialize) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn ipn_round_trip() {
        let m = ipn(0);
        let expected_string = "accessKey=F8BBA842ECF85&amount=150000&extraData=&message=Successful.&orderId=PG-20250101-0001&orderInfo=Le phi truoc ba&orderType=momo_wallet&partnerCode=MOMO&payType=qr&requestId=PG-20250101-0001&responseTime=1735666512000&resultCode=0&transId=4088878653";
        assert_eq!(m.signature, hmac_sha256_hex(&creds().secret_key, expected_string));
        let ev = verify_ipn(&creds(), &body(&m)).unwrap();
        assert_eq!(
            ev,
            ProviderEvent {
                provider: "momo",
                merchant_ref: "PG-20250101-0001".into(),
                provider_txn_id: Some("4088878653".into()),
                amount: 150_000,
                outcome: Outcome::Succeeded,
                provider_code: "0".into(),
                paid_at: Some(Utc.with_ymd_and_hms(2024, 12, 31, 17, 35, 12).unwrap()),
            }
        );
        // Numbers sent as strings hash identically and are accepted.
        let mut v = serde_json::to_value(&m).unwrap();
        v["amount"] = "150000".into();
        v["transId"] = "4088878653".into();
        assert_eq!(verify_ipn(&creds(), &body(&v)).unwrap().amount, 150_000);
    }

    #[test]
    fn ipn_outcomes() {
        assert_eq!(verify_ipn(&creds(), &body(&ipn(9000))).unwrap().outcome, Outcome::Succeeded);
        for pending in [1000, 7000, 7002, 8000] {
            let ev = verify_ipn(&creds(), &body(&ipn(pending))).unwrap();
            assert_eq!((ev.outcome, ev.paid_at), (Outcome::Pending, None));
        }
        for failed in [10, 11, 12, 13, 1001, 1006, 42] {
            let ev = verify_ipn(&creds(), &body(&ipn(failed))).unwrap();
            assert!(matches!(ev.outcome, Outcome::Failed { .. }), "{failed}");
            assert_eq!(ev.provider_code, failed.to_string());
        }
    }

    #[test]
    fn ipn_tampering_rejected() {
        let m = ipn(0);
        let mut amount = m.clone();
        amount.amount = 1_500_000;
        assert_eq!(verify_ipn(&creds(), &body(&amount)), Err(VerifyError::BadSignature));
        let mut code = m.clone();
        code.result_code = 9000;
        assert_eq!(verify_ipn(&creds(), &body(&code)), Err(VerifyError::BadSignature));
        let mut sig = m.clone();
        sig.signature = sig.signature.replace('a', "b");
        assert_eq!(verify_ipn(&creds(), &body(&sig)), Err(VerifyError::BadSignature));
        let mut v = serde_json::to_value(&m).unwrap();
        v.as_object_mut().unwrap().remove("signature");
        assert_eq!(verify_ipn(&creds(), &body(&v)), Err(VerifyError::missing("signature")));
        let mut v = serde_json::to_value(&m).unwrap();
        v.as_object_mut().unwrap().remove("payType");
        assert!(matches!(verify_ipn(&creds(), &body(&v)), Err(VerifyError::Body(_))));
        let mut v = serde_json::to_value(&m).unwrap();
        v["accessKey"] = "attacker-chosen".into(); // ignored: ours is used
        assert!(verify_ipn(&creds(), &body(&v)).is_ok());
        assert!(matches!(verify_ipn(&creds(), b"not json"), Err(VerifyError::Body(_))));
        let other = MomoCredentials { secret_key: SecretString::from("x"), ..creds() };
        assert_eq!(verify_ipn(&other, &body(&m)), Err(VerifyError::BadSignature));
    }

    #[test]
    fn ipn_partner_mismatch_and_bad_amount() {
        let mut m = ipn(0);
        m.partner_code = "MOMOXYZ".into();
        sign_ipn(&creds(), &mut m);
        assert_eq!(verify_ipn(&creds(), &body(&m)), Err(VerifyError::WrongMerchant));
        let mut m = ipn(0);
        m.amount = -5;
        sign_ipn(&creds(), &mut m);
        assert!(matches!(verify_ipn(&creds(), &body(&m)), Err(VerifyError::InvalidAmount(..))));
        let mut v = serde_json::to_value(ipn(0)).unwrap();
        v["amount"] = serde_json::json!(1.5);
        v["signature"] = "00".into();
        // Fails closed either way (signature first).
        assert!(verify_ipn(&creds(), &body(&v)).is_err());
    }

    #[test]
    fn configurable_ipn_fields() {
        let fields = &["accessKey", "amount", "orderId", "partnerCode", "requestId", "resultCode"];
        let mut m = ipn(0);
        sign_ipn_with_fields(&creds(), &mut m, fields);
        assert!(verify_ipn_with_fields(&creds(), &body(&m), fields).is_ok());
        assert_eq!(verify_ipn(&creds(), &body(&m)), Err(VerifyError::BadSignature));
    }

    #[test]
    fn query_and_refund_signatures() {
        let q = query_request(&creds(), "REQ1", "PG-1", Lang::En).unwrap();
        assert_eq!(
            q.signature,
            hmac_sha256_hex(
                &creds().secret_key,
                "accessKey=F8BBA842ECF85&orderId=PG-1&partnerCode=MOMO&requestId=REQ1"
            )
        );
        assert_eq!(serde_json::to_value(&q).unwrap()["partnerCode"], "MOMO");
        let r = refund_request(
            &creds(),
            &RefundRequest {
                request_id: "RF1".into(),
                order_id: "PG-1-R1".into(),
                amount: 10_000,
                trans_id: 4_088_878_653,
                description: "hoan tien".into(),
                lang: Lang::Vi,
            },
        )
        .unwrap();
        assert_eq!(
            r.signature,
            hmac_sha256_hex(
                &creds().secret_key,
                "accessKey=F8BBA842ECF85&amount=10000&description=hoan tien&orderId=PG-1-R1&partnerCode=MOMO&requestId=RF1&transId=4088878653"
            )
        );
        assert_eq!(serde_json::to_value(&r).unwrap()["transId"], 4_088_878_653_i64);
    }

    /// Only `resultCode` 0 made a refund; MoMo's pending codes and an answer without a code may
    /// have, so they release nothing; other codes refused.
    #[test]
    fn refund_verdicts() {
        let answer = |code: serde_json::Value| serde_json::json!({"resultCode": code, "message": "m"});
        assert_eq!(refund_verdict(&answer(0.into())), RefundVerdict::Made);
        for code in [1000, 7000, 7002, 8000] {
            assert!(matches!(refund_verdict(&answer(code.into())), RefundVerdict::Undecided(_)), "{code}");
        }
        assert!(matches!(refund_verdict(&serde_json::json!({"message": "oops"})), RefundVerdict::Undecided(_)));
        assert!(matches!(refund_verdict(&answer("0".into())), RefundVerdict::Undecided(_)), "not an integer");
        for code in [11, 41, 42, 1080, 1081] {
            assert!(matches!(refund_verdict(&answer(code.into())), RefundVerdict::Refused(_)), "{code}");
        }
    }
}
