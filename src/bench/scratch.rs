//! The benchmarks' scratch databases: a fresh SQLite file in a temporary folder, or a fresh
//! PostgreSQL database on the server of `--database-url`, removed afterwards (unless kept).

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use sqlx::Connection;

use super::{Backend, BenchArgs, DEFAULT_POSTGRES_ADMIN_URL};

/// The fresh database the service runs on, removed by [`Scratch::remove`].
pub(super) enum Scratch {
    Sqlite { dir: PathBuf, url: String },
    Postgres { admin_url: String, name: String, url: String },
}

impl Scratch {
    pub(super) async fn create(args: &BenchArgs) -> anyhow::Result<Scratch> {
        match args.backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("paygate-bench-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create the scratch folder {}", dir.display()))?;
                let url = format!("sqlite://{}", dir.join("paygate.db").display());
                Ok(Scratch::Sqlite { dir, url })
            }
            Backend::Postgres => {
                let admin_url = args.database_url.clone().unwrap_or_else(|| DEFAULT_POSTGRES_ADMIN_URL.to_string());
                let name = format!("paygate_bench_{}", uuid::Uuid::new_v4().simple());
                let url = create_database(&admin_url, &name).await?;
                Ok(Scratch::Postgres { admin_url, name, url })
            }
        }
    }

    pub(super) fn url(&self) -> &str {
        match self {
            Scratch::Sqlite { url, .. } | Scratch::Postgres { url, .. } => url,
        }
    }

    pub(super) fn admin_url(&self) -> Option<&str> {
        match self {
            Scratch::Postgres { admin_url, .. } => Some(admin_url),
            Scratch::Sqlite { .. } => None,
        }
    }

    /// Makes the setup's writes durable before a timed phase, so that the phase does not pay for
    /// writing them back: on PostgreSQL a `CHECKPOINT` (superuser or `pg_checkpoint`), which
    /// writes and syncs every dirty page. Without it the kernel wrote back the setup's ~100 MB
    /// some 30 s later — during the half-rate phase, whose commits then waited behind it (seen
    /// as `Dirty` in `/proc/meminfo` falling from 119 to 25 MB as the phase began, and a p99 of
    /// 72–100 ms against 28–44 ms on runs it missed). SQLite syncs its file at each checkpoint
    /// already. Returns how long it took; `None` when there was nothing to do.
    pub(super) async fn settle(&self) -> anyhow::Result<Option<std::time::Duration>> {
        let Scratch::Postgres { url, .. } = self else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let mut conn = admin_connection(url).await?;
        sqlx::query("CHECKPOINT")
            .execute(&mut conn)
            .await
            .context("CHECKPOINT needs a superuser or the pg_checkpoint role")?;
        let _ = conn.close().await;
        Ok(Some(started.elapsed()))
    }

    pub(super) async fn remove(&self) -> anyhow::Result<()> {
        match self {
            Scratch::Sqlite { dir, .. } => std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot remove the scratch folder {}", dir.display())),
            Scratch::Postgres { admin_url, name, .. } => drop_database(admin_url, name).await,
        }
    }
}

/// The URL without its password, for messages.
pub(super) fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

async fn admin_connection(admin_url: &str) -> anyhow::Result<sqlx::PgConnection> {
    sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", redacted(admin_url)))
}

/// Creates database `name` (a safe identifier we generated) on the server of `admin_url` and
/// returns its URL.
pub(super) async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(admin_url)
        .map_err(|e| anyhow!("--database-url {} is not a valid URL: {e}", redacted(admin_url)))?;
    let mut conn = admin_connection(admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .with_context(|| format!("cannot create database {name} (does the role have CREATEDB?)"))?;
    let _ = conn.close().await;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

pub(super) async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = admin_connection(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .with_context(|| format!("cannot drop the scratch database {name}; drop it by hand"))?;
    let _ = conn.close().await;
    Ok(())
}
