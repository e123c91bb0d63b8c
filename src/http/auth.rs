//! Bearer-token authentication for issuer and staff routes.
//!
//! A middleware resolves the `Authorization: Bearer` header once per request into an
//! [`Authentication`] stored in the request's extensions; handlers that need a caller take
//! [`Caller`] (401 when absent or invalid) and call [`Caller::require`] (403 for a role the
//! route does not admit). Public and provider-callback routes never look at it.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

use super::problem::Problem;
use crate::app::AppState;
use crate::auth::{Principal, Role, secret_matches, split_bearer};

/// What the request's credentials amounted to.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// No Authorization header.
    Anonymous,
    /// Credentials were presented and are valid.
    Authenticated(Principal),
    /// Credentials were presented and are not valid (reason for the 401 detail).
    Invalid(&'static str),
}

pub async fn resolve(State(state): State<AppState>, mut req: Request, next: Next) -> Result<Response, Problem> {
    let auth = match req.headers().get(header::AUTHORIZATION) {
        None => Authentication::Anonymous,
        Some(value) => authenticate(&state, value.to_str().unwrap_or("")).await?,
    };
    req.extensions_mut().insert(auth);
    Ok(next.run(req).await)
}

async fn authenticate(state: &AppState, header_value: &str) -> Result<Authentication, Problem> {
    let Some(bearer) = header_value.strip_prefix("Bearer ").or_else(|| header_value.strip_prefix("bearer ")) else {
        return Ok(Authentication::Invalid("use `Authorization: Bearer <token>`"));
    };
    let Some((id, secret)) = split_bearer(bearer.trim()) else {
        return Ok(Authentication::Invalid("the bearer token is malformed"));
    };
    let Some(record) = state.store.find_token(id).await? else {
        return Ok(Authentication::Invalid("the bearer token is not valid"));
    };
    // Compare before looking at revocation so that timing does not tell the two apart.
    let matches = secret_matches(secret, &record.secret_hash);
    if !matches || record.revoked_at.is_some() {
        return Ok(Authentication::Invalid("the bearer token is not valid"));
    }
    let Some(role) = record.role() else {
        return Ok(Authentication::Invalid("the bearer token is not valid"));
    };
    Ok(Authentication::Authenticated(Principal { token_id: record.id, name: record.name, role }))
}

/// The authenticated caller of an issuer or staff route.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// 403 unless the caller holds one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<&Principal, Problem> {
        if roles.contains(&self.0.role) {
            Ok(&self.0)
        } else {
            let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(Problem::forbidden(format!(
                "This action needs the role {}; your token has the role {}.",
                wanted.join(" or "),
                self.0.role
            )))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        match parts.extensions.get::<Authentication>() {
            Some(Authentication::Authenticated(p)) => Ok(Caller(p.clone())),
            Some(Authentication::Invalid(why)) => Err(Problem::unauthorized(format!("{why}."))),
            _ => Err(Problem::unauthorized(
                "This endpoint needs a bearer token: send `Authorization: Bearer <token>` (create one with `paygate token create`).",
            )),
        }
    }
}
