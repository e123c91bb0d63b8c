//! Bearer tokens for issuers and staff.
//!
//! A token reads `pgt_<id>_<secret>`: the id finds the stored record, the secret proves
//! possession. Only SHA-256 of the secret is stored, and it is compared in constant time.
//! Invariants: a secret is shown once, at creation, and never stored or logged; a revoked
//! token never authenticates.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token holder may do. Each endpoint names the roles it admits; `admin` is not a
/// superuser (it manages tokens and operations, it does not issue notices or move money).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Issuer,
    Treasurer,
    Auditor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Issuer => "issuer",
            Role::Treasurer => "treasurer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "issuer" => Some(Role::Issuer),
            "treasurer" => Some(Role::Treasurer),
            "auditor" => Some(Role::Auditor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub role: Role,
}

const PREFIX: &str = "pgt_";
const ID_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// A freshly made token: the full bearer string (shown once) and what is stored.
pub struct NewToken {
    pub id: String,
    pub bearer: String,
    pub secret_hash: String,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken").field("id", &self.id).finish_non_exhaustive()
    }
}

pub fn new_token() -> NewToken {
    let mut rng = rand::rng();
    let id: String = (0..12).map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char).collect();
    let mut secret = [0u8; 32];
    rng.fill(&mut secret);
    let secret = hex::encode(secret);
    NewToken { bearer: format!("{PREFIX}{id}_{secret}"), secret_hash: hash_secret(&secret), id }
}

/// Splits a bearer string into (id, secret); `None` if it is not shaped like our tokens.
pub fn split_bearer(bearer: &str) -> Option<(&str, &str)> {
    let rest = bearer.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 12 && id.bytes().all(|b| ID_ALPHABET.contains(&b));
    let secret_ok = secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && secret_ok).then_some((id, secret))
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time comparison of the presented secret against the stored hash.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    hash_secret(secret).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip() {
        let t = new_token();
        let (id, secret) = split_bearer(&t.bearer).unwrap();
        assert_eq!(id, t.id);
        assert!(secret_matches(secret, &t.secret_hash));
        assert!(!secret_matches(&secret.replace('a', "b").replace('0', "1"), &t.secret_hash));
        assert!(!format!("{t:?}").contains(secret));
    }

    #[test]
    fn malformed_bearers_are_rejected() {
        for b in ["", "pgt_", "pgt_abc_def", "xyz_aaaaaaaaaaaa_00", "pgt_aaaaaaaaaaaa_zz"] {
            assert!(split_bearer(b).is_none(), "{b}");
        }
    }
}
