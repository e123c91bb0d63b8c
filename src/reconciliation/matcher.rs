//! What a settlement-file row says about the gateway's records, pure: the class of each
//! discrepancy, what may be done about it, and what is settled.
//!
//! Invariants:
//! - A row is settled (its money moved from the provider's clearing account to the treasury
//!   account) only when the provider says it succeeded, the gateway confirmed the same record
//!   and both amounts are equal as integers. Everything else is a discrepancy or nothing at all;
//!   nothing is ever settled on a guess.
//! - Only the first successful row of a provider transaction id in a file can match; later ones
//!   (and rows of a payment another active run already settled) are `duplicate_in_file`. Rows
//!   saying a transaction did not succeed never match or settle anything; they are a
//!   `status_mismatch` only when the gateway confirmed that transaction and no successful row of
//!   the file settles it.
//! - Which resolution action is allowed depends only on the class and on whether the row has a
//!   gateway record ([`allowed_actions`]).

use serde::{Deserialize, Serialize};

use super::reader::RowKind;

/// A kind of difference between a settlement file and the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiscrepancyClass {
    /// The provider collected (or paid back) money the gateway has not confirmed, e.g. a lost callback.
    MissingInGateway,
    /// The gateway confirmed money the provider's file does not list.
    MissingInFile,
    /// Both sides know the transaction, with different amounts.
    AmountMismatch,
    /// The provider says the transaction did not succeed; the gateway confirmed it.
    StatusMismatch,
    /// A provider transaction listed again in the same file.
    DuplicateInFile,
    /// The provider charged a fee other than its agreed one (the money is settled as the file says).
    FeeMismatch,
}

impl DiscrepancyClass {
    pub const ALL: [DiscrepancyClass; 6] = [
        DiscrepancyClass::MissingInGateway,
        DiscrepancyClass::MissingInFile,
        DiscrepancyClass::AmountMismatch,
        DiscrepancyClass::StatusMismatch,
        DiscrepancyClass::DuplicateInFile,
        DiscrepancyClass::FeeMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DiscrepancyClass::MissingInGateway => "missing_in_gateway",
            DiscrepancyClass::MissingInFile => "missing_in_file",
            DiscrepancyClass::AmountMismatch => "amount_mismatch",
            DiscrepancyClass::StatusMismatch => "status_mismatch",
            DiscrepancyClass::DuplicateInFile => "duplicate_in_file",
            DiscrepancyClass::FeeMismatch => "fee_mismatch",
        }
    }

    pub fn parse(s: &str) -> Option<DiscrepancyClass> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// How staff resolve a discrepancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionAction {
    /// Confirm the gateway's payment from the provider's evidence (a lost callback), then settle it.
    ConfirmPayment,
    /// Book the unexplained money in `suspense` and settle what the provider paid out.
    MoveToSuspense,
    /// Book the money in `refunds_payable` (to be paid back) and settle what the provider paid out.
    MarkForRefund,
    /// Accept the difference as it is, with a note; no money moves.
    Accept,
}

impl ResolutionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolutionAction::ConfirmPayment => "confirm_payment",
            ResolutionAction::MoveToSuspense => "move_to_suspense",
            ResolutionAction::MarkForRefund => "mark_for_refund",
            ResolutionAction::Accept => "accept",
        }
    }
}

/// The gateway record a row matched, as far as classification needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFacts {
    /// The gateway holds the money as received (payment) or paid back (refund).
    pub confirmed: bool,
    pub amount: i64,
}

/// A file row, as far as classification needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFacts {
    pub kind: RowKind,
    pub success: bool,
    pub amount: i64,
    pub fee: i64,
    /// 1 for the first successful row of its provider transaction id in the file (rows that did not
    /// succeed are not counted).
    pub occurrence: i64,
}

/// The verdict on one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The row's money is settled by the run.
    pub settle: bool,
    pub discrepancy: Option<DiscrepancyClass>,
}

/// Classifies one row against the gateway record it matched (if any). `expected_fee` is the
/// provider's agreed fee for the row's amount, when the mapping says.
pub fn classify(row: &RowFacts, target: Option<&TargetFacts>, expected_fee: Option<i64>) -> Verdict {
    let verdict = |settle, class| Verdict { settle, discrepancy: class };
    if row.occurrence > 1 && row.success {
        return verdict(false, Some(DiscrepancyClass::DuplicateInFile));
    }
    match (target, row.success) {
        (None, true) => verdict(false, Some(DiscrepancyClass::MissingInGateway)),
        (None, false) => verdict(false, None),
        (Some(t), true) if t.confirmed => {
            if t.amount != row.amount {
                verdict(false, Some(DiscrepancyClass::AmountMismatch))
            } else if row.kind == RowKind::Payment && expected_fee.is_some_and(|fee| fee != row.fee) {
                verdict(true, Some(DiscrepancyClass::FeeMismatch))
            } else {
                verdict(true, None)
            }
        }
        (Some(_), true) => verdict(false, Some(DiscrepancyClass::MissingInGateway)),
        (Some(t), false) if t.confirmed => verdict(false, Some(DiscrepancyClass::StatusMismatch)),
        (Some(_), false) => verdict(false, None),
    }
}

/// The actions allowed for a discrepancy. `kind` is the row's kind (payment when the discrepancy
/// has no row); `has_payment` says whether a gateway payment is attached; `file_exceeds_ledger`
/// whether the file's amount is the larger one (amount mismatches).
pub fn allowed_actions(
    class: DiscrepancyClass,
    kind: RowKind,
    has_payment: bool,
    file_exceeds_ledger: bool,
) -> Vec<ResolutionAction> {
    use ResolutionAction::*;
    if kind == RowKind::Refund {
        // Refund rows: the refund itself is handled through the refunds API; here, only notes.
        return vec![Accept];
    }
    match class {
        // The money belongs to that payment: confirm it (or accept). Booking it elsewhere would
        // count it twice once the payment's own callback arrives.
        DiscrepancyClass::MissingInGateway if has_payment => vec![ConfirmPayment, Accept],
        DiscrepancyClass::MissingInGateway | DiscrepancyClass::DuplicateInFile => {
            vec![MoveToSuspense, MarkForRefund, Accept]
        }
        DiscrepancyClass::AmountMismatch if file_exceeds_ledger => vec![MoveToSuspense, MarkForRefund, Accept],
        DiscrepancyClass::AmountMismatch | DiscrepancyClass::StatusMismatch => vec![MoveToSuspense, Accept],
        DiscrepancyClass::MissingInFile | DiscrepancyClass::FeeMismatch => vec![Accept],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(success: bool, amount: i64, fee: i64) -> RowFacts {
        RowFacts { kind: RowKind::Payment, success, amount, fee, occurrence: 1 }
    }

    fn confirmed(amount: i64) -> TargetFacts {
        TargetFacts { confirmed: true, amount }
    }

    #[test]
    fn an_equal_confirmed_row_settles_and_a_different_fee_is_flagged_but_settled() {
        let clean = classify(&row(true, 6_250_000, 1_650), Some(&confirmed(6_250_000)), Some(1_650));
        assert_eq!(clean, Verdict { settle: true, discrepancy: None });
        let fee = classify(&row(true, 6_250_000, 2_000), Some(&confirmed(6_250_000)), Some(1_650));
        assert_eq!(fee, Verdict { settle: true, discrepancy: Some(DiscrepancyClass::FeeMismatch) });
        // No agreed fee: not checked.
        assert_eq!(classify(&row(true, 5, 9), Some(&confirmed(5)), None).discrepancy, None);
    }

    #[test]
    fn every_other_combination_is_a_discrepancy_or_nothing_and_never_settles() {
        let pending = TargetFacts { confirmed: false, amount: 100 };
        let cases = [
            (row(true, 100, 0), None, Some(DiscrepancyClass::MissingInGateway)),
            (row(false, 100, 0), None, None),
            (row(true, 101, 0), Some(confirmed(100)), Some(DiscrepancyClass::AmountMismatch)),
            (row(true, 100, 0), Some(pending.clone()), Some(DiscrepancyClass::MissingInGateway)),
            (row(false, 100, 0), Some(confirmed(100)), Some(DiscrepancyClass::StatusMismatch)),
            (row(false, 100, 0), Some(pending), None),
            (
                RowFacts { occurrence: 2, ..row(true, 100, 0) },
                Some(confirmed(100)),
                Some(DiscrepancyClass::DuplicateInFile),
            ),
        ];
        for (r, target, class) in cases {
            let v = classify(&r, target.as_ref(), Some(0));
            assert_eq!(v, Verdict { settle: false, discrepancy: class }, "{r:?} {target:?}");
        }
    }

    #[test]
    fn refund_fees_are_not_checked() {
        let r = RowFacts { kind: RowKind::Refund, ..row(true, 100, 0) };
        assert_eq!(classify(&r, Some(&confirmed(100)), Some(1_650)), Verdict { settle: true, discrepancy: None });
    }

    #[test]
    fn actions_depend_on_the_class() {
        use ResolutionAction::*;
        let p = RowKind::Payment;
        assert_eq!(allowed_actions(DiscrepancyClass::MissingInGateway, p, true, false), vec![ConfirmPayment, Accept]);
        assert_eq!(
            allowed_actions(DiscrepancyClass::MissingInGateway, p, false, false),
            vec![MoveToSuspense, MarkForRefund, Accept]
        );
        assert!(!allowed_actions(DiscrepancyClass::AmountMismatch, p, true, false).contains(&MarkForRefund));
        assert!(allowed_actions(DiscrepancyClass::AmountMismatch, p, true, true).contains(&MarkForRefund));
        assert_eq!(allowed_actions(DiscrepancyClass::MissingInFile, p, true, false), vec![Accept]);
        assert_eq!(allowed_actions(DiscrepancyClass::FeeMismatch, p, true, false), vec![Accept]);
        assert_eq!(allowed_actions(DiscrepancyClass::DuplicateInFile, RowKind::Refund, false, false), vec![Accept]);
        for c in DiscrepancyClass::ALL {
            assert_eq!(DiscrepancyClass::parse(c.as_str()), Some(c));
        }
    }
}
