//! The ledger's rules, pure: the chart of accounts, what to post for each money event, and the
//! hash chain.
//!
//! Invariants:
//! - Money is whole đồng; every posting is a *transfer* of a positive amount from one account
//!   (debit) to another (credit), so every ledger transaction balances by construction — and
//!   [`PostingPlan::new`] also checks that a plan's transfers add up to the money it accounts for.
//! - Nothing is ever edited: a correction is a new transaction that `corrects` an earlier one.
//! - The chain: each sealed transfer has a gap-free `seq` and
//!   `hash = SHA-256(prev_hash ‖ canonical bytes)`, starting from [`GENESIS`]. On PostgreSQL
//!   sealing happens after the transfer committed (see `store::ledger`), in its own short
//!   transaction, so the chain is not a global lock on the path that confirms payments:
//!   confirmations only insert rows, and one sealer round chains thousands of them at once. On
//!   SQLite, where every write already holds the one write lock, a payment batch chains its own
//!   transfers before it commits.

use sha2::{Digest, Sha256};

/// `prev_hash` of the first sealed transfer.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub const SUSPENSE: &str = "suspense";
pub const REFUNDS_PAYABLE: &str = "refunds_payable";
pub const TREASURY_BANK: &str = "treasury_bank";
pub const PROVIDER_FEES: &str = "provider_fees";

/// Money held by a provider, awaiting settlement.
pub fn provider_clearing(provider: &str) -> String {
    format!("provider_clearing:{provider}")
}

/// Owed to the State Treasury under one budget code (one per obligation kind).
pub fn treasury_payable(budget_code: &str) -> String {
    format!("treasury_payable:{budget_code}")
}

/// The accounts `plans` move money between, each once, in name order: the order every writer
/// creates accounts in, so two transactions creating the same ones cannot deadlock.
pub fn accounts_in_order<'a>(plans: impl IntoIterator<Item = &'a PostingPlan>) -> Vec<&'a str> {
    let accounts: std::collections::BTreeSet<&str> = plans
        .into_iter()
        .flat_map(|p| p.transfers.iter().flat_map(|t| [t.debit.as_str(), t.credit.as_str()]))
        .collect();
    accounts.into_iter().collect()
}

/// The account kind, from its name.
pub fn account_kind(name: &str) -> &'static str {
    match name.split_once(':').map(|(k, _)| k).unwrap_or(name) {
        "provider_clearing" => "provider_clearing",
        "treasury_payable" => "treasury_payable",
        "treasury_bank" => "treasury_bank",
        "provider_fees" => "provider_fees",
        "refunds_payable" => "refunds_payable",
        _ => "suspense",
    }
}

/// One leg: `amount` moves from `debit` to `credit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub debit: String,
    pub credit: String,
    pub amount: i64,
}

/// A ledger transaction to post, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostingPlan {
    /// Unique per money event (`confirm:<payment>`…): the database refuses a second posting.
    pub posting_key: String,
    pub kind: &'static str,
    pub payment_id: Option<String>,
    pub notice_code: Option<String>,
    pub corrects: Option<String>,
    pub memo: String,
    pub transfers: Vec<Transfer>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("a transfer of {0} đồng: amounts must be positive")]
    NotPositive(i64),
    #[error("a transfer from {0} to itself")]
    SameAccount(String),
    #[error("the transfers add up to {actual} đồng, not the {expected} đồng they account for")]
    DoesNotTie { expected: i64, actual: i64 },
    #[error("a posting needs at least one transfer")]
    Empty,
}

impl PostingPlan {
    /// Checks every transfer and that together they account for exactly `expected` đồng.
    pub fn new(
        posting_key: String,
        kind: &'static str,
        memo: String,
        transfers: Vec<Transfer>,
        expected: i64,
    ) -> Result<PostingPlan, PlanError> {
        if transfers.is_empty() {
            return Err(PlanError::Empty);
        }
        let mut total: i64 = 0;
        for t in &transfers {
            if t.amount <= 0 {
                return Err(PlanError::NotPositive(t.amount));
            }
            if t.debit == t.credit {
                return Err(PlanError::SameAccount(t.debit.clone()));
            }
            total = total.checked_add(t.amount).ok_or(PlanError::DoesNotTie { expected, actual: i64::MAX })?;
        }
        if total != expected {
            return Err(PlanError::DoesNotTie { expected, actual: total });
        }
        Ok(PostingPlan { posting_key, kind, payment_id: None, notice_code: None, corrects: None, memo, transfers })
    }

    pub fn for_payment(mut self, payment_id: &str, notice_code: &str) -> PostingPlan {
        self.payment_id = Some(payment_id.to_string());
        self.notice_code = Some(notice_code.to_string());
        self
    }
}

/// What a confirmed payment paid for.
#[derive(Debug, Clone)]
pub struct Confirmation<'a> {
    pub payment_id: &'a str,
    pub notice_code: &'a str,
    pub provider: &'a str,
    pub amount: i64,
    /// The notice's lines: (budget code, amount).
    pub lines: Vec<(String, i64)>,
    /// Late interest in the amount, with its budget code.
    pub interest: Option<(String, i64)>,
}

/// Postings for a payment that paid its notice: from the provider's clearing account to the
/// treasury, one leg per budget code (lines with the same code are merged).
pub fn plan_payment(c: &Confirmation<'_>) -> Result<PostingPlan, PlanError> {
    let clearing = provider_clearing(c.provider);
    let mut by_code: Vec<(String, i64)> = Vec::new();
    for (code, amount) in c.lines.iter().chain(c.interest.iter()) {
        if *amount == 0 {
            continue;
        }
        match by_code.iter_mut().find(|(k, _)| k == code) {
            Some((_, sum)) => *sum = sum.checked_add(*amount).ok_or(PlanError::NotPositive(*amount))?,
            None => by_code.push((code.clone(), *amount)),
        }
    }
    let transfers = by_code
        .into_iter()
        .map(|(code, amount)| Transfer { debit: clearing.clone(), credit: treasury_payable(&code), amount })
        .collect();
    Ok(PostingPlan::new(
        format!("confirm:{}", c.payment_id),
        "payment_confirmed",
        format!("payment {} of notice {} confirmed by {}", c.payment_id, c.notice_code, c.provider),
        transfers,
        c.amount,
    )?
    .for_payment(c.payment_id, c.notice_code))
}

/// Postings for money we cannot attribute to what is owed (an over-payment, or a success after
/// the payment ended): from the provider's clearing account to suspense, to be refunded.
pub fn plan_suspense(c: &Confirmation<'_>, reason: &str) -> Result<PostingPlan, PlanError> {
    Ok(PostingPlan::new(
        format!("suspense:{}", c.payment_id),
        "suspense",
        format!("payment {} of notice {}: {reason}; held for refund", c.payment_id, c.notice_code),
        vec![Transfer { debit: provider_clearing(c.provider), credit: SUSPENSE.into(), amount: c.amount }],
        c.amount,
    )?
    .for_payment(c.payment_id, c.notice_code))
}

/// Postings for a refund the provider confirmed: money leaves the provider's clearing account
/// back to the payer. It reduces what was held in suspense (over-payment, late money) or, for a
/// payment that paid its notice, what is owed to the treasury — line by line in the notice's
/// order, interest last.
pub fn plan_refund(
    refund_id: &str,
    c: &Confirmation<'_>,
    amount: i64,
    already_refunded: i64,
    from_suspense: bool,
) -> Result<PostingPlan, PlanError> {
    let clearing = provider_clearing(c.provider);
    let transfers = if from_suspense {
        vec![Transfer { debit: SUSPENSE.into(), credit: clearing, amount }]
    } else {
        // Skip what earlier refunds took, then take `amount` from the following lines.
        let mut skip = already_refunded;
        let mut left = amount;
        let mut out = Vec::new();
        for (code, line) in c.lines.iter().chain(c.interest.iter()) {
            let mut available = *line;
            let skipped = skip.min(available);
            skip -= skipped;
            available -= skipped;
            let take = left.min(available);
            if take > 0 {
                out.push(Transfer { debit: treasury_payable(code), credit: clearing.clone(), amount: take });
                left -= take;
            }
        }
        out
    };
    Ok(PostingPlan::new(
        format!("refund:{refund_id}"),
        "refund",
        format!("refund {refund_id} of payment {}", c.payment_id),
        transfers,
        amount,
    )?
    .for_payment(c.payment_id, c.notice_code))
}

/// The fields of a sealed transfer that its hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedTransfer {
    pub transfer_id: i64,
    pub transaction_id: String,
    pub posting_key: String,
    pub kind: String,
    pub payment_id: Option<String>,
    pub notice_code: Option<String>,
    pub corrects: Option<String>,
    pub debit: String,
    pub credit: String,
    pub amount: i64,
    /// Microseconds since the epoch, UTC.
    pub created_at_micros: i64,
    /// The ledger transaction's memo and time (microseconds since the epoch, UTC): what the
    /// entry says it was for, and when it was posted, are history too.
    pub memo: String,
    pub transaction_created_at_micros: i64,
}

impl ChainedTransfer {
    /// Canonical bytes: versioned, `|`-separated, with lengths so no two records share bytes.
    /// Version 2 added the ledger transaction's memo and time (v1 left them out, so a superuser
    /// could have rewritten either unseen).
    ///
    /// Written into one buffer, with no string per field: sealing makes one per transfer, tens of
    /// thousands a second under load.
    pub fn canonical(&self) -> String {
        use std::fmt::Write;
        fn field(out: &mut String, s: &str) {
            let _ = write!(out, "|{}:{s}", s.len());
        }
        fn opt(out: &mut String, s: &Option<String>) {
            match s {
                Some(s) => field(out, s),
                None => out.push_str("|-"),
            }
        }
        let mut out = String::with_capacity(256);
        // Writing to a String cannot fail.
        let _ = write!(out, "v2|{}", self.transfer_id);
        field(&mut out, &self.transaction_id);
        field(&mut out, &self.posting_key);
        field(&mut out, &self.kind);
        opt(&mut out, &self.payment_id);
        opt(&mut out, &self.notice_code);
        opt(&mut out, &self.corrects);
        field(&mut out, &self.debit);
        field(&mut out, &self.credit);
        let _ = write!(out, "|{}|{}", self.amount, self.created_at_micros);
        field(&mut out, &self.memo);
        let _ = write!(out, "|{}", self.transaction_created_at_micros);
        out
    }
}

/// `SHA-256(prev_hash ‖ canonical bytes)`, lowercase hex.
pub fn chain_hash(prev_hash: &str, t: &ChainedTransfer) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(t.canonical().as_bytes());
    hex::encode(h.finalize())
}

/// A sealed link as stored.
#[derive(Debug, Clone)]
pub struct Seal {
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
    pub transfer: ChainedTransfer,
}

/// The first link that does not match, if any.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BrokenLink {
    pub seq: i64,
    pub transfer_id: i64,
    pub reason: String,
}

/// Walks sealed links in `seq` order from `prev` (the hash before the first of them) and
/// returns the hash at the end, or the first broken link.
pub fn verify_links(prev: &str, expected_seq: i64, links: &[Seal]) -> Result<(String, i64), BrokenLink> {
    let mut prev = prev.to_string();
    let mut seq = expected_seq;
    for link in links {
        let broken = |reason: String| BrokenLink { seq: link.seq, transfer_id: link.transfer.transfer_id, reason };
        if link.seq != seq {
            return Err(broken(format!("sequence jumps from {} to {}", seq - 1, link.seq)));
        }
        if link.prev_hash != prev {
            return Err(broken("its prev_hash is not the previous link's hash".into()));
        }
        let recomputed = chain_hash(&prev, &link.transfer);
        if recomputed != link.hash {
            return Err(broken("the transfer's content does not match its hash (altered?)".into()));
        }
        prev = link.hash.clone();
        seq += 1;
    }
    Ok((prev, seq))
}

/// A link's hash kept outside the database — the `head_seq` and `head` of an earlier verify,
/// written `SEQ:HASH` — that the chain must still hold. The links cannot show that links after
/// them were deleted (a chain cut short still verifies); an anchor taken before the cut does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: i64,
    /// 64 lowercase hexadecimal digits.
    pub hash: String,
}

impl std::str::FromStr for Anchor {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Anchor, Self::Err> {
        const SHAPE: &str = "must be SEQ:HASH, the head_seq and head of an earlier verify";
        let (seq, hash) = s.split_once(':').ok_or(SHAPE)?;
        let seq = match seq.parse::<i64>() {
            Ok(n) if n >= 1 && seq.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err("SEQ must be a whole number from 1"),
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("HASH must be 64 hexadecimal digits");
        }
        Ok(Anchor { seq, hash: hash.to_ascii_lowercase() })
    }
}

/// Whether the chain still has an anchor's hash at its seq.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AnchorCheck {
    pub seq: i64,
    pub hash: String,
    /// The verified chain has `hash` at `seq`.
    pub held: bool,
    pub detail: String,
}

impl Anchor {
    /// Checks the anchor against a verified chain: `found` is the hash of its link at the
    /// anchor's seq, if the verified part reaches it; `verified_through` the last seq verified;
    /// `broken_at` the seq where the chain stopped verifying, if it did.
    pub fn check(&self, found: Option<&str>, verified_through: i64, broken_at: Option<i64>) -> AnchorCheck {
        let (held, detail) = match (found, broken_at) {
            (Some(h), _) if h == self.hash => (true, format!("seq {} still has this hash", self.seq)),
            (Some(h), _) => (
                false,
                format!(
                    "seq {} has hash {h}: the chain was rewritten at or before it since the anchor was taken",
                    self.seq
                ),
            ),
            (None, Some(b)) => (false, format!("not reached: the chain stops verifying at seq {b}")),
            (None, None) => (
                false,
                format!(
                    "the chain ends at seq {verified_through}: links were removed from its end since the anchor was taken \
                     (or the anchor is from another ledger)"
                ),
            ),
        };
        AnchorCheck { seq: self.seq, hash: self.hash.clone(), held, detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_is_seq_colon_hash_and_holds_only_where_the_chain_has_that_hash() {
        let h = "AB".repeat(32);
        let anchor: Anchor = format!("6:{h}").parse().unwrap();
        assert_eq!(anchor, Anchor { seq: 6, hash: "ab".repeat(32) });
        for bad in [
            "",
            "6",
            &format!("0:{h}"),
            &format!("-1:{h}"),
            &format!("+6:{h}"),
            "6:abc",
            &format!("6:{}", "g".repeat(64)),
        ] {
            assert!(bad.parse::<Anchor>().is_err(), "{bad:?} parsed");
        }
        assert!(anchor.check(Some(&"ab".repeat(32)), 9, None).held);
        let rewritten = anchor.check(Some(&"cd".repeat(32)), 9, None);
        assert!(!rewritten.held && rewritten.detail.contains("rewritten"), "{rewritten:?}");
        let cut = anchor.check(None, 4, None);
        assert!(!cut.held && cut.detail.contains("ends at seq 4"), "{cut:?}");
        let unreached = anchor.check(None, 2, Some(3));
        assert!(!unreached.held && unreached.detail.contains("seq 3"), "{unreached:?}");
    }

    fn confirmation(amount: i64, interest: i64) -> Confirmation<'static> {
        Confirmation {
            payment_id: "pay_1",
            notice_code: "TB-2026-AAAAAA",
            provider: "vnpay",
            amount,
            lines: vec![("757-2801".into(), 15_000_000), ("757-1006".into(), 60_000_000)],
            interest: (interest > 0).then(|| ("757-4944".into(), interest)),
        }
    }

    #[test]
    fn a_payment_posts_one_leg_per_budget_code_and_ties_to_its_amount() {
        // 15,000,000 + 60,000,000 + 22,500 interest = 75,022,500.
        let plan = plan_payment(&confirmation(75_022_500, 22_500)).unwrap();
        assert_eq!(plan.posting_key, "confirm:pay_1");
        assert_eq!(plan.transfers.len(), 3);
        assert!(plan.transfers.iter().all(|t| t.debit == "provider_clearing:vnpay"));
        assert_eq!(
            plan.transfers[2],
            Transfer {
                debit: "provider_clearing:vnpay".into(),
                credit: "treasury_payable:757-4944".into(),
                amount: 22_500
            }
        );
    }

    #[test]
    fn a_plan_that_does_not_tie_is_refused() {
        let err = plan_payment(&confirmation(75_000_001, 0)).unwrap_err();
        assert_eq!(err, PlanError::DoesNotTie { expected: 75_000_001, actual: 75_000_000 });
        assert!(PostingPlan::new("k".into(), "x", "m".into(), vec![], 0).is_err());
        let same = Transfer { debit: "a".into(), credit: "a".into(), amount: 1 };
        assert!(matches!(PostingPlan::new("k".into(), "x", "m".into(), vec![same], 1), Err(PlanError::SameAccount(_))));
    }

    #[test]
    fn refunds_take_from_the_lines_in_order_after_earlier_refunds() {
        let c = confirmation(75_022_500, 22_500);
        // An earlier refund took 10,000,000 of the first line (15,000,000); this one takes
        // 5,000,000 + 7,000,000 of the second.
        let plan = plan_refund("rf_1", &c, 12_000_000, 10_000_000, false).unwrap();
        assert_eq!(
            plan.transfers,
            vec![
                Transfer {
                    debit: "treasury_payable:757-2801".into(),
                    credit: "provider_clearing:vnpay".into(),
                    amount: 5_000_000
                },
                Transfer {
                    debit: "treasury_payable:757-1006".into(),
                    credit: "provider_clearing:vnpay".into(),
                    amount: 7_000_000
                },
            ]
        );
        // More than what is left does not tie.
        assert!(plan_refund("rf_2", &c, 70_000_000, 10_000_000, false).is_err());
        let plan = plan_refund("rf_3", &c, 100, 0, true).unwrap();
        assert_eq!(plan.transfers[0].debit, SUSPENSE);
    }

    #[test]
    fn suspense_holds_the_whole_amount() {
        let plan = plan_suspense(&confirmation(75_000_000, 0), "over-payment").unwrap();
        assert_eq!(
            plan.transfers,
            vec![Transfer { debit: "provider_clearing:vnpay".into(), credit: SUSPENSE.into(), amount: 75_000_000 }]
        );
    }

    fn link(seq: i64, prev: &str, amount: i64) -> Seal {
        let transfer = ChainedTransfer {
            transfer_id: seq * 10,
            transaction_id: format!("lt_{seq}"),
            posting_key: format!("confirm:p{seq}"),
            kind: "payment_confirmed".into(),
            payment_id: Some(format!("p{seq}")),
            notice_code: None,
            corrects: None,
            debit: "provider_clearing:vnpay".into(),
            credit: "treasury_payable:757-2801".into(),
            amount,
            created_at_micros: 1_700_000_000_000_000 + seq,
            memo: format!("VNPAY payment p{seq}"),
            transaction_created_at_micros: 1_700_000_000_000_000 + seq,
        };
        let hash = chain_hash(prev, &transfer);
        Seal { seq, prev_hash: prev.into(), hash, transfer }
    }

    #[test]
    fn the_chain_names_the_first_altered_link() {
        let a = link(1, GENESIS, 100);
        let b = link(2, &a.hash, 200);
        let c = link(3, &b.hash, 300);
        let (end, next) = verify_links(GENESIS, 1, &[a.clone(), b.clone(), c.clone()]).unwrap();
        assert_eq!((end, next), (c.hash.clone(), 4));
        let mut altered = b.clone();
        altered.transfer.amount = 201;
        let err = verify_links(GENESIS, 1, &[a.clone(), altered, c.clone()]).unwrap_err();
        assert_eq!((err.seq, err.transfer_id), (2, 20));
        let err = verify_links(GENESIS, 1, &[a.clone(), c.clone()]).unwrap_err();
        assert_eq!(err.seq, 3);
        // What the entry says it was for, and when it was posted, are covered too.
        let mut altered = b.clone();
        altered.transfer.memo = "refund".into();
        let err = verify_links(GENESIS, 1, &[a.clone(), altered, c.clone()]).unwrap_err();
        assert_eq!(err.seq, 2);
        let mut altered = b;
        altered.transfer.transaction_created_at_micros += 1;
        let err = verify_links(GENESIS, 1, &[a, altered, c]).unwrap_err();
        assert_eq!(err.seq, 2);
    }

    /// The chain's form is a contract with every chain already sealed: these bytes and this hash
    /// must never change for version 2 (a new form needs a new version prefix).
    #[test]
    fn canonical_bytes_and_hash_of_version_2_are_fixed() {
        let mut a = link(7, GENESIS, 1_250_000);
        a.transfer.corrects = Some("lt_3".into());
        a.transfer.notice_code = Some("TB-2026-000042".into());
        assert_eq!(
            a.transfer.canonical(),
            "v2|70|4:lt_7|10:confirm:p7|17:payment_confirmed|2:p7|14:TB-2026-000042|4:lt_3|23:provider_clearing:vnpay|\
             25:treasury_payable:757-2801|1250000|1700000000000007|16:VNPAY payment p7|1700000000000007"
        );
        assert_eq!(
            chain_hash(GENESIS, &a.transfer),
            "f36943bd4f1bc8464297db4d6777552570f196dfca83bad02cb00cae19e7c51f"
        );
        // A field left out is written as `-`, which no length-prefixed field can be.
        a.transfer.payment_id = None;
        assert!(a.transfer.canonical().starts_with("v2|70|4:lt_7|10:confirm:p7|17:payment_confirmed|-|14:"));
    }

    #[test]
    fn canonical_bytes_separate_fields_unambiguously() {
        let mut x = link(1, GENESIS, 1).transfer;
        let mut y = x.clone();
        x.debit = "ab".into();
        x.credit = "c".into();
        y.debit = "a".into();
        y.credit = "bc".into();
        assert_ne!(x.canonical(), y.canonical());
    }
}
