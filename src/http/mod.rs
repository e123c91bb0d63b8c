//! HTTP surface: routes per audience, problem+json errors, authentication, idempotency.
//!
//! Layers, outermost first: request id (set or propagated as `x-request-id`), trace span,
//! metrics, problem+json rewriting, panic catcher, timeout, body limit, authentication,
//! idempotency; then the route. Handlers are thin: they parse, authorise, call the domain or
//! store, and shape the response.

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

pub mod auth;
pub mod callbacks;
pub mod idempotency;
pub mod json;
pub mod ledger;
pub mod middleware;
pub mod notices;
pub mod ops;
pub mod pages;
pub mod payments;
pub mod problem;
pub mod reconciliation;
pub mod tokens;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(title = "paygate", description = "Payment gateway for land-related financial obligations and procedure fees."),
    modifiers(&BearerAuth),
    components(schemas(problem::ProblemDetails, problem::FieldError))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes and their OpenAPI description, before layers.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(notices::create_quote))
        .routes(routes!(notices::issue))
        .routes(routes!(notices::show))
        .routes(routes!(notices::cancel))
        .routes(routes!(payments::create))
        .routes(routes!(payments::show))
        .routes(routes!(payments::refund))
        .routes(routes!(payments::refund_outcome))
        .routes(routes!(callbacks::vnpay))
        .routes(routes!(callbacks::momo))
        .routes(routes!(callbacks::zalopay))
        .routes(routes!(callbacks::bank))
        .routes(routes!(ledger::accounts))
        .routes(routes!(ledger::entries))
        .routes(routes!(ledger::verify))
        .routes(routes!(ledger::inbox))
        .routes(routes!(ledger::inbox_entry))
        .routes(routes!(ledger::events))
        .routes(routes!(ledger::resend))
        .routes(routes!(reconciliation::upload))
        .routes(routes!(reconciliation::show_run))
        .routes(routes!(reconciliation::resolve))
        .routes(routes!(reconciliation::audit))
        .routes(routes!(reconciliation::treasury_export))
}

/// The OpenAPI document of the service.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// The provider simulators, or nothing when `sandbox.enabled` is off.
fn sandbox_router(state: &AppState) -> Router {
    if !state.config.sandbox.enabled {
        return Router::new().fallback(|| async { StatusCode::NOT_FOUND.into_response() });
    }
    crate::sandbox::router(sandbox_config(&state.config, &state.public_base_url))
}

/// The sandbox's configuration: the same credentials as the connectors, and callbacks aimed at
/// the gateway at `gateway_base_url`.
pub fn sandbox_config(config: &crate::config::Config, gateway_base_url: &str) -> crate::sandbox::SandboxConfig {
    let p = &config.providers;
    let base = gateway_base_url.trim_end_matches('/');
    crate::sandbox::SandboxConfig {
        vnpay: p.vnpay.credentials.clone(),
        vnpay_ipn_url: format!("{base}/callbacks/vnpay"),
        momo: p.momo.credentials.clone(),
        zalopay: p.zalopay.credentials.clone(),
        banks: config
            .partner_banks()
            .iter()
            .filter_map(|(name, bank)| {
                Some(crate::sandbox::SandboxBank {
                    name: name.clone(),
                    secret: bank.secrets.first()?.clone(),
                    notify_url: format!("{base}/callbacks/bank/{name}"),
                })
            })
            .collect(),
        http_timeout: Duration::from_secs(p.http_timeout_secs),
    }
}

/// The complete router with every layer.
pub fn router(state: AppState) -> Router {
    let (routes, doc) = api().split_for_parts();
    let doc = std::sync::Arc::new(doc);
    let config = &state.config.server;
    let body_limit = config.body_limit_bytes;

    let routes = routes
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route("/callbacks/vnpay", axum::routing::post(callbacks::vnpay))
        .merge(pages::routes())
        .nest_service("/sandbox", sandbox_router(&state))
        .fallback(|| async { StatusCode::NOT_FOUND.into_response() })
        .layer(
            ServiceBuilder::new()
                .layer(from_fn_with_state(state.clone(), middleware::record_metrics))
                .layer(from_fn(middleware::problem_for_every_error))
                .layer(CatchPanicLayer::new())
                .layer(from_fn_with_state(state.clone(), middleware::timeout))
                .layer(DefaultBodyLimit::max(body_limit))
                .layer(from_fn_with_state(state.clone(), auth::resolve))
                .layer(from_fn_with_state(state.clone(), idempotency::layer)),
        )
        .with_state(state);

    routes.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|req: &Request<_>| {
                        let request_id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
                    })
                    .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
    )
}
