//! Idempotency-Key: replay, mismatch, concurrency, scope, expiry.

use std::collections::HashSet;

use chrono::Duration;
use paygate::auth::Role;
use paygate::store::idempotency::Claim;
use paygate::store::now;
use serde_json::json;

use crate::helpers::TestApp;

async fn tokens_named(app: &TestApp, name: &str) -> usize {
    app.store.list_tokens().await.unwrap().iter().filter(|t| t.name == name).count()
}

#[tokio::test]
async fn a_retry_with_the_same_key_and_body_replays_the_first_response() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin).await;
    let body = json!({"name": "replayed", "role": "issuer"});
    let first = app.post_json("/v1/tokens", &body, Some(&admin), Some("k-1")).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);

    let second = app.post_json("/v1/tokens", &body, Some(&admin), Some("k-1")).await;
    assert_eq!(second.status, 201);
    assert_eq!(second.text, first.text, "the stored body is replayed byte for byte");
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(tokens_named(&app, "replayed").await, 1);
}

#[tokio::test]
async fn a_stored_error_is_replayed_too() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin).await;
    let body = json!({"name": "", "role": "issuer"});
    let first = app.post_json("/v1/tokens", &body, Some(&admin), Some("k-err")).await;
    first.assert_problem(422, "validation-error");
    let second = app.post_json("/v1/tokens", &body, Some(&admin), Some("k-err")).await;
    second.assert_problem(422, "validation-error");
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin).await;
    let first = app.post_json("/v1/tokens", &json!({"name": "a", "role": "issuer"}), Some(&admin), Some("k-2")).await;
    assert_eq!(first.status, 201);
    let other = app.post_json("/v1/tokens", &json!({"name": "b", "role": "issuer"}), Some(&admin), Some("k-2")).await;
    other.assert_problem(422, "idempotency-key-reused");
    assert_eq!(tokens_named(&app, "b").await, 0, "nothing was done for the mismatched request");
}

#[tokio::test]
async fn concurrent_requests_with_one_key_run_the_handler_once() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin).await;
    let body = json!({"name": "concurrent", "role": "treasurer"});
    let replies = futures::future::join_all(
        (0..8).map(|_| app.post_json("/v1/tokens", &body, Some(&admin), Some("k-concurrent"))),
    )
    .await;
    let mut created = HashSet::new();
    for r in &replies {
        match r.status {
            201 => {
                created.insert(r.body["id"].as_str().unwrap().to_string());
            }
            409 => {
                r.assert_problem(409, "idempotency-request-in-progress");
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert_eq!(created.len(), 1, "every 201 is the same execution");
    assert_eq!(tokens_named(&app, "concurrent").await, 1, "the handler ran once");
}

#[tokio::test]
async fn keys_are_scoped_to_the_caller() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.token(Role::Admin).await, app.token(Role::Admin).await);
    let r1 = app.post_json("/v1/tokens", &json!({"name": "from-a", "role": "issuer"}), Some(&a), Some("same")).await;
    let r2 = app.post_json("/v1/tokens", &json!({"name": "from-b", "role": "issuer"}), Some(&b), Some("same")).await;
    assert_eq!((r1.status, r2.status), (201, 201), "{} / {}", r1.text, r2.text);
    assert_eq!(r2.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn an_invalid_key_is_400() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin).await;
    let long = "x".repeat(300);
    for key in ["has space", long.as_str()] {
        let r = app.post_json("/v1/tokens", &json!({"name": "n", "role": "issuer"}), Some(&admin), Some(key)).await;
        r.assert_problem(400, "invalid-idempotency-key");
    }
}

#[tokio::test]
async fn a_request_refused_for_its_credentials_is_not_remembered() {
    let app = TestApp::spawn().await;
    let issuer = app.token(Role::Issuer).await;
    let admin = app.token(Role::Admin).await;
    let body = json!({"name": "later", "role": "issuer"});
    app.post_json("/v1/tokens", &body, Some(&issuer), Some("k-403")).await.assert_problem(403, "forbidden");
    app.post_json("/v1/tokens", &body, Some("garbage"), Some("k-403")).await.assert_problem(401, "unauthorized");
    let r = app.post_json("/v1/tokens", &body, Some(&admin), Some("k-403")).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn keys_expire_after_their_ttl_and_stale_claims_are_taken_over() {
    let app = TestApp::spawn().await;
    let s = &app.store;
    let t = now();
    let long_ago = t - Duration::days(1);
    assert!(matches!(s.claim_idempotency_key("public", "k", "h1", long_ago, long_ago).await.unwrap(), Claim::Claimed));
    // Still running, not stale: 409.
    assert!(matches!(
        s.claim_idempotency_key("public", "k", "h1", long_ago, long_ago).await.unwrap(),
        Claim::InProgress
    ));
    // Its process died: after the lock timeout another request takes the key over.
    let later = t + Duration::seconds(1);
    assert!(matches!(s.claim_idempotency_key("public", "k", "h1", long_ago, later).await.unwrap(), Claim::Claimed));
    let stored = paygate::store::idempotency::StoredResponse { status: 201, headers: vec![], body: b"{}".to_vec() };
    s.complete_idempotency_key("public", "k", &stored).await.unwrap();
    assert!(matches!(s.claim_idempotency_key("public", "k", "h2", long_ago, long_ago).await.unwrap(), Claim::Mismatch));
    // Once the TTL has passed, the key is free again, even for another request.
    assert!(matches!(s.claim_idempotency_key("public", "k", "h2", later, long_ago).await.unwrap(), Claim::Claimed));
    assert_eq!(s.purge_idempotency_keys(later).await.unwrap(), 1);
}
