//! The `/v1` routes: which one a path names, and its answer as JSON. Every route under
//! `/v1/tenants/{tenant}/` reads that tenant only, through `ferry_shared::queries`.

use chrono::{DateTime, Duration, Utc};
use ferry_shared::queries::{self, Grain, Metric};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::params::{grain_name, BadParam, Params, Range};
use crate::QueryConfig;

/// What a path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /v1/health`: the database answers (no key needed).
    Health,
    /// `GET /v1/openapi.json`: the API's OpenAPI 3.1 document (no key needed).
    OpenApi,
    /// `GET /v1/whoami`: the tenant the key reads (an operator key: every tenant's id).
    WhoAmI,
    /// `GET /v1/tenants/{tenant}/…`.
    Tenant { tenant: String, read: Read },
}

/// A read of one tenant's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Events,
    EventsByType,
    Visitors,
    TopPages,
    TopProducts,
    Product(String),
    AlsoViewed(String),
    Revenue,
    Sources,
    Anomalies,
    RecentlyViewed(String),
    Endpoints,
}

/// The route a path's (decoded) segments name, if any.
pub fn route(segments: &[String]) -> Option<Route> {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["v1", "health"] => Some(Route::Health),
        ["v1", "openapi.json"] => Some(Route::OpenApi),
        ["v1", "whoami"] => Some(Route::WhoAmI),
        ["v1", "tenants", tenant, rest @ ..] => {
            let read = match rest {
                ["events"] => Read::Events,
                ["events", "by-type"] => Read::EventsByType,
                ["visitors"] => Read::Visitors,
                ["pages", "top"] => Read::TopPages,
                ["products", "top"] => Read::TopProducts,
                ["products", id] => Read::Product((*id).to_owned()),
                ["products", id, "also-viewed"] => Read::AlsoViewed((*id).to_owned()),
                ["revenue"] => Read::Revenue,
                ["sources"] => Read::Sources,
                ["anomalies"] => Read::Anomalies,
                ["users", user, "recently-viewed"] => Read::RecentlyViewed((*user).to_owned()),
                ["endpoints"] => Read::Endpoints,
                _ => return None,
            };
            Some(Route::Tenant {
                tenant: (*tenant).to_owned(),
                read,
            })
        }
        _ => None,
    }
}

/// Why a read has no answer.
#[derive(Debug)]
pub enum Failure {
    BadParam(BadParam),
    NotFound,
    Database(ferry_shared::Error),
}

impl From<BadParam> for Failure {
    fn from(b: BadParam) -> Self {
        Failure::BadParam(b)
    }
}

impl From<ferry_shared::Error> for Failure {
    fn from(e: ferry_shared::Error) -> Self {
        Failure::Database(e)
    }
}

/// A read's JSON and how long a client may keep it.
#[derive(Debug)]
pub struct Answer {
    pub body: Value,
    pub max_age: u32,
}

/// How long an answer over `range` read at `grain` may be cached: one rollup tick (a minute)
/// while the range reaches into the last 5 minutes, whose events are still being rolled up;
/// one bucket of its grain (at most an hour) once it ended before that. A late event changes
/// a closed bucket too, and shows after at most that long.
fn max_age(range: Range, grain: Grain, now: DateTime<Utc>) -> u32 {
    if range.to <= now - Duration::minutes(5) {
        grain.seconds().min(3_600) as u32
    } else {
        60
    }
}

/// The finest grain the cover of `range` reads (its ragged edges).
fn finest(range: Range) -> Grain {
    let grains: Vec<i32> = queries::cover(range.from, range.to)
        .iter()
        .map(|c| c.0)
        .collect();
    match grains.iter().min() {
        Some(86_400) => Grain::Day,
        Some(3_600) => Grain::Hour,
        _ => Grain::FiveMinutes,
    }
}

/// The fields every range answer starts with.
fn header(tenant: &str, range: Range, grain: Grain) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("tenant".into(), json!(tenant));
    m.insert("from".into(), json!(range.from));
    m.insert("to".into(), json!(range.to));
    m.insert("grain".into(), json!(grain_name(grain)));
    m
}

fn with(mut m: serde_json::Map<String, Value>, key: &str, value: Value) -> Value {
    m.insert(key.into(), value);
    Value::Object(m)
}

/// The query-string parameters each read takes.
pub fn known_params(read: &Read) -> &'static [&'static str] {
    match read {
        Read::Events => &["from", "to", "grain", "type"],
        Read::EventsByType => &["from", "to", "grain"],
        Read::Visitors => &["from", "to", "type"],
        Read::TopPages | Read::TopProducts => &["from", "to", "limit", "offset"],
        Read::Revenue | Read::Sources => &["from", "to"],
        Read::Anomalies => &["since", "limit", "offset"],
        Read::RecentlyViewed(_) | Read::AlsoViewed(_) => &["limit"],
        Read::Product(_) | Read::Endpoints => &[],
    }
}

/// Answers a read of `tenant` (already authorised) with parameters `p`.
pub async fn read(
    pool: &PgPool,
    tenant: &str,
    read: &Read,
    p: &Params,
    now: DateTime<Utc>,
    cfg: &QueryConfig,
) -> Result<Answer, Failure> {
    match read {
        Read::Events | Read::EventsByType | Read::Visitors => {
            series(pool, tenant, read, p, now).await
        }
        Read::TopPages | Read::TopProducts | Read::Revenue | Read::Sources => {
            ranked(pool, tenant, read, p, now).await
        }
        Read::Anomalies => {
            let since = p.time("since")?.unwrap_or(now - Duration::days(7));
            let (limit, offset) = (p.limit(50)?, p.offset()?);
            let rows = queries::recent_anomalies_from(pool, tenant, since, limit, offset).await?;
            Ok(Answer {
                body: json!({"tenant": tenant, "since": since, "anomalies": rows}),
                max_age: 60,
            })
        }
        Read::Product(id) => match queries::product(pool, tenant, id).await? {
            Some(product) => Ok(Answer {
                body: json!({"tenant": tenant, "product": product}),
                max_age: 0,
            }),
            None => Err(Failure::NotFound),
        },
        Read::AlsoViewed(id) => {
            let limit = p.limit(10)?;
            let rows = queries::also_viewed(pool, tenant, id, limit).await?;
            Ok(Answer {
                body: json!({
                    "tenant": tenant,
                    "product_id": id,
                    "sample": queries::ALSO_VIEWED_SAMPLE,
                    "products": rows,
                }),
                max_age: 60,
            })
        }
        Read::RecentlyViewed(user) => {
            let limit = p.limit(10)?.min(i64::from(cfg.recently_viewed));
            let rows = queries::recently_viewed(pool, tenant, user, limit).await?;
            Ok(Answer {
                body: json!({"tenant": tenant, "user": user, "products": rows}),
                max_age: 0,
            })
        }
        Read::Endpoints => {
            let rows = queries::endpoint_health(pool, tenant).await?;
            Ok(Answer {
                body: json!({"tenant": tenant, "endpoints": rows}),
                max_age: 0,
            })
        }
    }
}

/// Time series and distinct counts.
async fn series(
    pool: &PgPool,
    tenant: &str,
    read: &Read,
    p: &Params,
    now: DateTime<Utc>,
) -> Result<Answer, Failure> {
    let range = p.range(now)?;
    if *read == Read::Visitors {
        let event_type = p.text("type")?;
        let grain = finest(range);
        let v = queries::visitors(pool, tenant, range.from, range.to, event_type).await?;
        let mut m = header(tenant, range, grain);
        m.insert("type".into(), json!(event_type));
        return Ok(Answer {
            body: with(m, "visitors", json!(v)),
            max_age: max_age(range, grain, now),
        });
    }
    let grain = p.grain(range)?;
    let m = header(tenant, range, grain);
    let body = if *read == Read::Events {
        let event_type = p.text("type")?.map(str::to_owned);
        let metric = Metric::Events {
            event_type: event_type.clone(),
        };
        let points =
            queries::time_series(pool, tenant, &metric, grain, range.from, range.to).await?;
        let mut m = m;
        m.insert("type".into(), json!(event_type));
        with(m, "points", json!(points))
    } else {
        let rows = queries::events_by_type(pool, tenant, grain, range.from, range.to).await?;
        let mut types: Vec<Value> = Vec::new();
        let mut current: Option<(String, Vec<Value>)> = None;
        for r in rows {
            if current.as_ref().is_some_and(|(t, _)| *t != r.event_type) {
                if let Some((t, points)) = current.take() {
                    types.push(json!({"type": t, "points": points}));
                }
            }
            let entry = current.get_or_insert_with(|| (r.event_type.clone(), Vec::new()));
            entry
                .1
                .push(json!({"bucket": r.bucket, "events": r.events}));
        }
        if let Some((t, points)) = current {
            types.push(json!({"type": t, "points": points}));
        }
        with(m, "types", Value::Array(types))
    };
    Ok(Answer {
        body,
        max_age: max_age(range, grain, now),
    })
}

/// Aggregates over a range: top lists, revenue, sources per day.
async fn ranked(
    pool: &PgPool,
    tenant: &str,
    read: &Read,
    p: &Params,
    now: DateTime<Utc>,
) -> Result<Answer, Failure> {
    let range = p.range(now)?;
    let (from, to) = (range.from, range.to);
    let (grain, key, rows) = match read {
        Read::TopPages => {
            let (limit, offset) = (p.limit(10)?, p.offset()?);
            let rows = queries::top_pages_from(pool, tenant, from, to, limit, offset).await?;
            (finest(range), "pages", json!(rows))
        }
        Read::TopProducts => {
            let (limit, offset) = (p.limit(10)?, p.offset()?);
            let rows = queries::top_products_from(pool, tenant, from, to, limit, offset).await?;
            (finest(range), "products", json!(rows))
        }
        Read::Revenue => {
            let rows = queries::revenue(pool, tenant, from, to).await?;
            (finest(range), "currencies", json!(rows))
        }
        _ => {
            let rows = queries::source_days(pool, tenant, from, to).await?;
            (Grain::Day, "days", json!(rows))
        }
    };
    Ok(Answer {
        body: with(header(tenant, range, grain), key, rows),
        max_age: max_age(range, grain, now),
    })
}

/// The API's OpenAPI 3.1 document (`functions/query/api/openapi.json`, checked against the
/// router by the tests below and against the running server by schemathesis).
pub const OPENAPI: &str = include_str!("../api/openapi.json");

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path of the document is a route of the router with the parameters it documents,
    /// and every route is in the document.
    #[test]
    fn the_openapi_document_describes_every_route_and_parameter() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut reads = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let concrete: Vec<String> = segs(path)
                .into_iter()
                .map(|s| {
                    if s.starts_with('{') {
                        "x".to_owned()
                    } else {
                        s
                    }
                })
                .collect();
            let route = route(&concrete).unwrap_or_else(|| panic!("{path} is not routed"));
            let documented: Vec<&str> = item["get"]["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "query")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            match route {
                Route::Tenant { read, .. } => {
                    let mut known = known_params(&read).to_vec();
                    let mut documented = documented.clone();
                    known.sort_unstable();
                    documented.sort_unstable();
                    assert_eq!(known, documented, "{path}");
                    assert!(item["get"]["responses"]["401"].is_object(), "{path}");
                    assert!(item["get"]["responses"]["404"].is_object(), "{path}");
                    reads.push(std::mem::discriminant(&read));
                }
                Route::Health | Route::OpenApi | Route::WhoAmI => assert!(documented.is_empty()),
            }
        }
        let every = [
            Read::Events,
            Read::EventsByType,
            Read::Visitors,
            Read::TopPages,
            Read::TopProducts,
            Read::Product(String::new()),
            Read::AlsoViewed(String::new()),
            Read::Revenue,
            Read::Sources,
            Read::Anomalies,
            Read::RecentlyViewed(String::new()),
            Read::Endpoints,
        ];
        for read in &every {
            assert!(
                reads.contains(&std::mem::discriminant(read)),
                "{read:?} is not documented"
            );
        }
    }

    fn segs(path: &str) -> Vec<String> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn paths_name_their_routes() {
        assert_eq!(route(&segs("/v1/health")), Some(Route::Health));
        assert_eq!(
            route(&segs("/v1/tenants/acme/products/sku-1")),
            Some(Route::Tenant {
                tenant: "acme".into(),
                read: Read::Product("sku-1".into())
            })
        );
        assert_eq!(
            route(&segs("/v1/tenants/acme/products/top")),
            Some(Route::Tenant {
                tenant: "acme".into(),
                read: Read::TopProducts
            })
        );
        assert_eq!(route(&segs("/v1/tenants/acme")), None);
        assert_eq!(route(&segs("/v1/tenants/acme/events/x")), None);
        assert_eq!(route(&segs("/v2/health")), None);
    }

    #[test]
    fn closed_ranges_are_cached_longer() {
        let now = Utc::now();
        let old = Range {
            from: now - Duration::days(3),
            to: now - Duration::days(2),
        };
        let open = Range {
            from: now - Duration::hours(1),
            to: now - Duration::minutes(2),
        };
        assert_eq!(max_age(old, Grain::FiveMinutes, now), 300);
        assert_eq!(max_age(old, Grain::Day, now), 3_600);
        assert_eq!(max_age(open, Grain::Day, now), 60);
    }
}
