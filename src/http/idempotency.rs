//! The `Idempotency-Key` layer for POST routes.
//!
//! A POST with an `Idempotency-Key` header claims the key (scoped to the caller's token, or to
//! the public) in the database before its handler runs. A retry with the same key and the same
//! request replays the stored response (`Idempotent-Replayed: true`); the same key with another
//! request is 422; a retry while the first is still running is 409. Because the claim is a
//! primary-key insert, this holds across any number of processes sharing one database.
//!
//! `POST /v1/reconciliation/runs` is not buffered in memory: its file is received into a temporary
//! file (handed to the handler) and the request is fingerprinted by the file's SHA-256.
//!
//! Invariants: the handler runs at most once per (scope, key) while the key lives. Once a handler
//! has run, its response is stored whatever it was — a 500 or 502 too, as its effects may have
//! committed — and replayed to retries. Requests refused before any work (401, 403, 429) or for
//! an unreachable database (503) are not remembered. A handler abandoned mid-way (timeout, client gone) keeps the key `in_progress`
//! (retries get 409) until `idempotency.lock_timeout_secs`, because what it did is unknown; only
//! then may a retry take the key over.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use sha2::{Digest, Sha256};

use super::auth::Authentication;
use super::problem::Problem;
use crate::app::AppState;
use crate::store::idempotency::{Claim, StoredResponse};
use crate::store::now;

pub const HEADER: &str = "idempotency-key";
/// Where providers' and banks' callbacks arrive.
const CALLBACKS_PREFIX: &str = "/callbacks/";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Response headers that are part of the stored response.
const KEPT_HEADERS: [HeaderName; 2] = [header::CONTENT_TYPE, header::LOCATION];

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Provider callbacks are made idempotent by their own protocol, and every one of them must reach
    // the inbox as it came: a header must not let one be answered from here instead.
    if req.method() != Method::POST || req.uri().path().starts_with(CALLBACKS_PREFIX) {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(HEADER).cloned() else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..0x7f).contains(&b)) => k.to_string(),
        _ => {
            return Problem::bad_request(
                "invalid-idempotency-key",
                "Invalid Idempotency-Key",
                "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces (a UUID is a good choice).",
            )
            .into_response();
        }
    };
    let scope = match req.extensions().get::<Authentication>() {
        Some(Authentication::Authenticated(p)) => format!("token:{}", p.token_id),
        // The handler will refuse bad credentials; nothing to remember.
        Some(Authentication::Invalid(_)) => return next.run(req).await,
        _ => "public".to_string(),
    };

    let (mut parts, body) = req.into_parts();
    // A settlement file may be hundreds of megabytes: it is received into a temporary file (handed
    // to the handler) and the request is fingerprinted by the file's SHA-256.
    let (bytes, fingerprint) = if parts.uri.path() == super::reconciliation::RUNS_PATH {
        if scope == "public" {
            return next.run(Request::from_parts(parts, body)).await;
        }
        match super::reconciliation::spool(body, state.config.reconciliation.max_file_bytes).await {
            Ok(upload) => {
                let digest = upload.sha256.clone().into_bytes();
                parts.extensions.insert(std::sync::Arc::new(upload));
                (bytes::Bytes::new(), digest)
            }
            Err(problem) => return problem.into_response(),
        }
    } else {
        let limit = state.config.server.body_limit_bytes;
        match axum::body::to_bytes(body, limit).await {
            Ok(b) => (b.clone(), b.to_vec()),
            Err(_) => return Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE).into_response(),
        }
    };
    let request_hash = {
        let mut h = Sha256::new();
        h.update(parts.method.as_str());
        h.update(b"\n");
        h.update(parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
        h.update(b"\n");
        h.update(&fingerprint);
        hex::encode(h.finalize())
    };

    let ttl = &state.config.idempotency;
    let at = now();
    let claim = state
        .store
        .claim_idempotency_key(
            &scope,
            &key,
            &request_hash,
            at - Duration::seconds(ttl.ttl_secs as i64),
            at - Duration::seconds(ttl.lock_timeout_secs as i64),
        )
        .await;
    match claim {
        Err(e) => Problem::from(e).into_response(),
        Ok(Claim::Mismatch) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            "This Idempotency-Key was already used with a different request. Use a new key for a new request.",
        )
        .into_response(),
        Ok(Claim::InProgress) => Problem::conflict(
            "idempotency-request-in-progress",
            "Request in progress",
            "A request with this Idempotency-Key is still being processed. Retry shortly to get its result.",
        )
        .with_retry_after(1)
        .into_response(),
        Ok(Claim::Replay(stored)) => replay(stored),
        Ok(Claim::Claimed) => {
            let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            let status = response.status();
            if !storable(status) {
                if let Err(e) = state.store.release_idempotency_key(&scope, &key).await {
                    tracing::warn!(error = %e, "could not release idempotency key; it frees itself after the lock timeout");
                }
                return response;
            }
            let (parts, body) = response.into_parts();
            let body = match axum::body::to_bytes(body, usize::MAX).await {
                Ok(b) => b,
                Err(e) => return Problem::internal(&e).into_response(),
            };
            let stored = StoredResponse {
                status: status.as_u16(),
                headers: KEPT_HEADERS
                    .iter()
                    .filter_map(|name| {
                        let v = parts.headers.get(name)?.to_str().ok()?;
                        Some((name.as_str().to_string(), v.to_string()))
                    })
                    .collect(),
                body: body.to_vec(),
            };
            if let Err(e) = state.store.complete_idempotency_key(&scope, &key, &stored).await {
                // The effect happened; the client gets its answer. A retry sees 409 until the
                // lock times out.
                tracing::error!(error = %e, "could not store idempotent response");
            }
            Response::from_parts(parts, Body::from(body))
        }
    }
}

/// Whether a handler's response is kept for replay: all of them — a 500 or a 502 included, since
/// what the handler did before failing (a refund sent to a provider, say) may have happened — except
/// refusals made before any work (401, 403, 408, 429) and 503, the answer for a database that could
/// not be reached, after which a retry with the same key must be able to run.
fn storable(status: StatusCode) -> bool {
    !matches!(
        status,
        StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::SERVICE_UNAVAILABLE
    )
}

fn replay(stored: StoredResponse) -> Response {
    let mut response = Response::new(Body::from(stored.body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    for (name, value) in stored.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(n, v);
        }
    }
    response.headers_mut().insert(HeaderName::from_static(REPLAYED_HEADER), HeaderValue::from_static("true"));
    response
}
