//! Every error kind is problem+json with a stable type.

use paygate::auth::Role;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn unknown_path_is_404_problem() {
    let app = TestApp::spawn().await;
    app.get("/v1/nothing-here", None).await.assert_problem(404, "not-found");
}

#[tokio::test]
async fn wrong_method_is_405_problem_with_allow() {
    let app = TestApp::spawn().await;
    let r = app.send(app.client.delete(app.url("/healthz"))).await;
    r.assert_problem(405, "method-not-allowed");
    assert!(r.header("allow").unwrap().contains("GET"));
}

#[tokio::test]
async fn malformed_json_is_400_problem() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin).await;
    let r = app
        .send(
            app.client
                .post(app.url("/v1/tokens"))
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body("{\"name\": \"x\", "),
        )
        .await;
    r.assert_problem(400, "invalid-json");
}

#[tokio::test]
async fn missing_or_wrong_content_type_is_415_problem() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin).await;
    let body = r#"{"name":"x","role":"issuer"}"#;
    let r = app.send(app.client.post(app.url("/v1/tokens")).bearer_auth(&admin).body(body)).await;
    r.assert_problem(415, "unsupported-media-type");
    let r = app
        .send(
            app.client.post(app.url("/v1/tokens")).bearer_auth(&admin).header("content-type", "text/plain").body(body),
        )
        .await;
    r.assert_problem(415, "unsupported-media-type");
}

#[tokio::test]
async fn body_too_large_is_413_problem() {
    let app = TestApp::spawn_with(|c| c.server.body_limit_bytes = 2048).await;
    let admin = app.token(Role::Admin).await;
    let big = json!({"name": "x".repeat(5000), "role": "issuer"});
    let r = app.post_json("/v1/tokens", &big, Some(&admin), None).await;
    r.assert_problem(413, "payload-too-large");
    // The same through the idempotency layer, which reads the body itself.
    let r = app.post_json("/v1/tokens", &big, Some(&admin), Some("big-1")).await;
    r.assert_problem(413, "payload-too-large");
}

#[tokio::test]
async fn validation_errors_are_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin).await;
    let r = app.post_json("/v1/tokens", &json!({"name": "x", "role": "king"}), Some(&admin), None).await;
    let p = r.assert_problem(422, "validation-error");
    assert_eq!(p["field"], "role");
    assert_eq!(p["errors"][0]["field"], "role");

    let r = app.post_json("/v1/tokens", &json!({"name": "  ", "role": "issuer"}), Some(&admin), None).await;
    assert_eq!(r.assert_problem(422, "validation-error")["field"], "name");

    let r = app.post_json("/v1/tokens", &json!({"role": "issuer"}), Some(&admin), None).await;
    let p = r.assert_problem(422, "validation-error");
    assert!(p["detail"].as_str().unwrap().contains("name"), "{}", r.text);
}

#[tokio::test]
async fn a_request_that_outlasts_the_timeout_is_503_problem_and_changes_nothing() {
    use sqlx::Connection;
    let app = TestApp::spawn_with(|c| c.server.request_timeout_secs = 1).await;
    let admin = app.token(Role::Admin).await;
    let body = json!({"name": "slow", "role": "issuer"});

    // Hold the table the request needs to write, so it waits past its deadline.
    enum Blocker {
        Pg(sqlx::PgConnection),
        Lite(sqlx::SqliteConnection),
    }
    let blocker = if app.db.is_postgres() {
        let mut conn = sqlx::PgConnection::connect(app.db.url()).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query("LOCK TABLE idempotency_keys IN ACCESS EXCLUSIVE MODE").execute(&mut conn).await.unwrap();
        Blocker::Pg(conn)
    } else {
        let mut conn = sqlx::SqliteConnection::connect(app.db.url()).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.unwrap();
        Blocker::Lite(conn)
    };
    let r = app.post_json("/v1/tokens", &body, Some(&admin), Some("slow-1")).await;
    r.assert_problem(503, "request-timeout");
    match blocker {
        Blocker::Pg(mut c) => {
            sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        }
        Blocker::Lite(mut c) => {
            sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        }
    }

    // Nothing was half-written: the retry runs and creates the token once.
    let r = app.post_json("/v1/tokens", &body, Some(&admin), Some("slow-1")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let names: Vec<String> = app.store.list_tokens().await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names.iter().filter(|n| *n == "slow").count(), 1);
}

#[tokio::test]
async fn internal_details_never_reach_the_client() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin).await;
    app.store.close().await;
    let r = app.post_json("/v1/tokens", &json!({"name": "n", "role": "issuer"}), Some(&admin), None).await;
    // Authentication needs the database: the caller is told it is unavailable, nothing more.
    r.assert_problem(503, "database-unavailable");
    for leak in ["sqlx", "pool", "SELECT", "/tmp", "src/"] {
        assert!(!r.text.contains(leak), "{leak} leaked: {}", r.text);
    }
}
