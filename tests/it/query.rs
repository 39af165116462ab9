//! The real `query` binary over real HTTP on loopback (Azure custom-handler mode, where the
//! host forwards requests as they are; and Lambda mode through a loopback Runtime API), on
//! data loaded by the real ingest handler and rolled up by the real rollup: answers equal what
//! `ferry_shared::queries` reads, keys read only their tenant, bad input gets a JSON error
//! naming the parameter, and a database that is down answers 503 with `Retry-After`.

use std::io::Read;
use std::time::Duration as StdDuration;

use crate::harness::{
    bin, config, ingest_db, message, spawn_azure, spawn_function, unreachable_database_url,
    RuntimeApi, TestDb,
};
use chrono::{DateTime, Duration, DurationRound, Utc};
use ferry_query::keys;
use ferry_rollup::{Rollup, RollupConfig};
use ferry_shared::queries;
use ferry_shared::QueueBatch;
use serde_json::{json, Value};

/// A served database: tenants `acme` and `beta` with events rolled up, a key for each, an
/// operator key, and the query binary answering at `base`.
struct Served {
    db: TestDb,
    base: String,
    acme: String,
    beta: String,
    admin: String,
    /// `[from, to)` covering every event, as query parameters.
    range: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    _function: tokio::process::Child,
}

fn ev(tenant: &str, id: &str, ty: &str, at: DateTime<Utc>, user: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "/shop", "type": ty,
        "time": at.to_rfc3339(), "tenantid": tenant, "userid": user,
        "sessionid": format!("s-{user}"), "data": data,
    })
}

/// acme: 30 page views over 3 pages by 6 users, 12 product views of 4 products, 3 purchases
/// (2 EUR, 1 USD) and one product created; beta: 5 page views. Every event in the hour
/// that starts 3 hours ago.
fn events(t0: DateTime<Utc>) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..30 {
        let at = t0 + Duration::seconds(i * 100);
        let page = format!("/page/{}", i % 3);
        out.push(ev(
            "acme",
            &format!("pv-{i}"),
            "page.viewed",
            at,
            &format!("u{}", i % 6),
            json!({"path": page}),
        ));
    }
    for i in 0..12 {
        let at = t0 + Duration::seconds(i * 60 + 30);
        let sku = format!("sku-{}", i % 4);
        out.push(ev(
            "acme",
            &format!("prv-{i}"),
            "product.viewed",
            at,
            &format!("u{}", i % 3),
            json!({"sku": sku}),
        ));
    }
    for (i, (cents, cur)) in [(1_000, "EUR"), (250, "EUR"), (700, "USD")]
        .iter()
        .enumerate()
    {
        let at = t0 + Duration::seconds(i as i64 * 300 + 10);
        out.push(ev(
            "acme",
            &format!("pay-{i}"),
            "payment.captured",
            at,
            "u1",
            json!({"sku": "sku-0", "amount_cents": cents, "currency": cur}),
        ));
    }
    out.push(ev(
        "acme",
        "new-sku-0",
        "product.created",
        t0,
        "u0",
        json!({"sku": "sku-0", "name": "Kettle", "price": 4200}),
    ));
    for i in 0..5 {
        let at = t0 + Duration::seconds(i * 100);
        out.push(ev(
            "beta",
            &format!("b-pv-{i}"),
            "page.viewed",
            at,
            "b1",
            json!({"path": "/beta"}),
        ));
    }
    out
}

async fn served_with(env: &[(&str, &str)]) -> Served {
    let (db, ingest) = ingest_db(&[]).await;
    let t0 = Utc::now().duration_trunc(Duration::hours(1)).unwrap() - Duration::hours(3);
    let batch = QueueBatch {
        messages: events(t0)
            .iter()
            .map(|e| message(e["id"].as_str().unwrap(), e.to_string()))
            .collect(),
    };
    let report = ingest.process(&batch).await;
    assert!(report.failed.is_empty(), "{report:?}");
    let mut rcfg = RollupConfig::default();
    rcfg.anomaly.grace = StdDuration::ZERO;
    Rollup::with_pool(&config(&[]), rcfg, db.pool.clone(), "rollup")
        .catch_up()
        .await
        .unwrap();
    let acme = keys::issue(&db.pool, Some("acme"), "test")
        .await
        .unwrap()
        .token;
    let beta = keys::issue(&db.pool, Some("beta"), "test")
        .await
        .unwrap()
        .token;
    let admin = keys::issue(&db.pool, None, "operator").await.unwrap().token;
    let (function, base) = spawn_azure("query", &db.url, env).await;
    let (from, to) = (t0, t0 + Duration::hours(1));
    let range = format!(
        "from={}&to={}",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    Served {
        db,
        base,
        acme,
        beta,
        admin,
        range,
        from,
        to,
        _function: function,
    }
}

async fn served() -> Served {
    served_with(&[]).await
}

/// GET `path` with `key`; the status and the JSON body.
async fn get(
    base: &str,
    path: &str,
    key: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    };
    (status, body, headers)
}

/// Between trims a list also holds older products (migration 0020): a recently-viewed read
/// shows the newest `FERRY_RECENTLY_VIEWED` (here 5) at most, however many are asked for.
#[tokio::test]
async fn a_recently_viewed_read_shows_at_most_the_configured_number_of_products() {
    let s = served_with(&[("FERRY_RECENTLY_VIEWED", "5")]).await;
    sqlx::query(
        "INSERT INTO recently_viewed (tenant_id, user_id, product_id, viewed_at)
         SELECT 'acme', 'w1', 'sku-w' || k, now() - k * interval '1 s'
         FROM generate_series(0, 29) k",
    )
    .execute(&s.db.pool)
    .await
    .unwrap();
    for (limit, shown) in [(100, 5), (3, 3)] {
        let (st, body, _) = get(
            &s.base,
            &format!("/v1/tenants/acme/users/w1/recently-viewed?limit={limit}"),
            Some(&s.acme),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        let listed: Vec<&str> = body["products"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["product_id"].as_str().unwrap())
            .collect();
        let want: Vec<String> = (0..shown).map(|k| format!("sku-w{k}")).collect();
        assert_eq!(listed, want, "limit {limit}");
    }
}

#[tokio::test]
async fn answers_equal_the_rollups_and_say_which_grain_they_read() {
    let s = served().await;
    let (pool, r) = (&s.db.pool, &s.range);

    let (st, body, h) = get(
        &s.base,
        &format!("/v1/tenants/acme/events?{r}"),
        Some(&s.acme),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["grain"], "5m");
    assert_eq!(h["cache-control"], "private, max-age=300");
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 12);
    let total: f64 = points.iter().map(|p| p["value"].as_f64().unwrap()).sum();
    assert_eq!(
        total, 46.0,
        "30 page views, 12 product views, 3 payments, 1 product created"
    );

    let (_, body, _) = get(
        &s.base,
        &format!("/v1/tenants/acme/events?{r}&grain=1h&type=page.viewed"),
        Some(&s.acme),
    )
    .await;
    assert_eq!(
        (body["grain"].as_str(), body["type"].as_str()),
        (Some("1h"), Some("page.viewed"))
    );
    assert_eq!(body["points"], json!([{"bucket": s.from, "value": 30.0}]));

    let (_, body, _) = get(
        &s.base,
        &format!("/v1/tenants/acme/events/by-type?{r}&grain=1h"),
        Some(&s.acme),
    )
    .await;
    let by_type: Vec<(String, i64)> = body["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["type"].as_str().unwrap().to_owned(),
                t["points"][0]["events"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_type,
        [
            ("page.viewed", 30),
            ("payment.captured", 3),
            ("product.created", 1),
            ("product.viewed", 12)
        ]
        .map(|(t, n)| (t.to_owned(), n))
    );

    let (_, body, _) = get(
        &s.base,
        &format!("/v1/tenants/acme/visitors?{r}"),
        Some(&s.acme),
    )
    .await;
    assert_eq!(body["grain"], "1h", "a whole hour reads the hourly rows");
    assert_eq!(body["visitors"], json!({"users": 6.0, "sessions": 6.0}));

    let (_, body, _) = get(
        &s.base,
        &format!("/v1/tenants/acme/pages/top?{r}&limit=2"),
        Some(&s.acme),
    )
    .await;
    let want = queries::top_pages(pool, "acme", s.from, s.to, 2)
        .await
        .unwrap();
    assert_eq!(body["pages"], serde_json::to_value(&want).unwrap());
    assert_eq!(body["pages"].as_array().unwrap().len(), 2);
    let (_, page2, _) = get(
        &s.base,
        &format!("/v1/tenants/acme/pages/top?{r}&limit=2&offset=2"),
        Some(&s.acme),
    )
    .await;
    assert_eq!(
        page2["pages"].as_array().unwrap().len(),
        1,
        "3 pages: the second page holds the third"
    );

    let (_, body, _) = get(
        &s.base,
        &format!("/v1/tenants/acme/products/top?{r}"),
        Some(&s.acme),
    )
    .await;
    assert_eq!(
        body["products"][0],
        json!({"product": "sku-0", "views": 3, "cart_adds": 0, "purchases": 3})
    );
    assert_eq!(body["products"].as_array().unwrap().len(), 4);

    let (_, body, _) = get(
        &s.base,
        &format!("/v1/tenants/acme/revenue?{r}"),
        Some(&s.acme),
    )
    .await;
    let net: Vec<(String, f64)> = body["currencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["currency"].as_str().unwrap().to_owned(),
                c["net"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        net,
        [("EUR".to_owned(), 1_250.0), ("USD".to_owned(), 700.0)]
    );

    let (_, body, _) = get(
        &s.base,
        &format!("/v1/tenants/acme/sources?{r}"),
        Some(&s.acme),
    )
    .await;
    assert_eq!(body["grain"], "1d");
    let want = queries::source_days(pool, "acme", s.from, s.to)
        .await
        .unwrap();
    assert_eq!(body["days"], serde_json::to_value(&want).unwrap());
    assert!(!want.is_empty());

    let (_, body, _) = get(
        &s.base,
        "/v1/tenants/acme/users/u1/recently-viewed",
        Some(&s.acme),
    )
    .await;
    let want = queries::recently_viewed(pool, "acme", "u1", 10)
        .await
        .unwrap();
    assert_eq!(body["products"], serde_json::to_value(&want).unwrap());
    assert_eq!(want.len(), 4, "u1 viewed every product");

    let (st, body, _) = get(&s.base, "/v1/tenants/acme/products/sku-0", Some(&s.acme)).await;
    assert_eq!(st, 200);
    assert_eq!(
        body["product"]["state"],
        json!({"sku": "sku-0", "name": "Kettle", "price": 4200})
    );
    let (st, _, _) = get(&s.base, "/v1/tenants/acme/products/sku-404", Some(&s.acme)).await;
    assert_eq!(st, 404);

    // Also viewed reads the sixteenth of users whose id's md5 starts with 0 (v6 and v24 are;
    // u0..u5, who viewed sku-1 with the ingested events, are not). v6 viewed sku-1 and sku-2,
    // v24 sku-1, sku-3 and sku-2.
    for (user, product) in [
        ("v6", "sku-1"),
        ("v6", "sku-2"),
        ("v24", "sku-1"),
        ("v24", "sku-3"),
        ("v24", "sku-2"),
    ] {
        sqlx::query(
            "INSERT INTO recently_viewed (tenant_id, user_id, product_id, viewed_at)
             VALUES ('acme', $1, $2, now())",
        )
        .bind(user)
        .bind(product)
        .execute(pool)
        .await
        .unwrap();
    }
    let (st, body, _) = get(
        &s.base,
        "/v1/tenants/acme/products/sku-1/also-viewed",
        Some(&s.acme),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body["products"],
        json!([{"product_id": "sku-2", "users": 2}, {"product_id": "sku-3", "users": 1}])
    );
    let unsampled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recently_viewed WHERE product_id = 'sku-1' AND user_id LIKE 'u%'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(
        unsampled > 0,
        "users outside the sample viewed sku-1 too, and are not counted"
    );

    // Findings, newest bucket first, paginated.
    for (i, kind) in ["spike", "drop", "spike"].iter().enumerate() {
        sqlx::query(
            "INSERT INTO anomalies (tenant_id, metric, grain, bucket, kind, value, baseline, score, method)
             VALUES ('acme', 'events', 300, now() - make_interval(mins => $1), $2, 10, 2, 4.5, 'robust_z')",
        )
        .bind(10 * (i as i32 + 1))
        .bind(kind)
        .execute(pool)
        .await
        .unwrap();
    }
    let (st, body, _) = get(&s.base, "/v1/tenants/acme/anomalies?limit=2", Some(&s.acme)).await;
    assert_eq!(st, 200, "{body}");
    let kinds: Vec<&str> = body["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["spike", "drop"], "newest bucket first");
    let (_, body, _) = get(
        &s.base,
        "/v1/tenants/acme/anomalies?limit=2&offset=2",
        Some(&s.acme),
    )
    .await;
    assert_eq!(body["anomalies"].as_array().unwrap().len(), 1);
    let (_, body, _) = get(&s.base, "/v1/tenants/beta/anomalies", Some(&s.beta)).await;
    assert_eq!(body["anomalies"], json!([]), "acme's findings are acme's");

    // HEAD: the headers of GET, no body.
    let r = reqwest::Client::new()
        .head(format!("{}/v1/tenants/acme/events?{r}", s.base))
        .bearer_auth(&s.acme)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().contains_key("etag"));
    assert!(r.bytes().await.unwrap().is_empty());
    let (st, body, _) = get(&s.base, "/v1/tenants/acme/endpoints", Some(&s.acme)).await;
    assert_eq!((st, body["endpoints"].clone()), (200, json!([])));

    // What a key reads, for the dashboard.
    let (_, body, _) = get(&s.base, "/v1/whoami", Some(&s.acme)).await;
    assert_eq!(body, json!({"tenant": "acme"}));
    let (_, body, _) = get(&s.base, "/v1/whoami", Some(&s.admin)).await;
    assert_eq!(body, json!({"admin": true, "tenants": ["acme", "beta"]}));
    // The dashboard's files need no key and may only talk to this server.
    let r = reqwest::get(format!("{}/", s.base)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("connect-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(r.text().await.unwrap().contains("dashboard.js"));
}

#[tokio::test]
async fn endpoint_health_counts_deliveries_and_hides_the_query_string() {
    let s = served().await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO endpoints (tenant_id, url, event_types, failing_since, last_failure_at)
         VALUES ('acme', 'https://user:pa55@partner.example/hook?token=s3cret', '{product.*}', now(), now())
         RETURNING endpoint_id",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    for (i, (status, error)) in [
        ("delivered", None),
        ("failed", Some("HTTP 500")),
        ("pending", Some("timed out")),
    ]
    .iter()
    .enumerate()
    {
        sqlx::query("INSERT INTO webhook_messages (message_id, tenant_id, event_type, body) VALUES ($1, 'acme', 'product.updated', '{}')")
            .bind(format!("m{i}")).execute(&s.db.pool).await.unwrap();
        sqlx::query("INSERT INTO deliveries (message_id, endpoint_id, tenant_id, status, last_error, created_at)
                     VALUES ($1, $2, 'acme', $3, $4, now() - make_interval(secs => $5))")
            .bind(format!("m{i}")).bind(id).bind(status).bind(error).bind(100.0 - i as f64)
            .execute(&s.db.pool).await.unwrap();
    }
    let (st, body, _) = get(&s.base, "/v1/tenants/acme/endpoints", Some(&s.acme)).await;
    assert_eq!(st, 200, "{body}");
    let e = &body["endpoints"][0];
    assert_eq!(e["url"], "https://partner.example/hook");
    assert!(!body.to_string().contains("s3cret") && !body.to_string().contains("pa55"));
    assert_eq!(
        (
            e["pending"].as_i64(),
            e["delivered"].as_i64(),
            e["failed"].as_i64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(e["last_error"], "timed out", "the newest error");
    assert!(e["failing_since"].is_string());
    // A failure of yesterday is not the last hour's; with no error in the last hour, the newest
    // error of the waiting deliveries is what shows.
    sqlx::query("INSERT INTO webhook_messages (message_id, tenant_id, event_type, body) VALUES ('old', 'acme', 'product.updated', '{}')")
        .execute(&s.db.pool).await.unwrap();
    sqlx::query("INSERT INTO deliveries (message_id, endpoint_id, tenant_id, status, last_error, created_at)
                 VALUES ('old', $1, 'acme', 'failed', 'HTTP 502', now() - interval '1 day')")
        .bind(id).execute(&s.db.pool).await.unwrap();
    sqlx::query(
        "UPDATE deliveries SET created_at = now() - interval '2 hours' WHERE status = 'pending'",
    )
    .execute(&s.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE deliveries SET last_error = NULL WHERE status = 'failed' AND message_id = 'm1'",
    )
    .execute(&s.db.pool)
    .await
    .unwrap();
    let (_, body, _) = get(&s.base, "/v1/tenants/acme/endpoints", Some(&s.acme)).await;
    let e = &body["endpoints"][0];
    assert_eq!(
        (e["pending"].as_i64(), e["failed"].as_i64()),
        (Some(1), Some(1)),
        "{e}"
    );
    assert_eq!(e["last_error"], "timed out", "the waiting delivery's error");
    // beta sees none of it.
    let (_, body, _) = get(&s.base, "/v1/tenants/beta/endpoints", Some(&s.beta)).await;
    assert_eq!(body["endpoints"], json!([]));
}

/// Every tenant route, with `{t}` for the tenant.
const TENANT_ROUTES: &[&str] = &[
    "/v1/tenants/{t}/events",
    "/v1/tenants/{t}/events/by-type",
    "/v1/tenants/{t}/visitors",
    "/v1/tenants/{t}/pages/top",
    "/v1/tenants/{t}/products/top",
    "/v1/tenants/{t}/products/sku-0",
    "/v1/tenants/{t}/products/sku-0/also-viewed",
    "/v1/tenants/{t}/revenue",
    "/v1/tenants/{t}/sources",
    "/v1/tenants/{t}/anomalies",
    "/v1/tenants/{t}/users/u1/recently-viewed",
    "/v1/tenants/{t}/endpoints",
];

#[tokio::test]
async fn a_key_reads_its_tenant_only_and_another_tenant_looks_like_none() {
    let s = served().await;
    let (_, nothing, _) = get(&s.base, "/v1/no/such/route", Some(&s.acme)).await;
    assert_eq!(nothing["error"]["code"], "not_found");
    for route in TENANT_ROUTES {
        let own = route.replace("{t}", "acme");
        let (st, _, _) = get(&s.base, &own, Some(&s.acme)).await;
        assert_eq!(st, 200, "{own}");
        // beta's key on acme's data, and on a tenant that does not exist: the same 404, with
        // the same body as an unknown route.
        let (st, body, h) = get(&s.base, &own, Some(&s.beta)).await;
        assert_eq!((st, &body), (404, &nothing), "{own}");
        assert!(h.get("etag").is_none());
        let (st, body, _) = get(&s.base, &route.replace("{t}", "nobody"), Some(&s.beta)).await;
        assert_eq!((st, &body), (404, &nothing), "{route}");
        // Bad parameters do not tell a foreign tenant apart either.
        let (st, _, _) = get(&s.base, &format!("{own}?from=x"), Some(&s.beta)).await;
        assert_eq!(st, 404, "{own}");
        // The operator key reads every tenant that exists.
        let (st, _, _) = get(&s.base, &own, Some(&s.admin)).await;
        assert_eq!(st, 200, "{own}");
        let (st, _, _) = get(&s.base, &route.replace("{t}", "nobody"), Some(&s.admin)).await;
        assert_eq!(st, 404, "{route}");
    }
    // beta's own data is beta's only.
    let (_, body, _) = get(
        &s.base,
        &format!("/v1/tenants/beta/events?{}&grain=1h", s.range),
        Some(&s.beta),
    )
    .await;
    assert_eq!(body["points"], json!([{"bucket": s.from, "value": 5.0}]));
}

#[tokio::test]
async fn requests_without_a_good_key_are_refused_and_keys_are_stored_hashed() {
    let s = served().await;
    let path = "/v1/tenants/acme/events";
    let (st, body, h) = get(&s.base, path, None).await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(h["www-authenticate"], "Bearer realm=\"ferry\"");
    let wrong_secret = format!("{}{}", &s.acme[..16], "a".repeat(32));
    let unknown_id = format!("fy_live_{}", "b".repeat(40));
    for key in [
        "not-a-key",
        "fy_live_short",
        wrong_secret.as_str(),
        unknown_id.as_str(),
    ] {
        let (st, _, _) = get(&s.base, path, Some(key)).await;
        assert_eq!(st, 401, "{key}");
    }

    // `ferry apikey` issues a key shown once, lists it without its secret, and revokes it.
    let ferry = |args: &[&str]| {
        let out = std::process::Command::new(bin("ferry"))
            .args(args)
            .env("DATABASE_URL", &s.db.url)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = ferry(&["apikey", "add", "acme", "--name", "shop front end"]);
    let key = shown
        .lines()
        .find(|l| l.starts_with("fy_live_"))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(key.len(), 48);
    let (st, _, _) = get(&s.base, path, Some(&key)).await;
    assert_eq!(st, 200);
    let listed = ferry(&["apikey", "list", "acme"]);
    assert!(
        listed.contains(&format!("{}…", &key[..16])) && listed.contains("shop front end"),
        "{listed}"
    );
    assert!(!listed.contains(&key[16..]), "list shows no secret");
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_all(&s.db.pool)
        .await
        .unwrap();
    assert!(stored.iter().all(|h| h.len() == 32
        && !key
            .as_bytes()
            .windows(8)
            .any(|w| h.windows(8).any(|x| x == w))));
    ferry(&["apikey", "revoke", &key[..16]]);
    let (st, _, _) = get(&s.base, path, Some(&key)).await;
    assert_eq!(st, 401, "a revoked key is refused at once");
    let (st, _, _) = get(&s.base, path, Some(&s.acme)).await;
    assert_eq!(st, 200, "other keys still work");
}

#[tokio::test]
async fn bad_requests_get_a_json_error_naming_the_parameter() {
    let s = served().await;
    let k = Some(s.acme.as_str());
    let e = "/v1/tenants/acme/events";
    for (query, parameter) in [
        ("from=yesterday", "from"),
        ("from=2026-11-20&to=2026-11-19", "to"),
        ("from=2024-01-01&to=2026-01-01", "from"),
        ("from=2026-01-01&to=2026-03-01&grain=5m", "grain"),
        ("grain=2h", "grain"),
        ("colour=red", "colour"),
        ("type=a&type=b", "type"),
        ("type=", "type"),
        ("type=a%00b", "type"),
        ("to=-262143-01-01", "to"),
        ("from=-5000-01-01&to=-4999-12-31", "to"),
        ("to=10000-01-01", "to"),
        // Exactly 2,016 five-minute buckets is the most; one second more is refused.
        ("from=2026-11-01&to=2026-11-08T00:00:01Z&grain=5m", "grain"),
    ] {
        let (st, body, _) = get(&s.base, &format!("{e}?{query}"), k).await;
        assert_eq!(st, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_parameter");
        assert_eq!(body["error"]["parameter"], parameter, "{query}");
    }
    for (path, parameter) in [
        ("/v1/tenants/acme/pages/top?limit=1000", "limit"),
        ("/v1/tenants/acme/products/top?offset=-1", "offset"),
        ("/v1/tenants/acme/endpoints?x=1", "x"),
        ("/v1/tenants/acme/anomalies?since=soon", "since"),
        ("/v1/tenants/acme/anomalies?since=-5000-01-01", "since"),
    ] {
        let (st, body, _) = get(&s.base, path, k).await;
        assert_eq!(
            (st, body["error"]["parameter"].as_str()),
            (400, Some(parameter)),
            "{path}"
        );
    }
    let (st, _, _) = get(
        &s.base,
        &format!("{e}?from=2026-11-01&to=2026-11-08&grain=5m"),
        k,
    )
    .await;
    assert_eq!(
        st, 200,
        "7 days at 5 minutes is 2,016 buckets, the most allowed"
    );
    for path in [
        "/v1/tenants/acme",
        "/v1//health",
        "/v1/tenants/acme/%FF/top",
        "/v2/health",
        "/favicon.ico",
        "/v1/tenants/acme/products/a%00b",
        "/v1/tenants/acme/users/%00/recently-viewed",
    ] {
        let (st, body, _) = get(&s.base, path, k).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}{e}", s.base))
        .bearer_auth(&s.acme)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, OPTIONS");
    let long = format!("{}{e}?type={}", s.base, "x".repeat(4_000));
    let r = client.get(long).bearer_auth(&s.acme).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 414);
    // A product id with a slash, percent-encoded, is one segment.
    let (st, _, _) = get(&s.base, "/v1/tenants/acme/products/a%2Fb", k).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn answers_carry_etags_compression_and_cors_for_the_configured_origin() {
    let s = served_with(&[("FERRY_QUERY_CORS_ORIGINS", "https://shop.example")]).await;
    let client = reqwest::Client::new();
    // A day at 5 minutes: 288 buckets, worth compressing.
    let url = format!(
        "{}/v1/tenants/acme/events?from={}&to={}",
        s.base,
        (s.to - Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ"),
        s.to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let r = client
        .get(&url)
        .bearer_auth(&s.acme)
        .header("accept-encoding", "gzip")
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let etag = r.headers()["etag"].clone();
    let zipped = r.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_string(&mut text)
        .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["points"].as_array().unwrap().len(), 288);
    assert_eq!(body["grain"], "5m");

    // A browser's usual offer: brotli, which decodes to the same answer.
    let r = client
        .get(&url)
        .bearer_auth(&s.acme)
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "br");
    let br_tag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert!(br_tag.ends_with("-br\""), "{br_tag}");
    let compressed = r.bytes().await.unwrap();
    let mut br_text = String::new();
    brotli::Decompressor::new(&compressed[..], 4_096)
        .read_to_string(&mut br_text)
        .unwrap();
    assert_eq!(br_text, text);
    assert!(
        compressed.len() < zipped.len(),
        "brotli {} bytes, gzip {}",
        compressed.len(),
        zipped.len()
    );

    let r = client
        .get(&url)
        .bearer_auth(&s.acme)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 304);
    assert!(r.bytes().await.unwrap().is_empty());

    let r = client
        .get(&url)
        .bearer_auth(&s.acme)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("Authorization"));
}

#[tokio::test]
async fn a_database_that_is_down_answers_503_with_retry_after() {
    let url = unreachable_database_url();
    let (_function, base) =
        spawn_azure("query", &url, &[("FERRY_DB_CONNECT_TIMEOUT", "500ms")]).await;
    let key = format!("fy_live_{}", "a".repeat(40));
    for path in ["/v1/health", "/v1/tenants/acme/events"] {
        let (st, body, h) = get(&base, path, Some(&key)).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (503, Some("unavailable")),
            "{path}"
        );
        assert_eq!(h["retry-after"], "5");
    }
    // What needs no database still answers.
    let (st, _, _) = get(&base, "/v1/tenants/acme", Some(&key)).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn on_lambda_a_function_url_request_gets_the_same_answer() {
    let s = served().await;
    let mut api = RuntimeApi::start().await;
    let env = api.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _lambda = spawn_function("query", &s.db.url, &env);
    let request = |path: &str, query: &str, key: &str| {
        json!({
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
            "headers": {"authorization": format!("Bearer {key}"), "host": "abc.lambda-url.eu-west-1.on.aws"},
            "requestContext": {
                "accountId": "123456789012", "apiId": "abc", "domainName": "abc.lambda-url.eu-west-1.on.aws",
                "domainPrefix": "abc", "requestId": "r1", "routeKey": "$default", "stage": "$default",
                "time": "27/Nov/2026:21:00:00 +0000", "timeEpoch": 1_795_899_600_000_i64,
                "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"}
            },
            "isBase64Encoded": false
        })
    };
    let path = "/v1/tenants/acme/events";
    let (kind, out) = api
        .invoke(request(path, &format!("{}&grain=1h", s.range), &s.acme))
        .await;
    assert_eq!(kind, "response", "{out}");
    assert_eq!(out["statusCode"], 200, "{out}");
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    let (_, direct, _) = get(
        &s.base,
        &format!("{path}?{}&grain=1h", s.range),
        Some(&s.acme),
    )
    .await;
    assert_eq!(body, direct);
    let (_, out) = api.invoke(request(path, "", &s.beta)).await;
    assert_eq!(out["statusCode"], 404);
    let (_, out) = api.invoke(request(path, "grain=7m", &s.acme)).await;
    assert_eq!(out["statusCode"], 400);
}

/// The schemathesis CLI of the tools venv (scripts/setup.sh installs it).
fn schemathesis() -> std::path::PathBuf {
    let tools = std::env::var_os("FERRY_TOOLS").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ferry/tools"),
        std::path::PathBuf::from,
    );
    let cli = tools.join("schemathesis/bin/schemathesis");
    assert!(
        cli.exists(),
        "{} is missing: run `source scripts/setup.sh` (scripts/test.sh does)",
        cli.display()
    );
    cli
}

/// schemathesis exercises every documented route with generated input, positive and negative:
/// no answer is a server error, and every answer matches the OpenAPI document (status, content
/// type, headers, schema), with and without a key. One check is left out: "schema-valid
/// request rejected" (positive_data_acceptance). A range's bounds (`to` after `from`, at most
/// 366 days, at most 2,016 buckets) relate two parameters, which a JSON schema cannot say, so
/// generated pairs that break them are rightly answered 400.
#[tokio::test]
async fn schemathesis_finds_every_answer_conforming_to_the_openapi_document() {
    let s = served().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        "[[operations]]\n\
         include-path-regex = \"^/v1/tenants/\"\n\
         parameters = { tenant = \"acme\", product = \"sku-0\", user = \"u1\" }\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/v1/openapi.json", s.base)])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--max-examples", "25", "--seed", "1", "--workers", "2"])
        .args(["--header", &format!("Authorization: Bearer {}", s.acme)])
        .args([
            "--generation-database",
            "none",
            "--no-color",
            "--max-failures",
            "5",
        ])
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The dashboard in a real Chromium, driven by Playwright (tests/dashboard/check.cjs): signs
/// in, and every chart holds the numbers the API returns for the page's range; a wrong key is
/// refused; nothing is fetched from another host. Saves `target/dashboard.png`.
#[tokio::test]
async fn the_dashboard_in_chromium_draws_the_numbers_of_the_api() {
    let s = served().await;
    sqlx::query(
        "INSERT INTO endpoints (tenant_id, url, event_types, failing_since, last_failure_at)
         VALUES ('acme', 'https://partner.example/hook', '{product.*}', now(), now())",
    )
    .execute(&s.db.pool)
    .await
    .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tools = std::env::var_os("FERRY_TOOLS")
        .map_or_else(|| root.join(".ferry/tools"), std::path::PathBuf::from);
    let playwright = tools.join("node/node_modules/playwright-core");
    assert!(
        playwright.exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "playwright-core ({}) or /usr/bin/chromium is missing: run `source scripts/setup.sh`",
        playwright.display()
    );
    let shot = root.join("target/dashboard.png");
    let out = tokio::process::Command::new("node")
        .arg(root.join("tests/dashboard/check.cjs"))
        .args([&s.base, &s.acme])
        .arg(&shot)
        .env("PLAYWRIGHT_CORE", &playwright)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the dashboard check failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ok   events chart")
            && text.contains("ok   the browser received the script compressed (br)")
            && shot.exists(),
        "{text}"
    );
}
