//! The application: shared state, router, listener and graceful shutdown.
//!
//! Invariant: everything a request needs is in [`AppState`], which holds nothing that another
//! instance would need (all shared state is in the database), so any number of instances can
//! serve the same database.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::obligations::RuleBook;
use crate::providers::Providers;
use crate::reconciliation::service::Mappings;
use crate::store::Store;
use crate::store::group_commit::PaymentWriter;
use crate::telemetry::Metrics;

pub struct Inner {
    pub config: Config,
    pub store: Store,
    /// Applies payment updates in batches (group commit); see [`crate::store::group_commit`].
    pub payment_writer: PaymentWriter,
    pub metrics: Metrics,
    /// The validated rule tables in force for calculations.
    pub rules: Arc<RuleBook>,
    /// The provider connectors, built from `providers.*`.
    pub providers: Providers,
    /// `server.public_base_url`, or `http://<bound address>` when that is empty; no trailing `/`.
    pub public_base_url: String,
    /// The settlement-file layouts, from `reconciliation.mappings_dir`.
    pub mappings: Mappings,
    /// Work a request started and must not be cut off by a shutdown: refunds sent to a provider,
    /// whose answer is still to be recorded. Shutting down waits for it (up to the grace period).
    pub in_flight: tokio_util::task::TaskTracker,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A bound, ready-to-run instance of the service.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Loads the rule tables from `obligations.rules_dir`, then [`Application::build_with`].
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let rules = crate::notices::load_rules(&config.obligations.rules_dir).map_err(|e| anyhow::anyhow!(e))?;
        Self::build_with(config, Arc::new(rules)).await
    }

    /// Connects to the database, applies migrations if configured, and binds the listener.
    pub async fn build_with(config: Config, rules: Arc<RuleBook>) -> anyhow::Result<Application> {
        let mappings = Mappings::load(&config.reconciliation).map_err(|e| anyhow::anyhow!(e))?;
        let store = Store::connect(&config.database).await?;
        if config.database.migrate_on_start {
            store.migrate().await?;
        }
        let listener = TcpListener::bind(config.server.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.bind))?;
        let public_base_url = match config.server.public_base_url.trim_end_matches('/') {
            "" => format!("http://{}", listener.local_addr()?),
            url => url.to_string(),
        };
        let providers = Providers::from_config(&config.providers, &config.partner_banks(), &public_base_url)?;
        let payment_writer =
            PaymentWriter::start(store.clone(), config.database.payment_writers(), config.database.payment_batch_max)
                .map_err(|e| anyhow::anyhow!("cannot start the payment writers: {e}"))?;
        let state = AppState(Arc::new(Inner {
            config,
            store,
            payment_writer,
            metrics: Metrics::new(),
            rules,
            providers,
            public_base_url,
            mappings,
            in_flight: tokio_util::task::TaskTracker::new(),
        }));
        Ok(Application { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The shared state (tests use it to run background rounds at a chosen instant).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
    /// finish (up to `server.shutdown_grace_secs`).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let grace = Duration::from_secs(self.state.config.server.shutdown_grace_secs);
        let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
        let router = crate::http::router(self.state.clone());
        let server = axum::serve(self.listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: finishing in-flight requests");
                let _ = stopping_tx.send(true);
            });
        // Stopped when serving ends, and also if this future is dropped before: on SQLite the
        // sealer and the checkpointer run on the payment writers' thread, which outlives the
        // caller's runtime.
        let _background = [
            tokio::spawn(crate::background::run_background(self.state.clone(), stopping_rx.clone())),
            tokio::spawn(crate::background::run_deliveries(self.state.clone(), stopping_rx.clone())),
            self.state
                .payment_writer
                .spawn(crate::background::run_checkpoints(self.state.clone(), stopping_rx.clone())),
            self.state.payment_writer.spawn(crate::background::run_sealing(self.state.clone(), stopping_rx.clone())),
        ]
        .map(AbortOnDrop);
        let mut stopping = stopping_rx;
        let server = std::pin::pin!(server.into_future());
        let result = tokio::select! {
            result = server => result,
            _ = async {
                let _ = stopping.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("in-flight requests did not finish within {grace:?}; stopping anyway");
                Ok(())
            }
        };
        // Refunds whose provider has yet to answer: their answers are recorded before the process
        // goes, if they come within the grace period.
        self.state.in_flight.close();
        if tokio::time::timeout(grace, self.state.in_flight.wait()).await.is_err() {
            tracing::warn!(
                "refunds still in flight after {grace:?}; they stay pending until a treasurer records their outcome"
            );
        }
        result
    }
}

/// A background task that is stopped when this handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when the
/// future is first polled: a signal that arrives once the service says it is listening is never
/// taken by the default action (which would kill the process without a graceful stop).
#[cfg(unix)]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(terminate) => {},
            _ = wait(interrupt) => {},
        }
    }
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
