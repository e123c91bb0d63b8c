//! Staff routes over the ledger, the callback inbox and the outgoing events
//! (`treasurer` and `auditor` read; `admin` re-sends events).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::problem::{ApiResult, Problem, ProblemDetails};
use crate::app::AppState;
use crate::auth::Role;
use crate::ledger::Anchor;
use crate::store::inbox::InboxRecord;
use crate::store::ledger::{AccountBalance, ChainReport, EntryFilter, EntryRecord};
use crate::store::now;
use crate::store::outbox::{DeliveryRecord, EventRecord};

const READERS: [Role; 2] = [Role::Treasurer, Role::Auditor];

/// Balances of every ledger account.
#[utoipa::path(get, path = "/v1/ledger/accounts", tag = "ledger",
    responses((status = 200, body = [AccountBalance])), security(("bearer" = [])))]
pub async fn accounts(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<AccountBalance>>> {
    caller.require(&READERS)?;
    Ok(Json(state.store.ledger_balances().await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct EntryQuery {
    /// Only transfers into or out of this account.
    pub account: Option<String>,
    /// From this instant (RFC 3339), inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Until this instant, exclusive.
    pub to: Option<DateTime<Utc>>,
    pub payment_id: Option<String>,
    pub notice_code: Option<String>,
    /// The `next_cursor` of the previous page, in transfer-id order.
    pub cursor: Option<i64>,
    /// Chain order instead: sealed transfers whose `seq` is greater than this (`0`: from the first),
    /// by `seq`; then `next_cursor` is a `seq` to pass here. Seals are given in the order transfers
    /// became visible, so paging this way never passes over a transfer that commits later, as id
    /// order can on PostgreSQL; transfers not yet sealed come in a later page.
    pub sealed_after: Option<i64>,
    /// 1 to 500 (default 100).
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EntryPage {
    pub entries: Vec<EntryRecord>,
    /// Pass as `cursor` (or, when paging in chain order, as `sealed_after`) for the next page; absent
    /// on the last page.
    pub next_cursor: Option<i64>,
}

/// Ledger transfers, oldest first (by id, or in chain order with `sealed_after`), filtered, with
/// cursor pagination.
#[utoipa::path(get, path = "/v1/ledger/entries", tag = "ledger", params(EntryQuery),
    responses((status = 200, body = EntryPage),
              (status = 422, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn entries(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<EntryQuery>,
) -> ApiResult<Json<EntryPage>> {
    caller.require(&READERS)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::validation("limit", "must be between 1 and 500"));
    }
    if q.cursor.is_some() && q.sealed_after.is_some() {
        return Err(Problem::validation("sealed_after", "pages either by `cursor` or by `sealed_after`, not both"));
    }
    let filter = EntryFilter {
        account: q.account,
        from: q.from,
        to: q.to,
        payment_id: q.payment_id,
        notice_code: q.notice_code,
        after: q.cursor,
        sealed_after: q.sealed_after,
        limit,
    };
    let entries = state.store.ledger_entries(&filter).await?;
    let last = entries.last().filter(|_| entries.len() as i64 == limit);
    let next_cursor = match q.sealed_after {
        Some(_) => last.and_then(|e| e.seq),
        None => last.map(|e| e.id),
    };
    Ok(Json(EntryPage { entries, next_cursor }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct VerifyQuery {
    /// `SEQ:HASH`, the `head_seq` and `head` of an earlier verify kept outside the database: the
    /// chain must still have that hash at that seq (finds links removed from its end).
    pub anchor: Option<String>,
}

/// Seals what is pending, then recomputes the whole hash chain and names the first broken link;
/// with `anchor`, also checks that the chain still holds an earlier head.
#[utoipa::path(get, path = "/v1/ledger/verify", tag = "ledger", params(VerifyQuery),
    responses((status = 200, body = ChainReport), (status = 422, body = ProblemDetails)), security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<VerifyQuery>,
) -> ApiResult<Json<ChainReport>> {
    caller.require(&READERS)?;
    let anchor =
        q.anchor.as_deref().map(str::parse::<Anchor>).transpose().map_err(|e| Problem::validation("anchor", e))?;
    state.store.seal_ledger_fully(crate::background::SEAL_BATCH).await?;
    let report = state.store.verify_ledger(anchor.as_ref()).await?;
    if !report.ok {
        tracing::error!(broken = ?report.first_broken, anchor = ?report.anchor, "ledger chain does not verify");
    }
    Ok(Json(report))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct InboxQuery {
    pub provider: Option<String>,
    pub merchant_ref: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 500 (default 100).
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InboxPage {
    pub callbacks: Vec<InboxRecord>,
    pub next_cursor: Option<String>,
}

/// Every callback received, newest first (`auditor`).
#[utoipa::path(get, path = "/v1/inbox", tag = "ledger", params(InboxQuery),
    responses((status = 200, body = InboxPage)), security(("bearer" = [])))]
pub async fn inbox(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<InboxQuery>,
) -> ApiResult<Json<InboxPage>> {
    caller.require(&[Role::Auditor])?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::validation("limit", "must be between 1 and 500"));
    }
    let callbacks =
        state.store.list_inbox(q.provider.as_deref(), q.merchant_ref.as_deref(), q.cursor.as_deref(), limit).await?;
    let next_cursor = (callbacks.len() as i64 == limit).then(|| callbacks.last().map(|c| c.id.clone())).flatten();
    Ok(Json(InboxPage { callbacks, next_cursor }))
}

/// One received callback (`auditor`).
#[utoipa::path(get, path = "/v1/inbox/{id}", tag = "ledger", params(("id" = String, Path)),
    responses((status = 200, body = InboxRecord), (status = 404, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn inbox_entry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<InboxRecord>> {
    caller.require(&[Role::Auditor])?;
    let record = state.store.get_inbox(&id).await?.ok_or_else(|| Problem::not_found(format!("No callback {id:?}.")))?;
    Ok(Json(record))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct EventQuery {
    pub notice_code: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventView {
    #[serde(flatten)]
    pub event: EventRecord,
    pub deliveries: Vec<DeliveryRecord>,
}

/// Outgoing events and their deliveries (`auditor`, `admin`).
#[utoipa::path(get, path = "/v1/events", tag = "ledger", params(EventQuery),
    responses((status = 200, body = [EventView])), security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<EventQuery>,
) -> ApiResult<Json<Vec<EventView>>> {
    caller.require(&[Role::Auditor, Role::Admin])?;
    let mut out = Vec::new();
    for event in state.store.list_events(q.notice_code.as_deref(), 500).await? {
        let deliveries = state.store.event_deliveries(&event.id).await?;
        out.push(EventView { event, deliveries });
    }
    Ok(Json(out))
}

/// Send an event again to every endpoint (`admin`).
#[utoipa::path(post, path = "/v1/events/{id}/resend", tag = "ledger", params(("id" = String, Path)),
    responses((status = 202), (status = 404, body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn resend(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let who = caller.require(&[Role::Admin])?;
    let endpoints: Vec<String> = state.config.webhooks.endpoints.iter().map(|e| e.name.clone()).collect();
    // This event's deliveries, if a round has not planned them yet (and those of later events).
    state.store.plan_deliveries(&endpoints, now(), &id).await?;
    if state.store.resend_event(&id, now()).await? == 0 {
        return Err(Problem::not_found(format!("No event {id:?} with deliveries.")));
    }
    tracing::info!(event = %id, by = %who.name, "event re-send requested");
    Ok(StatusCode::ACCEPTED)
}
