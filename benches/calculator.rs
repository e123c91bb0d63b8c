//! Benchmark of a realistic multi-item quote: parse the JSON request and calculate it with the
//! shipped rule tables (loaded once, outside the measurement).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use paygate::obligations::{QuoteRequest, RuleBook, calculate};
use serde_json::json;

fn quote_body() -> serde_json::Value {
    json!({
        "jurisdiction": "VN-57", "valuation_date": "2026-11-26",
        "parcel": {"area_m2": "245.6", "land_type": "ODT", "ward": "Phường Phú Cường",
                   "route": "Đại lộ Bình Dương", "position": 1},
        "items": [
            {"kind": "land_use_levy_change_of_purpose", "from_land_type": "CLN",
             "origin": "allocated_agricultural", "exemption": {"code": "meritorious_service"}},
            {"kind": "registration_fee", "contract_price": 5800000000u64},
            {"kind": "personal_income_tax", "transfer_price": 5800000000u64},
            {"kind": "non_agricultural_land_tax"},
            {"kind": "procedure_fee", "procedure_code": "transfer_appraisal"},
            {"kind": "procedure_fee", "procedure_code": "first_certificate"},
            {"kind": "late_payment_interest", "principal": 15000000, "due_date": "2026-09-30"}
        ]
    })
}

fn bench(c: &mut Criterion) {
    let book = RuleBook::shipped().expect("shipped rules");
    let body = quote_body();
    let req = QuoteRequest::from_json(&body).expect("valid request");
    let calc = calculate(&book, &req).expect("calculates");
    assert_eq!(calc.lines.len(), 9);

    c.bench_function("calculate_multi_item_quote", |b| {
        b.iter(|| calculate(black_box(&book), black_box(&req)).unwrap())
    });
    c.bench_function("parse_and_calculate_multi_item_quote", |b| {
        b.iter(|| {
            let req = QuoteRequest::from_json(black_box(&body)).unwrap();
            calculate(&book, &req).unwrap()
        })
    });
    c.bench_function("load_shipped_rule_book", |b| b.iter(|| RuleBook::shipped().unwrap()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
