//! What reconciliation posts to the ledger, pure.
//!
//! Invariants:
//! - Settling moves money out of `provider_clearing:<provider>`: the provider's payout (gross
//!   payments − refunds − fees) to `treasury_bank` and its fees to `provider_fees`, so that the
//!   clearing balance of a fully reconciled day is zero.
//! - A run's settlement is one ledger transaction (`settlement:<run id>`); a resolution's are at
//!   most two more (`resolve-hold:<discrepancy id>`: money booked as unexplained in `suspense` or
//!   owed back in `refunds_payable`; `resolve-settle:<discrepancy id>`: the payout). They belong to
//!   the run: when a corrected file supersedes it, all of them are reversed by compensating
//!   transactions that point at them (`corrects`), so the new run starts from the gateway's own
//!   postings and nothing is booked twice; nothing is edited.

use crate::ledger::{
    PROVIDER_FEES, PlanError, PostingPlan, REFUNDS_PAYABLE, SUSPENSE, TREASURY_BANK, Transfer, provider_clearing,
};

use super::matcher::{DiscrepancyClass, ResolutionAction};

/// The transfers that settle `gross` đồng of payments less `refunds` paid back, with `fees`
/// kept by the provider: clearing → treasury bank (the payout), clearing → fees.
pub fn settlement_transfers(provider: &str, gross: i64, refunds: i64, fees: i64) -> Vec<Transfer> {
    let clearing = provider_clearing(provider);
    let payout = gross - refunds - fees;
    let mut transfers = Vec::new();
    if payout > 0 {
        transfers.push(Transfer { debit: TREASURY_BANK.into(), credit: clearing.clone(), amount: payout });
    } else if payout < 0 {
        // The provider took back more than it paid out (refunds): the treasury account paid it.
        transfers.push(Transfer { debit: clearing.clone(), credit: TREASURY_BANK.into(), amount: -payout });
    }
    if fees > 0 {
        transfers.push(Transfer { debit: PROVIDER_FEES.into(), credit: clearing, amount: fees });
    }
    transfers
}

fn total(transfers: &[Transfer]) -> i64 {
    transfers.iter().map(|t| t.amount).sum()
}

/// The settlement of a run, if it moves any money.
pub fn plan_run_settlement(
    run_id: &str,
    provider: &str,
    settlement_date: &str,
    gross: i64,
    refunds: i64,
    fees: i64,
) -> Result<Option<PostingPlan>, PlanError> {
    let transfers = settlement_transfers(provider, gross, refunds, fees);
    if transfers.is_empty() {
        return Ok(None);
    }
    let expected = total(&transfers);
    PostingPlan::new(
        format!("settlement:{run_id}"),
        "settlement",
        format!(
            "{provider} settlement of {settlement_date} (run {run_id}): payments {gross}, refunds {refunds}, fees {fees}"
        ),
        transfers,
        expected,
    )
    .map(Some)
}

/// A compensating transaction that undoes `transfers` of ledger transaction `original`.
pub fn plan_reversal(original: &str, transfers: &[Transfer], why: &str) -> Result<PostingPlan, PlanError> {
    let reversed: Vec<Transfer> = transfers
        .iter()
        .map(|t| Transfer { debit: t.credit.clone(), credit: t.debit.clone(), amount: t.amount })
        .collect();
    let expected = total(&reversed);
    let mut plan = PostingPlan::new(
        format!("reverse:{original}"),
        "reversal",
        format!("reverses {original}: {why}"),
        reversed,
        expected,
    )?;
    plan.corrects = Some(original.to_string());
    Ok(plan)
}

/// Everything known about a discrepancy that its resolution needs.
#[derive(Debug, Clone)]
pub struct ResolutionFacts<'a> {
    pub discrepancy_id: &'a str,
    pub provider: &'a str,
    pub class: DiscrepancyClass,
    pub provider_txn_id: Option<&'a str>,
    /// Which listing of the provider transaction in its file (1 = first).
    pub occurrence: i64,
    pub file_amount: Option<i64>,
    pub file_fee: Option<i64>,
    pub ledger_amount: Option<i64>,
    pub payment_id: Option<&'a str>,
    pub notice_code: Option<&'a str>,
}

/// The postings of a resolution: `hold` books money where it belongs, `settle` moves the
/// provider's payout out of clearing; both are keyed by the discrepancy.
#[derive(Debug, Clone, Default)]
pub struct ResolutionPlan {
    pub hold: Option<PostingPlan>,
    pub settle: Option<PostingPlan>,
}

/// Why a resolution cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolutionError {
    #[error("this discrepancy carries no {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Plans the postings of `action` on a discrepancy (the caller has checked that the action is
/// allowed for its class). `ConfirmPayment` only settles: the confirmation itself is the
/// payment's own posting, made through the payment's state machine.
pub fn plan_resolution(f: &ResolutionFacts<'_>, action: ResolutionAction) -> Result<ResolutionPlan, ResolutionError> {
    let clearing = provider_clearing(f.provider);
    let file_amount = || f.file_amount.ok_or(ResolutionError::Missing("file amount"));
    let settle = |amount: i64| -> Result<Option<PostingPlan>, ResolutionError> {
        let fee = f.file_fee.unwrap_or(0).min(amount);
        let transfers = settlement_transfers(f.provider, amount, 0, fee);
        if transfers.is_empty() {
            return Ok(None);
        }
        let expected = total(&transfers);
        let mut plan = PostingPlan::new(
            format!("resolve-settle:{}", f.discrepancy_id),
            "settlement",
            format!("{} settled by the resolution of discrepancy {}", f.provider, f.discrepancy_id),
            transfers,
            expected,
        )?;
        plan.payment_id = f.payment_id.map(str::to_string);
        plan.notice_code = f.notice_code.map(str::to_string);
        Ok(Some(plan))
    };
    let hold = |key: String, transfer: Transfer, why: &str| -> Result<Option<PostingPlan>, ResolutionError> {
        let amount = transfer.amount;
        let mut plan = PostingPlan::new(
            key,
            "reconciliation_hold",
            format!("{why} (discrepancy {})", f.discrepancy_id),
            vec![transfer],
            amount,
        )?;
        plan.payment_id = f.payment_id.map(str::to_string);
        plan.notice_code = f.notice_code.map(str::to_string);
        Ok(Some(plan))
    };
    let account = match action {
        ResolutionAction::Accept => return Ok(ResolutionPlan::default()),
        ResolutionAction::ConfirmPayment => return Ok(ResolutionPlan { hold: None, settle: settle(file_amount()?)? }),
        ResolutionAction::MoveToSuspense => SUSPENSE,
        ResolutionAction::MarkForRefund => REFUNDS_PAYABLE,
    };
    match f.class {
        DiscrepancyClass::MissingInGateway | DiscrepancyClass::DuplicateInFile => {
            let x = file_amount()?;
            Ok(ResolutionPlan {
                hold: hold(
                    format!("resolve-hold:{}", f.discrepancy_id),
                    Transfer { debit: clearing, credit: account.into(), amount: x },
                    "money the provider collected that no payment accounts for",
                )?,
                settle: settle(x)?,
            })
        }
        DiscrepancyClass::AmountMismatch => {
            let x = file_amount()?;
            let y = f.ledger_amount.ok_or(ResolutionError::Missing("ledger amount"))?;
            let difference = if x > y {
                Transfer { debit: clearing, credit: account.into(), amount: x - y }
            } else {
                Transfer { debit: account.into(), credit: clearing, amount: y - x }
            };
            Ok(ResolutionPlan {
                hold: hold(
                    format!("resolve-hold:{}", f.discrepancy_id),
                    difference,
                    "the difference between the provider's amount and the gateway's",
                )?,
                settle: settle(x)?,
            })
        }
        DiscrepancyClass::StatusMismatch => {
            let y = f.ledger_amount.ok_or(ResolutionError::Missing("ledger amount"))?;
            f.payment_id.ok_or(ResolutionError::Missing("payment"))?;
            Ok(ResolutionPlan {
                hold: hold(
                    format!("resolve-hold:{}", f.discrepancy_id),
                    Transfer { debit: account.into(), credit: clearing, amount: y },
                    "confirmed by the gateway, not collected according to the provider",
                )?,
                settle: None,
            })
        }
        DiscrepancyClass::MissingInFile | DiscrepancyClass::FeeMismatch => Ok(ResolutionPlan::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Net change of `account` (debits − credits) over some plans.
    fn net(account: &str, plans: &[&PostingPlan]) -> i64 {
        plans
            .iter()
            .flat_map(|p| p.transfers.iter())
            .map(|t| {
                if t.debit == account {
                    t.amount
                } else if t.credit == account {
                    -t.amount
                } else {
                    0
                }
            })
            .sum()
    }

    #[test]
    fn a_run_settlement_empties_clearing_of_what_it_settles() {
        let plan = plan_run_settlement("rr_1", "vnpay", "2026-11-26", 10_000_000, 2_000_000, 3_300).unwrap().unwrap();
        assert_eq!(net("provider_clearing:vnpay", &[&plan]), -(10_000_000 - 2_000_000));
        assert_eq!(net(TREASURY_BANK, &[&plan]), 10_000_000 - 2_000_000 - 3_300);
        assert_eq!(net(PROVIDER_FEES, &[&plan]), 3_300);
        // Refunds larger than payments: the treasury account pays the difference.
        let plan = plan_run_settlement("rr_2", "momo", "2026-11-26", 1_000, 5_000, 0).unwrap().unwrap();
        assert_eq!(net("provider_clearing:momo", &[&plan]), 4_000);
        assert!(plan_run_settlement("rr_3", "momo", "2026-11-26", 0, 0, 0).unwrap().is_none());
    }

    #[test]
    fn a_reversal_undoes_exactly_and_points_at_what_it_corrects() {
        let plan = plan_run_settlement("rr_1", "vnpay", "2026-11-26", 500_000, 0, 1_650).unwrap().unwrap();
        let reversal = plan_reversal("lt_1", &plan.transfers, "superseded").unwrap();
        assert_eq!(reversal.corrects.as_deref(), Some("lt_1"));
        for account in ["provider_clearing:vnpay", TREASURY_BANK, PROVIDER_FEES] {
            assert_eq!(net(account, &[&plan, &reversal]), 0, "{account}");
        }
    }

    fn facts(class: DiscrepancyClass, file: Option<i64>, ledger: Option<i64>) -> ResolutionFacts<'static> {
        ResolutionFacts {
            discrepancy_id: "rd_1",
            provider: "vnpay",
            class,
            provider_txn_id: Some("14000001"),
            occurrence: 1,
            file_amount: file,
            file_fee: Some(1_650),
            ledger_amount: ledger,
            payment_id: Some("pay_1"),
            notice_code: Some("TB-2026-AAAAAA"),
        }
    }

    #[test]
    fn every_money_moving_resolution_leaves_clearing_at_zero_for_its_row() {
        let clearing = "provider_clearing:vnpay";
        // Missing in gateway: nothing was in clearing; after hold + settle, still nothing.
        let r = plan_resolution(
            &facts(DiscrepancyClass::MissingInGateway, Some(500_000), None),
            ResolutionAction::MoveToSuspense,
        )
        .unwrap();
        let (hold, settle) = (r.hold.unwrap(), r.settle.unwrap());
        assert_eq!(hold.posting_key, "resolve-hold:rd_1");
        assert_eq!(net(clearing, &[&hold, &settle]), 0);
        assert_eq!(net(SUSPENSE, &[&hold]), -500_000);
        // Amount mismatch, file larger: the ledger had 400,000 in clearing.
        let r = plan_resolution(
            &facts(DiscrepancyClass::AmountMismatch, Some(500_000), Some(400_000)),
            ResolutionAction::MarkForRefund,
        )
        .unwrap();
        let (hold, settle) = (r.hold.unwrap(), r.settle.unwrap());
        assert_eq!(400_000 + net(clearing, &[&hold, &settle]), 0);
        assert_eq!(net(REFUNDS_PAYABLE, &[&hold]), -100_000);
        // File smaller: the shortfall is a debit in suspense.
        let r = plan_resolution(
            &facts(DiscrepancyClass::AmountMismatch, Some(300_000), Some(400_000)),
            ResolutionAction::MoveToSuspense,
        )
        .unwrap();
        assert_eq!(400_000 + net(clearing, &[r.hold.as_ref().unwrap(), r.settle.as_ref().unwrap()]), 0);
        // Status mismatch: the provider never collected what we confirmed.
        let r = plan_resolution(
            &facts(DiscrepancyClass::StatusMismatch, Some(400_000), Some(400_000)),
            ResolutionAction::MoveToSuspense,
        )
        .unwrap();
        assert!(r.settle.is_none());
        assert_eq!(400_000 + net(clearing, &[r.hold.as_ref().unwrap()]), 0);
        // Confirming a lost payment: its own posting puts 500,000 in clearing; the settlement takes it out.
        let r = plan_resolution(
            &facts(DiscrepancyClass::MissingInGateway, Some(500_000), None),
            ResolutionAction::ConfirmPayment,
        )
        .unwrap();
        assert!(r.hold.is_none());
        assert_eq!(500_000 + net(clearing, &[r.settle.as_ref().unwrap()]), 0);
        assert_eq!(r.settle.unwrap().posting_key, "resolve-settle:rd_1");
        // Accepting moves nothing.
        let r =
            plan_resolution(&facts(DiscrepancyClass::FeeMismatch, Some(1), Some(1)), ResolutionAction::Accept).unwrap();
        assert!(r.hold.is_none() && r.settle.is_none());
    }
}
