//! Land-related financial obligations: versioned rule tables, pure calculators, notice codes.
//!
//! Invariants: nothing in this module performs I/O or reads the clock; every number that a
//! decree or a province can change lives in a rule table (`config/rules/*.toml`), with its
//! legal basis and an UNCONFIRMED/SAMPLE flag, never in code. Amounts are whole đồng
//! ([`crate::money::Vnd`]), rounded once per line by [`crate::money::round_vnd_with`].
//!
//! Entry points: [`RuleBook::from_sources`] / [`RuleBook::shipped`], [`QuoteRequest::from_json`],
//! [`calculate`], [`late_payment_interest`], [`NoticeCode`].

mod calculators;
mod kinds;
pub mod notice_code;
mod request;
mod rules;

pub use calculators::{AppliedExemption, Calculation, ObligationLine, calculate, late_payment_interest};
pub use kinds::{LandCategory, ObligationKind, PayerType, PreviousTenure, Relationship, TransferType};
pub use notice_code::{NoticeCode, NoticeCodeError};
pub use request::{CalcError, CalcErrorCode, ExemptionClaim, Parcel, QuoteItem, QuoteRequest};
pub use rules::{Jurisdiction, LandType, NATIONAL, Rule, RuleBook, RuleError};

#[cfg(test)]
mod tests;
