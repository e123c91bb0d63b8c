//! Versioned rule tables (TOML) and the [`RuleBook`] that answers "which rule is in force".
//!
//! Invariants, all checked when the book is loaded (a book that loads is consistent):
//! - every rule has a unique (`id`, `version`); all versions of an `id` fill the same slot
//!   (same kind, key and jurisdiction) and their versions increase with `effective_from`;
//! - effective periods are `effective_from..=effective_to` (**`effective_to` is inclusive**;
//!   absent means open-ended); within one slot the periods neither overlap nor leave a gap,
//!   so at most one rule is in force on any date;
//! - every reference resolves: jurisdictions, land types (price rows, allocation limits),
//!   land uses (rent rates), relationships and obligation kinds;
//! - rates, prices and limits are not negative; percentages are at most 100; tiers ascend.
//!
//! Lookup for a jurisdiction J on date D tries J itself, then (if J was merged into another
//! jurisdiction on or before D) its successor, and so on, then the national rules (`VN`).
//! A needed rule absent on D is a calculation error, not a load error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

use super::kinds::{LandCategory, ObligationKind, PayerType, Relationship, TransferType};
use crate::money::{RoundingMode, Vnd};

/// The national jurisdiction code; its rules apply everywhere.
pub const NATIONAL: &str = "VN";

/// A rule table could not be loaded. Display is one line naming file, rule and problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {subject}: {problem}")]
pub struct RuleError {
    /// The file name as given to [`RuleBook::from_sources`].
    pub file: String,
    /// What is wrong: `rule <id> v<version>`, `land_type ODT`, or `file`.
    pub subject: String,
    /// The problem, on one line.
    pub problem: String,
}

impl RuleError {
    fn new(file: &str, subject: impl Into<String>, problem: impl fmt::Display) -> RuleError {
        RuleError {
            file: file.to_string(),
            subject: subject.into(),
            problem: problem.to_string().replace(['\n', '\r'], " "),
        }
    }
}

/// A date in a rule file: a TOML local date (`2024-08-01`; a quoted `"2024-08-01"` is
/// accepted too), without time or offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TomlDate(pub(crate) NaiveDate);

impl TomlDate {
    fn from_datetime(dt: &toml::value::Datetime) -> Result<TomlDate, String> {
        match (dt.date, dt.time, dt.offset) {
            (Some(date), None, None) => NaiveDate::from_ymd_opt(date.year.into(), date.month.into(), date.day.into())
                .map(TomlDate)
                .ok_or_else(|| format!("malformed date {dt}")),
            _ => Err(format!("malformed date {dt}: expected a plain date YYYY-MM-DD")),
        }
    }
}

impl<'de> Deserialize<'de> for TomlDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TomlDate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a date YYYY-MM-DD")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TomlDate, E> {
                let dt: toml::value::Datetime =
                    v.parse().map_err(|_| E::custom(format!("malformed date {v:?}: expected YYYY-MM-DD")))?;
                TomlDate::from_datetime(&dt).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TomlDate, A::Error> {
                use serde::de::Error;
                let dt = toml::value::Datetime::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                TomlDate::from_datetime(&dt).map_err(A::Error::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Which single rate a `rate` rule sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RateKey {
    LandUseLevyAllocation,
    LandUseLevyChangeOfPurpose,
    LandUseLevyUnauthorisedAllocation,
    RegistrationFee,
    PersonalIncomeTax,
    LatePaymentInterestDaily,
}

impl RateKey {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RateKey::LandUseLevyAllocation => "land_use_levy_allocation",
            RateKey::LandUseLevyChangeOfPurpose => "land_use_levy_change_of_purpose",
            RateKey::LandUseLevyUnauthorisedAllocation => "land_use_levy_unauthorised_allocation",
            RateKey::RegistrationFee => "registration_fee",
            RateKey::PersonalIncomeTax => "personal_income_tax",
            RateKey::LatePaymentInterestDaily => "late_payment_interest_daily",
        }
    }
}

/// One tier of the non-agricultural land-use tax: up to `up_to_limit_multiple` × the
/// residential allocation limit (absent = no upper bound; only the last tier).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaxTier {
    pub(crate) up_to_limit_multiple: Option<Decimal>,
    pub(crate) rate_percent: Decimal,
}

/// One row of a land price list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriceRow {
    /// District / ward (phường, xã) as printed in the list.
    pub(crate) ward: String,
    /// Route or road segment.
    pub(crate) route: String,
    /// Position: 1 = frontage, 2 = alley ≥ 4 m, 3 = alley < 4 m, 4 = other.
    pub(crate) position: u8,
    pub(crate) land_type: String,
    pub(crate) price_per_m2: Vnd,
}

/// The content of a rule, tagged by `kind` in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum RuleBody {
    /// A single percentage.
    Rate { rate: RateKey, rate_percent: Decimal },
    /// Land Law 2024 Art. 257.2.d surcharge.
    LateAssessmentSurcharge {
        annual_rate_percent: Decimal,
        /// Day-count denominator (actual days / this).
        days_in_year: u16,
        /// Only cases whose unassessed period starts before this date.
        cases_before: TomlDate,
    },
    /// Progressive tiers for residential land; flat rate for other non-agricultural land.
    NonAgriculturalLandTax { tiers: Vec<TaxTier>, non_residential_rate_percent: Decimal },
    /// Residential allocation limit (hạn mức giao đất ở) in m² per residential land type.
    ResidentialLimit { limits_m2: BTreeMap<String, Decimal> },
    /// Annual land rent rate for one land use.
    AnnualRentRate { land_use: String, rate_percent: Decimal },
    /// One-off rent: area × price × coefficient × term / reference term (UNCONFIRMED).
    OneOffRent { coefficient: Decimal, reference_term_years: Decimal },
    /// A fixed procedure fee.
    ProcedureFee { procedure: String, payer: PayerType, amount: Vnd, name: String },
    /// A land price list (bảng giá đất).
    LandPriceList { rows: Vec<PriceRow> },
    /// A levy exemption or reduction, applied within the residential limit.
    LevyExemption { exemption: String, reduction_percent: Decimal, name: String },
    /// Family exemption for registration fee or PIT.
    FamilyExemption { obligation: ObligationKind, relationships: Vec<Relationship>, transfer_types: Vec<TransferType> },
    /// PIT exemption for the transfer of a sole home (UNCONFIRMED).
    PitSoleHomeExemption {},
    /// Treasury budget code of an obligation kind.
    BudgetCode { obligation: ObligationKind, chapter: String, sub_item: String },
}

impl RuleBody {
    /// The slot this rule fills in its jurisdiction (versions of one slot never overlap).
    pub(crate) fn slot(&self) -> String {
        match self {
            RuleBody::Rate { rate, .. } => format!("rate/{}", rate.as_str()),
            RuleBody::LateAssessmentSurcharge { .. } => "late_assessment_surcharge".into(),
            RuleBody::NonAgriculturalLandTax { .. } => "non_agricultural_land_tax".into(),
            RuleBody::ResidentialLimit { .. } => "residential_limit".into(),
            RuleBody::AnnualRentRate { land_use, .. } => format!("annual_rent_rate/{land_use}"),
            RuleBody::OneOffRent { .. } => "one_off_rent".into(),
            RuleBody::ProcedureFee { procedure, payer, .. } => format!("procedure_fee/{procedure}/{}", payer.as_str()),
            RuleBody::LandPriceList { .. } => "land_price_list".into(),
            RuleBody::LevyExemption { exemption, .. } => format!("levy_exemption/{exemption}"),
            RuleBody::FamilyExemption { obligation, .. } => {
                format!("family_exemption/{obligation}")
            }
            RuleBody::PitSoleHomeExemption {} => "pit_sole_home_exemption".into(),
            RuleBody::BudgetCode { obligation, .. } => format!("budget_code/{obligation}"),
        }
    }
}

/// One version of one rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Stable id across versions, e.g. `vn.registration_fee.rate`.
    pub id: String,
    /// Version number, increasing with `effective_from`.
    pub version: u32,
    /// `VN` (national) or an ISO 3166-2:VN code such as `VN-57`, `VN-SG`, `VN-HN`.
    pub jurisdiction: String,
    /// First day in force.
    pub effective_from: NaiveDate,
    /// Last day in force, inclusive; `None` = until replaced.
    pub effective_to: Option<NaiveDate>,
    /// The legal text the values come from.
    pub legal_basis: String,
    /// Free note.
    pub note: String,
    /// Values not confirmed against a published text.
    pub unconfirmed: bool,
    /// Sample values shipped for testing and demos, not real data.
    pub sample: bool,
    /// How amounts computed from this rule are rounded (default half away from zero).
    pub rounding: RoundingMode,
    /// The file it was loaded from.
    pub file: String,
    pub(crate) body: RuleBody,
    /// Price lists only: (ward, route, position, land type) → row index; text lower-cased.
    price_index: HashMap<(String, String, u8, String), usize>,
}

impl Rule {
    /// Whether the rule is in force on `date`.
    pub fn covers(&self, date: NaiveDate) -> bool {
        self.effective_from <= date && self.effective_to.is_none_or(|to| date <= to)
    }

    /// `unconfirmed || sample`: the amount it yields must be flagged.
    pub fn is_provisional(&self) -> bool {
        self.unconfirmed || self.sample
    }

    /// The slot it fills in its jurisdiction, e.g. `rate/registration_fee`.
    pub fn slot(&self) -> String {
        self.body.slot()
    }

    pub(crate) fn price(&self, ward: &str, route: &str, position: u8, land_type: &str) -> Option<Vnd> {
        let RuleBody::LandPriceList { rows } = &self.body else {
            return None;
        };
        let key = (norm(ward), norm(route), position, land_type.to_string());
        self.price_index.get(&key).map(|&i| rows[i].price_per_m2)
    }

    fn subject(&self) -> String {
        format!("rule {} v{}", self.id, self.version)
    }
}

fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

/// A jurisdiction of the catalogue.
#[derive(Debug, Clone)]
pub struct Jurisdiction {
    /// `VN` or `VN-xx`.
    pub code: String,
    /// Name, e.g. `Bình Dương`.
    pub name: String,
    /// Merged into this jurisdiction ...
    pub merged_into: Option<String>,
    /// ... on this date.
    pub merged_on: Option<NaiveDate>,
    file: String,
}

/// A land type of the catalogue.
#[derive(Debug, Clone)]
pub struct LandType {
    /// Code, e.g. `ODT`.
    pub code: String,
    /// Name.
    pub name: String,
    /// Category.
    pub category: LandCategory,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJurisdiction {
    code: String,
    name: String,
    merged_into: Option<String>,
    merged_on: Option<TomlDate>,
    #[serde(default)]
    #[allow(dead_code)]
    note: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLandType {
    code: String,
    name: String,
    category: LandCategory,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLandUse {
    code: String,
    #[allow(dead_code)]
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    id: String,
    version: u32,
    jurisdiction: String,
    effective_from: TomlDate,
    effective_to: Option<TomlDate>,
    legal_basis: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    unconfirmed: bool,
    #[serde(default)]
    sample: bool,
    #[serde(default)]
    rounding: RoundingMode,
}

const HEADER_KEYS: [&str; 10] = [
    "id",
    "version",
    "jurisdiction",
    "effective_from",
    "effective_to",
    "legal_basis",
    "note",
    "unconfirmed",
    "sample",
    "rounding",
];

/// All rules, indexed by slot and jurisdiction. Immutable once loaded.
#[derive(Debug, Clone, Default)]
pub struct RuleBook {
    jurisdictions: BTreeMap<String, Jurisdiction>,
    land_types: BTreeMap<String, LandType>,
    land_uses: HashSet<String>,
    /// `slot@jurisdiction` → versions sorted by `effective_from`.
    slots: HashMap<String, Vec<Rule>>,
    /// (jurisdiction, procedure code) pairs that have at least one fee rule.
    procedures: HashSet<(String, String)>,
    /// Exemption codes with at least one rule, by jurisdiction.
    exemptions: HashSet<(String, String)>,
}

fn slot_key(slot: &str, jurisdiction: &str) -> String {
    format!("{slot}@{jurisdiction}")
}

fn valid_jurisdiction_code(code: &str) -> bool {
    code == NATIONAL
        || (code.len() == 5
            && code.starts_with("VN-")
            && code[3..].chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
}

impl RuleBook {
    /// The rule tables shipped in `config/rules/`, compiled in.
    pub fn shipped() -> Result<RuleBook, RuleError> {
        let sources: Vec<(String, String)> = SHIPPED.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        RuleBook::from_sources(&sources)
    }

    /// Loads and validates rule files given as (file name, file text). Stops at the first
    /// problem, with an error naming the file, the rule and the problem.
    pub fn from_sources(sources: &[(String, String)]) -> Result<RuleBook, RuleError> {
        let mut book = RuleBook::default();
        let mut rules: Vec<Rule> = Vec::new();
        let mut uses_file: HashMap<String, String> = HashMap::new();
        for (file, text) in sources {
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                let line = e
                    .span()
                    .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default();
                RuleError::new(file, "file", format!("TOML syntax error{line}: {}", e.message()))
            })?;
            for (key, value) in table {
                let items = match value {
                    toml::Value::Array(items) => items,
                    _ => {
                        return Err(RuleError::new(
                            file,
                            "file",
                            format!("top-level `{key}` must be an array of tables ([[{key}]])"),
                        ));
                    }
                };
                for (n, item) in items.into_iter().enumerate() {
                    match key.as_str() {
                        "jurisdiction" => book.add_jurisdiction(file, n, item)?,
                        "land_type" => book.add_land_type(file, n, item)?,
                        "land_use" => {
                            let u: RawLandUse =
                                item.try_into().map_err(|e| RuleError::new(file, format!("land_use #{}", n + 1), e))?;
                            if let Some(other) = uses_file.insert(u.code.clone(), file.clone()) {
                                return Err(RuleError::new(
                                    file,
                                    format!("land_use {}", u.code),
                                    format!("duplicate land use, also defined in {other}"),
                                ));
                            }
                            book.land_uses.insert(u.code);
                        }
                        "rule" => rules.push(parse_rule(file, n, item)?),
                        other => {
                            return Err(RuleError::new(
                                file,
                                "file",
                                format!(
                                    "unknown top-level table `{other}` (expected rule, jurisdiction, land_type, land_use)"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        book.check_catalogue()?;
        // Duplicate (id, version).
        let mut seen: HashMap<(String, u32), String> = HashMap::new();
        for r in &rules {
            if let Some(f) = seen.insert((r.id.clone(), r.version), r.file.clone()) {
                return Err(RuleError::new(
                    &r.file,
                    r.subject(),
                    format!("duplicate rule id and version, also defined in {f}"),
                ));
            }
        }
        for r in &rules {
            book.check_rule(r)?;
        }
        // All versions of one id fill one slot; versions ascend with dates.
        let mut by_id: BTreeMap<&str, Vec<&Rule>> = BTreeMap::new();
        for r in &rules {
            by_id.entry(&r.id).or_default().push(r);
        }
        for versions in by_id.values_mut() {
            versions.sort_by_key(|r| r.version);
            let first_key = slot_key(&versions[0].body.slot(), &versions[0].jurisdiction);
            for pair in versions.windows(2) {
                let key = slot_key(&pair[1].body.slot(), &pair[1].jurisdiction);
                if key != first_key {
                    return Err(RuleError::new(
                        &pair[1].file,
                        pair[1].subject(),
                        format!(
                            "fills slot {key} but version {} of the same id fills {first_key}",
                            versions[0].version
                        ),
                    ));
                }
                if pair[1].effective_from <= pair[0].effective_from {
                    return Err(RuleError::new(
                        &pair[1].file,
                        pair[1].subject(),
                        format!(
                            "takes effect {} but the earlier version {} takes effect {}; versions must increase with effective_from",
                            pair[1].effective_from, pair[0].version, pair[0].effective_from
                        ),
                    ));
                }
            }
        }
        for r in rules {
            let key = slot_key(&r.body.slot(), &r.jurisdiction);
            if let RuleBody::ProcedureFee { procedure, .. } = &r.body {
                book.procedures.insert((r.jurisdiction.clone(), procedure.clone()));
            }
            if let RuleBody::LevyExemption { exemption, .. } = &r.body {
                book.exemptions.insert((r.jurisdiction.clone(), exemption.clone()));
            }
            book.slots.entry(key).or_default().push(r);
        }
        // Overlaps and gaps within a slot.
        let mut keys: Vec<&String> = book.slots.keys().collect();
        keys.sort();
        for key in keys {
            let versions = &book.slots[key];
            let mut sorted: Vec<&Rule> = versions.iter().collect();
            sorted.sort_by_key(|r| (r.effective_from, r.version));
            for pair in sorted.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                match a.effective_to {
                    None => {
                        return Err(RuleError::new(
                            &b.file,
                            b.subject(),
                            format!(
                                "effective period overlaps rule {} v{} ({}, open-ended) for {key}; close the earlier one with effective_to",
                                a.id, a.version, a.file
                            ),
                        ));
                    }
                    Some(to) if b.effective_from <= to => {
                        return Err(RuleError::new(
                            &b.file,
                            b.subject(),
                            format!(
                                "effective period from {} overlaps rule {} v{} ({}) in force until {to} for {key}",
                                b.effective_from, a.id, a.version, a.file
                            ),
                        ));
                    }
                    Some(to) if to.checked_add_days(Days::new(1)) != Some(b.effective_from) => {
                        return Err(RuleError::new(
                            &b.file,
                            b.subject(),
                            format!(
                                "gap in {key}: rule {} v{} ends {to} but this one starts {}; no rule would be in force in between",
                                a.id, a.version, b.effective_from
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        for versions in book.slots.values_mut() {
            versions.sort_by_key(|r| r.effective_from);
        }
        Ok(book)
    }

    fn add_jurisdiction(&mut self, file: &str, n: usize, item: toml::Value) -> Result<(), RuleError> {
        let j: RawJurisdiction =
            item.try_into().map_err(|e| RuleError::new(file, format!("jurisdiction #{}", n + 1), e))?;
        let subject = format!("jurisdiction {}", j.code);
        if !valid_jurisdiction_code(&j.code) {
            return Err(RuleError::new(file, subject, "code must be VN or an ISO 3166-2:VN code like VN-57"));
        }
        if j.merged_into.is_some() != j.merged_on.is_some() {
            return Err(RuleError::new(file, subject, "merged_into and merged_on go together"));
        }
        if self.jurisdictions.contains_key(&j.code) {
            return Err(RuleError::new(file, subject, "duplicate jurisdiction"));
        }
        self.jurisdictions.insert(
            j.code.clone(),
            Jurisdiction {
                code: j.code,
                name: j.name,
                merged_into: j.merged_into,
                merged_on: j.merged_on.map(|d| d.0),
                file: file.to_string(),
            },
        );
        Ok(())
    }

    fn add_land_type(&mut self, file: &str, n: usize, item: toml::Value) -> Result<(), RuleError> {
        let t: RawLandType = item.try_into().map_err(|e| RuleError::new(file, format!("land_type #{}", n + 1), e))?;
        if t.code.len() != 3 || !t.code.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(RuleError::new(
                file,
                format!("land_type {}", t.code),
                "code must be three capital letters (e.g. ODT)",
            ));
        }
        if self.land_types.contains_key(&t.code) {
            return Err(RuleError::new(file, format!("land_type {}", t.code), "duplicate land type"));
        }
        self.land_types.insert(t.code.clone(), LandType { code: t.code, name: t.name, category: t.category });
        Ok(())
    }

    fn check_catalogue(&self) -> Result<(), RuleError> {
        for j in self.jurisdictions.values() {
            if let Some(to) = &j.merged_into
                && !self.jurisdictions.contains_key(to)
            {
                return Err(RuleError::new(
                    &j.file,
                    format!("jurisdiction {}", j.code),
                    format!("merged_into refers to unknown jurisdiction {to}"),
                ));
            }
        }
        Ok(())
    }

    fn check_rule(&self, r: &Rule) -> Result<(), RuleError> {
        let err = |p: String| Err(RuleError::new(&r.file, r.subject(), p));
        if !self.jurisdictions.contains_key(&r.jurisdiction) {
            return err(format!("unknown jurisdiction {}", r.jurisdiction));
        }
        if r.version == 0 {
            return err("version must be 1 or more".into());
        }
        if let Some(to) = r.effective_to
            && to < r.effective_from
        {
            return err(format!("effective_to {to} is before effective_from {}", r.effective_from));
        }
        let pct = |name: &str, v: Decimal| -> Result<(), RuleError> {
            if v.is_sign_negative() && !v.is_zero() {
                Err(RuleError::new(&r.file, r.subject(), format!("negative rate: {name} = {v}")))
            } else if v > Decimal::ONE_HUNDRED {
                Err(RuleError::new(&r.file, r.subject(), format!("{name} = {v} is above 100%")))
            } else {
                Ok(())
            }
        };
        let positive = |name: &str, v: Decimal| -> Result<(), RuleError> {
            if v <= Decimal::ZERO {
                Err(RuleError::new(&r.file, r.subject(), format!("{name} must be positive, got {v}")))
            } else {
                Ok(())
            }
        };
        let land_type = |code: &str| -> Result<&LandType, RuleError> {
            self.land_types
                .get(code)
                .ok_or_else(|| RuleError::new(&r.file, r.subject(), format!("unknown land type {code}")))
        };
        match &r.body {
            RuleBody::Rate { rate_percent, .. } => pct("rate_percent", *rate_percent)?,
            RuleBody::LateAssessmentSurcharge { annual_rate_percent, days_in_year, .. } => {
                pct("annual_rate_percent", *annual_rate_percent)?;
                if !(360..=366).contains(days_in_year) {
                    return err(format!("days_in_year must be 360..=366, got {days_in_year}"));
                }
            }
            RuleBody::NonAgriculturalLandTax { tiers, non_residential_rate_percent } => {
                pct("non_residential_rate_percent", *non_residential_rate_percent)?;
                if tiers.is_empty() {
                    return err("tiers must not be empty".into());
                }
                let mut prev = Decimal::ZERO;
                for (i, t) in tiers.iter().enumerate() {
                    pct(&format!("tiers[{i}].rate_percent"), t.rate_percent)?;
                    let last = i + 1 == tiers.len();
                    match (t.up_to_limit_multiple, last) {
                        (None, true) => {}
                        (None, false) => {
                            return err(format!("tiers[{i}] has no upper bound but is not the last tier"));
                        }
                        (Some(_), true) => {
                            return err("the last tier must have no upper bound".into());
                        }
                        (Some(m), false) => {
                            if m <= prev {
                                return err(format!(
                                    "tiers not ascending: tiers[{i}].up_to_limit_multiple = {m} is not above {prev}"
                                ));
                            }
                            prev = m;
                        }
                    }
                }
            }
            RuleBody::ResidentialLimit { limits_m2 } => {
                for (code, limit) in limits_m2 {
                    let t = land_type(code)?;
                    if t.category != LandCategory::Residential {
                        return err(format!("residential limit given for non-residential land type {code}"));
                    }
                    positive(&format!("limits_m2.{code}"), *limit)?;
                }
            }
            RuleBody::AnnualRentRate { land_use, rate_percent } => {
                if !self.land_uses.contains(land_use) {
                    return err(format!("unknown land use {land_use}"));
                }
                pct("rate_percent", *rate_percent)?;
            }
            RuleBody::OneOffRent { coefficient, reference_term_years } => {
                if coefficient.is_sign_negative() && !coefficient.is_zero() {
                    return err(format!("negative rate: coefficient = {coefficient}"));
                }
                positive("reference_term_years", *reference_term_years)?;
            }
            RuleBody::ProcedureFee { procedure, name, .. } => {
                if procedure.trim().is_empty() || name.trim().is_empty() {
                    return err("procedure and name must not be empty".into());
                }
            }
            RuleBody::LandPriceList { rows } => {
                for (i, row) in rows.iter().enumerate() {
                    if !self.land_types.contains_key(&row.land_type) {
                        return err(format!("rows[{i}]: unknown land type {}", row.land_type));
                    }
                    if row.price_per_m2 == Vnd::ZERO {
                        return err(format!("rows[{i}]: price_per_m2 must be positive"));
                    }
                }
            }
            RuleBody::LevyExemption { reduction_percent, .. } => pct("reduction_percent", *reduction_percent)?,
            RuleBody::FamilyExemption { obligation, .. } => {
                if !matches!(obligation, ObligationKind::RegistrationFee | ObligationKind::PersonalIncomeTax) {
                    return err(format!(
                        "family exemptions apply to registration_fee or personal_income_tax, not {obligation}"
                    ));
                }
            }
            RuleBody::PitSoleHomeExemption {} => {}
            RuleBody::BudgetCode { chapter, sub_item, .. } => {
                if chapter.is_empty() || sub_item.is_empty() {
                    return err("chapter and sub_item must not be empty".into());
                }
            }
        }
        Ok(())
    }

    /// The jurisdictions whose rules apply to `jurisdiction` on `date`, most specific first,
    /// ending with `VN`. `None` for an unknown jurisdiction.
    pub fn chain(&self, jurisdiction: &str, date: NaiveDate) -> Option<Vec<&str>> {
        let mut j = self.jurisdictions.get(jurisdiction)?;
        let mut out = vec![j.code.as_str()];
        while let (Some(to), Some(on)) = (&j.merged_into, j.merged_on) {
            if date < on || out.contains(&to.as_str()) {
                break;
            }
            j = self.jurisdictions.get(to)?;
            out.push(j.code.as_str());
        }
        if !out.contains(&NATIONAL) {
            out.push(NATIONAL);
        }
        Some(out)
    }

    /// The rule of `slot` in force on `date` for the first jurisdiction of `chain` that has one.
    pub(crate) fn in_force(&self, slot: &str, chain: &[&str], date: NaiveDate) -> Option<&Rule> {
        chain.iter().find_map(|j| self.slots.get(&slot_key(slot, j)).and_then(|v| v.iter().find(|r| r.covers(date))))
    }

    /// The first date after `date` on which the answer of [`Self::in_force`] may change.
    pub(crate) fn next_change_after(&self, slot: &str, chain: &[&str], date: NaiveDate) -> Option<NaiveDate> {
        chain
            .iter()
            .filter_map(|j| self.slots.get(&slot_key(slot, j)))
            .flatten()
            .flat_map(|r| [Some(r.effective_from), r.effective_to.and_then(|t| t.checked_add_days(Days::new(1)))])
            .flatten()
            .filter(|d| *d > date)
            .min()
    }

    /// Whether a jurisdiction is in the catalogue.
    pub fn has_jurisdiction(&self, code: &str) -> bool {
        self.jurisdictions.contains_key(code)
    }

    /// A land type of the catalogue.
    pub fn land_type(&self, code: &str) -> Option<&LandType> {
        self.land_types.get(code)
    }

    pub(crate) fn has_land_use(&self, code: &str) -> bool {
        self.land_uses.contains(code)
    }

    pub(crate) fn has_procedure(&self, chain: &[&str], code: &str) -> bool {
        chain.iter().any(|j| self.procedures.contains(&(j.to_string(), code.to_string())))
    }

    pub(crate) fn has_exemption(&self, chain: &[&str], code: &str) -> bool {
        chain.iter().any(|j| self.exemptions.contains(&(j.to_string(), code.to_string())))
    }

    /// Every loaded rule, in no particular order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.slots.values().flatten()
    }
}

fn parse_rule(file: &str, n: usize, item: toml::Value) -> Result<Rule, RuleError> {
    let toml::Value::Table(table) = item else {
        return Err(RuleError::new(file, format!("rule #{}", n + 1), "must be a table"));
    };
    let id = table.get("id").and_then(|v| v.as_str()).map(str::to_string);
    let version = table.get("version").and_then(|v| v.as_integer());
    let subject = match (&id, version) {
        (Some(id), Some(v)) => format!("rule {id} v{v}"),
        (Some(id), None) => format!("rule {id}"),
        _ => format!("rule #{}", n + 1),
    };
    let (mut head, mut body) = (toml::Table::new(), toml::Table::new());
    for (k, v) in table {
        if HEADER_KEYS.contains(&k.as_str()) {
            head.insert(k, v);
        } else {
            body.insert(k, v);
        }
    }
    let h: RawHeader = toml::Value::Table(head).try_into().map_err(|e| RuleError::new(file, subject.clone(), e))?;
    let body: RuleBody = toml::Value::Table(body).try_into().map_err(|e| RuleError::new(file, subject.clone(), e))?;
    let mut price_index = HashMap::new();
    if let RuleBody::LandPriceList { rows } = &body {
        for (i, row) in rows.iter().enumerate() {
            let key = (norm(&row.ward), norm(&row.route), row.position, row.land_type.clone());
            if price_index.insert(key, i).is_some() {
                return Err(RuleError::new(
                    file,
                    subject,
                    format!(
                        "rows[{i}]: duplicate price row for {} / {} / position {} / {}",
                        row.ward, row.route, row.position, row.land_type
                    ),
                ));
            }
        }
    }
    Ok(Rule {
        id: h.id,
        version: h.version,
        jurisdiction: h.jurisdiction,
        effective_from: h.effective_from.0,
        effective_to: h.effective_to.map(|d| d.0),
        legal_basis: h.legal_basis,
        note: h.note,
        unconfirmed: h.unconfirmed,
        sample: h.sample,
        rounding: h.rounding,
        file: file.to_string(),
        body,
        price_index,
    })
}

/// The shipped rule files, compiled in (paths relative to this source file).
const SHIPPED: [(&str, &str); 4] = [
    ("config/rules/national.toml", include_str!("../../config/rules/national.toml")),
    ("config/rules/vn-57.toml", include_str!("../../config/rules/vn-57.toml")),
    ("config/rules/vn-sg.toml", include_str!("../../config/rules/vn-sg.toml")),
    ("config/rules/vn-hn.toml", include_str!("../../config/rules/vn-hn.toml")),
];
