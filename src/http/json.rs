//! JSON request bodies whose every rejection is a problem+json naming what is wrong.
//!
//! Invariants: a body is accepted only with a JSON content type; malformed JSON is 400
//! `invalid-json`; well-formed JSON of the wrong shape is 422 `validation-error` naming the
//! field path (e.g. `items[1].kind`).

use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::problem::Problem;

/// Like `axum::Json`, with problem+json rejections.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        if !has_json_content_type(&req) {
            return Err(Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE)
            } else {
                Problem::bad_request("unreadable-body", "Unreadable body", "The request body could not be read.")
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body with the same error rules as [`ApiJson`].
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." { String::new() } else { path };
                Problem::validation(field, strip_position(&inner.to_string()))
            }
            _ => {
                Problem::bad_request("invalid-json", "Malformed JSON", format!("The body is not valid JSON: {inner}."))
            }
        }
    })?;
    de.end().map_err(|e| {
        Problem::bad_request("invalid-json", "Malformed JSON", format!("The body is not valid JSON: {e}."))
    })?;
    Ok(value)
}

/// serde's data errors end in " at line L column C", which says nothing useful next to a
/// field path.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn has_json_content_type(req: &Request) -> bool {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}
