//! End to end over real HTTP between paygate and its in-process provider sandbox: a payer
//! approves or declines on the provider's page, the provider calls back, the notice is paid —
//! and the faults real providers have (duplicated, dropped, reordered, tampered callbacks).

use chrono::Duration;
use paygate::payments::poller;
use serde_json::Value;

use crate::helpers::{TestApp, browser, decide, read, start, urlencode};

async fn status(app: &TestApp, id: &str) -> String {
    app.payment(id).await["status"].as_str().unwrap().to_string()
}

fn history_causes(p: &Value) -> Vec<String> {
    p["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}:{}", e["cause"], e["to_status"]).replace('"', ""))
        .collect()
}

#[tokio::test]
async fn paying_with_each_provider_pays_the_notice() {
    let app = TestApp::spawn().await;
    for provider in ["vnpay", "momo", "zalopay"] {
        let code = app.issue_small_notice().await;
        let s = start(&app, &code, provider).await;
        assert!(s.redirect_url.starts_with(&app.url(&format!("/sandbox/{provider}/"))), "{}", s.redirect_url);
        let answer = decide(&app, provider, &s, "approve", None).await;
        assert_eq!(answer.status, 303, "{provider}: {}", answer.text);
        let back = answer.header("location").unwrap().to_string();
        assert!(back.starts_with(&app.url(&format!("/pay/return/{provider}"))), "{back}");

        // The callback arrived before the payer is sent back.
        let p = app.payment(&s.id).await;
        assert_eq!(p["status"], "succeeded", "{provider}: {p}");
        assert_eq!(history_causes(&p), ["created:pending", "callback:succeeded"], "{provider}");
        assert_eq!(app.notice(&code).await["status"], "paid", "{provider}");

        // The result page shows it.
        let page = read(browser().get(&back).send().await.unwrap()).await;
        assert_eq!(page.status, 200, "{provider}: {}", page.text);
        assert!(page.text.contains("Thanh toán thành công"), "{provider}: {}", page.text);
    }
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_declined_payment_fails_and_the_notice_stays_payable() {
    let app = TestApp::spawn().await;
    for provider in ["vnpay", "momo"] {
        let code = app.issue_small_notice().await;
        let s = start(&app, &code, provider).await;
        assert_eq!(decide(&app, provider, &s, "decline", None).await.status, 303);
        assert_eq!(status(&app, &s.id).await, "failed", "{provider}");
        assert_eq!(app.notice(&code).await["status"], "unpaid");
        // The payer tries again and pays.
        let again = start(&app, &code, provider).await;
        decide(&app, provider, &again, "approve", None).await;
        assert_eq!(status(&app, &again.id).await, "succeeded");
        assert_eq!(app.notice(&code).await["status"], "paid");
    }
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_dropped_callback_is_settled_by_the_status_query() {
    let app = TestApp::spawn().await;
    for provider in ["vnpay", "momo", "zalopay"] {
        let code = app.issue_small_notice().await;
        let s = start(&app, &code, provider).await;
        decide(&app, provider, &s, "approve", Some("drop")).await;
        assert_eq!(status(&app, &s.id).await, "pending", "{provider}: no callback came");
        let due = chrono::Utc::now() + Duration::seconds(app.state.config.providers.status_poll_after_secs as i64 + 1);
        let report = poller::run_once(&app.state, due).await.unwrap();
        assert!(report.settled >= 1, "{provider}: {report:?}");
        let p = app.payment(&s.id).await;
        assert_eq!(p["status"], "succeeded", "{provider}: {p}");
        assert_eq!(history_causes(&p), ["created:pending", "status_query:succeeded"]);
        assert_eq!(app.notice(&code).await["status"], "paid");
    }
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn the_return_page_asks_the_provider_but_never_pays_on_its_own() {
    let app = TestApp::spawn().await;
    let code = app.issue_small_notice().await;
    let s = start(&app, &code, "vnpay").await;
    let answer = decide(&app, "vnpay", &s, "approve", Some("drop")).await;
    let back = answer.header("location").unwrap().to_string();
    // Tampered return parameters are refused and change nothing.
    let tampered = back.replacen("vnp_Amount=", "vnp_Amount=1", 1);
    let page = read(browser().get(&tampered).send().await.unwrap()).await;
    assert_eq!(page.status, 400);
    assert_eq!(status(&app, &s.id).await, "pending");
    // The genuine return triggers a status query: VNPAY's own answer settles the payment.
    let page = read(browser().get(&back).send().await.unwrap()).await;
    assert_eq!(page.status, 200);
    let p = app.payment(&s.id).await;
    assert_eq!(p["status"], "succeeded");
    assert_eq!(history_causes(&p), ["created:pending", "status_query:succeeded"]);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn unconfirmed_payments_expire() {
    let app = TestApp::spawn().await;
    let code = app.issue_small_notice().await;
    let s = start(&app, &code, "momo").await;
    let p = app.payment(&s.id).await;
    let expires_at: chrono::DateTime<chrono::Utc> = p["expires_at"].as_str().unwrap().parse().unwrap();
    let report = poller::run_once(&app.state, expires_at + Duration::seconds(1)).await.unwrap();
    assert_eq!(report.expired, 1, "{report:?}");
    assert_eq!(status(&app, &s.id).await, "expired");
    assert_eq!(app.notice(&code).await["status"], "unpaid");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn duplicated_and_reordered_callbacks_apply_once() {
    let app = TestApp::spawn().await;
    for fault in ["duplicate", "reorder"] {
        for provider in ["vnpay", "momo"] {
            let code = app.issue_small_notice().await;
            let s = start(&app, &code, provider).await;
            decide(&app, provider, &s, "approve", Some(fault)).await;
            let p = app.payment(&s.id).await;
            assert_eq!(p["status"], "succeeded", "{provider} {fault}: {p}");
            assert_eq!(history_causes(&p), ["created:pending", "callback:succeeded"], "{provider} {fault}");
            assert_eq!(p["overpayment"], false);
        }
    }
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_badly_signed_or_wrong_amount_callback_moves_nothing() {
    let app = TestApp::spawn().await;
    for fault in ["bad_signature", "wrong_amount"] {
        for provider in ["vnpay", "momo", "zalopay"] {
            let code = app.issue_small_notice().await;
            let s = start(&app, &code, provider).await;
            decide(&app, provider, &s, "approve", Some(fault)).await;
            assert_eq!(status(&app, &s.id).await, "pending", "{provider} {fault}");
            assert_eq!(app.notice(&code).await["status"], "unpaid", "{provider} {fault}");
        }
    }
    // What VNPAY was told: 97 for the signature, 04 for the amount.
    let sent = app.get("/sandbox/callbacks-sent", None).await;
    assert!(sent.text.contains("97") && sent.text.contains("04"), "{}", sent.text);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_second_attempt_paid_too_is_an_overpayment() {
    let app = TestApp::spawn().await;
    let code = app.issue_small_notice().await;
    let first = start(&app, &code, "vnpay").await;
    let second = start(&app, &code, "momo").await;
    decide(&app, "vnpay", &first, "approve", None).await;
    decide(&app, "momo", &second, "approve", None).await;
    let (a, b) = (app.payment(&first.id).await, app.payment(&second.id).await);
    assert_eq!((a["status"].as_str(), b["status"].as_str()), (Some("succeeded"), Some("succeeded")));
    assert_eq!(a["overpayment"], false);
    assert_eq!(b["overpayment"], true);
    assert_eq!(b["refund_due"], 6_250_000);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn an_amount_above_a_providers_limit_is_refused_before_anything_starts() {
    let app = TestApp::spawn().await;
    let code = app.issue_notice().await; // 75,000,000 đồng
    let r = app.start_payment(&code, "momo").await;
    let p = r.assert_problem(422, "amount-outside-provider-limits");
    assert_eq!(p["field"], "provider");
    assert!(p["detail"].as_str().unwrap().contains("50.000.000"), "{}", r.text);
    assert_eq!(app.count("payments").await, 0);
    assert_eq!(app.start_payment(&code, "vnpay").await.status, 201);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_forged_callback_gets_its_protocols_answer() {
    let app = TestApp::spawn().await;
    let r = app.get("/callbacks/vnpay?vnp_TxnRef=PG1&vnp_Amount=100&vnp_SecureHash=00", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["RspCode"], "97");
    let r = app.send(app.client.post(app.url("/callbacks/zalopay")).body(r#"{"data":"{}","mac":"00","type":1}"#)).await;
    assert_eq!(r.body["return_code"], -1);
    let r = app.send(app.client.post(app.url("/callbacks/momo")).body("{}")).await;
    r.assert_problem(400, "callback-rejected");
}

#[tokio::test]
async fn the_pay_page_lists_the_lines_and_starts_a_payment_without_javascript() {
    let app = TestApp::spawn().await;
    let code = app.issue_small_notice().await;
    let page = app.get(&format!("/pay/{code}"), None).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Decree 10/2022"), "legal basis shown");
    assert!(page.text.contains("6.250.000 ₫"), "{}", page.text);
    assert!(page.text.contains("Nguyễn V. A.") && !page.text.contains("079123456789"));
    let en = app.get(&format!("/pay/{code}?lang=en"), None).await;
    assert!(en.text.contains("Total due"));
    let r = read(
        browser()
            .post(app.url(&format!("/pay/{code}")))
            .form(&[("provider", "vietqr"), ("lang", "vi")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 303);
    let qr_page = app.get(r.header("location").unwrap(), None).await;
    assert!(qr_page.text.contains("<svg"), "the QR is drawn");
    assert_eq!(app.get("/pay/TB-2026-00000A", None).await.status, 400);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn paying_by_vietqr_through_the_sandbox_bank_app() {
    let app = TestApp::spawn().await;
    let code = app.issue_small_notice().await;
    let r = app.start_payment(&code, "vietqr").await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let qr = r.body["qr_payload"].as_str().unwrap().to_string();
    // The payer's bank app reads the QR: amount and transfer text come from it.
    let form_page = app.get(&format!("/sandbox/bank/sandbox/transfer?qr={}", urlencode(&qr)), None).await;
    assert_eq!(form_page.status, 200, "{}", form_page.text);
    assert!(form_page.text.contains("6250000") || form_page.text.contains("6.250.000"), "{}", form_page.text);
    let form =
        [("amount", "6250000".to_string()), ("description", code.clone()), ("account", "0011012345678".to_string())];
    let sent = read(browser().post(app.url("/sandbox/bank/sandbox/transfer")).form(&form).send().await.unwrap()).await;
    assert!(sent.status < 400, "{}", sent.text);
    let p = app.payment(&id).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    assert_eq!(app.notice(&code).await["status"], "paid");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_delayed_callback_settles_the_payment_when_it_arrives() {
    let app = TestApp::spawn().await;
    let code = app.issue_small_notice().await;
    let s = start(&app, &code, "vnpay").await;
    let answer = decide(&app, "vnpay", &s, "approve", Some("delay:300")).await;
    assert_eq!(answer.status, 303, "the payer is sent back at once");
    let id = s.id.clone();
    crate::helpers::eventually(std::time::Duration::from_secs(10), || {
        let app = &app;
        let id = id.clone();
        async move { (status(app, &id).await == "succeeded").then_some(()) }
    })
    .await;
    assert_eq!(app.notice(&code).await["status"], "paid");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn status_rounds_on_several_instances_never_query_a_payment_twice() {
    let a = TestApp::spawn().await;
    let sandbox = a.url("/sandbox/vnpay");
    let b = a.spawn_sibling(|c| c.providers.vnpay.base_url = sandbox.clone()).await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        let code = a.issue_small_notice().await;
        let s = start(&a, &code, "vnpay").await;
        decide(&a, "vnpay", &s, "approve", Some("drop")).await;
        ids.push(s.id);
    }
    let due = chrono::Utc::now() + Duration::seconds(a.state.config.providers.status_poll_after_secs as i64 + 1);
    let (ra, rb) = tokio::join!(poller::run_once(&a.state, due), poller::run_once(&b.state, due));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.claimed + rb.claimed, 8, "each payment claimed by one instance: {ra:?} {rb:?}");
    assert_eq!(ra.settled + rb.settled, 8);
    for id in &ids {
        assert_eq!(app_status_queries(&a, id).await, 1, "{id}");
    }
    a.assert_ledger_invariants().await;
}

async fn app_status_queries(app: &TestApp, id: &str) -> usize {
    let p = app.payment(id).await;
    p["history"].as_array().unwrap().iter().filter(|e| e["cause"] == "status_query").count()
}
