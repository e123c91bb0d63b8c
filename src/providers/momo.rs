//! MoMo connector: create API (`payUrl`), IPN verification, status query, refunds.
//! Invariant: IPNs are believed only after their signature and partner code check out. Answers
//! of the query and refund APIs come over the connection we opened to the configured host (the
//! reference gives them no signature to check); one naming another partner code, or a query
//! answer about another order, is not believed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::protocol::event::{Outcome, ProviderEvent, VerifyError};
use super::protocol::momo::{self, CreateRequest, Lang, MomoCredentials, RefundRequest, RequestType};
use super::{Connector, Instructions, ProviderError, RawCallback, RefundCall, StartPayment, read_json, refund_result};

pub struct Momo {
    pub base_url: String,
    pub credentials: MomoCredentials,
    pub http: reqwest::Client,
}

impl Momo {
    /// An answer that names a partner code must name ours.
    fn addressed_to_us(&self, answer: &Value, api: &str) -> Result<(), ProviderError> {
        match answer.get("partnerCode").and_then(Value::as_str) {
            Some(code) if code != self.credentials.partner_code => {
                Err(ProviderError::BadAnswer(format!("{api} answer names another partner code")))
            }
            _ => Ok(()),
        }
    }
}

fn lang(locale: &str) -> Lang {
    if locale == "en" { Lang::En } else { Lang::Vi }
}

#[async_trait]
impl Connector for Momo {
    fn name(&self) -> &'static str {
        "momo"
    }

    /// `captureWallet` takes 1,000 to 50,000,000 đồng (providers.md).
    fn amount_limits(&self) -> (i64, i64) {
        (1_000, 50_000_000)
    }

    async fn start(&self, p: &StartPayment) -> Result<Instructions, ProviderError> {
        let body = momo::create_request(
            &self.credentials,
            &CreateRequest {
                request_id: p.merchant_ref.clone(),
                order_id: p.merchant_ref.clone(),
                amount: p.amount,
                order_info: p.order_info.clone(),
                redirect_url: p.return_url.clone(),
                ipn_url: p.callback_url.clone(),
                request_type: RequestType::CaptureWallet,
                extra_data: String::new(),
                lang: lang(&p.locale),
            },
        )
        .map_err(|e| ProviderError::Refused(e.to_string()))?;
        let resp = self.http.post(format!("{}/v2/gateway/api/create", self.base_url)).json(&body).send().await?;
        let answer = read_json(resp).await?;
        let code = answer.get("resultCode").and_then(Value::as_i64);
        match (code, answer.get("payUrl").and_then(Value::as_str)) {
            (Some(0), Some(url)) if url.starts_with("http") => Ok(Instructions::Redirect(url.to_string())),
            _ => Err(ProviderError::Refused(format!(
                "MoMo create answered resultCode {:?}: {}",
                code,
                answer.get("message").and_then(Value::as_str).unwrap_or("")
            ))),
        }
    }

    fn verify(&self, callback: &RawCallback<'_>) -> Result<ProviderEvent, VerifyError> {
        momo::verify_ipn(&self.credentials, callback.body)
    }

    fn makes_refunds(&self) -> bool {
        true
    }

    async fn refund(&self, call: &RefundCall) -> Result<Option<String>, ProviderError> {
        let trans_id = call
            .provider_txn_id
            .as_deref()
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| ProviderError::Refused("the payment has no MoMo transId to refund".into()))?;
        let body = momo::refund_request(
            &self.credentials,
            &RefundRequest {
                request_id: call.refund_id.clone(),
                order_id: call.refund_id.clone(),
                amount: call.amount,
                trans_id,
                description: format!("Hoan tien {}", call.merchant_ref),
                lang: Lang::Vi,
            },
        )
        .map_err(|e| ProviderError::Refused(e.to_string()))?;
        let resp = self.http.post(format!("{}/v2/gateway/api/refund", self.base_url)).json(&body).send().await?;
        let answer = read_json(resp).await?;
        self.addressed_to_us(&answer, "refund")?;
        refund_result(momo::refund_verdict(&answer), || {
            answer.get("transId").and_then(Value::as_i64).map(|t| t.to_string())
        })
    }

    async fn query(
        &self,
        merchant_ref: &str,
        _created_at: DateTime<Utc>,
        _amount: i64,
    ) -> Result<Option<ProviderEvent>, ProviderError> {
        let request_id = format!("Q{}", uuid::Uuid::new_v4().simple());
        let body = momo::query_request(&self.credentials, &request_id, merchant_ref, Lang::Vi)
            .map_err(|e| ProviderError::Refused(e.to_string()))?;
        let resp = self.http.post(format!("{}/v2/gateway/api/query", self.base_url)).json(&body).send().await?;
        let answer = read_json(resp).await?;
        self.addressed_to_us(&answer, "query")?;
        if answer.get("orderId").and_then(Value::as_str) != Some(merchant_ref) {
            return Err(ProviderError::BadAnswer("query answer is about another order".into()));
        }
        let code = answer
            .get("resultCode")
            .and_then(Value::as_i64)
            .ok_or_else(|| ProviderError::BadAnswer("query answer has no resultCode".into()))?;
        if code == 42 {
            // Order not found at MoMo: the payer never confirmed.
            return Ok(None);
        }
        if (10..=13).contains(&code) {
            // Errors of the request itself (maintenance, access denied, unsupported version,
            // merchant authentication): they say nothing of the payment, which stays pending.
            let message = answer.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(ProviderError::BadAnswer(format!("MoMo query refused, resultCode {code}: {message}")));
        }
        let message = answer.get("message").and_then(Value::as_str).unwrap_or("");
        let outcome = momo::outcome_of(code, message);
        let amount = answer.get("amount").and_then(Value::as_i64).unwrap_or(0);
        Ok(Some(ProviderEvent {
            provider: "momo",
            merchant_ref: merchant_ref.to_string(),
            provider_txn_id: answer.get("transId").and_then(Value::as_i64).filter(|t| *t != 0).map(|t| t.to_string()),
            amount,
            paid_at: matches!(outcome, Outcome::Succeeded).then(crate::store::now),
            outcome,
            provider_code: code.to_string(),
        }))
    }
}
