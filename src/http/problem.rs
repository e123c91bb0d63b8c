//! RFC 9457 problem details: the one shape of every error response.
//!
//! Invariants: each error kind has a stable `type` URI (`urn:paygate:problem:<slug>`) and
//! HTTP status; `detail` says what a person can do about it; nothing internal (SQL, paths,
//! stack traces) is ever put in a problem — internal errors are logged with the request's span
//! and answered with a generic 500.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

pub const CONTENT_TYPE: &str = "application/problem+json";
const TYPE_PREFIX: &str = "urn:paygate:problem:";

/// One field that failed validation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `parcel.area_m2` or `items[1].kind`.
    pub field: String,
    pub detail: String,
}

/// An error answered as `application/problem+json`. Boxed, so `Result<T, Problem>` stays small.
#[derive(Debug, Clone)]
pub struct Problem(Box<ProblemDetails>);

impl std::ops::Deref for Problem {
    type Target = ProblemDetails;
    fn deref(&self) -> &ProblemDetails {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut ProblemDetails {
        &mut self.0
    }
}

/// The `application/problem+json` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDetails {
    /// Stable identifier of the error kind, `urn:paygate:problem:<slug>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For validation errors: the first field that failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
    /// A finer machine-readable reason within `type`, e.g. `unknown_jurisdiction`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<String>,
    /// For validation errors: every field that failed.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    retry_after: Option<u32>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem(Box::new(ProblemDetails {
            type_uri: format!("{TYPE_PREFIX}{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            code: None,
            errors: Vec::new(),
            retry_after: None,
        }))
    }

    /// The slug part of `type`.
    pub fn slug(&self) -> &str {
        self.type_uri.strip_prefix(TYPE_PREFIX).unwrap_or(&self.type_uri)
    }

    pub fn with_retry_after(mut self, secs: u32) -> Problem {
        self.retry_after = Some(secs);
        self
    }

    /// 422: one field failed validation.
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem::validation_many(vec![FieldError { field: field.into(), detail: detail.into() }])
    }

    /// 422: several fields failed validation. `errors` must not be empty.
    pub fn validation_many(errors: Vec<FieldError>) -> Problem {
        let first = errors
            .first()
            .cloned()
            .unwrap_or(FieldError { field: String::new(), detail: "the request is not valid".into() });
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
            "Validation failed",
            format!("{}: {}", first.field, first.detail),
        );
        p.field = Some(first.field);
        p.errors = errors;
        p
    }

    pub fn bad_request(slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, slug, title, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn conflict(slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, slug, title, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Authentication required", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "service-unavailable", "Service unavailable", detail)
            .with_retry_after(5)
    }

    /// 500 for a fault of ours. The cause is logged here, inside the request's span, and not
    /// sent to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Problem {
        tracing::error!(error = %cause, "internal error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "Internal error",
            "Something went wrong on our side; it has been logged. Retry later, or quote the x-request-id header to support.",
        )
    }

    /// The problem for an error status produced outside our handlers (router fallbacks, tower
    /// layers), where only the status is known.
    pub fn for_status(status: StatusCode) -> Problem {
        match status {
            StatusCode::NOT_FOUND => Problem::not_found("No resource at this path. See /openapi.json for the API."),
            StatusCode::METHOD_NOT_ALLOWED => Problem::new(
                status,
                "method-not-allowed",
                "Method not allowed",
                "This path does not accept this HTTP method; the Allow header lists those it does.",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
                status,
                "payload-too-large",
                "Request body too large",
                "The request body is larger than this server accepts (server.body_limit_bytes).",
            ),
            StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request-timeout",
                "Request timed out",
                "The request took longer than the server allows and was abandoned; whether it took effect is not known. Retry with the same Idempotency-Key: you will get its result, or 409 until it is safe to run again.",
            )
            .with_retry_after(1),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
                status,
                "unsupported-media-type",
                "Unsupported media type",
                "Send the body as JSON with Content-Type: application/json.",
            ),
            StatusCode::INTERNAL_SERVER_ERROR => Problem::internal(&"unhandled error response"),
            s if s.is_client_error() => Problem::bad_request(
                "bad-request",
                "Bad request",
                format!("The request was refused ({s})."),
            )
            .with_status(s),
            s => Problem::new(s, "server-error", "Server error", "The server could not answer this request."),
        }
    }

    fn with_status(mut self, status: StatusCode) -> Problem {
        self.status = status.as_u16();
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.slug(), self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after;
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        let mut response = (status, Json(*self.0)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database-unavailable",
                    "Database unavailable",
                    "The database could not be reached in time; nothing was changed. Retry later.",
                )
                .with_retry_after(5)
            }
            StoreError::Conflict(cause) => {
                tracing::info!(%cause, "write conflict");
                Problem::conflict(
                    "conflict",
                    "Conflict",
                    "The request conflicts with the current state of the resource.",
                )
            }
            StoreError::Other(e) => Problem::internal(&e),
            StoreError::Direct(e) => Problem::internal(&e),
            StoreError::Invariant(why) => Problem::internal(&format!("ledger invariant: {why}")),
        }
    }
}

/// Result type of handlers.
pub type ApiResult<T> = Result<T, Problem>;
