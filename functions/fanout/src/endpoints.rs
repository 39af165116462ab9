//! Partner endpoints: add (checked by the SSRF guard), list, rotate secrets, disable, enable,
//! replay. The `ferry endpoint` and `ferry replay` commands call these.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use thiserror::Error;

use crate::guard::{Lookup, Policy, Refused};
use crate::keys::{KeyError, Keyring};
use crate::sign::Secret;

/// Why an endpoint command failed.
#[derive(Debug, Error)]
pub enum EndpointError {
    #[error("endpoint refused: {0}")]
    Refused(#[from] Refused),
    #[error("{0}")]
    Invalid(String),
    #[error("no endpoint {0}")]
    NotFound(i64),
    #[error("no tenant {0:?}; register it first with `ferry tenant add {0}`")]
    UnknownTenant(String),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A new endpoint.
#[derive(Debug, Clone, Default)]
pub struct NewEndpoint {
    pub tenant_id: String,
    pub url: String,
    /// Exact types or prefixes ending in `*` (`product.*`, `*`).
    pub event_types: Vec<String>,
    /// Only events with this subject (exact, or a prefix ending in `*`).
    pub subject: Option<String>,
    /// Requests per second.
    pub rate_limit: Option<i32>,
    pub description: String,
}

/// An endpoint as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Endpoint {
    pub endpoint_id: i64,
    pub tenant_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub subject: Option<String>,
    pub status: String,
    pub disabled_reason: Option<String>,
    pub rate_limit: Option<i32>,
    pub description: String,
    pub failing_since: Option<DateTime<Utc>>,
    pub secrets: i64,
    pub pending: i64,
    pub failed: i64,
}

/// Adds an endpoint after checking its URL and current DNS answer; returns its id and its
/// first signing secret (shown once: it is stored sealed under the keyring's current key).
pub async fn add(
    pool: &PgPool,
    policy: &Policy,
    keys: &Keyring,
    lookup: &dyn Lookup,
    new: &NewEndpoint,
) -> Result<(i64, Secret), EndpointError> {
    if new.event_types.is_empty() || new.event_types.iter().any(|t| t.trim().is_empty()) {
        return Err(EndpointError::Invalid(
            "at least one event type filter is needed (e.g. product.* or *)".into(),
        ));
    }
    if new.rate_limit.is_some_and(|r| r <= 0) {
        return Err(EndpointError::Invalid(
            "the rate limit is a positive number of requests per second".into(),
        ));
    }
    let known: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM tenants WHERE tenant_id = $1)")
            .bind(&new.tenant_id)
            .fetch_one(pool)
            .await?;
    if !known {
        return Err(EndpointError::UnknownTenant(new.tenant_id.clone()));
    }
    let url = policy.check_endpoint(lookup, &new.url).await?;
    let secret = Secret::generate();
    let mut tx = pool.begin().await?;
    // The normalised serialisation (lowercase host, default port dropped, `..` resolved,
    // unsafe characters percent-encoded): what is sent to, shown and compared.
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO endpoints (tenant_id, url, event_types, subject, rate_limit, description)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING endpoint_id",
    )
    .bind(&new.tenant_id)
    .bind(url.as_str())
    .bind(&new.event_types)
    .bind(&new.subject)
    .bind(new.rate_limit)
    .bind(&new.description)
    .fetch_one(&mut *tx)
    .await?;
    store_secret(&mut tx, keys, id, &secret).await?;
    tx.commit().await?;
    Ok((id, secret))
}

/// Stores `secret` sealed under the keyring's current key as the endpoint's next secret.
async fn store_secret(
    tx: &mut sqlx::PgConnection,
    keys: &Keyring,
    endpoint: i64,
    secret: &Secret,
) -> Result<(), EndpointError> {
    let (key_id, sealed) = keys.seal(endpoint, secret.bytes())?;
    sqlx::query(
        "INSERT INTO endpoint_secrets (endpoint_id, secret_id, secret, key_id)
         SELECT $1, coalesce(max(secret_id), 0) + 1, $2, $3
         FROM endpoint_secrets WHERE endpoint_id = $1",
    )
    .bind(endpoint)
    .bind(sealed)
    .bind(key_id)
    .execute(tx)
    .await?;
    Ok(())
}

/// Endpoints of one tenant, or of all.
pub async fn list(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<Endpoint>, EndpointError> {
    Ok(sqlx::query_as(
        "SELECT e.endpoint_id, e.tenant_id, e.url, e.event_types, e.subject, e.status,
                e.disabled_reason, e.rate_limit, e.description, e.failing_since,
                (SELECT count(*) FROM endpoint_secrets s WHERE s.endpoint_id = e.endpoint_id
                   AND (s.expires_at IS NULL OR s.expires_at > now())) AS secrets,
                (SELECT count(*) FROM deliveries d WHERE d.endpoint_id = e.endpoint_id
                   AND d.status = 'pending') AS pending,
                (SELECT count(*) FROM deliveries d WHERE d.endpoint_id = e.endpoint_id
                   AND d.status = 'failed') AS failed
         FROM endpoints e
         WHERE $1::text IS NULL OR e.tenant_id = $1
         ORDER BY e.tenant_id, e.endpoint_id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// A new secret that signs from now on; the live ones keep signing for `overlap` (then
/// expire), so partners can switch without a gap. Returns the new secret.
pub async fn rotate_secret(
    pool: &PgPool,
    keys: &Keyring,
    endpoint: i64,
    overlap: Duration,
) -> Result<Secret, EndpointError> {
    let secret = Secret::generate();
    let mut tx = pool.begin().await?;
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT endpoint_id FROM endpoints WHERE endpoint_id = $1 FOR UPDATE")
            .bind(endpoint)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(EndpointError::NotFound(endpoint));
    }
    sqlx::query(
        "UPDATE endpoint_secrets
         SET expires_at = least(coalesce(expires_at, 'infinity'),
                                now() + $2 * interval '1 millisecond')
         WHERE endpoint_id = $1",
    )
    .bind(endpoint)
    .bind(overlap.as_millis() as i64)
    .execute(&mut *tx)
    .await?;
    store_secret(&mut tx, keys, endpoint, &secret).await?;
    tx.commit().await?;
    Ok(secret)
}

/// What [`rekey`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rekeyed {
    /// Secrets sealed anew under the current key (from another key, or stored in plain).
    pub rekeyed: u64,
    /// Secrets that were already under the current key.
    pub current: u64,
    /// Secrets that could not be opened: (endpoint, secret id, why). They are left as they
    /// are; sending to their endpoint fails until the key is back in the keyring.
    pub unreadable: Vec<(i64, i32, KeyError)>,
}

/// Seals every live signing secret under the keyring's current key: those under an older
/// key, and any stored in plain by a release before encryption at rest. Each secret is
/// re-sealed in its own short transaction, so sending goes on meanwhile. It passes over the
/// table until a pass finds nothing left (a secret added meanwhile by a process whose keyring
/// still had the old key first is caught too); running it again finds nothing to do. Expired
/// secrets never sign again and are left as they are.
pub async fn rekey(pool: &PgPool, keys: &Keyring) -> Result<Rekeyed, EndpointError> {
    const LIVE: &str = "(expires_at IS NULL OR expires_at > now())";
    let current: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM endpoint_secrets WHERE key_id = $1 AND {LIVE}"
    ))
    .bind(keys.current())
    .fetch_one(pool)
    .await?;
    let mut report = Rekeyed {
        current: current as u64,
        ..Rekeyed::default()
    };
    for _pass in 0..5 {
        let skip: Vec<i64> = report.unreadable.iter().map(|(e, _, _)| *e).collect();
        let skip_ids: Vec<i32> = report.unreadable.iter().map(|(_, s, _)| *s).collect();
        let stale: Vec<(i64, i32)> = sqlx::query_as(&format!(
            "SELECT endpoint_id, secret_id FROM endpoint_secrets
             WHERE key_id IS DISTINCT FROM $1 AND {LIVE}
               AND (endpoint_id, secret_id) NOT IN
                   (SELECT * FROM unnest($2::bigint[], $3::int[]))
             ORDER BY endpoint_id, secret_id"
        ))
        .bind(keys.current())
        .bind(&skip)
        .bind(&skip_ids)
        .fetch_all(pool)
        .await?;
        if stale.is_empty() {
            break;
        }
        for (endpoint, secret_id) in stale {
            let mut tx = pool.begin().await?;
            let row: Option<(Vec<u8>, Option<String>)> = sqlx::query_as(
                "SELECT secret, key_id FROM endpoint_secrets
                 WHERE endpoint_id = $1 AND secret_id = $2 AND key_id IS DISTINCT FROM $3
                 FOR UPDATE",
            )
            .bind(endpoint)
            .bind(secret_id)
            .bind(keys.current())
            .fetch_optional(&mut *tx)
            .await?;
            let Some((stored, key_id)) = row else {
                continue; // rekeyed meanwhile, or deleted
            };
            let plain = match &key_id {
                None => stored,
                Some(k) => match keys.open(endpoint, k, &stored) {
                    Ok(p) => p,
                    Err(e) => {
                        report.unreadable.push((endpoint, secret_id, e));
                        continue;
                    }
                },
            };
            let (new_key, sealed) = keys.seal(endpoint, &plain)?;
            sqlx::query(
                "UPDATE endpoint_secrets SET secret = $3, key_id = $4
                 WHERE endpoint_id = $1 AND secret_id = $2",
            )
            .bind(endpoint)
            .bind(secret_id)
            .bind(sealed)
            .bind(new_key)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            report.rekeyed += 1;
        }
    }
    Ok(report)
}

/// Disables an endpoint: nothing is sent to it, its pending deliveries wait.
pub async fn disable(pool: &PgPool, endpoint: i64, reason: &str) -> Result<(), EndpointError> {
    let n = sqlx::query(
        "UPDATE endpoints SET status = 'disabled', disabled_reason = $2, updated_at = now()
         WHERE endpoint_id = $1",
    )
    .bind(endpoint)
    .bind(reason)
    .execute(pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(EndpointError::NotFound(endpoint));
    }
    Ok(())
}

/// Enables an endpoint again: its waiting deliveries fall due now, and its failure clock
/// starts afresh. Returns how many deliveries were waiting.
pub async fn enable(pool: &PgPool, endpoint: i64) -> Result<u64, EndpointError> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "UPDATE endpoints SET status = 'active', disabled_reason = NULL, failing_since = NULL,
                updated_at = now()
         WHERE endpoint_id = $1",
    )
    .bind(endpoint)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(EndpointError::NotFound(endpoint));
    }
    let waiting = sqlx::query(
        "UPDATE deliveries SET next_attempt_at = now()
         WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at > now()",
    )
    .bind(endpoint)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(waiting)
}

/// What a replay queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Failed deliveries queued again (attempts start afresh).
    pub requeued: u64,
    /// Messages the endpoint matches but never had a delivery for (sent while it was
    /// disabled, or before it existed), now queued.
    pub added: u64,
}

/// Queues again every message since `since` for one endpoint: failed deliveries start over,
/// and matching messages it never received get a delivery. Delivered ones are left alone.
pub async fn replay(
    pool: &PgPool,
    endpoint: i64,
    since: DateTime<Utc>,
) -> Result<Replayed, EndpointError> {
    let mut tx = pool.begin().await?;
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT endpoint_id FROM endpoints WHERE endpoint_id = $1")
            .bind(endpoint)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(EndpointError::NotFound(endpoint));
    }
    let requeued = sqlx::query(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(),
                lease_until = NULL
         WHERE endpoint_id = $1 AND status = 'failed' AND created_at >= $2",
    )
    .bind(endpoint)
    .bind(since)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let added = sqlx::query(
        "INSERT INTO deliveries (message_id, endpoint_id, tenant_id)
         SELECT m.message_id, e.endpoint_id, e.tenant_id
         FROM endpoints e
         JOIN webhook_messages m ON m.tenant_id = e.tenant_id AND m.created_at >= $2
              AND ferry_matches(e.event_types, m.event_type)
              AND (e.subject IS NULL OR ferry_matches(ARRAY[e.subject], m.subject))
         WHERE e.endpoint_id = $1
         ORDER BY m.created_at
         ON CONFLICT (message_id, endpoint_id) DO NOTHING",
    )
    .bind(endpoint)
    .bind(since)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Replayed { requeued, added })
}
