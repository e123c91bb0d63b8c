//! `paygate bench`: the callback benchmark.
//!
//! What it measures: how fast the real service — started in this process on `127.0.0.1:0`, on a
//! fresh SQLite file or a fresh PostgreSQL database — confirms payments from signed VNPAY IPNs.
//! Setup (not timed) issues N notices and starts a pending VNPAY payment for each over the HTTP
//! API. The timed phase fires every payment's IPN K times (a shuffled list of N×K deliveries, so
//! duplicates of one payment arrive concurrently and out of order) from C concurrent clients
//! sharing one work queue, each a `GET /callbacks/vnpay?<signed query>`. It reports confirmed
//! payments per second (`RspCode` 00 replies ÷ wall time of the timed phase), requests per second,
//! and the p50/p99/max latency of the callback requests (HDR histogram, microsecond resolution).
//! With `--rate R` the clients are paced open-loop at R requests/s and a request's latency counts
//! from the instant it was scheduled, so a client that falls behind does not hide queueing
//! (coordinated omission). Before a timed phase the setup's writes are made durable
//! ([`Scratch::settle`]: PostgreSQL's `CHECKPOINT`), the clients — a minimal HTTP/1.1 load
//! generator ([`client`]), each on a keep-alive connection of its own — open their connections and
//! make their histograms, and the clock starts once they all run. `--half-rate-check` runs at full speed,
//! then again on N new payments paced at half the measured peak request rate. With `--pgbench`
//! (PostgreSQL only) it then runs `pgbench` (TPC-B-like, 8 clients, the timed phase's duration
//! rounded up to at least 5 s) on a scratch database of the same server and prints the ratio
//! callbacks/s ÷ pgbench TPS.
//!
//! Invariants it checks afterwards (any failure exits non-zero; missed performance targets do
//! not): exactly N replies `00` and N×(K−1) replies `02` per run, no other reply and no transport
//! error; every payment `succeeded` with exactly one `callback → succeeded` transition in its
//! history and no over-payment, late success or refund due; and, where the build has a ledger
//! (`GET /v1/ledger/verify` and `GET /v1/ledger/entries?payment_id=` answer instead of 404), that
//! the chain verifies and every payment has exactly one posting transaction.
//!
//! It depends only on stable surfaces: the HTTP API, [`Application`], [`Config`], the VNPAY
//! protocol module (`sign_params`, `format_vn_datetime`), [`new_token`] and [`Store`]. The scratch
//! database (SQLite folder or `paygate_bench_<random>` database) is removed at the end, also when
//! a phase fails.

mod client;
mod pgbench;
pub mod reconciliation;
mod scratch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use hdrhistogram::Histogram;
use rand::seq::SliceRandom;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::app::Application;
use crate::auth::{Role, new_token};
use crate::config::Config;
use crate::providers::protocol::vnpay;
use crate::store::Store;

#[cfg(test)]
use pgbench::parse_tps;
use pgbench::{PGBENCH_CLIENTS, PGBENCH_MIN_SECS, PGBENCH_SCALE, PGBENCH_THREADS, find_pgbench, run_pgbench};
use scratch::{Scratch, create_database, redacted};

/// Where `--backend postgres` creates its scratch databases unless `--database-url` says otherwise.
pub const DEFAULT_POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Targets from the benchmark's issue, printed next to the figures.
const TARGET_SQLITE_CONFIRMED_PER_S: f64 = 5_000.0;
const TARGET_PG_RATIO: f64 = 2.0;
const TARGET_HALF_RATE_P99_MS: f64 = 50.0;

/// How many failing examples a check prints.
const EXAMPLES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Options of `paygate bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Database backend to run the service on (always a fresh, empty database).
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// PostgreSQL only: the server to use, as the URL of an existing database to connect to as an
    /// administrator (CREATEDB; superuser or `pg_checkpoint` for the CHECKPOINT before each timed
    /// phase); the benchmark creates `paygate_bench_<random>` there and drops it at the end.
    /// [default: postgres://postgres@127.0.0.1:5432/test]
    #[arg(long)]
    pub database_url: Option<String>,
    /// Payments (N) to create and confirm.
    #[arg(long, default_value_t = 5000)]
    pub payments: usize,
    /// Deliveries (K) of each payment's IPN.
    #[arg(long, default_value_t = 3)]
    pub deliveries: usize,
    /// Concurrent clients (C) sharing one queue of deliveries.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Pace the callbacks open-loop at this many requests per second instead of full speed.
    #[arg(long, conflicts_with = "half_rate_check")]
    pub rate: Option<f64>,
    /// Run at full speed, then again on N new payments paced at half the measured peak request
    /// rate, and report both (the latency target applies to the second run).
    #[arg(long)]
    pub half_rate_check: bool,
    /// PostgreSQL only: afterwards run pgbench (TPC-B-like, 8 clients, the same duration) on the
    /// same server and report the ratio callbacks/s ÷ pgbench TPS.
    #[arg(long)]
    pub pgbench: bool,
    /// Database pool size of the service [default: 8 on SQLite, 16 on PostgreSQL].
    #[arg(long)]
    pub pool_size: Option<u32>,
}

impl BenchArgs {
    /// Checks the options alone (no I/O); the message names the offending flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.payments == 0 {
            return Err("--payments must be at least 1".into());
        }
        if self.deliveries == 0 {
            return Err("--deliveries must be at least 1".into());
        }
        if self.payments.checked_mul(self.deliveries).is_none_or(|n| n > 100_000_000) {
            return Err("--payments × --deliveries must be at most 100,000,000".into());
        }
        if self.concurrency == 0 || self.concurrency > 10_000 {
            return Err("--concurrency must be between 1 and 10000".into());
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err("--rate must be a positive number of requests per second".into());
        }
        if self.pool_size == Some(0) {
            return Err("--pool-size must be at least 1".into());
        }
        if self.backend == Backend::Sqlite {
            if self.pgbench {
                return Err("--pgbench needs --backend postgres (pgbench measures a PostgreSQL server)".into());
            }
            if self.database_url.is_some() {
                return Err("--database-url applies to --backend postgres only; SQLite always runs on a fresh \
                            file in a temporary folder (set TMPDIR to choose where)"
                    .into());
            }
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err("--database-url must be a postgres:// URL".into());
        }
        Ok(())
    }

    fn pool_size(&self) -> u32 {
        self.pool_size.unwrap_or(match self.backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        })
    }
}

/// Runs the benchmark with `config` (the loaded configuration; the database, listener, poller and
/// timeouts are overridden). Prints the report and a final one-line JSON summary to stdout.
/// `Ok(true)` when every correctness check passed, `Ok(false)` when one failed; `Err` when the
/// benchmark could not run.
pub async fn run(args: BenchArgs, config: Config) -> anyhow::Result<bool> {
    args.validate().map_err(|e| anyhow!(e))?;
    init_logging();
    let pgbench = if args.pgbench {
        Some(find_pgbench().ok_or_else(|| {
            anyhow!(
                "--pgbench was requested but no pgbench executable was found on PATH or under \
                 /usr/lib/postgresql/*/bin (Debian/Ubuntu: apt-get install postgresql-client)"
            )
        })?)
    } else {
        None
    };
    let scratch = Scratch::create(&args).await?;
    // On Ctrl-C, stop and still remove the scratch database.
    let result = tokio::select! {
        r = run_on(&args, config, &scratch, pgbench.as_deref()) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if let Err(e) = scratch.remove().await {
        eprintln!("paygate bench: warning: {e:#}");
    }
    result
}

/// Warnings and errors of the service go to stderr (RUST_LOG overrides the level), so stdout holds
/// only the report.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx::query=error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

// ---------------------------------------------------------------------------------------------
// The run

/// The service as configured for the benchmark.
fn bench_config(mut config: Config, args: &BenchArgs, url: &str) -> Config {
    config.server.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.public_base_url = String::new();
    config.server.request_timeout_secs = 120;
    config.idempotency.lock_timeout_secs = config.idempotency.lock_timeout_secs.max(300);
    config.database.url = SecretString::from(url.to_string());
    config.database.max_connections = args.pool_size();
    config.database.acquire_timeout_secs = 30;
    config.database.migrate_on_start = true;
    config.sandbox.enabled = true;
    // Keep the background job out of the measurement: nothing is old enough to poll or expire.
    config.providers.status_poll_after_secs = 86_400;
    config.providers.payment_ttl_secs = config.providers.payment_ttl_secs.max(86_400);
    if !config.providers.enabled.iter().any(|p| p == "vnpay") {
        config.providers.enabled.push("vnpay".into());
    }
    config
}

async fn run_on(args: &BenchArgs, config: Config, scratch: &Scratch, pgbench: Option<&Path>) -> anyhow::Result<bool> {
    let config = bench_config(config, args, scratch.url());
    let vnpay_creds = config.providers.vnpay.credentials.clone();
    let app = Application::build(config).await.context("cannot start the service")?;
    let store = app.store().clone();
    let addr = app.local_addr();
    let base = format!("http://{addr}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));

    let bench = Bench {
        args: args.clone(),
        base,
        addr,
        http: reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(args.concurrency)
            .timeout(Duration::from_secs(180))
            .build()
            .context("cannot build the HTTP client")?,
        store: store.clone(),
        tmn_code: vnpay_creds.tmn_code.clone(),
        hash_secret: vnpay_creds.hash_secret.clone(),
    };
    let result = bench.run(pgbench, scratch).await;

    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(30), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("paygate bench: warning: the service stopped with an error: {e}"),
        Ok(Err(e)) => eprintln!("paygate bench: warning: the service task failed: {e}"),
        Err(_) => eprintln!("paygate bench: warning: the service did not stop within 30 s"),
    }
    store.close().await;
    result
}

struct Bench {
    args: BenchArgs,
    base: String,
    /// The service's address, for the timed phases' own client ([`client`]).
    addr: SocketAddr,
    http: reqwest::Client,
    store: Store,
    tmn_code: String,
    hash_secret: SecretString,
}

/// A pending payment and its signed IPN.
struct Prepared {
    id: String,
    notice_code: String,
    /// `canonical&vnp_SecureHash=…`, without `?`.
    ipn_query: String,
}

/// The figures of one timed phase.
struct PhaseReport {
    label: String,
    /// Target request rate when paced.
    rate: Option<f64>,
    requests: usize,
    wall: Duration,
    /// CPU time this process (service, clients, and SQLite) used during the phase; `None` where
    /// `/proc/self/stat` cannot be read.
    cpu: Option<Duration>,
    histogram: Histogram<u64>,
    /// Replies by `RspCode` (`http <status>` / `transport` for requests without one).
    codes: BTreeMap<String, u64>,
    error_examples: Vec<String>,
}

impl PhaseReport {
    fn count(&self, code: &str) -> u64 {
        self.codes.get(code).copied().unwrap_or(0)
    }
    fn errors(&self) -> u64 {
        self.codes.iter().filter(|(c, _)| *c != "00" && *c != "02").map(|(_, n)| n).sum()
    }
    fn secs(&self) -> f64 {
        self.wall.as_secs_f64().max(1e-9)
    }
    fn confirmed_per_s(&self) -> f64 {
        self.count("00") as f64 / self.secs()
    }
    fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.secs()
    }
    fn ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }
    fn max_ms(&self) -> f64 {
        self.histogram.max() as f64 / 1000.0
    }
    fn json(&self) -> Value {
        json!({
            "duration_s": round(self.secs(), 3),
            "rate": self.rate.map(|r| round(r, 1)),
            "confirmed_per_s": round(self.confirmed_per_s(), 1),
            "requests_per_s": round(self.requests_per_s(), 1),
            "p50_ms": round(self.ms(0.5), 3),
            "p99_ms": round(self.ms(0.99), 3),
            "max_ms": round(self.max_ms(), 3),
            "errors": self.errors(),
        })
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// One correctness check's result.
struct Check {
    name: String,
    ok: bool,
    detail: String,
}

fn mark(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

/// The ledger checks, when the build has a ledger.
struct LedgerOutcome {
    /// `None`: `GET /v1/ledger/verify` is not in this build.
    verified: Option<bool>,
    /// `None`: `GET /v1/ledger/entries` is not in this build.
    postings_ok: Option<bool>,
}

impl Bench {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn run(&self, pgbench: Option<&Path>, scratch: &Scratch) -> anyhow::Result<bool> {
        let a = &self.args;
        println!(
            "paygate callback benchmark: backend {} (pool {}), {} payments × {} deliveries, {} clients",
            a.backend.as_str(),
            a.pool_size(),
            a.payments,
            a.deliveries,
            a.concurrency
        );
        let issuer = self.token(Role::Issuer).await?;
        let auditor = self.token(Role::Auditor).await?;

        let mut phases = Vec::new();
        let mut all_payments = Vec::new();
        let first_label = if a.rate.is_some() { "paced run" } else { "full-speed run" };
        let payments = self.setup(&issuer, 0).await?;
        settle(scratch).await;
        let first = self.fire(first_label, &payments, a.rate).await;
        print_phase(&first, a);
        all_payments.extend(payments);
        if a.half_rate_check {
            let half = first.requests_per_s() / 2.0;
            let payments = self.setup(&issuer, 1).await?;
            settle(scratch).await;
            let second = self.fire("half-rate run", &payments, Some(half)).await;
            print_phase(&second, a);
            all_payments.extend(payments);
            phases.push(first);
            phases.push(second);
        } else {
            phases.push(first);
        }

        // Correctness.
        let mut checks = Vec::new();
        for p in &phases {
            let n = a.payments as u64;
            let dupes = n * (a.deliveries as u64 - 1);
            checks.push(Check {
                name: format!("{}: one 00 per payment", p.label),
                ok: p.count("00") == n,
                detail: format!("00 × {} (expected {n})", p.count("00")),
            });
            checks.push(Check {
                name: format!("{}: every duplicate answered 02", p.label),
                ok: p.count("02") == dupes,
                detail: format!("02 × {} (expected {dupes})", p.count("02")),
            });
            let mut detail = format!("{} other replies", p.errors());
            if p.errors() > 0 {
                let by_code: Vec<String> = p
                    .codes
                    .iter()
                    .filter(|(c, _)| *c != "00" && *c != "02")
                    .map(|(c, n)| format!("{c} × {n}"))
                    .collect();
                detail = format!("{detail}: {}; e.g. {}", by_code.join(", "), p.error_examples.join(" | "));
            }
            checks.push(Check { name: format!("{}: no errors", p.label), ok: p.errors() == 0, detail });
        }
        checks.push(self.check_payments(&all_payments).await);
        let ledger = self.check_ledger(&all_payments, &auditor, &mut checks).await;
        let exactly_once = checks.iter().all(|c| c.ok);

        println!("checks:");
        for c in &checks {
            println!("  {} {}: {}", mark(c.ok), c.name, c.detail);
        }
        let ledger_verified = match ledger.verified {
            None => {
                println!("  ledger: not available in this build");
                None
            }
            Some(v) => Some(v && ledger.postings_ok != Some(false)),
        };
        if ledger.verified.is_some() && ledger.postings_ok.is_none() {
            println!("  ledger entries per payment: not available in this build");
        }

        // pgbench on the same server, after the callback phases.
        let main = &phases[0];
        let mut pgbench_tps = None;
        let mut pgbench_failed = false;
        let mut ratio = None;
        if let (Some(bin), Some(admin_url)) = (pgbench, scratch.admin_url()) {
            let secs = main.wall.as_secs_f64().ceil().max(PGBENCH_MIN_SECS as f64) as u64;
            println!(
                "pgbench: TPC-B-like, scale {PGBENCH_SCALE}, {PGBENCH_CLIENTS} clients, {PGBENCH_THREADS} threads, \
                 {secs} s, prepared ({})",
                bin.display()
            );
            match run_pgbench(bin, admin_url, secs).await {
                Ok(tps) => {
                    let r = main.confirmed_per_s() / tps;
                    println!("  pgbench TPS {tps:.0}");
                    println!(
                        "  ratio confirmed callbacks/s ÷ pgbench TPS = {:.0} / {tps:.0} = {r:.2}  (target ≥ \
                         {TARGET_PG_RATIO}) {}",
                        main.confirmed_per_s(),
                        mark(r >= TARGET_PG_RATIO)
                    );
                    pgbench_tps = Some(round(tps, 1));
                    ratio = Some(round(r, 3));
                }
                Err(e) => {
                    println!("  ✘ pgbench failed: {e:#}");
                    pgbench_failed = true;
                }
            }
        }

        let mut summary = json!({
            "backend": a.backend.as_str(),
            "payments": a.payments,
            "deliveries": a.deliveries,
            "concurrency": a.concurrency,
            "pool_size": a.pool_size(),
        });
        if let (Value::Object(s), Value::Object(m)) = (&mut summary, main.json()) {
            s.extend(m);
            s.insert("exactly_once".into(), json!(exactly_once));
            s.insert("ledger_verified".into(), json!(ledger_verified));
            s.insert("pgbench_tps".into(), json!(pgbench_tps));
            s.insert("ratio".into(), json!(ratio));
            s.insert("half_rate".into(), phases.get(1).map(PhaseReport::json).unwrap_or(Value::Null));
        }
        if !exactly_once {
            println!("RESULT: a correctness check failed (see ✘ above)");
        }
        println!("{summary}");
        Ok(exactly_once && !pgbench_failed)
    }

    async fn token(&self, role: Role) -> anyhow::Result<String> {
        let t = new_token();
        let name = format!("bench-{role}-{}", t.id);
        self.store.insert_token(&t, &name, role).await.with_context(|| format!("cannot create the {role} token"))?;
        Ok(t.bearer)
    }

    /// Issues N notices and starts a VNPAY payment of each (not timed); `batch` tells the runs'
    /// payments apart.
    async fn setup(&self, issuer: &str, batch: usize) -> anyhow::Result<Vec<Arc<Prepared>>> {
        let n = self.args.payments;
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..self.args.concurrency.min(n) {
            let next = next.clone();
            let http = self.http.clone();
            let base = self.base.clone();
            let issuer = issuer.to_string();
            tasks.spawn(async move {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(done);
                    }
                    done.push((i, create_payment(&http, &base, &issuer, batch, i).await?));
                }
            });
        }
        let mut created: Vec<Option<(String, String, String, i64)>> = (0..n).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            for (i, p) in joined.context("a setup task failed")?? {
                created[i] = Some(p);
            }
        }
        let pay_date = vnpay::format_vn_datetime(chrono::Utc::now());
        let mut prepared = Vec::with_capacity(n);
        for (i, p) in created.into_iter().enumerate() {
            let (id, notice_code, merchant_ref, amount) = p.ok_or_else(|| anyhow!("payment {i} was not created"))?;
            let amount_x100 =
                amount.checked_mul(100).ok_or_else(|| anyhow!("payment {id}: amount {amount} × 100 overflows"))?;
            let txn_no = (10_000_000 + batch * n + i).to_string();
            let params = [
                ("vnp_Amount", amount_x100.to_string()),
                ("vnp_BankCode", "NCB".to_string()),
                ("vnp_BankTranNo", format!("VNP{txn_no}")),
                ("vnp_CardType", "ATM".to_string()),
                ("vnp_OrderInfo", format!("Thanh toan thong bao {notice_code}")),
                ("vnp_PayDate", pay_date.clone()),
                ("vnp_ResponseCode", "00".to_string()),
                ("vnp_TmnCode", self.tmn_code.clone()),
                ("vnp_TransactionNo", txn_no),
                ("vnp_TransactionStatus", "00".to_string()),
                ("vnp_TxnRef", merchant_ref),
            ];
            let ipn_query = vnpay::sign_params(&self.hash_secret, &params);
            prepared.push(Arc::new(Prepared { id, notice_code, ipn_query }));
        }
        println!("setup: {n} notices and pending VNPAY payments in {:.1} s", started.elapsed().as_secs_f64());
        Ok(prepared)
    }

    /// The timed phase: N×K shuffled deliveries from C clients, full speed or paced at `rate`.
    async fn fire(&self, label: &str, payments: &[Arc<Prepared>], rate: Option<f64>) -> PhaseReport {
        let k = self.args.deliveries;
        let mut order: Vec<usize> = (0..payments.len()).flat_map(|i| std::iter::repeat_n(i, k)).collect();
        order.shuffle(&mut rand::rng());
        // Requests as wire bytes, made before the clock starts.
        let requests: Arc<Vec<Vec<u8>>> = Arc::new(
            order
                .iter()
                .map(|&i| client::get_request(self.addr, &format!("/callbacks/vnpay?{}", payments[i].ipn_query)))
                .collect(),
        );
        let total = requests.len();
        let next = Arc::new(AtomicUsize::new(0));
        let clients = self.args.concurrency.min(total);
        let mut tasks = tokio::task::JoinSet::new();
        // The clock starts once every client is running (all have reached `ready`): a paced
        // request is due from then on, not while the clients are still being started.
        let ready = Arc::new(tokio::sync::Barrier::new(clients + 1));
        let (starting, started) = tokio::sync::watch::channel(None::<tokio::time::Instant>);
        for _ in 0..clients {
            let (requests, next, addr, mut started) = (requests.clone(), next.clone(), self.addr, started.clone());
            let ready = ready.clone();
            tasks.spawn(async move {
                // Opened before the clock starts, so the phase measures the service rather than
                // `clients` TCP handshakes at once (a provider's servers keep theirs open).
                let mut connection = client::Connection::open(addr).await;
                // Made before the clock starts: a histogram is ~170 KB, and 256 clients making
                // theirs after it held the first requests back by up to ~100 ms, which showed as
                // a backlog in every run's first 0.1 s (docs/callback-benchmark.md, machine (f)).
                let mut histogram = new_histogram();
                ready.wait().await;
                let Ok(start) =
                    started.wait_for(Option::is_some).await.map(|s| s.unwrap_or_else(tokio::time::Instant::now))
                else {
                    return (histogram, BTreeMap::new(), Vec::new());
                };
                let mut codes: BTreeMap<String, u64> = BTreeMap::new();
                let mut examples = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests.len() {
                        break;
                    }
                    // Paced: request i is due at start + i/rate, and its latency counts from then.
                    let t0 = match rate {
                        Some(r) => {
                            let due = start + Duration::from_secs_f64(i as f64 / r);
                            tokio::time::sleep_until(due).await;
                            due
                        }
                        None => tokio::time::Instant::now(),
                    };
                    let code = match deliver(&mut connection, &requests[i]).await {
                        Ok(code) => code,
                        Err((code, example)) => {
                            if examples.len() < EXAMPLES {
                                examples.push(example);
                            }
                            code
                        }
                    };
                    let micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                    histogram.saturating_record(micros.max(1));
                    *codes.entry(code).or_default() += 1;
                }
                (histogram, codes, examples)
            });
        }
        drop(started);
        ready.wait().await;
        let cpu_before = process_cpu();
        let start = tokio::time::Instant::now();
        let _ = starting.send(Some(start));
        let mut histogram = new_histogram();
        let mut codes: BTreeMap<String, u64> = BTreeMap::new();
        let mut error_examples = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((h, c, e)) => {
                    if let Err(err) = histogram.add(&h) {
                        error_examples.push(format!("histogram merge: {err:?}"));
                    }
                    for (code, n) in c {
                        *codes.entry(code).or_default() += n;
                    }
                    error_examples.extend(e);
                }
                Err(e) => {
                    *codes.entry("client task failed".into()).or_default() += 1;
                    error_examples.push(e.to_string());
                }
            }
        }
        let wall = start.elapsed();
        let cpu = cpu_before.zip(process_cpu()).map(|(before, after)| after.saturating_sub(before));
        error_examples.truncate(EXAMPLES);
        PhaseReport { label: label.to_string(), rate, requests: total, wall, cpu, histogram, codes, error_examples }
    }

    /// Every payment succeeded once, by its callback, and nothing is owed back.
    async fn check_payments(&self, payments: &[Arc<Prepared>]) -> Check {
        let name = "every payment succeeded, exactly one callback → succeeded transition, notice paid";
        let failures = self
            .for_each_payment(payments, |http, base, p| async move {
                let r = get_json(&http, &format!("{base}/v1/payments/{}", p.id), None).await?;
                if r.0 != 200 {
                    return Err(format!("GET /v1/payments/{}: HTTP {}", p.id, r.0));
                }
                let body = r.1;
                let history = body["history"].as_array().cloned().unwrap_or_default();
                let successes: Vec<&Value> = history.iter().filter(|e| e["to_status"] == "succeeded").collect();
                let by_callback = successes.iter().filter(|e| e["cause"] == "callback").count();
                let problems = [
                    (body["status"] != "succeeded", format!("status {}", body["status"])),
                    (successes.len() != 1, format!("{} transitions to succeeded", successes.len())),
                    (by_callback != 1, format!("{by_callback} callback → succeeded transitions")),
                    (history.iter().any(|e| e["cause"] == "late_success"), "a late_success event".to_string()),
                    (body["overpayment"] != false, "flagged overpayment".to_string()),
                    (body["late_success"] != false, "flagged late_success".to_string()),
                    (body["refund_due"] != 0, format!("refund_due {}", body["refund_due"])),
                ];
                let wrong: Vec<String> = problems.into_iter().filter(|(bad, _)| *bad).map(|(_, why)| why).collect();
                if !wrong.is_empty() {
                    return Err(format!("payment {}: {}", p.id, wrong.join(", ")));
                }
                let r = get_json(&http, &format!("{base}/v1/notices/{}", p.notice_code), None).await?;
                if r.0 != 200 || r.1["status"] != "paid" {
                    return Err(format!("notice {}: HTTP {}, status {}", p.notice_code, r.0, r.1["status"]));
                }
                Ok(())
            })
            .await;
        failures_check(name, payments.len(), failures)
    }

    /// `GET /v1/ledger/verify` and `GET /v1/ledger/entries?payment_id=…`, each skipped on 404.
    async fn check_ledger(&self, payments: &[Arc<Prepared>], auditor: &str, checks: &mut Vec<Check>) -> LedgerOutcome {
        let mut outcome = LedgerOutcome { verified: None, postings_ok: None };
        match get_json(&self.http, &self.url("/v1/ledger/verify"), Some(auditor)).await {
            Ok((404, _)) => {}
            Ok((status, body)) => {
                // Verify seals everything committed first, so nothing may be left unsealed.
                let ok = status == 200 && body["ok"] == true && body["unsealed"] == 0;
                outcome.verified = Some(ok);
                checks.push(Check {
                    name: "ledger chain verifies, every transfer sealed (GET /v1/ledger/verify)".into(),
                    ok,
                    detail: format!("HTTP {status}: {}", truncate(&body.to_string(), 300)),
                });
            }
            Err(e) => {
                outcome.verified = Some(false);
                checks.push(Check { name: "ledger chain verifies".into(), ok: false, detail: e });
            }
        }
        let Some(first) = payments.first() else { return outcome };
        let probe = get_json(&self.http, &entries_url(&self.base, &first.id), Some(auditor)).await;
        if matches!(probe, Ok((404, _))) {
            return outcome;
        }
        let auditor = auditor.to_string();
        let failures = self
            .for_each_payment(payments, move |http, base, p| {
                let auditor = auditor.clone();
                async move {
                    let (status, body) = get_json(&http, &entries_url(&base, &p.id), Some(&auditor)).await?;
                    if status != 200 {
                        return Err(format!("GET /v1/ledger/entries?payment_id={}: HTTP {status}", p.id));
                    }
                    match posting_transactions(&body) {
                        Some(1) => Ok(()),
                        Some(n) => Err(format!("payment {}: {n} posting transactions", p.id)),
                        None => Err(format!(
                            "payment {}: cannot find posting transactions in the entries' JSON (see \
                             bench::posting_transactions): {}",
                            p.id,
                            truncate(&body.to_string(), 300)
                        )),
                    }
                }
            })
            .await;
        let check = failures_check("one ledger posting transaction per payment", payments.len(), failures);
        outcome.postings_ok = Some(check.ok);
        checks.push(check);
        outcome
    }

    /// Runs `check` for every payment with C concurrent clients; returns the failures.
    async fn for_each_payment<F, Fut>(&self, payments: &[Arc<Prepared>], check: F) -> Vec<String>
    where
        F: Fn(reqwest::Client, String, Arc<Prepared>) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send,
    {
        let items: Arc<Vec<Arc<Prepared>>> = Arc::new(payments.to_vec());
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        // Twice the pool: enough to keep every connection busy; the benchmark's clients would
        // queue for the pool for seconds (and sqlx warn of each slow acquire) without checking faster.
        let checkers = self.args.concurrency.min(2 * self.args.pool_size() as usize).max(1);
        for _ in 0..checkers.min(items.len()) {
            let (items, next, http, base, check) =
                (items.clone(), next.clone(), self.http.clone(), self.base.clone(), check.clone());
            tasks.spawn(async move {
                let mut failures = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = items.get(i) else { break };
                    if let Err(e) = check(http.clone(), base.clone(), p.clone()).await {
                        failures.push(e);
                    }
                }
                failures
            });
        }
        let mut failures = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(f) => failures.extend(f),
                Err(e) => failures.push(format!("a checking task failed: {e}")),
            }
        }
        failures
    }
}

fn failures_check(name: &str, total: usize, failures: Vec<String>) -> Check {
    let detail = if failures.is_empty() {
        format!("{total} of {total}")
    } else {
        let examples: Vec<&str> = failures.iter().take(EXAMPLES).map(String::as_str).collect();
        format!("{} of {total} failed; e.g. {}", failures.len(), examples.join(" | "))
    };
    Check { name: name.to_string(), ok: failures.is_empty(), detail }
}

fn entries_url(base: &str, payment_id: &str) -> String {
    let id: String = form_urlencoded::byte_serialize(payment_id.as_bytes()).collect();
    format!("{base}/v1/ledger/entries?payment_id={id}")
}

/// How many distinct posting transactions `GET /v1/ledger/entries?payment_id=…` lists, or `None`
/// when the shape is not recognised. Accepts a JSON array or an object holding it under `entries`,
/// `items`, `data`, `transactions` or `postings`; each element is either a posting (a line) that
/// names its transaction in `transaction_id`, `txn_id`, `transaction`, `journal_id` or `entry_id`
/// (distinct values are counted), or a transaction carrying its lines in `postings`, `lines`,
/// `legs` or `entries` (each element counts once).
pub fn posting_transactions(body: &Value) -> Option<usize> {
    let list = match body {
        Value::Array(a) => a,
        Value::Object(o) => ["entries", "items", "data", "transactions", "postings"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_array))?,
        _ => return None,
    };
    let mut ids = std::collections::BTreeSet::new();
    for e in list {
        if ["postings", "lines", "legs", "entries"].iter().any(|k| e.get(*k).is_some_and(Value::is_array)) {
            ids.insert(format!("#{}", ids.len()));
            continue;
        }
        let id = ["transaction_id", "txn_id", "transaction", "journal_id", "entry_id"]
            .iter()
            .find_map(|k| e.get(*k).filter(|v| !v.is_null()))?;
        ids.insert(id.to_string());
    }
    Some(ids.len())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Makes the setup's writes durable before the clock starts ([`Scratch::settle`]); a failure
/// is reported and the run goes on.
async fn settle(scratch: &Scratch) {
    match scratch.settle().await {
        Ok(Some(took)) => println!("setup written back: CHECKPOINT in {:.1} s", took.as_secs_f64()),
        Ok(None) => {}
        Err(e) => eprintln!("paygate bench: warning: the setup's writes were not made durable first: {e:#}"),
    }
}

/// One IPN delivery: `Ok(RspCode)` for a 200 JSON reply, else `Err((bucket, example))`.
async fn deliver(connection: &mut client::Connection, request: &[u8]) -> Result<String, (String, String)> {
    #[derive(serde::Deserialize)]
    struct IpnAnswer {
        #[serde(rename = "RspCode")]
        code: Option<String>,
        #[serde(rename = "Message")]
        message: Option<String>,
    }
    let reply = connection.get(request).await.map_err(|e| ("transport".to_string(), format!("transport: {e}")))?;
    let text = || truncate(&String::from_utf8_lossy(&reply.body), 200);
    if reply.status != 200 {
        return Err((format!("http {}", reply.status), format!("HTTP {}: {}", reply.status, text())));
    }
    let answer: IpnAnswer =
        serde_json::from_slice(&reply.body).map_err(|_| ("bad reply".to_string(), format!("not JSON: {}", text())))?;
    match answer.code {
        Some(code) if code == "00" || code == "02" => Ok(code),
        Some(code) => {
            let message = answer.message.unwrap_or_default();
            Err((code.clone(), format!("RspCode {code}: {message}")))
        }
        None => Err(("bad reply".to_string(), format!("no RspCode: {}", text()))),
    }
}

/// GET with an optional bearer; `(status, JSON body or Null)`.
async fn get_json(http: &reqwest::Client, url: &str, bearer: Option<&str>) -> Result<(u16, Value), String> {
    let mut req = http.get(url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("GET {url}: reading the reply: {e}"))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// POST JSON; `(status, JSON body or Null, raw text)`.
async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    bearer: Option<&str>,
) -> anyhow::Result<(u16, Value, String)> {
    let mut req = http.post(url).json(body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.with_context(|| format!("POST {url}: reading the reply"))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null), text))
}

/// Issues a 6,250,000 đ notice (10 m² at 25,000,000 đ/m², contract and transfer price 250,000,000)
/// and starts a VNPAY payment: `(payment id, notice code, merchant_ref, amount)`.
async fn create_payment(
    http: &reqwest::Client,
    base: &str,
    issuer: &str,
    batch: usize,
    i: usize,
) -> anyhow::Result<(String, String, String, i64)> {
    let due = ((chrono::Utc::now() + chrono::Duration::hours(7)).date_naive() + chrono::Duration::days(30)).to_string();
    let notice = json!({
        "jurisdiction": "VN-57", "valuation_date": "2026-11-26",
        "parcel": {"area_m2": "10", "land_type": "ODT", "list_price_per_m2": 25_000_000},
        "items": [{"kind": "registration_fee", "contract_price": 250_000_000},
                  {"kind": "personal_income_tax", "transfer_price": 250_000_000}],
        "payer": {"name": "Nguyễn Văn An", "identifier": "079123456789"},
        "dossier_ref": format!("BENCH-{batch}-{i}"), "due_date": due,
    });
    let (status, body, text) = post_json(http, &format!("{base}/v1/notices"), &notice, Some(issuer)).await?;
    if status != 201 {
        bail!("POST /v1/notices answered HTTP {status}: {}", truncate(&text, 500));
    }
    let code = body["code"].as_str().ok_or_else(|| anyhow!("POST /v1/notices: no code in {}", truncate(&text, 300)))?;
    let (status, body, text) =
        post_json(http, &format!("{base}/v1/notices/{code}/payments"), &json!({"provider": "vnpay"}), None).await?;
    if status != 201 {
        bail!("POST /v1/notices/{code}/payments answered HTTP {status}: {}", truncate(&text, 500));
    }
    let field = |k: &str| {
        body[k].as_str().map(str::to_string).ok_or_else(|| anyhow!("payment reply lacks {k}: {}", truncate(&text, 300)))
    };
    let amount =
        body["amount"].as_i64().ok_or_else(|| anyhow!("payment reply lacks amount: {}", truncate(&text, 300)))?;
    Ok((field("id")?, code.to_string(), field("merchant_ref")?, amount))
}

/// User plus system CPU time of this whole process so far, from `/proc/self/stat` (Linux; its
/// clock ticks are USER_HZ, 100 per second).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields; the first two (pid, comm) precede the split.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn print_phase(p: &PhaseReport, a: &BenchArgs) {
    match p.rate {
        Some(r) => println!("{}: {} callbacks paced at {r:.0} requests/s in {:.2} s", p.label, p.requests, p.secs()),
        None => println!("{}: {} callbacks in {:.2} s", p.label, p.requests, p.secs()),
    }
    let confirmed = p.confirmed_per_s();
    if a.backend == Backend::Sqlite && p.rate.is_none() {
        println!(
            "  confirmed payments/s  {confirmed:>9.0}   (target ≥ {TARGET_SQLITE_CONFIRMED_PER_S:.0} on SQLite) {}",
            mark(confirmed >= TARGET_SQLITE_CONFIRMED_PER_S)
        );
    } else {
        println!("  confirmed payments/s  {confirmed:>9.0}");
    }
    println!("  requests/s            {:>9.0}", p.requests_per_s());
    if let Some(cpu) = p.cpu {
        let confirmed = p.count("00").max(1) as f64;
        println!(
            "  process CPU            {:>8.2} s   ({:.0} µs per confirmed payment, clients included)",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / confirmed
        );
    }
    let p99 = p.ms(0.99);
    let target = if p.label == "half-rate run" {
        format!(
            "   (p99 target ≤ {TARGET_HALF_RATE_P99_MS:.0} ms at half the peak rate) {}",
            mark(p99 <= TARGET_HALF_RATE_P99_MS)
        )
    } else {
        String::new()
    };
    println!("  latency p50 / p99 / max  {:.1} / {p99:.1} / {:.1} ms{target}", p.ms(0.5), p.max_ms());
    let codes: Vec<String> = p.codes.iter().map(|(c, n)| format!("{c} × {n}")).collect();
    println!("  replies: {}", codes.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tps_is_read_from_old_and_new_pgbench_output() {
        let new = "latency average = 3.2 ms\ninitial connection time = 5.1 ms\ntps = 2480.123456 (without initial connection time)\n";
        assert_eq!(parse_tps(new), Some(2480.123456));
        let old =
            "tps = 900.5 (including connections establishing)\ntps = 910.25 (excluding connections establishing)\n";
        assert_eq!(parse_tps(old), Some(910.25));
        assert_eq!(parse_tps("nothing here"), None);
    }

    #[test]
    fn posting_transactions_count_distinct_transactions() {
        let lines =
            json!({"entries": [{"transaction_id": "t1", "account": "a"}, {"transaction_id": "t1", "account": "b"}]});
        assert_eq!(posting_transactions(&lines), Some(1));
        let txns = json!([{"id": "t1", "postings": [{}, {}]}, {"id": "t2", "postings": [{}]}]);
        assert_eq!(posting_transactions(&txns), Some(2));
        assert_eq!(posting_transactions(&json!({"entries": []})), Some(0));
        assert_eq!(posting_transactions(&json!({"weird": 1})), None);
    }

    #[test]
    fn options_are_validated() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            b: BenchArgs,
        }
        let parse =
            |args: &[&str]| T::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|t| t.b);
        assert!(parse(&["--backend", "sqlite"]).unwrap().validate().is_ok());
        assert!(parse(&["--backend", "sqlite", "--pgbench"]).unwrap().validate().is_err());
        assert!(parse(&["--backend", "postgres", "--payments", "0"]).unwrap().validate().is_err());
        assert!(parse(&["--backend", "postgres", "--rate=-1"]).unwrap().validate().is_err());
        assert!(parse(&["--backend", "postgres", "--rate", "0"]).unwrap().validate().is_err());
        assert!(parse(&["--backend", "postgres", "--rate", "10", "--half-rate-check"]).is_err());
        let b = parse(&["--backend", "postgres", "--database-url", "postgres://u:pw@h/db"]).unwrap();
        assert!(b.validate().is_ok());
        assert_eq!(b.pool_size(), 16);
        assert_eq!(redacted("postgres://u:pw@h/db"), "postgres://u:***@h/db");
    }
}
