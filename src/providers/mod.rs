//! Payment providers: their wire protocols ([`protocol`], pure) and one connector per provider
//! behind the [`Connector`] trait, which does the I/O (reqwest, with timeouts).
//!
//! Invariants: a connector never changes a payment's state itself — it only says what the
//! provider said ([`ProviderEvent`]); verifying a callback checks signature, merchant and the
//! amount format before anything is trusted; credentials come from configuration only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::ProvidersConfig;
use protocol::event::{ProviderEvent, VerifyError};

pub mod bank;
pub mod momo;
pub mod protocol;
pub mod vietqr;
pub mod vnpay;
pub mod zalopay;

/// What a connector needs to start a payment.
#[derive(Debug, Clone)]
pub struct StartPayment {
    /// Our reference, sent to the provider (already in the provider's format, see
    /// [`Connector::merchant_ref`]).
    pub merchant_ref: String,
    pub amount: i64,
    pub notice_code: String,
    /// Short text shown by the provider.
    pub order_info: String,
    /// Where the provider sends the payer's browser back to.
    pub return_url: String,
    /// Where the provider sends its server-to-server callback.
    pub callback_url: String,
    pub client_ip: String,
    /// `vi` or `en`.
    pub locale: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Where the payer goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instructions {
    Redirect(String),
    /// An EMVCo (VietQR) payload to show as a QR code.
    Qr(String),
}

/// A failure to talk to a provider (not a payment outcome).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider unreachable or timed out: {0}")]
    Unreachable(String),
    #[error("provider answered something we cannot use: {0}")]
    BadAnswer(String),
    #[error("provider refused the request: {0}")]
    Refused(String),
    /// The provider has the request but has not said how it ended (still processing, say).
    #[error("provider has not decided: {0}")]
    Undecided(String),
    #[error("this provider cannot do that: {0}")]
    Unsupported(&'static str),
}

impl From<reqwest::Error> for ProviderError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() || e.is_connect() || e.is_request() {
            ProviderError::Unreachable(e.without_url().to_string())
        } else {
            ProviderError::BadAnswer(e.without_url().to_string())
        }
    }
}

/// A connector's refund result from the provider's verdict: `made` gives the provider's reference
/// for a refund it made.
pub(crate) fn refund_result(
    verdict: protocol::event::RefundVerdict,
    made: impl FnOnce() -> Option<String>,
) -> Result<Option<String>, ProviderError> {
    use protocol::event::RefundVerdict;
    match verdict {
        RefundVerdict::Made => Ok(made()),
        RefundVerdict::Undecided(why) => Err(ProviderError::Undecided(why)),
        RefundVerdict::Refused(why) => Err(ProviderError::Refused(why)),
    }
}

/// What a connector needs to refund (part of) a payment.
#[derive(Debug, Clone)]
pub struct RefundCall {
    /// Our refund id (alphanumeric), the provider's idempotency key.
    pub refund_id: String,
    pub merchant_ref: String,
    pub provider_txn_id: Option<String>,
    pub amount: i64,
    /// Refunds the whole payment.
    pub full: bool,
    pub payment_created_at: DateTime<Utc>,
    pub requested_by: String,
}

/// A callback as received, before anything in it is trusted.
#[derive(Debug, Clone)]
pub struct RawCallback<'a> {
    pub query: &'a str,
    pub body: &'a [u8],
}

/// Why a refund through a provider whose connector makes none is refused.
pub const REFUNDS_OUTSIDE: &str = "refunds through this provider are made by the treasury outside paygate";

#[async_trait]
pub trait Connector: Send + Sync {
    fn name(&self) -> &'static str;

    /// Our reference in the form this provider accepts, from a base reference (`PG…`).
    fn merchant_ref(&self, base: &str, at: DateTime<Utc>) -> Result<String, ProviderError> {
        let _ = at;
        Ok(base.to_string())
    }

    /// The smallest and largest amount (đồng) this provider takes in one payment.
    fn amount_limits(&self) -> (i64, i64) {
        (1, i64::MAX)
    }

    /// Prepares the payer's next step: a signed redirect, a provider-created order, or a QR.
    async fn start(&self, payment: &StartPayment) -> Result<Instructions, ProviderError>;

    /// Verifies a callback (or a return-page query string) and says what it reports.
    fn verify(&self, callback: &RawCallback<'_>) -> Result<ProviderEvent, VerifyError>;

    /// Whether [`Connector::refund`] asks this provider to refund. If not, its payments are
    /// refunded by the treasury outside paygate, and a refund request is refused before anything is
    /// reserved or written.
    fn makes_refunds(&self) -> bool {
        false
    }

    /// Asks the provider to refund; `Ok(provider reference)` when it confirmed the refund.
    async fn refund(&self, call: &RefundCall) -> Result<Option<String>, ProviderError> {
        let _ = call;
        Err(ProviderError::Unsupported(REFUNDS_OUTSIDE))
    }

    /// Asks the provider what became of a payment. `Ok(None)`: this provider cannot be asked
    /// (bank transfers), only told.
    async fn query(
        &self,
        merchant_ref: &str,
        created_at: DateTime<Utc>,
        amount: i64,
    ) -> Result<Option<ProviderEvent>, ProviderError>;
}

/// The configured connectors, by name.
#[derive(Clone)]
pub struct Providers {
    connectors: BTreeMap<&'static str, Arc<dyn Connector>>,
    enabled: Vec<String>,
    pub banks: Arc<bank::Banks>,
}

impl Providers {
    /// Builds every connector from configuration; an empty `base_url` points at the in-process
    /// sandbox under `public_base_url`.
    pub fn from_config(
        config: &ProvidersConfig,
        banks: &BTreeMap<String, crate::config::BankConfig>,
        public_base_url: &str,
    ) -> anyhow::Result<Providers> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.http_timeout_secs))
            .connect_timeout(Duration::from_secs(config.http_timeout_secs.min(5)))
            .user_agent(concat!("paygate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = |url: &str, name: &str| -> String {
            if url.is_empty() {
                format!("{public_base_url}/sandbox/{name}")
            } else {
                url.trim_end_matches('/').to_string()
            }
        };
        let mut connectors: BTreeMap<&'static str, Arc<dyn Connector>> = BTreeMap::new();
        connectors.insert(
            "vnpay",
            Arc::new(vnpay::Vnpay {
                base_url: base(&config.vnpay.base_url, "vnpay"),
                credentials: config.vnpay.credentials.clone(),
                http: http.clone(),
            }),
        );
        connectors.insert(
            "momo",
            Arc::new(momo::Momo {
                base_url: base(&config.momo.base_url, "momo"),
                credentials: config.momo.credentials.clone(),
                http: http.clone(),
            }),
        );
        connectors.insert(
            "zalopay",
            Arc::new(zalopay::Zalopay {
                base_url: base(&config.zalopay.base_url, "zalopay"),
                credentials: config.zalopay.credentials.clone(),
                http: http.clone(),
            }),
        );
        connectors.insert("vietqr", Arc::new(vietqr::VietQr { config: config.vietqr.clone() }));
        Ok(Providers { connectors, enabled: config.enabled.clone(), banks: Arc::new(bank::Banks::from_config(banks)) })
    }

    /// A known provider, enabled or not.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Connector>> {
        self.connectors.get(name)
    }

    pub fn is_enabled(&self, name: &str) -> bool {
        self.enabled.iter().any(|n| n == name) && self.connectors.contains_key(name)
    }

    /// Enabled providers, in configuration order.
    pub fn enabled(&self) -> impl Iterator<Item = &str> {
        self.enabled.iter().map(String::as_str).filter(|n| self.connectors.contains_key(n))
    }

    pub fn known(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.connectors.keys().copied()
    }
}

/// The largest provider answer read.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Reads a provider's answer as it arrives, refusing it as soon as it passes 1 MiB (so a larger
/// one is never held whole).
pub(crate) async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(ProviderError::BadAnswer("answer larger than 1 MiB".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads a provider's JSON answer, mapping transport and shape failures to [`ProviderError`].
pub(crate) async fn read_json(resp: reqwest::Response) -> Result<serde_json::Value, ProviderError> {
    let status = resp.status();
    let bytes = read_body(resp).await?;
    serde_json::from_slice(&bytes).map_err(|_| {
        ProviderError::BadAnswer(format!("HTTP {status} with a body that is not JSON ({} bytes)", bytes.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local server answering `body` to any request.
    async fn answering(body: Vec<u8>) -> String {
        let app = axum::Router::new().fallback(move || {
            let body = body.clone();
            async move { body }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn a_provider_answer_past_one_mib_is_refused() {
        let http = reqwest::Client::new();
        let small = answering(br#"{"resultCode":0}"#.to_vec()).await;
        let answer = read_json(http.get(&small).send().await.expect("sent")).await.expect("read");
        assert_eq!(answer["resultCode"], 0);
        let mut big = b"\"".to_vec();
        big.resize(MAX_ANSWER_BYTES + 10, b'a');
        let big = answering(big).await;
        let refused = read_body(http.get(&big).send().await.expect("sent")).await;
        assert!(matches!(refused, Err(ProviderError::BadAnswer(ref why)) if why.contains("1 MiB")), "{refused:?}");
    }
}
