//! Read functions over the rollups: what the API and dashboards ask for.
//!
//! Every query names one tenant (so on Citus it is routed to that tenant's shard) and reads
//! rollup rows, never raw events. A range `[from, to)` is aligned outward to 5 minutes and
//! covered by the coarsest buckets that fit: whole UTC days from the daily rows, whole hours
//! from the hourly rows, the ragged edges from the 5-minute rows. So "unique visitors over any
//! range" merges at most a few dozen hll sketches, however long the range.
//!
//! | function | answers |
//! |---|---|
//! | [`time_series`] | one metric per bucket of a grain, gaps filled with 0 |
//! | [`unique_users`] | distinct users (hll) over any range, optionally of one event type |
//! | [`top_pages`] | most viewed pages over a range |
//! | [`top_products`] | products by views, with add-to-cart and purchases |
//! | [`revenue`] | revenue per currency over a range |
//! | [`source_days`] | events per source per day (data quality) |
//! | [`recent_anomalies`] | findings of the anomaly and data-quality checks |
//! | [`events_by_type`] | events per bucket of a grain and per type (only the non-zero ones) |
//! | [`visitors`] | distinct users and sessions (hll) over any range |
//! | [`recently_viewed`] | a user's last distinct products viewed (kept by the loader, not a rollup) |
//! | [`product`] | a product's current state (kept by the loader) |
//! | [`also_viewed`] | products in the recently viewed lists of a product's latest viewers |
//! | [`endpoint_health`] | a tenant's partner endpoints: state, backlog, the last hour's deliveries, last error |

use chrono::{DateTime, TimeZone, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::QueryAs;
use sqlx::{PgPool, Postgres};

use crate::error::Error;

/// Bucket width of a rollup row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    FiveMinutes,
    Hour,
    Day,
}

impl Grain {
    pub fn seconds(self) -> i64 {
        match self {
            Grain::FiveMinutes => 300,
            Grain::Hour => 3_600,
            Grain::Day => 86_400,
        }
    }
}

/// What a time series counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    /// Events, of every type or of one.
    Events { event_type: Option<String> },
    /// Distinct users per bucket (hll), of every type or of one.
    Users { event_type: Option<String> },
    /// Distinct sessions per bucket (hll).
    Sessions,
    /// Page views, of every page or of one.
    PageViews { page: Option<String> },
    /// Net revenue in minor units of one currency.
    Revenue { currency: String },
    /// Events from one source (hourly and daily grains only).
    SourceEvents { source: String },
}

/// The buckets covering `[from, to)`: (grain seconds, first bucket, end) triples.
pub fn cover(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(i32, DateTime<Utc>, DateTime<Utc>)> {
    let five = 300;
    let lo = from.timestamp().div_euclid(five) * five;
    let hi = (to.timestamp() + five - 1).div_euclid(five) * five;
    let mut out = Vec::new();
    if hi <= lo {
        return out;
    }
    let up = |t: i64, g: i64| (t + g - 1).div_euclid(g) * g;
    let down = |t: i64, g: i64| t.div_euclid(g) * g;
    let (d0, d1) = (up(lo, 86_400), down(hi, 86_400));
    let (h0, h1) = (up(lo, 3_600), down(hi, 3_600));
    let mut push = |g: i64, a: i64, b: i64| {
        if a < b {
            if let (Some(a), Some(b)) = (
                Utc.timestamp_opt(a, 0).single(),
                Utc.timestamp_opt(b, 0).single(),
            ) {
                out.push((g as i32, a, b));
            }
        }
    };
    if d0 < d1 {
        push(86_400, d0, d1);
        push(3_600, h0, d0);
        push(3_600, d1, h1);
        push(300, lo, h0.min(d0));
        push(300, h1.max(d1), hi);
    } else if h0 < h1 {
        push(3_600, h0, h1);
        push(300, lo, h0);
        push(300, h1, hi);
    } else {
        push(300, lo, hi);
    }
    out
}

/// The rows of rollup table `table` (as `r`) of tenant $1 in the cover of a range given as
/// $2, $3, $4 (grains, lows, highs): one index range scan per covering span. The `OFFSET 0`
/// keeps the subquery a parametrised scan per span: flattened into a join, its range
/// conditions cannot be estimated, and the planner chose a hash join over every row of the
/// tenant (1,060 ms for 90 days on 10,000,000 events, against a few ms).
fn covering(table: &str) -> String {
    format!(
        "unnest($2::int[], $3::timestamptz[], $4::timestamptz[]) AS c(grain, lo, hi)
         CROSS JOIN LATERAL (
             SELECT * FROM {table}
             WHERE tenant_id = $1 AND grain = c.grain AND bucket >= c.lo AND bucket < c.hi
             OFFSET 0
         ) AS r"
    )
}

/// `sql` (which reads its rollup table `r` through [`covering`]) with the tenant bound as $1 and the
/// cover of `[from, to)` as $2–$4; further parameters are bound by the caller.
fn covered<'q, O>(
    sql: &'q str,
    tenant: &'q str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> QueryAs<'q, Postgres, O, PgArguments>
where
    O: for<'r> sqlx::FromRow<'r, PgRow>,
{
    let mut grains = Vec::new();
    let mut lows = Vec::new();
    let mut highs = Vec::new();
    for (grain, lo, hi) in cover(from, to) {
        grains.push(grain);
        lows.push(lo);
        highs.push(hi);
    }
    sqlx::query_as(sql)
        .bind(tenant)
        .bind(grains)
        .bind(lows)
        .bind(highs)
}

/// One bucket of a time series.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Point {
    pub bucket: DateTime<Utc>,
    pub value: f64,
}

/// One value per bucket of `grain` in `[from, to)` (aligned down to the grain), 0 where
/// nothing happened.
pub async fn time_series(
    pool: &PgPool,
    tenant: &str,
    metric: &Metric,
    grain: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Point>, Error> {
    let g = grain.seconds();
    let start = from.timestamp().div_euclid(g) * g;
    let (value, table, filter, arg): (&str, &str, &str, Option<&str>) = match metric {
        Metric::Events { event_type } => (
            "sum(events)::float8",
            "rollup_events",
            "($5::text IS NULL OR type = $5)",
            event_type.as_deref(),
        ),
        Metric::Users { event_type } => (
            "hll_cardinality(hll_union_agg(users))",
            "rollup_events",
            "($5::text IS NULL OR type = $5)",
            event_type.as_deref(),
        ),
        Metric::Sessions => (
            "hll_cardinality(hll_union_agg(sessions))",
            "rollup_events",
            "$5::text IS NULL",
            None,
        ),
        Metric::PageViews { page } => (
            "sum(views)::float8",
            "rollup_pages",
            "($5::text IS NULL OR page = $5)",
            page.as_deref(),
        ),
        Metric::Revenue { currency } => (
            "sum(amount)::float8",
            "rollup_revenue",
            "currency = $5",
            Some(currency.as_str()),
        ),
        Metric::SourceEvents { source } => (
            "sum(events)::float8",
            "rollup_sources",
            "source = $5",
            Some(source.as_str()),
        ),
    };
    let sql = format!(
        "SELECT s.bucket, coalesce(v.value, 0)::float8 AS value
         FROM generate_series($3::timestamptz, $4::timestamptz - interval '1 microsecond',
                              make_interval(secs => $2)) AS s(bucket)
         LEFT JOIN (
             SELECT bucket, {value} AS value FROM {table}
             WHERE tenant_id = $1 AND grain = $2 AND bucket >= $3 AND bucket < $4 AND {filter}
             GROUP BY bucket
         ) v ON v.bucket = s.bucket
         ORDER BY 1"
    );
    let from = Utc.timestamp_opt(start, 0).single().unwrap_or(from);
    Ok(sqlx::query_as(&sql)
        .bind(tenant)
        .bind(g as i32)
        .bind(from)
        .bind(to)
        .bind(arg)
        .fetch_all(pool)
        .await?)
}

/// Events of one type in one bucket.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TypePoint {
    pub event_type: String,
    pub bucket: DateTime<Utc>,
    pub events: i64,
}

/// Events per bucket of `grain` and per type in `[from, to)` (aligned down to the grain), by
/// type then bucket; buckets without events of a type are absent.
pub async fn events_by_type(
    pool: &PgPool,
    tenant: &str,
    grain: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<TypePoint>, Error> {
    let g = grain.seconds();
    let start = from.timestamp().div_euclid(g) * g;
    let from = Utc.timestamp_opt(start, 0).single().unwrap_or(from);
    Ok(sqlx::query_as(
        "SELECT type AS event_type, bucket, sum(events)::bigint AS events FROM rollup_events
         WHERE tenant_id = $1 AND grain = $2 AND bucket >= $3 AND bucket < $4
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(tenant)
    .bind(g as i32)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?)
}

/// Distinct users and sessions over a range.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Visitors {
    pub users: f64,
    pub sessions: f64,
}

/// Distinct users and sessions over `[from, to)` (hll, about 0.8% standard error), optionally
/// of one event type.
pub async fn visitors(
    pool: &PgPool,
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    event_type: Option<&str>,
) -> Result<Visitors, Error> {
    let rows = covering("rollup_events");
    let sql = format!(
        "SELECT coalesce(hll_cardinality(hll_union_agg(r.users)), 0)::float8 AS users,
                coalesce(hll_cardinality(hll_union_agg(r.sessions)), 0)::float8 AS sessions
         FROM {rows}
         WHERE $5::text IS NULL OR r.type = $5"
    );
    Ok(covered(&sql, tenant, from, to)
        .bind(event_type)
        .fetch_one(pool)
        .await?)
}

/// Distinct users over `[from, to)` by merging the covering hll sketches (about 0.8% standard
/// error), optionally of one event type.
pub async fn unique_users(
    pool: &PgPool,
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    event_type: Option<&str>,
) -> Result<f64, Error> {
    Ok(visitors(pool, tenant, from, to, event_type).await?.users)
}

/// A page and its views over a range.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct PageViews {
    pub page: String,
    pub views: i64,
}

/// The `limit` most viewed pages over `[from, to)`.
pub async fn top_pages(
    pool: &PgPool,
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<PageViews>, Error> {
    top_pages_from(pool, tenant, from, to, limit, 0).await
}

/// The most viewed pages over `[from, to)`, ranks `offset + 1` to `offset + limit`.
pub async fn top_pages_from(
    pool: &PgPool,
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
    offset: i64,
) -> Result<Vec<PageViews>, Error> {
    let rows = covering("rollup_pages");
    let sql = format!(
        "SELECT r.page, sum(r.views)::bigint AS views FROM {rows}
         GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $5 OFFSET $6"
    );
    Ok(covered(&sql, tenant, from, to)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?)
}

/// A product's activity over a range.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct ProductActivity {
    pub product: String,
    pub views: i64,
    pub cart_adds: i64,
    pub purchases: i64,
}

/// The `limit` most viewed products over `[from, to)`.
pub async fn top_products(
    pool: &PgPool,
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ProductActivity>, Error> {
    top_products_from(pool, tenant, from, to, limit, 0).await
}

/// The most viewed products over `[from, to)`, ranks `offset + 1` to `offset + limit`.
pub async fn top_products_from(
    pool: &PgPool,
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
    offset: i64,
) -> Result<Vec<ProductActivity>, Error> {
    let rows = covering("rollup_products");
    let sql = format!(
        "SELECT r.product, sum(r.views)::bigint AS views, sum(r.cart_adds)::bigint AS cart_adds,
                sum(r.purchases)::bigint AS purchases
         FROM {rows}
         GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $5 OFFSET $6"
    );
    Ok(covered(&sql, tenant, from, to)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?)
}

/// Revenue of one currency over a range, in minor units.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Revenue {
    pub currency: String,
    pub purchases: i64,
    pub refunds: i64,
    /// Purchases minus refunds.
    pub net: f64,
    pub refunded: f64,
}

/// Revenue per currency over `[from, to)`.
pub async fn revenue(
    pool: &PgPool,
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Revenue>, Error> {
    let rows = covering("rollup_revenue");
    let sql = format!(
        "SELECT r.currency, sum(r.purchases)::bigint AS purchases,
                sum(r.refunds)::bigint AS refunds, sum(r.amount)::float8 AS net,
                sum(r.refunded)::float8 AS refunded
         FROM {rows}
         GROUP BY 1 ORDER BY 1"
    );
    Ok(covered(&sql, tenant, from, to).fetch_all(pool).await?)
}

/// A source's events on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct SourceDay {
    pub day: DateTime<Utc>,
    pub source: String,
    pub events: i64,
}

/// Events per source per UTC day, for the days in `[from, to)`.
pub async fn source_days(
    pool: &PgPool,
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<SourceDay>, Error> {
    Ok(sqlx::query_as(
        "SELECT bucket AS day, source, events FROM rollup_sources
         WHERE tenant_id = $1 AND grain = 86400 AND bucket >= date_bin('1 day', $2, TIMESTAMPTZ 'epoch')
           AND bucket < $3
         ORDER BY 1, 2",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?)
}

/// A finding of the anomaly or data-quality checks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Anomaly {
    pub metric: String,
    pub grain: i32,
    pub bucket: DateTime<Utc>,
    pub kind: String,
    pub value: f64,
    pub baseline: f64,
    pub score: f64,
    pub method: String,
    pub detected_at: DateTime<Utc>,
}

/// Findings detected since `since` and not withdrawn, newest bucket first.
pub async fn recent_anomalies(
    pool: &PgPool,
    tenant: &str,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Anomaly>, Error> {
    recent_anomalies_from(pool, tenant, since, limit, 0).await
}

/// Findings detected since `since` and not withdrawn, newest bucket first, from the
/// `offset + 1`-th on.
pub async fn recent_anomalies_from(
    pool: &PgPool,
    tenant: &str,
    since: DateTime<Utc>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Anomaly>, Error> {
    Ok(sqlx::query_as(
        "SELECT metric, grain, bucket, kind, value, baseline, score, method, detected_at
         FROM anomalies WHERE tenant_id = $1 AND detected_at >= $2 AND withdrawn_at IS NULL
         ORDER BY bucket DESC, metric, kind, grain LIMIT $3 OFFSET $4",
    )
    .bind(tenant)
    .bind(since)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?)
}

/// A product a user viewed, and when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Viewed {
    pub product_id: String,
    pub viewed_at: DateTime<Utc>,
}

/// A user's recently viewed products, newest first. The loader
/// keeps this list (the last `FERRY_RECENTLY_VIEWED` distinct products, and between trims some
/// older ones: migration 0020) in the events' transaction, so it is as fresh as the events.
/// A `limit` up to `FERRY_RECENTLY_VIEWED` gives exactly the newest ones.
pub async fn recently_viewed(
    pool: &PgPool,
    tenant: &str,
    user: &str,
    limit: i64,
) -> Result<Vec<Viewed>, Error> {
    Ok(sqlx::query_as(
        "SELECT product_id, viewed_at FROM recently_viewed
         WHERE tenant_id = $1 AND user_id = $2
         ORDER BY viewed_at DESC, product_id LIMIT $3",
    )
    .bind(tenant)
    .bind(user)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// A product's current state: the `data` of its newest change.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct ProductState {
    pub product_id: String,
    /// The change's `data` as stored (JSON text); NULL once deleted.
    #[serde(serialize_with = "raw_json")]
    pub state: Option<String>,
    pub deleted: bool,
    pub changed_at: DateTime<Utc>,
    pub source: String,
    pub event_id: String,
}

/// A product's current state, if the tenant has one of that id.
pub async fn product(
    pool: &PgPool,
    tenant: &str,
    product_id: &str,
) -> Result<Option<ProductState>, Error> {
    Ok(sqlx::query_as(
        "SELECT product_id, state::text AS state, deleted, changed_at, source, event_id FROM products
         WHERE tenant_id = $1 AND product_id = $2",
    )
    .bind(tenant)
    .bind(product_id)
    .fetch_optional(pool)
    .await?)
}

/// How many of a product's latest viewers [`also_viewed`] reads.
pub const ALSO_VIEWED_SAMPLE: i64 = 1_000;

/// A product viewed by some of the users who viewed another.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct AlsoViewed {
    pub product_id: String,
    /// Users (of the sample) with both products in their recently viewed list.
    pub users: i64,
}

/// "People who viewed this also viewed": the products most often in the recently viewed lists
/// of the last [`ALSO_VIEWED_SAMPLE`] users who viewed `product_id`, most shared first, among a
/// fixed sixteenth of the users (those whose id's md5 starts with `0`: the partial index of
/// migration 0017, which spares the loader fifteen index writes in sixteen). The lists are the
/// loader's (the last `FERRY_RECENTLY_VIEWED` distinct products per user, and between trims
/// some older ones), so the answer is as
/// fresh as the events, and its cost is bounded by the sample, however popular the product.
pub async fn also_viewed(
    pool: &PgPool,
    tenant: &str,
    product_id: &str,
    limit: i64,
) -> Result<Vec<AlsoViewed>, Error> {
    Ok(sqlx::query_as(
        "SELECT o.product_id, count(*)::bigint AS users
         FROM (SELECT user_id FROM recently_viewed
               WHERE tenant_id = $1 AND product_id = $2 AND left(md5(user_id), 1) = '0'
               ORDER BY viewed_at DESC LIMIT $4) AS v
         JOIN recently_viewed o
           ON o.tenant_id = $1 AND o.user_id = v.user_id AND o.product_id <> $2
         GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $3",
    )
    .bind(tenant)
    .bind(product_id)
    .bind(limit)
    .bind(ALSO_VIEWED_SAMPLE)
    .fetch_all(pool)
    .await?)
}

/// Writes stored JSON text as JSON (not as a string holding it).
fn raw_json<S: serde::Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    match text {
        Some(t) => serde_json::value::RawValue::from_string(t.clone())
            .map_err(serde::ser::Error::custom)?
            .serialize(s),
        None => s.serialize_none(),
    }
}

/// A partner endpoint's health.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct EndpointHealth {
    pub endpoint_id: i64,
    /// Scheme, host, port and path: a query string or a `user:password@` may hold a partner's
    /// token, so both are left out.
    pub url: String,
    pub event_types: Vec<String>,
    pub status: String,
    pub disabled_reason: Option<String>,
    /// First failure since the last success; NULL while healthy.
    pub failing_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Deliveries waiting now (the backlog, however old).
    pub pending: i64,
    /// Of the deliveries created in the last hour: how many are delivered, and how many
    /// failed for good (a retried one fails only after its whole schedule, days later; a
    /// partner's 410 at once).
    pub delivered: i64,
    pub failed: i64,
    /// The newest delivery error: of the last hour's deliveries, else of those still waiting
    /// (what keeps the backlog).
    pub last_error: Option<String>,
}

/// A tenant's endpoints, by id: their backlog, their deliveries of the last hour by outcome,
/// and their newest error. The backlog is counted from the fanout's partial index of pending
/// deliveries (index only); the last hour's outcomes and the time of its newest error come
/// from one scan of `deliveries_endpoint_idx`, so that part grows with an endpoint's hourly
/// volume (5.4-9.3 ms at the median for 5 endpoints with 3,128 deliveries each in the hour,
/// a fifth of them with errors; a day instead of an hour took 60 ms per endpoint).
pub async fn endpoint_health(pool: &PgPool, tenant: &str) -> Result<Vec<EndpointHealth>, Error> {
    Ok(sqlx::query_as(
        "SELECT e.endpoint_id,
                regexp_replace(split_part(split_part(e.url, '?', 1), '#', 1), '//[^/@]*@', '//')
                    AS url,
                e.event_types, e.status, e.disabled_reason, e.failing_since,
                e.last_success_at, e.last_failure_at,
                (SELECT count(*) FROM deliveries p
                 WHERE p.endpoint_id = e.endpoint_id AND p.status = 'pending') AS pending,
                coalesce(h.delivered, 0) AS delivered, coalesce(h.failed, 0) AS failed,
                coalesce(
                    (SELECT d.last_error FROM deliveries d
                     WHERE d.endpoint_id = e.endpoint_id AND d.created_at = h.error_at
                       AND d.last_error IS NOT NULL
                     LIMIT 1),
                    -- a retried delivery waits longest, so its error is among the newest 100
                    -- due times: a bounded read, however long the backlog
                    (SELECT last_error FROM (
                         SELECT last_error, next_attempt_at FROM deliveries
                         WHERE endpoint_id = e.endpoint_id AND status = 'pending'
                         ORDER BY next_attempt_at DESC LIMIT 100) AS newest
                     WHERE last_error IS NOT NULL
                     ORDER BY next_attempt_at DESC LIMIT 1)) AS last_error
         FROM endpoints e
         -- the last hour in one scan: the counts, and when its newest error was (the error
         -- itself is then one index lookup, of the rows created at that time)
         LEFT JOIN LATERAL (
             SELECT count(*) FILTER (WHERE status = 'delivered') AS delivered,
                    count(*) FILTER (WHERE status = 'failed') AS failed,
                    max(created_at) FILTER (WHERE last_error IS NOT NULL) AS error_at
             FROM deliveries
             WHERE endpoint_id = e.endpoint_id AND created_at >= now() - interval '1 hour'
         ) h ON true
         WHERE e.tenant_id = $1
         ORDER BY e.endpoint_id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// True when the tenant exists (active or suspended).
pub async fn tenant_exists(pool: &PgPool, tenant: &str) -> Result<bool, Error> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE tenant_id = $1)")
            .bind(tenant)
            .fetch_one(pool)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cover_uses_days_hours_and_five_minutes() {
        let c = cover(t("2026-11-01T22:07:00Z"), t("2026-11-04T01:10:00Z"));
        let fmt: Vec<(i32, String, String)> = c
            .iter()
            .map(|(g, a, b)| {
                (
                    *g,
                    a.format("%d %H:%M").to_string(),
                    b.format("%d %H:%M").to_string(),
                )
            })
            .collect();
        assert_eq!(
            fmt,
            vec![
                (86_400, "02 00:00".into(), "04 00:00".into()),
                (3_600, "01 23:00".into(), "02 00:00".into()),
                (3_600, "04 00:00".into(), "04 01:00".into()),
                (300, "01 22:05".into(), "01 23:00".into()),
                (300, "04 01:00".into(), "04 01:10".into()),
            ]
        );
        // Contiguous and without overlap: the spans add up to the aligned range.
        let total: i64 = c.iter().map(|(_, a, b)| (*b - *a).num_seconds()).sum();
        assert_eq!(
            total,
            (t("2026-11-04T01:10:00Z") - t("2026-11-01T22:05:00Z")).num_seconds()
        );
    }

    #[test]
    fn cover_within_one_hour_and_empty() {
        let c = cover(t("2026-11-01T10:02:00Z"), t("2026-11-01T10:31:00Z"));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, 300);
        assert_eq!((c[0].2 - c[0].1).num_minutes(), 35);
        assert!(cover(t("2026-11-01T10:00:00Z"), t("2026-11-01T10:00:00Z")).is_empty());
    }
}
