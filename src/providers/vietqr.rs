//! VietQR connector: a dynamic NAPAS 247 QR for the exact amount whose purpose carries the
//! notice code. There is no provider to ask: the partner bank's credit notification
//! ([`super::bank`]) confirms the transfer.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::protocol::event::{ProviderEvent, VerifyError};
use super::protocol::vietqr::{self, Service, VietQrRequest};
use super::{Connector, Instructions, ProviderError, RawCallback, StartPayment};
use crate::config::VietQrConfig;

pub struct VietQr {
    pub config: VietQrConfig,
}

#[async_trait]
impl Connector for VietQr {
    fn name(&self) -> &'static str {
        "vietqr"
    }

    async fn start(&self, p: &StartPayment) -> Result<Instructions, ProviderError> {
        let payload = vietqr::payload(&VietQrRequest {
            bin: self.config.bin.clone(),
            account: self.config.account.clone(),
            service: Service::ToAccount,
            amount: Some(p.amount),
            bill_number: Some(p.merchant_ref.clone()),
            purpose: Some(p.notice_code.clone()),
        })
        .map_err(|e| ProviderError::Refused(e.to_string()))?;
        Ok(Instructions::Qr(payload))
    }

    fn verify(&self, _callback: &RawCallback<'_>) -> Result<ProviderEvent, VerifyError> {
        Err(VerifyError::Body("VietQR transfers are confirmed by the partner bank's notification".into()))
    }

    async fn query(&self, _: &str, _: DateTime<Utc>, _: i64) -> Result<Option<ProviderEvent>, ProviderError> {
        Ok(None)
    }
}
