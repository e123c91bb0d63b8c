//! Partner-bank credit notifications (`POST /callbacks/bank/{bank}`), signed with our
//! `Paygate-Signature` scheme; several secrets per bank may be active at once (rotation).
//!
//! Invariant: a notification is parsed only after its signature verifies within the 300 s
//! tolerance; amounts must be whole positive đồng in VND.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

use super::protocol::signature::{self, DEFAULT_TOLERANCE_SECS};
use crate::config::BankConfig;

pub struct Banks {
    secrets: BTreeMap<String, Vec<SecretString>>,
}

/// A verified credit to our collection account.
#[derive(Debug, Clone, Deserialize)]
pub struct Credit {
    pub event_id: String,
    pub account: String,
    pub amount: i64,
    pub currency: String,
    /// The transfer text, which should carry a notice code.
    pub description: String,
    pub transaction_id: String,
    pub credited_at: chrono::DateTime<chrono::FixedOffset>,
}

#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("unknown bank")]
    UnknownBank,
    #[error("signature: {0}")]
    Signature(String),
    #[error("body: {0}")]
    Body(String),
}

impl Banks {
    pub fn from_config(banks: &BTreeMap<String, BankConfig>) -> Banks {
        Banks { secrets: banks.iter().map(|(k, v)| (k.clone(), v.secrets.clone())).collect() }
    }

    pub fn knows(&self, bank: &str) -> bool {
        self.secrets.contains_key(bank)
    }

    /// Verifies and parses a notification from `bank`.
    pub fn verify(&self, bank: &str, header: Option<&str>, body: &[u8], now_unix: i64) -> Result<Credit, BankError> {
        let secrets = self.secrets.get(bank).ok_or(BankError::UnknownBank)?;
        let header = header.ok_or_else(|| BankError::Signature("missing Paygate-Signature header".into()))?;
        signature::verify(header, body, secrets, now_unix, DEFAULT_TOLERANCE_SECS)
            .map_err(|e| BankError::Signature(e.to_string()))?;
        let credit: Credit = serde_json::from_slice(body).map_err(|e| BankError::Body(e.to_string()))?;
        if credit.currency != "VND" {
            return Err(BankError::Body(format!("currency {:?} is not VND", credit.currency)));
        }
        if credit.amount <= 0 {
            return Err(BankError::Body("amount must be a positive whole number of đồng".into()));
        }
        if credit.transaction_id.is_empty() || credit.transaction_id.len() > 100 {
            return Err(BankError::Body("transaction_id must be 1 to 100 characters".into()));
        }
        Ok(credit)
    }
}

/// Finds a notice code in free transfer text: banks drop or change hyphens and case, so
/// `tb 2026 4q7k9m`, `TB20264Q7K9M` and `TB-2026-4Q7K9M` all match.
pub fn find_notice_code(description: &str) -> Option<crate::obligations::NoticeCode> {
    let compact: String = description.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_uppercase();
    let bytes = compact.as_bytes();
    (0..bytes.len().saturating_sub(11)).find_map(|i| {
        let window = &compact[i..i + 12];
        if !window.starts_with("TB") {
            return None;
        }
        let candidate = format!("TB-{}-{}", &window[2..6], &window[6..12]);
        crate::obligations::NoticeCode::parse(&candidate).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_codes_are_found_in_transfer_text() {
        let code = crate::obligations::NoticeCode::generate(2026, &mut rand::rng()).unwrap().to_string();
        let compact = code.replace('-', "");
        for text in [
            format!("CK {code} nop tien"),
            format!("NGUYEN VAN A chuyen tien {}", compact.to_lowercase()),
            format!("{} thue dat", code.replace('-', " ")),
        ] {
            assert_eq!(find_notice_code(&text).map(|c| c.to_string()), Some(code.clone()), "{text}");
        }
        assert!(find_notice_code("no code here TB2026").is_none());
    }
}
