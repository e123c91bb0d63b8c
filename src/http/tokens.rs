//! Token administration over HTTP (`admin` role): issue, list, revoke.
//!
//! Invariant: a token's secret appears in exactly one response, the one that creates it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::json::ApiJson;
use super::problem::{ApiResult, Problem, ProblemDetails};
use crate::app::AppState;
use crate::auth::{Role, new_token};
use crate::store::StoreError;
use crate::store::tokens::TokenRecord;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateToken {
    /// Who or what holds the token, e.g. `dossier-system` or `nguyen.van.a`. Unique among active tokens.
    pub name: String,
    pub role: Role,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub record: TokenView,
    /// The bearer token. Shown only here; store it now.
    pub token: String,
}

impl From<TokenRecord> for TokenView {
    fn from(r: TokenRecord) -> Self {
        TokenView { id: r.id, name: r.name, role: r.role, created_at: r.created_at, revoked_at: r.revoked_at }
    }
}

/// Validates a token holder's name: 1–100 characters, no control characters.
pub fn validate_name(name: &str) -> Result<&str, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err("must be 1 to 100 characters without control characters".into());
    }
    Ok(name)
}

/// Issue a bearer token.
#[utoipa::path(post, path = "/v1/tokens", tag = "administration", request_body = CreateToken,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = CreatedToken), (status = 422, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    caller.require(&[Role::Admin])?;
    let name = validate_name(&req.name).map_err(|e| Problem::validation("name", e))?;
    let token = new_token();
    let record = state.store.insert_token(&token, name, req.role).await.map_err(|e| match e {
        StoreError::Conflict(_) => Problem::conflict(
            "token-name-taken",
            "Token name taken",
            format!("An active token is already named {name:?}; revoke it first or choose another name."),
        ),
        e => e.into(),
    })?;
    tracing::info!(token_id = %record.id, role = %record.role, by = %caller.0.name, "token issued");
    Ok((StatusCode::CREATED, Json(CreatedToken { record: record.into(), token: token.bearer })))
}

/// List tokens (never their secrets).
#[utoipa::path(get, path = "/v1/tokens", tag = "administration",
    responses((status = 200, body = [TokenView])), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<TokenView>>> {
    caller.require(&[Role::Admin])?;
    Ok(Json(state.store.list_tokens().await?.into_iter().map(Into::into).collect()))
}

/// Revoke a token by id.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "administration",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204), (status = 404, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn revoke(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    match state.store.find_token(&id).await? {
        Some(t) if t.revoked_at.is_none() => {
            state.store.revoke_token(&t.id).await?;
            tracing::info!(token_id = %t.id, by = %caller.0.name, "token revoked");
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(Problem::not_found(format!("No active token with id {id:?}."))),
    }
}
