use serde_json::json;

use crate::helpers::{TestApp, TestDb, eventually, test_config};

#[tokio::test]
async fn healthz_answers_ok() {
    let app = TestApp::spawn().await;
    let r = app.get("/healthz", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "ok");
}

#[tokio::test]
async fn request_id_is_generated_or_propagated() {
    let app = TestApp::spawn().await;
    let r = app.get("/healthz", None).await;
    let generated = r.header("x-request-id").expect("a request id is generated");
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let r = app.send(app.client.get(app.url("/healthz")).header("x-request-id", "dossier-42")).await;
    assert_eq!(r.header("x-request-id"), Some("dossier-42"));
}

#[tokio::test]
async fn readyz_is_ready_then_503_when_the_database_is_gone() {
    let app = TestApp::spawn().await;
    let r = app.get("/readyz", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "ready");
    assert_eq!(r.body["database"], if app.db.is_postgres() { "postgres" } else { "sqlite" });

    app.store.close().await;
    let r = app.get("/readyz", None).await;
    r.assert_problem(503, "service-unavailable");
    assert!(r.header("retry-after").is_some());
    // Liveness does not depend on the database.
    assert_eq!(app.get("/healthz", None).await.status, 200);
}

#[tokio::test]
async fn readyz_is_503_until_migrations_are_applied() {
    let db = TestDb::fresh().await;
    let mut config = test_config(&db);
    config.database.migrate_on_start = false;
    let app = TestApp::spawn_on(db, config).await;
    let r = app.get("/readyz", None).await;
    let p = r.assert_problem(503, "service-unavailable");
    assert!(p["detail"].as_str().unwrap().contains("paygate migrate"), "{}", r.text);

    app.store.migrate().await.unwrap();
    assert_eq!(app.get("/readyz", None).await.status, 200);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_report_the_pool() {
    let app = TestApp::spawn().await;
    app.get("/healthz", None).await;
    app.get("/healthz", None).await;
    app.get("/no/such/path", None).await;
    let r = app.get("/metrics", None).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let line = r
        .text
        .lines()
        .find(|l| l.starts_with("paygate_http_requests_total{") && l.contains("route=\"/healthz\""))
        .unwrap_or_else(|| panic!("no /healthz counter in:\n{}", r.text));
    assert!(line.contains("status=\"200\"") && line.ends_with(" 2"), "{line}");
    assert!(r.text.contains("route=\"unmatched\",status=\"404\""), "raw paths never become labels");
    assert!(r.text.contains("paygate_http_request_duration_seconds_bucket"));
    assert!(r.text.contains("paygate_db_pool_connections{state=\"max\"} 5"));
    // The payment writers' own connections, beside the pool, once a writer has opened its own.
    eventually(std::time::Duration::from_secs(10), || async {
        let r = app.get("/metrics", None).await;
        let writers = r.text.lines().find_map(|l| l.strip_prefix("paygate_db_writer_connections "))?;
        (writers.parse::<i64>().ok()? >= 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn openapi_document_matches_the_snapshot() {
    let app = TestApp::spawn().await;
    let r = app.get("/openapi.json", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["info"]["title"], "paygate");
    let mut doc = r.body.clone();
    doc["info"]["version"] = json!("[version]");
    insta::assert_json_snapshot!("openapi", doc);
}
