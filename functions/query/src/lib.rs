//! The query function: ferry's read side over HTTP. One warp router serves the `/v1` JSON API
//! on every platform (Lambda through `lambda_http`, Azure as a custom handler with forwarded
//! HTTP requests, locally as `ferry serve`).
//!
//! A request passes, in order: the method (GET, or a CORS preflight), the route (unknown paths
//! 404 before anything else), the key (401), the tenant (a tenant the key does not read
//! answers the same 404 as one that does not exist), the parameters (400 naming the
//! parameter), then the read. A database that cannot be reached answers 503 with
//! `Retry-After`. Answers carry `Cache-Control` from the grain they read and an `ETag`.

pub mod api;
pub mod keys;
pub mod params;
mod reply;

use std::convert::Infallible;
use std::sync::Arc;

use ferry_shared::config::{bad, ConfigError, Env};
use ferry_shared::Config;
use sqlx::PgPool;
use tracing::{debug, info, warn};
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, Method};
use warp::reply::Response;
use warp::Filter;

use crate::api::{Failure, Route};
use crate::keys::{Principal, Refusal};
use crate::params::Params;
pub use crate::reply::Problem;

/// Longest query string served (longer: 414).
pub const MAX_QUERY_BYTES: usize = 2_048;

/// Settings of the query function (environment variables: docs/configuration.md).
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Origins a browser may call the API from (`FERRY_QUERY_CORS_ORIGINS`, comma-separated;
    /// `*` for any). Empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Time limit of one read (`FERRY_QUERY_STATEMENT_TIMEOUT`), in place of
    /// `FERRY_DB_STATEMENT_TIMEOUT`: a person is waiting, and the platform's own limit (30 s
    /// on the Lambda the Terraform module deploys) must not cut the answer first.
    pub statement_timeout: std::time::Duration,
    /// Products a recently-viewed read returns at most: the loader's `FERRY_RECENTLY_VIEWED`
    /// (taken from the shared configuration by [`Query::from_config`]). Between trims a list
    /// also holds some older products (migration 0020); a read never shows them.
    pub recently_viewed: u32,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            cors_origins: Vec::new(),
            statement_timeout: std::time::Duration::from_secs(10),
            recently_viewed: 20,
        }
    }
}

impl QueryConfig {
    /// Reads the query function's settings.
    pub fn from_env(env: &Env) -> Result<QueryConfig, ConfigError> {
        let mut cors_origins = Vec::new();
        for origin in env
            .get("FERRY_QUERY_CORS_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            let ok = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.ends_with('/'));
            if !ok {
                return Err(bad(
                    "FERRY_QUERY_CORS_ORIGINS",
                    origin,
                    "each origin is scheme://host[:port] (no path, no trailing /) or *",
                ));
            }
            cors_origins.push(origin.to_owned());
        }
        let d = QueryConfig::default();
        let statement_timeout =
            env.duration("FERRY_QUERY_STATEMENT_TIMEOUT", d.statement_timeout)?;
        if statement_timeout.is_zero() {
            return Err(bad(
                "FERRY_QUERY_STATEMENT_TIMEOUT",
                "0s",
                "must be more than 0 (a read without a limit could hold a connection for ever)",
            ));
        }
        Ok(QueryConfig {
            cors_origins,
            statement_timeout,
            ..QueryConfig::default()
        })
    }
}

/// The query function: a pool and its settings.
pub struct Query {
    pool: PgPool,
    cfg: QueryConfig,
    name: String,
}

impl Query {
    /// Builds the function from the environment (the pool connects lazily).
    pub fn from_config(cfg: &Config, mut qcfg: QueryConfig) -> anyhow::Result<Query> {
        qcfg.recently_viewed = cfg.recently_viewed;
        let name = cfg.function_name.clone().unwrap_or_else(|| "query".into());
        let mut db = cfg.db.clone();
        db.statement_timeout = qcfg.statement_timeout;
        let pool = ferry_shared::db::pool(&db, cfg.database_url()?, &name)?;
        Ok(Query::with_pool(qcfg, pool, &name))
    }

    pub fn with_pool(cfg: QueryConfig, pool: PgPool, name: &str) -> Query {
        Query {
            pool,
            cfg,
            name: name.to_owned(),
        }
    }

    /// The function's name (FERRY_FUNCTION_NAME, default `query`).
    pub fn function(&self) -> &str {
        &self.name
    }

    /// The router: every request, whatever its method or path, gets an answer from here.
    pub fn routes(self) -> BoxedFilter<(Response,)> {
        let query = Arc::new(self);
        let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();
        warp::method()
            .and(warp::path::full())
            .and(raw_query)
            .and(warp::header::headers_cloned())
            .and_then(
                move |method: Method,
                      path: warp::path::FullPath,
                      raw: String,
                      headers: HeaderMap| {
                    let query = Arc::clone(&query);
                    async move {
                        let started = std::time::Instant::now();
                        let response = query.handle(&method, path.as_str(), &raw, &headers).await;
                        debug!(
                            %method,
                            path = path.as_str(),
                            status = response.status().as_u16(),
                            ms = started.elapsed().as_secs_f64() * 1e3,
                            "request"
                        );
                        Ok::<_, Infallible>(response)
                    }
                },
            )
            .boxed()
    }

    /// One request's answer.
    pub async fn handle(
        &self,
        method: &Method,
        path: &str,
        raw_query: &str,
        headers: &HeaderMap,
    ) -> Response {
        let origin = reply::allowed_origin(&self.cfg.cors_origins, headers);
        if *method == Method::OPTIONS {
            return reply::preflight(origin.as_deref());
        }
        let readable = *method == Method::GET || *method == Method::HEAD;
        let mut response = if !readable {
            Problem::MethodNotAllowed.response()
        } else if let Some(page) = reply::dashboard_file(path, headers) {
            page
        } else if raw_query.len() > MAX_QUERY_BYTES {
            Problem::QueryTooLong.response()
        } else {
            match self.answer(path, raw_query, headers).await {
                Ok(a) => reply::json(&a, headers),
                Err(problem) => problem.response(),
            }
        };
        reply::cors(&mut response, origin.as_deref());
        if *method == Method::HEAD {
            *response.body_mut() = warp::hyper::body::Bytes::new().into();
        }
        response
    }

    async fn answer(
        &self,
        path: &str,
        raw_query: &str,
        headers: &HeaderMap,
    ) -> Result<api::Answer, Problem> {
        let segments = reply::segments(path).ok_or(Problem::NotFound)?;
        let route = api::route(&segments).ok_or(Problem::NotFound)?;
        let (tenant, read) = match route {
            Route::Health => return self.health(raw_query).await,
            Route::OpenApi => return openapi(raw_query),
            Route::WhoAmI => {
                let principal = self.principal(headers).await?;
                Params::parse(raw_query, &[])?;
                return self.whoami(&principal).await;
            }
            Route::Tenant { tenant, read } => (tenant, read),
        };
        let principal = self.principal(headers).await?;
        if !self.reads(&principal, &tenant).await? {
            info!(?principal, "a key asked for a tenant it does not read");
            return Err(Problem::NotFound);
        }
        let params = Params::parse(raw_query, api::known_params(&read))?;
        api::read(
            &self.pool,
            &tenant,
            &read,
            &params,
            chrono::Utc::now(),
            &self.cfg,
        )
        .await
        .map_err(|f| match f {
            Failure::BadParam(b) => Problem::BadParam(b),
            Failure::NotFound => Problem::NotFound,
            Failure::Database(e) => Problem::from_db(e),
        })
    }

    /// Who the request's key speaks for; 401 (logged without the key) when nobody.
    async fn principal(&self, headers: &HeaderMap) -> Result<Principal, Problem> {
        let authorization = headers
            .get(warp::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match keys::authenticate(&self.pool, authorization).await {
            Ok(p) => Ok(p),
            Err(Refusal::Database(e)) => Err(Problem::from_db(e)),
            Err(refusal) => {
                // Never the key itself: at most its id.
                match refusal {
                    Refusal::Missing => debug!(%refusal, "request without a key"),
                    Refusal::Malformed => info!(%refusal, "request refused"),
                    _ => warn!(%refusal, "API key refused"),
                }
                Err(Problem::Unauthorized)
            }
        }
    }

    /// `GET /v1/whoami`.
    async fn whoami(&self, principal: &Principal) -> Result<api::Answer, Problem> {
        let body = match principal {
            Principal::Tenant(t) => serde_json::json!({"tenant": t}),
            Principal::Admin => {
                let tenants: Vec<String> = ferry_shared::db::list_tenants(&self.pool)
                    .await
                    .map_err(Problem::from_db)?
                    .into_iter()
                    .map(|t| t.tenant_id)
                    .collect();
                serde_json::json!({"admin": true, "tenants": tenants})
            }
        };
        Ok(api::Answer { body, max_age: 0 })
    }

    /// True when `principal` reads `tenant` and the tenant exists.
    async fn reads(&self, principal: &Principal, tenant: &str) -> Result<bool, Problem> {
        match principal {
            Principal::Tenant(t) => Ok(t == tenant),
            Principal::Admin => ferry_shared::queries::tenant_exists(&self.pool, tenant)
                .await
                .map_err(Problem::from_db),
        }
    }

    async fn health(&self, raw_query: &str) -> Result<api::Answer, Problem> {
        Params::parse(raw_query, &[])?;
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| Problem::from_db(e.into()))?;
        Ok(api::Answer {
            body: serde_json::json!({"status": "ok"}),
            max_age: 0,
        })
    }
}

/// `GET /v1/openapi.json`.
fn openapi(raw_query: &str) -> Result<api::Answer, Problem> {
    static DOC: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        serde_json::from_str(api::OPENAPI).unwrap_or_else(
            |e| serde_json::json!({"error": format!("the embedded document is not JSON: {e}")}),
        )
    });
    Params::parse(raw_query, &[])?;
    Ok(api::Answer {
        body: DOC.clone(),
        max_age: 300,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn settings_are_read_and_checked() {
        let env = |pairs: &[(&str, &str)]| Env::from_pairs(pairs.iter().copied());
        let d = QueryConfig::from_env(&env(&[])).unwrap();
        assert!(d.cors_origins.is_empty());
        assert_eq!(d.statement_timeout, std::time::Duration::from_secs(10));
        let c = QueryConfig::from_env(&env(&[
            (
                "FERRY_QUERY_CORS_ORIGINS",
                "https://shop.example, http://localhost:3000",
            ),
            ("FERRY_QUERY_STATEMENT_TIMEOUT", "3s"),
        ]))
        .unwrap();
        assert_eq!(
            c.cors_origins,
            ["https://shop.example", "http://localhost:3000"]
        );
        assert_eq!(c.statement_timeout, std::time::Duration::from_secs(3));
        for (var, value) in [
            ("FERRY_QUERY_CORS_ORIGINS", "shop.example"),
            ("FERRY_QUERY_CORS_ORIGINS", "https://shop.example/"),
            ("FERRY_QUERY_STATEMENT_TIMEOUT", "0s"),
        ] {
            let e = QueryConfig::from_env(&env(&[(var, value)])).unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
    }

    /// Random request lines built from the pieces that matter (separators, escapes, route and
    /// parameter names, extreme numbers, odd bytes): whatever the client sends, routing and
    /// parameter checks answer, never panic.
    #[test]
    fn no_request_line_panics_the_router_or_the_parameter_checks() {
        const PIECES: &[&str] = &[
            "/",
            "//",
            "%",
            "%F",
            "%FF",
            "%2F",
            "%00",
            "v1",
            "tenants",
            "acme",
            "events",
            "by-type",
            "products",
            "top",
            "users",
            "also-viewed",
            "recently-viewed",
            "?",
            "&",
            "=",
            "==",
            "from",
            "to",
            "grain",
            "5m",
            "1d",
            "limit",
            "offset",
            "type",
            "since",
            "-1",
            "0",
            "99999999999999999999",
            "2026-11-20",
            "2026-02-30",
            "T08:00:00Z",
            "+01:00",
            "+",
            "é",
            "\u{0}",
            " ",
            "..",
            "\u{feff}",
            "9999-12-31T23:59:60Z",
            "-262143-01-01",
            "10000-01-01",
            "0000-01-01",
        ];
        let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
        let piece = |rng: &mut rand::rngs::SmallRng| PIECES[rng.random_range(0..PIECES.len())];
        let now = chrono::Utc::now();
        for _ in 0..50_000 {
            let path: String = (0..rng.random_range(0..9))
                .map(|_| piece(&mut rng))
                .collect();
            let query: String = (0..rng.random_range(0..9))
                .map(|_| piece(&mut rng))
                .collect();
            if let Some(segments) = reply::segments(&path) {
                if let Some(Route::Tenant { read, .. }) = api::route(&segments) {
                    let _ = Params::parse(&query, api::known_params(&read));
                }
            }
            let known = ["from", "to", "grain", "type", "limit", "offset", "since"];
            if let Ok(p) = Params::parse(&query, &known) {
                if let Ok(range) = p.range(now) {
                    assert!(range.to > range.from);
                    let _ = p.grain(range);
                }
                let _ = (p.limit(10), p.offset(), p.text("type"), p.time("since"));
            }
        }
    }
}
