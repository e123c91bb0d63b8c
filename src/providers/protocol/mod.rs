//! The providers' wire protocols, as pure functions: signing, verification, request building
//! and parsing, with the published test vectors as unit tests. No I/O, no clock.
//!
//! Invariants: every signature is checked in constant time; amounts are whole đồng as `i64` at
//! this boundary (VNPAY's ×100 is converted here, exactly); secrets are `SecretString`s.

pub mod event;
pub mod momo;
pub mod signature;
pub mod vietqr;
pub mod vnpay;
pub mod zalopay;
