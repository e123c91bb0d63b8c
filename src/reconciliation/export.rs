//! The treasury export: what was settled on a day, per budget code and obligation kind.
//!
//! Invariants: the amounts come from the ledger postings of the payments and refunds that the
//! day's active runs (and their resolutions) settled, so they tie to the ledger; the totals are
//! the sums of the lines; the CSV and the JSON carry the same lines.

use chrono::NaiveDate;
use serde::Serialize;

use crate::store::reconciliation::{ExportLine, RunRecord};

/// One provider's settlement of the day.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExportRun {
    pub provider: String,
    pub run_id: String,
    pub settled_gross: i64,
    pub settled_refunds: i64,
    pub settled_fees: i64,
    /// What the provider paid into the treasury account for the run: gross − refunds − fees.
    pub payout: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TreasuryExport {
    pub date: String,
    /// Per budget code: what the settled payments owed the treasury under it.
    pub lines: Vec<ExportLine>,
    pub total_amount: i64,
    pub total_refunded: i64,
    pub total_net: i64,
    /// The active runs of the day.
    pub runs: Vec<ExportRun>,
}

pub fn build(date: NaiveDate, lines: Vec<ExportLine>, runs: Vec<RunRecord>) -> TreasuryExport {
    let total_amount = lines.iter().map(|l| l.amount).sum();
    let total_refunded = lines.iter().map(|l| l.refunded).sum();
    let total_net = lines.iter().map(|l| l.net).sum();
    let runs = runs
        .into_iter()
        .map(|r| ExportRun {
            payout: r.settled_gross - r.settled_refunds - r.settled_fees,
            provider: r.provider,
            run_id: r.id,
            settled_gross: r.settled_gross,
            settled_refunds: r.settled_refunds,
            settled_fees: r.settled_fees,
        })
        .collect();
    TreasuryExport { date: date.to_string(), lines, total_amount, total_refunded, total_net, runs }
}

/// `settlement_date,budget_code,kinds,payments,amount,refunded,net`, one line per budget code
/// (kinds separated by `;`).
pub fn to_csv(export: &TreasuryExport) -> Result<String, csv::Error> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    w.write_record(["settlement_date", "budget_code", "kinds", "payments", "amount", "refunded", "net"])?;
    for l in &export.lines {
        w.write_record([
            export.date.clone(),
            l.budget_code.clone(),
            l.kinds.join(";"),
            l.payments.to_string(),
            l.amount.to_string(),
            l.refunded.to_string(),
            l.net.to_string(),
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_the_sums_of_the_lines_and_the_csv_carries_every_line() {
        let line = |code: &str, amount: i64, refunded: i64| ExportLine {
            budget_code: code.into(),
            kinds: vec!["registration_fee".into()],
            payments: 2,
            amount,
            refunded,
            net: amount - refunded,
        };
        let export = build(
            NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(),
            vec![line("757-2801", 1_000_000, 0), line("757-1006", 5_000_000, 250_000)],
            vec![],
        );
        assert_eq!((export.total_amount, export.total_refunded, export.total_net), (6_000_000, 250_000, 5_750_000));
        let csv = to_csv(&export).unwrap();
        assert_eq!(
            csv,
            "settlement_date,budget_code,kinds,payments,amount,refunded,net\r\n\
             2026-11-26,757-2801,registration_fee,2,1000000,0,1000000\r\n\
             2026-11-26,757-1006,registration_fee,2,5000000,250000,4750000\r\n"
        );
    }
}
