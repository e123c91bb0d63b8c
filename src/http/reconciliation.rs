//! Staff routes of reconciliation: settlement-file uploads (`treasurer`), runs and their
//! discrepancies (`treasurer`, `auditor`), resolutions (`treasurer`), the audit log (`auditor`)
//! and the treasury export (`treasurer`, `auditor`).
//!
//! The upload streams the request body to a temporary file while hashing it, so a file is never
//! held in memory; the run itself is keyed by the file's hash (the same file again is the same
//! run). With an `Idempotency-Key`, the idempotency layer receives the file that way itself,
//! fingerprints the request by the file's hash, and hands the file to the handler.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::NaiveDate;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::auth::Caller;
use super::json::ApiJson;
use super::problem::{ApiResult, Problem, ProblemDetails};
use crate::app::AppState;
use crate::auth::Role;
use crate::reconciliation::export::TreasuryExport;
use crate::reconciliation::reader::FileError;
use crate::reconciliation::resolution::{ResolveRequest, ResolveResponse};
use crate::reconciliation::service::{RunError, RunRequest, reconcile_file};
use crate::store::reconciliation::{
    AuditRecord, ClassCount, DiscrepancyFilter, DiscrepancyRecord, RowErrorRecord, RunOutcome, RunRecord,
};

/// The path of the upload (the idempotency layer and the timeout treat it apart).
pub const RUNS_PATH: &str = "/v1/reconciliation/runs";

const READERS: [Role; 2] = [Role::Treasurer, Role::Auditor];

#[derive(Deserialize, utoipa::IntoParams)]
pub struct UploadQuery {
    /// `vnpay`, `momo`, `zalopay` or `vietqr` (the collecting bank's file).
    pub provider: Option<String>,
    /// The day the file covers, `YYYY-MM-DD` (GMT+7).
    pub settlement_date: Option<String>,
    /// A mapping name (`generic`, …); the provider's configured format when absent.
    pub format: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RunView {
    pub run: RunRecord,
    /// Discrepancies per class and status.
    pub counts: Vec<ClassCount>,
    /// Rows that could not be read, first 100 (all of them are kept; `rows_invalid` counts them).
    pub row_errors: Vec<RowErrorRecord>,
    /// Discrepancies, filtered, one page.
    pub discrepancies: Vec<DiscrepancyRecord>,
    /// Pass as `cursor` for the next page of discrepancies.
    pub next_cursor: Option<String>,
}

fn run_problem(e: RunError) -> Problem {
    let unprocessable =
        |slug: &str, title: &str, detail: String| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, slug, title, detail);
    match e {
        RunError::UnknownProvider(p) => {
            Problem::validation("provider", format!("no settlement format is configured for {p:?}"))
        }
        RunError::UnknownFormat(f) => Problem::validation("format", format!("no settlement format named {f:?}")),
        RunError::Empty => unprocessable("settlement-file-empty", "Empty settlement file", "The file is empty.".into()),
        RunError::TooLarge(limit) => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "settlement-file-too-large",
            "Settlement file too large",
            format!("The file is larger than {limit} bytes."),
        ),
        RunError::File(e @ FileError::HeaderMismatch { .. }) => unprocessable(
            "settlement-format-mismatch",
            "Not a file of this format",
            format!("{e}. Is it another provider's file?"),
        ),
        RunError::File(e) => unprocessable("settlement-file-unreadable", "Unreadable settlement file", e.to_string()),
        RunError::Rejected(reason) => unprocessable("settlement-file-rejected", "Settlement file rejected", reason),
        RunError::Busy => {
            Problem::conflict("reconciliation-busy", "Another run is being written", RunError::Busy.to_string())
        }
        RunError::Io(e) => Problem::internal(&e),
        RunError::Store(e) => e.into(),
    }
}

/// Reconcile a provider's settlement file (`treasurer`). The body is the file as the provider
/// published it. The same file again answers 200 with the run it made; a different file for
/// the same provider and date makes a new run that supersedes the active one.
#[utoipa::path(post, path = "/v1/reconciliation/runs", tag = "reconciliation", params(UploadQuery),
    request_body(content = String, content_type = "text/csv", description = "The settlement file"),
    responses((status = 201, body = RunView, description = "A new run"),
              (status = 200, body = RunView, description = "This file was reconciled before: its run"),
              (status = 401, body = ProblemDetails, content_type = "application/problem+json"),
              (status = 403, body = ProblemDetails, content_type = "application/problem+json"),
              (status = 409, body = ProblemDetails, content_type = "application/problem+json"),
              (status = 413, body = ProblemDetails, content_type = "application/problem+json"),
              (status = 422, body = ProblemDetails, content_type = "application/problem+json"),
              (status = 503, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<UploadQuery>,
    spooled: Option<Extension<Arc<SpooledUpload>>>,
    body: Body,
) -> ApiResult<Response> {
    let who = caller.require(&[Role::Treasurer])?;
    let mut errors = Vec::new();
    let provider = q.provider.unwrap_or_default();
    if provider.is_empty() {
        errors.push(("provider", "is required".to_string()));
    }
    let date = NaiveDate::parse_from_str(q.settlement_date.as_deref().unwrap_or(""), "%Y-%m-%d").ok();
    if date.is_none() {
        errors.push(("settlement_date", "must be a date YYYY-MM-DD".to_string()));
    }
    if !errors.is_empty() {
        return Err(Problem::validation_many(
            errors.into_iter().map(|(f, m)| super::problem::FieldError { field: f.into(), detail: m }).collect(),
        ));
    }
    let date = date.unwrap_or_default();
    let config = &state.config.reconciliation;
    if q.format.is_none() && !config.formats.contains_key(&provider) {
        return Err(run_problem(RunError::UnknownProvider(provider)));
    }

    // The Idempotency-Key layer has already received the file when the request carried a key.
    let upload = match spooled {
        Some(Extension(upload)) => upload,
        None => Arc::new(spool(body, config.max_file_bytes).await?),
    };
    let request =
        RunRequest { provider: &provider, settlement_date: date, format: q.format.as_deref(), actor: &who.name };
    let outcome = reconcile_file(
        &state.store,
        config,
        &state.mappings,
        &request,
        upload.file.path(),
        &upload.sha256,
        upload.bytes,
    )
    .await
    .map_err(run_problem)?;
    let (status, run) = match outcome {
        RunOutcome::Created(run) => (StatusCode::CREATED, run),
        RunOutcome::Existing(run) => (StatusCode::OK, run),
        RunOutcome::Rejected(reason) => return Err(run_problem(RunError::Rejected(reason))),
    };
    let view = run_view(&state, run, &DiscrepancyFilter { limit: 100, ..Default::default() }).await?;
    let location = format!("/v1/reconciliation/runs/{}", view.run.id);
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
}

/// An uploaded file, received into a private temporary file (removed when dropped).
#[derive(Debug)]
pub struct SpooledUpload {
    pub file: tempfile::NamedTempFile,
    pub sha256: String,
    pub bytes: u64,
}

/// Streams a request body to a temporary file, hashing it on the way; never holds it in memory.
pub async fn spool(body: Body, max_bytes: u64) -> Result<SpooledUpload, Problem> {
    let temp = tempfile::NamedTempFile::new().map_err(|e| Problem::internal(&e))?;
    let mut file = tokio::fs::File::from_std(temp.reopen().map_err(|e| Problem::internal(&e))?);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Problem::bad_request("body-unreadable", "Request body unreadable", format!("The upload broke off: {e}"))
        })?;
        bytes += chunk.len() as u64;
        if bytes > max_bytes {
            return Err(run_problem(RunError::TooLarge(max_bytes)));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| Problem::internal(&e))?;
    }
    file.flush().await.map_err(|e| Problem::internal(&e))?;
    Ok(SpooledUpload { file: temp, sha256: hex::encode(hasher.finalize()), bytes })
}

async fn run_view(state: &AppState, run: RunRecord, filter: &DiscrepancyFilter) -> Result<RunView, Problem> {
    let counts = state.store.run_class_counts(&run.id).await?;
    let row_errors = state.store.run_row_errors(&run.id, 100).await?;
    let discrepancies = state.store.run_discrepancies(&run.id, filter).await?;
    let next_cursor =
        (discrepancies.len() as i64 == filter.limit).then(|| discrepancies.last().map(|d| d.id.clone())).flatten();
    Ok(RunView { run, counts, row_errors, discrepancies, next_cursor })
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct RunQuery {
    /// Only discrepancies of this class (`missing_in_gateway`, `missing_in_file`, `amount_mismatch`,
    /// `status_mismatch`, `duplicate_in_file`, `fee_mismatch`).
    pub class: Option<String>,
    /// Only discrepancies in this status (`open`, `resolved`, `superseded`).
    pub status: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 500 (default 100).
    pub limit: Option<i64>,
}

/// A run: its figures, counts per discrepancy class, unreadable rows and discrepancies.
#[utoipa::path(get, path = "/v1/reconciliation/runs/{id}", tag = "reconciliation",
    params(("id" = String, Path), RunQuery),
    responses((status = 200, body = RunView), (status = 404, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn show_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> ApiResult<Json<RunView>> {
    caller.require(&READERS)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::validation("limit", "must be between 1 and 500"));
    }
    if let Some(c) = &q.class
        && crate::reconciliation::matcher::DiscrepancyClass::parse(c).is_none()
    {
        return Err(Problem::validation("class", format!("{c:?} is not a discrepancy class")));
    }
    if let Some(s) = &q.status
        && !["open", "resolved", "superseded"].contains(&s.as_str())
    {
        return Err(Problem::validation("status", "must be open, resolved or superseded"));
    }
    let run = state.store.find_run(&id).await?.ok_or_else(|| {
        Problem::new(StatusCode::NOT_FOUND, "run-not-found", "Reconciliation run not found", format!("No run {id}."))
    })?;
    let filter = DiscrepancyFilter { class: q.class, status: q.status, after: q.cursor, limit };
    Ok(Json(run_view(&state, run, &filter).await?))
}

/// Resolve a discrepancy by a named action (`treasurer`); money moves only by new ledger entries.
#[utoipa::path(post, path = "/v1/reconciliation/discrepancies/{id}/resolve", tag = "reconciliation",
    request_body = ResolveRequest,
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 200, body = ResolveResponse),
              (status = 404, body = ProblemDetails, content_type = "application/problem+json"),
              (status = 409, body = ProblemDetails, content_type = "application/problem+json"),
              (status = 422, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ResolveRequest>,
) -> ApiResult<Json<ResolveResponse>> {
    let who = caller.require(&[Role::Treasurer])?;
    Ok(Json(crate::reconciliation::resolution::resolve(&state.store, &id, &req, &who.name).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    pub run_id: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// 1 to 500 (default 100).
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditRecord>,
    pub next_cursor: Option<i64>,
}

/// The reconciliation audit log, oldest first (`auditor`).
#[utoipa::path(get, path = "/v1/reconciliation/audit", tag = "reconciliation", params(AuditQuery),
    responses((status = 200, body = AuditPage)), security(("bearer" = [])))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    caller.require(&[Role::Auditor])?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::validation("limit", "must be between 1 and 500"));
    }
    let entries = state.store.reconciliation_audit(q.run_id.as_deref(), q.cursor.unwrap_or(0), limit).await?;
    let next_cursor = (entries.len() as i64 == limit).then(|| entries.last().map(|e| e.id)).flatten();
    Ok(Json(AuditPage { entries, next_cursor }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ExportQuery {
    /// The settlement date, `YYYY-MM-DD`.
    pub date: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// Money settled on a day per budget code and obligation kind (`treasurer`, `auditor`), as JSON
/// or CSV, computed from the ledger postings of the settled payments.
#[utoipa::path(get, path = "/v1/exports/treasury", tag = "reconciliation", params(ExportQuery),
    responses((status = 200, body = TreasuryExport), (status = 422, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn treasury_export(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ExportQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(&READERS)?;
    let date = NaiveDate::parse_from_str(q.date.as_deref().unwrap_or(""), "%Y-%m-%d")
        .map_err(|_| Problem::validation("date", "must be a date YYYY-MM-DD"))?;
    let wants_csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(_) => return Err(Problem::validation("format", "must be json or csv")),
        None => headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv")),
    };
    let lines = state.store.treasury_export(date).await?;
    let runs = state.store.runs_on(date).await?;
    let export = crate::reconciliation::export::build(date, lines, runs);
    if wants_csv {
        let body = crate::reconciliation::export::to_csv(&export).map_err(|e| Problem::internal(&e))?;
        let disposition = format!("attachment; filename=\"treasury_{}.csv\"", date.format("%Y%m%d"));
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, disposition)],
            body,
        )
            .into_response());
    }
    Ok(Json(export).into_response())
}
