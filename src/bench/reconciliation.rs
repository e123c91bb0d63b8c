//! `paygate bench-reconcile`: the reconciliation benchmark (not a test).
//!
//! What it measures: how long the real reconciliation ([`hash_file`] then [`reconcile_file`], as
//! `paygate reconcile` and `POST /v1/reconciliation/runs` run them) takes on a generated VNPAY
//! settlement file of N rows against N confirmed payments, and the process's peak resident memory
//! meanwhile. Target (from the issue), for N = 1,000,000 on the benchmark machine: at most 10 s and
//! 300 MB resident.
//!
//! Phases: (1) a fresh database — SQLite in a temporary folder, or a new PostgreSQL database
//! `paygate_bench_<random>` — migrated; (2) seeding with set-based SQL
//! ([`Store::seed_confirmed_payments`], timed on its own, not part of the measurement), then a
//! check that the confirmation range query with bound `DateTime<Utc>` bounds sees all N; (3) the
//! settlement file, streamed to a temporary file (header + one CRLF row per payment, amounts and
//! fee ×100, `Thanh cong`, type `01`, PayDate on the settlement date in GMT+7); (4) the peak-RSS
//! counter is reset (`/proc/self/clear_refs`), then hashing and reconciling are timed separately,
//! and `VmHWM` / `VmRSS` are read from `/proc/self/status`; (5) checks.
//!
//! Invariants it checks (any failure exits 1; a missed performance target does not): the run is
//! new and has rows_total = rows_matched = rows_settled = N, no invalid row, no discrepancy,
//! settled gross = the seeded amounts, settled fees = N × 1,650 đ, no refunds; and the ledger
//! balance of `provider_clearing:vnpay` is back to zero. Seeding and the file are deterministic
//! functions of N ([`BenchPayment`]). The scratch database and the file are removed at the end,
//! also when a phase fails or on Ctrl-C (unless `--keep`). Money is integer đồng throughout;
//! floats are only seconds and megabytes in the report.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use chrono::NaiveDate;
use secrecy::SecretString;
use serde_json::json;

use super::{Backend, Scratch, create_database, redacted, round};
use crate::config::Config;
use crate::reconciliation::service::{Mappings, RunRequest, day_bounds, hash_file, reconcile_file};
use crate::store::Store;
use crate::store::reconciliation::RunOutcome;
use crate::store::seed::{BenchPayment, BenchSeed, MAX_SEED_PAYMENTS, bench_gross};

/// Where `--backend postgres` creates its scratch database unless `--database-url` says otherwise.
pub const DEFAULT_POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Targets from the issue, for N = 1,000,000: seconds (hashing + reconciling) and resident MB.
const TARGET_SECS: u32 = 10;
const TARGET_RSS_MB: u32 = 300;

const PROVIDER: &str = "vnpay";
/// VNPAY's flat fee per payment, đồng (the file writes it ×100).
const VNPAY_FEE_VND: i64 = 1_650;
/// VNPAY writes amounts in đồng × 100.
const VNPAY_SCALE: i64 = 100;
const TMN_CODE: &str = "PGBENCH1";
const BUDGET_CODE: &str = "757-2801";
const HEADER: &str =
    "TmnCode,TransactionNo,TxnRef,TransactionType,Amount,Fee,BankCode,PayDate,OriginalTransactionNo,Status\r\n";

/// The settlement date of the benchmark (any fixed day).
fn settlement_date() -> anyhow::Result<NaiveDate> {
    NaiveDate::from_ymd_opt(2026, 11, 26).ok_or_else(|| anyhow!("invalid settlement date"))
}

/// Options of `paygate bench-reconcile`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileBenchArgs {
    /// Database backend (always a fresh, empty database).
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: Backend,
    /// Rows in the settlement file, and payments seeded (N).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// PostgreSQL only: the server, as the URL of an existing database to connect to as an
    /// administrator; the benchmark creates `paygate_bench_<random>` there and drops it at the end.
    /// [default: postgres://postgres@127.0.0.1:5432/postgres]
    #[arg(long)]
    pub database_url: Option<String>,
    /// Keep the scratch database afterwards (its location is printed on stderr), e.g. to inspect
    /// query plans.
    #[arg(long)]
    pub keep: bool,
}

impl ReconcileBenchArgs {
    /// Checks the options against the configuration (no I/O); the message names the offending flag.
    pub fn validate(&self, config: &Config) -> Result<(), String> {
        if self.rows == 0 || self.rows > MAX_SEED_PAYMENTS {
            return Err(format!("--rows must be between 1 and {MAX_SEED_PAYMENTS}"));
        }
        if self.rows > config.reconciliation.max_rows {
            return Err(format!(
                "--rows {} is above reconciliation.max_rows ({}), which would reject the file; raise it with \
                 PAYGATE_RECONCILIATION__MAX_ROWS",
                self.rows, config.reconciliation.max_rows
            ));
        }
        if self.backend == Backend::Sqlite && self.database_url.is_some() {
            return Err("--database-url applies to --backend postgres only; SQLite always runs on a fresh file in \
                        a temporary folder (set TMPDIR to choose where)"
                .into());
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err("--database-url must be a postgres:// URL".into());
        }
        Ok(())
    }
}

/// Runs the benchmark with `config` (the loaded configuration; its database is replaced by the
/// scratch one). Prints the report, with a one-line JSON summary last, to stdout. `Ok(true)` when
/// every check passed, `Ok(false)` when one failed, `Err` when the benchmark could not run.
pub async fn run(args: ReconcileBenchArgs, config: Config) -> anyhow::Result<bool> {
    args.validate(&config).map_err(|e| anyhow!(e))?;
    super::init_logging();
    let scratch = match args.backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("paygate-bench-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the scratch folder {}", dir.display()))?;
            let url = format!("sqlite://{}", dir.join("paygate.db").display());
            Scratch::Sqlite { dir, url }
        }
        Backend::Postgres => {
            let admin_url = args.database_url.clone().unwrap_or_else(|| DEFAULT_POSTGRES_ADMIN_URL.to_string());
            let name = format!("paygate_bench_{}", uuid::Uuid::new_v4().simple());
            let url = create_database(&admin_url, &name).await?;
            Scratch::Postgres { admin_url, name, url }
        }
    };
    // On Ctrl-C, stop and still remove the scratch database.
    let result = tokio::select! {
        r = run_on(&args, config, &scratch) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if args.keep {
        eprintln!("paygate bench-reconcile: kept the scratch database {}", redacted(scratch.url()));
    } else if let Err(e) = scratch.remove().await {
        eprintln!("paygate bench-reconcile: warning: {e:#}");
    }
    result
}

async fn run_on(args: &ReconcileBenchArgs, mut config: Config, scratch: &Scratch) -> anyhow::Result<bool> {
    config.database.url = SecretString::from(scratch.url().to_string());
    config.database.max_connections = 4;
    config.database.acquire_timeout_secs = 60;
    let mappings = Mappings::load(&config.reconciliation).map_err(|e| anyhow!(e))?;
    let store = Store::connect(&config.database).await.context("cannot open the scratch database")?;
    let result = bench(args, &config, &mappings, &store).await;
    store.close().await;
    result
}

/// Memory figures from `/proc/self/status`, KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    peak_kib: u64,
    current_kib: u64,
}

fn read_memory() -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("/proc/self/status has no readable {name}"))
    };
    Ok(Memory { peak_kib: field("VmHWM:")?, current_kib: field("VmRSS:")? })
}

/// Megabytes (10^6 bytes), as the target is stated.
fn mb(kib: u64) -> f64 {
    (kib * 1024) as f64 / 1e6
}

/// Writes the VNPAY settlement file of payments `1..=rows` on `date`; returns its size in bytes.
fn write_settlement_file(path: &Path, date: NaiveDate, rows: u64) -> std::io::Result<u64> {
    let file = std::fs::File::create(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(HEADER.as_bytes())?;
    let day = date.format("%d/%m/%Y").to_string();
    for n in 1..=rows {
        let p = BenchPayment::of(n);
        // Local (GMT+7) time of day: the day starts at local midnight.
        let s = p.paid_offset();
        write!(
            out,
            "{TMN_CODE},{},{},01,{},{},NCB,{day} {:02}:{:02}:{:02},,Thanh cong\r\n",
            p.provider_txn_id,
            p.merchant_ref,
            p.amount * VNPAY_SCALE,
            VNPAY_FEE_VND * VNPAY_SCALE,
            s / 3600,
            s / 60 % 60,
            s % 60
        )?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    Ok(file.metadata()?.len())
}

async fn bench(args: &ReconcileBenchArgs, config: &Config, mappings: &Mappings, store: &Store) -> anyhow::Result<bool> {
    let n = args.rows;
    let backend = args.backend.as_str();
    store.migrate().await.context("cannot migrate the scratch database")?;
    let date = settlement_date()?;
    let day = day_bounds(date);

    // Seeding (not measured).
    eprintln!("paygate bench-reconcile: seeding {n} payments on {backend}…");
    let notice_code = crate::obligations::NoticeCode::generate(2026, &mut rand::rng())
        .map_err(|e| anyhow!("cannot make a notice code: {e}"))?
        .to_string();
    let seed = BenchSeed {
        provider: PROVIDER,
        payments: n,
        day_start: day.0,
        notice_code: &notice_code,
        budget_code: BUDGET_CODE,
    };
    let started = Instant::now();
    store.seed_confirmed_payments(&seed).await.context("seeding failed")?;
    let seed_secs = started.elapsed().as_secs_f64();
    let confirmations = store.count_confirmations(PROVIDER, day.0, day.1).await?;
    if confirmations != n as i64 {
        bail!(
            "after seeding, the confirmation range query [{}, {}) finds {confirmations} of {n} confirmations: the \
             seeded timestamps do not compare as the reconciliation's bound DateTime<Utc> values",
            day.0.to_rfc3339(),
            day.1.to_rfc3339()
        );
    }

    // The settlement file (not measured).
    let dir = tempfile::Builder::new()
        .prefix("paygate-bench-recon-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let path = dir.path().join(format!("vnpay_{TMN_CODE}_{}.csv", date.format("%Y%m%d")));
    eprintln!("paygate bench-reconcile: writing the settlement file {}…", path.display());
    let started = Instant::now();
    let file_bytes = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || write_settlement_file(&path, date, n)).await?
    }
    .with_context(|| format!("cannot write {}", path.display()))?;
    let file_secs = started.elapsed().as_secs_f64();

    // The measurement: peak RSS from here on.
    let before = read_memory()?;
    let peak_scope = match std::fs::write("/proc/self/clear_refs", "5") {
        Ok(()) => "measured phase",
        Err(e) => {
            eprintln!(
                "paygate bench-reconcile: cannot reset the peak-RSS counter ({e}); the peak reported is the whole \
                 process's, seeding included"
            );
            "whole process"
        }
    };
    eprintln!("paygate bench-reconcile: reconciling {n} rows…");
    let started = Instant::now();
    let (sha256, bytes) = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || hash_file(&path)).await?
    }
    .with_context(|| format!("cannot hash {}", path.display()))?;
    let hash_secs = started.elapsed().as_secs_f64();
    let started_reconcile = Instant::now();
    let request = RunRequest { provider: PROVIDER, settlement_date: date, format: None, actor: "bench" };
    let outcome = reconcile_file(store, &config.reconciliation, mappings, &request, &path, &sha256, bytes).await;
    let reconcile_secs = started_reconcile.elapsed().as_secs_f64();
    let total_secs = started.elapsed().as_secs_f64();
    let memory = read_memory()?;
    drop(dir);

    // Checks.
    let run = match outcome {
        Ok(RunOutcome::Created(run)) => run,
        Ok(RunOutcome::Existing(run)) => {
            bail!("the file was answered with an existing run {} instead of a new one", run.id)
        }
        Ok(RunOutcome::Rejected(reason)) => bail!("the file was rejected: {reason}"),
        Err(e) => bail!("the reconciliation failed: {e}"),
    };
    let mut failures: Vec<String> = Vec::new();
    let n_i = n as i64;
    let mut expect = |what: &str, got: i64, want: i64| {
        if got != want {
            failures.push(format!("{what} is {got}, expected {want}"));
        }
    };
    expect("rows_total", run.rows_total, n_i);
    expect("rows_matched", run.rows_matched, n_i);
    expect("rows_settled", run.rows_settled, n_i);
    expect("rows_invalid", run.rows_invalid, 0);
    expect("settled_gross", run.settled_gross, bench_gross(n));
    expect("settled_fees", run.settled_fees, n_i * VNPAY_FEE_VND);
    expect("settled_refunds", run.settled_refunds, 0);
    let balances = store.ledger_balances().await?;
    let clearing = crate::ledger::provider_clearing(PROVIDER);
    match balances.iter().find(|b| b.account == clearing) {
        Some(b) => expect(&format!("the balance of {clearing}"), b.balance, 0),
        None => failures.push(format!("there is no ledger account {clearing}")),
    }
    let classes = store.run_class_counts(&run.id).await?;
    for c in classes.iter().filter(|c| c.count > 0) {
        failures.push(format!("{} {} discrepancies of class {}", c.count, c.status, c.class));
    }
    for e in store.run_row_errors(&run.id, 5).await? {
        failures.push(format!("row error on line {}: {}", e.line_no, e.reason));
    }

    // Report.
    let rows_per_sec = n as f64 / total_secs.max(1e-9);
    let peak_rss_mb = mb(memory.peak_kib);
    let met = total_secs <= f64::from(TARGET_SECS) && peak_rss_mb <= f64::from(TARGET_RSS_MB);
    println!("paygate bench-reconcile — {backend}, {n} rows (settlement date {date}, provider {PROVIDER})");
    println!("  seed          {seed_secs:>9.3} s   ({n} payments + confirmations, not measured)");
    println!("  file          {file_secs:>9.3} s   ({file_bytes} bytes, not measured)");
    println!("  hash          {hash_secs:>9.3} s");
    println!("  reconcile     {reconcile_secs:>9.3} s   (run {})", run.id);
    println!("  total         {total_secs:>9.3} s   target ≤ {TARGET_SECS} s");
    println!("  rows/s        {rows_per_sec:>9.0}");
    println!(
        "  peak RSS      {peak_rss_mb:>9.1} MB target ≤ {TARGET_RSS_MB} MB ({peak_scope}; RSS {:.1} MB before, {:.1} MB \
         after)",
        mb(before.current_kib),
        mb(memory.current_kib)
    );
    println!(
        "  run           {} rows, {} matched, {} settled, {} invalid; gross {} đ, fees {} đ",
        run.rows_total, run.rows_matched, run.rows_settled, run.rows_invalid, run.settled_gross, run.settled_fees
    );
    if failures.is_empty() {
        println!("  checks        passed");
    } else {
        println!("  checks        FAILED");
        for f in &failures {
            println!("    - {f}");
        }
    }
    println!("  targets       {}", if met { "met" } else { "NOT met" });
    let summary = json!({
        "backend": backend,
        "rows": n,
        "seed_secs": round(seed_secs, 3),
        "file_secs": round(file_secs, 3),
        "file_bytes": file_bytes,
        "hash_secs": round(hash_secs, 3),
        "reconcile_secs": round(reconcile_secs, 3),
        "total_secs": round(total_secs, 3),
        "rows_per_sec": round(rows_per_sec, 0),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "peak_rss_scope": peak_scope,
        "rss_before_mb": round(mb(before.current_kib), 1),
        "rss_after_mb": round(mb(memory.current_kib), 1),
        "targets": {"secs": TARGET_SECS, "rss_mb": TARGET_RSS_MB},
        "met": met,
        "checks_passed": failures.is_empty(),
    });
    println!("{summary}");
    Ok(failures.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_read_back_as_the_seeded_payments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vnpay.csv");
        let date = settlement_date().expect("date");
        let bytes = write_settlement_file(&path, date, 3).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(bytes, text.len() as u64);
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines[0], HEADER.trim_end());
        assert_eq!(
            lines[1],
            "PGBENCH1,15000000001,BR000000001,01,100100000,165000,NCB,26/11/2026 00:01:21,,Thanh cong"
        );
        let mapping = crate::reconciliation::reader::SettlementMapping::from_toml(
            &std::fs::read_to_string("config/settlement/vnpay.toml").expect("mapping"),
        )
        .expect("mapping parses");
        let reader = crate::reconciliation::reader::SettlementReader::new(
            &mapping,
            std::io::BufReader::new(std::fs::File::open(&path).expect("open")),
        )
        .expect("header");
        let rows: Vec<_> = reader.map(|r| r.expect("row")).collect();
        assert_eq!(rows.len(), 3);
        let day = day_bounds(date);
        for (row, n) in rows.iter().zip(1u64..) {
            let p = BenchPayment::of(n);
            assert_eq!(
                (row.provider_txn_id.as_str(), row.merchant_ref.as_str()),
                (p.provider_txn_id.as_str(), p.merchant_ref.as_str())
            );
            assert_eq!((row.amount, row.fee, row.success, row.local_date), (p.amount, VNPAY_FEE_VND, true, date));
            assert_eq!(row.paid_at, day.0 + chrono::Duration::seconds(p.paid_offset()));
        }
    }

    #[test]
    fn options_are_checked() {
        let config = Config::defaults();
        let args = |backend, rows, url: Option<&str>| ReconcileBenchArgs {
            backend,
            rows,
            database_url: url.map(String::from),
            keep: false,
        };
        assert!(args(Backend::Sqlite, 1_000_000, None).validate(&config).is_ok());
        assert!(args(Backend::Sqlite, 0, None).validate(&config).is_err());
        assert!(args(Backend::Sqlite, 10, Some("postgres://x")).validate(&config).is_err());
        assert!(args(Backend::Postgres, 10, Some("mysql://x")).validate(&config).is_err());
        assert!(args(Backend::Postgres, config.reconciliation.max_rows + 1, None).validate(&config).is_err());
    }
}
