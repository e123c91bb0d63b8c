//! Bearer-token records. Invariant: only secret hashes are stored; at most one active token
//! per name (a partial unique index); revocation sets `revoked_at` and is never undone.

use chrono::{DateTime, Utc};

use super::{Store, StoreResult, now, on_pool};
use crate::auth::{NewToken, Role};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenRecord {
    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }
}

impl Store {
    /// Stores a new token. A name already held by an active token is a `Conflict`.
    pub async fn insert_token(&self, token: &NewToken, name: &str, role: Role) -> StoreResult<TokenRecord> {
        let created_at = now();
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO api_tokens (id, name, role, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&token.id)
            .bind(name)
            .bind(role.as_str())
            .bind(&token.secret_hash)
            .bind(created_at)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(TokenRecord {
            id: token.id.clone(),
            name: name.to_string(),
            role: role.as_str().to_string(),
            secret_hash: token.secret_hash.clone(),
            created_at,
            revoked_at: None,
        })
    }

    pub async fn find_token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as("SELECT id, name, role, secret_hash, created_at, revoked_at FROM api_tokens WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })?)
    }

    pub async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, name, role, secret_hash, created_at, revoked_at FROM api_tokens ORDER BY created_at, id",
            )
            .fetch_all(pool)
            .await
        })?)
    }

    /// Revokes the active token with this id or name; returns how many were revoked (0 or 1).
    pub async fn revoke_token(&self, id_or_name: &str) -> StoreResult<u64> {
        let at = now();
        let done = on_pool!(self, pool => {
            sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE (id = $2 OR name = $2) AND revoked_at IS NULL")
                .bind(at)
                .bind(id_or_name)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done)
    }
}
