//! The rollup function against a real PostgreSQL with postgresql-hll: exactly-once rollups
//! under crashes, concurrent runs and concurrent writers; late events; hll accuracy; anomaly
//! and data-quality findings; partition upkeep and retention; housekeeping; job bookkeeping;
//! and the read functions of `ferry_shared::queries`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{config, count, fresh_db, TestDb};
use chrono::{DateTime, TimeZone, Utc};
use ferry_rollup::{JobOutcome, Rollup, RollupConfig, Step};
use ferry_shared::queries::{self, Grain, Metric};
use ferry_shared::TickHandler;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

const PART: i64 = 3600;

fn floor(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(t.timestamp().div_euclid(secs) * secs, 0)
        .unwrap()
}

fn rollup(pool: &PgPool, tweak: impl FnOnce(&mut RollupConfig)) -> Rollup {
    let mut rcfg = RollupConfig::default();
    rcfg.aggregate.lock_wait = Duration::from_millis(500);
    rcfg.anomaly.grace = Duration::ZERO;
    tweak(&mut rcfg);
    Rollup::with_pool(
        &config(&[("FERRY_PARTITION_INTERVAL", "1h")]),
        rcfg,
        pool.clone(),
        "rollup",
    )
}

async fn db_with(tenants: &[&str]) -> TestDb {
    let db = fresh_db().await;
    for t in tenants {
        ferry_shared::db::add_tenant(&db.pool, t, t).await.unwrap();
    }
    db
}

/// `n` events of one type, spread over `[start, start + span)`, with per-row pages, products,
/// amounts and currencies shaped like real ones. Inserted through `events`, as loaders do.
struct Batch<'a> {
    tenant: &'a str,
    source: &'a str,
    ty: &'a str,
    start: DateTime<Utc>,
    span: i64,
    n: i64,
    users: i64,
    tag: &'a str,
}

impl Batch<'_> {
    fn sql(&self) -> &'static str {
        "INSERT INTO events (tenant_id, source, event_id, type, time, received_at, user_id,
                             session_id, data)
         SELECT $1, $2, $3 || '-' || g, $4,
                $5::timestamptz + ((g::bigint * 7919) % $6) * interval '1 second', now(),
                'u' || (g % $7), 's' || (g % ($7 * 2)),
                CASE $4
                    WHEN 'page.viewed' THEN jsonb_build_object('path', '/page/' || (g % 7))
                    WHEN 'product.viewed' THEN jsonb_build_object('sku', 'sku-' || (g % 11))
                    WHEN 'cart.item_added' THEN jsonb_build_object('sku', 'sku-' || (g % 11))
                    WHEN 'payment.captured' THEN jsonb_build_object(
                        'amount_cents', 100 + g % 50, 'sku', 'sku-' || (g % 11),
                        'currency', CASE WHEN g % 3 = 0 THEN 'USD' ELSE 'EUR' END)
                    WHEN 'payment.refunded' THEN jsonb_build_object(
                        'amount_cents', 75, 'currency', 'EUR')
                    ELSE '{}'::jsonb
                END
         FROM generate_series(1, $8) AS g"
    }

    async fn insert(&self, pool: &PgPool) {
        ensure(pool, self.start, self.span).await;
        self.insert_in(&mut pool.acquire().await.unwrap()).await;
    }

    async fn insert_in(&self, conn: &mut sqlx::PgConnection) {
        sqlx::query(self.sql())
            .bind(self.tenant)
            .bind(self.source)
            .bind(self.tag)
            .bind(self.ty)
            .bind(self.start)
            .bind(self.span.max(1))
            .bind(self.users.max(1))
            .bind(self.n)
            .execute(conn)
            .await
            .unwrap();
    }
}

async fn ensure(pool: &PgPool, start: DateTime<Utc>, span: i64) {
    ferry_shared::db::ensure_partitions_ahead(
        pool,
        start,
        Duration::from_secs(span.max(1) as u64),
        PART,
    )
    .await
    .unwrap();
}

/// Rows where a rollup table and the same aggregate computed from raw events disagree
/// (either side missing counts as a mismatch), per table.
async fn mismatches(pool: &PgPool) -> Vec<(&'static str, i64)> {
    let grains = "(VALUES (300), (3600), (86400)) AS g(grain)";
    let bin = "date_bin(make_interval(secs => g.grain), e.time, TIMESTAMPTZ 'epoch')";
    let checks = [
        (
            "rollup_events",
            format!(
                "WITH raw AS (SELECT e.tenant_id, g.grain, {bin} AS bucket, e.type, count(*) AS n
                              FROM events e CROSS JOIN {grains} GROUP BY 1, 2, 3, 4)
                 SELECT count(*) FROM raw FULL JOIN rollup_events r
                     USING (tenant_id, grain, bucket, type)
                 WHERE raw.n IS DISTINCT FROM r.events"
            ),
        ),
        (
            "rollup_pages",
            format!(
                "WITH raw AS (SELECT e.tenant_id, g.grain, {bin} AS bucket,
                                     e.data->>'path' AS page, count(*) AS n
                              FROM events e CROSS JOIN {grains}
                              WHERE e.type = 'page.viewed' GROUP BY 1, 2, 3, 4)
                 SELECT count(*) FROM raw FULL JOIN rollup_pages r
                     USING (tenant_id, grain, bucket, page)
                 WHERE raw.n IS DISTINCT FROM r.views"
            ),
        ),
        (
            "rollup_products",
            format!(
                "WITH raw AS (SELECT e.tenant_id, g.grain, {bin} AS bucket,
                                     e.data->>'sku' AS product,
                                     count(*) FILTER (WHERE e.type = 'product.viewed') AS v,
                                     count(*) FILTER (WHERE e.type = 'cart.item_added') AS c,
                                     count(*) FILTER (WHERE e.type = 'payment.captured') AS p
                              FROM events e CROSS JOIN {grains}
                              WHERE e.data ? 'sku' GROUP BY 1, 2, 3, 4)
                 SELECT count(*) FROM raw FULL JOIN rollup_products r
                     USING (tenant_id, grain, bucket, product)
                 WHERE (raw.v, raw.c, raw.p) IS DISTINCT FROM (r.views, r.cart_adds, r.purchases)"
            ),
        ),
        (
            "rollup_revenue",
            format!(
                "WITH raw AS (SELECT e.tenant_id, g.grain, {bin} AS bucket,
                                     e.data->>'currency' AS currency,
                                     count(*) FILTER (WHERE e.type = 'payment.captured') AS p,
                                     count(*) FILTER (WHERE e.type = 'payment.refunded') AS f,
                                     sum(CASE WHEN e.type = 'payment.refunded'
                                              THEN -(e.data->>'amount_cents')::numeric
                                              ELSE (e.data->>'amount_cents')::numeric END) AS net
                              FROM events e CROSS JOIN {grains}
                              WHERE e.type IN ('payment.captured', 'payment.refunded')
                              GROUP BY 1, 2, 3, 4)
                 SELECT count(*) FROM raw FULL JOIN rollup_revenue r
                     USING (tenant_id, grain, bucket, currency)
                 WHERE (raw.p, raw.f, raw.net) IS DISTINCT FROM (r.purchases, r.refunds, r.amount)"
            ),
        ),
        (
            "rollup_sources",
            format!(
                "WITH raw AS (SELECT e.tenant_id, g.grain, {bin} AS bucket, e.source, count(*) AS n
                              FROM events e CROSS JOIN (VALUES (3600), (86400)) AS g(grain)
                              GROUP BY 1, 2, 3, 4)
                 SELECT count(*) FROM raw FULL JOIN rollup_sources r
                     USING (tenant_id, grain, bucket, source)
                 WHERE raw.n IS DISTINCT FROM r.events"
            ),
        ),
    ];
    let mut out = Vec::new();
    for (table, sql) in checks {
        out.push((table, count(pool, &sql).await));
    }
    out
}

async fn assert_rollups_match_raw(pool: &PgPool) {
    let bad: Vec<_> = mismatches(pool)
        .await
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .collect();
    assert!(bad.is_empty(), "rollups disagree with raw events: {bad:?}");
    let raw = count(pool, "SELECT count(*) FROM events").await;
    let rolled = count(
        pool,
        "SELECT coalesce(sum(events), 0)::bigint FROM rollup_events WHERE grain = 86400",
    )
    .await;
    assert_eq!(rolled, raw);
}

/// A mixed stream, rolled up between rounds: each round brings fresh events and late ones
/// (2 and 5 hours old, into buckets already rolled up), for two tenants and every role.
#[tokio::test]
async fn late_events_merge_into_their_old_buckets_and_every_rollup_matches_raw() {
    let db = db_with(&["acme", "globex"]).await;
    let r = rollup(&db.pool, |_| {});
    let now = Utc::now();
    let types = [
        "page.viewed",
        "product.viewed",
        "cart.item_added",
        "payment.captured",
        "payment.refunded",
        "feedback.received",
    ];
    let mut merged = 0;
    for round in 0..4_i64 {
        for (i, ty) in types.iter().enumerate() {
            for (tenant, n) in [("acme", 300 + 50 * i as i64), ("globex", 120)] {
                let tag = format!("{tenant}-{ty}-{round}");
                Batch {
                    tenant,
                    source: if i < 3 { "/web" } else { "/psp" },
                    ty,
                    start: now - chrono::Duration::minutes(10 * (4 - round)),
                    span: 600,
                    n,
                    users: 97,
                    tag: &tag,
                }
                .insert(&db.pool)
                .await;
                // Late: hours old, into buckets an earlier round already rolled up.
                for hours in [2, 5] {
                    let tag = format!("{tag}-late{hours}");
                    Batch {
                        tenant,
                        source: "/web",
                        ty,
                        start: now - chrono::Duration::hours(hours),
                        span: 1200,
                        n: n / 10,
                        users: 13,
                        tag: &tag,
                    }
                    .insert(&db.pool)
                    .await;
                }
            }
        }
        match r.step().await.unwrap() {
            Step::Merged { events, capped, .. } => {
                assert!(!capped);
                merged += events;
            }
            other => panic!("round {round}: {other:?}"),
        }
        assert_rollups_match_raw(&db.pool).await;
    }
    assert_eq!(merged, count(&db.pool, "SELECT count(*) FROM events").await);
    assert!(matches!(r.step().await.unwrap(), Step::UpToDate { .. }));

    // The read functions answer from the rollups what raw events say.
    let (from, to) = (
        now - chrono::Duration::hours(6),
        now + chrono::Duration::minutes(5),
    );
    let hourly = queries::time_series(
        &db.pool,
        "acme",
        &Metric::Events {
            event_type: Some("page.viewed".into()),
        },
        Grain::Hour,
        from,
        to,
    )
    .await
    .unwrap();
    let hourly: Vec<(DateTime<Utc>, f64)> =
        hourly.into_iter().map(|p| (p.bucket, p.value)).collect();
    let raw_hourly: Vec<(DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT s.h, count(e.*)::float8
         FROM generate_series(date_bin('1 hour', $1, TIMESTAMPTZ 'epoch'), $2 - interval '1 microsecond', '1 hour') AS s(h)
         LEFT JOIN events e ON e.tenant_id = 'acme' AND e.type = 'page.viewed'
              AND e.time >= s.h AND e.time < s.h + interval '1 hour'
         GROUP BY 1 ORDER BY 1",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(hourly, raw_hourly);
    assert!(
        hourly.iter().any(|(_, v)| *v == 0.0),
        "gaps are filled with 0"
    );

    let top = queries::top_pages(&db.pool, "acme", from, to, 3)
        .await
        .unwrap();
    let top: Vec<(String, i64)> = top.into_iter().map(|p| (p.page, p.views)).collect();
    let raw_top: Vec<(String, i64)> = sqlx::query_as(
        "SELECT data->>'path', count(*) FROM events
         WHERE tenant_id = 'acme' AND type = 'page.viewed' AND time >= date_bin('5 minutes', $1, TIMESTAMPTZ 'epoch') AND time < $2
         GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(top, raw_top);
    assert_eq!(top.len(), 3);

    let products = queries::top_products(&db.pool, "acme", from, to, 20)
        .await
        .unwrap();
    let views: i64 = products.iter().map(|p| p.views).sum();
    let purchases: i64 = products.iter().map(|p| p.purchases).sum();
    assert_eq!(
        views,
        count(
            &db.pool,
            "SELECT count(*) FROM events WHERE tenant_id = 'acme' AND type = 'product.viewed'"
        )
        .await
    );
    assert_eq!(
        purchases,
        count(
            &db.pool,
            "SELECT count(*) FROM events WHERE tenant_id = 'acme' AND type = 'payment.captured'"
        )
        .await
    );

    let revenue = queries::revenue(&db.pool, "acme", from, to).await.unwrap();
    let eur = revenue.iter().find(|r| r.currency == "EUR").unwrap();
    let raw_eur: f64 = sqlx::query_scalar(
        "SELECT sum(CASE WHEN type = 'payment.refunded' THEN -(data->>'amount_cents')::numeric
                         ELSE (data->>'amount_cents')::numeric END)::float8
         FROM events WHERE tenant_id = 'acme' AND data->>'currency' = 'EUR'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(eur.net, raw_eur);
    assert!(eur.refunds > 0 && eur.refunded > 0.0);
    assert!(revenue.iter().any(|r| r.currency == "USD"));

    let days = queries::source_days(&db.pool, "globex", from, to)
        .await
        .unwrap();
    let days: Vec<(DateTime<Utc>, String, i64)> = days
        .into_iter()
        .map(|d| (d.day, d.source, d.events))
        .collect();
    let total: i64 = days.iter().map(|(_, _, n)| n).sum();
    assert_eq!(
        total,
        count(
            &db.pool,
            "SELECT count(*) FROM events WHERE tenant_id = 'globex'"
        )
        .await
    );
    assert!(days.iter().any(|(_, s, _)| s == "/psp"));
}

/// A run that dies after aggregating, before its commit, leaves nothing behind; the re-run
/// gives exactly the totals of raw events.
#[tokio::test]
async fn a_crash_after_aggregating_leaves_nothing_and_the_rerun_gives_the_same_totals() {
    let db = db_with(&["acme"]).await;
    let now = Utc::now();
    for (i, ty) in ["page.viewed", "product.viewed", "payment.captured"]
        .iter()
        .enumerate()
    {
        Batch {
            tenant: "acme",
            source: "/web",
            ty,
            start: now - chrono::Duration::hours(3),
            span: 3 * 3600,
            n: 2_000 + i as i64,
            users: 500,
            tag: ty,
        }
        .insert(&db.pool)
        .await;
    }
    let crashes = Arc::new(AtomicUsize::new(0));
    let hook_crashes = Arc::clone(&crashes);
    let crashing = rollup(&db.pool, |_| {}).with_faults(Arc::new(move |point| {
        point == ferry_shared::faults::CrashPoint::AfterLoad
            && hook_crashes.fetch_add(1, Ordering::SeqCst) == 0
    }));
    let err = crashing.step().await.unwrap_err();
    assert!(err.to_string().contains("injected crash"), "{err}");
    for table in [
        "rollup_events",
        "rollup_pages",
        "rollup_products",
        "rollup_revenue",
        "rollup_sources",
        "rollup_series",
    ] {
        assert_eq!(
            count(&db.pool, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    assert_eq!(
        count(
            &db.pool,
            "SELECT last_seq FROM rollup_state WHERE name = 'events'"
        )
        .await,
        0
    );
    let step = crashing.step().await.unwrap();
    assert!(
        matches!(step, Step::Merged { events: 6_003, .. }),
        "{step:?}"
    );
    assert_rollups_match_raw(&db.pool).await;
    assert_eq!(crashes.load(Ordering::SeqCst), 2);
}

/// Writers keep loading (in transactions that stay open a while, some rolled back) while two
/// rollup runners step concurrently: nothing is lost, nothing is counted twice.
#[tokio::test]
async fn concurrent_writers_and_concurrent_rollup_runs_lose_and_double_count_nothing() {
    let db = db_with(&["acme", "globex"]).await;
    let now = Utc::now();
    ensure(&db.pool, now - chrono::Duration::hours(4), 5 * 3600).await;
    let writing = Arc::new(AtomicBool::new(true));
    // Writers write at least 40 transactions each, and go on until the runners have merged 10
    // times (a Citus cluster merges more slowly than one node), so every merge counted below
    // happened while writers were loading.
    let merges = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..3 {
        let pool = db.pool.clone();
        let merges = Arc::clone(&merges);
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(w);
            let types = [
                "page.viewed",
                "product.viewed",
                "payment.captured",
                "payment.refunded",
            ];
            let mut rolled_back = 0;
            for i in 0..400 {
                if i >= 40 && merges.load(Ordering::SeqCst) >= 10 {
                    break;
                }
                let mut tx = pool.begin().await.unwrap();
                let tag = format!("w{w}-{i}");
                let late = rng.random_bool(0.2);
                Batch {
                    tenant: if i % 3 == 0 { "globex" } else { "acme" },
                    source: "/web",
                    ty: types[rng.random_range(0..types.len())],
                    start: now - chrono::Duration::minutes(if late { 200 } else { 20 }),
                    span: 1200,
                    n: rng.random_range(50..400),
                    users: 40,
                    tag: &tag,
                }
                .insert_in(&mut tx)
                .await;
                // Hold the rows uncommitted for a while: the rollup must wait for them.
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..60))).await;
                if rng.random_bool(0.1) {
                    tx.rollback().await.unwrap();
                    rolled_back += 1;
                } else {
                    tx.commit().await.unwrap();
                }
            }
            rolled_back
        }));
    }
    let mut runners = Vec::new();
    for _ in 0..2 {
        let r = rollup(&db.pool, |c| {
            c.aggregate.lock_wait = Duration::from_millis(300)
        });
        let writing = Arc::clone(&writing);
        let merges = Arc::clone(&merges);
        runners.push(tokio::spawn(async move {
            let (mut merged, mut busy, mut skipped) = (0, 0, 0);
            while writing.load(Ordering::SeqCst) {
                match r.step().await.unwrap() {
                    Step::Merged { .. } => {
                        merged += 1;
                        merges.fetch_add(1, Ordering::SeqCst);
                    }
                    Step::Skipped(why) if why.contains("another") => busy += 1,
                    Step::Skipped(_) => skipped += 1,
                    Step::UpToDate { .. } => {}
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (merged, busy, skipped)
        }));
    }
    let mut rolled_back = 0;
    for w in writers {
        rolled_back += w.await.unwrap();
    }
    writing.store(false, Ordering::SeqCst);
    let (mut merged, mut busy, mut skipped) = (0, 0, 0);
    for r in runners {
        let (m, b, s) = r.await.unwrap();
        merged += m;
        busy += b;
        skipped += s;
    }
    eprintln!("during the load: {merged} merges, {busy} runs found another run, {skipped} skipped");
    assert!(
        merged >= 10,
        "rollups kept merging while writers loaded ({merged} merges)"
    );
    assert!(rolled_back > 0, "some writer transactions were rolled back");
    assert!(
        busy > 0,
        "the two runners overlapped (one found the other's run)"
    );
    rollup(&db.pool, |_| {}).catch_up().await.unwrap();
    assert_rollups_match_raw(&db.pool).await;
    let state: i64 = count(
        &db.pool,
        "SELECT events FROM rollup_state WHERE name = 'events'",
    )
    .await;
    assert_eq!(state, count(&db.pool, "SELECT count(*) FROM events").await);
}

/// A writer holding an uncommitted insert makes the rollup skip after `lock_wait`, without
/// queueing other writers behind it; once it commits, its rows are counted.
#[tokio::test]
async fn an_in_flight_writer_makes_the_run_skip_without_blocking_other_writers() {
    let db = db_with(&["acme"]).await;
    let now = Utc::now();
    ensure(&db.pool, now - chrono::Duration::hours(1), 2 * 3600).await;
    let batch = |tag: &'static str| Batch {
        tenant: "acme",
        source: "/web",
        ty: "page.viewed",
        start: now - chrono::Duration::minutes(30),
        span: 600,
        n: 100,
        users: 10,
        tag,
    };
    let mut open = db.pool.begin().await.unwrap();
    batch("open").insert_in(&mut open).await;

    let r = rollup(&db.pool, |c| {
        c.aggregate.lock_wait = Duration::from_millis(1500)
    });
    let run = tokio::spawn(async move { r.step().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Meanwhile another writer commits at once: the polling rollup does not queue it.
    let t = Instant::now();
    batch("other").insert(&db.pool).await;
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "writer waited {:?}",
        t.elapsed()
    );
    let step = run.await.unwrap().unwrap();
    assert!(
        matches!(&step, Step::Skipped(why) if why.contains("in flight")),
        "{step:?}"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM rollup_events").await,
        0
    );

    // The skipped run held its window: seq (0, 100], waiting for the open writer only.
    let held: (Option<i64>, i64) = sqlx::query_as(
        "SELECT pending_end, cardinality(pending_lockers)::bigint FROM rollup_state",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(held, (Some(100), 1));

    open.commit().await.unwrap();
    let r = rollup(&db.pool, |_| {});
    let step = r.step().await.unwrap();
    assert_eq!(
        step,
        Step::Merged {
            from: 0,
            to: 100,
            events: 100,
            capped: false,
            held: true
        }
    );
    let step = r.step().await.unwrap();
    assert!(
        matches!(
            step,
            Step::Merged {
                from: 100,
                to: 200,
                events: 100,
                held: false,
                ..
            }
        ),
        "{step:?}"
    );
    assert_rollups_match_raw(&db.pool).await;
}

/// Long writers that overlap one another (whole-file transforms) never leave a moment with no
/// writer in flight. A held window waits only for the writers it was read with, so each run
/// makes progress as soon as those have ended, while newer writers are still running.
#[tokio::test]
async fn overlapping_long_writers_delay_the_rollup_by_one_writer_not_forever() {
    let db = db_with(&["acme"]).await;
    let now = Utc::now();
    ensure(&db.pool, now - chrono::Duration::hours(1), 2 * 3600).await;
    fn batch(now: DateTime<Utc>, tag: &str) -> Batch<'_> {
        Batch {
            tenant: "acme",
            source: "/files",
            ty: "page.viewed",
            start: now - chrono::Duration::minutes(30),
            span: 600,
            n: 100,
            users: 10,
            tag,
        }
    }
    let wait = Duration::from_millis(300);
    let r = rollup(&db.pool, |c| c.aggregate.lock_wait = wait);

    // Writer 1 is open; the run skips and holds seq (0, 100].
    let mut current = db.pool.begin().await.unwrap();
    batch(now, "w1").insert_in(&mut current).await;
    let step = r.step().await.unwrap();
    assert!(
        matches!(&step, Step::Skipped(why) if why.contains("held")),
        "{step:?}"
    );

    for k in 2..=4_i64 {
        // The next writer starts before the previous one commits: never a gap.
        let mut next = db.pool.begin().await.unwrap();
        batch(now, &format!("w{k}")).insert_in(&mut next).await;
        current.commit().await.unwrap();
        // The held window's writer has ended: merged at once, although writer k is running.
        let t = Instant::now();
        let step = r.step().await.unwrap();
        assert!(
            t.elapsed() < wait,
            "waited {:?} for a newer writer",
            t.elapsed()
        );
        assert_eq!(
            step,
            Step::Merged {
                from: (k - 2) * 100,
                to: (k - 1) * 100,
                events: 100,
                capped: false,
                held: true
            }
        );
        // The next window waits for writer k, gives up, and is held.
        let step = r.step().await.unwrap();
        assert!(
            matches!(&step, Step::Skipped(why) if why.contains("held")),
            "{step:?}"
        );
        current = next;
    }
    current.commit().await.unwrap();
    let (events, steps) = r.catch_up().await.unwrap();
    assert_eq!(events, 100, "{steps:?}");
    assert_rollups_match_raw(&db.pool).await;
    assert_eq!(
        count(&db.pool, "SELECT events FROM rollup_state").await,
        400
    );
}

/// 120,000 distinct users over one day: the daily sketch (merged from 5-minute ones) and an
/// explicit union of the 288 five-minute sketches are both within 3% of `count(distinct)`,
/// and so is a ragged range that mixes grains.
#[tokio::test]
async fn distinct_users_from_hll_are_within_3_percent_over_a_day_of_5_minute_buckets() {
    let db = db_with(&["acme"]).await;
    let day = floor(Utc::now(), 86_400) - chrono::Duration::days(1);
    Batch {
        tenant: "acme",
        source: "/web",
        ty: "page.viewed",
        start: day,
        span: 86_400,
        n: 360_000,
        users: 120_000,
        tag: "hll",
    }
    .insert(&db.pool)
    .await;
    let r = rollup(&db.pool, |_| {});
    let (events, _) = r.catch_up().await.unwrap();
    assert_eq!(events, 360_000);
    let exact = count(&db.pool, "SELECT count(DISTINCT user_id) FROM events").await as f64;
    assert_eq!(exact, 120_000.0);
    let within = |estimate: f64, exact: f64, what: &str| {
        let error = (estimate - exact).abs() / exact;
        assert!(
            error < 0.03,
            "{what}: {estimate} vs {exact} ({:.2}%)",
            error * 100.0
        );
    };
    let whole_day =
        queries::unique_users(&db.pool, "acme", day, day + chrono::Duration::days(1), None)
            .await
            .unwrap();
    within(whole_day, exact, "daily sketch");
    let (merged, buckets): (f64, i64) = sqlx::query_as(
        "SELECT hll_cardinality(hll_union_agg(users)), count(*) FROM rollup_events
         WHERE tenant_id = 'acme' AND grain = 300 AND bucket >= $1 AND bucket < $1 + interval '1 day'",
    )
    .bind(day)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(buckets, 288);
    within(merged, exact, "union of 288 five-minute sketches");
    let (a, b) = (
        day + chrono::Duration::minutes(67),
        day + chrono::Duration::minutes(1_215),
    );
    let ragged = queries::unique_users(&db.pool, "acme", a, b, Some("page.viewed"))
        .await
        .unwrap();
    let exact_ragged: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT user_id) FROM events WHERE time >= date_bin('5 minutes', $1, TIMESTAMPTZ 'epoch') AND time < $2",
    )
    .bind(a)
    .bind(b)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    within(ragged, exact_ragged as f64, "ragged range");
    let sessions = queries::time_series(
        &db.pool,
        "acme",
        &Metric::Sessions,
        Grain::Day,
        day,
        day + chrono::Duration::days(1),
    )
    .await
    .unwrap();
    assert_eq!(sessions.len(), 1);
    within(
        sessions[0].value,
        count(&db.pool, "SELECT count(DISTINCT session_id) FROM events").await as f64,
        "sessions",
    );
}

/// Spike, drop, steady noise, a spike in the still-open bucket, and a silent source.
#[tokio::test]
async fn anomalies_find_spikes_drops_and_silent_sources_but_not_noise_or_the_open_bucket() {
    let db = db_with(&["steady", "spiky", "droppy", "quiet"]).await;
    let now = Utc::now();
    let open = floor(now, 300);
    let hour = floor(now, 3600);
    ensure(&db.pool, hour - chrono::Duration::hours(27), 28 * 3600).await;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    // 36 closed five-minute buckets (3 hours) of about 100 page views each.
    for tenant in ["steady", "spiky", "droppy"] {
        for k in 1..=36_i64 {
            let bucket = open - chrono::Duration::minutes(5 * k);
            let n = match (tenant, k) {
                ("spiky", 1 | 2) => 400,
                ("droppy", 1 | 2) => 10,
                _ => rng.random_range(80..=120),
            };
            let tag = format!("{tenant}-{k}");
            Batch {
                tenant,
                source: "/web",
                ty: "page.viewed",
                start: bucket,
                span: 300,
                n,
                users: 50,
                tag: &tag,
            }
            .insert(&db.pool)
            .await;
        }
    }
    // The open bucket of "steady" already holds a burst: it must not be scored.
    Batch {
        tenant: "steady",
        source: "/web",
        ty: "page.viewed",
        start: open,
        span: 1,
        n: 1_000,
        users: 50,
        tag: "open",
    }
    .insert(&db.pool)
    .await;
    // "quiet": two sources sending about 60 events an hour for 26 hours; one stopped an hour ago.
    for h in 1..=26_i64 {
        let start = hour - chrono::Duration::hours(h);
        for source in ["/iot/gateway", "/web"] {
            if source == "/iot/gateway" && h == 1 {
                continue;
            }
            let tag = format!("quiet-{source}-{h}");
            Batch {
                tenant: "quiet",
                source,
                ty: "reading.taken",
                start,
                span: 3600,
                n: 60,
                users: 5,
                tag: &tag,
            }
            .insert(&db.pool)
            .await;
        }
    }
    // "spiky" has a partner subscribed to anomalies: each new finding becomes a webhook.
    sqlx::query(
        "INSERT INTO endpoints (tenant_id, url, event_types)
         VALUES ('spiky', 'https://partner.example/hook', '{anomaly.*}')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let r = rollup(&db.pool, |_| {});
    let reports = r.run_at(now, now).await;
    for job in ["rollup", "anomalies", "data_quality"] {
        let rep = reports.iter().find(|x| x.job == job).unwrap();
        assert_eq!(rep.outcome, JobOutcome::Ok, "{rep:?}");
    }

    let found: Vec<(String, String, String, DateTime<Utc>, f64, String)> = sqlx::query_as(
        "SELECT tenant_id, metric, kind, bucket, value, method FROM anomalies ORDER BY 1, 2, 4",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let of = |t: &str| found.iter().filter(|f| f.0 == t).collect::<Vec<_>>();
    assert!(
        of("steady").is_empty(),
        "noise is not an anomaly: {:?}",
        of("steady")
    );
    assert!(
        found.iter().all(|f| f.3 < open),
        "the open bucket is never scored: {found:?}"
    );
    let closed = [
        open - chrono::Duration::minutes(10),
        open - chrono::Duration::minutes(5),
    ];
    for (tenant, kind, value) in [("spiky", "spike", 400.0), ("droppy", "drop", 10.0)] {
        for metric in ["events", "events:page.viewed"] {
            let got: Vec<(DateTime<Utc>, f64)> = of(tenant)
                .iter()
                .filter(|f| f.1 == metric && f.2 == kind)
                .map(|f| (f.3, f.4))
                .collect();
            assert_eq!(
                got,
                vec![(closed[0], value), (closed[1], value)],
                "{tenant} {metric}: {found:?}"
            );
        }
    }
    let quiet: Vec<_> = of("quiet")
        .iter()
        .map(|f| (f.1.clone(), f.2.clone(), f.3))
        .collect();
    assert_eq!(
        quiet,
        vec![(
            "source:/iot/gateway".to_owned(),
            "source_silent".to_owned(),
            hour - chrono::Duration::hours(1)
        )]
    );

    // The 4 findings of "spiky" (2 buckets × 2 metrics) are queued as anomaly.detected
    // CloudEvents for its endpoint; no other tenant has one.
    let queued: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT m.tenant_id, m.body::jsonb FROM deliveries d JOIN webhook_messages m USING (message_id)
         ORDER BY m.body::jsonb->'data'->>'bucket', m.subject",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(queued.len(), 4, "{queued:?}");
    for (tenant, ce) in &queued {
        assert_eq!(tenant, "spiky");
        assert_eq!(ce["type"], "anomaly.detected");
        assert_eq!(ce["data"]["kind"], "spike");
        assert_eq!(ce["data"]["value"], 400.0);
    }
    assert_eq!(
        queued[0].1["data"]["bucket"],
        closed[0].to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );

    // A second run re-scores the same buckets without duplicating findings or webhooks.
    let before = found.len() as i64;
    r.run_at(now, now).await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM anomalies").await,
        before
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM deliveries").await, 4);

    let recent = queries::recent_anomalies(&db.pool, "spiky", now - chrono::Duration::hours(1), 10)
        .await
        .unwrap();
    assert_eq!(recent.len(), 4);
    assert!(recent.iter().all(|a| a.kind == "spike"
        && a.score >= 4.0
        && a.baseline > 80.0
        && a.method == "trailing"));
    assert_eq!(recent[0].bucket, closed[1]);

    // Late events restate the dropped buckets to normal volume: re-scored, the drops no longer
    // qualify and are withdrawn (kept, marked), and the read function no longer lists them.
    for (k, bucket) in closed.iter().enumerate() {
        let tag = format!("droppy-late-{k}");
        Batch {
            tenant: "droppy",
            source: "/web",
            ty: "page.viewed",
            start: *bucket,
            span: 300,
            n: 90,
            users: 50,
            tag: &tag,
        }
        .insert(&db.pool)
        .await;
    }
    let reports = r.run_at(now, now).await;
    let rep = reports.iter().find(|x| x.job == "anomalies").unwrap();
    assert!(
        rep.detail
            .ends_with("0 new, 4 withdrawn, 0 webhooks queued"),
        "{rep:?}"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM anomalies").await,
        before
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM anomalies
             WHERE withdrawn_at IS NOT NULL AND tenant_id = 'droppy' AND kind = 'drop'"
        )
        .await,
        4
    );
    assert!(
        queries::recent_anomalies(&db.pool, "droppy", now - chrono::Duration::hours(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The spikes, found again, stand.
    assert_eq!(
        queries::recent_anomalies(&db.pool, "spiky", now - chrono::Duration::hours(1), 10)
            .await
            .unwrap()
            .len(),
        4
    );
}

/// A new database records its partition width: an hour on one server, a day on Citus. The
/// rollup's window (by `seq`) reads every partition, and 5-minute partitions kept 30 days
/// (8,640) overflowed the default lock table.
#[tokio::test]
async fn a_new_database_records_hour_wide_partitions_on_one_server() {
    let db = fresh_db().await;
    let citus = ferry_local::citus::is_citus(&db.pool).await.unwrap();
    assert_eq!(
        ferry_shared::db::partition_secs(&db.pool).await.unwrap(),
        Some(if citus { 86_400 } else { 3_600 })
    );
    // Functions asking for 5-minute slots get the recorded width.
    let now = Utc::now();
    ferry_shared::db::ensure_partitions_ahead(&db.pool, now, Duration::from_secs(3600), 300)
        .await
        .unwrap();
    let width = if citus { 86_400.0 } else { 3_600.0 };
    let widths = crate::harness::partition_widths(&db.pool).await;
    assert!(
        !widths.is_empty() && widths.iter().all(|w| *w == width),
        "{widths:?}"
    );
}

/// Partitions are kept ahead; past retention they are dropped (or detached), but only once
/// the rollups have counted their events, and the rollups keep the history.
#[tokio::test]
async fn partition_upkeep_creates_ahead_and_drops_only_rolled_up_partitions() {
    for mode in ["drop", "detach"] {
        let db = db_with(&["acme"]).await;
        let now = Utc::now();
        let old = floor(now, 3600) - chrono::Duration::days(3);
        Batch {
            tenant: "acme",
            source: "/web",
            ty: "page.viewed",
            start: old,
            span: 600,
            n: 500,
            users: 10,
            tag: "old",
        }
        .insert(&db.pool)
        .await;
        let width = crate::harness::partition_width(&db.pool, 3600).await;
        let part = crate::harness::partition_name(old, width);
        let r = rollup(&db.pool, |c| {
            c.events_retention = Duration::from_secs(2 * 86_400);
            if mode == "detach" {
                c.retention_mode = ferry_rollup::RetentionMode::Detach;
            }
        });
        // The chain runs upkeep before the rollup: the first tick must keep the partition.
        let first = r.run_at(now, now).await;
        let p = first.iter().find(|x| x.job == "partitions").unwrap();
        assert!(p.detail.contains("not rolled up yet"), "{mode}: {p:?}");
        assert!(exists(&db.pool, &part).await);
        let ahead = crate::harness::partition_name(now + chrono::Duration::hours(1), width);
        assert!(exists(&db.pool, &ahead).await, "{ahead} created ahead");

        let second = r.run_at(now, now).await;
        let p = second.iter().find(|x| x.job == "partitions").unwrap();
        assert_eq!(p.outcome, JobOutcome::Ok);
        // The partitions after the run, and that their locks are far from the lock table.
        let parts = count(
            &db.pool,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass",
        )
        .await;
        assert!(
            p.detail.contains(&format!(
                "; {parts} partitions (a rollup run locks {} of",
                parts * 3
            )),
            "{mode}: {p:?}"
        );
        assert!(!p.detail.contains("over half"), "{mode}: {p:?}");
        assert!(p.detail.contains("removed 1"), "{mode}: {p:?}");
        assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 0);
        assert_eq!(
            count(
                &db.pool,
                "SELECT sum(events)::bigint FROM rollup_events WHERE grain = 86400"
            )
            .await,
            500,
            "history stays in the rollups"
        );
        assert!(!exists(&db.pool, &part).await);
        let archived =
            format!("SELECT count(*) FROM pg_class WHERE relname LIKE 'archived_{part}_%'");
        assert_eq!(
            count(&db.pool, &archived).await,
            i64::from(mode == "detach")
        );
        // A late event for that slot gets a fresh partition, which is counted, then removed
        // (and archived under a name of its own) in turn.
        Batch {
            tenant: "acme",
            source: "/web",
            ty: "page.viewed",
            start: old,
            span: 60,
            n: 1,
            users: 1,
            tag: "later",
        }
        .insert(&db.pool)
        .await;
        assert!(exists(&db.pool, &part).await);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        r.run_at(now, now).await;
        let last = r.run_at(now, now).await;
        let p = last.iter().find(|x| x.job == "partitions").unwrap();
        assert!(p.detail.contains("removed 1"), "{mode}: {p:?}");
        assert!(!exists(&db.pool, &part).await);
        assert_eq!(
            count(&db.pool, &archived).await,
            2 * i64::from(mode == "detach")
        );
        assert_eq!(
            count(
                &db.pool,
                "SELECT sum(events)::bigint FROM rollup_events WHERE grain = 86400"
            )
            .await,
            501
        );
    }
}

async fn exists(pool: &PgPool, table: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Expired ledger, blob, quarantine, job and rollup rows go, in an hourly job; recent ones
/// stay.
#[tokio::test]
async fn housekeeping_deletes_expired_rows_hourly() {
    let db = db_with(&["acme"]).await;
    let now = Utc::now();
    sqlx::query(
        "INSERT INTO ingest_ledger (unit, function, applied_at)
         SELECT 'u' || g, 'ingest', now() - (g || ' days')::interval FROM generate_series(1, 40) g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO quarantine (unit, reason, detail, raw, received_at)
         SELECT 'u' || g, 'invalid_json', 'x', '\\x00', now() - (g || ' days')::interval
         FROM generate_series(1, 40) g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // Rollup rows: one per day for 5,000 days at every grain (and a tenant's series entry).
    for (table, grains) in [
        ("rollup_events", "300, 3600, 86400"),
        ("rollup_sources", "3600, 86400"),
    ] {
        let (cols, vals) = if table == "rollup_events" {
            ("type, events", "'page.viewed', 1")
        } else {
            ("source, events", "'/web', 1")
        };
        sqlx::query(&format!(
            "INSERT INTO {table} (tenant_id, grain, bucket, {cols})
             SELECT 'acme', grain, date_bin(make_interval(secs => grain), $1, TIMESTAMPTZ 'epoch')
                               - (g || ' days')::interval, {vals}
             FROM generate_series(1, 5000) g, unnest(ARRAY[{grains}]) AS grain"
        ))
        .bind(now)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO rollup_series (tenant_id, metric, first_seen, last_seen)
         VALUES ('acme', 'events', now() - interval '5000 days', now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let r = rollup(&db.pool, |_| {});
    let reports = r.run_at(now, now).await;
    let h = reports
        .iter()
        .find(|x| x.job == "housekeeping")
        .expect("due on the first tick");
    assert_eq!(h.outcome, JobOutcome::Ok, "{h:?}");
    // The ledger keeps 15 days, quarantine 30 (rows were stamped a moment after `now`).
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM ingest_ledger").await,
        15
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM quarantine").await, 30);
    // Rollups keep 35 days at 5 minutes, 400 days hourly, 3,650 days daily: the bucket that
    // started exactly that many days before the current one began before the cutoff.
    for (table, grain, kept) in [
        ("rollup_events", 300, 34),
        ("rollup_events", 3600, 399),
        ("rollup_events", 86400, 3649),
        ("rollup_sources", 3600, 399),
        ("rollup_sources", 86400, 3649),
    ] {
        assert_eq!(
            count(
                &db.pool,
                &format!("SELECT count(*) FROM {table} WHERE grain = {grain}")
            )
            .await,
            kept,
            "{table} at {grain}"
        );
    }
    let rollup_rows = (5000 - 34) + (5000 - 399) * 2 + (5000 - 3649) * 2;
    assert_eq!(h.rows, 25 + 10 + rollup_rows);
    let events_rows = (5000 - 34) + (5000 - 399) + (5000 - 3649);
    assert!(
        h.detail.contains(&format!("rollup_events {events_rows}")),
        "{h:?}"
    );
    // Not due again within the hour; every other job ran and was recorded both times.
    let again = r.run_at(now, now + chrono::Duration::minutes(1)).await;
    assert!(again.iter().all(|x| x.job != "housekeeping"));
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM job_runs WHERE job = 'housekeeping'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM job_runs WHERE job = 'rollup'"
        )
        .await,
        2
    );
}

/// One failing job is recorded as failed with its error; the others still run; the tick
/// reports failure; the next tick, with the cause gone, succeeds.
#[tokio::test]
async fn a_failing_job_does_not_stop_the_others_and_is_retried_next_tick() {
    let db = db_with(&["acme"]).await;
    let now = Utc::now();
    Batch {
        tenant: "acme",
        source: "/web",
        ty: "page.viewed",
        start: now - chrono::Duration::minutes(30),
        span: 600,
        n: 50,
        users: 5,
        tag: "a",
    }
    .insert(&db.pool)
    .await;
    // Housekeeping deletes from `quarantine` (no other job touches it); without it, it fails.
    sqlx::query("ALTER TABLE quarantine RENAME TO quarantine_away")
        .execute(&db.pool)
        .await
        .unwrap();
    let r = rollup(&db.pool, |_| {});
    let tick = ferry_shared::Tick {
        scheduled: now,
        past_due: false,
    };
    let err = r.tick(tick).await.unwrap_err();
    assert!(
        err.0.starts_with("housekeeping:") && err.0.contains("quarantine"),
        "{}",
        err.0
    );
    let runs: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT job, outcome, error FROM job_runs ORDER BY run_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let jobs: Vec<(&str, &str)> = runs.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        jobs,
        vec![
            ("partitions", "ok"),
            ("rollup", "ok"),
            ("anomalies", "ok"),
            ("data_quality", "ok"),
            ("housekeeping", "failed"),
        ]
    );
    assert!(runs[4].2.as_deref().unwrap().contains("quarantine"));
    assert_eq!(
        count(
            &db.pool,
            "SELECT sum(events)::bigint FROM rollup_events WHERE grain = 300"
        )
        .await,
        50
    );

    // The failed job is due again on the next tick, and succeeds once the cause is gone.
    sqlx::query("ALTER TABLE quarantine_away RENAME TO quarantine")
        .execute(&db.pool)
        .await
        .unwrap();
    r.tick(tick).await.unwrap();
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM job_runs WHERE job = 'housekeeping' AND outcome = 'ok'"
        )
        .await,
        1
    );
}

/// One event of tenant `acme`, 20 minutes before `now`, with `data` as given (any JSON).
async fn insert_raw(
    pool: &PgPool,
    id: &str,
    ty: &str,
    subject: Option<&str>,
    now: DateTime<Utc>,
    data: &str,
) {
    sqlx::query(
        "INSERT INTO events (tenant_id, source, event_id, type, subject, time, received_at, data)
         VALUES ('acme', '/web', $1, $2, $3, $4, now(), $5::jsonb)",
    )
    .bind(id)
    .bind(ty)
    .bind(subject)
    .bind(now - chrono::Duration::minutes(20))
    .bind(data)
    .execute(pool)
    .await
    .unwrap();
}

/// A purchase counts for a product only when it names one: a payment's `subject` is its order,
/// and taking it for a product would give the product rollup one row per order.
#[tokio::test]
async fn a_purchase_counts_for_the_product_it_names_never_for_its_order() {
    let db = db_with(&["acme"]).await;
    let now = Utc::now();
    ensure(&db.pool, now - chrono::Duration::hours(1), 2 * 3600).await;
    for (i, (ty, subject, data)) in [
        ("product.viewed", Some("sku-1"), "{}"),
        ("cart.item_added", None, r#"{"sku": "sku-1"}"#),
        (
            "payment.captured",
            Some("o-1"),
            r#"{"sku": "sku-1", "amount_cents": 900}"#,
        ),
        (
            "payment.captured",
            Some("o-2"),
            r#"{"amount_cents": 500, "currency": "EUR"}"#,
        ),
        ("order.completed", Some("o-3"), r#"{"product_id": "p-9"}"#),
    ]
    .into_iter()
    .enumerate()
    {
        insert_raw(&db.pool, &format!("b{i}"), ty, subject, now, data).await;
    }
    let step = rollup(&db.pool, |_| {}).step().await.unwrap();
    assert!(matches!(step, Step::Merged { events: 5, .. }), "{step:?}");
    let mut products =
        queries::top_products(&db.pool, "acme", now - chrono::Duration::hours(1), now, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.product, p.views, p.cart_adds, p.purchases))
            .collect::<Vec<_>>();
    products.sort();
    assert_eq!(
        products,
        [("p-9".to_owned(), 0, 0, 1), ("sku-1".to_owned(), 1, 1, 1)]
    );
    let orders: i64 = count(
        &db.pool,
        "SELECT count(*) FROM rollup_products WHERE product LIKE 'o-%'",
    )
    .await;
    assert_eq!(orders, 0);
    // The order without a product still counts as revenue.
    let revenue = queries::revenue(&db.pool, "acme", now - chrono::Duration::hours(1), now)
        .await
        .unwrap();
    assert_eq!(revenue.iter().map(|r| r.purchases).sum::<i64>(), 3);
}

/// Producer data of any shape, however hostile, never makes a rollup run fail: a scalar or an
/// array as `data`, a 3,000-character multibyte page (over the btree key limit uncut), an
/// amount of 1e400, a string amount.
#[tokio::test]
async fn hostile_event_data_never_stops_the_rollup() {
    let db = db_with(&["acme"]).await;
    let now = Utc::now();
    ensure(&db.pool, now - chrono::Duration::hours(1), 2 * 3600).await;
    let long_path = format!("/{}", "\u{7d22}\u{5f15}".repeat(1_500));
    for (i, (ty, data)) in [
        ("page.viewed", r#""just a string""#.to_owned()),
        ("page.viewed", "[1, 2, 3]".to_owned()),
        (
            "page.viewed",
            serde_json::json!({"path": long_path}).to_string(),
        ),
        (
            "payment.captured",
            r#"{"amount_cents": 1e400, "currency": "EUR"}"#.to_owned(),
        ),
        (
            "payment.captured",
            r#"{"amount_cents": "12", "currency": "EUR"}"#.to_owned(),
        ),
        (
            "payment.captured",
            r#"{"amount_cents": 250, "currency": "EUR"}"#.to_owned(),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        insert_raw(&db.pool, &format!("h{i}"), ty, None, now, &data).await;
    }
    let step = rollup(&db.pool, |_| {}).step().await.unwrap();
    assert!(matches!(step, Step::Merged { events: 6, .. }), "{step:?}");
    let revenue = queries::revenue(&db.pool, "acme", now - chrono::Duration::hours(1), now)
        .await
        .unwrap();
    assert_eq!(revenue.len(), 1);
    assert_eq!((revenue[0].purchases, revenue[0].net), (3, 250.0));
    let pages = queries::top_pages(&db.pool, "acme", now - chrono::Duration::hours(1), now, 10)
        .await
        .unwrap();
    assert_eq!(pages.iter().map(|p| p.views).sum::<i64>(), 3);
    assert!(pages.iter().any(|p| p.page.chars().count() == 512));
}
