//! The closed vocabularies shared by rule tables, requests and results.
//!
//! Invariants: every enum here serialises as a stable snake_case string that appears in rule
//! files, request JSON and result lines alike; renaming a variant is a breaking change of all three.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kind of an obligation line (and of a quote item).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObligationKind {
    /// Land-use levy on allocation (tiền sử dụng đất khi giao đất).
    LandUseLevyAllocation,
    /// Land-use levy on a change of purpose by a household or individual.
    LandUseLevyChangeOfPurpose,
    /// Land-use levy for a certificate of land allocated without authority (70% case).
    LandUseLevyUnauthorisedAllocation,
    /// 5.4%/year surcharge for cases assessed late.
    LateAssessmentSurcharge,
    /// Annual land rent (tiền thuê đất hằng năm).
    AnnualLandRent,
    /// One-off land rent for the whole term (UNCONFIRMED formula).
    OneOffLandRent,
    /// Registration fee (lệ phí trước bạ).
    RegistrationFee,
    /// Personal income tax on a transfer (thuế TNCN).
    PersonalIncomeTax,
    /// Non-agricultural land-use tax (thuế SDĐ phi nông nghiệp).
    NonAgriculturalLandTax,
    /// Procedure fee (phí thẩm định hồ sơ, lệ phí cấp giấy chứng nhận).
    ProcedureFee,
    /// Late-payment interest (tiền chậm nộp).
    LatePaymentInterest,
}

impl ObligationKind {
    /// Every kind, in a stable order.
    pub const ALL: [ObligationKind; 11] = [
        ObligationKind::LandUseLevyAllocation,
        ObligationKind::LandUseLevyChangeOfPurpose,
        ObligationKind::LandUseLevyUnauthorisedAllocation,
        ObligationKind::LateAssessmentSurcharge,
        ObligationKind::AnnualLandRent,
        ObligationKind::OneOffLandRent,
        ObligationKind::RegistrationFee,
        ObligationKind::PersonalIncomeTax,
        ObligationKind::NonAgriculturalLandTax,
        ObligationKind::ProcedureFee,
        ObligationKind::LatePaymentInterest,
    ];

    /// The snake_case name used on the wire and in rule files.
    pub const fn as_str(self) -> &'static str {
        match self {
            ObligationKind::LandUseLevyAllocation => "land_use_levy_allocation",
            ObligationKind::LandUseLevyChangeOfPurpose => "land_use_levy_change_of_purpose",
            ObligationKind::LandUseLevyUnauthorisedAllocation => "land_use_levy_unauthorised_allocation",
            ObligationKind::LateAssessmentSurcharge => "late_assessment_surcharge",
            ObligationKind::AnnualLandRent => "annual_land_rent",
            ObligationKind::OneOffLandRent => "one_off_land_rent",
            ObligationKind::RegistrationFee => "registration_fee",
            ObligationKind::PersonalIncomeTax => "personal_income_tax",
            ObligationKind::NonAgriculturalLandTax => "non_agricultural_land_tax",
            ObligationKind::ProcedureFee => "procedure_fee",
            ObligationKind::LatePaymentInterest => "late_payment_interest",
        }
    }

    /// Whether an overdue amount of this kind accrues late-payment interest. Interest itself does
    /// not: Law 38/2019/QH14 Art. 59 charges it on the overdue obligation, not on earlier interest.
    pub const fn accrues_late_interest(self) -> bool {
        !matches!(self, ObligationKind::LatePaymentInterest)
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<ObligationKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ObligationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Broad category of a land type code (from the `[[land_type]]` catalogue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandCategory {
    /// ODT, ONT.
    Residential,
    /// LUC, CLN, BHK, NTS, RSX ...
    Agricultural,
    /// TMD, SKC ... (non-agricultural, not residential).
    NonAgricultural,
}

/// Who pays a procedure fee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayerType {
    /// Household or individual.
    Individual,
    /// Organisation.
    Organisation,
}

impl PayerType {
    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            PayerType::Individual => "individual",
            PayerType::Organisation => "organisation",
        }
    }
}

/// Family relationship between the parties of a transfer (for fee and tax exemptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relationship {
    /// Husband and wife.
    Spouse,
    /// Natural parent and child.
    ParentChild,
    /// Adoptive parent and adopted child.
    AdoptiveParentChild,
    /// Parent-in-law and child-in-law.
    ParentInLawChildInLaw,
    /// Grandparent (paternal or maternal) and grandchild.
    GrandparentGrandchild,
    /// Brothers and sisters.
    Sibling,
    /// Anything else (no family exemption).
    Other,
}

/// How the land changes hands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferType {
    /// Sale (chuyển nhượng).
    #[default]
    Sale,
    /// Gift (tặng cho).
    Gift,
    /// Inheritance (thừa kế).
    Inheritance,
}

/// How the land was held before a change of purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreviousTenure {
    /// Agricultural land allocated by the State (old amount = area × agricultural list price).
    AllocatedAgricultural,
    /// Leased land with rent paid one-off (old amount = area × price × remaining / lease term).
    LeasedOneOff,
}
