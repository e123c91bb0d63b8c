//! SQLite write transactions made through SQLite's C API on the caller's thread, for the one hot
//! path where sqlx's way costs most: the payment batch.
//!
//! sqlx runs each SQLite connection on a thread of its own and hands every call over to it and
//! back; to run a batch as one call its statements were multi-row texts that SQLite parsed and
//! compiled afresh for every batch, and the batch's snapshot came back packed in JSON. `perf` on
//! the callback benchmark put the connection thread at ~80% of a core, a tenth of it parsing,
//! with the payment writer's thread and it taking turns on each batch. Here the write
//! connection's handle is locked out of sqlx's thread ([`sqlx::sqlite::LockedSqliteHandle`]) and
//! driven with rusqlite from the payment writer's own thread: small statements prepared once per
//! transaction and stepped once per row, rows read as they are, one hand-off per transaction.
//!
//! Invariants: the work runs inside one `BEGIN IMMEDIATE` transaction that commits only if the
//! work returns `Ok` and is rolled back otherwise (a panic included); the handle is used only
//! while sqlx's thread is locked out of it, and rusqlite's wrapper, with the statements it
//! prepared, is dropped before the lock is given back; a connection left inside a transaction
//! (a rollback that failed) is closed rather than returned to the pool. Times are written as
//! sqlx writes them ([`sqlite_time`]), so rows written either way compare and sort alike.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{ErrorCode, TransactionBehavior};

use super::{SqliteDb, StoreError, StoreResult};

impl SqliteDb {
    /// Runs `work` in one write transaction on the write connection, in this process's queue
    /// for it (as [`super::begin_write!`]), on the calling thread, which is blocked while the
    /// work runs: payment batches, on the payment writer's own thread; the rare payment update
    /// made outside the writer (a reconciliation's resolution, a provider refusing to start a
    /// payment) holds a runtime worker for one batch of one, about a millisecond.
    pub(crate) async fn write_direct<T>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let _writer = self.writer.lock().await;
        let mut conn = self.write_connection.acquire().await?;
        let (outcome, left_open) = {
            let mut handle = conn.lock_handle().await?;
            let raw = handle.as_raw_handle();
            // SAFETY: `handle` keeps sqlx's connection thread from touching this `sqlite3*` or any
            // of its statements while it lives, and it outlives `direct`: the wrapper does not own
            // the handle (it never closes it) and finalizes the statements it prepared when it is
            // dropped, below, before `handle` is. rusqlite is built on the same libsqlite3-sys as
            // sqlx (Cargo.toml), so the pointer is of the one SQLite library linked in.
            let direct = unsafe { rusqlite::Connection::from_handle(raw.as_ptr()) }.map_err(StoreError::from)?;
            let outcome = in_transaction(&direct, work);
            let left_open = !direct.is_autocommit();
            drop(direct);
            (outcome, left_open)
        };
        if left_open {
            // Neither committed nor rolled back: no later write may begin on it.
            tracing::error!("the SQLite write connection was left inside a transaction; it is closed and replaced");
            drop(conn.detach());
        }
        outcome
    }
}

fn in_transaction<T>(
    conn: &rusqlite::Connection,
    work: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T>,
) -> StoreResult<T> {
    // Dropped without a commit — an error or a panic in `work` — it rolls back.
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let value = work(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// A time as sqlx writes a `DateTime<Utc>` to SQLite (RFC 3339, `+00:00`, as many fraction
/// digits as needed): every other query reads, compares and sorts these columns as that text.
pub(crate) fn sqlite_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(code, message) => {
                let message = message.clone().unwrap_or_else(|| code.to_string());
                match code.extended_code {
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                        StoreError::Conflict(message)
                    }
                    _ if matches!(code.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                        StoreError::Unavailable(message)
                    }
                    _ => StoreError::Direct(e),
                }
            }
            _ => StoreError::Direct(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use sqlx::{Connection, SqliteConnection};

    use super::*;

    #[tokio::test]
    async fn times_are_written_as_sqlx_writes_them() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.expect("connect");
        for t in [
            Utc.with_ymd_and_hms(2026, 11, 28, 1, 2, 3).single().expect("time"),
            Utc.timestamp_opt(1_795_000_000, 120_000_000).single().expect("time"),
            Utc.timestamp_opt(1_795_000_000, 123_456_789).single().expect("time"),
        ] {
            let by_sqlx: String = sqlx::query_scalar("SELECT ?").bind(t).fetch_one(&mut conn).await.expect("select");
            assert_eq!(sqlite_time(&t), by_sqlx);
        }
    }

    #[test]
    fn unique_violations_are_conflicts_and_busy_is_unavailable() {
        let conn = rusqlite::Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE); INSERT INTO t VALUES (1, 'a');")
            .expect("create");
        let dup_key = conn.execute("INSERT INTO t VALUES (1, 'b')", []).expect_err("duplicate key");
        assert!(matches!(StoreError::from(dup_key), StoreError::Conflict(_)));
        let dup_value = conn.execute("INSERT INTO t VALUES (2, 'a')", []).expect_err("duplicate value");
        assert!(matches!(StoreError::from(dup_value), StoreError::Conflict(_)));
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        assert!(matches!(StoreError::from(busy), StoreError::Unavailable(_)));
        let missing = conn.execute("INSERT INTO nowhere VALUES (1)", []).expect_err("no such table");
        assert!(matches!(StoreError::from(missing), StoreError::Direct(_)));
    }

    #[test]
    fn work_that_fails_or_panics_leaves_nothing_written() {
        let conn = rusqlite::Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)").expect("create");
        let failed: StoreResult<()> = in_transaction(&conn, |tx| {
            tx.execute("INSERT INTO t VALUES (1)", [])?;
            Err(StoreError::Invariant("refused".into()))
        });
        assert!(failed.is_err());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: StoreResult<()> = in_transaction(&conn, |tx| {
                tx.execute("INSERT INTO t VALUES (2)", []).expect("insert");
                panic!("mid-batch");
            });
        }));
        assert!(panicked.is_err());
        assert!(conn.is_autocommit(), "no transaction left open");
        let done = in_transaction(&conn, |tx| Ok(tx.execute("INSERT INTO t VALUES (3)", [])?));
        assert_eq!(done.expect("commit"), 1);
        let ids: Vec<i64> =
            conn.prepare("SELECT id FROM t").and_then(|mut s| s.query_map([], |r| r.get(0))?.collect()).expect("read");
        assert_eq!(ids, [3]);
    }
}
