//! Tests of rule loading, every calculator (hand-computed figures), request errors and
//! properties. Invariant under test: the figures in the comments are the arithmetic a reviewer
//! can redo by hand; each expected amount is rounded half away from zero.

use chrono::NaiveDate;
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};

use super::*;
use crate::money::Vnd;

fn book() -> RuleBook {
    RuleBook::shipped().expect("shipped rules load")
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn quote(v: Value) -> Result<Calculation, CalcError> {
    let req = QuoteRequest::from_json(&v)?;
    calculate(&book(), &req)
}

/// A VN-57 request on 2026-11-26 for an ODT parcel at an explicit list price.
fn req(area: &str, price: i64, items: Value) -> Value {
    json!({"jurisdiction": "VN-57", "valuation_date": "2026-11-26",
           "parcel": {"area_m2": area, "land_type": "ODT", "list_price_per_m2": price},
           "items": items})
}

fn amounts(c: &Calculation) -> Vec<i64> {
    c.lines.iter().map(|l| l.amount.get()).collect()
}

fn err(v: Value) -> CalcError {
    quote(v).expect_err("should fail")
}

// ------------------------------------------------------------------ rule tables

#[test]
fn shipped_rules_load_and_cover_examples() {
    let b = book();
    assert!(b.rules().count() > 40);
    assert!(b.has_jurisdiction("VN-57") && b.has_jurisdiction("VN-SG"));
    // After the merger VN-57 resolves to itself, then HCMC, then national.
    assert_eq!(b.chain("VN-57", date("2026-11-26")).unwrap(), vec!["VN-57", "VN-SG", "VN"]);
    assert_eq!(b.chain("VN-57", date("2025-06-30")).unwrap(), vec!["VN-57", "VN"]);
    assert!(b.chain("VN-99", date("2026-01-01")).is_none());
    // Every UNCONFIRMED mention in the text is flagged in the table.
    for r in b.rules() {
        if r.legal_basis.contains("UNCONFIRMED") || r.note.starts_with("UNCONFIRMED") {
            assert!(r.unconfirmed, "{} mentions UNCONFIRMED but is not flagged", r.id);
        }
        if r.legal_basis.contains("SAMPLE") {
            assert!(r.sample, "{} is SAMPLE but not flagged", r.id);
        }
    }
}

const CATALOGUE: &str = r#"
[[jurisdiction]]
code = "VN"
name = "national"
[[jurisdiction]]
code = "VN-57"
name = "Bình Dương"
[[land_type]]
code = "ODT"
name = "urban residential"
category = "residential"
[[land_use]]
code = "commercial"
name = "commercial"
"#;

fn load(rules: &str) -> Result<RuleBook, RuleError> {
    RuleBook::from_sources(&[
        ("catalogue.toml".to_string(), CATALOGUE.to_string()),
        ("rules.toml".to_string(), rules.to_string()),
    ])
}

fn rate_rule(id: &str, version: u32, from: &str, to: Option<&str>, pct: &str) -> String {
    let to = to.map_or(String::new(), |t| format!("effective_to = {t}\n"));
    format!(
        "[[rule]]\nid = \"{id}\"\nversion = {version}\njurisdiction = \"VN\"\neffective_from = {from}\n{to}legal_basis = \"test\"\nkind = \"rate\"\nrate = \"registration_fee\"\nrate_percent = \"{pct}\"\n"
    )
}

fn load_err(rules: &str) -> String {
    load(rules).expect_err("should not load").to_string()
}

#[test]
fn valid_versions_load() {
    let text = rate_rule("vn.rf", 1, "2020-01-01", Some("2021-12-31"), "0.5")
        + &rate_rule("vn.rf", 2, "2022-01-01", None, "0.6");
    load(&text).unwrap();
}

#[test]
fn overlap_is_a_load_error() {
    let text = rate_rule("vn.rf", 1, "2020-01-01", Some("2022-01-01"), "0.5")
        + &rate_rule("vn.rf", 2, "2022-01-01", None, "0.6");
    let e = load_err(&text);
    assert!(e.starts_with("rules.toml: rule vn.rf v2: "), "{e}");
    assert!(e.contains("overlaps rule vn.rf v1"), "{e}");
    // Open-ended earlier version.
    let text = rate_rule("vn.rf", 1, "2020-01-01", None, "0.5") + &rate_rule("vn.rf", 2, "2022-01-01", None, "0.6");
    let e = load_err(&text);
    assert!(e.contains("rule vn.rf v2") && e.contains("overlaps"), "{e}");
    // Two different ids filling the same slot also overlap.
    let text = rate_rule("vn.a", 1, "2020-01-01", None, "0.5") + &rate_rule("vn.b", 1, "2021-01-01", None, "0.6");
    let e = load_err(&text);
    assert!(e.contains("rule vn.b v1") && e.contains("overlaps rule vn.a v1"), "{e}");
}

#[test]
fn gap_is_a_load_error() {
    let text = rate_rule("vn.rf", 1, "2020-01-01", Some("2021-12-30"), "0.5")
        + &rate_rule("vn.rf", 2, "2022-01-01", None, "0.6");
    let e = load_err(&text);
    assert!(e.starts_with("rules.toml: rule vn.rf v2: gap in"), "{e}");
    assert!(e.contains("ends 2021-12-30") && e.contains("starts 2022-01-01"), "{e}");
}

#[test]
fn negative_rate_is_a_load_error() {
    let e = load_err(&rate_rule("vn.rf", 1, "2020-01-01", None, "-0.5"));
    assert_eq!(e, "rules.toml: rule vn.rf v1: negative rate: rate_percent = -0.5");
}

#[test]
fn unknown_references_are_load_errors() {
    let price = r#"
[[rule]]
id = "vn-57.prices"
version = 1
jurisdiction = "VN-57"
effective_from = 2020-01-01
legal_basis = "SAMPLE"
sample = true
kind = "land_price_list"
[[rule.rows]]
ward = "W"
route = "R"
position = 1
land_type = "XYZ"
price_per_m2 = 1000
"#;
    let e = load_err(price);
    assert_eq!(e, "rules.toml: rule vn-57.prices v1: rows[0]: unknown land type XYZ");
    let rent = r#"
[[rule]]
id = "vn-57.rent.casino"
version = 1
jurisdiction = "VN-57"
effective_from = 2020-01-01
legal_basis = "x"
kind = "annual_rent_rate"
land_use = "casino"
rate_percent = "2"
"#;
    assert_eq!(load_err(rent), "rules.toml: rule vn-57.rent.casino v1: unknown land use casino");
    let jur = rate_rule("vn.rf", 1, "2020-01-01", None, "0.5").replace("\"VN\"", "\"VN-99\"");
    assert_eq!(load_err(&jur), "rules.toml: rule vn.rf v1: unknown jurisdiction VN-99");
    let rel = r#"
[[rule]]
id = "vn.fam"
version = 1
jurisdiction = "VN"
effective_from = 2020-01-01
legal_basis = "x"
kind = "family_exemption"
obligation = "registration_fee"
relationships = ["cousin"]
transfer_types = ["gift"]
"#;
    let e = load_err(rel);
    assert!(e.starts_with("rules.toml: rule vn.fam v1: ") && e.contains("cousin"), "{e}");
}

#[test]
fn duplicate_ids_tiers_dates_and_unknown_fields_are_load_errors() {
    let text = rate_rule("vn.rf", 1, "2020-01-01", None, "0.5") + &rate_rule("vn.rf", 1, "2020-01-01", None, "0.5");
    assert!(load_err(&text).contains("rule vn.rf v1: duplicate rule id and version"));

    let tiers = r#"
[[rule]]
id = "vn.tax"
version = 1
jurisdiction = "VN"
effective_from = 2020-01-01
legal_basis = "x"
kind = "non_agricultural_land_tax"
non_residential_rate_percent = "0.03"
tiers = [{ up_to_limit_multiple = "3", rate_percent = "0.03" }, { up_to_limit_multiple = "1", rate_percent = "0.07" }, { rate_percent = "0.15" }]
"#;
    let e = load_err(tiers);
    assert!(e.starts_with("rules.toml: rule vn.tax v1: tiers not ascending"), "{e}");

    let bad_date = rate_rule("vn.rf", 1, "2020-13-01", None, "0.5");
    let e = load_err(&bad_date);
    assert!(e.starts_with("rules.toml: file: TOML syntax error (line 5)"), "{e}");
    // A quoted date is accepted, but must still be a real date.
    load(&rate_rule("vn.rf", 1, "\"2020-01-01\"", None, "0.5")).unwrap();
    let string_date = rate_rule("vn.rf", 1, "\"2020-02-30\"", None, "0.5");
    let e = load_err(&string_date);
    assert!(e.starts_with("rules.toml: rule vn.rf v1: malformed date"), "{e}");
    let with_time = rate_rule("vn.rf", 1, "2020-01-01T00:00:00", None, "0.5");
    assert!(load_err(&with_time).contains("malformed date"));
    let reversed = rate_rule("vn.rf", 1, "2020-01-01", Some("2019-01-01"), "0.5");
    assert!(load_err(&reversed).contains("is before effective_from"));

    let typo = rate_rule("vn.rf", 1, "2020-01-01", None, "0.5") + "efective_to = 2021-01-01\n";
    let e = load_err(&typo);
    assert!(e.starts_with("rules.toml: rule vn.rf v1: ") && e.contains("efective_to"), "{e}");
    // Every message is one line.
    assert!(!e.contains('\n'));
}

// ------------------------------------------------------------------ the worked example

#[test]
fn worked_example_registration_fee_and_pit() {
    // 120 m² × 25,000,000 = 3,000,000,000 > contract 2,800,000,000 → base 3,000,000,000.
    // Registration fee 0.5% → 15,000,000; PIT 2% of the list value (price below it) → 60,000,000.
    let body = json!({"jurisdiction": "VN-57", "valuation_date": "2026-11-26",
        "parcel": {"area_m2": "120", "land_type": "ODT", "list_price_per_m2": 25000000},
        "items": [{"kind": "registration_fee", "contract_price": 2800000000u64},
                  {"kind": "personal_income_tax", "transfer_price": 2800000000u64}]});
    let req: QuoteRequest = serde_json::from_value(body.clone()).unwrap();
    let c = calculate(&book(), &req).unwrap();
    assert_eq!(amounts(&c), vec![15_000_000, 60_000_000]);
    assert_eq!(c.total, Vnd::new(75_000_000).unwrap());
    let rf = &c.lines[0];
    assert_eq!(rf.kind, ObligationKind::RegistrationFee);
    assert_eq!(rf.base.get(), 3_000_000_000);
    assert_eq!(rf.rate, dec!(0.005));
    assert_eq!(rf.rule_id, "vn.registration_fee.rate");
    assert!(!rf.unconfirmed);
    assert!(rf.budget_code_unconfirmed);
    assert_eq!(c.lines[1].base.get(), 3_000_000_000);
    let out = serde_json::to_value(&c).unwrap();
    assert_eq!(out["total"], json!(75_000_000));
    assert_eq!(out["lines"][0]["kind"], json!("registration_fee"));
    assert_eq!(out["lines"][0]["rate"], json!("0.005"));
    // Area as a JSON number works too.
    let mut b2 = body;
    b2["parcel"]["area_m2"] = json!(120);
    assert_eq!(quote(b2).unwrap().total.get(), 75_000_000);
}

// ------------------------------------------------------------------ levy

#[test]
fn levy_allocation() {
    // 120 × 25,000,000 × 100% = 3,000,000,000.
    let c = quote(req("120", 25_000_000, json!([{"kind": "land_use_levy_allocation"}]))).unwrap();
    assert_eq!(amounts(&c), vec![3_000_000_000]);
    // Levy price given: 120 × 10,000,000 = 1,200,000,000.
    let c = quote(req("120", 25_000_000, json!([{"kind": "land_use_levy_allocation", "levy_price_per_m2": 10000000}])))
        .unwrap();
    assert_eq!(amounts(&c), vec![1_200_000_000]);
}

#[test]
fn levy_exemption_only_within_the_limit_and_once() {
    // VN-57 ODT limit 160 m² (sample). Area 200: within 160 × 25,000,000 × (1 − 100%) = 0;
    // above 40 × 25,000,000 = 1,000,000,000.
    let item = json!([{"kind": "land_use_levy_allocation",
                       "exemption": {"code": "meritorious_service"}}]);
    let c = quote(req("200", 25_000_000, item)).unwrap();
    assert_eq!(amounts(&c), vec![0, 1_000_000_000]);
    let ex = c.lines[0].exemption.as_ref().unwrap();
    assert_eq!(ex.code, "meritorious_service");
    assert_eq!(ex.reduction, Decimal::ONE);
    assert_eq!(ex.rule_version, 2); // Decree 291/2025 version in force on 2026-11-26
    assert!(c.lines[0].unconfirmed);
    assert!(c.lines[1].exemption.is_none());
    // 50% reduction, area 100 within the limit: 100 × 25,000,000 × 50% = 1,250,000,000.
    let item = json!([{"kind": "land_use_levy_allocation",
                       "exemption": {"code": "ethnic_minority_poor_household"}}]);
    assert_eq!(amounts(&quote(req("100", 25_000_000, item)).unwrap()), vec![1_250_000_000]);
    // Already used by the household: full levy 200 × 25,000,000 = 5,000,000,000.
    let item = json!([{"kind": "land_use_levy_allocation",
                       "exemption": {"code": "meritorious_service", "already_used": true}}]);
    let c = quote(req("200", 25_000_000, item)).unwrap();
    assert_eq!(amounts(&c), vec![5_000_000_000]);
    assert!(c.lines[0].exemption.is_none());
    // Twice in one request: the second is refused.
    let item = json!([
        {"kind": "land_use_levy_allocation", "exemption": {"code": "meritorious_service"}},
        {"kind": "land_use_levy_unauthorised_allocation", "exemption": {"code": "meritorious_service"}}]);
    let e = err(req("200", 25_000_000, item));
    assert_eq!(e.path, "items[1].exemption");
    assert_eq!(e.code, CalcErrorCode::NotApplicable);
    // Unknown exemption code.
    let item = json!([{"kind": "land_use_levy_allocation", "exemption": {"code": "vip"}}]);
    let e = err(req("200", 25_000_000, item));
    assert_eq!((e.path.as_str(), e.code), ("items[0].exemption.code", CalcErrorCode::UnknownExemption));
}

#[test]
fn levy_change_of_purpose() {
    // CLN → ODT, allocated agricultural land, prices from the VN-57 SAMPLE list
    // (Phú Cường / Đại lộ Bình Dương / position 1): ODT 25,000,000, CLN 450,000.
    // 120 × (25,000,000 − 450,000) = 120 × 24,550,000 = 2,946,000,000.
    let body = json!({"jurisdiction": "VN-57", "valuation_date": "2026-11-26",
        "parcel": {"area_m2": "120", "land_type": "ODT", "ward": "Phường Phú Cường",
                   "route": "Đại lộ Bình Dương", "position": 1},
        "items": [{"kind": "land_use_levy_change_of_purpose", "from_land_type": "CLN",
                   "origin": "allocated_agricultural"}]});
    let c = quote(body).unwrap();
    assert_eq!(amounts(&c), vec![2_946_000_000]);
    assert!(c.lines[0].unconfirmed, "sample prices make the line unconfirmed");
    // Leased, rent paid one-off: old = 20,000,000 × 25 / 50 = 10,000,000 per m²;
    // 120 × (25,000,000 − 10,000,000) = 1,800,000,000.
    let item = json!([{"kind": "land_use_levy_change_of_purpose", "from_land_type": "TMD",
        "origin": "leased_one_off", "old_price_per_m2": 20000000,
        "remaining_term_years": "25", "lease_term_years": 50}]);
    assert_eq!(amounts(&quote(req("120", 25_000_000, item)).unwrap()), vec![1_800_000_000]);
    // Old worth more than new: floored at 0.
    let item = json!([{"kind": "land_use_levy_change_of_purpose", "from_land_type": "LUC",
        "origin": "allocated_agricultural", "old_price_per_m2": 30000000}]);
    assert_eq!(amounts(&quote(req("120", 25_000_000, item)).unwrap()), vec![0]);
    // Allocated agricultural origin with a non-agricultural old type is refused.
    let item = json!([{"kind": "land_use_levy_change_of_purpose", "from_land_type": "TMD",
        "origin": "allocated_agricultural", "old_price_per_m2": 1000}]);
    assert_eq!(err(req("120", 25_000_000, item)).path, "items[0].from_land_type");
    let item = json!([{"kind": "land_use_levy_change_of_purpose", "from_land_type": "XXX",
        "origin": "allocated_agricultural", "old_price_per_m2": 1000}]);
    let e = err(req("120", 25_000_000, item));
    assert_eq!((e.path.as_str(), e.code), ("items[0].from_land_type", CalcErrorCode::UnknownLandType));
}

#[test]
fn levy_unauthorised_allocation_70_percent() {
    // 120 × 25,000,000 × 70% = 2,100,000,000.
    let item = json!([{"kind": "land_use_levy_unauthorised_allocation"}]);
    let c = quote(req("120", 25_000_000, item.clone())).unwrap();
    assert_eq!(amounts(&c), vec![2_100_000_000]);
    assert_eq!(c.lines[0].rate, dec!(0.7));
    // Decree 291/2025 takes effect 2025-11-06: the day before there is no rule.
    let mut body = req("120", 25_000_000, item);
    body["valuation_date"] = json!("2025-11-05");
    let e = err(body);
    assert_eq!((e.path.as_str(), e.code), ("valuation_date", CalcErrorCode::NoRuleInForce));
}

#[test]
fn late_assessment_surcharge() {
    // 1,000,000,000 × 5.4% × 365/365 (2023-01-01 → 2024-01-01) = 54,000,000.
    let item = json!([{"kind": "late_assessment_surcharge", "principal": 1000000000u64,
        "period_start": "2023-01-01", "period_end": "2024-01-01"}]);
    assert_eq!(amounts(&quote(req("1", 1, item)).unwrap()), vec![54_000_000]);
    // 2024-01-01 → 2024-03-01 = 31 + 29 = 60 days:
    // 1,000,000,000 × 0.054 × 60 / 365 = 8,876,712.33 → 8,876,712.
    let item = json!([{"kind": "late_assessment_surcharge", "principal": 1000000000u64,
        "period_start": "2024-01-01", "period_end": "2024-03-01"}]);
    assert_eq!(amounts(&quote(req("1", 1, item)).unwrap()), vec![8_876_712]);
    // Only for cases before 2024-08-01.
    let item = json!([{"kind": "late_assessment_surcharge", "principal": 1000,
        "period_start": "2024-08-01", "period_end": "2024-09-01"}]);
    assert_eq!(err(req("1", 1, item)).path, "items[0].period_start");
}

// ------------------------------------------------------------------ rent

#[test]
fn annual_land_rent() {
    // Hà Nội commercial 2%: 100 × 50,000,000 × 2% = 100,000,000.
    let body = json!({"jurisdiction": "VN-HN", "valuation_date": "2026-11-26",
        "parcel": {"area_m2": "100", "land_type": "TMD", "list_price_per_m2": 50000000},
        "items": [{"kind": "annual_land_rent", "land_use": "commercial"},
                  {"kind": "annual_land_rent", "land_use": "office"},
                  {"kind": "annual_land_rent", "land_use": "market_infrastructure"}]});
    // office 1.4% → 70,000,000; markets 1% → 50,000,000.
    assert_eq!(amounts(&quote(body).unwrap()), vec![100_000_000, 70_000_000, 50_000_000]);
    // VN-57 has no office rate; after the merger the HCMC rate applies (1.5%, sample):
    // 100 × 20,000,000 × 1.5% = 30,000,000.
    let body = |d: &str| {
        json!({"jurisdiction": "VN-57", "valuation_date": d,
        "parcel": {"area_m2": "100", "land_type": "TMD", "list_price_per_m2": 20000000},
        "items": [{"kind": "annual_land_rent", "land_use": "office"}]})
    };
    let c = quote(body("2026-11-26")).unwrap();
    assert_eq!(amounts(&c), vec![30_000_000]);
    assert_eq!(c.lines[0].rule_id, "vn-sg.rent.office");
    // Before the merger: no rule.
    let e = err(body("2025-06-30"));
    assert_eq!(e.code, CalcErrorCode::NoRuleInForce);
    let item = json!([{"kind": "annual_land_rent", "land_use": "casino"}]);
    let e = err(req("1", 1, item));
    assert_eq!((e.path.as_str(), e.code), ("items[0].land_use", CalcErrorCode::UnknownLandUse));
}

#[test]
fn one_off_land_rent_unconfirmed() {
    // 100 × 20,000,000 × 1 × 50/70 = 1,428,571,428.57 → 1,428,571,429.
    let item = json!([{"kind": "one_off_land_rent", "term_years": 50}]);
    let c = quote(req("100", 20_000_000, item)).unwrap();
    assert_eq!(amounts(&c), vec![1_428_571_429]);
    assert!(c.lines[0].unconfirmed);
    assert!(c.is_unconfirmed());
}

// ------------------------------------------------------------------ registration fee and PIT

#[test]
fn registration_fee_cases() {
    // Contract above list value: 3,500,000,000 × 0.5% = 17,500,000.
    let item = json!([{"kind": "registration_fee", "contract_price": 3500000000u64}]);
    assert_eq!(amounts(&quote(req("120", 25_000_000, item)).unwrap()), vec![17_500_000]);
    // No contract price: list value 3,000,000,000 × 0.5% = 15,000,000.
    let item = json!([{"kind": "registration_fee"}]);
    assert_eq!(amounts(&quote(req("120", 25_000_000, item)).unwrap()), vec![15_000_000]);
    // Gift parent → child: exempt (0), exemption recorded.
    let item = json!([{"kind": "registration_fee", "relationship": "parent_child", "transfer_type": "gift"}]);
    let c = quote(req("120", 25_000_000, item)).unwrap();
    assert_eq!(amounts(&c), vec![0]);
    assert_eq!(c.lines[0].exemption.as_ref().unwrap().code, "family:parent_child");
    assert_eq!(c.lines[0].base.get(), 3_000_000_000);
    // Sale between siblings is not exempt from the registration fee.
    let item = json!([{"kind": "registration_fee", "relationship": "sibling", "transfer_type": "sale"}]);
    assert_eq!(amounts(&quote(req("120", 25_000_000, item)).unwrap()), vec![15_000_000]);
    // Rounding half away from zero: 1 m² × 100 × 0.5% = 0.5 → 1; × 300 → 1.5 → 2; × 299 → 1.495 → 1.
    for (price, fee) in [(100, 1), (300, 2), (299, 1)] {
        let item = json!([{"kind": "registration_fee"}]);
        assert_eq!(amounts(&quote(req("1", price, item)).unwrap()), vec![fee]);
    }
}

#[test]
fn personal_income_tax_cases() {
    // Transfer price above list: 4,000,000,000 × 2% = 80,000,000.
    let item = json!([{"kind": "personal_income_tax", "transfer_price": 4000000000u64}]);
    assert_eq!(amounts(&quote(req("120", 25_000_000, item)).unwrap()), vec![80_000_000]);
    // No price: list value 3,000,000,000 × 2% = 60,000,000.
    let item = json!([{"kind": "personal_income_tax"}]);
    assert_eq!(amounts(&quote(req("120", 25_000_000, item)).unwrap()), vec![60_000_000]);
    // Sale between siblings: exempt.
    let item = json!([{"kind": "personal_income_tax", "transfer_price": 4000000000u64, "relationship": "sibling"}]);
    let c = quote(req("120", 25_000_000, item)).unwrap();
    assert_eq!(amounts(&c), vec![0]);
    assert!(!c.lines[0].unconfirmed);
    // Sole home (UNCONFIRMED): exempt, flagged.
    let item = json!([{"kind": "personal_income_tax", "sole_home": true}]);
    let c = quote(req("120", 25_000_000, item)).unwrap();
    assert_eq!(amounts(&c), vec![0]);
    assert!(c.lines[0].unconfirmed);
    // 1 m² × 25 × 2% = 0.5 → 1.
    let item = json!([{"kind": "personal_income_tax"}]);
    assert_eq!(amounts(&quote(req("1", 25, item)).unwrap()), vec![1]);
}

// ------------------------------------------------------------------ non-agricultural land tax

#[test]
fn non_agricultural_land_tax_tiers() {
    let tax =
        |area: &str| amounts(&quote(req(area, 25_000_000, json!([{"kind": "non_agricultural_land_tax"}]))).unwrap());
    // VN-57 ODT limit 160 m² (sample); price 25,000,000.
    // 120 × 25,000,000 × 0.03% = 900,000.
    assert_eq!(tax("120"), vec![900_000]);
    // Exactly the limit: 160 × 25,000,000 × 0.03% = 1,200,000, one tier only.
    assert_eq!(tax("160"), vec![1_200_000]);
    // 160.5: + 0.5 × 25,000,000 × 0.07% = 8,750.
    assert_eq!(tax("160.5"), vec![1_200_000, 8_750]);
    // Exactly 3×: 1,200,000 + 320 × 25,000,000 × 0.07% (5,600,000).
    assert_eq!(tax("480"), vec![1_200_000, 5_600_000]);
    // 500: + 20 × 25,000,000 × 0.15% = 750,000.
    assert_eq!(tax("500"), vec![1_200_000, 5_600_000, 750_000]);
    // Commercial land: flat 0.03%: 100 × 20,000,000 × 0.03% = 600,000.
    let body = json!({"jurisdiction": "VN-57", "valuation_date": "2026-11-26",
        "parcel": {"area_m2": "100", "land_type": "TMD", "list_price_per_m2": 20000000},
        "items": [{"kind": "non_agricultural_land_tax"}]});
    assert_eq!(amounts(&quote(body).unwrap()), vec![600_000]);
    let body = json!({"jurisdiction": "VN-57", "valuation_date": "2026-11-26",
        "parcel": {"area_m2": "100", "land_type": "LUC", "list_price_per_m2": 200000},
        "items": [{"kind": "non_agricultural_land_tax"}]});
    assert_eq!(err(body).path, "parcel.land_type");
}

// ------------------------------------------------------------------ procedure fees

#[test]
fn procedure_fees() {
    let item = json!([{"kind": "procedure_fee", "procedure_code": "first_certificate"},
                      {"kind": "procedure_fee", "procedure_code": "first_certificate", "payer": "organisation"}]);
    let c = quote(req("1", 1, item)).unwrap();
    assert_eq!(amounts(&c), vec![100_000, 500_000]);
    assert!(c.lines.iter().all(|l| l.unconfirmed));
    let item = json!([{"kind": "procedure_fee", "procedure_code": "nope"}]);
    let e = err(req("1", 1, item));
    assert_eq!((e.path.as_str(), e.code), ("items[0].procedure_code", CalcErrorCode::UnknownProcedureCode));
    // HCMC's procedure applies to VN-57 after the merger, not before.
    let item = json!([{"kind": "procedure_fee", "procedure_code": "change_of_purpose_appraisal"}]);
    assert_eq!(amounts(&quote(req("1", 1, item.clone())).unwrap()), vec![750_000]);
    let mut before = req("1", 1, item);
    before["valuation_date"] = json!("2025-06-30");
    assert_eq!(err(before).code, CalcErrorCode::UnknownProcedureCode);
}

// ------------------------------------------------------------------ late-payment interest

#[test]
fn late_payment_interest_day_count() {
    let b = book();
    let p = Vnd::new(10_000_000).unwrap();
    // Due 2026-01-31, paid 2026-03-02: Feb 1..28 (28) + Mar 1..2 (2) = 30 days.
    // 10,000,000 × 0.03% × 30 = 90,000.
    let l = late_payment_interest(&b, "VN-57", p, date("2026-01-31"), date("2026-03-02")).unwrap();
    assert_eq!(l.amount.get(), 90_000);
    assert_eq!(l.rate, dec!(0.009));
    // Paid the day after: 1 day → 3,000.
    let l = late_payment_interest(&b, "VN-57", p, date("2026-01-31"), date("2026-02-01")).unwrap();
    assert_eq!(l.amount.get(), 3_000);
    // Paid on or before the due date: 0.
    for as_of in ["2026-01-31", "2026-01-01"] {
        let l = late_payment_interest(&b, "VN-57", p, date("2026-01-31"), date(as_of)).unwrap();
        assert_eq!(l.amount, Vnd::ZERO);
    }
    // Across the 2016-07-01 rate change: 2016-06-21..30 = 10 days × 0.05% +
    // 2016-07-01..10 = 10 days × 0.03% = 0.8% × 10,000,000 = 80,000.
    let l = late_payment_interest(&b, "VN", p, date("2016-06-20"), date("2016-07-10")).unwrap();
    assert_eq!(l.amount.get(), 80_000);
    assert!(l.unconfirmed, "the 0.05% period is UNCONFIRMED");
    // Rounding: 1,234,567 × 0.03% × 1 = 370.3701 → 370.
    let l =
        late_payment_interest(&b, "VN", Vnd::new(1_234_567).unwrap(), date("2026-01-01"), date("2026-01-02")).unwrap();
    assert_eq!(l.amount.get(), 370);
    // No rate before 2013-07-01.
    let e = late_payment_interest(&b, "VN", p, date("2013-06-01"), date("2013-07-10")).unwrap_err();
    assert_eq!(e.code, CalcErrorCode::NoRuleInForce);
    let e = late_payment_interest(&b, "VN-99", p, date("2026-01-01"), date("2026-01-02")).unwrap_err();
    assert_eq!((e.path.as_str(), e.code), ("jurisdiction", CalcErrorCode::UnknownJurisdiction));
    // As a quote item, as of the valuation date 2026-11-26: due 2026-11-16 → 10 days → 30,000.
    let item = json!([{"kind": "late_payment_interest", "principal": 10000000, "due_date": "2026-11-16"}]);
    assert_eq!(amounts(&quote(req("1", 1, item)).unwrap()), vec![30_000]);
}

// ------------------------------------------------------------------ request errors

#[test]
fn request_errors_name_the_field() {
    let ok_items = json!([{"kind": "registration_fee", "contract_price": 1000}]);
    let cases: Vec<(Value, &str, CalcErrorCode)> = vec![
        (req("0", 1000, ok_items.clone()), "parcel.area_m2", CalcErrorCode::NotPositive),
        (req("-5", 1000, ok_items.clone()), "parcel.area_m2", CalcErrorCode::NotPositive),
        (req("abc", 1000, ok_items.clone()), "parcel.area_m2", CalcErrorCode::InvalidValue),
        (req("10", 0, ok_items.clone()), "parcel.list_price_per_m2", CalcErrorCode::NotPositive),
        (req("10", -3, ok_items.clone()), "parcel.list_price_per_m2", CalcErrorCode::NotPositive),
        (
            req("10", 1000, json!([{"kind": "registration_fee"}, {"kind": "registration_fee", "contract_price": -1}])),
            "items[1].contract_price",
            CalcErrorCode::NotPositive,
        ),
        (
            req("10", 1000, json!([{"kind": "registration_fee", "contract_price": 1.5}])),
            "items[0].contract_price",
            CalcErrorCode::InvalidValue,
        ),
        (
            req("10", 1000, json!([{"kind": "registration_fee"}, {"kind": "lottery"}])),
            "items[1].kind",
            CalcErrorCode::UnknownItemKind,
        ),
        (req("10", 1000, json!([{"contract_price": 5}])), "items[0].kind", CalcErrorCode::MissingField),
        (req("10", 1000, json!([{"kind": "procedure_fee"}])), "items[0].procedure_code", CalcErrorCode::MissingField),
        (
            req("10", 1000, json!([{"kind": "registration_fee", "relationship": "cousin"}])),
            "items[0].relationship",
            CalcErrorCode::InvalidValue,
        ),
        (
            req("10", 2_000_000_000_000_000, json!([{"kind": "registration_fee"}])),
            "parcel.list_price_per_m2",
            CalcErrorCode::OutOfRange,
        ),
    ];
    for (body, path, code) in cases {
        let e = err(body.clone());
        assert_eq!((e.path.as_str(), e.code), (path, code), "{body} → {e}");
    }
    let mut b = req("10", 1000, ok_items.clone());
    b["jurisdiction"] = json!("VN-99");
    let e = err(b);
    assert_eq!((e.path.as_str(), e.code), ("jurisdiction", CalcErrorCode::UnknownJurisdiction));
    let mut b = req("10", 1000, ok_items.clone());
    b["valuation_date"] = json!("2026-02-30");
    assert_eq!(err(b).path, "valuation_date");
    let mut b = req("10", 1000, ok_items.clone());
    b["valuation_date"] = json!("2010-01-01");
    let e = err(b);
    assert_eq!((e.path.as_str(), e.code), ("valuation_date", CalcErrorCode::NoRuleInForce));
    let mut b = req("10", 1000, ok_items.clone());
    b["parcel"]["land_type"] = json!("XYZ");
    let e = err(b);
    assert_eq!((e.path.as_str(), e.code), ("parcel.land_type", CalcErrorCode::UnknownLandType));
    let mut b = req("10", 1000, ok_items.clone());
    b["items"] = json!([]);
    assert_eq!(err(b).path, "items");
    // Overflow: 1,000,000,000 m² × 999,999,999,999 đ/m² is far above the 10^15 cap.
    let e = err(req("1000000000", 999_999_999_999, json!([{"kind": "registration_fee"}])));
    assert_eq!((e.path.as_str(), e.code), ("items[0]", CalcErrorCode::Overflow));
    // Display: path, message, code on one line.
    let e = err(req("0", 1000, ok_items));
    assert_eq!(e.to_string(), "parcel.area_m2: must be positive, got 0 (not_positive)");
    // serde Deserialize reports the same message.
    let v = req("0", 1000, json!([{"kind": "registration_fee"}]));
    let se = serde_json::from_value::<QuoteRequest>(v).unwrap_err().to_string();
    assert!(se.contains("parcel.area_m2"), "{se}");
}

#[test]
fn price_lookup_from_the_list() {
    let body = |ward: &str, pos: u8| {
        json!({"jurisdiction": "VN-SG", "valuation_date": "2026-11-26",
        "parcel": {"area_m2": "50", "land_type": "ODT", "ward": ward, "route": "lê lợi", "position": pos},
        "items": [{"kind": "registration_fee"}]})
    };
    // 50 × 150,000,000 (position 2, SAMPLE) × 0.5% = 37,500,000; case-insensitive match.
    let c = quote(body("Phường Bến Thành", 2)).unwrap();
    assert_eq!(amounts(&c), vec![37_500_000]);
    assert!(c.lines[0].unconfirmed);
    let e = err(body("Phường Bến Thành", 4));
    assert_eq!((e.path.as_str(), e.code), ("parcel", CalcErrorCode::PriceNotFound));
    let b = json!({"jurisdiction": "VN-SG", "valuation_date": "2026-11-26",
        "parcel": {"area_m2": "50", "land_type": "ODT"}, "items": [{"kind": "registration_fee"}]});
    let e = err(b);
    assert_eq!((e.path.as_str(), e.code), ("parcel.list_price_per_m2", CalcErrorCode::MissingField));
}

#[test]
fn request_serialises_back_to_an_equal_request() {
    let v = json!({"jurisdiction": "VN-57", "valuation_date": "2026-11-26",
        "parcel": {"area_m2": "120.5", "land_type": "ODT", "list_price_per_m2": 25000000},
        "items": [{"kind": "registration_fee", "contract_price": 2800000000u64, "relationship": "spouse", "transfer_type": "gift"},
                  {"kind": "land_use_levy_change_of_purpose", "from_land_type": "CLN", "origin": "leased_one_off",
                   "old_price_per_m2": 1000, "remaining_term_years": 0, "lease_term_years": "50"},
                  {"kind": "non_agricultural_land_tax"},
                  {"kind": "procedure_fee", "procedure_code": "first_certificate"}]});
    let r = QuoteRequest::from_json(&v).unwrap();
    let back = QuoteRequest::from_json(&serde_json::to_value(&r).unwrap()).unwrap();
    assert_eq!(r, back);
}

// ------------------------------------------------------------------ properties

fn multi_item(area: Decimal, price: i64, contract: i64) -> QuoteRequest {
    let v = json!({"jurisdiction": "VN-57", "valuation_date": "2026-11-26",
        "parcel": {"area_m2": area.to_string(), "land_type": "ODT", "list_price_per_m2": price},
        "items": [
            {"kind": "land_use_levy_allocation", "exemption": {"code": "meritorious_service"}},
            {"kind": "registration_fee", "contract_price": contract},
            {"kind": "personal_income_tax", "transfer_price": contract},
            {"kind": "non_agricultural_land_tax"},
            {"kind": "annual_land_rent", "land_use": "commercial"},
            {"kind": "one_off_land_rent", "term_years": "49.5"},
            {"kind": "land_use_levy_unauthorised_allocation"},
            {"kind": "procedure_fee", "procedure_code": "transfer_appraisal"},
            {"kind": "late_payment_interest", "principal": contract, "due_date": "2026-10-01"}]});
    QuoteRequest::from_json(&v).unwrap()
}

fn area_strategy() -> impl Strategy<Value = Decimal> {
    (1i64..=2_000_000).prop_map(|n| Decimal::new(n, 2)) // 0.01 .. 20,000 m²
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn totals_lines_and_rounding(area in area_strategy(), price in 1i64..=300_000_000, contract in 1i64..=50_000_000_000) {
        let b = book();
        let c = calculate(&b, &multi_item(area, price, contract)).unwrap();
        let sum: i64 = c.lines.iter().map(|l| l.amount.get()).sum();
        prop_assert_eq!(c.total.get(), sum);
        for l in &c.lines {
            prop_assert!(l.amount.get() >= 0);
            prop_assert!(!l.exact_amount.is_sign_negative() || l.exact_amount.is_zero());
            let diff = (l.amount.to_decimal() - l.exact_amount).abs();
            prop_assert!(diff <= dec!(0.5), "{} vs {}", l.amount, l.exact_amount);
        }
    }

    #[test]
    fn never_decreases_when_area_or_price_grows(
        area in area_strategy(), extra_area in 0i64..=100_000,
        price in 1i64..=300_000_000, extra_price in 0i64..=50_000_000,
        contract in 1i64..=50_000_000_000,
    ) {
        let b = book();
        let base = calculate(&b, &multi_item(area, price, contract)).unwrap();
        let bigger_area = calculate(&b, &multi_item(area + Decimal::new(extra_area, 2), price, contract)).unwrap();
        let bigger_price = calculate(&b, &multi_item(area, price + extra_price, contract)).unwrap();
        for other in [&bigger_area, &bigger_price] {
            prop_assert!(other.total >= base.total);
            for kind in ObligationKind::ALL {
                let s = |c: &Calculation| c.lines.iter().filter(|l| l.kind == kind).map(|l| l.amount.get()).sum::<i64>();
                prop_assert!(s(other) >= s(&base), "{} decreased", kind);
            }
        }
    }
}
