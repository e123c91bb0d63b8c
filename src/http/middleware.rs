//! Cross-cutting HTTP layers: per-request metrics and the problem+json guarantee.
//!
//! Invariant: every error response leaving the service is `application/problem+json` — those
//! produced by the router (404, 405) or by tower layers (413, timeouts, panics) are rewritten
//! here from their status, keeping headers such as `Allow`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::{CONTENT_TYPE, Problem};
use crate::app::AppState;

pub async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(req).await;
    state.metrics.observe_request(&method, &route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

pub async fn problem_for_every_error(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(CONTENT_TYPE));
    if is_problem {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut rewritten = Problem::for_status(status).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            rewritten.headers_mut().insert(name, v.clone());
        }
    }
    rewritten
}

/// Answers 503 `request-timeout` when a request takes longer than `server.request_timeout_secs`
/// (`reconciliation.request_timeout_secs` for settlement-file uploads, which read whole files).
pub async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let secs = if req.uri().path() == super::reconciliation::RUNS_PATH {
        state.config.reconciliation.request_timeout_secs
    } else {
        state.config.server.request_timeout_secs
    };
    match tokio::time::timeout(std::time::Duration::from_secs(secs), next.run(req)).await {
        Ok(response) => response,
        Err(_) => Problem::for_status(axum::http::StatusCode::SERVICE_UNAVAILABLE).into_response(),
    }
}
