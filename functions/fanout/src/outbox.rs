//! The outbox in SQL: claiming due deliveries under a lease, recording attempts, endpoint
//! health (failing since, disabling) and the `endpoint.disabled` operational event.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_shared::error::Error;
use serde_json::json;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// A delivery claimed by this instance until `lease`. No `Debug`: it holds secret bytes.
#[derive(Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    pub endpoint_id: i64,
    pub tenant_id: String,
    pub message_id: String,
    pub url: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i32,
    pub lease: DateTime<Utc>,
    /// The endpoint's live signing secrets, newest first, as stored (sealed).
    pub secrets: Vec<StoredSecret>,
    pub rate_limit: Option<i32>,
}

/// A signing secret as stored: sealed under `key_id`, or in plain (`None`) when it was written
/// by a release before encryption at rest and not yet rekeyed.
#[derive(Clone)]
pub struct StoredSecret {
    pub key_id: Option<String>,
    pub bytes: Vec<u8>,
}

/// The live secrets of endpoint `$e` (SQL text), newest first, as two parallel arrays: the
/// sealed bytes, then their key ids. One text for the claim and the test message; two
/// primary-key lookups per row, as the claim's plan had before.
macro_rules! live_secrets {
    ($e:literal) => {
        concat!(
            "ARRAY(SELECT s.secret FROM endpoint_secrets s WHERE s.endpoint_id = ",
            $e,
            " AND (s.expires_at IS NULL OR s.expires_at > now()) ORDER BY s.secret_id DESC),
             ARRAY(SELECT s.key_id FROM endpoint_secrets s WHERE s.endpoint_id = ",
            $e,
            " AND (s.expires_at IS NULL OR s.expires_at > now()) ORDER BY s.secret_id DESC)"
        )
    };
}

impl StoredSecret {
    fn zip(bytes: Vec<Vec<u8>>, keys: Vec<Option<String>>) -> Vec<StoredSecret> {
        bytes
            .into_iter()
            .zip(keys)
            .map(|(bytes, key_id)| StoredSecret { key_id, bytes })
            .collect()
    }
}

/// When an endpoint whose circuit is open may next be probed (SQL text over endpoint `e`), or
/// NULL when its circuit is closed. The circuit opens when the endpoint's failures, with no
/// success between them, span at least a second (a partner's odd 503 does not open it). The
/// next probe follows the last failure by a quarter of how long it has been failing: at least
/// 1 s, at most `$probe_max` milliseconds.
macro_rules! probe_at {
    ($probe_max:literal) => {
        concat!(
            "CASE WHEN e.last_failure_at >= e.failing_since + interval '1 second'
                  THEN e.last_failure_at
                       + least(greatest((e.last_failure_at - e.failing_since) / 4,
                                        interval '1 second'),
                               ",
            $probe_max,
            " * interval '1 millisecond') END"
        )
    };
}

/// Claims up to `limit` due deliveries of active endpoints, leased for `lease`, with at most
/// `per_endpoint` in flight per endpoint counting this instance's sends under way (`busy`),
/// and at most an endpoint's rate limit per claim. `FOR UPDATE SKIP LOCKED` lets concurrent
/// instances claim side by side; the lease keeps a claimed row from being claimed again while
/// it is sent. Endpoints are visited in random order, so a backlog on some cannot starve the
/// others.
///
/// An endpoint that keeps failing is behind an open circuit ([`probe_at!`]): it is only
/// probed, one request at a time, once its probe time has passed; its other due deliveries
/// wait without spending attempts, and the first success closes the circuit. A partner that
/// times out or errors thus holds at most one of the instance's send slots once its circuit
/// is open.
pub async fn claim(
    pool: &PgPool,
    limit: usize,
    per_endpoint: usize,
    busy: &HashMap<i64, usize>,
    lease: Duration,
    probe_max: Duration,
) -> Result<Vec<Claimed>, Error> {
    let (ids, used): (Vec<i64>, Vec<i32>) = busy
        .iter()
        .map(|(id, used)| (*id, (*used).min(i32::MAX as usize) as i32))
        .unzip();
    type Row = (
        i64,
        i64,
        String,
        String,
        String,
        String,
        i32,
        DateTime<Utc>,
        Option<i32>,
        Vec<Vec<u8>>,
        Vec<Option<String>>,
    );
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "WITH busy AS (SELECT * FROM unnest($3::bigint[], $4::int[]) AS b(endpoint_id, used)),
         picked AS (
             SELECT d.delivery_id
             FROM (SELECT e.endpoint_id, e.rate_limit,
                          CASE WHEN p.probe_at IS NULL THEN $2 ELSE 1 END AS cap
                   FROM endpoints e CROSS JOIN LATERAL (SELECT ",
        probe_at!("$6"),
        " AS probe_at) p
                   WHERE e.status = 'active' AND coalesce(p.probe_at, '-infinity') <= now()
                   ORDER BY random()) e
             CROSS JOIN LATERAL (
                 SELECT d.delivery_id FROM deliveries d
                 WHERE d.endpoint_id = e.endpoint_id AND d.status = 'pending'
                   AND d.next_attempt_at <= now()
                   AND (d.lease_until IS NULL OR d.lease_until < now())
                 -- the order of deliveries_endpoint_due_idx: one short range scan per
                 -- endpoint, whatever the statistics say
                 ORDER BY d.endpoint_id, d.next_attempt_at
                 LIMIT greatest(0, least(e.cap - coalesce((SELECT b.used FROM busy b
                                                          WHERE b.endpoint_id = e.endpoint_id), 0),
                                         coalesce(e.rate_limit, $2)))
                 FOR UPDATE OF d SKIP LOCKED) d
             LIMIT $1)
         UPDATE deliveries d
         SET lease_until = now() + $5 * interval '1 millisecond'
         FROM picked, endpoints e, webhook_messages m
         WHERE d.delivery_id = picked.delivery_id AND e.endpoint_id = d.endpoint_id
           AND m.message_id = d.message_id
         RETURNING d.delivery_id, d.endpoint_id, d.tenant_id, d.message_id, e.url, m.body,
                   d.attempts, d.lease_until, e.rate_limit, ",
        live_secrets!("d.endpoint_id")
    ))
    .bind(limit as i64)
    .bind(per_endpoint as i64)
    .bind(&ids)
    .bind(&used)
    .bind(lease.as_millis() as i64)
    .bind(probe_max.as_millis() as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                delivery_id,
                endpoint_id,
                tenant_id,
                message_id,
                url,
                body,
                attempts,
                lease,
                rate_limit,
                secrets,
                secret_keys,
            )| {
                Claimed {
                    delivery_id,
                    endpoint_id,
                    tenant_id,
                    message_id,
                    url,
                    body,
                    attempts,
                    lease,
                    secrets: StoredSecret::zip(secrets, secret_keys),
                    rate_limit,
                }
            },
        )
        .collect())
}

/// An endpoint's URL, tenant and live signing secrets (newest first), for a test message.
pub async fn endpoint_for_test(
    pool: &PgPool,
    endpoint_id: i64,
) -> Result<Option<(String, String, Vec<StoredSecret>)>, Error> {
    type Row = (String, String, Vec<Vec<u8>>, Vec<Option<String>>);
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT e.tenant_id, e.url, ",
        live_secrets!("e.endpoint_id"),
        " FROM endpoints e WHERE e.endpoint_id = $1"
    ))
    .bind(endpoint_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(tenant, url, bytes, keys)| (tenant, url, StoredSecret::zip(bytes, keys))))
}

/// When the next unleased delivery of an active endpoint can be claimed, if any is pending:
/// when it falls due, or a failing endpoint's next probe if that is later. One index probe
/// per endpoint (`deliveries_endpoint_due_idx`).
pub async fn next_due(pool: &PgPool, probe_max: Duration) -> Result<Option<DateTime<Utc>>, Error> {
    Ok(sqlx::query_scalar(concat!(
        "SELECT min(greatest(d.next_attempt_at, ",
        probe_at!("$1"),
        "))
         FROM endpoints e
         CROSS JOIN LATERAL (
             SELECT d.next_attempt_at FROM deliveries d
             WHERE d.endpoint_id = e.endpoint_id AND d.status = 'pending'
               AND (d.lease_until IS NULL OR d.lease_until < now())
             ORDER BY d.endpoint_id, d.next_attempt_at
             LIMIT 1) d
         WHERE e.status = 'active'"
    ))
    .bind(probe_max.as_millis() as i64)
    .fetch_one(pool)
    .await?)
}

/// An attempt's result, ready to record.
#[derive(Debug, Clone)]
pub struct Done {
    pub delivery_id: i64,
    pub endpoint_id: i64,
    pub lease: DateTime<Utc>,
    /// This attempt's number (1 = first).
    pub attempt: i32,
    /// `pending`, `delivered` or `failed`.
    pub status: &'static str,
    /// When to try again (`pending` only).
    pub next_at: Option<DateTime<Utc>>,
    pub started: DateTime<Utc>,
    pub latency_ms: i32,
    pub status_code: Option<i32>,
    /// `delivered`, `retry`, `failed` (the last attempt failed), `gone` (410) or `deferred`
    /// (not sent: the endpoint's rate limit would have made it wait past the lease).
    pub outcome: &'static str,
    pub error: Option<String>,
    pub response: Option<String>,
}

impl Done {
    /// Whether the attempt counts against the endpoint's health: sent (or refused) and not
    /// delivered. A send held back by the rate limit does not.
    pub fn failed(&self) -> bool {
        self.status != "delivered" && self.outcome != "deferred"
    }
}

/// How a transaction that records attempts ([`record`], [`update_health`]) starts, in one
/// round trip: with sequential scans off, so that its statements find the deliveries and
/// endpoints they update by key whatever the planner knew when it cached their plans. A plan
/// cached while `deliveries` was a few pages long (a fresh deployment) joined it by scanning
/// it whole, and went on doing so as it grew, until its first ANALYZE: in `bench-e2e.sh` the
/// record statement went from 1.1–1.7 ms to 10–15 ms (migration 0019 does the same for the
/// loader's derived state). JIT goes off with them: a path that is off costs 10^10, which
/// would put a plan that still has to scan past `jit_above_cost`.
const BEGIN_RECORDING: &str = "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL jit = off";

/// Opens a transaction for recording attempts ([`BEGIN_RECORDING`]). [`record`] and
/// [`update_health`] run in one of these only: a plan the connection caches outside it would
/// be reused inside it.
pub async fn begin_recording(pool: &PgPool) -> Result<Transaction<'static, Postgres>, Error> {
    Ok(pool.begin_with(BEGIN_RECORDING).await?)
}

/// Records attempts whose lease still holds (a row re-claimed after its lease ran out belongs
/// to the other instance now). Returns how many were recorded.
pub async fn record(conn: &mut PgConnection, done: &[Done]) -> Result<usize, Error> {
    if done.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&Done) -> Option<String>| done.iter().map(f).collect::<Vec<_>>();
    let recorded: Vec<i64> = sqlx::query_scalar(
        "WITH o AS (
             SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::timestamptz[],
                                  $5::text[], $6::int[], $7::timestamptz[], $8::int[], $9::int[],
                                  $10::text[], $11::text[])
                 AS o(delivery_id, lease, status, next_at, error, attempt, started, latency_ms,
                      status_code, outcome, response)),
         upd AS (
             UPDATE deliveries d
             SET status = o.status, attempts = o.attempt,
                 next_attempt_at = coalesce(o.next_at, d.next_attempt_at), lease_until = NULL,
                 delivered_at = CASE WHEN o.status = 'delivered'
                                     THEN o.started + o.latency_ms * interval '1 millisecond' END,
                 last_error = o.error
             FROM o
             WHERE d.delivery_id = o.delivery_id AND d.lease_until = o.lease
             RETURNING d.delivery_id)
         INSERT INTO delivery_attempts
             (delivery_id, attempt, started_at, latency_ms, status_code, outcome, error, response)
         SELECT o.delivery_id,
                -- numbered on from the log, which a replay (attempts back to 0) keeps
                (SELECT coalesce(max(a.attempt), 0) + 1 FROM delivery_attempts a
                 WHERE a.delivery_id = o.delivery_id),
                o.started, o.latency_ms, o.status_code, o.outcome, o.error, o.response
         FROM o JOIN upd USING (delivery_id)
         ON CONFLICT (delivery_id, attempt) DO NOTHING
         RETURNING delivery_id",
    )
    .bind(done.iter().map(|d| d.delivery_id).collect::<Vec<_>>())
    .bind(done.iter().map(|d| d.lease).collect::<Vec<_>>())
    .bind(done.iter().map(|d| d.status).collect::<Vec<_>>())
    .bind(done.iter().map(|d| d.next_at).collect::<Vec<_>>())
    .bind(col(|d| d.error.clone()))
    .bind(done.iter().map(|d| d.attempt).collect::<Vec<_>>())
    .bind(done.iter().map(|d| d.started).collect::<Vec<_>>())
    .bind(done.iter().map(|d| d.latency_ms).collect::<Vec<_>>())
    .bind(done.iter().map(|d| d.status_code).collect::<Vec<_>>())
    .bind(done.iter().map(|d| d.outcome).collect::<Vec<_>>())
    .bind(col(|d| d.response.clone()))
    .fetch_all(conn)
    .await?;
    Ok(recorded.len())
}

/// Endpoint health from a set of attempts, in the caller's transaction (the one recording
/// them): a success clears `failing_since`; failures set it to the first failure since the
/// last success, judged against `last_success_at` and `last_failure_at` so that batches
/// recorded out of order do not undo each other. Returns the endpoints disabled now, for 410 or for failing longer
/// than `disable_after`, each announced by an `endpoint.disabled` message to the tenant's
/// other endpoints that subscribed to it.
pub async fn update_health(
    tx: &mut PgConnection,
    done: &[Done],
    disable_after: Duration,
) -> Result<Vec<Disabled>, Error> {
    let (health, gone) = fold_health(done);
    let ids = &health.ids;
    // The newest success and failure known (this batch's or recorded before; `greatest` and
    // `least` ignore NULLs). Failing when the newest failure is newer than the newest success,
    // since the first failure after that success: from this batch or the stored value, or, if
    // neither is newer than the success (batches recorded out of order), the newest failure.
    // The expressions read the row being updated, so a concurrent flush's update is built
    // upon, not overwritten.
    let ok = "greatest(e.last_success_at, h.last_ok)";
    let bad = "greatest(e.last_failure_at, h.last_fail)";
    let failing = format!(
        "CASE WHEN {bad} IS NULL OR {bad} <= {ok} THEN NULL
              ELSE coalesce(least(CASE WHEN {ok} IS NULL OR e.failing_since > {ok}
                                       THEN e.failing_since END,
                                  CASE WHEN {ok} IS NULL OR h.first_fail > {ok}
                                       THEN h.first_fail END),
                            {bad}) END"
    );
    // A healthy endpoint's success time is written at most once a minute, not on every flush.
    let ok_kept = format!(
        "CASE WHEN {ok} > coalesce(e.last_success_at, '-infinity') + interval '1 minute'
                   OR {ok} <= {bad} OR e.failing_since IS NOT NULL
              THEN {ok} ELSE e.last_success_at END"
    );
    sqlx::query(&format!(
        "UPDATE endpoints e
         SET failing_since = {failing}, last_success_at = {ok_kept}, last_failure_at = {bad}
         FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[])
              AS h(endpoint_id, last_ok, first_fail, last_fail)
         WHERE e.endpoint_id = h.endpoint_id
           AND (e.failing_since IS DISTINCT FROM {failing}
                OR e.last_success_at IS DISTINCT FROM {ok_kept}
                OR e.last_failure_at IS DISTINCT FROM {bad})"
    ))
    .bind(ids)
    .bind(&health.oks)
    .bind(&health.firsts)
    .bind(&health.lasts)
    .execute(&mut *tx)
    .await?;
    let disabled = disable_failing(tx, &gone, ids, disable_after).await?;
    for d in &disabled {
        announce(&mut *tx, d).await?;
    }
    Ok(disabled)
}

/// Per endpoint, from a set of attempts: the last success and the first failure after it (when
/// each attempt started), and the last failure (when it ended: a timeout is known to have
/// failed only once it has timed out), as arrays for one statement; and the endpoints that
/// answered 410 Gone.
struct Health {
    ids: Vec<i64>,
    oks: Vec<Option<DateTime<Utc>>>,
    firsts: Vec<Option<DateTime<Utc>>>,
    lasts: Vec<Option<DateTime<Utc>>>,
}

fn fold_health(done: &[Done]) -> (Health, Vec<i64>) {
    type Since = Option<DateTime<Utc>>;
    let mut health: HashMap<i64, (Since, Since, Since)> = HashMap::new();
    let mut sorted: Vec<&Done> = done.iter().collect();
    sorted.sort_by_key(|d| d.started);
    let mut gone = Vec::new();
    // A send held back by the endpoint's own rate limit says nothing about its health.
    for d in sorted.into_iter().filter(|d| d.outcome != "deferred") {
        let (last_ok, first_fail, last_fail) = health.entry(d.endpoint_id).or_default();
        if d.status == "delivered" {
            *last_ok = Some(d.started);
            *first_fail = None;
        } else {
            first_fail.get_or_insert(d.started);
            // When the failure was known: a timeout is a failure only once it has timed out.
            let failed_at = d.started + chrono::TimeDelta::milliseconds(i64::from(d.latency_ms));
            *last_fail = (*last_fail).max(Some(failed_at));
        }
        if d.outcome == "gone" {
            gone.push(d.endpoint_id);
        }
    }
    let mut out = Health {
        ids: Vec::with_capacity(health.len()),
        oks: Vec::new(),
        firsts: Vec::new(),
        lasts: Vec::new(),
    };
    for (id, (ok, first, last)) in health {
        out.ids.push(id);
        out.oks.push(ok);
        out.firsts.push(first);
        out.lasts.push(last);
    }
    (out, gone)
}

/// Disables the active endpoints among `ids` that answered 410 (`gone`) or have been failing
/// for longer than `disable_after`.
async fn disable_failing(
    tx: &mut PgConnection,
    gone: &[i64],
    ids: &[i64],
    disable_after: Duration,
) -> Result<Vec<Disabled>, Error> {
    Ok(sqlx::query_as(
        "UPDATE endpoints
         SET status = 'disabled', updated_at = now(),
             disabled_reason = CASE WHEN endpoint_id = ANY($1)
                 THEN 'the receiver answered 410 Gone'
                 ELSE 'failing continuously since ' || to_char(failing_since AT TIME ZONE 'UTC',
                                                               'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') END
         WHERE status = 'active'
           AND (endpoint_id = ANY($1)
                OR (endpoint_id = ANY($2)
                    AND failing_since <= now() - $3 * interval '1 millisecond'))
         RETURNING endpoint_id, tenant_id, url, disabled_reason AS reason, failing_since",
    )
    .bind(gone)
    .bind(ids)
    .bind(disable_after.as_millis() as i64)
    .fetch_all(&mut *tx)
    .await?)
}

/// An endpoint disabled by the fanout.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Disabled {
    pub endpoint_id: i64,
    pub tenant_id: String,
    pub url: String,
    pub reason: String,
    pub failing_since: Option<DateTime<Utc>>,
}

/// The source of ferry's operational events.
pub const OPERATIONS_SOURCE: &str = "ferry/fanout";

/// Enqueues the `endpoint.disabled` event (a CloudEvent) for the tenant's endpoints that
/// subscribed to it; the disabled endpoint itself is no longer active, so it is not among them.
async fn announce(tx: &mut sqlx::PgConnection, d: &Disabled) -> Result<(), Error> {
    let now = Utc::now();
    let id = format!(
        "endpoint-{}-disabled-{}",
        d.endpoint_id,
        now.timestamp_micros()
    );
    let body = json!({
        "specversion": "1.0",
        "id": id,
        "source": OPERATIONS_SOURCE,
        "type": "endpoint.disabled",
        "subject": d.endpoint_id.to_string(),
        "time": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "tenantid": d.tenant_id,
        "datacontenttype": "application/json",
        "data": {
            "endpoint_id": d.endpoint_id,
            // The host only: a URL's path or query may hold the partner's token.
            "host": url::Url::parse(&d.url).ok().and_then(|u| u.host_str().map(str::to_owned)),
            "reason": d.reason,
            "failing_since": d.failing_since,
        },
    });
    sqlx::query(
        "SELECT ferry_enqueue($1, ferry_message_id($1, $2, $3), 'endpoint.disabled', $4, $5)",
    )
    .bind(&d.tenant_id)
    .bind(OPERATIONS_SOURCE)
    .bind(&id)
    .bind(d.endpoint_id.to_string())
    .bind(body.to_string())
    .execute(&mut *tx)
    .await?;
    Ok(())
}
