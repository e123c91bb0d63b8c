//! Payments: creation rules, VietQR transfers confirmed by partner-bank notifications,
//! expiry, over-payment and unmatched money.

use chrono::Duration;
use paygate::payments::poller;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_vietqr_payment_is_a_qr_for_the_exact_amount_and_a_bank_credit_pays_the_notice() {
    let app = TestApp::spawn().await;
    let code = app.issue_notice().await;
    let r = app.start_payment(&code, "vietqr").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["amount"], 75_000_000);
    let qr = r.body["qr_payload"].as_str().unwrap();
    let parsed = paygate::providers::protocol::vietqr::parse(qr).unwrap();
    assert_eq!(parsed.amount, Some(75_000_000));
    assert_eq!(parsed.purpose.as_deref(), Some(code.as_str()));
    let id = r.body["id"].as_str().unwrap().to_string();

    // The payer's bank strips the hyphens from the transfer text.
    let credit = app.bank_credit(75_000_000, &format!("NGUYEN VAN AN CK {}", code.replace('-', "")), "FT001").await;
    assert_eq!(credit.status, 200, "{}", credit.text);
    let p = app.payment(&id).await;
    assert_eq!(p["status"], "succeeded");
    assert_eq!(p["provider_txn_id"], "sandbox:FT001");
    let history: Vec<&str> =
        p["history"].as_array().unwrap().iter().map(|e| e["to_status"].as_str().unwrap()).collect();
    assert_eq!(history, ["pending", "succeeded"]);
    let n = app.notice(&code).await;
    assert_eq!(n["status"], "paid");
    assert_eq!(n["total_due"], 0);

    // The same notification again changes nothing.
    let again = app.bank_credit(75_000_000, &code, "FT001").await;
    assert_eq!(again.status, 200);
    assert_eq!(app.payment(&id).await["history"].as_array().unwrap().len(), 2);

    // A paid notice cannot be paid again.
    app.start_payment(&code, "vietqr").await.assert_problem(409, "notice-already-paid");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_second_paid_attempt_is_an_overpayment_recorded_for_refund() {
    let app = TestApp::spawn().await;
    let code = app.issue_notice().await;
    let first = app.start_payment(&code, "vietqr").await.body["id"].as_str().unwrap().to_string();
    let second = app.start_payment(&code, "vietqr").await.body["id"].as_str().unwrap().to_string();
    assert_eq!(app.bank_credit(75_000_000, &code, "FT-A").await.status, 200);
    assert_eq!(app.bank_credit(75_000_000, &code, "FT-B").await.status, 200);
    let (a, b) = (app.payment(&first).await, app.payment(&second).await);
    assert_eq!((a["status"].as_str(), b["status"].as_str()), (Some("succeeded"), Some("succeeded")));
    assert_eq!(a["overpayment"], false);
    assert_eq!(b["overpayment"], true);
    assert_eq!(b["refund_due"], 75_000_000);
    assert_eq!(app.notice(&code).await["status"], "paid");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_bank_credit_that_names_no_payment_is_kept_not_lost() {
    let app = TestApp::spawn().await;
    let r = app.bank_credit(1_234_000, "chuyen tien khong ro noi dung", "FT-X").await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["status"], "unmatched");
    assert_eq!(app.bank_credit(1_234_000, "chuyen tien khong ro noi dung", "FT-X").await.status, 202);
    assert_eq!(app.count("unmatched_credits").await, 1);
    // A credit for a real notice but the wrong amount: no payment matches; kept as well.
    let code = app.issue_notice().await;
    app.start_payment(&code, "vietqr").await;
    assert_eq!(app.bank_credit(74_999_999, &code, "FT-Y").await.status, 202);
    assert_eq!(app.notice(&code).await["status"], "unpaid");
    assert_eq!(app.count("unmatched_credits").await, 2);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn bank_notifications_must_be_signed_by_the_bank() {
    let app = TestApp::spawn().await;
    let code = app.issue_notice().await;
    app.start_payment(&code, "vietqr").await;
    let body = json!({"event_id": "e", "bank": "sandbox", "account": "1", "amount": 75_000_000, "currency": "VND",
                      "description": code, "transaction_id": "FT-F", "credited_at": "2026-11-26T10:00:00+07:00"})
    .to_string();
    let forged = paygate::providers::protocol::signature::sign(
        &secrecy::SecretString::from("not-the-bank-secret".to_string()),
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    );
    for header in [None, Some(forged.as_str()), Some("t=1,v1=00")] {
        let mut req = app.client.post(app.url("/callbacks/bank/sandbox")).body(body.clone());
        if let Some(h) = header {
            req = req.header("paygate-signature", h);
        }
        app.send(req).await.assert_problem(401, "callback-rejected");
    }
    let r = app.send(app.client.post(app.url("/callbacks/bank/nobank")).body(body.clone())).await;
    r.assert_problem(404, "not-found");
    assert_eq!(app.notice(&code).await["status"], "unpaid");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_signed_credit_pays_a_notice_only_on_the_collection_account_and_in_dong() {
    let app = TestApp::spawn().await;
    let code = app.issue_notice().await;
    app.start_payment(&code, "vietqr").await;
    let credit = |account: &str, currency: &str, transaction_id: &str| {
        json!({"event_id": format!("ev-{transaction_id}"), "bank": "sandbox", "account": account,
               "amount": 75_000_000, "currency": currency, "description": format!("CK {code}"),
               "transaction_id": transaction_id, "credited_at": "2026-11-26T10:00:00+07:00"})
    };
    // Signed by the bank, naming the notice and its exact amount, but to another account.
    let r = app.bank_notification(credit("0099887766", "VND", "FT-OTHER")).await;
    r.assert_problem(422, "not-collection-account");
    // Signed, but not in đồng: a bad body, not a bad signature.
    let r = app.bank_notification(credit("0011012345678", "USD", "FT-USD")).await;
    let detail = r.assert_problem(400, "callback-rejected")["detail"].as_str().unwrap();
    assert!(detail.contains("VND"), "{detail}");
    assert_eq!(app.notice(&code).await["status"], "unpaid");
    assert_eq!(app.count("unmatched_credits").await, 0);
    assert_eq!(app.count("ledger_transfers").await, 0, "no money moved");
    let auditor = app.token(paygate::auth::Role::Auditor).await;
    let inbox = app.get("/v1/inbox?provider=bank", Some(&auditor)).await;
    let outcomes: Vec<(&str, &str)> = inbox.body["callbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["verification"].as_str().unwrap(), c["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(outcomes.len(), 2, "{}", inbox.text);
    assert!(
        outcomes.contains(&("verified", "rejected")) && outcomes.contains(&("rejected", "rejected")),
        "{outcomes:?}"
    );

    // The same credit to the collection account pays the notice.
    assert_eq!(app.bank_credit(75_000_000, &format!("CK {code}"), "FT-OURS").await.status, 200);
    assert_eq!(app.notice(&code).await["status"], "paid");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn payment_requests_are_validated() {
    let app = TestApp::spawn_with(|c| c.providers.enabled = vec!["vietqr".into(), "vnpay".into()]).await;
    let code = app.issue_notice().await;
    let path = format!("/v1/notices/{code}/payments");
    let r = app.post_json(&path, &json!({"provider": "paypal"}), None, None).await;
    assert_eq!(r.assert_problem(422, "validation-error")["field"], "provider");
    let r = app.post_json(&path, &json!({"provider": "momo"}), None, None).await;
    assert_eq!(r.assert_problem(422, "provider-disabled")["field"], "provider");
    let r =
        app.post_json(&path, &json!({"provider": "vietqr", "return_url": "https://evil.example/x"}), None, None).await;
    assert_eq!(r.assert_problem(422, "validation-error")["field"], "return_url");
    let r = app.post_json(&path, &json!({"provider": "vietqr", "locale": "fr"}), None, None).await;
    assert_eq!(r.assert_problem(422, "validation-error")["field"], "locale");
    let own = app.url("/done");
    let r = app.post_json(&path, &json!({"provider": "vietqr", "return_url": own, "locale": "en"}), None, None).await;
    assert_eq!(r.status, 201, "{}", r.text);
    app.post_json("/v1/notices/TB-2026-00000A/payments", &json!({"provider": "vietqr"}), None, None)
        .await
        .assert_problem(400, "invalid-notice-code");
    assert_eq!(app.count("payments").await, 1, "only the valid request created a payment");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_cancelled_notice_cannot_be_paid_and_its_pending_payments_are_cancelled() {
    let app = TestApp::spawn().await;
    let code = app.issue_notice().await;
    let pending = app.start_payment(&code, "vietqr").await.body["id"].as_str().unwrap().to_string();
    let issuer = app.token(paygate::auth::Role::Issuer).await;
    let r = app
        .post_json(&format!("/v1/notices/{code}/cancel"), &json!({"reason": "withdrawn"}), Some(&issuer), None)
        .await;
    assert_eq!(r.status, 200);
    app.start_payment(&code, "vietqr").await.assert_problem(409, "notice-cancelled");
    let p = app.payment(&pending).await;
    assert_eq!(p["status"], "cancelled");
    assert_eq!(p["history"][1]["cause"], "notice_cancelled");
    // The payer transfers anyway: the money is kept in suspense for refund.
    assert_eq!(app.bank_credit(75_000_000, &code, "FT-C").await.status, 200);
    let p = app.payment(&pending).await;
    assert_eq!((p["status"].as_str(), p["late_success"].as_bool()), (Some("cancelled"), Some(true)));
    assert_eq!(p["refund_due"], 75_000_000);
    // A second, different transfer for the same notice matches nothing settled: kept, not lost.
    assert_eq!(app.bank_credit(75_000_000, &code, "FT-D").await.status, 202);
    assert_eq!(app.count("unmatched_credits").await, 1);
    // The first notification again is a repeat, not new money.
    assert_eq!(app.bank_credit(75_000_000, &code, "FT-C").await.status, 200);
    assert_eq!(app.count("unmatched_credits").await, 1);
}

#[tokio::test]
async fn unconfirmed_payments_expire_and_late_money_is_held_for_refund() {
    let app = TestApp::spawn().await;
    let code = app.issue_notice().await;
    let r = app.start_payment(&code, "vietqr").await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let expires_at: chrono::DateTime<chrono::Utc> = r.body["expires_at"].as_str().unwrap().parse().unwrap();

    // Before its expiry nothing happens to it.
    let report = poller::run_once(&app.state, expires_at - Duration::seconds(1)).await.unwrap();
    assert_eq!(report.expired, 0);
    assert_eq!(app.payment(&id).await["status"], "pending");

    let report = poller::run_once(&app.state, expires_at + Duration::seconds(1)).await.unwrap();
    assert_eq!(report.expired, 1, "{report:?}");
    let p = app.payment(&id).await;
    assert_eq!(p["status"], "expired");
    assert_eq!(p["history"][1]["cause"], "expiry");
    assert_eq!(app.notice(&code).await["status"], "unpaid");

    // The transfer arrives after all: never lost, never moving the expired payment back.
    assert_eq!(app.bank_credit(75_000_000, &code, "FT-LATE").await.status, 200);
    let p = app.payment(&id).await;
    assert_eq!(p["status"], "expired");
    assert_eq!(p["late_success"], true);
    assert_eq!(p["refund_due"], 75_000_000);
    assert_eq!(app.notice(&code).await["status"], "unpaid");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn an_unreachable_provider_is_a_502_and_a_failed_attempt_nothing_charged() {
    // Nothing listens on port 9.
    let app = TestApp::spawn_with(|c| c.providers.momo.base_url = "http://127.0.0.1:9".into()).await;
    let code = app.issue_small_notice().await;
    let r = app.start_payment(&code, "momo").await;
    r.assert_problem(502, "provider-unavailable");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM payments WHERE status = 'failed'").await, 1);
    assert_eq!(app.notice(&code).await["status"], "unpaid");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_payment_is_not_expired_blind_while_its_provider_cannot_be_asked() {
    let app = TestApp::spawn_with(|c| c.providers.vnpay.base_url = "http://127.0.0.1:9".into()).await;
    let code = app.issue_small_notice().await;
    let r = app.start_payment(&code, "vnpay").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let expires_at: chrono::DateTime<chrono::Utc> = r.body["expires_at"].as_str().unwrap().parse().unwrap();
    let report = poller::run_once(&app.state, expires_at + Duration::seconds(1)).await.unwrap();
    assert_eq!((report.provider_errors, report.expired), (1, 0), "{report:?}");
    assert_eq!(app.payment(&id).await["status"], "pending", "the money may have moved");
    let report = poller::run_once(&app.state, expires_at + Duration::hours(25)).await.unwrap();
    assert_eq!(report.expired, 1, "{report:?}");
    assert_eq!(app.payment(&id).await["status"], "expired");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn two_different_transfers_racing_for_one_payment_are_both_kept() {
    let app = TestApp::spawn().await;
    let code = app.issue_notice().await;
    let id = app.start_payment(&code, "vietqr").await.body["id"].as_str().unwrap().to_string();
    let (a, b) =
        tokio::join!(app.bank_credit(75_000_000, &code, "FT-RACE-A"), app.bank_credit(75_000_000, &code, "FT-RACE-B"));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 202], "one pays the notice, the other is kept: {} / {}", a.text, b.text);
    assert_eq!(app.payment(&id).await["status"], "succeeded");
    assert_eq!(app.count("unmatched_credits").await, 1, "no money dropped");
    app.assert_ledger_invariants().await;
}
