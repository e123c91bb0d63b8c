//! Logs, traces and metrics.
//!
//! Logs are human-readable text by default and JSON by configuration; traces are exported over
//! OTLP/HTTP only when `telemetry.otlp_endpoint` is set, and a collector that is down never stops
//! start-up (spans are batched and dropped if they cannot be sent). Metrics live in a registry
//! per application instance and are rendered as Prometheus text.
//!
//! Invariants: nothing here formats a secret; route labels are route templates (never raw
//! paths), so label cardinality is bounded.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetryConfig};
use crate::store::PoolStats;

/// Keeps the trace exporter alive; flushes it when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("paygate: trace exporter did not shut down cleanly: {e}");
        }
    }
}

/// Installs the global tracing subscriber. Call once, from the binary.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.log_level))?;
    let (otel_layer, provider) = if config.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(&config.otlp_endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder().with_service_name(config.service_name.clone()).build(),
            )
            .build();
        let tracer = provider.tracer("paygate");
        (Some(tracing_opentelemetry::layer().with_tracer(tracer)), Some(provider))
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    match config.log_format {
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init()?,
        LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json().with_current_span(true)).try_init()?,
    }
    Ok(TelemetryGuard { provider })
}

/// The application's Prometheus metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pool: IntGaugeVec,
    writers: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("paygate_http_requests_total", "HTTP requests answered, by route template and status"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "paygate_http_request_duration_seconds",
                "Time to answer HTTP requests, by route template and status",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let pool = IntGaugeVec::new(
            Opts::new("paygate_db_pool_connections", "Database pool connections by state"),
            &["state"],
        )
        .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("unique metric");
        registry.register(Box::new(latency.clone())).expect("unique metric");
        let writers = IntGauge::new(
            "paygate_db_writer_connections",
            "Database connections the payment writers hold open outside the pool",
        )
        .expect("valid metric");
        registry.register(Box::new(pool.clone())).expect("unique metric");
        registry.register(Box::new(writers.clone())).expect("unique metric");
        Metrics { registry, requests, latency, pool, writers }
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }

    /// Prometheus text exposition, with pool figures read now.
    pub fn render(&self, pool: PoolStats) -> String {
        self.pool.with_label_values(&["open"]).set(i64::from(pool.size));
        self.pool.with_label_values(&["idle"]).set(i64::from(pool.idle));
        self.pool.with_label_values(&["in_use"]).set(i64::from(pool.size.saturating_sub(pool.idle)));
        self.pool.with_label_values(&["max"]).set(i64::from(pool.max));
        self.writers.set(i64::from(pool.writers));
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}
