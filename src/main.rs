//! The `paygate` command line.
//!
//! Exit status: 0 success, 1 runtime failure (database unreachable, …), 2 bad configuration or
//! usage.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use paygate::app::{Application, shutdown_signal};
use paygate::auth::{Role, new_token};
use paygate::config::Config;
use paygate::store::{Store, StoreError};

/// mimalloc rather than the system allocator: a request allocates and frees many small buffers
/// across threads, which glibc's allocator serves with locks and consolidation (measured: the
/// callback benchmark spent about a seventh of its CPU time in glibc malloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "paygate",
    version,
    about = "Payment gateway for land-related financial obligations and procedure fees",
    long_about = "paygate calculates land-related obligations, issues payment notices, takes payments \
                  through banks and e-wallets, and records them in an append-only ledger.\n\n\
                  Configuration: config/default.toml < config/$PAYGATE_ENV.toml < PAYGATE_<SECTION>__<KEY> \
                  environment variables (e.g. PAYGATE_DATABASE__URL=postgres://…). See README.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (applies migrations first unless database.migrate_on_start = false).
    ///
    /// Listens on server.bind (default 127.0.0.1:8080). Stops on SIGTERM or Ctrl-C after
    /// finishing in-flight requests.
    Serve,
    /// Apply the embedded database migrations and exit.
    ///
    /// Safe to run while other instances are serving, and from several processes at once.
    Migrate,
    /// Run the provider simulators (VNPAY, MoMo, ZaloPay, partner banks) on their own.
    ///
    /// `paygate serve` already mounts them at /sandbox when sandbox.enabled is true (the
    /// default). Use this to run them as a separate process: point the connectors at it with
    /// PAYGATE_PROVIDERS__VNPAY__BASE_URL=http://127.0.0.1:8090/sandbox/vnpay (likewise momo,
    /// zalopay). Pay pages are under /sandbox/<provider>/, settlement files under
    /// /sandbox/<provider>/settlement?date=YYYY-MM-DD.
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        bind: std::net::SocketAddr,
        /// The gateway that receives the simulated callbacks.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        gateway: String,
    },
    /// Manage bearer tokens for issuers and staff.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Work with the append-only ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Reconcile a provider's settlement file against the ledger (as POST /v1/reconciliation/runs).
    ///
    /// The same file again prints the run it made before; a different file for the same provider
    /// and date supersedes it. Prints the run as JSON; unreadable rows are listed on stderr with
    /// their line numbers. Exits 1 if the file is rejected as a whole (nothing is written).
    ///
    /// Example: paygate reconcile --provider vnpay --date 2026-11-26 vnpay_PGSANDBX_20261126.csv
    Reconcile {
        /// vnpay, momo, zalopay or vietqr (the collecting bank's file).
        #[arg(long)]
        provider: String,
        /// The day the file covers, YYYY-MM-DD (GMT+7).
        #[arg(long)]
        date: chrono::NaiveDate,
        /// A mapping in reconciliation.mappings_dir (e.g. generic); default: the provider's format.
        #[arg(long)]
        format: Option<String>,
        /// The settlement file.
        file: std::path::PathBuf,
    },
    /// Benchmark confirming payments from signed VNPAY callbacks (not a test; see README).
    ///
    /// Starts the service in this process on a fresh database (SQLite in a temporary folder, or a
    /// new PostgreSQL database that is dropped afterwards), creates N pending payments, fires their
    /// IPNs K times each from C concurrent clients, and reports confirmed payments/s and callback
    /// latency; then checks that every payment was confirmed and posted exactly once and that the
    /// ledger chain verifies. The last line of stdout is a JSON summary. Exits 1 if a correctness
    /// check fails (not for missed performance targets).
    ///
    /// Example: paygate bench --backend postgres --pgbench --half-rate-check
    Bench(paygate::bench::BenchArgs),
    /// Benchmark reconciling a generated VNPAY settlement file (not a test).
    ///
    /// On a fresh database (SQLite in a temporary folder, or a new PostgreSQL database that is
    /// dropped afterwards), seeds N confirmed VNPAY payments with their ledger postings (timed
    /// separately, not measured), writes a settlement file listing each of them once, then times
    /// hashing and reconciling it and reads the process's peak resident memory. Checks that every
    /// row matched and settled with no discrepancy and that the clearing account is back to zero.
    /// The last line of stdout is a JSON summary. Exits 1 if a correctness check fails (not for
    /// missed performance targets).
    ///
    /// Example: paygate bench-reconcile --backend postgres --rows 1000000
    BenchReconcile(paygate::bench::reconciliation::ReconcileBenchArgs),
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Seal pending transfers, recompute the hash chain and name the first link that does not
    /// match. Exit status 0 when it verifies, 1 when it does not.
    ///
    /// Keep `head_seq:head` of each run outside the database; `--anchor` with it later also
    /// finds links removed from the chain's end, which the chain alone cannot show.
    Verify {
        /// SEQ:HASH of an earlier run (its head_seq and head): the chain must still have it.
        #[arg(long)]
        anchor: Option<paygate::ledger::Anchor>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it as the last line of stdout (only its hash is stored).
    ///
    /// Example: paygate token create --role issuer --name dossier-system
    Create {
        /// What the holder may do: issuer (quotes, notices), treasurer (refunds,
        /// reconciliation), auditor (read ledger and logs), admin (tokens, operations).
        #[arg(long, value_enum)]
        role: Role,
        /// Who holds it; unique among active tokens.
        #[arg(long)]
        name: String,
    },
    /// Revoke the active token with this id or name.
    Revoke {
        /// Token id (as listed) or name.
        id_or_name: String,
    },
    /// List tokens (ids, names, roles; never secrets).
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("paygate: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("paygate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("paygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => {
            let _telemetry = paygate::telemetry::init(&config.telemetry)?;
            let backend = config.database.backend_name();
            let rules = match paygate::notices::load_rules(&config.obligations.rules_dir) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("paygate: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let app = Application::build_with(config, std::sync::Arc::new(rules)).await?;
            // Signal handlers first: once "listening" is logged, SIGTERM (on unix) stops it gracefully.
            let stop = shutdown_signal();
            tracing::info!(address = %app.local_addr(), backend, "paygate listening");
            app.run_until(stop).await?;
            tracing::info!("stopped");
        }
        Command::Sandbox { bind, gateway } => {
            let _telemetry = paygate::telemetry::init(&config.telemetry)?;
            let sandbox = paygate::sandbox::router(paygate::http::sandbox_config(&config, &gateway));
            let app = axum::Router::new().nest_service("/sandbox", sandbox);
            let listener = tokio::net::TcpListener::bind(bind).await?;
            let stop = shutdown_signal();
            tracing::info!(address = %listener.local_addr()?, gateway, "provider sandbox listening");
            println!("sandbox: http://{}/sandbox/", listener.local_addr()?);
            axum::serve(listener, app).with_graceful_shutdown(stop).await?;
        }
        Command::Migrate => {
            let store = Store::connect(&config.database).await?;
            store.migrate().await?;
            println!("migrations applied ({})", store.backend());
        }
        Command::Bench(args) => {
            if let Err(e) = args.validate() {
                eprintln!("paygate: {e}");
                return Ok(ExitCode::from(2));
            }
            let passed = paygate::bench::run(args, config).await?;
            return Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::BenchReconcile(args) => {
            if let Err(e) = args.validate(&config) {
                eprintln!("paygate: {e}");
                return Ok(ExitCode::from(2));
            }
            let passed = paygate::bench::reconciliation::run(args, config).await?;
            return Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::Ledger(LedgerCommand::Verify { anchor }) => {
            let store = Store::connect(&config.database).await?;
            store.seal_ledger_fully(paygate::background::SEAL_BATCH).await?;
            let report = store.verify_ledger(anchor.as_ref()).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.ok {
                if let Some(b) = &report.first_broken {
                    eprintln!(
                        "paygate: ledger chain broken at seq {} (transfer {}): {}",
                        b.seq, b.transfer_id, b.reason
                    );
                }
                if let Some(a) = report.anchor.as_ref().filter(|a| !a.held) {
                    eprintln!("paygate: the anchor at seq {} does not hold: {}", a.seq, a.detail);
                }
                return Ok(ExitCode::FAILURE);
            }
            eprintln!(
                "paygate: the ledger chain verifies; keep its anchor outside the database to check later: {}:{}",
                report.head_seq, report.head
            );
        }
        Command::Reconcile { provider, date, format, file } => {
            return reconcile(&config, &provider, date, format.as_deref(), &file).await;
        }
        Command::Token(cmd) => {
            let store = Store::connect(&config.database).await?;
            store.migrate().await?;
            return token(cmd, &store).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn reconcile(
    config: &Config,
    provider: &str,
    date: chrono::NaiveDate,
    format: Option<&str>,
    file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    use paygate::reconciliation::service::{Mappings, RunRequest, hash_file, reconcile_file};
    use paygate::store::reconciliation::RunOutcome;
    let mappings = Mappings::load(&config.reconciliation).map_err(|e| anyhow::anyhow!(e))?;
    let (sha256, bytes) = hash_file(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let store = Store::connect(&config.database).await?;
    store.migrate().await?;
    let actor = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
    let request = RunRequest { provider, settlement_date: date, format, actor: &actor };
    let run = match reconcile_file(&store, &config.reconciliation, &mappings, &request, file, &sha256, bytes).await {
        Ok(RunOutcome::Created(run)) => run,
        Ok(RunOutcome::Existing(run)) => {
            eprintln!("paygate: this file was reconciled before (run {}); nothing new was written", run.id);
            run
        }
        Ok(RunOutcome::Rejected(reason)) => {
            eprintln!("paygate: file rejected, nothing written: {reason}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => {
            eprintln!("paygate: file rejected, nothing written: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for e in store.run_row_errors(&run.id, 1_000).await? {
        eprintln!("line {}: {}", e.line_no, e.reason);
    }
    let counts = store.run_class_counts(&run.id).await?;
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({"run": run, "discrepancies": counts}))?);
    Ok(ExitCode::SUCCESS)
}

async fn token(cmd: TokenCommand, store: &Store) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create { role, name } => {
            let name = match paygate::http::tokens::validate_name(&name) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("paygate: --name {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let token = new_token();
            match store.insert_token(&token, name, role).await {
                Ok(record) => {
                    eprintln!("created token {} for {name:?} with role {role}; it is shown once:", record.id);
                    println!("{}", token.bearer);
                }
                Err(StoreError::Conflict(_)) => {
                    eprintln!("paygate: an active token is already named {name:?}; revoke it first");
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e.into()),
            }
        }
        TokenCommand::Revoke { id_or_name } => {
            if store.revoke_token(&id_or_name).await? == 0 {
                eprintln!("paygate: no active token with id or name {id_or_name:?}");
                return Ok(ExitCode::FAILURE);
            }
            println!("revoked {id_or_name}");
        }
        TokenCommand::List => {
            for t in store.list_tokens().await? {
                let state = if t.revoked_at.is_some() { "revoked" } else { "active" };
                println!("{}\t{}\t{}\t{}\t{}", t.id, t.role, state, t.created_at.to_rfc3339(), t.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
