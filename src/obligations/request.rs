//! The quote request and the errors of a calculation, each naming the JSON field at fault.
//!
//! Invariants:
//! - A [`QuoteRequest`] that exists has passed [`QuoteRequest::from_json`]: areas, prices and
//!   amounts are positive, dates are valid, the item kinds are known. Rule-dependent checks
//!   (jurisdiction, land type, procedure code ...) happen in `calculate`.
//! - `Deserialize` goes through `from_json`, so there is one parser and one set of messages.
//! - Every [`CalcError`] carries a JSON path (`parcel.area_m2`, `items[1].contract_price`),
//!   a stable machine code and a human message.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::kinds::{ObligationKind, PayerType, PreviousTenure, Relationship, TransferType};
use crate::money::Vnd;

/// Largest accepted area: 10^10 m² (10,000 km²), a sanity bound.
const MAX_AREA_M2: i64 = 10_000_000_000;

/// Stable machine codes of calculation errors (for problem+json `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CalcErrorCode {
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type or an unparseable value.
    InvalidValue,
    /// An area, price or amount is zero or negative.
    NotPositive,
    /// A value is above its sanity bound.
    OutOfRange,
    /// The jurisdiction is not in the catalogue.
    UnknownJurisdiction,
    /// The land type is not in the catalogue.
    UnknownLandType,
    /// The item kind is not known.
    UnknownItemKind,
    /// No fee rule exists for this procedure code in the jurisdiction.
    UnknownProcedureCode,
    /// The land use has no rent rates anywhere.
    UnknownLandUse,
    /// The exemption code is unknown.
    UnknownExemption,
    /// No row of the price list matches the parcel.
    PriceNotFound,
    /// A needed rule is not in force on the valuation date.
    NoRuleInForce,
    /// The item does not apply to this parcel or period.
    NotApplicable,
    /// An amount would exceed the cap or overflow.
    Overflow,
}

impl CalcErrorCode {
    /// The snake_case code.
    pub const fn as_str(self) -> &'static str {
        match self {
            CalcErrorCode::MissingField => "missing_field",
            CalcErrorCode::InvalidValue => "invalid_value",
            CalcErrorCode::NotPositive => "not_positive",
            CalcErrorCode::OutOfRange => "out_of_range",
            CalcErrorCode::UnknownJurisdiction => "unknown_jurisdiction",
            CalcErrorCode::UnknownLandType => "unknown_land_type",
            CalcErrorCode::UnknownItemKind => "unknown_item_kind",
            CalcErrorCode::UnknownProcedureCode => "unknown_procedure_code",
            CalcErrorCode::UnknownLandUse => "unknown_land_use",
            CalcErrorCode::UnknownExemption => "unknown_exemption",
            CalcErrorCode::PriceNotFound => "price_not_found",
            CalcErrorCode::NoRuleInForce => "no_rule_in_force",
            CalcErrorCode::NotApplicable => "not_applicable",
            CalcErrorCode::Overflow => "overflow",
        }
    }
}

/// A request could not be calculated: which field, why (code), and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct CalcError {
    /// JSON path of the offending field, e.g. `items[1].contract_price` (empty = whole body).
    pub path: String,
    /// Stable machine code.
    pub code: CalcErrorCode,
    /// Human-readable message.
    pub message: String,
}

impl fmt::Display for CalcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.path, self.message, self.code.as_str())
    }
}

impl CalcError {
    pub(crate) fn new(path: impl Into<String>, code: CalcErrorCode, message: impl Into<String>) -> CalcError {
        CalcError { path: path.into(), code, message: message.into() }
    }
}

/// A claim for a levy exemption or reduction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExemptionClaim {
    /// Exemption code from the rule table, e.g. `meritorious_service`.
    pub code: String,
    /// Whether the household has already used its one exemption (then it is not applied).
    pub already_used: bool,
}

/// The land parcel a quote is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parcel {
    /// Area in m² (> 0).
    pub area_m2: Decimal,
    /// Land type code, e.g. `ODT`.
    pub land_type: String,
    /// List price per m²; when absent it is looked up by `ward`, `route`, `position`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_price_per_m2: Option<Vnd>,
    /// Ward / district as printed in the price list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
    /// Route / road segment as printed in the price list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Position (1 frontage, 2 alley ≥ 4 m, 3 alley < 4 m, 4 other).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u8>,
}

/// One obligation to calculate, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuoteItem {
    /// Levy on allocation: area × levy price (default: the parcel's list price).
    LandUseLevyAllocation {
        /// Land price for levy per m², if it differs from the list price.
        levy_price_per_m2: Option<Vnd>,
        /// Exemption claimed.
        exemption: Option<ExemptionClaim>,
    },
    /// Levy on a change of purpose (household/individual) to the parcel's land type.
    LandUseLevyChangeOfPurpose {
        /// The old land type.
        from_land_type: String,
        /// How the old land was held.
        origin: PreviousTenure,
        /// Old list price per m²; looked up like the parcel's when absent.
        old_price_per_m2: Option<Vnd>,
        /// Leased one-off: remaining years of the lease.
        remaining_term_years: Option<Decimal>,
        /// Leased one-off: full lease term in years.
        lease_term_years: Option<Decimal>,
        /// Exemption claimed.
        exemption: Option<ExemptionClaim>,
    },
    /// Levy for land allocated without authority (70% case).
    LandUseLevyUnauthorisedAllocation {
        /// Exemption claimed.
        exemption: Option<ExemptionClaim>,
    },
    /// 5.4%/year on the unassessed period.
    LateAssessmentSurcharge {
        /// The levy or rent the surcharge is computed on.
        principal: Vnd,
        /// Start of the unassessed period (exclusive).
        period_start: NaiveDate,
        /// End of the unassessed period (inclusive).
        period_end: NaiveDate,
    },
    /// Annual rent: area × rate × list price.
    AnnualLandRent {
        /// Land use code (`commercial`, `office` ...).
        land_use: String,
    },
    /// One-off rent for the whole term (UNCONFIRMED).
    OneOffLandRent {
        /// Lease term in years.
        term_years: Decimal,
    },
    /// Registration fee.
    RegistrationFee {
        /// Price in the contract.
        contract_price: Option<Vnd>,
        /// Relationship of the parties.
        relationship: Option<Relationship>,
        /// Sale, gift or inheritance (default sale).
        transfer_type: TransferType,
    },
    /// PIT on the transfer.
    PersonalIncomeTax {
        /// Transfer price in the contract.
        transfer_price: Option<Vnd>,
        /// Relationship of the parties.
        relationship: Option<Relationship>,
        /// The transferor's sole home (UNCONFIRMED exemption).
        sole_home: bool,
    },
    /// Non-agricultural land-use tax for one year.
    NonAgriculturalLandTax,
    /// Fixed procedure fee.
    ProcedureFee {
        /// Procedure code from the fee table.
        procedure_code: String,
        /// Individual or organisation (default individual).
        payer: PayerType,
    },
    /// Late-payment interest up to the valuation date.
    LatePaymentInterest {
        /// Overdue amount.
        principal: Vnd,
        /// Due date (interest runs from the next day).
        due_date: NaiveDate,
    },
}

impl QuoteItem {
    /// The obligation kind this item produces.
    pub fn kind(&self) -> ObligationKind {
        match self {
            QuoteItem::LandUseLevyAllocation { .. } => ObligationKind::LandUseLevyAllocation,
            QuoteItem::LandUseLevyChangeOfPurpose { .. } => ObligationKind::LandUseLevyChangeOfPurpose,
            QuoteItem::LandUseLevyUnauthorisedAllocation { .. } => ObligationKind::LandUseLevyUnauthorisedAllocation,
            QuoteItem::LateAssessmentSurcharge { .. } => ObligationKind::LateAssessmentSurcharge,
            QuoteItem::AnnualLandRent { .. } => ObligationKind::AnnualLandRent,
            QuoteItem::OneOffLandRent { .. } => ObligationKind::OneOffLandRent,
            QuoteItem::RegistrationFee { .. } => ObligationKind::RegistrationFee,
            QuoteItem::PersonalIncomeTax { .. } => ObligationKind::PersonalIncomeTax,
            QuoteItem::NonAgriculturalLandTax => ObligationKind::NonAgriculturalLandTax,
            QuoteItem::ProcedureFee { .. } => ObligationKind::ProcedureFee,
            QuoteItem::LatePaymentInterest { .. } => ObligationKind::LatePaymentInterest,
        }
    }
}

/// A request to calculate the obligations of one parcel on one valuation date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuoteRequest {
    /// `VN-57`, `VN-SG`, `VN-HN` ...
    pub jurisdiction: String,
    /// The date whose rules apply (Asia/Ho_Chi_Minh local date).
    pub valuation_date: NaiveDate,
    /// The parcel.
    pub parcel: Parcel,
    /// The obligations to calculate.
    pub items: Vec<QuoteItem>,
}

impl<'de> Deserialize<'de> for QuoteRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        QuoteRequest::from_json(&v).map_err(serde::de::Error::custom)
    }
}

/// A JSON object being read, with its path for error messages.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: &str) -> Result<Obj<'a>, CalcError> {
        match v {
            Value::Object(map) => Ok(Obj { map, path: path.to_string() }),
            _ => Err(CalcError::new(path, CalcErrorCode::InvalidValue, "expected a JSON object")),
        }
    }

    fn at(&self, name: &str) -> String {
        if self.path.is_empty() { name.to_string() } else { format!("{}.{name}", self.path) }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn required(&self, name: &str) -> Result<&'a Value, CalcError> {
        self.get(name)
            .ok_or_else(|| CalcError::new(self.at(name), CalcErrorCode::MissingField, format!("`{name}` is required")))
    }

    fn opt_str(&self, name: &str) -> Result<Option<String>, CalcError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
            Some(Value::String(_)) => {
                Err(CalcError::new(self.at(name), CalcErrorCode::InvalidValue, "must not be empty"))
            }
            Some(_) => Err(CalcError::new(self.at(name), CalcErrorCode::InvalidValue, "expected a string")),
        }
    }

    fn req_str(&self, name: &str) -> Result<String, CalcError> {
        self.required(name)?;
        self.opt_str(name).map(|s| s.unwrap_or_default())
    }

    fn opt_date(&self, name: &str) -> Result<Option<NaiveDate>, CalcError> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(s) => {
                NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok().filter(|_| s.len() == 10).map(Some).ok_or_else(|| {
                    CalcError::new(
                        self.at(name),
                        CalcErrorCode::InvalidValue,
                        format!("`{s}` is not a date YYYY-MM-DD"),
                    )
                })
            }
        }
    }

    fn req_date(&self, name: &str) -> Result<NaiveDate, CalcError> {
        self.required(name)?;
        self.opt_date(name).map(|d| d.expect("checked present"))
    }

    /// A positive whole-đồng amount (JSON integer).
    fn opt_vnd(&self, name: &str) -> Result<Option<Vnd>, CalcError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let path = self.at(name);
        let n = match v {
            Value::Number(n) if n.is_i64() => n.as_i64().expect("is_i64"),
            Value::Number(n) if n.is_u64() => {
                return Err(CalcError::new(
                    path,
                    CalcErrorCode::OutOfRange,
                    format!("{n} đồng is above the cap of {}", Vnd::MAX_AMOUNT.get()),
                ));
            }
            Value::Number(n) => {
                return Err(CalcError::new(
                    path,
                    CalcErrorCode::InvalidValue,
                    format!("{n} is not a whole number of đồng"),
                ));
            }
            _ => {
                return Err(CalcError::new(path, CalcErrorCode::InvalidValue, "expected an integer amount in đồng"));
            }
        };
        if n <= 0 {
            return Err(CalcError::new(path, CalcErrorCode::NotPositive, format!("must be positive, got {n}")));
        }
        Vnd::new(n).map(Some).map_err(|e| CalcError::new(path, CalcErrorCode::OutOfRange, e.to_string()))
    }

    fn req_vnd(&self, name: &str) -> Result<Vnd, CalcError> {
        self.required(name)?;
        self.opt_vnd(name).map(|v| v.expect("checked present"))
    }

    /// A positive decimal given as a string (`"120.5"`) or a JSON number.
    fn opt_positive_decimal(&self, name: &str, max: i64) -> Result<Option<Decimal>, CalcError> {
        self.decimal(name, false, max)
    }

    /// A decimal (string or number) in `0..=max` (`allow_zero`) or `(0, max]`.
    fn decimal(&self, name: &str, allow_zero: bool, max: i64) -> Result<Option<Decimal>, CalcError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let path = self.at(name);
        let text = match v {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(CalcError::new(
                    path,
                    CalcErrorCode::InvalidValue,
                    "expected a decimal string like \"120.5\" or a number",
                ));
            }
        };
        let d = Decimal::from_str(&text).or_else(|_| Decimal::from_scientific(&text)).map_err(|_| {
            CalcError::new(&path, CalcErrorCode::InvalidValue, format!("`{text}` is not a decimal number"))
        })?;
        if d < Decimal::ZERO || (d.is_zero() && !allow_zero) {
            return Err(CalcError::new(path, CalcErrorCode::NotPositive, format!("must be positive, got {d}")));
        }
        if d > Decimal::from(max) {
            return Err(CalcError::new(path, CalcErrorCode::OutOfRange, format!("{d} is above the bound of {max}")));
        }
        Ok(Some(d.normalize()))
    }

    fn req_positive_decimal(&self, name: &str, max: i64) -> Result<Decimal, CalcError> {
        self.required(name)?;
        self.opt_positive_decimal(name, max).map(|v| v.expect("checked present"))
    }

    fn opt_bool(&self, name: &str) -> Result<bool, CalcError> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(CalcError::new(self.at(name), CalcErrorCode::InvalidValue, "expected true or false")),
        }
    }

    /// A snake_case enum value.
    fn opt_enum<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, CalcError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| CalcError::new(self.at(name), CalcErrorCode::InvalidValue, e.to_string())),
        }
    }

    fn req_enum<T: DeserializeOwned>(&self, name: &str) -> Result<T, CalcError> {
        self.required(name)?;
        self.opt_enum(name).map(|v| v.expect("checked present"))
    }

    fn opt_exemption(&self, name: &str) -> Result<Option<ExemptionClaim>, CalcError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let o = Obj::new(v, &self.at(name))?;
        Ok(Some(ExemptionClaim { code: o.req_str("code")?, already_used: o.opt_bool("already_used")? }))
    }
}

const ITEM_KINDS: [&str; 11] = [
    "land_use_levy_allocation",
    "land_use_levy_change_of_purpose",
    "land_use_levy_unauthorised_allocation",
    "late_assessment_surcharge",
    "annual_land_rent",
    "one_off_land_rent",
    "registration_fee",
    "personal_income_tax",
    "non_agricultural_land_tax",
    "procedure_fee",
    "late_payment_interest",
];

fn parse_item(v: &Value, path: &str) -> Result<QuoteItem, CalcError> {
    let o = Obj::new(v, path)?;
    let kind = o.req_str("kind")?;
    let item = match kind.as_str() {
        "land_use_levy_allocation" => QuoteItem::LandUseLevyAllocation {
            levy_price_per_m2: o.opt_vnd("levy_price_per_m2")?,
            exemption: o.opt_exemption("exemption")?,
        },
        "land_use_levy_change_of_purpose" => {
            let origin: PreviousTenure = o.req_enum("origin")?;
            let (remaining, term) = match origin {
                PreviousTenure::AllocatedAgricultural => (None, None),
                PreviousTenure::LeasedOneOff => {
                    let term = o.req_positive_decimal("lease_term_years", 1000)?;
                    // Remaining may be zero (the lease ran out): nothing to deduct.
                    o.required("remaining_term_years")?;
                    let remaining = o.decimal("remaining_term_years", true, 1000)?.expect("checked present");
                    if remaining > term {
                        return Err(CalcError::new(
                            o.at("remaining_term_years"),
                            CalcErrorCode::InvalidValue,
                            format!("remaining term {remaining} exceeds the lease term {term}"),
                        ));
                    }
                    (Some(remaining), Some(term))
                }
            };
            QuoteItem::LandUseLevyChangeOfPurpose {
                from_land_type: o.req_str("from_land_type")?,
                origin,
                old_price_per_m2: o.opt_vnd("old_price_per_m2")?,
                remaining_term_years: remaining,
                lease_term_years: term,
                exemption: o.opt_exemption("exemption")?,
            }
        }
        "land_use_levy_unauthorised_allocation" => {
            QuoteItem::LandUseLevyUnauthorisedAllocation { exemption: o.opt_exemption("exemption")? }
        }
        "late_assessment_surcharge" => {
            let start = o.req_date("period_start")?;
            let end = o.req_date("period_end")?;
            if end < start {
                return Err(CalcError::new(
                    o.at("period_end"),
                    CalcErrorCode::InvalidValue,
                    format!("period_end {end} is before period_start {start}"),
                ));
            }
            QuoteItem::LateAssessmentSurcharge {
                principal: o.req_vnd("principal")?,
                period_start: start,
                period_end: end,
            }
        }
        "annual_land_rent" => QuoteItem::AnnualLandRent { land_use: o.req_str("land_use")? },
        "one_off_land_rent" => QuoteItem::OneOffLandRent { term_years: o.req_positive_decimal("term_years", 1000)? },
        "registration_fee" => QuoteItem::RegistrationFee {
            contract_price: o.opt_vnd("contract_price")?,
            relationship: o.opt_enum("relationship")?,
            transfer_type: o.opt_enum("transfer_type")?.unwrap_or_default(),
        },
        "personal_income_tax" => QuoteItem::PersonalIncomeTax {
            transfer_price: o.opt_vnd("transfer_price")?,
            relationship: o.opt_enum("relationship")?,
            sole_home: o.opt_bool("sole_home")?,
        },
        "non_agricultural_land_tax" => QuoteItem::NonAgriculturalLandTax,
        "procedure_fee" => QuoteItem::ProcedureFee {
            procedure_code: o.req_str("procedure_code")?,
            payer: o.opt_enum("payer")?.unwrap_or(PayerType::Individual),
        },
        "late_payment_interest" => {
            QuoteItem::LatePaymentInterest { principal: o.req_vnd("principal")?, due_date: o.req_date("due_date")? }
        }
        other => {
            return Err(CalcError::new(
                o.at("kind"),
                CalcErrorCode::UnknownItemKind,
                format!("unknown item kind `{other}`; expected one of: {}", ITEM_KINDS.join(", ")),
            ));
        }
    };
    Ok(item)
}

impl QuoteRequest {
    /// Parses a JSON body, naming the field at fault in any error.
    pub fn from_json(v: &Value) -> Result<QuoteRequest, CalcError> {
        let o = Obj::new(v, "")?;
        let jurisdiction = o.req_str("jurisdiction")?;
        let valuation_date = o.req_date("valuation_date")?;
        let p = Obj::new(o.required("parcel")?, "parcel")?;
        let position = match p.get("position") {
            None => None,
            Some(v) => Some(v.as_u64().filter(|n| (1..=9).contains(n)).map(|n| n as u8).ok_or_else(|| {
                CalcError::new(p.at("position"), CalcErrorCode::InvalidValue, "expected a position number 1..=9")
            })?),
        };
        let parcel = Parcel {
            area_m2: p.req_positive_decimal("area_m2", MAX_AREA_M2)?,
            land_type: p.req_str("land_type")?,
            list_price_per_m2: p.opt_vnd("list_price_per_m2")?,
            ward: p.opt_str("ward")?,
            route: p.opt_str("route")?,
            position,
        };
        let items = match o.required("items")? {
            Value::Array(items) if !items.is_empty() => items,
            Value::Array(_) => {
                return Err(CalcError::new("items", CalcErrorCode::InvalidValue, "at least one item is required"));
            }
            _ => {
                return Err(CalcError::new("items", CalcErrorCode::InvalidValue, "expected an array of items"));
            }
        };
        let items = items
            .iter()
            .enumerate()
            .map(|(i, v)| parse_item(v, &format!("items[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(QuoteRequest { jurisdiction, valuation_date, parcel, items })
    }
}
