//! The calculators: pure functions from a [`RuleBook`], a request and dates to obligation lines.
//!
//! Invariants:
//! - No I/O, no clock: every date is passed in (Asia/Ho_Chi_Minh local dates).
//! - Every line has `amount = round(exact_base × rate)`, rounded exactly once by
//!   [`round_vnd_with`] with the mode of the line's rule; `base` is the exact base rounded for
//!   display. The total is the checked sum of the rounded lines.
//! - All arithmetic is checked `Decimal`; anything above [`Vnd::MAX_AMOUNT`] is an error.
//! - Only rules in force on the valuation date are used (late-payment interest uses, for each
//!   overdue day, the rate in force on that day). A line is `unconfirmed` when any rule or
//!   price it relies on is UNCONFIRMED or SAMPLE.
//! - A levy exemption is applied at most once per request, only to the area within the
//!   residential allocation limit.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::kinds::{LandCategory, ObligationKind, PreviousTenure, Relationship, TransferType};
use super::request::{CalcError, CalcErrorCode, ExemptionClaim, Parcel, QuoteItem, QuoteRequest};
use super::rules::{LandType, Rule, RuleBody, RuleBook};
use crate::money::{Vnd, round_vnd, round_vnd_with};

/// An exemption or reduction that was applied to a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedExemption {
    /// Exemption code (`meritorious_service`, `family:parent_child`, `sole_home` ...).
    pub code: String,
    /// What was applied, in words.
    pub description: String,
    /// Share of the amount waived, as a fraction (1 = fully exempt).
    pub reduction: Decimal,
    /// Legal basis of the exemption.
    pub legal_basis: String,
    /// Rule id of the exemption.
    pub rule_id: String,
    /// Rule version of the exemption.
    pub rule_version: u32,
}

/// One assessed line of an obligation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObligationLine {
    /// The obligation kind.
    pub kind: ObligationKind,
    /// What this line is, in Vietnamese and English, with the figures used.
    pub description: String,
    /// The assessment base in đồng (display; rounded from the exact base).
    pub base: Vnd,
    /// The multiplier applied to the base (a fraction: 0.005 = 0.5%).
    pub rate: Decimal,
    /// `round(exact base × rate)`, the amount owed.
    pub amount: Vnd,
    /// Legal basis of the rule that set the rate.
    pub legal_basis: String,
    /// Id of that rule.
    pub rule_id: String,
    /// Version of that rule.
    pub rule_version: u32,
    /// Treasury budget code, `chapter-sub_item`.
    pub budget_code: String,
    /// Whether the budget code is UNCONFIRMED.
    pub budget_code_unconfirmed: bool,
    /// The exemption or reduction applied, if any.
    pub exemption: Option<AppliedExemption>,
    /// The amount relies on an UNCONFIRMED or SAMPLE rule or price.
    pub unconfirmed: bool,
    /// The exact amount before rounding (not serialised).
    #[serde(skip)]
    pub exact_amount: Decimal,
}

/// The result of a calculation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calculation {
    /// One or more lines per item, in item order.
    pub lines: Vec<ObligationLine>,
    /// Sum of the line amounts.
    pub total: Vnd,
}

impl Calculation {
    /// Whether any line relies on an UNCONFIRMED or SAMPLE value.
    pub fn is_unconfirmed(&self) -> bool {
        self.lines.iter().any(|l| l.unconfirmed)
    }
}

fn overflow(path: &str) -> CalcError {
    CalcError::new(
        path,
        CalcErrorCode::Overflow,
        format!("the amount would exceed the cap of {} đồng", Vnd::MAX_AMOUNT.get()),
    )
}

fn mul(a: Decimal, b: Decimal, path: &str) -> Result<Decimal, CalcError> {
    a.checked_mul(b).ok_or_else(|| overflow(path))
}

fn div(a: Decimal, b: Decimal, path: &str) -> Result<Decimal, CalcError> {
    a.checked_div(b).ok_or_else(|| overflow(path))
}

fn pct(p: Decimal) -> Decimal {
    p / Decimal::ONE_HUNDRED
}

/// Percent for descriptions: 0.005 → "0.5%".
fn show_pct(fraction: Decimal) -> String {
    format!("{}%", (fraction * Decimal::ONE_HUNDRED).normalize())
}

fn show_vnd(d: Decimal) -> String {
    match round_vnd(d) {
        Ok(v) => v.to_string(),
        Err(_) => format!("{d} đ"),
    }
}

/// Rules resolved for one jurisdiction on one date.
struct Ctx<'a> {
    book: &'a RuleBook,
    chain: Vec<&'a str>,
    jurisdiction: &'a str,
    date: NaiveDate,
    date_path: &'static str,
}

impl<'a> Ctx<'a> {
    fn new(
        book: &'a RuleBook,
        jurisdiction: &'a str,
        date: NaiveDate,
        jurisdiction_path: &str,
        date_path: &'static str,
    ) -> Result<Ctx<'a>, CalcError> {
        let chain = book.chain(jurisdiction, date).ok_or_else(|| {
            CalcError::new(
                jurisdiction_path,
                CalcErrorCode::UnknownJurisdiction,
                format!("unknown jurisdiction `{jurisdiction}`"),
            )
        })?;
        Ok(Ctx { book, chain, jurisdiction, date, date_path })
    }

    fn rule(&self, slot: &str, needed_by: &str) -> Result<&'a Rule, CalcError> {
        self.book.in_force(slot, &self.chain, self.date).ok_or_else(|| self.no_rule(slot, needed_by, self.date))
    }

    fn no_rule(&self, slot: &str, needed_by: &str, date: NaiveDate) -> CalcError {
        CalcError::new(
            self.date_path,
            CalcErrorCode::NoRuleInForce,
            format!("no rule `{slot}` in force on {date} for {} (needed by {needed_by})", self.jurisdiction),
        )
    }

    fn budget(&self, kind: ObligationKind, path: &str) -> Result<(String, bool), CalcError> {
        let rule = self.rule(&format!("budget_code/{kind}"), path)?;
        match &rule.body {
            RuleBody::BudgetCode { chapter, sub_item, .. } => {
                Ok((format!("{chapter}-{sub_item}"), rule.is_provisional()))
            }
            _ => unreachable!("slot budget_code holds budget codes"),
        }
    }

    /// Builds a line: `amount = round(exact_base × rate)` with the rule's rounding mode.
    fn line(&self, spec: LineSpec<'_>, path: &str) -> Result<ObligationLine, CalcError> {
        let exact = mul(spec.exact_base, spec.rate, path)?;
        let amount = round_vnd_with(exact, spec.rule.rounding).map_err(|_| overflow(path))?;
        let base = round_vnd(spec.exact_base).map_err(|_| overflow(path))?;
        let (budget_code, budget_code_unconfirmed) = self.budget(spec.kind, path)?;
        Ok(ObligationLine {
            kind: spec.kind,
            description: spec.description,
            base,
            rate: spec.rate.normalize(),
            amount,
            legal_basis: spec.rule.legal_basis.clone(),
            rule_id: spec.rule.id.clone(),
            rule_version: spec.rule.version,
            budget_code,
            budget_code_unconfirmed,
            exemption: spec.exemption,
            unconfirmed: spec.rule.is_provisional() || spec.provisional,
            exact_amount: exact,
        })
    }
}

struct LineSpec<'r> {
    kind: ObligationKind,
    description: String,
    exact_base: Decimal,
    rate: Decimal,
    rule: &'r Rule,
    /// Another input (price, limit, exemption) is provisional.
    provisional: bool,
    exemption: Option<AppliedExemption>,
}

/// A land price per m² and where it came from.
#[derive(Clone)]
struct Price {
    per_m2: Decimal,
    source: String,
    provisional: bool,
}

fn rate_of(rule: &Rule) -> Decimal {
    match &rule.body {
        RuleBody::Rate { rate_percent, .. } => pct(*rate_percent),
        _ => unreachable!("slot rate/* holds rates"),
    }
}

/// Looks a price up in the price list in force, or takes the explicit one.
fn list_price(
    ctx: &Ctx<'_>,
    parcel: &Parcel,
    land_type: &str,
    explicit: Option<Vnd>,
    not_found_path: &str,
) -> Result<Price, CalcError> {
    if let Some(p) = explicit {
        return Ok(Price {
            per_m2: p.to_decimal(), source: format!("{land_type} {p}/m² (given)"), provisional: false
        });
    }
    let (Some(ward), Some(route), Some(position)) = (&parcel.ward, &parcel.route, parcel.position) else {
        return Err(CalcError::new(
            "parcel.list_price_per_m2",
            CalcErrorCode::MissingField,
            "give list_price_per_m2, or ward, route and position to look the price up",
        ));
    };
    let rule = ctx.rule("land_price_list", not_found_path)?;
    let price = rule.price(ward, route, position, land_type).ok_or_else(|| {
        CalcError::new(
            not_found_path,
            CalcErrorCode::PriceNotFound,
            format!(
                "no price in {} v{} for {ward} / {route} / position {position} / {land_type}",
                rule.id, rule.version
            ),
        )
    })?;
    Ok(Price {
        per_m2: price.to_decimal(),
        source: format!(
            "{land_type} {price}/m² ({} v{}{})",
            rule.id,
            rule.version,
            if rule.sample { ", SAMPLE" } else { "" }
        ),
        provisional: rule.is_provisional(),
    })
}

/// Calculates the obligations of a request with the rules in force on its valuation date.
pub fn calculate(book: &RuleBook, req: &QuoteRequest) -> Result<Calculation, CalcError> {
    let ctx = Ctx::new(book, &req.jurisdiction, req.valuation_date, "jurisdiction", "valuation_date")?;
    let land_type = book.land_type(&req.parcel.land_type).ok_or_else(|| {
        CalcError::new(
            "parcel.land_type",
            CalcErrorCode::UnknownLandType,
            format!("unknown land type `{}`", req.parcel.land_type),
        )
    })?;
    let mut calc = Calculator { ctx, parcel: &req.parcel, land_type, price: None, exemption_claimed_by: None };
    let mut lines = Vec::with_capacity(req.items.len() + 2);
    for (i, item) in req.items.iter().enumerate() {
        let path = format!("items[{i}]");
        calc.item(item, &path, &mut lines)?;
    }
    let total = Vnd::checked_sum(lines.iter().map(|l| l.amount)).map_err(|_| overflow("items"))?;
    Ok(Calculation { lines, total })
}

/// Late-payment interest on `principal` due on `due_date`, paid on `as_of`: 0.03%/day (the rate
/// in force on each day) × principal × days overdue.
///
/// Day count: the days from the day after `due_date` to `as_of`, both inclusive, i.e.
/// `as_of − due_date` calendar days (paid on the due date or before: 0 days, amount 0). The
/// dates are Asia/Ho_Chi_Minh local dates. If the rate changed within the period, each day
/// uses the rate in force on it; the line's rate is the sum of the daily rates.
pub fn late_payment_interest(
    book: &RuleBook,
    jurisdiction: &str,
    principal: Vnd,
    due_date: NaiveDate,
    as_of: NaiveDate,
) -> Result<ObligationLine, CalcError> {
    let ctx = Ctx::new(book, jurisdiction, as_of, "jurisdiction", "as_of")?;
    interest_line(&ctx, principal, due_date, as_of, "principal")
}

fn interest_line(
    ctx: &Ctx<'_>,
    principal: Vnd,
    due_date: NaiveDate,
    as_of: NaiveDate,
    path: &str,
) -> Result<ObligationLine, CalcError> {
    const SLOT: &str = "rate/late_payment_interest_daily";
    let kind = ObligationKind::LatePaymentInterest;
    let mut rate = Decimal::ZERO;
    let mut parts = Vec::new();
    let mut provisional = false;
    let mut last_rule = None;
    let mut day = due_date.succ_opt().ok_or_else(|| overflow(path))?;
    let end_excl = as_of.succ_opt().ok_or_else(|| overflow(path))?;
    while day < end_excl {
        let rule = ctx.book.in_force(SLOT, &ctx.chain, day).ok_or_else(|| ctx.no_rule(SLOT, path, day))?;
        let next = ctx.book.next_change_after(SLOT, &ctx.chain, day).map_or(end_excl, |d| d.min(end_excl));
        let days = (next - day).num_days();
        let daily = rate_of(rule);
        rate = rate.checked_add(mul(daily, Decimal::from(days), path)?).ok_or_else(|| overflow(path))?;
        parts.push(format!("{} × {days} ngày/days ({day} → {})", show_pct(daily), next.pred_opt().unwrap_or(next)));
        provisional |= rule.is_provisional();
        last_rule = Some(rule);
        day = next;
    }
    let days = (as_of - due_date).num_days().max(0);
    let rule = match last_rule {
        Some(r) => r,
        None => ctx.book.in_force(SLOT, &ctx.chain, as_of).ok_or_else(|| ctx.no_rule(SLOT, path, as_of))?,
    };
    let description = if days == 0 {
        format!("Tiền chậm nộp / late-payment interest: not overdue (due {due_date}, as of {as_of})")
    } else {
        format!(
            "Tiền chậm nộp / late-payment interest: {principal} × {} = {days} days overdue (due {due_date}, paid {as_of})",
            parts.join(" + ")
        )
    };
    ctx.line(
        LineSpec { kind, description, exact_base: principal.to_decimal(), rate, rule, provisional, exemption: None },
        path,
    )
}

struct Calculator<'a> {
    ctx: Ctx<'a>,
    parcel: &'a Parcel,
    land_type: &'a LandType,
    price: Option<Price>,
    exemption_claimed_by: Option<String>,
}

impl<'a> Calculator<'a> {
    /// The parcel's list price (looked up once).
    fn price(&mut self) -> Result<Price, CalcError> {
        if self.price.is_none() {
            self.price = Some(list_price(
                &self.ctx,
                self.parcel,
                &self.land_type.code,
                self.parcel.list_price_per_m2,
                "parcel",
            )?);
        }
        Ok(self.price.clone().expect("just set"))
    }

    fn area(&self) -> Decimal {
        self.parcel.area_m2
    }

    fn area_value(&mut self, path: &str) -> Result<(Decimal, Price), CalcError> {
        let price = self.price()?;
        Ok((mul(self.area(), price.per_m2, path)?, price))
    }

    fn item(&mut self, item: &QuoteItem, path: &str, out: &mut Vec<ObligationLine>) -> Result<(), CalcError> {
        match item {
            QuoteItem::LandUseLevyAllocation { levy_price_per_m2, exemption } => {
                self.levy_allocation(*levy_price_per_m2, exemption.as_ref(), path, out)?
            }
            QuoteItem::LandUseLevyChangeOfPurpose {
                from_land_type,
                origin,
                old_price_per_m2,
                remaining_term_years,
                lease_term_years,
                exemption,
            } => self.levy_change_of_purpose(
                from_land_type,
                *origin,
                *old_price_per_m2,
                remaining_term_years.zip(*lease_term_years),
                exemption.as_ref(),
                path,
                out,
            )?,
            QuoteItem::LandUseLevyUnauthorisedAllocation { exemption } => {
                self.levy_unauthorised(exemption.as_ref(), path, out)?
            }
            QuoteItem::LateAssessmentSurcharge { principal, period_start, period_end } => {
                out.push(self.late_assessment_surcharge(*principal, *period_start, *period_end, path)?)
            }
            QuoteItem::AnnualLandRent { land_use } => out.push(self.annual_rent(land_use, path)?),
            QuoteItem::OneOffLandRent { term_years } => out.push(self.one_off_rent(*term_years, path)?),
            QuoteItem::RegistrationFee { contract_price, relationship, transfer_type } => {
                out.push(self.registration_fee(*contract_price, *relationship, *transfer_type, path)?)
            }
            QuoteItem::PersonalIncomeTax { transfer_price, relationship, sole_home } => {
                out.push(self.personal_income_tax(*transfer_price, *relationship, *sole_home, path)?)
            }
            QuoteItem::NonAgriculturalLandTax => self.non_agricultural_land_tax(path, out)?,
            QuoteItem::ProcedureFee { procedure_code, payer } => {
                if !self.ctx.book.has_procedure(&self.ctx.chain, procedure_code) {
                    return Err(CalcError::new(
                        format!("{path}.procedure_code"),
                        CalcErrorCode::UnknownProcedureCode,
                        format!("no fee is defined for procedure `{procedure_code}` in {}", self.ctx.jurisdiction),
                    ));
                }
                let rule = self.ctx.rule(&format!("procedure_fee/{procedure_code}/{}", payer.as_str()), path)?;
                let RuleBody::ProcedureFee { amount, name, .. } = &rule.body else {
                    unreachable!("slot procedure_fee/* holds fees")
                };
                out.push(self.ctx.line(
                    LineSpec {
                        kind: ObligationKind::ProcedureFee,
                        description: format!("{name} ({})", payer.as_str()),
                        exact_base: amount.to_decimal(),
                        rate: Decimal::ONE,
                        rule,
                        provisional: false,
                        exemption: None,
                    },
                    path,
                )?);
            }
            QuoteItem::LatePaymentInterest { principal, due_date } => {
                out.push(interest_line(&self.ctx, *principal, *due_date, self.ctx.date, path)?)
            }
        }
        Ok(())
    }

    /// Levy lines for `area × per_m2 × rate`, split at the residential limit when an
    /// exemption applies (the exempted part only within the limit).
    #[allow(clippy::too_many_arguments)]
    fn levy_lines(
        &mut self,
        kind: ObligationKind,
        head: String,
        per_m2: Decimal,
        rule: &Rule,
        rate: Decimal,
        provisional: bool,
        claim: Option<&ExemptionClaim>,
        path: &str,
        out: &mut Vec<ObligationLine>,
    ) -> Result<(), CalcError> {
        let area = self.area();
        let whole = |description: String| LineSpec {
            kind,
            description,
            exact_base: Decimal::ZERO,
            rate,
            rule,
            provisional,
            exemption: None,
        };
        let Some(claim) = claim else {
            let mut spec = whole(head);
            spec.exact_base = mul(area, per_m2, path)?;
            out.push(self.ctx.line(spec, path)?);
            return Ok(());
        };
        let claim_path = format!("{path}.exemption");
        if !self.ctx.book.has_exemption(&self.ctx.chain, &claim.code) {
            return Err(CalcError::new(
                format!("{claim_path}.code"),
                CalcErrorCode::UnknownExemption,
                format!("unknown levy exemption `{}`", claim.code),
            ));
        }
        if claim.already_used {
            let mut spec = whole(format!(
                "{head}; miễn giảm `{}` đã sử dụng / exemption already used by the household: not applied",
                claim.code
            ));
            spec.exact_base = mul(area, per_m2, path)?;
            out.push(self.ctx.line(spec, path)?);
            return Ok(());
        }
        if let Some(other) = &self.exemption_claimed_by {
            return Err(CalcError::new(
                claim_path,
                CalcErrorCode::NotApplicable,
                format!("the household's one levy exemption is already claimed by {other}"),
            ));
        }
        self.exemption_claimed_by = Some(path.to_string());
        let ex_rule = self.ctx.rule(&format!("levy_exemption/{}", claim.code), &claim_path)?;
        let RuleBody::LevyExemption { reduction_percent, name, .. } = &ex_rule.body else {
            unreachable!("slot levy_exemption/* holds exemptions")
        };
        let reduction = pct(*reduction_percent);
        let (limit, limit_rule) = self.residential_limit(&claim_path)?;
        let within = area.min(limit);
        let above = area - within;
        let exemption = AppliedExemption {
            code: claim.code.clone(),
            description: format!(
                "{name}: {} on {within} m² within the residential limit of {limit} m²",
                show_pct(reduction)
            ),
            reduction,
            legal_basis: ex_rule.legal_basis.clone(),
            rule_id: ex_rule.id.clone(),
            rule_version: ex_rule.version,
        };
        out.push(self.ctx.line(
            LineSpec {
                kind,
                description: format!("{head}; trong hạn mức / within the limit: {within} m²"),
                exact_base: mul(within, per_m2, path)?,
                rate: mul(rate, Decimal::ONE - reduction, path)?,
                rule,
                provisional: provisional || ex_rule.is_provisional() || limit_rule.is_provisional(),
                exemption: Some(exemption),
            },
            path,
        )?);
        if above > Decimal::ZERO {
            out.push(self.ctx.line(
                LineSpec {
                    kind,
                    description: format!("{head}; vượt hạn mức / above the limit: {above} m²"),
                    exact_base: mul(above, per_m2, path)?,
                    rate,
                    rule,
                    provisional: provisional || limit_rule.is_provisional(),
                    exemption: None,
                },
                path,
            )?);
        }
        Ok(())
    }

    /// The residential allocation limit (m²) for the parcel's (residential) land type.
    fn residential_limit(&self, path: &str) -> Result<(Decimal, &'a Rule), CalcError> {
        if self.land_type.category != LandCategory::Residential {
            return Err(CalcError::new(
                path,
                CalcErrorCode::NotApplicable,
                format!(
                    "needs the residential allocation limit, but land type {} is not residential",
                    self.land_type.code
                ),
            ));
        }
        let rule = self.ctx.rule("residential_limit", path)?;
        let RuleBody::ResidentialLimit { limits_m2 } = &rule.body else {
            unreachable!("slot residential_limit holds limits")
        };
        let limit = limits_m2.get(&self.land_type.code).ok_or_else(|| {
            CalcError::new(
                self.ctx.date_path,
                CalcErrorCode::NoRuleInForce,
                format!("{} v{} sets no residential limit for {}", rule.id, rule.version, self.land_type.code),
            )
        })?;
        Ok((*limit, rule))
    }

    /// Row 1: area × land price for levy.
    fn levy_allocation(
        &mut self,
        levy_price: Option<Vnd>,
        claim: Option<&ExemptionClaim>,
        path: &str,
        out: &mut Vec<ObligationLine>,
    ) -> Result<(), CalcError> {
        let kind = ObligationKind::LandUseLevyAllocation;
        let rule = self.ctx.rule("rate/land_use_levy_allocation", path)?;
        let price = match levy_price {
            Some(p) => {
                Price { per_m2: p.to_decimal(), source: format!("levy price {p}/m² (given)"), provisional: false }
            }
            None => self.price()?,
        };
        let head = format!(
            "Tiền sử dụng đất khi giao đất / land-use levy on allocation: {} m² × {}",
            self.area(),
            price.source
        );
        self.levy_lines(kind, head, price.per_m2, rule, rate_of(rule), price.provisional, claim, path, out)
    }

    /// Row 2: max(0, area × new list price − old amount); the old amount per m² is the
    /// agricultural list price (allocated) or price × remaining / lease term (leased one-off).
    #[allow(clippy::too_many_arguments)]
    fn levy_change_of_purpose(
        &mut self,
        from_land_type: &str,
        origin: PreviousTenure,
        old_price: Option<Vnd>,
        terms: Option<(Decimal, Decimal)>,
        claim: Option<&ExemptionClaim>,
        path: &str,
        out: &mut Vec<ObligationLine>,
    ) -> Result<(), CalcError> {
        let kind = ObligationKind::LandUseLevyChangeOfPurpose;
        let from_path = format!("{path}.from_land_type");
        let from = self.ctx.book.land_type(from_land_type).ok_or_else(|| {
            CalcError::new(&from_path, CalcErrorCode::UnknownLandType, format!("unknown land type `{from_land_type}`"))
        })?;
        if from.code == self.land_type.code {
            return Err(CalcError::new(
                &from_path,
                CalcErrorCode::NotApplicable,
                format!("no change of purpose: the parcel is already {}", from.code),
            ));
        }
        if origin == PreviousTenure::AllocatedAgricultural && from.category != LandCategory::Agricultural {
            return Err(CalcError::new(
                &from_path,
                CalcErrorCode::NotApplicable,
                format!("origin allocated_agricultural needs an agricultural land type, {} is not", from.code),
            ));
        }
        let rule = self.ctx.rule("rate/land_use_levy_change_of_purpose", path)?;
        let new = self.price()?;
        let old = list_price(&self.ctx, self.parcel, &from.code, old_price, &from_path)?;
        let (old_per_m2, old_text) = match (origin, terms) {
            (PreviousTenure::AllocatedAgricultural, _) => (old.per_m2, old.source.clone()),
            (PreviousTenure::LeasedOneOff, Some((remaining, term))) => (
                div(mul(old.per_m2, remaining, path)?, term, path)?,
                format!("{} × {remaining}/{term} years remaining", old.source),
            ),
            (PreviousTenure::LeasedOneOff, None) => {
                return Err(CalcError::new(
                    format!("{path}.lease_term_years"),
                    CalcErrorCode::MissingField,
                    "leased_one_off needs lease_term_years and remaining_term_years",
                ));
            }
        };
        let old_per_m2 = old_per_m2.max(Decimal::ZERO);
        let diff = (new.per_m2 - old_per_m2).max(Decimal::ZERO);
        let head = format!(
            "Tiền sử dụng đất chuyển mục đích / levy on change of purpose {} → {}: {} m² × max(0, {} − {})",
            from.code,
            self.land_type.code,
            self.area(),
            new.source,
            old_text
        );
        self.levy_lines(kind, head, diff, rule, rate_of(rule), new.provisional || old.provisional, claim, path, out)
    }

    /// Row 3: residential area × residential list price × 70%.
    fn levy_unauthorised(
        &mut self,
        claim: Option<&ExemptionClaim>,
        path: &str,
        out: &mut Vec<ObligationLine>,
    ) -> Result<(), CalcError> {
        if self.land_type.category != LandCategory::Residential {
            return Err(CalcError::new(
                "parcel.land_type",
                CalcErrorCode::NotApplicable,
                format!("the unauthorised-allocation levy is on residential land; {} is not", self.land_type.code),
            ));
        }
        let rule = self.ctx.rule("rate/land_use_levy_unauthorised_allocation", path)?;
        let price = self.price()?;
        let rate = rate_of(rule);
        let head = format!(
            "Tiền sử dụng đất, đất giao không đúng thẩm quyền / levy, land allocated without authority: {} m² × {} × {}",
            self.area(),
            price.source,
            show_pct(rate)
        );
        self.levy_lines(
            ObligationKind::LandUseLevyUnauthorisedAllocation,
            head,
            price.per_m2,
            rule,
            rate,
            price.provisional,
            claim,
            path,
            out,
        )
    }

    /// Row 5: principal × 5.4%/year × days / days_in_year, days from the day after
    /// `period_start` to `period_end` inclusive.
    fn late_assessment_surcharge(
        &mut self,
        principal: Vnd,
        start: NaiveDate,
        end: NaiveDate,
        path: &str,
    ) -> Result<ObligationLine, CalcError> {
        let rule = self.ctx.rule("late_assessment_surcharge", path)?;
        let RuleBody::LateAssessmentSurcharge { annual_rate_percent, days_in_year, cases_before } = &rule.body else {
            unreachable!("slot late_assessment_surcharge holds the surcharge")
        };
        if start >= cases_before.0 {
            return Err(CalcError::new(
                format!("{path}.period_start"),
                CalcErrorCode::NotApplicable,
                format!("the surcharge applies to cases before {}; this period starts {start}", cases_before.0),
            ));
        }
        let days = (end - start).num_days();
        let annual = pct(*annual_rate_percent);
        let rate = div(mul(annual, Decimal::from(days), path)?, Decimal::from(*days_in_year), path)?;
        self.ctx.line(
            LineSpec {
                kind: ObligationKind::LateAssessmentSurcharge,
                description: format!(
                    "Khoản tiền tính chậm / late-assessment surcharge: {principal} × {}/year × {days}/{days_in_year} days ({start} → {end})",
                    show_pct(annual)
                ),
                exact_base: principal.to_decimal(),
                rate,
                rule,
                provisional: false,
                exemption: None,
            },
            path,
        )
    }

    /// Row 6: area × rate% × list price.
    fn annual_rent(&mut self, land_use: &str, path: &str) -> Result<ObligationLine, CalcError> {
        if !self.ctx.book.has_land_use(land_use) {
            return Err(CalcError::new(
                format!("{path}.land_use"),
                CalcErrorCode::UnknownLandUse,
                format!("unknown land use `{land_use}`"),
            ));
        }
        let rule = self.ctx.rule(&format!("annual_rent_rate/{land_use}"), path)?;
        let RuleBody::AnnualRentRate { rate_percent, .. } = &rule.body else {
            unreachable!("slot annual_rent_rate/* holds rent rates")
        };
        let (base, price) = self.area_value(path)?;
        let rate = pct(*rate_percent);
        self.ctx.line(
            LineSpec {
                kind: ObligationKind::AnnualLandRent,
                description: format!(
                    "Tiền thuê đất hằng năm / annual land rent ({land_use}): {} m² × {} × {}",
                    self.area(),
                    show_pct(rate),
                    price.source
                ),
                exact_base: base,
                rate,
                rule,
                provisional: price.provisional,
                exemption: None,
            },
            path,
        )
    }

    /// Row 7 (UNCONFIRMED): area × price × coefficient × term / reference term.
    fn one_off_rent(&mut self, term: Decimal, path: &str) -> Result<ObligationLine, CalcError> {
        let rule = self.ctx.rule("one_off_rent", path)?;
        let RuleBody::OneOffRent { coefficient, reference_term_years } = &rule.body else {
            unreachable!("slot one_off_rent holds the one-off rent")
        };
        let (base, price) = self.area_value(path)?;
        let rate = div(mul(*coefficient, term, path)?, *reference_term_years, path)?;
        self.ctx.line(
            LineSpec {
                kind: ObligationKind::OneOffLandRent,
                description: format!(
                    "Tiền thuê đất trả một lần / one-off land rent (UNCONFIRMED formula): {} m² × {} × {coefficient} × {term}/{reference_term_years} years",
                    self.area(),
                    price.source
                ),
                exact_base: base,
                rate,
                rule,
                provisional: true,
                exemption: None,
            },
            path,
        )
    }

    /// Family exemption for registration fee / PIT, if the rule in force covers the case.
    fn family_exemption(
        &self,
        kind: ObligationKind,
        relationship: Option<Relationship>,
        transfer_type: TransferType,
    ) -> Option<AppliedExemption> {
        let relationship = relationship?;
        let rule = self.ctx.book.in_force(&format!("family_exemption/{kind}"), &self.ctx.chain, self.ctx.date)?;
        let RuleBody::FamilyExemption { relationships, transfer_types, .. } = &rule.body else {
            return None;
        };
        if !relationships.contains(&relationship) || !transfer_types.contains(&transfer_type) {
            return None;
        }
        let rel =
            serde_json::to_value(relationship).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let tt =
            serde_json::to_value(transfer_type).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        Some(AppliedExemption {
            code: format!("family:{rel}"),
            description: format!("Miễn / exempt: {tt} between {rel}"),
            reduction: Decimal::ONE,
            legal_basis: rule.legal_basis.clone(),
            rule_id: rule.id.clone(),
            rule_version: rule.version,
        })
    }

    /// Row 8: 0.5% × max(area × list price, contract price), family exemption.
    fn registration_fee(
        &mut self,
        contract: Option<Vnd>,
        relationship: Option<Relationship>,
        transfer_type: TransferType,
        path: &str,
    ) -> Result<ObligationLine, CalcError> {
        let kind = ObligationKind::RegistrationFee;
        let rule = self.ctx.rule("rate/registration_fee", path)?;
        let (list_value, price) = self.area_value(path)?;
        let contract_value = contract.map_or(Decimal::ZERO, Vnd::to_decimal);
        let (base, which) = if contract_value > list_value {
            (contract_value, "contract price".to_string())
        } else {
            (list_value, format!("list value {} m² × {}", self.area(), price.source))
        };
        let exemption = self.family_exemption(kind, relationship, transfer_type);
        let rate = if exemption.is_some() { Decimal::ZERO } else { rate_of(rule) };
        self.ctx.line(
            LineSpec {
                kind,
                description: format!(
                    "Lệ phí trước bạ / registration fee: {} × max(list value {}, contract price {}) — base is the {which}",
                    show_pct(rate_of(rule)),
                    show_vnd(list_value),
                    contract.map_or("none".to_string(), |c| c.to_string())
                ),
                exact_base: base,
                rate,
                rule,
                provisional: price.provisional,
                exemption,
            },
            path,
        )
    }

    /// Row 10: 2% × transfer price, or area × list price when no price or a lower one.
    fn personal_income_tax(
        &mut self,
        transfer_price: Option<Vnd>,
        relationship: Option<Relationship>,
        sole_home: bool,
        path: &str,
    ) -> Result<ObligationLine, CalcError> {
        let kind = ObligationKind::PersonalIncomeTax;
        let rule = self.ctx.rule("rate/personal_income_tax", path)?;
        let (list_value, price) = self.area_value(path)?;
        let (base, which) = match transfer_price {
            Some(tp) if tp.to_decimal() >= list_value => (tp.to_decimal(), "transfer price"),
            Some(_) => (list_value, "list value (transfer price below it)"),
            None => (list_value, "list value (no transfer price)"),
        };
        let mut provisional = price.provisional;
        let mut exemption = self.family_exemption(kind, relationship, TransferType::Sale);
        if exemption.is_none() && sole_home {
            let ex = self.ctx.rule("pit_sole_home_exemption", path)?;
            provisional |= ex.is_provisional();
            exemption = Some(AppliedExemption {
                code: "sole_home".into(),
                description: "Miễn thuế chuyển nhượng nhà ở duy nhất / sole-home exemption (UNCONFIRMED conditions, asserted by the caller)".into(),
                reduction: Decimal::ONE,
                legal_basis: ex.legal_basis.clone(),
                rule_id: ex.id.clone(),
                rule_version: ex.version,
            });
        }
        let rate = if exemption.is_some() { Decimal::ZERO } else { rate_of(rule) };
        self.ctx.line(
            LineSpec {
                kind,
                description: format!(
                    "Thuế TNCN chuyển nhượng / personal income tax on transfer: {} × {which} {}",
                    show_pct(rate_of(rule)),
                    show_vnd(base)
                ),
                exact_base: base,
                rate,
                rule,
                provisional,
                exemption,
            },
            path,
        )
    }

    /// Row 12: residential land in tiers by multiples of the residential limit; other
    /// non-agricultural land at the flat rate.
    fn non_agricultural_land_tax(&mut self, path: &str, out: &mut Vec<ObligationLine>) -> Result<(), CalcError> {
        let kind = ObligationKind::NonAgriculturalLandTax;
        let rule = self.ctx.rule("non_agricultural_land_tax", path)?;
        let RuleBody::NonAgriculturalLandTax { tiers, non_residential_rate_percent } = &rule.body else {
            unreachable!("slot non_agricultural_land_tax holds tiers")
        };
        let price = self.price()?;
        let area = self.area();
        match self.land_type.category {
            LandCategory::Agricultural => Err(CalcError::new(
                "parcel.land_type",
                CalcErrorCode::NotApplicable,
                format!("non-agricultural land-use tax does not apply to agricultural land ({})", self.land_type.code),
            )),
            LandCategory::NonAgricultural => {
                let rate = pct(*non_residential_rate_percent);
                out.push(self.ctx.line(
                    LineSpec {
                        kind,
                        description: format!(
                            "Thuế SDĐ phi nông nghiệp / non-agricultural land-use tax: {area} m² × {} × {}",
                            price.source,
                            show_pct(rate)
                        ),
                        exact_base: mul(area, price.per_m2, path)?,
                        rate,
                        rule,
                        provisional: price.provisional,
                        exemption: None,
                    },
                    path,
                )?);
                Ok(())
            }
            LandCategory::Residential => {
                let (limit, limit_rule) = self.residential_limit("parcel.land_type")?;
                let mut lower = Decimal::ZERO;
                for (i, tier) in tiers.iter().enumerate() {
                    let upper = match tier.up_to_limit_multiple {
                        Some(m) => mul(m, limit, path)?,
                        None => area.max(lower),
                    };
                    let portion = (area.min(upper) - lower).max(Decimal::ZERO);
                    if portion > Decimal::ZERO {
                        let rate = pct(tier.rate_percent);
                        let bound = match tier.up_to_limit_multiple {
                            Some(m) => format!("up to {m}× the limit of {limit} m²"),
                            None => format!("above {lower} m²"),
                        };
                        out.push(self.ctx.line(
                            LineSpec {
                                kind,
                                description: format!(
                                    "Thuế SDĐ phi nông nghiệp bậc {} / non-agricultural land-use tax tier {} ({bound}): {portion} m² × {} × {}",
                                    i + 1,
                                    i + 1,
                                    price.source,
                                    show_pct(rate)
                                ),
                                exact_base: mul(portion, price.per_m2, path)?,
                                rate,
                                rule,
                                provisional: price.provisional || limit_rule.is_provisional(),
                                exemption: None,
                            },
                            path,
                        )?);
                    }
                    lower = upper;
                }
                Ok(())
            }
        }
    }
}
