//! Quotes and payment notices: the application service between the HTTP handlers, the pure
//! obligation engine and the store.
//!
//! Invariants: amounts come only from the rule engine (`obligations::calculate`) at quote time;
//! a notice copies its quote's lines and never recomputes them; a quote past `valid_until`
//! cannot be issued; nothing is stored when a request fails validation; late-payment interest
//! is computed on read, for an Asia/Ho_Chi_Minh date, from the rules in force.

use std::path::Path;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde_json::Value;

use crate::app::AppState;
use crate::auth::Principal;
use crate::clock::vn_date;
use crate::http::problem::{FieldError, Problem};
use crate::money::Vnd;
use crate::obligations::{CalcError, Calculation, NoticeCode, ObligationKind, ObligationLine, QuoteRequest, RuleBook};
use crate::store::notices::{CancelOutcome, IssueError, LineRecord, NoticeRecord, QuoteRecord};
use crate::store::now;

/// Loads every `*.toml` in `dir` (sorted by name) into a validated rule book. The error names
/// the file, the rule and the problem.
pub fn load_rules(dir: &Path) -> Result<RuleBook, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("obligations.rules_dir: cannot read folder {}: {}", dir.display(), e.kind()))?;
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("obligations.rules_dir: no *.toml rule tables in {}", dir.display()));
    }
    let mut sources = Vec::with_capacity(files.len());
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("rule table {}: {}", f.display(), e.kind()))?;
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        sources.push((name, text));
    }
    RuleBook::from_sources(&sources).map_err(|e| format!("rule tables in {}: {e}", dir.display()))
}

/// 422 naming the field, for a calculation that cannot be made.
pub fn calc_problem(e: CalcError) -> Problem {
    let mut p = Problem::validation_many(vec![FieldError { field: e.path.clone(), detail: e.message.clone() }]);
    p.code = Some(e.code.as_str().to_string());
    p
}

/// Converts an engine line to its stored form.
pub fn line_record(line: &ObligationLine) -> LineRecord {
    LineRecord {
        kind: line.kind.as_str().to_string(),
        description: line.description.clone(),
        base: line.base.get(),
        rate: line.rate.normalize().to_string(),
        amount: line.amount.get(),
        legal_basis: line.legal_basis.clone(),
        rule_id: line.rule_id.clone(),
        rule_version: i64::from(line.rule_version),
        budget_code: line.budget_code.clone(),
        exemption: line.exemption.as_ref().map(|e| serde_json::to_string(e).expect("exemption serialises")),
        unconfirmed: line.unconfirmed || line.budget_code_unconfirmed,
    }
}

fn calculate(state: &AppState, body: &Value) -> Result<(QuoteRequest, Calculation), Problem> {
    let request = QuoteRequest::from_json(body).map_err(calc_problem)?;
    let calculation = crate::obligations::calculate(&state.rules, &request).map_err(calc_problem)?;
    Ok((request, calculation))
}

fn quote_record(
    state: &AppState,
    request: &QuoteRequest,
    body: &Value,
    calculation: &Calculation,
    by: &Principal,
) -> QuoteRecord {
    let created_at = now();
    let lines: Vec<LineRecord> = calculation.lines.iter().map(line_record).collect();
    QuoteRecord {
        id: format!("q_{}", uuid::Uuid::now_v7().simple()),
        jurisdiction: request.jurisdiction.clone(),
        valuation_date: request.valuation_date,
        request: calculation_inputs(body).to_string(),
        lines: serde_json::to_string(&lines).expect("lines serialise"),
        total: calculation.total.get(),
        created_by: by.name.clone(),
        created_at,
        valid_until: created_at + Duration::hours(state.config.obligations.quote_validity_hours as i64),
    }
}

/// The parts of a request body that the calculation used; payer data is not kept with a quote.
fn calculation_inputs(body: &Value) -> Value {
    let mut inputs = serde_json::Map::new();
    for key in ["jurisdiction", "valuation_date", "parcel", "items"] {
        if let Some(v) = body.get(key) {
            inputs.insert(key.to_string(), v.clone());
        }
    }
    Value::Object(inputs)
}

/// Calculates and stores a quote.
pub async fn create_quote(state: &AppState, body: &Value, by: &Principal) -> Result<QuoteRecord, Problem> {
    let (request, calculation) = calculate(state, body)?;
    let record = quote_record(state, &request, body, &calculation, by);
    state.store.insert_quote(&record).await?;
    Ok(record)
}

/// Who pays and for which dossier: the parts of a notice that are not amounts.
pub struct NoticeParty {
    pub payer_name: String,
    pub payer_identifier: String,
    pub dossier_ref: String,
    pub due_date: NaiveDate,
}

/// Validates the non-amount parts of a notice request; every failing field is named.
pub fn parse_party(body: &Value, today: NaiveDate) -> Result<NoticeParty, Problem> {
    let mut errors = Vec::new();
    let mut text = |path: &str, value: Option<&Value>, max: usize| -> String {
        match value.and_then(Value::as_str).map(str::trim) {
            Some(s) if !s.is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control) => s.to_string(),
            Some(_) => {
                errors.push(FieldError {
                    field: path.into(),
                    detail: format!("must be 1 to {max} characters without control characters"),
                });
                String::new()
            }
            None => {
                errors.push(FieldError { field: path.into(), detail: "is required (a string)".into() });
                String::new()
            }
        }
    };
    let payer_name = text("payer.name", body.pointer("/payer/name"), 200);
    let payer_identifier = text("payer.identifier", body.pointer("/payer/identifier"), 20);
    let dossier_ref = text("dossier_ref", body.get("dossier_ref"), 100);
    let identifier_ok =
        payer_identifier.len() >= 6 && payer_identifier.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !payer_identifier.is_empty() && !identifier_ok {
        errors.push(FieldError {
            field: "payer.identifier".into(),
            detail: "must be a citizen id (CCCD, 12 digits), a tax code (10 or 13 digits) or a passport number: \
                     6 to 20 letters, digits or '-'"
                .into(),
        });
    }
    let due_date = match body.get("due_date").and_then(Value::as_str).map(str::parse::<NaiveDate>) {
        Some(Ok(d)) if d >= today => Some(d),
        Some(Ok(_)) => {
            errors.push(FieldError { field: "due_date".into(), detail: format!("must be today ({today}) or later") });
            None
        }
        Some(Err(_)) => {
            errors.push(FieldError { field: "due_date".into(), detail: "must be a date, YYYY-MM-DD".into() });
            None
        }
        None => {
            errors.push(FieldError { field: "due_date".into(), detail: "is required (YYYY-MM-DD)".into() });
            None
        }
    };
    match due_date {
        Some(due_date) if errors.is_empty() => Ok(NoticeParty { payer_name, payer_identifier, dossier_ref, due_date }),
        _ => Err(Problem::validation_many(errors)),
    }
}

/// Issues a notice from `quote_id` or, without one, from calculation inputs in the same body.
pub async fn issue_notice(
    state: &AppState,
    body: &Value,
    by: &Principal,
) -> Result<(NoticeRecord, Vec<LineRecord>), Problem> {
    let at = now();
    let party = parse_party(body, vn_date(at))?;
    let (quote, implicit) = match body.get("quote_id") {
        Some(Value::String(id)) => {
            let quote = state
                .store
                .find_quote(id)
                .await?
                .ok_or_else(|| Problem::validation("quote_id", format!("no quote with id {id:?}")))?;
            if quote.valid_until < at {
                return Err(Problem::validation(
                    "quote_id",
                    format!(
                        "the quote expired at {}; request a new quote",
                        quote.valid_until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                ));
            }
            (quote, false)
        }
        Some(_) => return Err(Problem::validation("quote_id", "must be a string")),
        None => {
            let (request, calculation) = calculate(state, body)?;
            (quote_record(state, &request, body, &calculation, by), true)
        }
    };
    let lines = quote.line_records();
    if quote.total <= 0 {
        return Err(Problem::validation(
            if implicit { "items" } else { "quote_id" },
            "the obligations total 0 đồng (fully exempt): there is nothing to pay, so no notice is issued",
        ));
    }
    let year = vn_date(at).year() as u32;
    for _ in 0..8 {
        let code = NoticeCode::generate(year, &mut rand::rng()).map_err(|e| Problem::internal(&e))?;
        let notice = NoticeRecord {
            id: format!("n_{}", uuid::Uuid::now_v7().simple()),
            code: code.to_string(),
            quote_id: quote.id.clone(),
            jurisdiction: quote.jurisdiction.clone(),
            payer_name: party.payer_name.clone(),
            payer_identifier: party.payer_identifier.clone(),
            dossier_ref: party.dossier_ref.clone(),
            principal: quote.total,
            due_date: party.due_date,
            status: "unpaid".into(),
            issued_by: by.name.clone(),
            issued_at: at,
            cancel_reason: None,
            cancelled_by: None,
            cancelled_at: None,
        };
        match state.store.insert_notice(implicit.then_some(&quote), &notice, &lines).await {
            Ok(()) => return Ok((notice, lines)),
            Err(IssueError::CodeTaken) => continue,
            Err(IssueError::QuoteAlreadyUsed(code)) => {
                return Err(Problem::conflict(
                    "quote-already-issued",
                    "Quote already issued",
                    format!("Notice {code} was already issued from this quote."),
                ));
            }
            Err(IssueError::Store(e)) => return Err(e.into()),
        }
    }
    Err(Problem::internal(&"could not find a free notice code in 8 attempts"))
}

/// Parses a notice code from a path, telling a mistyped code from an unknown one.
pub fn parse_code(code: &str) -> Result<NoticeCode, Problem> {
    NoticeCode::parse(code).map_err(|e| {
        Problem::bad_request(
            "invalid-notice-code",
            "Not a valid notice code",
            format!("{code:?} is not a valid notice code: {e}. Codes look like TB-2026-4Q7K9M."),
        )
    })
}

pub fn notice_not_found(code: &NoticeCode) -> Problem {
    Problem::new(
        axum::http::StatusCode::NOT_FOUND,
        "notice-not-found",
        "No such notice",
        format!("{code} is a well-formed notice code, but no notice has it. Check the code on your paper notice."),
    )
}

/// Late-payment interest on an unpaid notice as of `as_of` (a Vietnamese date), on the overdue
/// amount of its `lines` that accrue interest: a line of interest the quote already carried is
/// not charged interest again.
pub fn late_interest(
    state: &AppState,
    notice: &NoticeRecord,
    lines: &[LineRecord],
    as_of: NaiveDate,
) -> Result<ObligationLine, Problem> {
    let accruing = lines
        .iter()
        .filter(|l| ObligationKind::parse(&l.kind).is_none_or(ObligationKind::accrues_late_interest))
        .try_fold(0i64, |sum, l| sum.checked_add(l.amount))
        .ok_or_else(|| Problem::internal(&"notice lines overflow"))?;
    let principal = Vnd::new(accruing).map_err(|e| Problem::internal(&e))?;
    crate::obligations::late_payment_interest(&state.rules, &notice.jurisdiction, principal, notice.due_date, as_of)
        .map_err(calc_problem)
}

/// Cancels an unpaid notice with a reason.
pub async fn cancel_notice(
    state: &AppState,
    code: &NoticeCode,
    reason: &str,
    by: &Principal,
) -> Result<NoticeRecord, Problem> {
    match state.store.cancel_notice(code.as_str(), reason, &by.name, now()).await? {
        CancelOutcome::Cancelled(n) => Ok(*n),
        CancelOutcome::NotFound => Err(notice_not_found(code)),
        CancelOutcome::NotCancellable(status) => Err(Problem::conflict(
            "notice-not-cancellable",
            "Notice cannot be cancelled",
            format!("Notice {code} is {status}; only an unpaid notice can be cancelled."),
        )),
    }
}

/// When an instant is shown to people: RFC 3339 in Vietnamese time.
pub fn vn_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&crate::clock::vn_offset()).to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}
