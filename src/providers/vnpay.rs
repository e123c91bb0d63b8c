//! VNPAY connector: signed pay URL, IPN verification, `querydr` status queries.
//! Invariant: every answer from VNPAY is signature-checked before it is believed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::protocol::event::{ProviderEvent, VerifyError};
use super::protocol::vnpay::{self, Locale, PayRequest, QueryDrRequest, RefundKind, RefundRequest, VnpayCredentials};
use super::{Connector, Instructions, ProviderError, RawCallback, RefundCall, StartPayment, read_json, refund_result};
use crate::store::now;

pub struct Vnpay {
    pub base_url: String,
    pub credentials: VnpayCredentials,
    pub http: reqwest::Client,
}

#[async_trait]
impl Connector for Vnpay {
    fn name(&self) -> &'static str {
        "vnpay"
    }

    async fn start(&self, p: &StartPayment) -> Result<Instructions, ProviderError> {
        let url = vnpay::pay_url(
            &format!("{}/paymentv2/vpcpay.html", self.base_url),
            &self.credentials,
            &PayRequest {
                txn_ref: p.merchant_ref.clone(),
                amount_vnd: p.amount,
                order_info: p.order_info.clone(),
                return_url: p.return_url.clone(),
                ip_addr: p.client_ip.clone(),
                locale: if p.locale == "en" { Locale::En } else { Locale::Vn },
                created_at: p.created_at,
                expires_at: p.expires_at,
                bank_code: None,
            },
        )
        .map_err(|e| ProviderError::Refused(e.to_string()))?;
        Ok(Instructions::Redirect(url))
    }

    fn verify(&self, callback: &RawCallback<'_>) -> Result<ProviderEvent, VerifyError> {
        vnpay::verify_ipn(&self.credentials, &vnpay::parse_query(callback.query))
    }

    fn makes_refunds(&self) -> bool {
        true
    }

    async fn refund(&self, call: &RefundCall) -> Result<Option<String>, ProviderError> {
        let body = vnpay::refund_request(
            &self.credentials,
            &RefundRequest {
                request_id: call.refund_id.chars().filter(char::is_ascii_alphanumeric).take(32).collect(),
                kind: if call.full { RefundKind::Full } else { RefundKind::Partial },
                txn_ref: call.merchant_ref.clone(),
                amount_vnd: call.amount,
                transaction_no: call.provider_txn_id.clone(),
                transaction_date: call.payment_created_at,
                create_by: call.requested_by.clone(),
                create_date: now(),
                ip_addr: "127.0.0.1".into(),
                order_info: format!("Hoan tien {}", call.merchant_ref),
            },
        )
        .map_err(|e| ProviderError::Refused(e.to_string()))?;
        let resp =
            self.http.post(format!("{}/merchant_webapi/api/transaction", self.base_url)).json(&body).send().await?;
        let answer = read_json(resp).await?;
        let result = vnpay::verify_refund_response(&self.credentials, &answer)
            .map_err(|e| ProviderError::BadAnswer(format!("refund answer not verified: {e}")))?;
        refund_result(result.verdict(), || result.transaction_no.clone().or(Some(result.txn_ref.clone())))
    }

    async fn query(
        &self,
        merchant_ref: &str,
        created_at: DateTime<Utc>,
        _amount: i64,
    ) -> Result<Option<ProviderEvent>, ProviderError> {
        let body = vnpay::querydr_request(
            &self.credentials,
            &QueryDrRequest {
                request_id: uuid::Uuid::new_v4().simple().to_string(),
                txn_ref: merchant_ref.to_string(),
                transaction_date: created_at,
                create_date: now(),
                ip_addr: "127.0.0.1".into(),
                order_info: format!("Query {merchant_ref}"),
            },
        )
        .map_err(|e| ProviderError::Refused(e.to_string()))?;
        let resp =
            self.http.post(format!("{}/merchant_webapi/api/transaction", self.base_url)).json(&body).send().await?;
        let answer = read_json(resp).await?;
        let result = vnpay::verify_querydr_response(&self.credentials, &answer)
            .map_err(|e| ProviderError::BadAnswer(format!("querydr answer not verified: {e}")))?;
        match result.response_code.as_str() {
            "00" => Ok(result.event),
            // Not found at VNPAY: the payer never reached the pay page.
            "91" => Ok(None),
            code => Err(ProviderError::Refused(format!("querydr {code}: {}", result.message))),
        }
    }
}
