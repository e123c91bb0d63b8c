//! ZaloPay connector: create API (`order_url`), callback verification (key2), status query.
//! Invariant: callbacks are believed only when their `mac` over the exact `data` verifies.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::protocol::event::{ProviderEvent, VerifyError};
use super::protocol::zalopay::{self, CreateRequest, ZalopayCredentials};
use super::{Connector, Instructions, ProviderError, RawCallback, StartPayment, read_json};

pub struct Zalopay {
    pub base_url: String,
    pub credentials: ZalopayCredentials,
    pub http: reqwest::Client,
}

#[async_trait]
impl Connector for Zalopay {
    fn name(&self) -> &'static str {
        "zalopay"
    }

    fn merchant_ref(&self, base: &str, at: DateTime<Utc>) -> Result<String, ProviderError> {
        zalopay::app_trans_id(at, base).map_err(|e| ProviderError::Refused(e.to_string()))
    }

    async fn start(&self, p: &StartPayment) -> Result<Instructions, ProviderError> {
        let ttl = (p.expires_at - p.created_at).num_seconds().clamp(300, 2_592_000);
        let body = zalopay::create_request(
            &self.credentials,
            &CreateRequest {
                app_user: "paygate".into(),
                app_trans_id: p.merchant_ref.clone(),
                app_time_ms: p.created_at.timestamp_millis(),
                expire_duration_seconds: Some(ttl),
                amount: p.amount,
                item: "[]".into(),
                embed_data: serde_json::json!({"redirecturl": p.return_url}).to_string(),
                description: p.order_info.clone(),
                bank_code: String::new(),
                callback_url: Some(p.callback_url.clone()),
            },
        )
        .map_err(|e| ProviderError::Refused(e.to_string()))?;
        let resp = self.http.post(format!("{}/v2/create", self.base_url)).json(&body).send().await?;
        let answer = read_json(resp).await?;
        let code = answer.get("return_code").and_then(Value::as_i64);
        match (code, answer.get("order_url").and_then(Value::as_str)) {
            (Some(1), Some(url)) if url.starts_with("http") => Ok(Instructions::Redirect(url.to_string())),
            _ => Err(ProviderError::Refused(format!(
                "ZaloPay create answered return_code {:?}: {}",
                code,
                answer.get("return_message").and_then(Value::as_str).unwrap_or("")
            ))),
        }
    }

    fn verify(&self, callback: &RawCallback<'_>) -> Result<ProviderEvent, VerifyError> {
        zalopay::verify_callback(&self.credentials, callback.body)
    }

    async fn query(
        &self,
        merchant_ref: &str,
        _created_at: DateTime<Utc>,
        _amount: i64,
    ) -> Result<Option<ProviderEvent>, ProviderError> {
        let req = zalopay::query_request(&self.credentials, merchant_ref)
            .map_err(|e| ProviderError::Refused(e.to_string()))?;
        let resp = self
            .http
            .post(format!("{}/v2/query", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(req.to_form())
            .send()
            .await?;
        let bytes = super::read_body(resp).await?;
        // An unknown order is return_code 2 (sub_return_code -101): a failure, which it is. Any
        // answer that is not a payment state (a refused request, an unknown code) is an error, so
        // the poller keeps the payment pending and asks again rather than deciding on it.
        zalopay::parse_query_response(merchant_ref, &bytes)
            .map(Some)
            .map_err(|e| ProviderError::BadAnswer(e.to_string()))
    }
}
