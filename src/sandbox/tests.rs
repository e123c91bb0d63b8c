//! End-to-end tests of the sandbox: a real axum server (the sandbox nested at `/sandbox`, on
//! 127.0.0.1:0) and a tiny receiving server that records every callback and answers like a
//! merchant would. Messages are verified with the crate's protocol functions, never re-implemented.
//!
//! Invariant: each test builds its own sandbox (its own in-memory state) and receiver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{Duration as ChronoDuration, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};

use super::{SandboxBank, SandboxConfig, router};
use crate::providers::protocol::event::{Outcome, VerifyError};
use crate::providers::protocol::signature::{self, hmac_sha256_hex};
use crate::providers::protocol::{momo, vietqr, vnpay, zalopay};

#[derive(Debug, Clone)]
struct Received {
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

async fn merchant(State(log): State<Log>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    log.lock().expect("log lock").push(Received {
        path: path.clone(),
        query: uri.query().unwrap_or("").to_owned(),
        headers,
        body,
    });
    match (method, path.as_str()) {
        (Method::GET, "/vnpay-ipn") => {
            ([("content-type", "application/json")], r#"{"RspCode":"00","Message":"Confirm Success"}"#).into_response()
        }
        (Method::POST, "/momo-ipn") => StatusCode::NO_CONTENT.into_response(),
        (Method::POST, "/zalopay-cb") => {
            ([("content-type", "application/json")], r#"{"return_code":1,"return_message":"success"}"#).into_response()
        }
        (Method::POST, "/bank-notify") => StatusCode::OK.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

struct H {
    /// `http://127.0.0.1:<port>/sandbox`
    base: String,
    log: Log,
    client: reqwest::Client,
    cfg: SandboxConfig,
}

fn vnpay_creds() -> vnpay::VnpayCredentials {
    vnpay::VnpayCredentials {
        tmn_code: "PGSANDBX".into(),
        hash_secret: SecretString::from("sandbox-vnpay-hash-secret"),
    }
}
fn momo_creds() -> momo::MomoCredentials {
    momo::MomoCredentials {
        partner_code: "MOMOPGSB".into(),
        access_key: "sandbox-momo-access-key".into(),
        secret_key: SecretString::from("sandbox-momo-secret-key"),
    }
}
fn zalopay_creds() -> zalopay::ZalopayCredentials {
    zalopay::ZalopayCredentials {
        app_id: 2553,
        key1: SecretString::from("sandbox-zalopay-key1"),
        key2: SecretString::from("sandbox-zalopay-key2"),
    }
}
const BANK_SECRET: &str = "sandbox-bank-secret";

impl H {
    async fn new() -> H {
        let log: Log = Arc::default();
        let recv = serve(Router::new().fallback(merchant).with_state(log.clone())).await;
        let cfg = SandboxConfig {
            vnpay: vnpay_creds(),
            vnpay_ipn_url: format!("{recv}/vnpay-ipn"),
            momo: momo_creds(),
            zalopay: zalopay_creds(),
            banks: vec![SandboxBank {
                name: "sandbox".into(),
                secret: SecretString::from(BANK_SECRET),
                notify_url: format!("{recv}/bank-notify"),
            }],
            http_timeout: Duration::from_secs(5),
        };
        let origin = serve(Router::new().nest("/sandbox", router(cfg.clone()))).await;
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        H { base: format!("{origin}/sandbox"), log, client, cfg }
    }

    async fn get(&self, url: &str) -> (StatusCode, HeaderMap, String) {
        let r = self.client.get(url).send().await.expect("GET");
        let (s, h) = (r.status(), r.headers().clone());
        (s, h, r.text().await.expect("text"))
    }

    async fn post_form(&self, url: &str, pairs: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        let r = self
            .client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("POST form");
        let (s, h) = (r.status(), r.headers().clone());
        (s, h, r.text().await.expect("text"))
    }

    async fn post_json(&self, url: &str, v: &impl serde::Serialize) -> (StatusCode, Value) {
        let r = self.client.post(url).json(v).send().await.expect("POST json");
        let s = r.status();
        (s, r.json().await.expect("json answer"))
    }

    fn received(&self, path: &str) -> Vec<Received> {
        self.log.lock().expect("log").iter().filter(|r| r.path == path).cloned().collect()
    }

    async fn wait_received(&self, path: &str, n: usize) -> Vec<Received> {
        for _ in 0..100 {
            let got = self.received(path);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} deliveries to {path}, got {}", self.received(path).len());
    }

    async fn callbacks_sent(&self) -> Vec<Value> {
        let (s, _, body) = self.get(&format!("{}/callbacks-sent", self.base)).await;
        assert_eq!(s, StatusCode::OK);
        serde_json::from_str(&body).expect("callbacks json")
    }

    fn today(&self) -> String {
        Utc::now().with_timezone(&super::gmt7()).format("%Y-%m-%d").to_string()
    }
}

fn location(h: &HeaderMap) -> String {
    h.get("location").and_then(|v| v.to_str().ok()).expect("Location header").to_owned()
}

// ---------------------------------------------------------------------------------------------
// VNPAY
// ---------------------------------------------------------------------------------------------

fn vnpay_pay_url(h: &H, txn_ref: &str, amount: i64) -> String {
    vnpay_pay_url_at(h, txn_ref, amount, Utc::now())
}

fn vnpay_pay_url_at(h: &H, txn_ref: &str, amount: i64, created: chrono::DateTime<Utc>) -> String {
    vnpay::pay_url(
        &format!("{}/vnpay/paymentv2/vpcpay.html", h.base),
        &vnpay_creds(),
        &vnpay::PayRequest {
            txn_ref: txn_ref.into(),
            amount_vnd: amount,
            order_info: "Thanh toan le phi truoc ba: ho so 12/34".into(),
            return_url: "https://paygate.example/return/vnpay".into(),
            ip_addr: "203.0.113.5".into(),
            locale: vnpay::Locale::Vn,
            created_at: created,
            expires_at: created + ChronoDuration::minutes(15),
            bank_code: None,
        },
    )
    .expect("pay url")
}

async fn vnpay_decide(h: &H, txn_ref: &str, action: &str, fault: &str) -> String {
    let (s, _, body) = h.get(&vnpay_pay_url(h, txn_ref, 150_000)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, headers, body) = h
        .post_form(
            &format!("{}/vnpay/paymentv2/decide", h.base),
            &[("txn_ref", txn_ref), ("action", action), ("fault", fault)],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    location(&headers)
}

#[tokio::test]
async fn vnpay_approve_sends_verified_ipn_then_redirects() {
    let h = H::new().await;
    let (s, _, page) = h.get(&vnpay_pay_url(&h, "ORD-1", 150_000)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("150.000 ₫"), "{page}");
    assert!(page.contains("ho so 12/34"));
    assert!(page.contains("name=\"action\" value=\"approve\""));

    let (s, headers, _) = h
        .post_form(&format!("{}/vnpay/paymentv2/decide", h.base), &[("txn_ref", "ORD-1"), ("action", "approve")])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    // The IPN was delivered before the 303 (no fault): no waiting needed.
    let ipns = h.received("/vnpay-ipn");
    assert_eq!(ipns.len(), 1);
    let ev = vnpay::verify_ipn(&vnpay_creds(), &vnpay::parse_query(&ipns[0].query)).expect("IPN verifies");
    assert_eq!(ev.merchant_ref, "ORD-1");
    assert_eq!(ev.amount, 150_000);
    assert_eq!(ev.outcome, Outcome::Succeeded);
    assert!(ev.paid_at.is_some());
    let q = vnpay::parse_query(&ipns[0].query);
    let get = |k: &str| q.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
    assert_eq!(get("vnp_Amount").as_deref(), Some("15000000"));
    assert_eq!(get("vnp_BankCode").as_deref(), Some("NCB"));
    assert_eq!(get("vnp_TransactionStatus").as_deref(), Some("00"));

    let loc = location(&headers);
    let (base, query) = loc.split_once('?').expect("query on return url");
    assert_eq!(base, "https://paygate.example/return/vnpay");
    assert_eq!(query, ipns[0].query, "return URL carries the same signed params");
    assert!(vnpay::verify_ipn(&vnpay_creds(), &vnpay::parse_query(query)).is_ok());

    let sent = h.callbacks_sent().await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["provider"], "vnpay");
    assert_eq!(sent[0]["status"], 200);
    assert_eq!(sent[0]["accepted"], true);

    // Deciding twice is refused.
    let (s, _, _) = h
        .post_form(&format!("{}/vnpay/paymentv2/decide", h.base), &[("txn_ref", "ORD-1"), ("action", "approve")])
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn vnpay_rejects_bad_signature_and_bad_input_with_html() {
    let h = H::new().await;
    let url = vnpay_pay_url(&h, "ORD-2", 10_000);
    let tampered = url.replace("vnp_Amount=1000000", "vnp_Amount=100");
    let (s, headers, page) = h.get(&tampered).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").starts_with("text/html"));
    assert!(page.contains("code=70"), "{page}");
    let (s, _, _) = h.get(&format!("{}/vnpay/paymentv2/vpcpay.html", h.base)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) =
        h.post_form(&format!("{}/vnpay/paymentv2/decide", h.base), &[("txn_ref", "nope"), ("action", "approve")]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = h
        .post_form(
            &format!("{}/vnpay/paymentv2/decide", h.base),
            &[("txn_ref", "x"), ("action", "approve"), ("fault", "boom")],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn vnpay_decline_sends_24_02() {
    let h = H::new().await;
    let loc = vnpay_decide(&h, "ORD-3", "decline", "").await;
    let ipns = h.received("/vnpay-ipn");
    assert_eq!(ipns.len(), 1);
    let ev = vnpay::verify_ipn(&vnpay_creds(), &vnpay::parse_query(&ipns[0].query)).expect("verifies");
    assert_eq!(ev.provider_code, "24");
    assert!(matches!(ev.outcome, Outcome::Failed { .. }));
    assert!(loc.contains("vnp_ResponseCode=24"));
}

#[tokio::test]
async fn vnpay_fault_duplicate_delivers_twice() {
    let h = H::new().await;
    vnpay_decide(&h, "ORD-D", "approve", "duplicate").await;
    let ipns = h.received("/vnpay-ipn");
    assert_eq!(ipns.len(), 2);
    assert_eq!(ipns[0].query, ipns[1].query);
    let sent = h.callbacks_sent().await;
    assert_eq!(sent[1]["variant"], "duplicate");
    assert_eq!(sent[1]["fault"], "duplicate");
}

#[tokio::test]
async fn vnpay_fault_bad_signature_is_rejected_by_verifier_but_redirect_is_good() {
    let h = H::new().await;
    let loc = vnpay_decide(&h, "ORD-B", "approve", "bad_signature").await;
    let ipns = h.received("/vnpay-ipn");
    assert_eq!(ipns.len(), 1);
    assert_eq!(vnpay::verify_ipn(&vnpay_creds(), &vnpay::parse_query(&ipns[0].query)), Err(VerifyError::BadSignature));
    let (_, query) = loc.split_once('?').expect("query");
    assert!(vnpay::verify_ipn(&vnpay_creds(), &vnpay::parse_query(query)).is_ok());
}

#[tokio::test]
async fn vnpay_fault_reorder_sends_stale_failure_after_success() {
    let h = H::new().await;
    vnpay_decide(&h, "ORD-R", "approve", "reorder").await;
    let ipns = h.received("/vnpay-ipn");
    assert_eq!(ipns.len(), 2);
    let first = vnpay::verify_ipn(&vnpay_creds(), &vnpay::parse_query(&ipns[0].query)).expect("first");
    let second = vnpay::verify_ipn(&vnpay_creds(), &vnpay::parse_query(&ipns[1].query)).expect("second verifies too");
    assert_eq!(first.outcome, Outcome::Succeeded);
    assert!(matches!(second.outcome, Outcome::Failed { .. }));
    assert_eq!(second.merchant_ref, "ORD-R");
    let date =
        |q: &str| vnpay::parse_query(q).into_iter().find(|(k, _)| k == "vnp_PayDate").map(|(_, v)| v).expect("PayDate");
    assert!(date(&ipns[1].query) < date(&ipns[0].query), "stale one looks earlier");
}

#[tokio::test]
async fn vnpay_querydr_refund_and_settlement() {
    let h = H::new().await;
    let created = Utc::now();
    let url = vnpay_pay_url_at(&h, "ORD-Q", 150_000, created);
    let api = format!("{}/vnpay/merchant_webapi/api/transaction", h.base);
    let querydr = |id: &str| {
        vnpay::querydr_request(
            &vnpay_creds(),
            &vnpay::QueryDrRequest {
                request_id: id.into(),
                txn_ref: "ORD-Q".into(),
                transaction_date: created,
                create_date: Utc::now(),
                ip_addr: "127.0.0.1".into(),
                order_info: "query".into(),
            },
        )
        .expect("querydr body")
    };
    // Unknown before the payer opens the page.
    let (_, body) = h.post_json(&api, &querydr("Q0")).await;
    assert_eq!(vnpay::verify_querydr_response(&vnpay_creds(), &body).expect("signed").response_code, "91");

    assert_eq!(h.get(&url).await.0, StatusCode::OK);
    let (_, body) = h.post_json(&api, &querydr("Q1")).await;
    let r = vnpay::verify_querydr_response(&vnpay_creds(), &body).expect("signed");
    assert_eq!(r.event.expect("event").outcome, Outcome::Pending);

    // drop: no IPN at all, but querydr tells the truth.
    let (s, _, _) = h
        .post_form(
            &api.replace("merchant_webapi/api/transaction", "paymentv2/decide"),
            &[("txn_ref", "ORD-Q"), ("action", "approve"), ("fault", "drop")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(h.received("/vnpay-ipn").is_empty());
    assert!(h.callbacks_sent().await.is_empty());
    let (_, body) = h.post_json(&api, &querydr("Q2")).await;
    let r = vnpay::verify_querydr_response(&vnpay_creds(), &body).expect("signed");
    assert_eq!(r.response_code, "00");
    let ev = r.event.expect("event");
    assert_eq!((ev.outcome, ev.amount), (Outcome::Succeeded, 150_000));
    let payment_no = ev.provider_txn_id.expect("txn no");

    // Reused request id → 94; tampered hash → 97.
    let (_, body) = h.post_json(&api, &querydr("Q2")).await;
    assert_eq!(body["vnp_ResponseCode"], "94");
    let mut bad = querydr("Q3");
    bad["vnp_OrderInfo"] = "changed".into();
    let (_, body) = h.post_json(&api, &bad).await;
    assert_eq!(body["vnp_ResponseCode"], "97");

    let refund_of = |txn_ref: &str, no: Option<String>, id: &str, kind: vnpay::RefundKind, amount: i64| {
        vnpay::refund_request(
            &vnpay_creds(),
            &vnpay::RefundRequest {
                request_id: id.into(),
                kind,
                txn_ref: txn_ref.into(),
                amount_vnd: amount,
                transaction_no: no,
                transaction_date: created,
                create_by: "ops".into(),
                create_date: Utc::now(),
                ip_addr: "127.0.0.1".into(),
                order_info: "Hoan tien".into(),
            },
        )
        .expect("refund body")
    };
    let refund =
        |id: &str, kind: vnpay::RefundKind, amount: i64| refund_of("ORD-Q", Some(payment_no.clone()), id, kind, amount);
    let (_, body) = h.post_json(&api, &refund("R1", vnpay::RefundKind::Partial, 50_000)).await;
    let r = vnpay::verify_refund_response(&vnpay_creds(), &body).expect("signed");
    assert!(r.accepted(), "{body}");
    assert_eq!(r.amount_vnd, Some(50_000));
    let (_, body) = h.post_json(&api, &refund("R2", vnpay::RefundKind::Partial, 100_001)).await;
    assert_eq!(vnpay::verify_refund_response(&vnpay_creds(), &body).expect("signed").response_code, "93");
    let (_, body) = h.post_json(&api, &refund("R3", vnpay::RefundKind::Full, 150_000)).await;
    assert_eq!(body["vnp_ResponseCode"], "93", "full refund after a partial one");
    let (_, body) = h.post_json(&api, &refund("R4", vnpay::RefundKind::Partial, 100_000)).await;
    assert!(vnpay::verify_refund_response(&vnpay_creds(), &body).expect("signed").accepted());
    let (_, body) = h.post_json(&api, &refund("R5", vnpay::RefundKind::Partial, 1)).await;
    assert_eq!(body["vnp_ResponseCode"], "93", "nothing left to refund");

    // A declined order cannot be refunded (95); a wrong transaction date does not find it (91).
    assert_eq!(h.get(&vnpay_pay_url_at(&h, "ORD-X", 30_000, created)).await.0, StatusCode::OK);
    h.post_form(&format!("{}/vnpay/paymentv2/decide", h.base), &[("txn_ref", "ORD-X"), ("action", "decline")]).await;
    let (_, body) = h.post_json(&api, &refund_of("ORD-X", None, "R6", vnpay::RefundKind::Full, 30_000)).await;
    assert_eq!(vnpay::verify_refund_response(&vnpay_creds(), &body).expect("signed").response_code, "95");
    let mut wrong_date = querydr("Q9");
    wrong_date["vnp_TransactionDate"] = "20000101000000".into();
    let (_, body) = h.post_json(&api, &wrong_date).await;
    assert_eq!(body["vnp_ResponseCode"], "97", "the date is signed, so changing it breaks the hash");
    // Not JSON at all → 03.
    let (_, body) = h.post_json(&api, &json!(["not", "an", "object"])).await;
    assert_eq!(body["vnp_ResponseCode"], "03");

    // Settlement: the payment (×100, fee) and both refunds, today GMT+7.
    let (s, headers, csv) = h.get(&format!("{}/vnpay/settlement?date={}", h.base, h.today())).await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").starts_with("text/csv"));
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "TmnCode,TransactionNo,TxnRef,TransactionType,Amount,Fee,BankCode,PayDate,OriginalTransactionNo,Status"
    );
    assert_eq!(lines.len(), 4, "{csv}");
    let payment: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(payment[..7], ["PGSANDBX", payment_no.as_str(), "ORD-Q", "01", "15000000", "165000", "NCB"]);
    assert_eq!(payment[9], "Thanh cong");
    let refund1: Vec<&str> = lines[2].split(',').collect();
    assert_eq!((refund1[3], refund1[4], refund1[5], refund1[8]), ("03", "5000000", "0", payment_no.as_str()));
    // Another day is empty; a bad date is a 400.
    let (_, _, csv) = h.get(&format!("{}/vnpay/settlement?date=2001-01-01", h.base)).await;
    assert_eq!(csv.split("\r\n").filter(|l| !l.is_empty()).count(), 1);
    assert_eq!(h.get(&format!("{}/vnpay/settlement?date=yesterday", h.base)).await.0, StatusCode::BAD_REQUEST);
}

// ---------------------------------------------------------------------------------------------
// MoMo
// ---------------------------------------------------------------------------------------------

/// Create with the receiver as ipnUrl (re-signed, since ipnUrl is signed).
fn momo_create_for(h: &H, order_id: &str, amount: i64, info: &str) -> momo::CreateRequestBody {
    let recv = h.cfg.vnpay_ipn_url.replace("/vnpay-ipn", "/momo-ipn");
    let req = momo::CreateRequest {
        request_id: format!("REQ-{order_id}"),
        order_id: order_id.into(),
        amount,
        order_info: info.into(),
        redirect_url: "https://paygate.example/return/momo".into(),
        ipn_url: recv,
        request_type: momo::RequestType::CaptureWallet,
        extra_data: String::new(),
        lang: momo::Lang::Vi,
    };
    momo::create_request(&momo_creds(), &req).expect("create body")
}

#[tokio::test]
async fn momo_create_decide_ipn_query_refund() {
    let h = H::new().await;
    let api = format!("{}/momo/v2/gateway/api", h.base);
    let (s, answer) = h.post_json(&format!("{api}/create"), &momo_create_for(&h, "PG-M1", 50_000, "Le phi <b>")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(answer["resultCode"], 0, "{answer}");
    let pay_url = answer["payUrl"].as_str().expect("payUrl").to_owned();
    assert_eq!(pay_url, format!("{}/momo/pay/PG-M1", h.base), "absolute, from the Host header");

    let (s, _, page) = h.get(&pay_url).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("50.000 ₫"));
    assert!(page.contains("Le phi &lt;b&gt;"), "escaped");
    assert!(!page.contains("Le phi <b>"));

    let (s, headers, _) = h.post_form(&format!("{pay_url}/decide"), &[("action", "approve")]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let ipns = h.received("/momo-ipn");
    assert_eq!(ipns.len(), 1);
    let ev = momo::verify_ipn(&momo_creds(), &ipns[0].body).expect("IPN verifies");
    assert_eq!((ev.merchant_ref.as_str(), ev.amount, ev.outcome.clone()), ("PG-M1", 50_000, Outcome::Succeeded));
    let trans_id: i64 = ev.provider_txn_id.expect("transId").parse().expect("numeric transId");
    assert_eq!(h.callbacks_sent().await[0]["accepted"], true, "204 expected and received");

    let loc = location(&headers);
    let (base, query) = loc.split_once('?').expect("query");
    assert_eq!(base, "https://paygate.example/return/momo");
    let q: serde_json::Map<String, Value> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            let v = v.into_owned();
            let val = match k.as_ref() {
                "amount" | "transId" | "resultCode" | "responseTime" => {
                    Value::from(v.parse::<i64>().expect("number in redirect"))
                }
                _ => Value::from(v),
            };
            (k.into_owned(), val)
        })
        .collect();
    let redirect_json = serde_json::to_vec(&q).expect("json");
    assert!(momo::verify_ipn(&momo_creds(), &redirect_json).is_ok(), "redirect params signed the same way");

    let (_, r) = h
        .post_json(
            &format!("{api}/query"),
            &momo::query_request(&momo_creds(), "QRY1", "PG-M1", momo::Lang::Vi).expect("q"),
        )
        .await;
    assert_eq!(
        (r["resultCode"].clone(), r["transId"].clone(), r["amount"].clone()),
        (json!(0), json!(trans_id), json!(50_000))
    );

    let refund = |req_id: &str, order: &str, amount: i64| {
        momo::refund_request(
            &momo_creds(),
            &momo::RefundRequest {
                request_id: req_id.into(),
                order_id: order.into(),
                amount,
                trans_id,
                description: "hoan tien".into(),
                lang: momo::Lang::Vi,
            },
        )
        .expect("refund body")
    };
    let (_, r) = h.post_json(&format!("{api}/refund"), &refund("RF1", "PG-M1-R1", 20_000)).await;
    assert_eq!(r["resultCode"], 0, "{r}");
    let (_, r) = h.post_json(&format!("{api}/refund"), &refund("RF2", "PG-M1-R2", 30_001)).await;
    assert_eq!(r["resultCode"], 1081);
    let (_, r) = h.post_json(&format!("{api}/refund"), &refund("RF1", "PG-M1-R3", 1_000)).await;
    assert_eq!(r["resultCode"], 40, "reused requestId");
    let (_, r) = h
        .post_json(
            &format!("{api}/query"),
            &momo::query_request(&momo_creds(), "QRY2", "PG-M1", momo::Lang::Vi).expect("q"),
        )
        .await;
    assert_eq!(r["refundTrans"].as_array().map(Vec::len), Some(1));

    // Settlement file: payment and refund.
    let (_, _, csv) = h.get(&format!("{}/momo/settlement?date={}", h.base, h.today())).await;
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with(&format!("MOMOPGSB,{trans_id},PG-M1,REQ-PG-M1,payment,50000,1000,qr,")));
    assert!(lines[2].contains(",PG-M1-R1,RF1,refund,20000,0,,"), "{csv}");
    assert!(lines[2].ends_with(&format!(",{trans_id},PG-M1,SUCCESS")));
}

#[tokio::test]
async fn momo_rejects_bad_signature_and_replays_identical_create() {
    let h = H::new().await;
    let url = format!("{}/momo/v2/gateway/api/create", h.base);
    let mut body = momo_create_for(&h, "PG-M2", 10_000, "x");
    let good = body.clone();
    body.amount = 20_000;
    let (_, r) = h.post_json(&url, &body).await;
    assert_eq!(r["resultCode"], 13);
    let (_, first) = h.post_json(&url, &good).await;
    let (_, again) = h.post_json(&url, &good).await;
    assert_eq!(first, again);
    let (s, r) = h.post_json(&url, &json!({"partnerCode": "MOMOPGSB"})).await;
    assert_eq!((s, r["resultCode"].clone()), (StatusCode::BAD_REQUEST, json!(20)));
}

#[tokio::test]
async fn momo_per_run_faults_wrong_amount_then_reorder() {
    let h = H::new().await;
    let faults = format!("{}/faults", h.base);
    let (s, table) = h.post_json(&faults, &json!({"provider": "momo", "fault": "wrong_amount"})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(table["momo"], "wrong_amount");
    assert_eq!(table["vnpay"], Value::Null);
    let (s, _) = h.post_json(&faults, &json!({"provider": "paypal", "fault": "drop"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h.post_json(&faults, &json!({"provider": "momo", "fault": "explode"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, _, shown) = h.get(&faults).await;
    assert_eq!(serde_json::from_str::<Value>(&shown).expect("json")["momo"], "wrong_amount");

    let api = format!("{}/momo/v2/gateway/api/create", h.base);
    let (_, a) = h.post_json(&api, &momo_create_for(&h, "PG-W1", 10_000, "x")).await;
    let pay = a["payUrl"].as_str().expect("payUrl").to_owned();
    h.post_form(&format!("{pay}/decide"), &[("action", "approve")]).await;
    let ipns = h.received("/momo-ipn");
    let ev = momo::verify_ipn(&momo_creds(), &ipns[0].body).expect("correctly signed");
    assert_eq!(ev.amount, 10_001, "amount + 1 đồng");

    // Per-payment field overrides the default.
    h.post_json(&faults, &json!({"provider": "momo", "fault": null})).await;
    let (_, a) = h.post_json(&api, &momo_create_for(&h, "PG-W2", 10_000, "x")).await;
    let pay = a["payUrl"].as_str().expect("payUrl").to_owned();
    h.post_form(&format!("{pay}/decide"), &[("action", "decline"), ("fault", "reorder")]).await;
    let ipns = h.received("/momo-ipn");
    assert_eq!(ipns.len(), 3);
    let last = momo::verify_ipn(&momo_creds(), &ipns[1].body).expect("verifies");
    let stale = momo::verify_ipn(&momo_creds(), &ipns[2].body).expect("verifies");
    assert_eq!(last.provider_code, "1006");
    assert_eq!(stale.outcome, Outcome::Pending);
}

// ---------------------------------------------------------------------------------------------
// ZaloPay
// ---------------------------------------------------------------------------------------------

fn zalopay_create(h: &H, our_ref: &str, callback: bool) -> zalopay::CreateRequestBody {
    let now = Utc::now();
    let recv = h.cfg.vnpay_ipn_url.replace("/vnpay-ipn", "/zalopay-cb");
    zalopay::create_request(
        &zalopay_creds(),
        &zalopay::CreateRequest {
            app_user: "user123".into(),
            app_trans_id: zalopay::app_trans_id(now, our_ref).expect("id"),
            app_time_ms: now.timestamp_millis(),
            expire_duration_seconds: Some(900),
            amount: 75_000,
            item: "[]".into(),
            embed_data: r#"{"redirecturl":"https://paygate.example/return/zalopay"}"#.into(),
            description: "Le phi cap GCN".into(),
            bank_code: String::new(),
            callback_url: callback.then_some(recv),
        },
    )
    .expect("create")
}

#[tokio::test]
async fn zalopay_create_decide_callback_query_refund() {
    let h = H::new().await;
    let body = zalopay_create(&h, "Z1", true);
    let (_, a) = h.post_json(&format!("{}/zalopay/v2/create", h.base), &body).await;
    assert_eq!(a["return_code"], 1, "{a}");
    let order_url = a["order_url"].as_str().expect("order_url").to_owned();
    assert_eq!(order_url, format!("{}/zalopay/pay/{}", h.base, body.app_trans_id));
    assert!(a["zp_trans_token"].as_str().is_some_and(|t| !t.is_empty()));

    let (s, _, page) = h.get(&order_url).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("75.000 ₫"));
    let (s, headers, _) = h.post_form(&format!("{order_url}/decide"), &[("action", "approve")]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let cbs = h.received("/zalopay-cb");
    assert_eq!(cbs.len(), 1);
    let ev = zalopay::verify_callback(&zalopay_creds(), &cbs[0].body).expect("callback verifies");
    assert_eq!((ev.merchant_ref.as_str(), ev.amount), (body.app_trans_id.as_str(), 75_000));
    let outer: Value = serde_json::from_slice(&cbs[0].body).expect("json");
    assert_eq!(outer["type"], 1);
    assert_eq!(h.callbacks_sent().await[0]["accepted"], true);
    let loc = location(&headers);
    assert!(loc.starts_with("https://paygate.example/return/zalopay?"), "{loc}");
    assert!(loc.contains("status=1"));
    let q: Vec<(String, String)> = vnpay::parse_query(loc.split_once('?').map(|x| x.1).unwrap_or(""));
    let get = |k: &str| q.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let checksum_data = format!(
        "{}|{}|{}|{}|{}|{}|{}",
        get("appid"),
        get("apptransid"),
        get("pmcid"),
        get("bankcode"),
        get("amount"),
        get("discountamount"),
        get("status")
    );
    assert_eq!(get("checksum"), hmac_sha256_hex(&zalopay_creds().key2, &checksum_data));

    // Query (form-encoded, as the protocol module builds it).
    let q = zalopay::query_request(&zalopay_creds(), &body.app_trans_id).expect("query");
    let r = h
        .client
        .post(format!("{}/zalopay/v2/query", h.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(q.to_form())
        .send()
        .await
        .expect("query");
    let bytes = r.bytes().await.expect("body");
    let ev = zalopay::parse_query_response(&body.app_trans_id, &bytes).expect("parses");
    assert_eq!((ev.outcome, ev.amount), (Outcome::Succeeded, 75_000));
    let zp_trans_id = ev.provider_txn_id.expect("zp_trans_id");

    let refund = |m_refund_id: &str, amount: i64| {
        let ts = Utc::now().timestamp_millis().to_string();
        let mac = hmac_sha256_hex(&zalopay_creds().key1, &format!("2553|{zp_trans_id}|{amount}|hoan tien|{ts}"));
        form_urlencoded::Serializer::new(String::new())
            .append_pair("app_id", "2553")
            .append_pair("m_refund_id", m_refund_id)
            .append_pair("zp_trans_id", &zp_trans_id)
            .append_pair("amount", &amount.to_string())
            .append_pair("timestamp", &ts)
            .append_pair("description", "hoan tien")
            .append_pair("mac", &mac)
            .finish()
    };
    let send = |form: String| {
        let c = h.client.clone();
        let url = format!("{}/zalopay/v2/refund", h.base);
        async move {
            let r = c
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .expect("refund");
            r.json::<Value>().await.expect("json")
        }
    };
    let day = Utc::now().with_timezone(&super::gmt7()).format("%y%m%d").to_string();
    let r = send(refund(&format!("{day}_2553_RF1"), 25_000)).await;
    assert_eq!(r["return_code"], 1, "{r}");
    let r = send(refund(&format!("{day}_2553_RF2"), 50_001)).await;
    assert_eq!(r["return_code"], 2);
    let r = send(refund(&format!("{day}_2553_RF1"), 1)).await;
    assert_eq!(r["sub_return_code"], -68);

    let (_, _, csv) = h.get(&format!("{}/zalopay/settlement?date={}", h.base, h.today())).await;
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with(&format!("2553,{zp_trans_id},{},PAYMENT,,,75000,1000,", body.app_trans_id)));
    assert!(lines[2].contains(",REFUND,") && lines[2].contains(&format!(",{day}_2553_RF1,25000,0,")));
}

#[tokio::test]
async fn zalopay_decline_sends_no_callback_and_bad_mac_is_refused() {
    let h = H::new().await;
    let mut body = zalopay_create(&h, "Z2", true);
    let good = body.clone();
    body.amount += 1;
    let (_, a) = h.post_json(&format!("{}/zalopay/v2/create", h.base), &body).await;
    assert_eq!((a["return_code"].clone(), a["sub_return_code"].clone()), (json!(2), json!(-402)));
    let (_, a) = h.post_json(&format!("{}/zalopay/v2/create", h.base), &good).await;
    let url = a["order_url"].as_str().expect("order_url").to_owned();
    let (s, headers, _) = h.post_form(&format!("{url}/decide"), &[("action", "decline")]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(location(&headers).contains("status=-49"));
    assert!(h.received("/zalopay-cb").is_empty());
    let q = zalopay::query_request(&zalopay_creds(), &good.app_trans_id).expect("q");
    let (_, r) = h.post_json(&format!("{}/zalopay/v2/query", h.base), &q).await;
    let ev = zalopay::parse_query_response(&good.app_trans_id, r.to_string().as_bytes()).expect("parses");
    assert!(matches!(ev.outcome, Outcome::Failed { .. }));
}

#[tokio::test]
async fn zalopay_fault_delay_sends_in_background() {
    let h = H::new().await;
    let body = zalopay_create(&h, "Z3", true);
    let (_, a) = h.post_json(&format!("{}/zalopay/v2/create", h.base), &body).await;
    let url = a["order_url"].as_str().expect("order_url").to_owned();
    let (s, _, _) = h.post_form(&format!("{url}/decide"), &[("action", "approve"), ("fault", "delay:400")]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(h.received("/zalopay-cb").is_empty(), "redirect happens before the delayed callback");
    let cbs = h.wait_received("/zalopay-cb", 1).await;
    assert!(zalopay::verify_callback(&zalopay_creds(), &cbs[0].body).is_ok());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = h.callbacks_sent().await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["fault"], "delay:400");
}

// ---------------------------------------------------------------------------------------------
// Bank / VietQR
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bank_transfer_from_qr_sends_signed_notification() {
    let h = H::new().await;
    let qr = vietqr::payload(&vietqr::VietQrRequest {
        bin: "970403".into(),
        account: "0011012345678".into(),
        service: vietqr::Service::ToAccount,
        amount: Some(180_000),
        bill_number: None,
        purpose: Some("PG K7Q2M9".into()),
    })
    .expect("qr");
    let enc: String = form_urlencoded::byte_serialize(qr.as_bytes()).collect();
    let (s, _, page) = h.get(&format!("{}/bank/sandbox/transfer?qr={enc}", h.base)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("180.000 ₫") && page.contains("PG K7Q2M9") && page.contains("value=\"0011012345678\""));
    let (s, _, page) = h.get(&format!("{}/bank/sandbox/transfer?qr=garbage", h.base)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("Mã QR không hợp lệ"));
    assert_eq!(h.get(&format!("{}/bank/nobank/transfer", h.base)).await.0, StatusCode::NOT_FOUND);

    let url = format!("{}/bank/sandbox/transfer", h.base);
    let (s, _, page) =
        h.post_form(&url, &[("account", "0011012345678"), ("amount", "180.000"), ("description", "PG K7Q2M9")]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("HTTP 200"), "{page}");
    let got = h.received("/bank-notify");
    assert_eq!(got.len(), 1);
    let header = got[0].headers.get(signature::HEADER_NAME).and_then(|v| v.to_str().ok()).expect("signature header");
    signature::verify(header, &got[0].body, &[SecretString::from(BANK_SECRET)], Utc::now().timestamp(), 300)
        .expect("notification verifies");
    let v: Value = serde_json::from_slice(&got[0].body).expect("json");
    assert_eq!(v["bank"], "sandbox");
    assert_eq!(v["account"], "0011012345678");
    assert_eq!(v["amount"], 180_000);
    assert_eq!(v["currency"], "VND");
    assert_eq!(v["description"], "PG K7Q2M9");
    assert!(v["event_id"].as_str().is_some_and(|e| e.starts_with("evt_")));
    let credited = v["credited_at"].as_str().expect("credited_at");
    assert!(credited.ends_with("+07:00"), "{credited}");
    assert!(chrono::DateTime::parse_from_rfc3339(credited).is_ok());
    let keys: Vec<&str> = std::str::from_utf8(&got[0].body)
        .expect("utf8")
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|k| {
            ["event_id", "bank", "account", "amount", "currency", "description", "transaction_id", "credited_at"]
                .contains(k)
        })
        .collect();
    assert_eq!(keys[0], "event_id");

    // Invalid amount → form again, 400, nothing sent.
    let (s, _, _) = h.post_form(&url, &[("account", "1"), ("amount", "-3"), ("description", "x")]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(h.received("/bank-notify").len(), 1);

    let (_, _, csv) = h.get(&format!("{}/bank/sandbox/settlement?date={}", h.base, h.today())).await;
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "bank,account,transaction_id,event_id,amount,fee,credited_at,description");
    assert_eq!(lines.len(), 2);
    assert!(lines[1].starts_with(&format!(
        "sandbox,0011012345678,{},{},180000,0,",
        v["transaction_id"].as_str().unwrap_or("?"),
        v["event_id"].as_str().unwrap_or("?")
    )));
    assert!(lines[1].ends_with(",PG K7Q2M9"));
}

#[tokio::test]
async fn bank_faults_bad_signature_drop_and_reorder() {
    let h = H::new().await;
    let url = format!("{}/bank/sandbox/transfer", h.base);
    let form = |fault: &'static str| {
        [("account", "0011012345678"), ("amount", "50000"), ("description", "PG AAA"), ("fault", fault)]
    };
    h.post_form(&url, &form("bad_signature")).await;
    let got = h.received("/bank-notify");
    let header = got[0].headers.get(signature::HEADER_NAME).and_then(|v| v.to_str().ok()).expect("header");
    assert_eq!(
        signature::verify(header, &got[0].body, &[SecretString::from(BANK_SECRET)], Utc::now().timestamp(), 300),
        Err(signature::SignatureError::Mismatch)
    );

    h.post_form(&url, &form("drop")).await;
    assert_eq!(h.received("/bank-notify").len(), 1);

    h.post_form(&url, &form("reorder")).await;
    let got = h.received("/bank-notify");
    assert_eq!(got.len(), 3);
    let a: Value = serde_json::from_slice(&got[1].body).expect("json");
    let b: Value = serde_json::from_slice(&got[2].body).expect("json");
    assert_eq!(a["transaction_id"], b["transaction_id"]);
    assert_ne!(a["event_id"], b["event_id"]);
    assert!(b["credited_at"].as_str() < a["credited_at"].as_str());
    for r in &got[1..] {
        let header = r.headers.get(signature::HEADER_NAME).and_then(|v| v.to_str().ok()).expect("header");
        assert!(
            signature::verify(header, &r.body, &[SecretString::from(BANK_SECRET)], Utc::now().timestamp(), 300).is_ok()
        );
    }
    // The ledger still has all three credits.
    let (_, _, csv) = h.get(&format!("{}/bank/sandbox/settlement?date={}", h.base, h.today())).await;
    assert_eq!(csv.split("\r\n").filter(|l| !l.is_empty()).count(), 4);
}

// ---------------------------------------------------------------------------------------------
// Index, faults form, oneshot
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn index_lists_providers_and_orders() {
    let h = H::new().await;
    h.get(&vnpay_pay_url(&h, "ORD-IDX", 20_000)).await;
    let (s, _, page) = h.get(&h.base).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains("VNPAY") && page.contains("MoMo") && page.contains("ZaloPay") && page.contains("Bank sandbox")
    );
    assert!(page.contains("ORD-IDX"));
    assert!(page.contains("href=\"/sandbox/bank/sandbox/transfer\""), "links are under the nest point");
    // The HTML faults form posts urlencoded and is redirected back.
    let (s, headers, _) = h.post_form(&format!("{}/faults", h.base), &[("provider", "bank"), ("fault", "drop")]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/sandbox/");
    let (_, _, faults) = h.get(&format!("{}/faults", h.base)).await;
    assert_eq!(serde_json::from_str::<Value>(&faults).expect("json")["bank"], "drop");
}

#[tokio::test]
async fn oneshot_without_nesting() {
    use tower::ServiceExt;
    let cfg = SandboxConfig {
        vnpay: vnpay_creds(),
        vnpay_ipn_url: "http://127.0.0.1:9/ipn".into(),
        momo: momo_creds(),
        zalopay: zalopay_creds(),
        banks: vec![],
        http_timeout: Duration::from_millis(200),
    };
    let app = router(cfg);
    let body = serde_json::to_vec(
        &momo::create_request(
            &momo_creds(),
            &momo::CreateRequest {
                request_id: "R1".into(),
                order_id: "O1".into(),
                amount: 10_000,
                order_info: "x".into(),
                redirect_url: "https://m.example/r".into(),
                ipn_url: "https://m.example/ipn".into(),
                request_type: momo::RequestType::CaptureWallet,
                extra_data: String::new(),
                lang: momo::Lang::En,
            },
        )
        .expect("body"),
    )
    .expect("json");
    let req = axum::http::Request::post("/momo/v2/gateway/api/create")
        .header("host", "demo.example:8080")
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(v["payUrl"], "https://demo.example:8080/momo/pay/O1");

    // A hostile Host header is not reflected.
    let req = axum::http::Request::get("/")
        .header("host", "evil\"><script>")
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = app.oneshot(req).await.expect("response");
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
    assert!(!String::from_utf8_lossy(&bytes).contains("<script>"));
}
