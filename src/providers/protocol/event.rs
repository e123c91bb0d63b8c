//! Normalised outcome of a verified provider message, and the errors shared by every connector.
//!
//! Invariants:
//! - A [`ProviderEvent`] is only ever constructed from a message whose signature/MAC has been checked
//!   in constant time against our credentials and whose merchant identifier matched ours; there is no
//!   public path from unverified input to a `ProviderEvent` in this crate.
//! - `amount` is always whole Vietnamese đồng (VND) as `i64`; provider-specific scaling (VNPAY's ×100)
//!   has been undone exactly (never rounded) before it reaches this type.
//! - `paid_at` is UTC; it is `Some` only for [`Outcome::Succeeded`].
//! - Nothing here performs I/O or reads the clock.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Provider identifier for VNPAY.
pub const PROVIDER_VNPAY: &str = "vnpay";
/// Provider identifier for MoMo.
pub const PROVIDER_MOMO: &str = "momo";
/// Provider identifier for ZaloPay.
pub const PROVIDER_ZALOPAY: &str = "zalopay";
/// Provider identifier for a bank transfer (VietQR / NAPAS 247 credit notice).
pub const PROVIDER_BANK: &str = "bank";

/// The normalised, verified outcome of one provider message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderEvent {
    /// `"vnpay"`, `"momo"`, `"zalopay"` or `"bank"` (see the `PROVIDER_*` constants).
    pub provider: &'static str,
    /// Our own reference as we sent it: `vnp_TxnRef` / MoMo `orderId` / ZaloPay `app_trans_id` /
    /// bank-transfer purpose.
    pub merchant_ref: String,
    /// The provider's transaction id, when it reported one.
    pub provider_txn_id: Option<String>,
    /// Whole đồng.
    pub amount: i64,
    pub outcome: Outcome,
    /// The provider's raw result code (e.g. VNPAY `vnp_ResponseCode`, MoMo `resultCode`).
    pub provider_code: String,
    /// When the provider says the payment completed; `Some` only for [`Outcome::Succeeded`].
    pub paid_at: Option<DateTime<Utc>>,
}

/// What the provider says happened to the payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed { reason: String },
    Pending,
}

impl Outcome {
    /// `true` for [`Outcome::Succeeded`].
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded)
    }
}

/// What a provider's answer to a refund request says about the refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundVerdict {
    /// The provider made the refund.
    Made,
    /// The provider may have made it, or may still make it (still processing, a duplicate of a
    /// request it already has, an unspecified error, an answer without a result): the refund must
    /// not be sent again, nor its amount released, until its outcome is known.
    Undecided(String),
    /// The provider says it did not make it.
    Refused(String),
}

/// Why an inbound provider message was rejected. Never contains secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature/MAC does not match what our key computes, or is not valid hex.
    #[error("invalid signature")]
    BadSignature,
    /// A required field is absent or empty.
    #[error("missing field `{0}`")]
    Missing(String),
    /// A field is present but unusable.
    #[error("malformed field `{0}`: {1}")]
    Malformed(String, String),
    /// The amount is negative, zero, overflows, or is not exactly representable in whole đồng.
    #[error("invalid amount in `{0}`: {1}")]
    InvalidAmount(String, String),
    /// The message is correctly signed but addressed to a different merchant/partner/app id.
    #[error("message is addressed to a different merchant")]
    WrongMerchant,
    /// A field occurs more than once where exactly one is expected.
    #[error("duplicate field `{0}`")]
    Duplicate(String),
    /// The body is not the expected JSON / query shape.
    #[error("malformed body: {0}")]
    Body(String),
}

impl VerifyError {
    pub(crate) fn missing(field: &str) -> Self {
        VerifyError::Missing(field.to_owned())
    }
    pub(crate) fn malformed(field: &str, why: impl Into<String>) -> Self {
        VerifyError::Malformed(field.to_owned(), why.into())
    }
    pub(crate) fn amount(field: &str, why: impl Into<String>) -> Self {
        VerifyError::InvalidAmount(field.to_owned(), why.into())
    }
}

/// Why an outbound request could not be built from our own inputs (a programming/config error,
/// never a provider problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
    #[error("invalid field `{0}`: {1}")]
    InvalidField(String, String),
}

impl BuildError {
    pub(crate) fn field(field: &str, why: impl Into<String>) -> Self {
        BuildError::InvalidField(field.to_owned(), why.into())
    }
}

/// Parse a whole-number amount written in ASCII decimal digits only (no sign, no spaces, no decimal
/// point). Used by every connector so that `"+1"`, `"-1"`, `" 1"`, `"1.0"` and overflow are rejected
/// the same way.
pub(crate) fn parse_digits_i64(field: &str, s: &str) -> Result<i64, VerifyError> {
    if s.is_empty() {
        return Err(VerifyError::missing(field));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::amount(field, "not an unsigned decimal integer"));
    }
    s.parse::<i64>().map_err(|_| VerifyError::amount(field, "overflows i64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_parser_rejects_signs_and_overflow() {
        assert_eq!(parse_digits_i64("a", "123"), Ok(123));
        assert!(parse_digits_i64("a", "-1").is_err());
        assert!(parse_digits_i64("a", "+1").is_err());
        assert!(parse_digits_i64("a", "1.0").is_err());
        assert!(parse_digits_i64("a", "").is_err());
        assert!(parse_digits_i64("a", "99999999999999999999").is_err());
        assert_eq!(parse_digits_i64("a", "9223372036854775807"), Ok(i64::MAX));
    }

    #[test]
    fn errors_display() {
        assert_eq!(VerifyError::BadSignature.to_string(), "invalid signature");
        assert_eq!(VerifyError::missing("x").to_string(), "missing field `x`");
        assert_eq!(VerifyError::malformed("x", "bad").to_string(), "malformed field `x`: bad");
        assert_eq!(BuildError::field("x", "bad").to_string(), "invalid field `x`: bad");
    }
}
