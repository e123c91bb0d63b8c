//! Bulk seeding for benchmarks: N confirmed payments and their ledger confirmations, written with
//! set-based SQL (a recursive CTE on SQLite, `generate_series` on PostgreSQL) in large batches.
//!
//! What [`Store::seed_confirmed_payments`] writes, for payments numbered `n = 1..=N` (see
//! [`BenchPayment`], which is the one definition of each value and is bound into the SQL):
//! - one quote, one notice (`status = 'paid'`) with one notice line under the seed's budget code;
//! - the ledger accounts `provider_clearing:<provider>` and `treasury_payable:<budget code>`;
//! - N payments of the provider, `succeeded`, each with a unique `merchant_ref` (`BR` + n on nine
//!   digits) and `provider_txn_id` (`15` + n on nine digits);
//! - for each payment, its confirmation as [`crate::ledger::plan_payment`] makes it: a
//!   `payment_confirmed` ledger transaction with posting key `confirm:<payment id>` and one
//!   transfer clearing → treasury payable for the payment's amount.
//!
//! Invariants:
//! - Every timestamp lies inside the seed's day `[day_start, day_start + 24 h)`, at whole seconds.
//!   On SQLite, where timestamps are TEXT, they are written in exactly the form sqlx gives a bound
//!   `DateTime<Utc>` (`YYYY-MM-DDTHH:MM:SS+00:00`), so range queries with bound `DateTime<Utc>`
//!   bounds compare them correctly; on PostgreSQL they are `timestamptz` computed from a bound
//!   `DateTime<Utc>`.
//! - Everything is written in one transaction: a failed seed leaves nothing. On SQLite the seeding
//!   connection runs with `PRAGMA synchronous = OFF` (restored to FULL afterwards, or the
//!   connection is discarded); this is meant for scratch databases only.
//! - Ids carry a `bench` marker and never collide with ids the gateway generates.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use sqlx::Connection;

use super::{Store, StoreResult};

/// Rows per INSERT … SELECT statement.
const SEED_BATCH: u64 = 100_000;
/// The largest N: ids are numbered on nine digits.
pub const MAX_SEED_PAYMENTS: u64 = 999_999_999;

/// Amounts are `AMOUNT_BASE + (n mod AMOUNT_CYCLE) × AMOUNT_STEP` đồng.
const AMOUNT_BASE: i64 = 1_000_000;
const AMOUNT_CYCLE: i64 = 1_000;
const AMOUNT_STEP: i64 = 1_000;
/// Payment `n` is created `CREATED_FROM + (n mod CREATED_CYCLE)` seconds after the day starts.
const CREATED_FROM: i64 = 60;
const CREATED_CYCLE: i64 = 86_000;
/// Offsets from the creation, seconds: provider's payment time, confirmation, next poll, expiry.
pub const PAID_AFTER: i64 = 20;
const CONFIRMED_AFTER: i64 = 30;
const POLL_AFTER: i64 = 60;
const EXPIRES_AFTER: i64 = 240;

/// What to seed.
#[derive(Debug, Clone)]
pub struct BenchSeed<'a> {
    /// e.g. `vnpay`.
    pub provider: &'a str,
    /// N, at most [`MAX_SEED_PAYMENTS`].
    pub payments: u64,
    /// The start of the settlement day in UTC (a whole second); every timestamp falls in this day.
    pub day_start: DateTime<Utc>,
    /// The notice's (unique) code.
    pub notice_code: &'a str,
    /// The treasury budget code of the notice's line.
    pub budget_code: &'a str,
}

/// Payment number `n` of a seed (`1 ≤ n ≤ N`), as the seed writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchPayment {
    pub id: String,
    pub merchant_ref: String,
    pub provider_txn_id: String,
    /// Đồng.
    pub amount: i64,
    /// Seconds from the start of the day to the payment's creation.
    pub created_offset: i64,
}

impl BenchPayment {
    pub fn of(n: u64) -> BenchPayment {
        let k = n as i64;
        BenchPayment {
            id: format!("pay_bench_{n:09}"),
            merchant_ref: format!("BR{n:09}"),
            provider_txn_id: format!("15{n:09}"),
            amount: AMOUNT_BASE + (k % AMOUNT_CYCLE) * AMOUNT_STEP,
            created_offset: CREATED_FROM + k % CREATED_CYCLE,
        }
    }

    /// Seconds from the start of the day to the provider's payment time (the file's time).
    pub fn paid_offset(&self) -> i64 {
        self.created_offset + PAID_AFTER
    }
}

/// The sum of the amounts of payments `1..=n`, đồng.
pub fn bench_gross(n: u64) -> i64 {
    (1..=n).map(|k| BenchPayment::of(k).amount).sum()
}

/// What the seed binds besides the batch bounds.
struct Binds<'a> {
    notice_id: &'a str,
    notice_code: &'a str,
    provider: &'a str,
    clearing: String,
    payable: String,
}

impl Binds<'_> {
    /// The values of `$4…` of the three batch statements (see [`batch_statements`]), in order.
    fn extras(&self) -> [Vec<&str>; 3] {
        [
            vec![self.notice_id, self.notice_code, self.provider],
            vec![self.notice_code, self.provider],
            vec![self.clearing.as_str(), self.payable.as_str()],
        ]
    }
}

const NOTICE_ID: &str = "ntc_bench_1";
const QUOTE_ID: &str = "qt_bench_1";

/// SQLite: `$3` is the day start in Unix seconds; `ts(x)` is `$3 + x` in sqlx's text form.
fn sqlite_ts(offset_expr: &str) -> String {
    format!("strftime('%Y-%m-%dT%H:%M:%S', $3 + {offset_expr}, 'unixepoch') || '+00:00'")
}

/// PostgreSQL: `$3` is the day start (`timestamptz`).
fn pg_ts(offset_expr: &str) -> String {
    format!("($3::timestamptz + make_interval(secs => ({offset_expr})::float8))")
}

/// The three batch statements for a dialect — payments, their ledger transactions, their
/// transfers. `with` and `from` produce `n` from `$1` to `$2`, `pad` is the nine-digit text of `n`,
/// `ts` turns a seconds offset from the day start (`$3`) into a timestamp. Further parameters
/// (`$4…`) are [`Binds::extras`]: notice id, notice code, provider; notice code, provider;
/// clearing account, payable account.
fn batch_statements(with: &str, from: &str, pad: &str, ts: fn(&str) -> String) -> [String; 3] {
    let created = format!("({CREATED_FROM} + n % {CREATED_CYCLE})");
    let amount = format!("({AMOUNT_BASE} + (n % {AMOUNT_CYCLE}) * {AMOUNT_STEP})");
    let at = |after: i64| ts(&format!("{created} + {after}"));
    let payments = format!(
        "{with}INSERT INTO payments (id, merchant_ref, notice_id, notice_code, provider, amount, status, \
         provider_txn_id, locale, created_at, expires_at, updated_at, next_poll_at) \
         SELECT 'pay_bench_' || {pad}, 'BR' || {pad}, $4, $5, $6, {amount}, 'succeeded', '15' || {pad}, 'vi', \
         {}, {}, {}, {} FROM {from}",
        at(0),
        at(EXPIRES_AFTER),
        at(CONFIRMED_AFTER),
        at(POLL_AFTER),
    );
    let transactions = format!(
        "{with}INSERT INTO ledger_transactions (id, posting_key, kind, payment_id, notice_code, memo, created_at) \
         SELECT 'lt_bench_' || {pad}, 'confirm:pay_bench_' || {pad}, 'payment_confirmed', 'pay_bench_' || {pad}, $4, \
         'payment pay_bench_' || {pad} || ' of notice ' || $4 || ' confirmed by ' || $5, {} FROM {from}",
        at(CONFIRMED_AFTER),
    );
    let transfers = format!(
        "{with}INSERT INTO ledger_transfers (transaction_id, debit_account, credit_account, amount, created_at) \
         SELECT 'lt_bench_' || {pad}, $4, $5, {amount}, {} FROM {from}",
        at(CONFIRMED_AFTER),
    );
    [payments, transactions, transfers]
}

fn sqlite_statements() -> [String; 3] {
    batch_statements(
        "WITH RECURSIVE seq(n) AS (SELECT $1 UNION ALL SELECT n + 1 FROM seq WHERE n < $2) ",
        "seq",
        "printf('%09d', n)",
        sqlite_ts,
    )
}

fn pg_statements() -> [String; 3] {
    batch_statements("", "generate_series($1::bigint, $2::bigint) AS g(n)", "lpad(n::text, 9, '0')", pg_ts)
}

/// The statements that create the notice and the accounts, in order; binds are given in [`run_head`].
const HEAD_QUOTE: &str = "INSERT INTO quotes (id, jurisdiction, valuation_date, request, lines, total, created_by, \
     created_at, valid_until) VALUES ($1, 'VN-HN', $2, '{}', '[]', $3, 'bench', $4, $5)";
const HEAD_NOTICE: &str = "INSERT INTO notices (id, code, quote_id, jurisdiction, payer_name, payer_identifier, \
     dossier_ref, principal, due_date, status, issued_by, issued_at, paid_at, paid_by_payment) VALUES ($1, $2, $3, \
     'VN-HN', 'Bench', '000000000000', 'bench', $4, $5, 'paid', 'bench', $6, $7, 'pay_bench_000000001')";
const HEAD_LINE: &str = "INSERT INTO notice_lines (notice_id, line_no, kind, description, base, rate, amount, \
     legal_basis, rule_id, rule_version, budget_code, exemption, unconfirmed) VALUES ($1, 1, 'procedure_fee', \
     'bench', $2, '1', $2, 'bench', 'bench', 1, $3, NULL, $4)";
const HEAD_ACCOUNT: &str = "INSERT INTO ledger_accounts (name, kind, created_at) VALUES ($1, $2, $3)";

/// Runs the statements that make the notice and the accounts inside `$tx`.
macro_rules! run_head {
    ($tx:ident, $seed:expr, $binds:expr) => {{
        let seed: &BenchSeed<'_> = $seed;
        let binds: &Binds<'_> = $binds;
        let day_start: DateTime<Utc> = seed.day_start;
        let date: NaiveDate = (day_start + Duration::hours(7)).date_naive();
        sqlx::query(HEAD_QUOTE)
            .bind(QUOTE_ID)
            .bind(date)
            .bind(AMOUNT_BASE)
            .bind(day_start)
            .bind(day_start + Duration::hours(23))
            .execute(&mut *$tx)
            .await?;
        sqlx::query(HEAD_NOTICE)
            .bind(binds.notice_id)
            .bind(binds.notice_code)
            .bind(QUOTE_ID)
            .bind(AMOUNT_BASE)
            .bind(date)
            .bind(day_start)
            .bind(day_start + Duration::seconds(CREATED_FROM + CONFIRMED_AFTER))
            .execute(&mut *$tx)
            .await?;
        sqlx::query(HEAD_LINE)
            .bind(binds.notice_id)
            .bind(AMOUNT_BASE)
            .bind(seed.budget_code)
            .bind(false)
            .execute(&mut *$tx)
            .await?;
        // Sorted, as the ledger creates accounts.
        let mut accounts = [binds.clearing.as_str(), binds.payable.as_str()];
        accounts.sort();
        for account in accounts {
            sqlx::query(HEAD_ACCOUNT)
                .bind(account)
                .bind(crate::ledger::account_kind(account))
                .bind(day_start)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

impl Store {
    /// Seeds N confirmed payments of one provider and their confirmation postings (see the module
    /// docs) in one transaction, on an empty, migrated database. On PostgreSQL the tables are
    /// analysed afterwards, as autovacuum would soon do.
    pub async fn seed_confirmed_payments(&self, seed: &BenchSeed<'_>) -> StoreResult<()> {
        if seed.payments == 0 || seed.payments > MAX_SEED_PAYMENTS {
            return Err(super::StoreError::Invariant(format!(
                "a seed has between 1 and {MAX_SEED_PAYMENTS} payments, not {}",
                seed.payments
            )));
        }
        let binds = Binds {
            notice_id: NOTICE_ID,
            notice_code: seed.notice_code,
            provider: seed.provider,
            clearing: crate::ledger::provider_clearing(seed.provider),
            payable: crate::ledger::treasury_payable(seed.budget_code),
        };
        let batches = || {
            (0..seed.payments.div_ceil(SEED_BATCH))
                .map(|b| (b * SEED_BATCH + 1, ((b + 1) * SEED_BATCH).min(seed.payments)))
                .map(|(lo, hi)| (lo as i64, hi as i64))
        };
        match self {
            Store::Sqlite(db) => {
                let _writer = db.writer.lock().await;
                let mut conn = db.write_connection.acquire().await?;
                sqlx::query("PRAGMA synchronous = OFF").execute(&mut *conn).await?;
                let statements = sqlite_statements();
                let day_start = seed.day_start.timestamp();
                let result: StoreResult<()> = async {
                    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                    run_head!(tx, seed, &binds);
                    for (sql, extras) in statements.iter().zip(binds.extras()) {
                        for (lo, hi) in batches() {
                            let mut q = sqlx::query(sql).bind(lo).bind(hi).bind(day_start);
                            for value in &extras {
                                q = q.bind(*value);
                            }
                            q.execute(&mut *tx).await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(())
                }
                .await;
                let restored = sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await;
                if restored.is_err() {
                    conn.close_on_drop();
                }
                result?;
                restored?;
            }
            Store::Postgres(db) => {
                let pool = &db.pool;
                let statements = pg_statements();
                let mut tx = pool.begin().await?;
                run_head!(tx, seed, &binds);
                for (sql, extras) in statements.iter().zip(binds.extras()) {
                    for (lo, hi) in batches() {
                        let mut q = sqlx::query(sql).bind(lo).bind(hi).bind(seed.day_start);
                        for value in &extras {
                            q = q.bind(*value);
                        }
                        q.execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                sqlx::query("ANALYZE payments, ledger_transactions, ledger_transfers, ledger_accounts")
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Payments of `provider` with a `payment_confirmed` ledger transaction created in
    /// `[from, to)` — the range query the reconciliation runs, with the bounds bound the same way.
    pub async fn count_confirmations(
        &self,
        provider: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<i64> {
        Ok(super::on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM ledger_transactions x JOIN payments p ON p.id = x.payment_id \
                 WHERE x.kind = 'payment_confirmed' AND x.created_at >= $2 AND x.created_at < $3 AND p.provider = $1",
            )
            .bind(provider)
            .bind(from)
            .bind(to)
            .fetch_one(pool)
            .await
        })?)
    }

    /// Payment `id` as stored: merchant reference, provider transaction id, amount, creation time.
    pub async fn seeded_payment(&self, id: &str) -> StoreResult<Option<(String, Option<String>, i64, DateTime<Utc>)>> {
        Ok(super::on_pool!(self, pool => {
            sqlx::query_as("SELECT merchant_ref, provider_txn_id, amount, created_at FROM payments WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn payments_are_numbered_as_documented() {
        let p = BenchPayment::of(1234);
        assert_eq!(p.id, "pay_bench_000001234");
        assert_eq!(p.merchant_ref, "BR000001234");
        assert_eq!(p.provider_txn_id, "15000001234");
        assert_eq!(p.amount, 1_234_000);
        assert_eq!(p.created_offset, 60 + 1234);
        // The latest time written stays inside the day.
        let last = (1..=200_000u64).map(|n| BenchPayment::of(n).created_offset).max().unwrap_or(0);
        assert!(last + EXPIRES_AFTER < 86_400);
        assert_eq!(bench_gross(3), 1_001_000 + 1_002_000 + 1_003_000);
    }

    #[tokio::test]
    async fn sqlite_seed_matches_the_rust_definition_and_bound_ranges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = crate::config::Config::defaults().database;
        config.url = SecretString::from(format!("sqlite://{}/seed.db", dir.path().display()));
        let store = Store::connect(&config).await.expect("connect");
        store.migrate().await.expect("migrate");
        let day_start = "2026-11-25T17:00:00Z".parse::<DateTime<Utc>>().expect("time");
        let n = 2_500;
        let seed = BenchSeed {
            provider: "vnpay",
            payments: n,
            day_start,
            notice_code: "TB-2026-BENCH0",
            budget_code: "757-2801",
        };
        store.seed_confirmed_payments(&seed).await.expect("seed");
        let day_end = day_start + Duration::days(1);
        assert_eq!(store.count_confirmations("vnpay", day_start, day_end).await.expect("count"), n as i64);
        // A bound range inside the day sees only part of it, as text comparison must.
        let noon = day_start + Duration::seconds(CREATED_FROM + 1_000 + CONFIRMED_AFTER + 1);
        assert_eq!(store.count_confirmations("vnpay", day_start, noon).await.expect("count"), 1_000);
        for k in [1, 999, 1_000, n] {
            let want = BenchPayment::of(k);
            let (merchant_ref, txn, amount, created) =
                store.seeded_payment(&want.id).await.expect("query").expect("payment exists");
            assert_eq!(
                (merchant_ref, txn, amount, created),
                (
                    want.merchant_ref.clone(),
                    Some(want.provider_txn_id.clone()),
                    want.amount,
                    day_start + Duration::seconds(want.created_offset)
                )
            );
        }
        let balances = store.ledger_balances().await.expect("balances");
        let clearing = balances.iter().find(|b| b.account == "provider_clearing:vnpay").expect("account");
        assert_eq!(clearing.balance, bench_gross(n));
        // Stored exactly as sqlx writes a bound DateTime<Utc>.
        let Store::Sqlite(db) = &store else { panic!("sqlite") };
        let stored: Vec<String> = sqlx::query_scalar(
            "SELECT created_at FROM payments WHERE id = $1 UNION ALL SELECT created_at FROM ledger_transactions \
             WHERE payment_id = $1 UNION ALL SELECT created_at FROM ledger_transfers WHERE transaction_id = $2",
        )
        .bind(BenchPayment::of(7).id)
        .bind("lt_bench_000000007")
        .fetch_all(&db.pool)
        .await
        .expect("query");
        let at =
            |secs: i64| (day_start + Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false);
        assert_eq!(stored, [at(67), at(97), at(97)]);
        assert_eq!(stored[0], "2026-11-25T17:01:07+00:00");
    }
}
