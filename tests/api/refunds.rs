//! Refunds: full and partial, never more than remains, posted when the provider confirms,
//! exactly once.

use paygate::auth::Role;
use serde_json::json;

use paygate::store::refunds::RefundAnswer::Made;

use crate::helpers::{JsonServe, TestApp, paygate, read};

fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A paid payment of a 6,250,000 đồng notice through `provider` (approved on its sandbox page).
async fn paid(app: &TestApp, provider: &str) -> (String, String) {
    let code = app.issue_small_notice().await;
    let r = app.start_payment(&code, provider).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let merchant_ref = r.body["merchant_ref"].as_str().unwrap().to_string();
    let (path, form) = match provider {
        "vnpay" => ("/sandbox/vnpay/paymentv2/decide".to_string(), vec![("txn_ref", merchant_ref.clone())]),
        _ => (format!("/sandbox/{provider}/pay/{merchant_ref}/decide"), vec![]),
    };
    let mut form = form;
    form.push(("action", "approve".into()));
    read(browser().get(r.body["redirect_url"].as_str().unwrap()).send().await.unwrap()).await;
    let d = read(browser().post(app.url(&path)).form(&form).send().await.unwrap()).await;
    assert_eq!(d.status, 303, "{}", d.text);
    assert_eq!(app.payment(&id).await["status"], "succeeded");
    (code, id)
}

#[tokio::test]
async fn partial_then_full_refunds_through_each_provider() {
    let app = TestApp::spawn().await;
    let treasurer = app.token(Role::Treasurer).await;
    for provider in ["vnpay", "momo"] {
        let (code, id) = paid(&app, provider).await;
        let path = format!("/v1/payments/{id}/refunds");
        let r = app
            .post_json(&path, &json!({"amount": 1_000_000, "reason": "fee charged twice"}), Some(&treasurer), None)
            .await;
        assert_eq!(r.status, 201, "{provider}: {}", r.text);
        assert_eq!(r.body["refund"]["status"], "succeeded");
        assert_eq!(r.body["payment"]["status"], "partially_refunded");
        assert_eq!(r.body["payment"]["refunded_amount"], 1_000_000);

        let r = app.post_json(&path, &json!({"amount": 5_250_001, "reason": "too much"}), Some(&treasurer), None).await;
        let p = r.assert_problem(422, "validation-error");
        assert_eq!((p["field"].as_str(), p["code"].as_str()), (Some("amount"), Some("exceeds_remaining")));

        let r = app.post_json(&path, &json!({"reason": "dossier withdrawn"}), Some(&treasurer), None).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["refund"]["amount"], 5_250_000, "the rest");
        assert_eq!(r.body["payment"]["status"], "refunded");
        let view = app.payment(&id).await;
        assert_eq!(view["refunds"].as_array().unwrap().len(), 2);
        let causes: Vec<&str> =
            view["history"].as_array().unwrap().iter().map(|e| e["to_status"].as_str().unwrap()).collect();
        assert_eq!(causes, ["pending", "succeeded", "partially_refunded", "refunded"]);
        app.post_json(&path, &json!({"reason": "again"}), Some(&treasurer), None)
            .await
            .assert_problem(422, "validation-error");
        let sql = format!(
            "SELECT COUNT(*) FROM outbox_events WHERE notice_code = '{code}' AND event_type = 'payment.refunded'"
        );
        assert_eq!(app.scalar(&sql).await, 2);
    }
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn refunds_need_a_treasurer_a_reason_and_received_money() {
    let app = TestApp::spawn().await;
    let (_, id) = paid(&app, "vnpay").await;
    let path = format!("/v1/payments/{id}/refunds");
    for role in [Role::Auditor, Role::Issuer, Role::Admin] {
        let t = app.token(role).await;
        app.post_json(&path, &json!({"reason": "x"}), Some(&t), None).await.assert_problem(403, "forbidden");
    }
    let treasurer = app.token(Role::Treasurer).await;
    let r = app.post_json(&path, &json!({"reason": " "}), Some(&treasurer), None).await;
    assert_eq!(r.assert_problem(422, "validation-error")["field"], "reason");
    let r = app.post_json(&path, &json!({"reason": "x", "amount": -5}), Some(&treasurer), None).await;
    assert_eq!(r.assert_problem(422, "validation-error")["field"], "amount");
    app.post_json("/v1/payments/pay_nope/refunds", &json!({"reason": "x"}), Some(&treasurer), None)
        .await
        .assert_problem(404, "not-found");

    // Nothing was received for a pending payment.
    let code = app.issue_small_notice().await;
    let pending = app.start_payment(&code, "vnpay").await.body["id"].as_str().unwrap().to_string();
    let r = app
        .post_json(&format!("/v1/payments/{pending}/refunds"), &json!({"reason": "x"}), Some(&treasurer), None)
        .await;
    r.assert_problem(409, "payment-not-refundable");

    // A bank transfer is refunded by the treasury outside paygate: refused before anything is
    // reserved or written.
    let code = app.issue_small_notice().await;
    let qr = app.start_payment(&code, "vietqr").await.body["id"].as_str().unwrap().to_string();
    assert_eq!(app.bank_credit(6_250_000, &code, "FT-R").await.status, 200);
    let r = app.post_json(&format!("/v1/payments/{qr}/refunds"), &json!({"reason": "x"}), Some(&treasurer), None).await;
    r.assert_problem(422, "refund-not-supported");
    assert_eq!(app.payment(&qr).await["refunds"], json!([]), "no refund written");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM refunds").await, 0);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn an_overpayment_is_refunded_from_suspense() {
    let app = TestApp::spawn().await;
    let code = app.issue_small_notice().await;
    let first = app.start_payment(&code, "vietqr").await.body["id"].as_str().unwrap().to_string();
    let r = app.start_payment(&code, "vnpay").await;
    let second = r.body["id"].as_str().unwrap().to_string();
    let merchant_ref = r.body["merchant_ref"].as_str().unwrap().to_string();
    assert_eq!(app.bank_credit(6_250_000, &code, "FT-1").await.status, 200);
    read(browser().get(r.body["redirect_url"].as_str().unwrap()).send().await.unwrap()).await;
    let form = [("txn_ref", merchant_ref.as_str()), ("action", "approve")];
    read(browser().post(app.url("/sandbox/vnpay/paymentv2/decide")).form(&form).send().await.unwrap()).await;
    assert_eq!(app.payment(&first).await["overpayment"], false);
    assert_eq!(app.payment(&second).await["overpayment"], true);
    app.assert_ledger_invariants().await;

    let treasurer = app.token(Role::Treasurer).await;
    let r = app
        .post_json(&format!("/v1/payments/{second}/refunds"), &json!({"reason": "paid twice"}), Some(&treasurer), None)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["payment"]["refund_due"], 0);
    assert_eq!(r.body["payment"]["status"], "refunded");
    assert_eq!(app.notice(&code).await["status"], "paid", "the first payment still pays the notice");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn concurrent_refund_requests_and_confirmations_apply_once() {
    let a = TestApp::spawn().await;
    // Like production, every instance talks to the same provider: a's (in-memory) sandbox.
    let vnpay = a.url("/sandbox/vnpay");
    let b = a.spawn_sibling(|c| c.providers.vnpay.base_url = vnpay.clone()).await;
    let c = a.spawn_sibling(|c| c.providers.vnpay.base_url = vnpay.clone()).await;
    let (code, id) = paid(&a, "vnpay").await;

    // Fifty confirmations of one refund, over three processes: one settlement.
    let (refund, _) =
        a.store.reserve_refund(&id, Some(2_000_000), "test", "t", None, chrono::Utc::now()).await.unwrap();
    let stores = [&a.store, &b.store, &c.store];
    let results = futures::future::join_all((0..50).map(|i| {
        stores[i % 3].settle_refund(&refund.id, Made { provider_ref: Some("VNP-R1"), note: None }, chrono::Utc::now())
    }))
    .await;
    let applied = results.iter().filter(|r| matches!(r, Ok(paygate::store::refunds::Settled::Applied { .. }))).count();
    assert_eq!(applied, 1, "{results:?}");
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let sql = format!("SELECT COUNT(*) FROM ledger_transactions WHERE posting_key = 'refund:{}'", refund.id);
    assert_eq!(a.scalar(&sql).await, 1, "one set of refund postings");
    let sql =
        format!("SELECT COUNT(*) FROM outbox_events WHERE notice_code = '{code}' AND event_type = 'payment.refunded'");
    assert_eq!(a.scalar(&sql).await, 1, "one payment.refunded event");

    // Fifty requests for everything that remains, over three processes: one refund.
    let treasurer = a.token(Role::Treasurer).await;
    let apps = [&a, &b, &c];
    let path = format!("/v1/payments/{id}/refunds");
    let body = json!({"amount": 4_250_000, "reason": "rest"});
    let replies =
        futures::future::join_all((0..50).map(|i| apps[i % 3].post_json(&path, &body, Some(&treasurer), None))).await;
    assert_eq!(
        replies.iter().filter(|r| r.status == 201).count(),
        1,
        "{:?}",
        replies.iter().filter(|r| r.status != 422).map(|r| r.text.clone()).collect::<Vec<_>>()
    );
    assert!(
        // 409: the refund was in flight; 422: nothing remains; 502: the provider was slow under
        // this load and the refund stays pending.
        replies.iter().all(|r| matches!(r.status, 201 | 409 | 422 | 502)),
        "{:?}",
        replies.iter().filter(|r| !matches!(r.status, 201 | 409 | 422)).map(|r| r.text.clone()).collect::<Vec<_>>()
    );
    assert_eq!(a.payment(&id).await["status"], "refunded");
    a.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_refund_whose_outcome_is_unknown_stays_reserved() {
    let app = TestApp::spawn().await;
    let (_, id) = paid(&app, "momo").await;
    // Another instance whose MoMo endpoint does not answer.
    let other = app.spawn_sibling(|c| c.providers.momo.base_url = "http://127.0.0.1:9".into()).await;
    let treasurer = other.token(Role::Treasurer).await;
    let path = format!("/v1/payments/{id}/refunds");
    let r = other.post_json(&path, &json!({"reason": "withdrawn"}), Some(&treasurer), None).await;
    r.assert_problem(502, "refund-outcome-unknown");
    assert_eq!(other.payment(&id).await["refunds"][0]["status"], "pending");
    // It may have been made: nothing more can be refunded until it is resolved.
    let r = app.post_json(&path, &json!({"reason": "again"}), Some(&treasurer), None).await;
    r.assert_problem(409, "refund-pending");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_partial_refund_whose_outcome_is_unknown_is_not_sent_again() {
    let app = TestApp::spawn().await;
    let (_, id) = paid(&app, "momo").await;
    let other = app.spawn_sibling(|c| c.providers.momo.base_url = "http://127.0.0.1:9".into()).await;
    let treasurer = other.token(Role::Treasurer).await;
    let path = format!("/v1/payments/{id}/refunds");
    let body = json!({"amount": 1_000_000, "reason": "withdrawn"});
    let first = other.post_json(&path, &body, Some(&treasurer), Some("refund-1")).await;
    first.assert_problem(502, "refund-outcome-unknown");

    // A retry under the same key replays the answer instead of running again, on either process.
    for app in [&other, &app] {
        let retry = app.post_json(&path, &body, Some(&treasurer), Some("refund-1")).await;
        assert_eq!(retry.header("idempotent-replayed"), Some("true"));
        assert_eq!(retry.text, first.text);
    }
    // A new request (a new key, a double click) would still fit in what remains, but the first
    // refund may have been made: it is refused until that one is settled.
    let again = app.post_json(&path, &body, Some(&treasurer), Some("refund-2")).await;
    let refunds = app.payment(&id).await["refunds"].as_array().unwrap().clone();
    assert_eq!(refunds.len(), 1, "one refund was sent: {refunds:?}");
    let detail = again.assert_problem(409, "refund-pending")["detail"].as_str().unwrap();
    assert!(detail.contains(refunds[0]["id"].as_str().unwrap()), "{detail}");
    assert_eq!(refunds[0]["status"], "pending");
    assert_eq!(refunds[0]["amount"], 1_000_000);
    assert_eq!(refunds[0]["reason"], "withdrawn");
    // The payment's page is public: who asked for the refund is shown to staff only.
    assert!(refunds[0].get("requested_by").is_none(), "{refunds:?}");
    let staff = app.get(&format!("/v1/payments/{id}"), Some(&treasurer)).await;
    assert!(staff.body["refunds"][0]["requested_by"].as_str().is_some_and(|s| !s.is_empty()), "{}", staff.text);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_treasurer_settles_a_refund_left_pending_with_the_outcome_confirmed_with_the_provider() {
    let app = TestApp::spawn().await;
    let treasurer = app.token(Role::Treasurer).await;
    // Another instance whose MoMo endpoint does not answer: both refunds are left pending.
    let other = app.spawn_sibling(|c| c.providers.momo.base_url = "http://127.0.0.1:9".into()).await;
    let (made_code, made) = paid(&app, "momo").await;
    let (_, not_made) = paid(&app, "momo").await;
    let mut pending = Vec::new();
    for id in [&made, &not_made] {
        let path = format!("/v1/payments/{id}/refunds");
        let r =
            other.post_json(&path, &json!({"amount": 1_250_000, "reason": "withdrawn"}), Some(&treasurer), None).await;
        r.assert_problem(502, "refund-outcome-unknown");
        let refund = &other.payment(id).await["refunds"][0];
        assert_eq!(refund["status"], "pending");
        pending.push(refund["id"].as_str().unwrap().to_string());
    }
    let outcome_of = |refund: &str| format!("/v1/refunds/{refund}/outcome");

    // Only a treasurer records an outcome; bad input is refused and changes nothing.
    for role in [Role::Auditor, Role::Admin, Role::Issuer] {
        let t = app.token(role).await;
        let body = json!({"outcome": "succeeded", "note": "portal"});
        app.post_json(&outcome_of(&pending[0]), &body, Some(&t), None).await.assert_problem(403, "forbidden");
    }
    for (body, field) in [
        (json!({"outcome": "maybe", "note": "portal"}), "outcome"),
        (json!({"outcome": "succeeded", "note": "  "}), "note"),
        (json!({"outcome": "failed", "provider_ref": "MM-1", "note": "portal"}), "provider_ref"),
        (json!({"outcome": "succeeded", "provider_ref": "", "note": "portal"}), "provider_ref"),
    ] {
        let r = app.post_json(&outcome_of(&pending[0]), &body, Some(&treasurer), None).await;
        assert_eq!(r.assert_problem(422, "validation-error")["field"], field, "{body}");
    }
    let body = json!({"outcome": "succeeded", "note": "portal"});
    app.post_json(&outcome_of("rf_unknown"), &body, Some(&treasurer), None).await.assert_problem(404, "not-found");
    assert_eq!(app.payment(&made).await["refunds"][0]["status"], "pending");

    // The provider made the first: it is posted, once.
    let body = json!({"outcome": "succeeded", "provider_ref": "MM-REFUND-77", "note": "seen on the MoMo portal"});
    let r = app.post_json(&outcome_of(&pending[0]), &body, Some(&treasurer), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["refund"]["status"], "succeeded");
    assert_eq!(r.body["refund"]["provider_ref"], "MM-REFUND-77");
    assert!(r.body["refund"]["detail"].as_str().unwrap().contains("seen on the MoMo portal"), "{}", r.text);
    assert_eq!(r.body["payment"]["status"], "partially_refunded");
    assert_eq!(r.body["payment"]["refunded_amount"], 1_250_000);
    let again = json!({"outcome": "failed", "note": "changed my mind"});
    app.post_json(&outcome_of(&pending[0]), &again, Some(&treasurer), None)
        .await
        .assert_problem(409, "refund-already-settled");
    assert_eq!(app.payment(&made).await["refunded_amount"], 1_250_000);
    let sql = format!(
        "SELECT COUNT(*) FROM outbox_events WHERE notice_code = '{made_code}' AND event_type = 'payment.refunded'"
    );
    assert_eq!(app.scalar(&sql).await, 1);

    // It did not make the second: nothing is posted and the amount is refundable again.
    let body = json!({"outcome": "failed", "note": "MoMo support: never received"});
    let r = app.post_json(&outcome_of(&pending[1]), &body, Some(&treasurer), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["refund"]["status"], "failed");
    assert_eq!(r.body["payment"]["status"], "succeeded");
    assert_eq!(r.body["payment"]["refunded_amount"], 0);
    let path = format!("/v1/payments/{not_made}/refunds");
    let r = app.post_json(&path, &json!({"reason": "withdrawn"}), Some(&treasurer), None).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["refund"]["amount"], 6_250_000, "the whole payment is refundable again");
    app.assert_ledger_invariants().await;
}

/// Fifty recordings of one pending refund's outcome, at once, over three `paygate serve`
/// processes of the binary on one database: one settlement, one set of refund postings, one
/// `payment.refunded` event; every other answer says the refund is already settled.
#[tokio::test]
async fn fifty_outcomes_of_one_refund_over_three_serve_processes_settle_it_once() {
    let app = TestApp::spawn().await;
    let treasurer = app.token(Role::Treasurer).await;
    // An instance whose MoMo endpoint does not answer leaves the refund pending.
    let other = app.spawn_sibling(|c| c.providers.momo.base_url = "http://127.0.0.1:9".into()).await;
    let (code, id) = paid(&app, "momo").await;
    let path = format!("/v1/payments/{id}/refunds");
    let r = other.post_json(&path, &json!({"amount": 1_250_000, "reason": "withdrawn"}), Some(&treasurer), None).await;
    r.assert_problem(502, "refund-outcome-unknown");
    let refund = other.payment(&id).await["refunds"][0]["id"].as_str().unwrap().to_string();

    let serves: Vec<JsonServe> = (0..3).map(|_| JsonServe::start(paygate(&app.db))).collect();
    let addresses: Vec<String> = serves.iter().map(JsonServe::address).collect();
    let body = json!({"outcome": "succeeded", "provider_ref": "MM-REFUND-50", "note": "seen on the MoMo portal"});
    let replies = futures::future::join_all((0..50).map(|i| {
        let url = format!("http://{}/v1/refunds/{refund}/outcome", addresses[i % 3]);
        let request = app.client.post(url).bearer_auth(&treasurer).json(&body);
        async move { read(request.send().await.unwrap()).await }
    }))
    .await;
    let settled: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(settled.len(), 1, "{:?}", replies.iter().map(|r| (r.status, &r.text)).collect::<Vec<_>>());
    assert_eq!(settled[0].body["refund"]["status"], "succeeded", "{}", settled[0].text);
    for r in replies.iter().filter(|r| r.status != 200) {
        r.assert_problem(409, "refund-already-settled");
    }

    let p = app.payment(&id).await;
    assert_eq!((p["status"].as_str(), p["refunded_amount"].as_i64()), (Some("partially_refunded"), Some(1_250_000)));
    assert_eq!(p["refunds"][0]["provider_ref"], "MM-REFUND-50");
    let sql = format!("SELECT COUNT(*) FROM ledger_transactions WHERE posting_key = 'refund:{refund}'");
    assert_eq!(app.scalar(&sql).await, 1, "one set of refund postings");
    let sql =
        format!("SELECT COUNT(*) FROM outbox_events WHERE notice_code = '{code}' AND event_type = 'payment.refunded'");
    assert_eq!(app.scalar(&sql).await, 1, "one payment.refunded event");
    for serve in serves {
        serve.sigterm();
        assert!(serve.exit().await.success());
    }
    app.assert_ledger_invariants().await;
}

/// A stand-in for MoMo's refund API: each refund request is announced on the channel, then
/// answered with `answer` once the test sends a go-ahead.
async fn momo_refund_api(
    answer: serde_json::Value,
) -> (String, tokio::sync::mpsc::Receiver<()>, tokio::sync::mpsc::Sender<()>) {
    let (arrived_tx, arrived) = tokio::sync::mpsc::channel::<()>(8);
    let (go, go_rx) = tokio::sync::mpsc::channel::<()>(8);
    let go_rx = std::sync::Arc::new(tokio::sync::Mutex::new(go_rx));
    let app = axum::Router::new().route(
        "/v2/gateway/api/refund",
        axum::routing::post(move || {
            let (arrived_tx, go_rx, answer) = (arrived_tx.clone(), go_rx.clone(), answer.clone());
            async move {
                let _ = arrived_tx.send(()).await;
                go_rx.lock().await.recv().await;
                axum::Json(answer)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, arrived, go)
}

/// MoMo answering "still processing" (7000) leaves the refund pending with its amount reserved.
#[tokio::test]
async fn a_refund_the_provider_is_still_processing_stays_reserved() {
    let app = TestApp::spawn().await;
    let (_, id) = paid(&app, "momo").await;
    let (momo, _arrived, go) = momo_refund_api(json!({"resultCode": 7000, "message": "processing"})).await;
    go.send(()).await.unwrap();
    let other = app.spawn_sibling(|c| c.providers.momo.base_url = momo.clone()).await;
    let treasurer = other.token(Role::Treasurer).await;
    let path = format!("/v1/payments/{id}/refunds");
    let r = other.post_json(&path, &json!({"reason": "withdrawn"}), Some(&treasurer), None).await;
    r.assert_problem(502, "refund-outcome-unknown");
    let payment = app.payment(&id).await;
    assert_eq!(payment["refunds"][0]["status"], "pending");
    assert_eq!(payment["refunded_amount"], 0);
    let r = app.post_json(&path, &json!({"reason": "again"}), Some(&treasurer), None).await;
    r.assert_problem(409, "refund-pending");
    app.assert_ledger_invariants().await;
}

/// A treasurer records `failed` while the provider is still answering; the provider then says it
/// made the refund. The request reports the conflict; nothing is posted over the recorded outcome.
#[tokio::test]
async fn a_provider_answer_contradicting_an_outcome_recorded_meanwhile_is_a_conflict() {
    let app = TestApp::spawn().await;
    let (_, id) = paid(&app, "momo").await;
    let (momo, mut arrived, go) = momo_refund_api(json!({"resultCode": 0, "transId": 4242, "message": "ok"})).await;
    let other = app.spawn_sibling(|c| c.providers.momo.base_url = momo.clone()).await;
    let treasurer = app.token(Role::Treasurer).await;
    let path = format!("/v1/payments/{id}/refunds");
    let in_flight = {
        let (other, path, treasurer) = (&other, path.clone(), treasurer.clone());
        async move { other.post_json(&path, &json!({"reason": "withdrawn"}), Some(&treasurer), None).await }
    };
    let record_meanwhile = async {
        tokio::time::timeout(std::time::Duration::from_secs(30), arrived.recv()).await.expect("the refund is sent");
        let refund = app.payment(&id).await["refunds"][0]["id"].as_str().unwrap().to_string();
        let body = json!({"outcome": "failed", "note": "portal showed nothing"});
        let r = app.post_json(&format!("/v1/refunds/{refund}/outcome"), &body, Some(&treasurer), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        go.send(()).await.unwrap();
    };
    let (r, ()) = tokio::join!(in_flight, record_meanwhile);
    r.assert_problem(409, "refund-outcome-conflict");
    let payment = app.payment(&id).await;
    assert_eq!(payment["refunds"][0]["status"], "failed");
    assert_eq!(payment["refunded_amount"], 0);
    assert_eq!(payment["status"], "succeeded");
    let sql = format!("SELECT COUNT(*) FROM ledger_transactions WHERE payment_id = '{id}' AND kind = 'refund'");
    assert_eq!(app.scalar(&sql).await, 0, "nothing posted over the recorded outcome");
    app.assert_ledger_invariants().await;
}

/// The same request made again under its Idempotency-Key, after the key's record expired, is
/// answered with the refund it made: nothing is sent or reserved twice.
#[tokio::test]
async fn a_request_made_again_after_its_key_expired_answers_the_refund_it_made() {
    let app = TestApp::spawn().await;
    let treasurer = app.token(Role::Treasurer).await;
    let (_, id) = paid(&app, "vnpay").await;
    let path = format!("/v1/payments/{id}/refunds");
    let body = json!({"reason": "withdrawn", "amount": 1_000_000});
    let first = app.post_json(&path, &body, Some(&treasurer), Some("refund-once")).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let purged = app.store.purge_idempotency_keys(chrono::Utc::now() + chrono::Duration::days(2)).await.unwrap();
    assert!(purged >= 1);
    let again = app.post_json(&path, &body, Some(&treasurer), Some("refund-once")).await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert!(again.header("idempotent-replayed").is_none(), "answered by the refund, not the expired key");
    assert_eq!(again.body["refund"]["id"], first.body["refund"]["id"]);
    assert_eq!(app.count("refunds").await, 1);
    let p = app.payment(&id).await;
    assert_eq!((p["status"].as_str(), p["refunded_amount"].as_i64()), (Some("partially_refunded"), Some(1_000_000)));
    // Under a new key it is a new request.
    let other = app.post_json(&path, &body, Some(&treasurer), Some("refund-twice")).await;
    assert_eq!(other.status, 201, "{}", other.text);
    assert_eq!(app.payment(&id).await["refunded_amount"], 2_000_000);
    app.assert_ledger_invariants().await;
}

/// A request that runs out of time while the provider answers is answered 202 with the refund
/// pending; the refund is still settled, and posted, when the provider answers, and the same request
/// made again, after its key expired, answers it as it then stands.
#[tokio::test]
async fn a_refund_outlives_a_request_that_ran_out_of_time() {
    let app = TestApp::spawn().await;
    let (_, id) = paid(&app, "momo").await;
    let (momo, mut arrived, go) = momo_refund_api(json!({"resultCode": 0, "transId": 4343, "message": "ok"})).await;
    let other = app
        .spawn_sibling(|c| {
            c.providers.momo.base_url = momo.clone();
            c.server.request_timeout_secs = 1;
        })
        .await;
    let treasurer = app.token(Role::Treasurer).await;
    let path = format!("/v1/payments/{id}/refunds");
    let r = other.post_json(&path, &json!({"reason": "withdrawn"}), Some(&treasurer), Some("slow-one")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["refund"]["status"], "pending");
    tokio::time::timeout(std::time::Duration::from_secs(30), arrived.recv()).await.expect("the refund was sent");
    assert_eq!(app.payment(&id).await["refunds"][0]["status"], "pending");
    go.send(()).await.unwrap();
    let settled = crate::helpers::eventually(std::time::Duration::from_secs(30), || async {
        let p = app.payment(&id).await;
        (p["refunds"][0]["status"] == "succeeded").then_some(p)
    })
    .await;
    assert_eq!(settled["status"], "refunded");
    assert_eq!(settled["refunds"][0]["provider_ref"], "4343");
    let sql = format!("SELECT COUNT(*) FROM ledger_transactions WHERE payment_id = '{id}' AND kind = 'refund'");
    assert_eq!(app.scalar(&sql).await, 1, "posted once the provider answered");
    app.store.purge_idempotency_keys(chrono::Utc::now() + chrono::Duration::days(2)).await.unwrap();
    let again = other.post_json(&path, &json!({"reason": "withdrawn"}), Some(&treasurer), Some("slow-one")).await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.body["refund"]["status"], "succeeded");
    assert_eq!(app.count("refunds").await, 1);
    app.assert_ledger_invariants().await;
}
