//! Quotes and notices over HTTP: amounts, codes, masking, cancellation, bad input.

use chrono::{Duration, NaiveDate, Utc};
use paygate::auth::Role;
use paygate::obligations::NoticeCode;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp};

/// The example of the obligations issue, as written.
fn example_quote() -> Value {
    json!({"jurisdiction": "VN-57", "valuation_date": "2026-11-26",
     "parcel": {"area_m2": "120", "land_type": "ODT", "list_price_per_m2": 25000000},
     "items": [{"kind": "registration_fee", "contract_price": 2800000000u64},
               {"kind": "personal_income_tax", "transfer_price": 2800000000u64}]})
}

fn vn_today() -> NaiveDate {
    (Utc::now() + Duration::hours(7)).date_naive()
}

fn party(due: NaiveDate) -> Value {
    json!({"payer": {"name": "Nguyễn Văn An", "identifier": "079123456789"},
           "dossier_ref": "HS-2026-000123", "due_date": due.to_string()})
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

async fn issue_from_example(app: &TestApp, issuer: &str, due: NaiveDate) -> Reply {
    let q = app.post_json("/v1/quotes", &example_quote(), Some(issuer), None).await;
    assert_eq!(q.status, 201, "{}", q.text);
    let body = with(party(due), json!({"quote_id": q.body["quote_id"]}));
    app.post_json("/v1/notices", &body, Some(issuer), None).await
}

#[tokio::test]
async fn the_example_quote_gives_the_worked_amounts() {
    let app = TestApp::spawn().await;
    let issuer = app.token(Role::Issuer).await;
    let r = app.post_json("/v1/quotes", &example_quote(), Some(&issuer), Some("q-1")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body["quote_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(r.body["valid_until"].as_str().is_some());
    let lines = r.body["lines"].as_array().unwrap();
    let amount = |kind: &str| lines.iter().find(|l| l["kind"] == kind).unwrap()["amount"].as_i64().unwrap();
    // Registration fee: 0.5% × max(120 × 25,000,000 = 3,000,000,000; 2,800,000,000) = 15,000,000.
    assert_eq!(amount("registration_fee"), 15_000_000);
    // PIT: 2% × 2,800,000,000 would be below the list value, so 2% × 3,000,000,000 = 60,000,000.
    assert_eq!(amount("personal_income_tax"), 60_000_000);
    assert_eq!(r.body["total"], 75_000_000);
    for l in lines {
        assert!(l["legal_basis"].as_str().is_some_and(|s| !s.is_empty()), "{l}");
        assert!(l["rule_id"].as_str().is_some_and(|s| !s.is_empty()), "{l}");
        assert!(l["budget_code"].as_str().is_some_and(|s| !s.is_empty()), "{l}");
    }
    assert_eq!(app.count("quotes").await, 1);
}

#[tokio::test]
async fn quotes_and_notices_need_the_issuer_role() {
    let app = TestApp::spawn().await;
    app.post_json("/v1/quotes", &example_quote(), None, None).await.assert_problem(401, "unauthorized");
    for role in [Role::Treasurer, Role::Auditor, Role::Admin] {
        let t = app.token(role).await;
        app.post_json("/v1/quotes", &example_quote(), Some(&t), None).await.assert_problem(403, "forbidden");
        app.post_json("/v1/notices", &example_quote(), Some(&t), None).await.assert_problem(403, "forbidden");
    }
    assert_eq!(app.count("quotes").await, 0);
}

#[tokio::test]
async fn a_notice_from_a_quote_keeps_its_amounts_and_masks_the_payer() {
    let app = TestApp::spawn().await;
    let issuer = app.token(Role::Issuer).await;
    let due = vn_today() + Duration::days(30);
    let r = issue_from_example(&app, &issuer, due).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let code = r.body["code"].as_str().unwrap().to_string();
    assert!(NoticeCode::parse(&code).is_ok(), "{code}");
    assert!(code.starts_with(&format!("TB-{}-", vn_today().format("%Y"))), "{code}");

    let public = app.get(&format!("/v1/notices/{code}"), None).await;
    assert_eq!(public.status, 200, "{}", public.text);
    let n = &public.body;
    assert_eq!(n["status"], "unpaid");
    assert_eq!(n["principal"], 75_000_000);
    assert_eq!(n["late_interest"]["amount"], 0);
    assert_eq!(n["total_due"], 75_000_000);
    assert_eq!(n["due_date"], due.to_string());
    assert_eq!(n["lines"].as_array().unwrap().len(), 2);
    assert_eq!(n["payer"]["identifier"], "********6789");
    assert_eq!(n["payer"]["name"], "Nguyễn V. A.");
    assert!(!public.text.contains("079123456789"), "the full identifier never shows");
    assert!(!r.text.contains("079123456789"));
    // Codes are read case-insensitively.
    assert_eq!(app.get(&format!("/v1/notices/{}", code.to_lowercase()), None).await.status, 200);
}

#[tokio::test]
async fn late_interest_accrues_at_003_percent_a_day_after_the_due_date() {
    let app = TestApp::spawn().await;
    let issuer = app.token(Role::Issuer).await;
    let due = vn_today();
    let code = issue_from_example(&app, &issuer, due).await.body["code"].as_str().unwrap().to_string();
    // Paid on the due date: no interest.
    let r = app.get(&format!("/v1/notices/{code}?as_of={due}"), None).await;
    assert_eq!(r.body["late_interest"]["amount"], 0);
    // 10 days late: 75,000,000 × 0.0003 × 10 = 225,000.
    let r = app.get(&format!("/v1/notices/{code}?as_of={}", due + Duration::days(10)), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["late_interest"]["days"], 10);
    assert_eq!(r.body["late_interest"]["amount"], 225_000);
    assert_eq!(r.body["total_due"], 75_225_000);
    // 1 day late: 75,000,000 × 0.0003 = 22,500.
    let r = app.get(&format!("/v1/notices/{code}?as_of={}", due + Duration::days(1)), None).await;
    assert_eq!(r.body["late_interest"]["amount"], 22_500);
    let r = app.get(&format!("/v1/notices/{code}?as_of={}", due - Duration::days(1)), None).await;
    assert_eq!(r.assert_problem(422, "validation-error")["field"], "as_of");
}

#[tokio::test]
async fn late_interest_is_not_charged_on_interest_the_notice_already_carries() {
    let app = TestApp::spawn().await;
    let issuer = app.token(Role::Issuer).await;
    let mut quote = example_quote();
    // Interest already owed on an earlier obligation: 10,000,000 × 0.0003 × 10 days = 30,000.
    quote["items"].as_array_mut().unwrap().push(json!(
        {"kind": "late_payment_interest", "principal": 10_000_000, "due_date": "2026-11-16"}));
    let q = app.post_json("/v1/quotes", &quote, Some(&issuer), None).await;
    assert_eq!(q.status, 201, "{}", q.text);
    let due = vn_today();
    let body = with(party(due), json!({"quote_id": q.body["quote_id"]}));
    let n = app.post_json("/v1/notices", &body, Some(&issuer), None).await;
    assert_eq!(n.body["principal"], 75_030_000, "{}", n.text);
    let code = n.body["code"].as_str().unwrap();
    // 10 days late: 0.03% a day on the 75,000,000 of obligations, not on the 30,000 of interest.
    let r = app.get(&format!("/v1/notices/{code}?as_of={}", due + Duration::days(10)), None).await;
    assert_eq!(r.body["late_interest"]["amount"], 225_000, "{}", r.text);
    assert_eq!(r.body["total_due"], 75_255_000);
}

#[tokio::test]
async fn a_notice_can_be_issued_from_inputs_directly() {
    let app = TestApp::spawn().await;
    let issuer = app.token(Role::Issuer).await;
    let body = with(example_quote(), party(vn_today() + Duration::days(15)));
    let r = app.post_json("/v1/notices", &body, Some(&issuer), Some("n-direct")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["principal"], 75_000_000);
    // A retry replays, and issues nothing more.
    let again = app.post_json("/v1/notices", &body, Some(&issuer), Some("n-direct")).await;
    assert_eq!(again.body["code"], r.body["code"]);
    assert_eq!(app.count("notices").await, 1);
}

#[tokio::test]
async fn a_notice_keeps_its_quote_amounts_when_the_rules_change() {
    let app = TestApp::spawn().await;
    let issuer = app.token(Role::Issuer).await;
    let q = app.post_json("/v1/quotes", &example_quote(), Some(&issuer), None).await;
    assert_eq!(q.body["total"], 75_000_000);

    // Another instance whose registration fee rule doubled.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("config/rules").unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let national = dir.path().join("national.toml");
    let text = std::fs::read_to_string(&national).unwrap();
    let changed = text.replacen(
        "rate = \"registration_fee\"\nrate_percent = \"0.5\"",
        "rate = \"registration_fee\"\nrate_percent = \"1\"",
        1,
    );
    assert!(text != changed, "the shipped national table holds the 0.5% registration fee rate");
    std::fs::write(&national, changed).unwrap();
    let other = app.spawn_sibling(|c| c.obligations.rules_dir = dir.path().to_path_buf()).await;
    let issuer2 = other.token(Role::Issuer).await;
    let requote = other.post_json("/v1/quotes", &example_quote(), Some(&issuer2), None).await;
    assert_eq!(requote.body["total"], 90_000_000, "new quotes use the new rule: {}", requote.text);

    let body = with(party(vn_today() + Duration::days(5)), json!({"quote_id": q.body["quote_id"]}));
    let n = other.post_json("/v1/notices", &body, Some(&issuer2), None).await;
    assert_eq!(n.status, 201, "{}", n.text);
    assert_eq!(n.body["principal"], 75_000_000, "the notice keeps the quoted amounts");
}

#[tokio::test]
async fn a_quote_issues_one_notice_and_expires() {
    let app = TestApp::spawn().await;
    let issuer = app.token(Role::Issuer).await;
    let q = app.post_json("/v1/quotes", &example_quote(), Some(&issuer), None).await;
    let body = with(party(vn_today() + Duration::days(5)), json!({"quote_id": q.body["quote_id"]}));
    assert_eq!(app.post_json("/v1/notices", &body, Some(&issuer), None).await.status, 201);
    app.post_json("/v1/notices", &body, Some(&issuer), None).await.assert_problem(409, "quote-already-issued");

    // A quote past its validity.
    let mut old = app.store.find_quote(q.body["quote_id"].as_str().unwrap()).await.unwrap().unwrap();
    old.id = "q_expired".into();
    old.valid_until = Utc::now() - Duration::minutes(1);
    app.store.insert_quote(&old).await.unwrap();
    let body = with(party(vn_today() + Duration::days(5)), json!({"quote_id": "q_expired"}));
    let r = app.post_json("/v1/notices", &body, Some(&issuer), None).await;
    let p = r.assert_problem(422, "validation-error");
    assert_eq!(p["field"], "quote_id");
    assert!(p["detail"].as_str().unwrap().contains("expired"));
    assert_eq!(app.count("notices").await, 1);
}

#[tokio::test]
async fn every_single_typo_and_adjacent_swap_is_not_a_valid_code() {
    let app = TestApp::spawn().await;
    let issuer = app.token(Role::Issuer).await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        let r = issue_from_example(&app, &issuer, vn_today() + Duration::days(3)).await;
        codes.push(r.body["code"].as_str().unwrap().to_string());
    }
    let alphabet: Vec<char> = "0123456789ABCDEFGHJKMNPQRSTVWXYZ".chars().collect();
    let mut variants = 0;
    for code in &codes {
        let chars: Vec<char> = code.chars().collect();
        let mut typos: Vec<String> = Vec::new();
        for i in 3..chars.len() {
            if chars[i] == '-' {
                continue;
            }
            for &c in &alphabet {
                if c != chars[i] {
                    let mut v = chars.clone();
                    v[i] = c;
                    typos.push(v.into_iter().collect());
                }
            }
            if i + 1 < chars.len() && chars[i + 1] != '-' && chars[i] != chars[i + 1] {
                let mut v = chars.clone();
                v.swap(i, i + 1);
                typos.push(v.into_iter().collect());
            }
        }
        for typo in typos {
            let r = app.get(&format!("/v1/notices/{typo}"), None).await;
            r.assert_problem(400, "invalid-notice-code");
            variants += 1;
        }
    }
    assert!(variants > 800, "{variants}");
    // A well-formed code that was never issued is a different answer.
    let unknown = NoticeCode::generate(2026, &mut rand::rng()).unwrap().to_string();
    app.get(&format!("/v1/notices/{unknown}"), None).await.assert_problem(404, "notice-not-found");
    app.get("/v1/notices/hello", None).await.assert_problem(400, "invalid-notice-code");
}

#[tokio::test]
async fn an_issuer_cancels_an_unpaid_notice_with_a_reason() {
    let app = TestApp::spawn().await;
    let issuer = app.token(Role::Issuer).await;
    let code = issue_from_example(&app, &issuer, vn_today() + Duration::days(3)).await.body["code"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/notices/{code}/cancel");
    let treasurer = app.token(Role::Treasurer).await;
    app.post_json(&path, &json!({"reason": "x"}), Some(&treasurer), None).await.assert_problem(403, "forbidden");
    let r = app.post_json(&path, &json!({"reason": " "}), Some(&issuer), None).await;
    assert_eq!(r.assert_problem(422, "validation-error")["field"], "reason");

    let r = app.post_json(&path, &json!({"reason": "dossier withdrawn by the applicant"}), Some(&issuer), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(r.body["total_due"], 0);
    assert_eq!(r.body["cancellation"]["reason"], "dossier withdrawn by the applicant");
    let public = app.get(&format!("/v1/notices/{code}"), None).await;
    assert_eq!(public.body["status"], "cancelled");

    let again = app.post_json(&path, &json!({"reason": "again"}), Some(&issuer), None).await;
    again.assert_problem(409, "notice-not-cancellable");
    let unknown = NoticeCode::generate(2026, &mut rand::rng()).unwrap();
    let r = app.post_json(&format!("/v1/notices/{unknown}/cancel"), &json!({"reason": "x"}), Some(&issuer), None).await;
    r.assert_problem(404, "notice-not-found");
}

/// Each bad quote input is 422 naming the field, and nothing is stored.
#[tokio::test]
async fn bad_quote_inputs_are_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let issuer = app.token(Role::Issuer).await;
    let base = example_quote();
    let set = |pointer: &str, value: Value| {
        let mut b = base.clone();
        *b.pointer_mut(pointer).unwrap() = value;
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (set("/parcel/area_m2", json!("-5")), "parcel.area_m2"),
        (set("/parcel/area_m2", json!("0")), "parcel.area_m2"),
        (set("/parcel/list_price_per_m2", json!(-1)), "parcel.list_price_per_m2"),
        (set("/parcel/list_price_per_m2", json!(0)), "parcel.list_price_per_m2"),
        (set("/items/0/contract_price", json!(0)), "items[0].contract_price"),
        (set("/items/1/transfer_price", json!(-2800000000i64)), "items[1].transfer_price"),
        (set("/jurisdiction", json!("VN-XX")), "jurisdiction"),
        (set("/parcel/land_type", json!("MOON")), "parcel.land_type"),
        (set("/items/1/kind", json!("castle_tax")), "items[1].kind"),
        (
            set("/items/0", json!({"kind": "procedure_fee", "procedure_code": "NO-SUCH-PROC"})),
            "items[0].procedure_code",
        ),
        (set("/valuation_date", json!("1990-01-01")), "valuation_date"),
        (set("/valuation_date", json!("26/11/2026")), "valuation_date"),
        (set("/parcel/area_m2", json!("9999999999")), "items[0]"),
        (set("/parcel/list_price_per_m2", json!(i64::MAX)), "parcel.list_price_per_m2"),
    ];
    for (body, field) in cases {
        let r = app.post_json("/v1/quotes", &body, Some(&issuer), None).await;
        let p = r.assert_problem(422, "validation-error");
        let got = p["field"].as_str().unwrap();
        assert!(got.starts_with(field) || got == field, "expected field {field}, got {got}: {}", r.text);
    }
    assert_eq!(app.count("quotes").await, 0, "nothing stored");
}

#[tokio::test]
async fn bad_notice_inputs_are_422_naming_each_field() {
    let app = TestApp::spawn().await;
    let issuer = app.token(Role::Issuer).await;
    let q = app.post_json("/v1/quotes", &example_quote(), Some(&issuer), None).await;
    let quote_id = q.body["quote_id"].clone();

    let r = app.post_json("/v1/notices", &json!({"quote_id": quote_id}), Some(&issuer), None).await;
    let p = r.assert_problem(422, "validation-error");
    let fields: Vec<&str> = p["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["payer.name", "payer.identifier", "dossier_ref", "due_date"]);

    let past = with(party(vn_today() - Duration::days(1)), json!({"quote_id": quote_id}));
    let r = app.post_json("/v1/notices", &past, Some(&issuer), None).await;
    assert_eq!(r.assert_problem(422, "validation-error")["field"], "due_date");

    let mut bad_id = with(party(vn_today()), json!({"quote_id": quote_id}));
    bad_id["payer"]["identifier"] = json!("12 34");
    let r = app.post_json("/v1/notices", &bad_id, Some(&issuer), None).await;
    assert_eq!(r.assert_problem(422, "validation-error")["field"], "payer.identifier");

    let unknown = with(party(vn_today()), json!({"quote_id": "q_nope"}));
    let r = app.post_json("/v1/notices", &unknown, Some(&issuer), None).await;
    assert_eq!(r.assert_problem(422, "validation-error")["field"], "quote_id");

    assert_eq!(app.count("notices").await, 0, "nothing stored");
}
