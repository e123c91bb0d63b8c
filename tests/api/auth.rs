//! Bearer tokens and roles on issuer and staff routes.

use paygate::auth::Role;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn no_token_is_401_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let r = app.get("/v1/tokens", None).await;
    r.assert_problem(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn malformed_unknown_or_forged_tokens_are_401() {
    let app = TestApp::spawn().await;
    let real = app.token(Role::Admin).await;
    let forged = format!("{}{}", &real[..real.len() - 4], "0000");
    let unknown = "pgt_aaaaaaaaaaaa_".to_string() + &"0".repeat(64);
    for bad in ["nonsense", unknown.as_str(), forged.as_str()] {
        app.get("/v1/tokens", Some(bad)).await.assert_problem(401, "unauthorized");
    }
    let r = app.send(app.client.get(app.url("/v1/tokens")).header("authorization", format!("Basic {real}"))).await;
    r.assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn a_role_the_route_does_not_admit_is_403() {
    let app = TestApp::spawn().await;
    for role in [Role::Issuer, Role::Treasurer, Role::Auditor] {
        let token = app.token(role).await;
        let r = app.get("/v1/tokens", Some(&token)).await;
        let p = r.assert_problem(403, "forbidden");
        assert!(p["detail"].as_str().unwrap().contains("admin"));
    }
    let admin = app.token(Role::Admin).await;
    assert_eq!(app.get("/v1/tokens", Some(&admin)).await.status, 200);
}

#[tokio::test]
async fn an_admin_issues_a_token_that_works_and_revokes_it() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin).await;
    let r = app.post_json("/v1/tokens", &json!({"name": "dossier-system", "role": "admin"}), Some(&admin), None).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let issued = r.body["token"].as_str().unwrap().to_string();
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["role"], "admin");

    // The new token works; listings never show secrets.
    let list = app.get("/v1/tokens", Some(&issued)).await;
    assert_eq!(list.status, 200);
    assert!(!list.text.contains(&issued[17..]), "secret listed");
    assert!(!list.text.contains("secret_hash"));

    // Only a hash is stored.
    let stored = app.store.find_token(&id).await.unwrap().unwrap();
    assert!(!stored.secret_hash.contains(&issued[17..]));

    // A second active token with the same name is refused.
    let r = app.post_json("/v1/tokens", &json!({"name": "dossier-system", "role": "issuer"}), Some(&admin), None).await;
    r.assert_problem(409, "token-name-taken");

    let r = app.send(app.client.delete(app.url(&format!("/v1/tokens/{id}"))).bearer_auth(&admin)).await;
    assert_eq!(r.status, 204, "{}", r.text);
    app.get("/v1/tokens", Some(&issued)).await.assert_problem(401, "unauthorized");
    let r = app.send(app.client.delete(app.url(&format!("/v1/tokens/{id}"))).bearer_auth(&admin)).await;
    r.assert_problem(404, "not-found");
}

#[tokio::test]
async fn public_routes_need_no_token() {
    let app = TestApp::spawn().await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(app.get(path, None).await.status, 200, "{path}");
    }
}
