//! Storage: the only module that holds SQL and knows which backend it talks to.
//!
//! The database URL picks the backend: `sqlite:` (embedded, the default) or `postgres://`.
//! Queries are written once, with `$n` placeholders that both backends accept, and run on
//! either pool through [`on_pool!`]; where the dialects differ, each arm carries its own SQL.
//!
//! Invariants: migrations are embedded in the binary and applied in order; every multi-statement
//! change runs in one transaction (on SQLite an IMMEDIATE one, so writers queue on the busy timeout
//! instead of failing on lock upgrade); timestamps are stored in UTC, truncated to microseconds.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::config::DatabaseConfig;

mod direct;
pub mod group_commit;
pub mod idempotency;
pub mod inbox;
pub mod ledger;
pub mod notices;
pub mod outbox;
pub mod payment_batch;
pub mod payments;
pub mod reconciliation;
pub mod refunds;
pub mod seed;
pub mod tokens;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Runs `$body` with `$pool` bound to the concrete pool of whichever backend `$store` uses.
/// The body is compiled once per backend, so the same query text serves both.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite(db) => {
                let $pool = &db.pool;
                $body
            }
            $crate::store::Store::Postgres(db) => {
                let $pool = &db.pool;
                $body
            }
        }
    };
}
pub(crate) use on_pool;

/// Begins a write transaction on `$pool`: `BEGIN IMMEDIATE` on SQLite, a plain `BEGIN` on
/// PostgreSQL (which locks rows, not the database).
macro_rules! begin_write {
    ($store:expr, $pool:ident, $tx:ident => $body:expr) => {
        $crate::store::begin_write!($store, $pool, $tx => sqlite: $body, postgres: $body)
    };
    // One body per backend, for code that binds backend-specific types (PostgreSQL arrays).
    ($store:expr, $pool:ident, $tx:ident => sqlite: $sqlite:expr, postgres: $postgres:expr) => {
        match $store {
            $crate::store::Store::Sqlite(db) => {
                // SQLite has one writer: queue for it here, in order, rather than in SQLite's
                // busy handler, whose growing sleeps make long tails under load.
                let _writer = db.writer.lock().await;
                #[allow(unused_variables)]
                let $pool = &db.pool;
                #[allow(unused_mut)]
                let mut $tx = db.write_connection.begin_with("BEGIN IMMEDIATE").await?;
                $sqlite
            }
            $crate::store::Store::Postgres(db) => {
                let $pool = &db.pool;
                #[allow(unused_mut)]
                let mut $tx = $pool.begin().await?;
                $postgres
            }
        }
    };
}
pub(crate) use begin_write;

/// Frames (pages) in the SQLite write-ahead log from which [`Store::checkpoint_wal`] makes sure
/// the log starts over: about 48 MB of 4 KB pages, below the 16,384 at which a writer would
/// checkpoint itself. (4,096 had the second pass hold the writers every round at full speed:
/// 4,266–4,655 confirmed/s in the benchmark against 4,564–4,976 with this.)
const RESTART_WAL_AT: i64 = 12_000;

/// PostgreSQL: for the rest of the transaction, plan lookups by key as index scans in nested
/// loops, and use each prepared statement's generic plan rather than planning it again for every
/// call (`set_config(…, true)` is `SET LOCAL`). For the statements that find a few hundred rows by
/// key or just above a floor (payment batches, ledger sealing): without fresh statistics — a busy
/// table outgrows its last ANALYZE within minutes — the planner answers them with whole-table
/// scans and hash joins, whose cost grows with the table. Nor with parallel workers: a generic
/// plan cannot tell an `= ANY($1)` of a few hundred keys from a large one, and a plan that starts
/// two worker processes for every batch's statement cost more than it saved (the payment batch's
/// sequence numbers, read in one `UNION ALL`, were planned that way: 3,808 confirmed/s over
/// 40,000 payments against 5,753 before that statement, both under `perf`, which counted ~190
/// workers started in 2.5 s).
pub(crate) const PG_KEYED_PLANS: &str = "SELECT set_config('enable_seqscan', 'off', true), \
     set_config('enable_bitmapscan', 'off', true), set_config('enable_hashjoin', 'off', true), \
     set_config('enable_mergejoin', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true), \
     set_config('max_parallel_workers_per_gather', '0', true)";

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

/// The PostgreSQL pool and what this process's sealer has proved about the ledger so far.
#[derive(Clone, Debug)]
pub struct PgDb {
    pub pool: PgPool,
    seal_floor: std::sync::Arc<std::sync::Mutex<ledger::SealFloor>>,
    /// The payment writers' own connections ([`Store::dedicated_writer`]), closed with the pool.
    writer_pools: std::sync::Arc<std::sync::Mutex<Vec<PgPool>>>,
}

/// The SQLite pool, the connection write transactions use and the in-process queue for it
/// (write transactions of this process take it in turn; other processes on the same file still
/// meet SQLite's busy timeout).
///
/// Every write transaction ([`begin_write!`]) goes through one long-lived connection (single
/// autocommit statements still use the pool): in WAL mode a connection drops
/// its whole page cache when it finds that another connection has written since its last
/// transaction, so writes spread over the pool re-read the hot pages (indexes, table tails) on
/// almost every batch, while a connection that does all the writing keeps them cached.
#[derive(Clone, Debug)]
pub struct SqliteDb {
    pub pool: SqlitePool,
    /// A pool of exactly one connection, kept open: sqlx replaces it if it breaks.
    write_connection: SqlitePool,
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// Errors from the store. `Unavailable` means the database could not be reached in time.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("conflicting write: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
    /// An error of SQLite itself on the direct path ([`direct`]).
    #[error("database error: {0}")]
    Direct(#[source] rusqlite::Error),
    /// A bookkeeping invariant would be broken; nothing was written.
    #[error("invariant: {0}")]
    Invariant(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(db.message().to_string()),
            // PostgreSQL gave up one of two transactions waiting on each other (deadlock, or a
            // serialization failure): nothing of it was written; the request may be sent again.
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")) => {
                StoreError::Conflict(db.message().to_string())
            }
            sqlx::Error::Database(db) if is_busy(db.code().as_deref()) => {
                StoreError::Unavailable(db.message().to_string())
            }
            _ => StoreError::Other(e),
        }
    }
}

/// SQLITE_BUSY / SQLITE_LOCKED (and their extended codes): the database stayed locked past the
/// busy timeout.
fn is_busy(code: Option<&str>) -> bool {
    matches!(code, Some(c) if c == "5" || c == "6" || c.parse::<i32>().is_ok_and(|n| n & 0xff == 5 || n & 0xff == 6))
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Pool figures for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
    /// Connections held open by the payment writers, outside the pool (SQLite: the one write
    /// connection; PostgreSQL: one per writer).
    pub writers: u32,
}

/// Whether a SQLite URL names an in-memory database (`sqlite::memory:`, `:memory:`, `mode=memory`),
/// which keeps nothing and which the pools' connections would not all see.
fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// The current time as stored: UTC, microsecond precision (what PostgreSQL keeps).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl Store {
    /// Connects to the database named by the configuration. For SQLite, the file and its folder
    /// are created if missing; WAL with a sync at every commit, foreign keys and a busy timeout
    /// are switched on.
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Store> {
        let url = config.url.expose_secret();
        let acquire = Duration::from_secs(config.acquire_timeout_secs);
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| anyhow::anyhow!("database.url is not a valid SQLite URL: {e}"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // Every commit is on disk before it is answered (the log is synced at each commit):
                // a provider told "confirmed" does not send again, so a confirmation lost to a
                // power cut would be money missing from the ledger. Group commit pays for one sync
                // per batch.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                // A writer checkpoints itself only at ~64 MB of WAL (default ~4 MB), a safety net:
                // the background checkpointer (`checkpoint_wal`) copies the log and has it start
                // over long before.
                .pragma("wal_autocheckpoint", "16384")
                // Statement journals of multi-row statements in memory, not in a temporary file
                // opened and removed per statement.
                .pragma("temp_store", "memory")
                // A 32 MB page cache per connection (the default is 2 MB): fewer pages re-read.
                .pragma("cache_size", "-32768");
            let file = options.get_filename();
            if is_in_memory(url) {
                anyhow::bail!("database.url: an in-memory SQLite database cannot keep a ledger; name a file");
            }
            if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| anyhow::anyhow!("cannot create database folder {}: {e}", parent.display()))?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(acquire)
                .connect_with(options.clone())
                .await?;
            let write_connection = SqlitePoolOptions::new()
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                // Checked when returned to the pool after each transaction; not again when taken.
                .test_before_acquire(false)
                // A transaction SQLite rolled back by itself (disk full, I/O error) leaves sqlx
                // counting one still open, and every later BEGIN would fail: such a connection is
                // closed and replaced. The ping first lets a queued rollback run.
                .after_release(|conn, _| {
                    Box::pin(async move {
                        sqlx::Connection::ping(&mut *conn).await?;
                        Ok(!sqlx::Connection::is_in_transaction(conn))
                    })
                })
                .acquire_timeout(acquire)
                // It carries every write: twice the readers' cache.
                .connect_with(options.pragma("cache_size", "-65536"))
                .await?;
            Ok(Store::Sqlite(SqliteDb { pool, write_connection, writer: Default::default() }))
        } else {
            let options = PgConnectOptions::from_str(url)
                .map_err(|_| anyhow::anyhow!("database.url is not a valid PostgreSQL URL"))?
                .application_name("paygate");
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(acquire)
                .connect_with(options)
                .await?;
            Ok(Store::Postgres(PgDb { pool, seal_floor: Default::default(), writer_pools: Default::default() }))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self {
            Store::Sqlite(_) => &SQLITE_MIGRATIONS,
            Store::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies the embedded migrations not yet applied. Safe to run from several processes at
    /// once on PostgreSQL (the migrator holds an advisory lock).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        on_pool!(self, pool => self.migrator().run(pool).await)?;
        Ok(())
    }

    /// Ready means: the database answers and every embedded migration has been applied.
    pub async fn readiness(&self) -> Result<(), String> {
        let applied: Vec<i64> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(pool)
                .await
        })
        .map_err(|e| match StoreError::from(e) {
            StoreError::Unavailable(_) => "database unreachable".to_string(),
            _ => "migrations have not been applied (run `paygate migrate`)".to_string(),
        })?;
        let applied: BTreeSet<i64> = applied.into_iter().collect();
        let missing = self.migrator().iter().filter(|m| !applied.contains(&m.version)).count();
        if missing > 0 {
            return Err(format!("{missing} migration(s) not applied (run `paygate migrate`)"));
        }
        Ok(())
    }

    pub fn pool_stats(&self) -> PoolStats {
        let writers = match self {
            Store::Sqlite(db) => db.write_connection.size(),
            Store::Postgres(db) => db
                .writer_pools
                .lock()
                .map(|pools| pools.iter().filter(|p| !p.is_closed()).map(PgPool::size).sum())
                .unwrap_or(0),
        };
        on_pool!(self, pool => PoolStats {
            size: pool.size(),
            idle: pool.num_idle() as u32,
            max: pool.options().get_max_connections(),
            writers,
        })
    }

    /// Copies what the SQLite write-ahead log holds into the database file, without blocking
    /// writers (a passive checkpoint); nothing to do on PostgreSQL. Run every 100 ms by
    /// `background::run_checkpoints`.
    ///
    /// SQLite starts the log over only when a write transaction begins while every frame of it
    /// has been copied, which under steady writes almost never happens by chance: the log would
    /// grow until a writer's own automatic checkpoint, a stall of tens of milliseconds inside a
    /// payment batch's commit. So once the log holds [`RESTART_WAL_AT`] frames, the checkpoint
    /// is run a second time holding this process's write queue: it only has to copy what was
    /// committed during the first, and the next write starts the log over — unless a reader
    /// still holds older frames, in which case a later round does.
    pub async fn checkpoint_wal(&self) -> StoreResult<()> {
        if let Store::Sqlite(db) = self {
            let (_, frames, _): (i64, i64, i64) =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&db.pool).await?;
            if frames >= RESTART_WAL_AT {
                let _writer = db.writer.lock().await;
                let (_, frames, copied): (i64, i64, i64) =
                    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&db.write_connection).await?;
                if copied < frames {
                    // A reader still needs older frames (a long listing or export): the log cannot
                    // start over yet; a later round tries again.
                    tracing::debug!(frames, copied, "write-ahead log not fully copied; it starts over later");
                }
            }
        }
        Ok(())
    }

    /// The store a payment writer works on. PostgreSQL: a pool of one connection of its own, kept
    /// open, so that the writer's prepared statements and their plans stay with it (a shared pool
    /// hands out its connections in turn, and each prepares the batch's statements again;
    /// docs/callback-benchmark.md, machine (e)); it is closed by [`Store::close`], or at once if
    /// the store already was.
    /// SQLite: this store, whose write transactions already share one connection.
    pub async fn dedicated_writer(&self) -> StoreResult<Store> {
        match self {
            Store::Sqlite(_) => Ok(self.clone()),
            Store::Postgres(db) => {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(db.pool.options().get_acquire_timeout())
                    .connect_with((*db.pool.connect_options()).clone())
                    .await?;
                db.writer_pools
                    .lock()
                    .map_err(|_| StoreError::Invariant("the writer pools' lock was poisoned".into()))?
                    .push(pool.clone());
                if db.pool.is_closed() {
                    // Closed while this one was opening: it must not outlive the store.
                    pool.close().await;
                }
                // Its own list is empty: closing the writer's store closes only its connection.
                Ok(Store::Postgres(PgDb { pool, seal_floor: db.seal_floor.clone(), writer_pools: Default::default() }))
            }
        }
    }

    /// Closes every connection, the payment writers' too; later queries fail as `Unavailable`.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(db) => db.write_connection.close().await,
            Store::Postgres(db) => {
                let writers = db.writer_pools.lock().map(|pools| pools.clone()).unwrap_or_default();
                for pool in writers {
                    pool.close().await;
                }
            }
        }
        on_pool!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_sqlite_urls_are_recognised() {
        for url in ["sqlite::memory:", "sqlite://:memory:", "sqlite:file:ledger?mode=memory&cache=shared"] {
            assert!(is_in_memory(url), "{url}");
        }
        for url in ["sqlite://data/paygate.db", "sqlite:///var/lib/paygate/memory.db"] {
            assert!(!is_in_memory(url), "{url}");
        }
    }

    #[tokio::test]
    async fn an_in_memory_database_is_refused_with_the_key_named() {
        let config = DatabaseConfig {
            url: "sqlite::memory:".to_string().into(),
            max_connections: 2,
            acquire_timeout_secs: 1,
            migrate_on_start: true,
            payment_writers_setting: None,
            payment_batch_max: 16,
        };
        let err = Store::connect(&config).await.expect_err("refused");
        assert!(err.to_string().starts_with("database.url: an in-memory SQLite database"), "{err}");
    }

    /// A transaction SQLite ends by itself (as on disk full or an I/O error) must not leave the one
    /// write connection counting a transaction that is gone: later writes begin afresh and commit.
    #[tokio::test]
    async fn a_write_connection_whose_transaction_sqlite_ended_is_replaced() {
        use sqlx::{Connection, Row};
        let dir = tempfile::tempdir().expect("temp dir");
        let config = DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("w.db").display()).into(),
            max_connections: 2,
            acquire_timeout_secs: 5,
            migrate_on_start: false,
            payment_writers_setting: None,
            payment_batch_max: 16,
        };
        let store = Store::connect(&config).await.expect("connect");
        let Store::Sqlite(db) = &store else { unreachable!("a SQLite URL") };
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(&db.write_connection).await.expect("create");
        {
            let mut tx = db.write_connection.begin_with("BEGIN IMMEDIATE").await.expect("begin");
            sqlx::query("INSERT INTO t VALUES (1)").execute(&mut *tx).await.expect("insert");
            // SQLite's transaction ends under sqlx's feet, which still counts it open.
            sqlx::query("ROLLBACK").execute(&mut *tx).await.expect("rollback");
            assert!(tx.commit().await.is_err(), "no transaction is left to commit");
        }
        for x in 2..4 {
            let mut conn = db.write_connection.acquire().await.expect("acquire");
            assert!(!conn.is_in_transaction(), "the connection returned in a transaction");
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.expect("begin afresh");
            sqlx::query("INSERT INTO t VALUES (?)").bind(x).execute(&mut *tx).await.expect("insert");
            tx.commit().await.expect("commit");
        }
        let rows: Vec<i64> = sqlx::query("SELECT x FROM t ORDER BY x")
            .fetch_all(&db.pool)
            .await
            .expect("read")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(rows, vec![2, 3], "the rolled-back row is gone and both later writes committed");
        store.close().await;
    }
}
