//! Delivery of the callbacks the sandbox sends (VNPAY IPN, MoMo IPN, ZaloPay callback, bank credit
//! notification), fault application, and the in-memory log exposed at `GET /callbacks-sent`.
//!
//! Invariants:
//! - [`dispatch`] builds every message before sending anything, then sends them in order; without a
//!   `delay` fault it returns only after each message was answered (or failed), so a decide handler
//!   that awaits it answers its redirect after the merchant saw the callback.
//! - Every attempt is recorded exactly once, with the status received (or the transport error), the
//!   first [`MAX_BODY_CHARS`] characters of the answer, and whether the answer is the one the provider
//!   expects ([`Expect`]). The sandbox never retries.
//! - The log is bounded to [`MAX_RECORDS`] entries (oldest dropped); `seq` keeps increasing.

use axum::Json;
use axum::extract::State;
use reqwest::Method;
use serde::Serialize;

use super::faults::Fault;
use super::{AppState, now};

/// Most records kept.
pub const MAX_RECORDS: usize = 1000;
/// Longest answer body kept per record.
pub const MAX_BODY_CHARS: usize = 2000;

/// What the provider expects back from the merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// HTTP 200 with JSON `RspCode` `00` (or `02`, already confirmed: VNPAY stops either way).
    VnpayConfirm,
    /// HTTP 204 (MoMo).
    NoContent,
    /// JSON `return_code` 1 (ZaloPay).
    ZalopayReturnCode1,
    /// Any 2xx (partner bank notifications).
    Success2xx,
}

/// Which message of a fault plan this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// The true result, correctly signed.
    Normal,
    /// Amount + 1 đồng, correctly signed.
    WrongAmount,
    /// The true result with a tampered signature.
    BadSignature,
    /// A stale, earlier-looking failure/pending message for the same transaction.
    Stale,
}

/// One HTTP request to send.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) method: Method,
    pub(crate) url: String,
    /// `(content type, bytes)`.
    pub(crate) body: Option<(&'static str, Vec<u8>)>,
    pub(crate) headers: Vec<(&'static str, String)>,
}

/// Who sends what, for the log.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) provider: String,
    pub(crate) merchant_ref: String,
    pub(crate) expect: Expect,
}

/// One entry of `GET /callbacks-sent`.
#[derive(Debug, Clone, Serialize)]
pub struct CallbackRecord {
    pub seq: u64,
    /// `vnpay`, `momo`, `zalopay` or `bank:<name>`.
    pub provider: String,
    /// `vnp_TxnRef` / `orderId` / `app_trans_id` / bank `transaction_id`.
    pub merchant_ref: String,
    /// The fault in effect, if any.
    pub fault: Option<String>,
    /// `normal`, `duplicate`, `wrong_amount`, `bad_signature` or `stale`.
    pub variant: String,
    pub method: String,
    pub url: String,
    /// The body sent (UTF-8), if any.
    pub request_body: Option<String>,
    /// HTTP status received; `None` when the request failed (see `error`).
    pub status: Option<u16>,
    pub response_body: String,
    /// The merchant answered what the provider expects (see module docs).
    pub accepted: bool,
    pub error: Option<String>,
    /// RFC 3339, UTC.
    pub sent_at: String,
}

/// `GET /callbacks-sent`: the log, oldest first.
pub(crate) async fn list(State(app): State<AppState>) -> Json<Vec<CallbackRecord>> {
    Json(app.state().callbacks.iter().cloned().collect())
}

/// The messages a fault plan sends, in order, with their log label.
pub(crate) fn plan(fault: Option<&Fault>) -> Vec<(Variant, &'static str)> {
    match fault {
        None | Some(Fault::Delay(_)) => vec![(Variant::Normal, "normal")],
        Some(Fault::Duplicate) => vec![(Variant::Normal, "normal"), (Variant::Normal, "duplicate")],
        Some(Fault::Drop) => vec![],
        Some(Fault::Reorder) => vec![(Variant::Normal, "normal"), (Variant::Stale, "stale")],
        Some(Fault::WrongAmount) => vec![(Variant::WrongAmount, "wrong_amount")],
        Some(Fault::BadSignature) => vec![(Variant::BadSignature, "bad_signature")],
    }
}

/// Build the messages of `fault`'s plan with `build` and send them (see module invariants).
/// `build` returning `None` for a variant skips it (e.g. no stale form exists).
pub(crate) async fn dispatch(
    app: &AppState,
    meta: Meta,
    fault: Option<Fault>,
    build: impl Fn(Variant) -> Option<Outgoing>,
) {
    let messages: Vec<(Outgoing, &'static str)> =
        plan(fault.as_ref()).into_iter().filter_map(|(v, label)| build(v).map(|o| (o, label))).collect();
    let fault_name = fault.as_ref().map(|f| f.to_string());
    match fault {
        Some(Fault::Delay(d)) => {
            let app = app.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                for (o, label) in messages {
                    send_one(&app, &meta, fault_name.clone(), label, o).await;
                }
            });
        }
        _ => {
            for (o, label) in messages {
                send_one(app, &meta, fault_name.clone(), label, o).await;
            }
        }
    }
}

fn accepted(expect: Expect, status: u16, body: &str) -> bool {
    match expect {
        Expect::VnpayConfirm => {
            status == 200
                && serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("RspCode").and_then(|c| c.as_str().map(str::to_owned)))
                    .is_some_and(|c| c == "00" || c == "02")
        }
        Expect::NoContent => status == 204,
        Expect::ZalopayReturnCode1 => {
            (200..300).contains(&status)
                && serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("return_code").and_then(|c| c.as_i64()))
                    == Some(1)
        }
        Expect::Success2xx => (200..300).contains(&status),
    }
}

async fn send_one(app: &AppState, meta: &Meta, fault: Option<String>, label: &'static str, o: Outgoing) {
    let sent_at = now().to_rfc3339();
    let mut req = app.http.request(o.method.clone(), &o.url);
    for (k, v) in &o.headers {
        req = req.header(*k, v);
    }
    let request_body = o.body.as_ref().map(|(_, b)| String::from_utf8_lossy(b).into_owned());
    if let Some((ct, bytes)) = o.body {
        req = req.header(reqwest::header::CONTENT_TYPE, ct).body(bytes);
    }
    let (status, response_body, error) = match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.text().await {
                Ok(t) => (Some(status), t.chars().take(MAX_BODY_CHARS).collect(), None),
                Err(e) => (Some(status), String::new(), Some(format!("reading the answer failed: {e}"))),
            }
        }
        Err(e) => (None, String::new(), Some(e.to_string())),
    };
    let ok = status.is_some_and(|s| accepted(meta.expect, s, &response_body));
    if !ok {
        tracing::info!(provider = %meta.provider, merchant_ref = %meta.merchant_ref, ?status, ?error, "sandbox callback not accepted");
    }
    let mut st = app.state();
    st.callback_seq += 1;
    let rec = CallbackRecord {
        seq: st.callback_seq,
        provider: meta.provider.clone(),
        merchant_ref: meta.merchant_ref.clone(),
        fault,
        variant: label.to_owned(),
        method: o.method.to_string(),
        url: o.url,
        request_body,
        status,
        response_body,
        accepted: ok,
        error,
        sent_at,
    };
    st.callbacks.push_back(rec);
    while st.callbacks.len() > MAX_RECORDS {
        st.callbacks.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn plans() {
        assert_eq!(plan(None).len(), 1);
        assert_eq!(plan(Some(&Fault::Drop)).len(), 0);
        assert_eq!(plan(Some(&Fault::Duplicate)).len(), 2);
        assert_eq!(plan(Some(&Fault::Delay(Duration::from_millis(1)))), vec![(Variant::Normal, "normal")]);
        assert_eq!(plan(Some(&Fault::Reorder))[1].0, Variant::Stale);
    }

    #[test]
    fn expectations() {
        assert!(accepted(Expect::VnpayConfirm, 200, r#"{"RspCode":"00","Message":"Confirm Success"}"#));
        assert!(!accepted(Expect::VnpayConfirm, 200, r#"{"RspCode":"97"}"#));
        assert!(!accepted(Expect::VnpayConfirm, 500, r#"{"RspCode":"00"}"#));
        assert!(accepted(Expect::NoContent, 204, ""));
        assert!(!accepted(Expect::NoContent, 200, ""));
        assert!(accepted(Expect::ZalopayReturnCode1, 200, r#"{"return_code":1}"#));
        assert!(!accepted(Expect::ZalopayReturnCode1, 200, r#"{"return_code":-1}"#));
        assert!(accepted(Expect::Success2xx, 202, ""));
    }
}
