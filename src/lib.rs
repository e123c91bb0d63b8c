//! paygate: the online payment gateway for land-related financial obligations and procedure fees.
//!
//! See DESIGN.md for the shape: `config` (layered settings), `store` (all SQL), `http`
//! (handlers per audience), `auth` (tokens and roles), `telemetry` (logs, traces, metrics).

pub mod app;
pub mod auth;
pub mod background;
pub mod bench;
pub mod callbacks;
pub mod clock;
pub mod config;
pub mod http;
pub mod ledger;
pub mod money;
pub mod notices;
pub mod obligations;
pub mod payments;
pub mod privacy;
pub mod providers;
pub mod reconciliation;
pub mod refunds;
pub mod sandbox;
pub mod store;
pub mod telemetry;
pub mod webhooks;
