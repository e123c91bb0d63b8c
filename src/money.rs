//! Money in whole Vietnamese đồng, and the one place where exact amounts become whole đồng.
//!
//! Invariants:
//! - A [`Vnd`] always holds a whole number of đồng in `0..=Vnd::MAX_AMOUNT`; it is never
//!   negative and never a float. Arithmetic on it is checked and fails instead of wrapping.
//! - Serialised as a plain JSON/TOML integer (`15000000`); deserialising enforces the range.
//! - [`round_vnd_with`] is the only function that turns an exact `Decimal` into `Vnd`;
//!   [`round_vnd`] is it with the default mode (half away from zero). Nothing else rounds money.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// An amount of money in whole đồng, `0..=Vnd::MAX_AMOUNT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Vnd(i64);

/// Why an amount cannot be a [`Vnd`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The amount is below zero.
    #[error("amount is negative: {0}")]
    Negative(String),
    /// The amount is above [`Vnd::MAX_AMOUNT`] (or overflowed while computing it).
    #[error("amount exceeds the cap of 10^15 đồng: {0}")]
    Overflow(String),
}

impl Vnd {
    /// Zero đồng.
    pub const ZERO: Vnd = Vnd(0);
    /// Sanity cap: 10^15 đồng (one million billion). No single obligation, payment or
    /// total may exceed it; anything larger is a data error.
    pub const MAX_AMOUNT: Vnd = Vnd(1_000_000_000_000_000);

    /// Builds an amount, refusing negatives and amounts above the cap.
    pub fn new(dong: i64) -> Result<Vnd, MoneyError> {
        if dong < 0 {
            Err(MoneyError::Negative(dong.to_string()))
        } else if dong > Self::MAX_AMOUNT.0 {
            Err(MoneyError::Overflow(dong.to_string()))
        } else {
            Ok(Vnd(dong))
        }
    }

    /// The amount in đồng.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The amount as an exact decimal.
    pub fn to_decimal(self) -> Decimal {
        Decimal::from(self.0)
    }

    /// `self + other`, failing above the cap.
    pub fn checked_add(self, other: Vnd) -> Result<Vnd, MoneyError> {
        let sum =
            self.0.checked_add(other.0).ok_or_else(|| MoneyError::Overflow(format!("{} + {}", self.0, other.0)))?;
        Vnd::new(sum)
    }

    /// `self - other`, failing below zero.
    pub fn checked_sub(self, other: Vnd) -> Result<Vnd, MoneyError> {
        Vnd::new(self.0 - other.0)
    }

    /// Sum of amounts, failing above the cap.
    pub fn checked_sum<I: IntoIterator<Item = Vnd>>(items: I) -> Result<Vnd, MoneyError> {
        items.into_iter().try_fold(Vnd::ZERO, |acc, v| acc.checked_add(v))
    }
}

impl TryFrom<i64> for Vnd {
    type Error = MoneyError;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Vnd::new(v)
    }
}

impl From<Vnd> for i64 {
    fn from(v: Vnd) -> i64 {
        v.0
    }
}

/// Vietnamese grouping: `15.000.000 đ`.
impl fmt::Display for Vnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 3);
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push('.');
            }
            out.push(ch);
        }
        write!(f, "{out} đ")
    }
}

/// How an exact amount becomes whole đồng. The default, and the rule unless a rule table
/// says otherwise, is half away from zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    /// 0.5 → 1 (the default).
    #[default]
    HalfAwayFromZero,
    /// 0.5 → 0, 1.5 → 2 (banker's rounding).
    HalfEven,
    /// Truncate: 0.9 → 0.
    Down,
    /// Any fraction rounds up: 0.1 → 1.
    Up,
}

impl RoundingMode {
    fn strategy(self) -> RoundingStrategy {
        match self {
            RoundingMode::HalfAwayFromZero => RoundingStrategy::MidpointAwayFromZero,
            RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
            RoundingMode::Down => RoundingStrategy::ToZero,
            RoundingMode::Up => RoundingStrategy::AwayFromZero,
        }
    }
}

/// Rounds an exact, non-negative amount to whole đồng, half away from zero.
pub fn round_vnd(exact: Decimal) -> Result<Vnd, MoneyError> {
    round_vnd_with(exact, RoundingMode::HalfAwayFromZero)
}

/// Rounds an exact, non-negative amount to whole đồng with the given mode.
/// Fails for negative input and for results above [`Vnd::MAX_AMOUNT`].
pub fn round_vnd_with(exact: Decimal, mode: RoundingMode) -> Result<Vnd, MoneyError> {
    if exact.is_sign_negative() && !exact.is_zero() {
        return Err(MoneyError::Negative(exact.to_string()));
    }
    let rounded = exact.round_dp_with_strategy(0, mode.strategy());
    if rounded > Vnd::MAX_AMOUNT.to_decimal() {
        return Err(MoneyError::Overflow(exact.to_string()));
    }
    // In range, so it fits an i64.
    let dong = i64::try_from(rounded).map_err(|_| MoneyError::Overflow(exact.to_string()))?;
    Vnd::new(dong)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(round_vnd(dec!(0.5)).unwrap(), Vnd(1));
        assert_eq!(round_vnd(dec!(1.5)).unwrap(), Vnd(2));
        assert_eq!(round_vnd(dec!(2.5)).unwrap(), Vnd(3));
        assert_eq!(round_vnd(dec!(2.4999)).unwrap(), Vnd(2));
        assert_eq!(round_vnd(dec!(0)).unwrap(), Vnd(0));
    }

    #[test]
    fn other_modes() {
        assert_eq!(round_vnd_with(dec!(2.5), RoundingMode::HalfEven).unwrap(), Vnd(2));
        assert_eq!(round_vnd_with(dec!(2.9), RoundingMode::Down).unwrap(), Vnd(2));
        assert_eq!(round_vnd_with(dec!(2.1), RoundingMode::Up).unwrap(), Vnd(3));
    }

    #[test]
    fn rejects_negative_and_overflow() {
        assert!(matches!(round_vnd(dec!(-0.4)), Err(MoneyError::Negative(_))));
        assert!(matches!(round_vnd(dec!(1000000000000000.5)), Err(MoneyError::Overflow(_))));
        assert_eq!(round_vnd(dec!(1000000000000000.4)).unwrap(), Vnd::MAX_AMOUNT);
        assert!(Vnd::MAX_AMOUNT.checked_add(Vnd(1)).is_err());
        assert!(Vnd(1).checked_sub(Vnd(2)).is_err());
        assert_eq!(Vnd(5).checked_sub(Vnd(2)).unwrap(), Vnd(3));
    }

    #[test]
    fn display_and_serde() {
        assert_eq!(Vnd(15_000_000).to_string(), "15.000.000 đ");
        assert_eq!(Vnd(999).to_string(), "999 đ");
        assert_eq!(Vnd(0).to_string(), "0 đ");
        assert_eq!(Vnd(1_000).to_string(), "1.000 đ");
        assert_eq!(serde_json::to_string(&Vnd(75_000_000)).unwrap(), "75000000");
        assert_eq!(serde_json::from_str::<Vnd>("42").unwrap(), Vnd(42));
        assert!(serde_json::from_str::<Vnd>("-1").is_err());
        assert!(serde_json::from_str::<Vnd>("1000000000000001").is_err());
    }
}
