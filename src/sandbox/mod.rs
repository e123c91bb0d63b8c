//! Provider sandbox: an in-process simulator of VNPAY, MoMo, ZaloPay and partner banks (VietQR
//! transfers), for demos and end-to-end tests. paygate nests [`router`] at `/sandbox`; its
//! connectors then talk to it over real HTTP exactly as they would to the providers. Production
//! never mounts it.
//!
//! # State
//! All state (orders, refunds, the settlement ledger, the per-run faults and the log of callbacks
//! sent) lives **in memory, per process**: it is lost on restart and is not shared between two
//! paygate processes. Orders are kept for the life of the process; the callback log keeps the most
//! recent [`callbacks::MAX_RECORDS`] entries.
//!
//! # Routes (relative to the nest point)
//! | Route | What |
//! |---|---|
//! | `GET /` | index: providers, per-run faults, recent orders |
//! | `GET /faults`, `POST /faults` | per-run default faults ([`faults`]) |
//! | `GET /callbacks-sent` | JSON log of every callback sent ([`callbacks::CallbackRecord`]) |
//! | `/vnpay/…` | see [`vnpay`] |
//! | `/momo/…` | see [`momo`] |
//! | `/zalopay/…` | see [`zalopay`] |
//! | `/bank/{bank}/…` | see [`bank`] |
//! | `/{provider}/settlement?date=YYYY-MM-DD`, `/bank/{bank}/settlement?…` | see [`settlement`] |
//!
//! # Invariants
//! - Every inbound request is verified the way the real provider does (signature/MAC first, with the
//!   pure functions of [`crate::providers::protocol`]); nothing here re-implements signing.
//! - Absolute URLs handed out (MoMo `payUrl`, ZaloPay `order_url`) are derived from the request's
//!   `Host` header (sanitised; `X-Forwarded-Proto: https` selects https) and the nest point, which is
//!   recovered from axum's `OriginalUri`; links inside pages are absolute paths under the nest point.
//! - Without a fault, the callback of a decision is delivered (and its answer recorded) **before**
//!   the decide handler answers its 303, so tests are deterministic. Only `delay:<ms>` sends in the
//!   background. The sandbox never retries a callback.
//! - Faults only alter the server-to-server callback; the browser redirect always carries the true,
//!   correctly signed result, and the query APIs and settlement files always report the truth.
//! - The shared state is behind one `std::sync::Mutex` that is never held across an `.await`.
//! - Every value interpolated into HTML goes through [`pages::esc`]. No `unwrap` on input.

mod bank;
mod callbacks;
mod faults;
mod momo;
mod pages;
/// Public for its documentation: the settlement file layouts and fee constants.
pub mod settlement;
mod vnpay;
mod zalopay;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::routing::{get, post};
use chrono::{DateTime, FixedOffset, Utc};

use crate::providers::protocol::{momo as momo_proto, vnpay as vnpay_proto, zalopay as zalopay_proto};

/// Everything the sandbox needs to play the providers' side.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub vnpay: vnpay_proto::VnpayCredentials,
    /// Where VNPAY sends IPNs for this merchant (configured in VNPAY's merchant portal in real life).
    /// Absolute URL; the signed query is appended after `?` (or `&` if it already has a query).
    pub vnpay_ipn_url: String,
    pub momo: momo_proto::MomoCredentials,
    pub zalopay: zalopay_proto::ZalopayCredentials,
    /// Partner banks that send Paygate-Signature-signed credit notifications.
    pub banks: Vec<SandboxBank>,
    /// Timeout for the callbacks the sandbox sends.
    pub http_timeout: std::time::Duration,
}

/// A simulated partner bank: its name (the `{bank}` path segment), the secret it signs credit
/// notifications with, and where it sends them.
#[derive(Debug, Clone)]
pub struct SandboxBank {
    pub name: String,
    pub secret: secrecy::SecretString,
    pub notify_url: String,
}

/// All routes, relative (paygate nests this at "/sandbox"). Router<()> with its own state.
pub fn router(config: SandboxConfig) -> Router {
    let http = reqwest::Client::builder()
        .timeout(config.http_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    let shared = Arc::new(Shared { config, http, state: Mutex::new(State::default()), seq: AtomicU64::new(1) });
    Router::new()
        .route("/", get(pages::index))
        .route("/faults", get(faults::get_faults).post(faults::set_faults))
        .route("/callbacks-sent", get(callbacks::list))
        .route("/vnpay/paymentv2/vpcpay.html", get(vnpay::pay_page))
        .route("/vnpay/paymentv2/decide", post(vnpay::decide))
        .route("/vnpay/merchant_webapi/api/transaction", post(vnpay::transaction_api))
        .route("/vnpay/settlement", get(settlement::vnpay))
        .route("/momo/v2/gateway/api/create", post(momo::create))
        .route("/momo/v2/gateway/api/query", post(momo::query))
        .route("/momo/v2/gateway/api/refund", post(momo::refund))
        .route("/momo/pay/{order_id}", get(momo::pay_page))
        .route("/momo/pay/{order_id}/decide", post(momo::decide))
        .route("/momo/settlement", get(settlement::momo))
        .route("/zalopay/v2/create", post(zalopay::create))
        .route("/zalopay/v2/query", post(zalopay::query))
        .route("/zalopay/v2/refund", post(zalopay::refund))
        .route("/zalopay/pay/{app_trans_id}", get(zalopay::pay_page))
        .route("/zalopay/pay/{app_trans_id}/decide", post(zalopay::decide))
        .route("/zalopay/settlement", get(settlement::zalopay))
        .route("/bank/{bank}/transfer", get(bank::transfer_form).post(bank::transfer))
        .route("/bank/{bank}/settlement", get(settlement::bank))
        .with_state(shared)
}

/// The state every handler shares.
pub(crate) type AppState = Arc<Shared>;

pub(crate) struct Shared {
    pub(crate) config: SandboxConfig,
    pub(crate) http: reqwest::Client,
    state: Mutex<State>,
    seq: AtomicU64,
}

impl Shared {
    /// Lock the in-memory state. A poisoned lock (a panic while holding it) is recovered: the state
    /// is only ever mutated by whole-value assignments and pushes, so it stays consistent.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A process-wide increasing sequence number (provider transaction numbers).
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn bank(&self, name: &str) -> Option<&SandboxBank> {
        self.config.banks.iter().find(|b| b.name == name)
    }
}

/// The sandbox's in-memory world.
#[derive(Default)]
pub(crate) struct State {
    /// VNPAY orders by `vnp_TxnRef`.
    pub(crate) vnpay: BTreeMap<String, vnpay::Order>,
    /// `vnp_RequestId`s seen by the transaction API (94 on reuse).
    pub(crate) vnpay_request_ids: HashSet<String>,
    /// MoMo orders by `orderId`.
    pub(crate) momo: BTreeMap<String, momo::Order>,
    /// MoMo `requestId` → the `orderId` it created (or refunded).
    pub(crate) momo_request_ids: HashMap<String, String>,
    /// MoMo refund `orderId`s (must be unique, like payment orderIds).
    pub(crate) momo_refund_order_ids: HashSet<String>,
    /// ZaloPay orders by `app_trans_id`.
    pub(crate) zalopay: BTreeMap<String, zalopay::Order>,
    /// ZaloPay `m_refund_id`s seen.
    pub(crate) zalopay_refund_ids: HashSet<String>,
    /// Bank transfers, oldest first.
    pub(crate) bank: Vec<bank::Transfer>,
    /// Successful payments and refunds of every provider, oldest first (settlement files).
    pub(crate) ledger: Vec<settlement::LedgerEntry>,
    /// Per-run default faults.
    pub(crate) faults: BTreeMap<faults::Target, faults::Fault>,
    /// Callbacks sent, oldest first, bounded.
    pub(crate) callbacks: VecDeque<callbacks::CallbackRecord>,
    pub(crate) callback_seq: u64,
}

/// Where an order stands at the simulated provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Pending,
    Succeeded,
    Failed,
}

impl Status {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
        }
    }
}

/// UTC+07:00 (Vietnam has no daylight saving).
pub(crate) fn gmt7() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).expect("GMT+7 is a valid offset")
}

pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// 32 lowercase hex characters, random.
pub(crate) fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `url` with `query` appended after `?` or `&`.
pub(crate) fn append_query(url: &str, query: &str) -> String {
    if query.is_empty() {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// Decode an `application/x-www-form-urlencoded` body into pairs.
pub(crate) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// First value of `key` in decoded pairs.
pub(crate) fn pair<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Change one hex digit of a signature so that it no longer verifies (the `bad_signature` fault).
pub(crate) fn tamper_hex(sig: &str) -> String {
    let mut chars: Vec<char> = sig.chars().collect();
    match chars.first_mut() {
        Some(c) => *c = if *c == '0' { '1' } else { '0' },
        None => chars.push('0'),
    }
    chars.into_iter().collect()
}

/// Where this request reached the sandbox: the nest point as an absolute path (e.g. `/sandbox`,
/// or `` when not nested) and the origin (`http://host:port`) taken from the `Host` header.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub(crate) prefix: String,
    pub(crate) origin: String,
}

impl Base {
    /// Absolute path under the nest point, e.g. `path("/momo")` → `/sandbox/momo`.
    pub(crate) fn path(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }
    /// Absolute URL under the nest point, e.g. `http://127.0.0.1:8080/sandbox/momo`.
    pub(crate) fn url(&self, rel: &str) -> String {
        format!("{}{}{rel}", self.origin, self.prefix)
    }
}

/// A `Host` value is used only if it is a plausible `host[:port]` (letters, digits, `.-:[]`).
fn sanitize_host(h: &str) -> Option<&str> {
    let ok = !h.is_empty()
        && h.len() <= 255
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then_some(h)
}

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let inner = parts.uri.path().to_owned();
        let original =
            parts.extensions.get::<OriginalUri>().map(|o| o.0.path().to_owned()).unwrap_or_else(|| inner.clone());
        let prefix = match original.strip_suffix(inner.as_str()) {
            Some(p) => p.trim_end_matches('/').to_owned(),
            None if inner == "/" => original.trim_end_matches('/').to_owned(),
            None => String::new(),
        };
        let host = parts
            .headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .and_then(sanitize_host)
            .unwrap_or("localhost")
            .to_owned();
        let https = parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        let scheme = if https { "https" } else { "http" };
        Ok(Base { prefix, origin: format!("{scheme}://{host}") })
    }
}

/// Upper bound of the `delay:<ms>` fault.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(600);

/// `303 See Other` to `url`; if `url` cannot be a `Location` header value (control or non-ASCII
/// characters), an HTML page with the link instead (never a panic).
pub(crate) fn see_other(url: &str, brand: &str) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    match HeaderValue::try_from(url) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => {
            let body = format!("<p>Continue to <a href=\"{0}\">{0}</a></p>", pages::esc(url));
            (StatusCode::OK, axum::response::Html(pages::layout("Continue", brand, &body))).into_response()
        }
    }
}
