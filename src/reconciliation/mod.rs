//! Reconciliation of provider settlement files against the ledger.
//!
//! - [`reader`]: settlement files, streamed, read through a configurable mapping (pure).
//! - [`matcher`]: what a row says about the gateway's records — discrepancy classes and the
//!   actions allowed on them (pure).
//! - [`postings`]: what settling and resolving post to the ledger (pure).
//! - [`service`]: a run — the file read in a blocking thread, streamed to the store.
//! - [`resolution`]: resolving a discrepancy by a named action.
//! - [`export`]: the treasury export per budget code.

pub mod export;
pub mod matcher;
pub mod postings;
pub mod reader;
pub mod resolution;
pub mod service;
