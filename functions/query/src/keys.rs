//! Per-tenant API keys: issued once, stored hashed, checked in constant time.
//!
//! A key reads `fy_live_<key id><secret>`: 8 characters that find its row, then 32 that only
//! its holder knows (a-z2-7, 160 random bits). The table keeps the SHA-256 of the whole key,
//! so a copy of the database opens nothing; a presented key is hashed and its digest compared
//! with the stored one in constant time. A key without a tenant is a read-only operator key
//! that reads every tenant.

use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use ferry_shared::Error;

/// What every key starts with.
pub const PREFIX: &str = "fy_live_";
const ID_LEN: usize = 8;
const SECRET_LEN: usize = 32;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Who a request's key speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Reads one tenant.
    Tenant(String),
    /// Reads every tenant (the operator's key).
    Admin,
}

impl Principal {
    /// True when this key may read `tenant` (whether the tenant exists is asked separately).
    pub fn reads(&self, tenant: &str) -> bool {
        match self {
            Principal::Tenant(t) => t == tenant,
            Principal::Admin => true,
        }
    }
}

/// Why a request's credentials were refused. The messages never contain the key.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no Authorization: Bearer header")]
    Missing,
    #[error("the credentials are not a ferry API key")]
    Malformed,
    #[error("key {0} is not known")]
    Unknown(String),
    #[error("key {0} does not match")]
    Mismatch(String),
    #[error("key {0} was revoked")]
    Revoked(String),
    #[error(transparent)]
    Database(#[from] Error),
}

/// A key as issued: the whole key is in `token`, shown once.
#[derive(Debug)]
pub struct Issued {
    pub key_id: String,
    pub token: String,
}

/// A stored key, without anything secret.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyInfo {
    pub key_id: String,
    pub tenant_id: Option<String>,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl KeyInfo {
    /// How the key is shown: its recognisable start, never its secret.
    pub fn shown(&self) -> String {
        format!("{PREFIX}{}…", self.key_id)
    }
}

/// Why a key could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("tenant {0:?} does not exist (ferry tenant add {0})")]
    NoTenant(String),
    #[error(transparent)]
    Database(#[from] Error),
}

fn random_chars(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Issues a key for `tenant` (`None`: an operator key reading every tenant) and stores its hash.
pub async fn issue(pool: &PgPool, tenant: Option<&str>, name: &str) -> Result<Issued, IssueError> {
    if let Some(t) = tenant {
        if !ferry_shared::queries::tenant_exists(pool, t).await? {
            return Err(IssueError::NoTenant(t.to_owned()));
        }
    }
    loop {
        let (key_id, token) = {
            let mut rng = rand::rng();
            let key_id = random_chars(&mut rng, ID_LEN);
            let token = format!("{PREFIX}{key_id}{}", random_chars(&mut rng, SECRET_LEN));
            (key_id, token)
        };
        let inserted = sqlx::query(
            "INSERT INTO api_keys (key_id, tenant_id, key_hash, name) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(&key_id)
        .bind(tenant)
        .bind(&digest(&token)[..])
        .bind(name)
        .execute(pool)
        .await
        .map_err(Error::from)?
        .rows_affected();
        // 32^8 ids: a collision is rare, and then another id is drawn.
        if inserted == 1 {
            return Ok(Issued { key_id, token });
        }
    }
}

/// Keys of one tenant, or every key (operator keys included), newest first.
pub async fn list(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<KeyInfo>, Error> {
    Ok(sqlx::query_as(
        "SELECT key_id, tenant_id, name, created_at, revoked_at FROM api_keys
         WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY created_at DESC, key_id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// The id of a key given as its id, the key itself, or its shown start (`fy_live_abcdefgh…`):
/// never more than the 8 characters that are not secret.
pub fn key_id(key: &str) -> String {
    key.trim_end_matches('…')
        .strip_prefix(PREFIX)
        .unwrap_or(key)
        .chars()
        .take(ID_LEN)
        .collect()
}

/// Revokes a key, given its id or the key itself (or its shown start); false when no such key
/// is active.
pub async fn revoke(pool: &PgPool, key: &str) -> Result<bool, Error> {
    let key_id = key_id(key);
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
    )
    .bind(&key_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The key of an `Authorization` header's value, if it is `Bearer fy_live_…` of the right
/// length and alphabet.
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    let body = token.strip_prefix(PREFIX)?;
    let well_formed = scheme.eq_ignore_ascii_case("bearer")
        && body.len() == ID_LEN + SECRET_LEN
        && body.bytes().all(|b| ALPHABET.contains(&b));
    well_formed.then_some(token)
}

/// A key's row as [`authenticate`] reads it: tenant, digest, revocation.
type StoredKey = (Option<String>, Vec<u8>, Option<DateTime<Utc>>);

/// Checks a request's `Authorization` header against the stored keys.
pub async fn authenticate(pool: &PgPool, header: Option<&str>) -> Result<Principal, Refusal> {
    let token = bearer(header.ok_or(Refusal::Missing)?).ok_or(Refusal::Malformed)?;
    let key_id = &token[PREFIX.len()..PREFIX.len() + ID_LEN];
    let row: Option<StoredKey> =
        sqlx::query_as("SELECT tenant_id, key_hash, revoked_at FROM api_keys WHERE key_id = $1")
            .bind(key_id)
            .fetch_optional(pool)
            .await
            .map_err(Error::from)?;
    let Some((tenant, stored, revoked)) = row else {
        return Err(Refusal::Unknown(key_id.to_owned()));
    };
    if !bool::from(digest(token).ct_eq(stored.as_slice())) {
        return Err(Refusal::Mismatch(key_id.to_owned()));
    }
    if revoked.is_some() {
        return Err(Refusal::Revoked(key_id.to_owned()));
    }
    Ok(tenant.map_or(Principal::Admin, Principal::Tenant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_bearer_keys_pass() {
        let key = format!("{PREFIX}abcdefgh{}", "a".repeat(32));
        assert_eq!(bearer(&format!("Bearer {key}")), Some(key.as_str()));
        assert_eq!(bearer(&format!("bearer  {key} ")), Some(key.as_str()));
        assert_eq!(bearer(&format!("Basic {key}")), None);
        assert_eq!(bearer(&format!("Bearer {key}a")), None);
        assert_eq!(bearer(&format!("Bearer {}", key.to_uppercase())), None);
        assert_eq!(bearer("Bearer fy_live_"), None);
        assert_eq!(bearer(&key), None);
        // Multi-byte input never panics on a byte slice.
        assert_eq!(bearer(&format!("Bearer {PREFIX}{}", "é".repeat(20))), None);
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let mut rng = rand::rng();
        let token = format!(
            "{PREFIX}{}{}",
            random_chars(&mut rng, ID_LEN),
            random_chars(&mut rng, SECRET_LEN)
        );
        assert_eq!(bearer(&format!("Bearer {token}")), Some(token.as_str()));
        assert_ne!(
            random_chars(&mut rng, SECRET_LEN),
            random_chars(&mut rng, SECRET_LEN)
        );
    }
}
