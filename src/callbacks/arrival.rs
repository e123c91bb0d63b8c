//! A callback as it arrived: its body received with bounded memory, the inbox record made of it,
//! and the checks that refuse it before any verification.
//!
//! Invariants: however large a body is, at most [`MAX_CALLBACK_BODY`] + 1 of its bytes are held
//! (every byte up to [`READ_LIMIT`] is counted and hashed, so the inbox names its true size and
//! SHA-256); a body over [`MAX_CALLBACK_BODY`], or one that is not UTF-8, is never verified or
//! acted on; stored bodies are masked and hold no NUL.

use axum::body::Body;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::providers::protocol::event::VerifyError;
use crate::store::inbox::InboxRecord;

/// The largest callback body acted on; anything larger is stored (truncated) and rejected.
pub const MAX_CALLBACK_BODY: usize = 64 * 1024;
/// Bodies are counted and hashed up to this size, so that even an oversized one is described to
/// the auditor; beyond it the request is refused as unreadable.
pub const READ_LIMIT: usize = 16 * 1024 * 1024;

/// A callback body as received: its first bytes, its size and its SHA-256.
#[derive(Debug, Clone)]
pub struct ReceivedBody {
    /// The whole body when it is at most [`MAX_CALLBACK_BODY`]; otherwise its first
    /// [`MAX_CALLBACK_BODY`] + 1 bytes.
    kept: Vec<u8>,
    len: usize,
    sha256: String,
}

impl ReceivedBody {
    /// Reads `body` to its end, holding no more than [`MAX_CALLBACK_BODY`] + 1 bytes; `None` when
    /// the stream breaks or passes [`READ_LIMIT`].
    pub async fn receive(mut body: Body) -> Option<ReceivedBody> {
        let mut kept = Vec::new();
        let mut len = 0usize;
        let mut hasher = Sha256::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.ok()?.into_data() else { continue };
            len += data.len();
            if len > READ_LIMIT {
                return None;
            }
            hasher.update(&data);
            let room = (MAX_CALLBACK_BODY + 1).saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
        Some(ReceivedBody { kept, len, sha256: hex::encode(hasher.finalize()) })
    }

    /// The body's bytes: all of them unless it is larger than [`MAX_CALLBACK_BODY`].
    pub fn bytes(&self) -> &[u8] {
        &self.kept
    }

    /// Its size in bytes, counted to its end.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A callback as it arrived, for the inbox.
pub struct Arrival<'a> {
    pub provider: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a axum::http::HeaderMap,
    /// `None` when the body could not be read (larger than [`READ_LIMIT`], broken stream).
    pub body: Option<&'a ReceivedBody>,
    pub source_addr: String,
}

impl Arrival<'_> {
    /// The body to verify: empty when none could be read (such a callback fails [`precheck`]).
    pub fn body_bytes(&self) -> &[u8] {
        self.body.map(ReceivedBody::bytes).unwrap_or_default()
    }
}

/// The inbox record of a callback as it arrived (masked), before any outcome.
pub fn arrival_record(a: &Arrival<'_>) -> InboxRecord {
    let body = a.body_bytes();
    let shown = &body[..body.len().min(MAX_CALLBACK_BODY)];
    let text = match serde_json::from_slice::<serde_json::Value>(shown) {
        Ok(mut json) => {
            crate::privacy::mask_payload(&mut json);
            json.to_string()
        }
        Err(_) => crate::privacy::mask_form(&String::from_utf8_lossy(shown)),
    }
    // PostgreSQL text cannot hold NUL; the SHA-256 is of the original bytes.
    .replace('\0', "\u{FFFD}");
    let headers: serde_json::Map<String, serde_json::Value> = ["content-type", "user-agent", "paygate-signature"]
        .iter()
        .filter_map(|h| Some((h.to_string(), serde_json::Value::from(a.headers.get(*h)?.to_str().ok()?))))
        .collect();
    InboxRecord {
        id: format!("cb_{}", uuid::Uuid::now_v7().simple()),
        provider: a.provider.to_string(),
        method: a.method.to_string(),
        path: a.path.to_string(),
        query: crate::privacy::mask_form(&a.query.chars().take(8192).collect::<String>()),
        headers: serde_json::Value::Object(headers).to_string(),
        body: text,
        body_sha256: a.body.map_or_else(|| hex::encode(Sha256::digest(b"")), |b| b.sha256.clone()),
        body_bytes: a.body.map_or(0, |b| b.len() as i64),
        source_addr: a.source_addr.clone(),
        received_at: crate::store::now(),
        verification: None,
        outcome: None,
        detail: None,
        merchant_ref: None,
        processed_at: None,
    }
}

/// Why a callback is refused before verification even starts (size, unreadable body).
///
/// Every provider sends text (JSON or a form): a body, or a percent-escape in the query, that is
/// not UTF-8 is refused here rather than read with replacement characters.
pub fn precheck(a: &Arrival<'_>) -> Option<VerifyError> {
    match a.body {
        None => Some(VerifyError::Body(format!("body larger than {READ_LIMIT} bytes or unreadable"))),
        Some(b) if b.len() > MAX_CALLBACK_BODY => {
            Some(VerifyError::Body(format!("body of {} bytes is larger than {MAX_CALLBACK_BODY}", b.len())))
        }
        Some(b) if std::str::from_utf8(b.bytes()).is_err() => Some(VerifyError::Body("body is not valid UTF-8".into())),
        _ if percent_encoding::percent_decode_str(a.query).decode_utf8().is_err() => {
            Some(VerifyError::Body("query string decodes to invalid UTF-8".into()))
        }
        _ => None,
    }
}
