//! pgbench, the yardstick of the PostgreSQL runs: TPC-B-like, on a scratch database of the same
//! server, for as long as the timed phase.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use super::scratch::{create_database, drop_database};
use super::truncate;

/// pgbench: TPC-B-like (its default script), 8 clients on 2 threads, scale 8.
pub(super) const PGBENCH_CLIENTS: u32 = 8;
pub(super) const PGBENCH_THREADS: u32 = 2;
pub(super) const PGBENCH_SCALE: u32 = 8;
pub(super) const PGBENCH_MIN_SECS: u64 = 5;

/// `pgbench` on PATH, else the newest under /usr/lib/postgresql/*/bin.
pub(super) fn find_pgbench() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("pgbench"))
        .find(|p| p.is_file());
    if on_path.is_some() {
        return on_path;
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin/pgbench");
            bin.is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// Initialises a scratch database, runs the TPC-B-like script for `secs`, drops the database,
/// and returns the TPS.
pub(super) async fn run_pgbench(bin: &Path, admin_url: &str, secs: u64) -> anyhow::Result<f64> {
    let name = format!("paygate_pgbench_{}", uuid::Uuid::new_v4().simple());
    let url = create_database(admin_url, &name).await?;
    let result = async {
        let init = pgbench_command(bin, &["-i", "-q", "-s", &PGBENCH_SCALE.to_string()], &url).await?;
        if !init.status.success() {
            bail!("pgbench -i failed ({}): {}", init.status, truncate(&String::from_utf8_lossy(&init.stderr), 1000));
        }
        let args = [
            "-c".to_string(),
            PGBENCH_CLIENTS.to_string(),
            "-j".to_string(),
            PGBENCH_THREADS.to_string(),
            "-T".to_string(),
            secs.to_string(),
            "-M".to_string(),
            "prepared".to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = pgbench_command(bin, &args, &url).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("pgbench failed ({}): {}", out.status, truncate(&String::from_utf8_lossy(&out.stderr), 1000));
        }
        parse_tps(&stdout)
            .ok_or_else(|| anyhow!("no \"tps = …\" line in pgbench's output: {}", truncate(&stdout, 1000)))
    }
    .await;
    if let Err(e) = drop_database(admin_url, &name).await {
        eprintln!("paygate bench: warning: {e:#}");
    }
    result
}

async fn pgbench_command(bin: &Path, args: &[&str], url: &str) -> anyhow::Result<std::process::Output> {
    tokio::process::Command::new(bin)
        .args(args)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {}", bin.display()))
}

/// The TPS pgbench reports without connection time: `tps = 1234.5 (without initial connection
/// time)` (PostgreSQL ≥ 14), `tps = … (excluding connections establishing)` (older).
pub(super) fn parse_tps(output: &str) -> Option<f64> {
    let tps =
        |line: &str| -> Option<f64> { line.trim().strip_prefix("tps = ")?.split_whitespace().next()?.parse().ok() };
    output
        .lines()
        .find(|l| l.contains("tps = ") && (l.contains("without initial connection") || l.contains("excluding")))
        .and_then(tps)
        .or_else(|| output.lines().find_map(tps))
}
