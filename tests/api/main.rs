//! Integration tests over real HTTP. Run on SQLite by default and on PostgreSQL with
//! `PAYGATE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test`.

mod helpers;

mod auth;
mod cli;
mod e2e;
mod errors;
mod idempotency;
mod ledger;
mod notices;
mod ops;
mod payments;
mod reconciliation;
mod refunds;
