//! ZaloPay (API v2): create request, `app_trans_id`, callback verification and reply, query request
//! and query-response parsing.
//!
//! Invariants:
//! - Create: `mac = hex HMAC-SHA256(key1, app_id|app_trans_id|app_user|amount|app_time|embed_data|item)`.
//! - Query: `mac = hex HMAC-SHA256(key1, app_id|app_trans_id|key1)` (ZaloPay's documented form: key1
//!   appears inside the MAC input too).
//! - Callback: `mac = hex HMAC-SHA256(key2, data)` where `data` is the callback's `data` **string value
//!   exactly as received** (after JSON-unescaping the outer body, never re-serialised). The MAC is
//!   checked in constant time before `data` is parsed; then `data.app_id` must equal ours.
//! - ZaloPay only sends a callback for a successful payment, so a verified callback is
//!   [`Outcome::Succeeded`]; `paid_at` is `server_time` (Unix ms).
//! - `app_trans_id` is `yymmdd_<our ref>` with the date in GMT+7; it is the `merchant_ref` of events.
//! - Amounts are whole đồng (`i64`, > 0). No I/O, no clock.
//! - UNCONFIRMED (not in providers.md, from ZaloPay's docs): `app_trans_id` ≤ 40 characters
//!   ([`APP_TRANS_ID_MAX_LEN`]) and the query response shape (`return_code` 1 paid / 2 failed /
//!   3 processing, `is_processing`, `zp_trans_id`, `server_time`).

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::event::{BuildError, Outcome, PROVIDER_ZALOPAY, ProviderEvent, VerifyError};
use super::signature::{hmac_sha256, hmac_sha256_hex, mac_matches_hex};

/// Sandbox host.
pub const SANDBOX_HOST: &str = "https://sb-openapi.zalopay.vn";
/// Create path.
pub const CREATE_PATH: &str = "/v2/create";
/// Query path (form POST). From ZaloPay's docs, not providers.md.
pub const QUERY_PATH: &str = "/v2/query";
/// Maximum `app_trans_id` length. UNCONFIRMED (ZaloPay docs, not providers.md).
pub const APP_TRANS_ID_MAX_LEN: usize = 40;
/// Allowed `expire_duration_seconds` range.
pub const EXPIRE_DURATION_RANGE: std::ops::RangeInclusive<i64> = 300..=2_592_000;

/// App credentials. `Debug` redacts the keys.
#[derive(Debug, Clone, Deserialize)]
pub struct ZalopayCredentials {
    pub app_id: i64,
    /// Signs our requests.
    pub key1: SecretString,
    /// Verifies ZaloPay's callbacks.
    pub key2: SecretString,
}

fn gmt7() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).expect("GMT+7 is a valid offset")
}

/// `yymmdd_<our_ref>` with the date of `at` in GMT+7 (so 2024-12-31T17:30Z gives `250101_…`).
/// `our_ref` must be non-empty ASCII alphanumerics, `_` or `-`; the result must fit
/// [`APP_TRANS_ID_MAX_LEN`].
pub fn app_trans_id(at: DateTime<Utc>, our_ref: &str) -> Result<String, BuildError> {
    if our_ref.is_empty() || !our_ref.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(BuildError::field("app_trans_id", "reference must be ASCII letters, digits, `_` or `-`"));
    }
    let id = format!("{}_{our_ref}", at.with_timezone(&gmt7()).format("%y%m%d"));
    if id.len() > APP_TRANS_ID_MAX_LEN {
        return Err(BuildError::field("app_trans_id", format!("longer than {APP_TRANS_ID_MAX_LEN} characters")));
    }
    Ok(id)
}

/// Split an `app_trans_id` into its GMT+7 date and our reference.
pub fn split_app_trans_id(id: &str) -> Option<(NaiveDate, &str)> {
    let (date, rest) = id.split_once('_')?;
    if date.len() != 6 || !date.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
        return None;
    }
    let d = NaiveDate::parse_from_str(&format!("20{date}"), "%Y%m%d").ok()?;
    Some((d, rest))
}

/// Inputs of a create request.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub app_user: String,
    /// From [`app_trans_id`].
    pub app_trans_id: String,
    /// Unix milliseconds of order creation.
    pub app_time_ms: i64,
    pub expire_duration_seconds: Option<i64>,
    /// Whole đồng.
    pub amount: i64,
    /// JSON array string, e.g. `[]`.
    pub item: String,
    /// JSON object string, e.g. `{}` or `{"redirecturl":"…"}`.
    pub embed_data: String,
    pub description: String,
    /// `""` lets the user choose.
    pub bank_code: String,
    pub callback_url: Option<String>,
}

/// JSON body of `POST /v2/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequestBody {
    pub app_id: i64,
    pub app_user: String,
    pub app_trans_id: String,
    pub app_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_duration_seconds: Option<i64>,
    pub amount: i64,
    pub item: String,
    pub embed_data: String,
    pub description: String,
    pub bank_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    pub mac: String,
}

/// The create MAC input `app_id|app_trans_id|app_user|amount|app_time|embed_data|item`.
pub fn create_mac_data(app_id: i64, req: &CreateRequest) -> String {
    format!(
        "{app_id}|{}|{}|{}|{}|{}|{}",
        req.app_trans_id, req.app_user, req.amount, req.app_time_ms, req.embed_data, req.item
    )
}

/// Signed create request.
pub fn create_request(creds: &ZalopayCredentials, req: &CreateRequest) -> Result<CreateRequestBody, BuildError> {
    if req.amount <= 0 {
        return Err(BuildError::InvalidAmount(format!("{} must be > 0", req.amount)));
    }
    if split_app_trans_id(&req.app_trans_id).is_none() || req.app_trans_id.len() > APP_TRANS_ID_MAX_LEN {
        return Err(BuildError::field("app_trans_id", "must be yymmdd_<ref> (see app_trans_id())"));
    }
    if req.app_user.is_empty() {
        return Err(BuildError::field("app_user", "must not be empty"));
    }
    if req.app_time_ms <= 0 {
        return Err(BuildError::field("app_time", "must be Unix milliseconds"));
    }
    if let Some(d) = req.expire_duration_seconds
        && !EXPIRE_DURATION_RANGE.contains(&d)
    {
        return Err(BuildError::field("expire_duration_seconds", "must be within 300..=2592000"));
    }
    if !serde_json::from_str::<Value>(&req.item).is_ok_and(|v| v.is_array()) {
        return Err(BuildError::field("item", "must be a JSON array string"));
    }
    if !serde_json::from_str::<Value>(&req.embed_data).is_ok_and(|v| v.is_object()) {
        return Err(BuildError::field("embed_data", "must be a JSON object string"));
    }
    Ok(CreateRequestBody {
        app_id: creds.app_id,
        app_user: req.app_user.clone(),
        app_trans_id: req.app_trans_id.clone(),
        app_time: req.app_time_ms,
        expire_duration_seconds: req.expire_duration_seconds,
        amount: req.amount,
        item: req.item.clone(),
        embed_data: req.embed_data.clone(),
        description: req.description.clone(),
        bank_code: req.bank_code.clone(),
        callback_url: req.callback_url.clone(),
        mac: hmac_sha256_hex(&creds.key1, &create_mac_data(creds.app_id, req)),
    })
}

/// The callback's outer body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackBody {
    /// JSON document as a string; the MAC covers exactly this string.
    pub data: String,
    pub mac: String,
    /// 1 = order, 2 = agreement.
    #[serde(rename = "type", default)]
    pub kind: Option<i64>,
}

/// For simulators: build a callback body for `data` signed with key2.
pub fn sign_callback(creds: &ZalopayCredentials, data: &str, kind: i64) -> CallbackBody {
    CallbackBody { data: data.to_owned(), mac: hmac_sha256_hex(&creds.key2, data), kind: Some(kind) }
}

fn int_field(obj: &Map<String, Value>, key: &str) -> Result<i64, VerifyError> {
    match obj.get(key) {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| VerifyError::malformed(key, "not an i64 integer")),
        None | Some(Value::Null) => Err(VerifyError::missing(key)),
        Some(_) => Err(VerifyError::malformed(key, "expected an integer")),
    }
}

/// Verify a raw callback body and normalise it (see module invariants).
pub fn verify_callback(creds: &ZalopayCredentials, body: &[u8]) -> Result<ProviderEvent, VerifyError> {
    let outer: CallbackBody = serde_json::from_slice(body).map_err(|e| VerifyError::Body(e.to_string()))?;
    if outer.mac.is_empty() {
        return Err(VerifyError::missing("mac"));
    }
    let expected = hmac_sha256(creds.key2.expose_secret().as_bytes(), outer.data.as_bytes());
    if !mac_matches_hex(&expected, &outer.mac) {
        return Err(VerifyError::BadSignature);
    }
    let data: Value = serde_json::from_str(&outer.data).map_err(|e| VerifyError::malformed("data", e.to_string()))?;
    let obj = data.as_object().ok_or_else(|| VerifyError::malformed("data", "expected a JSON object"))?;
    if int_field(obj, "app_id")? != creds.app_id {
        return Err(VerifyError::WrongMerchant);
    }
    let app_trans_id = match obj.get("app_trans_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => return Err(VerifyError::missing("app_trans_id")),
        Some(_) => return Err(VerifyError::malformed("app_trans_id", "expected a string")),
    };
    let amount = int_field(obj, "amount").map_err(|e| match e {
        VerifyError::Malformed(f, why) => VerifyError::InvalidAmount(f, why),
        e => e,
    })?;
    if amount <= 0 {
        return Err(VerifyError::amount("amount", "must be > 0"));
    }
    let zp_trans_id = int_field(obj, "zp_trans_id")?;
    let server_time = int_field(obj, "server_time")?;
    let paid_at = DateTime::from_timestamp_millis(server_time)
        .ok_or_else(|| VerifyError::malformed("server_time", "out of range"))?;
    Ok(ProviderEvent {
        provider: PROVIDER_ZALOPAY,
        merchant_ref: app_trans_id,
        provider_txn_id: Some(zp_trans_id.to_string()),
        amount,
        outcome: Outcome::Succeeded,
        provider_code: "1".to_owned(),
        paid_at: Some(paid_at),
    })
}

/// Our JSON reply to a callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackReply {
    pub return_code: i32,
    pub return_message: String,
}

impl CallbackReply {
    /// `1` "success": recorded (also for a duplicate we already recorded).
    pub fn success() -> Self {
        CallbackReply { return_code: 1, return_message: "success".into() }
    }
    /// `-1` "mac not equal".
    pub fn mac_not_equal() -> Self {
        CallbackReply { return_code: -1, return_message: "mac not equal".into() }
    }
    /// `0`: ask ZaloPay to retry (≤ 3 times), e.g. our storage failed.
    pub fn retry(message: &str) -> Self {
        CallbackReply { return_code: 0, return_message: message.to_owned() }
    }
    /// Reply for a callback that [`verify_callback`] rejected: bad/missing MAC → -1; anything else
    /// (signed but unusable) → -1 too, since a retry of the same bytes cannot succeed.
    pub fn for_verify_error(e: &VerifyError) -> Self {
        match e {
            VerifyError::BadSignature | VerifyError::Missing(_) => Self::mac_not_equal(),
            other => CallbackReply { return_code: -1, return_message: other.to_string() },
        }
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an int and a string always serialise")
    }
}

/// Form body of `POST /v2/query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRequest {
    pub app_id: i64,
    pub app_trans_id: String,
    pub mac: String,
}

impl QueryRequest {
    /// `application/x-www-form-urlencoded` body.
    pub fn to_form(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("app_id", &self.app_id.to_string())
            .append_pair("app_trans_id", &self.app_trans_id)
            .append_pair("mac", &self.mac)
            .finish()
    }
}

/// Signed query request: `mac = HMAC-SHA256(key1, app_id|app_trans_id|key1)`.
pub fn query_request(creds: &ZalopayCredentials, app_trans_id: &str) -> Result<QueryRequest, BuildError> {
    if split_app_trans_id(app_trans_id).is_none() {
        return Err(BuildError::field("app_trans_id", "must be yymmdd_<ref>"));
    }
    let data = format!("{}|{app_trans_id}|{}", creds.app_id, creds.key1.expose_secret());
    Ok(QueryRequest {
        app_id: creds.app_id,
        app_trans_id: app_trans_id.to_owned(),
        mac: hmac_sha256_hex(&creds.key1, &data),
    })
}

/// Parse a query response (unsigned by ZaloPay; trust comes from TLS to ZaloPay's host) for the
/// `app_trans_id` we asked about. `return_code` 1 → Succeeded, 2 → Failed, 3 → Pending (also when
/// `is_processing` is true); anything else is an error of the query itself, and so is a 2 whose
/// `sub_return_code` says the request was refused (-401 bad data, -402 bad mac): that says nothing
/// of the payment, which must not be failed for our own misconfiguration.
pub fn parse_query_response(app_trans_id: &str, body: &[u8]) -> Result<ProviderEvent, VerifyError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| VerifyError::Body(e.to_string()))?;
    let obj = v.as_object().ok_or_else(|| VerifyError::Body("expected a JSON object".into()))?;
    let code = int_field(obj, "return_code")?;
    let message = obj.get("sub_return_message").or(obj.get("return_message")).and_then(Value::as_str).unwrap_or("");
    if let Some(sub @ (-402 | -401)) = obj.get("sub_return_code").and_then(Value::as_i64) {
        return Err(VerifyError::malformed("sub_return_code", format!("{sub}: the query was refused: {message}")));
    }
    let processing = obj.get("is_processing").and_then(Value::as_bool).unwrap_or(false);
    let amount = match obj.get("amount") {
        None | Some(Value::Null) => 0,
        Some(_) => int_field(obj, "amount")?,
    };
    if amount < 0 {
        return Err(VerifyError::amount("amount", "negative"));
    }
    let zp_trans_id = match obj.get("zp_trans_id") {
        None | Some(Value::Null) => None,
        Some(_) => Some(int_field(obj, "zp_trans_id")?).filter(|id| *id != 0).map(|id| id.to_string()),
    };
    let (outcome, paid_at) = match (code, processing) {
        (1, false) => {
            if amount <= 0 {
                return Err(VerifyError::amount("amount", "must be > 0 for a paid order"));
            }
            let t = int_field(obj, "server_time")?;
            let at = DateTime::from_timestamp_millis(t)
                .ok_or_else(|| VerifyError::malformed("server_time", "out of range"))?;
            (Outcome::Succeeded, Some(at))
        }
        (1 | 3, _) => (Outcome::Pending, None),
        (2, _) => (Outcome::Failed { reason: format!("ZaloPay return_code 2: {message}") }, None),
        (other, _) => {
            return Err(VerifyError::malformed("return_code", format!("{other} is not a payment state: {message}")));
        }
    };
    Ok(ProviderEvent {
        provider: PROVIDER_ZALOPAY,
        merchant_ref: app_trans_id.to_owned(),
        provider_txn_id: zp_trans_id,
        amount,
        outcome,
        provider_code: code.to_string(),
        paid_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Copy of `shared/reference/vectors/zalopay-callback-sample.json` (ZaloPay callback docs' sample).
    const CALLBACK_SAMPLE: &str = r#"{"data":"{\"app_id\":2553,\"app_trans_id\":\"200904_2553_1598435687208\",\"app_time\":1599189392817,\"app_user\":\"demo\",\"amount\":10000,\"embed_data\":\"{\\\"merchantinfo\\\":\\\"embeddata123\\\",\\\"promotioninfo\\\":\\\"\\\"}\",\"item\":\"[{\\\"itemid\\\":\\\"knb\\\",\\\"itemname\\\":\\\"kim nguyen bao\\\",\\\"itemprice\\\":198400,\\\"itemquantity\\\":1}]\",\"zp_trans_id\":200904000000389,\"server_time\":1599189413498,\"channel\":38,\"merchant_user_id\":\"7ZMSl3nEg5sOUJzOLSoUFT8xKNQVaLOLXHB--8Eytqc\",\"user_fee_amount\":0,\"discount_amount\":0}","mac":"d8d33baf449b31d7f9b94fa50d7c942c08cd4d83f28fa185557da21acb104f67","type":1}"#;

    fn sample_creds() -> ZalopayCredentials {
        ZalopayCredentials {
            app_id: 2553,
            key1: SecretString::from("unused"),
            key2: SecretString::from("kLtgPl8HHhfvMuDHPwKfgfsY4Ydm9eIz"),
        }
    }

    fn create_creds() -> ZalopayCredentials {
        ZalopayCredentials {
            app_id: 553,
            key1: SecretString::from("9phuAOYhan4urywHTh0ndEXiV3pKHr5Q"),
            key2: SecretString::from("unused"),
        }
    }

    fn create_req() -> CreateRequest {
        CreateRequest {
            app_user: "user123".into(),
            app_trans_id: "200904_000234".into(),
            app_time_ms: 1_599_202_366_026,
            expire_duration_seconds: None,
            amount: 10_000,
            item: "[]".into(),
            embed_data: "{}".into(),
            description: "Thanh toan don hang #000234".into(),
            bank_code: String::new(),
            callback_url: None,
        }
    }

    #[test]
    fn create_mac_vector() {
        let c = create_creds();
        assert_eq!(create_mac_data(c.app_id, &create_req()), "553|200904_000234|user123|10000|1599202366026|{}|[]");
        let body = create_request(&c, &create_req()).unwrap();
        assert_eq!(body.mac, "7e95836a9feace32458f23416feea423172ef0a098f27a668a1e10788b5a6838");
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["app_id"], 553);
        assert!(json.get("callback_url").is_none());
    }

    #[test]
    fn create_validation() {
        let c = create_creds();
        let mut r = create_req();
        r.amount = 0;
        assert!(matches!(create_request(&c, &r), Err(BuildError::InvalidAmount(_))));
        let mut r = create_req();
        r.item = "{}".into();
        assert!(create_request(&c, &r).is_err());
        let mut r = create_req();
        r.embed_data = "not json".into();
        assert!(create_request(&c, &r).is_err());
        let mut r = create_req();
        r.expire_duration_seconds = Some(299);
        assert!(create_request(&c, &r).is_err());
        r.expire_duration_seconds = Some(300);
        assert!(create_request(&c, &r).is_ok());
        let mut r = create_req();
        r.app_trans_id = "000234".into();
        assert!(create_request(&c, &r).is_err());
    }

    #[test]
    fn callback_vector() {
        let outer: CallbackBody = serde_json::from_str(CALLBACK_SAMPLE).unwrap();
        assert_eq!(
            hmac_sha256_hex(&sample_creds().key2, &outer.data),
            "d8d33baf449b31d7f9b94fa50d7c942c08cd4d83f28fa185557da21acb104f67"
        );
        let ev = verify_callback(&sample_creds(), CALLBACK_SAMPLE.as_bytes()).unwrap();
        assert_eq!(
            ev,
            ProviderEvent {
                provider: "zalopay",
                merchant_ref: "200904_2553_1598435687208".into(),
                provider_txn_id: Some("200904000000389".into()),
                amount: 10_000,
                outcome: Outcome::Succeeded,
                provider_code: "1".into(),
                paid_at: Some(Utc.timestamp_millis_opt(1_599_189_413_498).unwrap()),
            }
        );
        // The sample's app_trans_id carries our ref after the date.
        let (d, r) = split_app_trans_id(&ev.merchant_ref).unwrap();
        assert_eq!((d, r), (NaiveDate::from_ymd_opt(2020, 9, 4).unwrap(), "2553_1598435687208"));
    }

    #[test]
    fn callback_tampering_rejected() {
        // One character of `data` changed (amount 10000 → 90000).
        let tampered = CALLBACK_SAMPLE.replacen(r#"\"amount\":10000"#, r#"\"amount\":90000"#, 1);
        assert_ne!(tampered, CALLBACK_SAMPLE);
        assert_eq!(verify_callback(&sample_creds(), tampered.as_bytes()), Err(VerifyError::BadSignature));
        // Re-serialising `data` (whitespace change) also breaks the MAC: it covers the exact string.
        let spaced = CALLBACK_SAMPLE.replacen(r#"{\"app_id\":2553"#, r#"{ \"app_id\":2553"#, 1);
        assert_eq!(verify_callback(&sample_creds(), spaced.as_bytes()), Err(VerifyError::BadSignature));
        let bad_mac = CALLBACK_SAMPLE.replace("d8d33baf", "d8d33bae");
        assert_eq!(verify_callback(&sample_creds(), bad_mac.as_bytes()), Err(VerifyError::BadSignature));
        let other_key = ZalopayCredentials { key2: SecretString::from("x"), ..sample_creds() };
        assert_eq!(verify_callback(&other_key, CALLBACK_SAMPLE.as_bytes()), Err(VerifyError::BadSignature));
        assert!(matches!(verify_callback(&sample_creds(), b"{}"), Err(VerifyError::Body(_))));
        assert_eq!(
            CallbackReply::for_verify_error(&VerifyError::BadSignature).to_json(),
            r#"{"return_code":-1,"return_message":"mac not equal"}"#
        );
    }

    #[test]
    fn callback_wrong_app_rejected() {
        let other = ZalopayCredentials { app_id: 554, ..sample_creds() };
        assert_eq!(verify_callback(&other, CALLBACK_SAMPLE.as_bytes()), Err(VerifyError::WrongMerchant));
    }

    #[test]
    fn simulator_callback_round_trip() {
        let c = sample_creds();
        let data = r#"{"app_id":2553,"app_trans_id":"250101_PG1","amount":150000,"zp_trans_id":250101000000001,"server_time":1735666512000}"#;
        let body = serde_json::to_vec(&sign_callback(&c, data, 1)).unwrap();
        let ev = verify_callback(&c, &body).unwrap();
        assert_eq!((ev.amount, ev.merchant_ref.as_str()), (150_000, "250101_PG1"));
        let neg = data.replace("150000", "-1");
        let body = serde_json::to_vec(&sign_callback(&c, &neg, 1)).unwrap();
        assert!(matches!(verify_callback(&c, &body), Err(VerifyError::InvalidAmount(..))));
    }

    #[test]
    fn replies() {
        assert_eq!(CallbackReply::success().to_json(), r#"{"return_code":1,"return_message":"success"}"#);
        assert_eq!(CallbackReply::mac_not_equal().return_code, -1);
        assert_eq!(CallbackReply::retry("db down").return_code, 0);
    }

    #[test]
    fn app_trans_id_uses_gmt7_date() {
        let t = Utc.with_ymd_and_hms(2024, 12, 31, 17, 0, 0).unwrap(); // 2025-01-01 00:00 GMT+7
        assert_eq!(app_trans_id(t, "PG-1").unwrap(), "250101_PG-1");
        let t = Utc.with_ymd_and_hms(2024, 12, 31, 16, 59, 59).unwrap();
        assert_eq!(app_trans_id(t, "PG-1").unwrap(), "241231_PG-1");
        assert!(app_trans_id(t, "").is_err());
        assert!(app_trans_id(t, "a b").is_err());
        assert!(app_trans_id(t, &"x".repeat(34)).is_err());
        assert!(app_trans_id(t, &"x".repeat(33)).is_ok());
    }

    #[test]
    fn a_refused_query_says_nothing_of_the_payment() {
        for sub in [-401, -402] {
            let body = format!(
                r#"{{"return_code":2,"return_message":"Giao dịch thất bại","sub_return_code":{sub},"sub_return_message":"mac"}}"#
            );
            assert!(parse_query_response("240101_1", body.as_bytes()).is_err(), "{sub}");
        }
        let unknown =
            br#"{"return_code":2,"return_message":"","sub_return_code":-101,"sub_return_message":"not found"}"#;
        let event = parse_query_response("240101_1", unknown).unwrap();
        assert!(matches!(event.outcome, Outcome::Failed { .. }));
    }

    #[test]
    fn query() {
        let c = create_creds();
        let q = query_request(&c, "200904_000234").unwrap();
        assert_eq!(q.mac, hmac_sha256_hex(&c.key1, "553|200904_000234|9phuAOYhan4urywHTh0ndEXiV3pKHr5Q"));
        assert_eq!(q.to_form(), format!("app_id=553&app_trans_id=200904_000234&mac={}", q.mac));

        let paid = br#"{"return_code":1,"return_message":"","sub_return_code":1,"sub_return_message":"","is_processing":false,"amount":10000,"zp_trans_id":200904000000389,"server_time":1599189413498,"discount_amount":0}"#;
        let ev = parse_query_response("200904_000234", paid).unwrap();
        assert_eq!((ev.outcome, ev.amount), (Outcome::Succeeded, 10_000));
        assert_eq!(ev.provider_txn_id.as_deref(), Some("200904000000389"));
        let failed = br#"{"return_code":2,"return_message":"Giao dich that bai","is_processing":false,"amount":0,"zp_trans_id":0}"#;
        let ev = parse_query_response("200904_000234", failed).unwrap();
        assert!(matches!(ev.outcome, Outcome::Failed { .. }));
        assert_eq!(ev.provider_txn_id, None);
        let processing = br#"{"return_code":3,"return_message":"","is_processing":true,"amount":0,"zp_trans_id":0}"#;
        assert_eq!(parse_query_response("200904_000234", processing).unwrap().outcome, Outcome::Pending);
        let weird = br#"{"return_code":-49,"return_message":"app_trans_id invalid"}"#;
        assert!(parse_query_response("200904_000234", weird).is_err());
    }
}
