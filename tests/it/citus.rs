//! On a real Citus cluster only (`scripts/test-citus.sh` builds this target with the `citus`
//! feature and points `DATABASE_URL` at the coordinator): `ferry migrate` places every table as
//! `ferry_shared::placement` declares, a `seq` drawn on a worker is refused, and the rollup
//! holds its window while a committed load is still only prepared on a worker.

use std::time::Duration;

use crate::harness::{batch, config, count, event, ingest_db, TestDb};
use ferry_rollup::{Rollup, RollupConfig, Step};
use ferry_shared::placement::{Placement, TABLES};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};

fn rollup(pool: &PgPool) -> Rollup {
    let mut rcfg = RollupConfig::default();
    rcfg.aggregate.lock_wait = Duration::from_millis(500);
    Rollup::with_pool(&config(&[]), rcfg, pool.clone(), "rollup")
}

/// `(host, port)` of the worker holding `tenant`'s shard of `table`, and the shard's name.
async fn shard_of(pool: &PgPool, table: &str, tenant: &str) -> (String, i32, String) {
    sqlx::query_as(
        "SELECT n.nodename::text, n.nodeport, s.shard_name::text
         FROM citus_shards s JOIN pg_dist_node n ON n.nodename = s.nodename AND n.nodeport = s.nodeport
         WHERE s.shardid = get_shard_id_for_distribution_column($1, $2)",
    )
    .bind(table)
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A direct connection to `db`'s database on a worker (test-only: ferry never does this).
async fn on_worker(db: &TestDb, host: &str, port: i32) -> PgConnection {
    let opts: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    PgConnection::connect_with(&opts.host(host).port(port as u16))
        .await
        .unwrap()
}

async fn set_recovery_interval(pool: &PgPool, value: &str) {
    sqlx::query(&format!(
        "ALTER SYSTEM SET citus.recover_2pc_interval = {}",
        if value == "DEFAULT" {
            "DEFAULT".to_owned()
        } else {
            format!("'{value}'")
        }
    ))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn migrate_places_every_table_as_declared_and_is_idempotent() {
    let (db, _) = ingest_db(&[]).await; // migrated (and so placed) by the harness
    let placed: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT logicalrelid::text, partmethod::text, repmodel = 't'
         FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
         WHERE NOT c.relispartition ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (table, want) in TABLES {
        let found = placed.iter().find(|(t, _, _)| t == table);
        match want {
            Placement::Tenant => assert!(
                matches!(found, Some((_, m, _)) if m == "h"),
                "{table} should be distributed: {found:?}"
            ),
            Placement::Reference => assert!(
                matches!(found, Some((_, m, true)) if m == "n"),
                "{table} should be a reference table: {found:?}"
            ),
            Placement::Coordinator => {
                assert!(
                    found.is_none(),
                    "{table} should be a plain table: {found:?}"
                )
            }
        }
    }
    assert_eq!(
        placed.len(),
        TABLES
            .iter()
            .filter(|(_, p)| *p != Placement::Coordinator)
            .count(),
        "no table is placed that the declaration does not name: {placed:?}"
    );
    // Every distributed table shares events' co-location group.
    let groups = count(
        &db.pool,
        "SELECT count(DISTINCT colocationid) FROM pg_dist_partition WHERE partmethod = 'h'",
    )
    .await;
    assert_eq!(groups, 1);
    // Again: nothing changes, nothing fails.
    let again = ferry_shared::db::migrate(&db.pool).await.unwrap();
    let citus = again.citus.expect("a Citus database");
    assert!(citus.changed.is_empty(), "{:?}", citus.changed);
    assert_eq!(citus.shard_count, 32);
    assert_eq!(again.partition_secs, Some(86_400));
}

#[tokio::test]
async fn a_seq_drawn_on_a_worker_is_refused() {
    let (db, ingest) = ingest_db(&[]).await;
    let r = ingest
        .process(&batch(&[("m1", json!([event("acme", "e1")]).to_string())]))
        .await;
    assert_eq!(r.units[0].loaded, 1);
    let (host, port, _) = shard_of(&db.pool, "events", "acme").await;
    let mut worker = on_worker(&db, &host, port).await;
    // Through the distributed table on the worker (metadata is synced to every node).
    let err = sqlx::query(
        "INSERT INTO events (tenant_id, source, event_id, type, time, received_at)
         VALUES ('acme', '/w', 'on-worker', 't', now(), now())",
    )
    .execute(&mut worker)
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("events_seq_from_coordinator"),
        "{err}"
    );
    // And through the coordinator all is well.
    let seq: i64 = sqlx::query_scalar("SELECT max(seq) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(seq < 1 << 48);
}

#[tokio::test]
async fn rollup_holds_its_window_while_a_committed_load_is_prepared_on_a_worker() {
    let (db, ingest) = ingest_db(&[]).await;
    let r = ingest
        .process(&batch(&[("m1", json!([event("acme", "e1")]).to_string())]))
        .await;
    assert_eq!(r.units[0].loaded, 1);
    // Citus's maintenance daemon would recover the transaction made below on its own, any
    // moment; keep it from doing so while the test looks.
    set_recovery_interval(&db.pool, "-1").await;
    let rollup = rollup(&db.pool);
    assert!(matches!(rollup.step().await.unwrap(), Step::Merged { .. }));
    let watermark = count(&db.pool, "SELECT last_seq FROM rollup_state").await;

    // A load whose coordinator transaction committed while its worker was unreachable at
    // COMMIT PREPARED: the row waits, prepared, on the worker, and the coordinator's
    // pg_dist_transaction records the transaction for Citus's recovery. Made by hand here,
    // as Citus leaves it; its seq is drawn from the coordinator's sequence, as a load's is.
    let seq = count(
        &db.pool,
        "SELECT nextval(pg_get_serial_sequence('events', 'seq'))",
    )
    .await;
    let (host, port, shard) = shard_of(&db.pool, "events", "acme").await;
    let group: i32 = sqlx::query_scalar(
        "SELECT groupid FROM pg_dist_node WHERE nodename = $1 AND nodeport = $2",
    )
    .bind(&host)
    .bind(port)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let gid = format!("citus_0_{}_{}_0", std::process::id(), seq);
    let mut worker = on_worker(&db, &host, port).await;
    sqlx::query("BEGIN").execute(&mut worker).await.unwrap();
    sqlx::query(&format!(
        "INSERT INTO {shard} (seq, tenant_id, source, event_id, type, time, received_at)
         OVERRIDING SYSTEM VALUE
         VALUES ($1, 'acme', '/tests', 'prepared', 'payment.captured', now() - interval '1 minute', now())"
    ))
    .bind(seq)
    .execute(&mut worker)
    .await
    .unwrap();
    sqlx::query(&format!("PREPARE TRANSACTION '{gid}'"))
        .execute(&mut worker)
        .await
        .unwrap();
    sqlx::query("INSERT INTO pg_dist_transaction (groupid, gid) VALUES ($1, $2)")
        .bind(group)
        .bind(&gid)
        .execute(&db.pool)
        .await
        .unwrap();
    // A later load that committed everywhere.
    let r = ingest
        .process(&batch(&[("m2", json!([event("acme", "e2")]).to_string())]))
        .await;
    assert_eq!(r.units[0].loaded, 1);

    let held = rollup.step().await.unwrap();
    assert!(
        matches!(&held, Step::Skipped(why) if why.contains("prepared on Citus workers")),
        "{held:?}"
    );
    assert_eq!(
        count(&db.pool, "SELECT last_seq FROM rollup_state").await,
        watermark,
        "the watermark must not pass a seq whose row is not visible yet"
    );

    // Citus's recovery (its maintenance daemon, or by hand) commits the prepared transaction.
    let recovered = count(&db.pool, "SELECT recover_prepared_transactions()::bigint").await;
    set_recovery_interval(&db.pool, "DEFAULT").await;
    assert!(recovered >= 1, "{recovered}");
    let merged = rollup.step().await.unwrap();
    assert!(matches!(merged, Step::Merged { .. }), "{merged:?}");
    assert_eq!(
        count(
            &db.pool,
            "SELECT coalesce(sum(events), 0)::bigint FROM rollup_events WHERE grain = 300"
        )
        .await,
        3,
        "e1, the recovered row and e2, each counted once"
    );
}

/// One table's contents as text, in key order, without what legitimately differs between two
/// servers (`seq`, arrival times, generated ids).
const FINGERPRINTS: &[(&str, &str)] = &[
    (
        "events",
        "SELECT concat_ws('|', tenant_id, source, event_id, type, subject, time, user_id,
                session_id, datacontenttype, dataschema, extensions, data, data_base64)
         FROM events ORDER BY tenant_id, source, event_id, time",
    ),
    (
        "quarantine",
        "SELECT concat_ws('|', tenant_id, unit, position, reason, detail, md5(raw))
         FROM quarantine ORDER BY unit, position, reason, detail",
    ),
    (
        "ingest_ledger",
        "SELECT concat_ws('|', unit, function, events, duplicates, quarantined)
         FROM ingest_ledger ORDER BY unit",
    ),
    (
        "rollup_events",
        "SELECT concat_ws('|', tenant_id, grain, bucket, type, events, users, sessions)
         FROM rollup_events ORDER BY 1",
    ),
    (
        "rollup_pages",
        "SELECT concat_ws('|', tenant_id, grain, bucket, page, views) FROM rollup_pages ORDER BY 1",
    ),
    (
        "rollup_products",
        "SELECT concat_ws('|', tenant_id, grain, bucket, product, views, cart_adds, purchases)
         FROM rollup_products ORDER BY 1",
    ),
    (
        "rollup_revenue",
        "SELECT concat_ws('|', tenant_id, grain, bucket, currency, purchases, refunds, amount,
                refunded)
         FROM rollup_revenue ORDER BY 1",
    ),
    (
        "rollup_sources",
        "SELECT concat_ws('|', tenant_id, grain, bucket, source, events) FROM rollup_sources
         ORDER BY 1",
    ),
    (
        "rollup_series",
        "SELECT concat_ws('|', tenant_id, metric, first_seen, last_seen) FROM rollup_series
         ORDER BY 1",
    ),
    (
        "anomalies",
        "SELECT concat_ws('|', tenant_id, metric, grain, bucket, kind, value, baseline, score,
                method, withdrawn_at IS NULL)
         FROM anomalies ORDER BY 1",
    ),
    (
        "products",
        "SELECT concat_ws('|', tenant_id, product_id, state, deleted, changed_at, source, event_id)
         FROM products ORDER BY 1",
    ),
    (
        "recently_viewed",
        "SELECT concat_ws('|', tenant_id, user_id, product_id, viewed_at) FROM recently_viewed
         ORDER BY 1",
    ),
    (
        "webhook_messages",
        "SELECT concat_ws('|', message_id, tenant_id, event_type, subject, body)
         FROM webhook_messages ORDER BY 1",
    ),
    (
        "deliveries",
        "SELECT concat_ws('|', d.message_id, e.tenant_id, e.url, d.status, d.attempts)
         FROM deliveries d JOIN endpoints e USING (endpoint_id) ORDER BY 1",
    ),
];

/// Loads one mixed stream (the demo's generator: clickstream, product changes, payments; plus
/// producer retries and bad input), rolls it up and checks findings, returns every table's rows.
async fn run_stream(url: &str) -> Vec<(&'static str, Vec<String>)> {
    // A short recently-viewed list, so that lists are trimmed.
    let cfg = config(&[("FERRY_RECENTLY_VIEWED", "3")]);
    let pool = ferry_shared::db::pool(&cfg.db, url, "compare").unwrap();
    for t in ferry_local::demo::TENANTS {
        ferry_shared::db::add_tenant(&pool, t, t).await.unwrap();
        sqlx::query(
            "INSERT INTO endpoints (tenant_id, url, event_types)
             VALUES ($1, 'https://partner.example/' || $1, ARRAY['product.*', 'anomaly.*'])",
        )
        .bind(t)
        .execute(&pool)
        .await
        .unwrap();
    }
    let ingest = ferry_ingest::Ingest::with_pool(&cfg, pool.clone(), "ingest");
    for (i, body) in stream().iter().enumerate() {
        let r = ingest
            .process(&batch(&[(&format!("m{i:05}"), body.clone())]))
            .await;
        assert!(r.failed.is_empty(), "message {i} was not applied");
    }
    let mut rcfg = RollupConfig::default();
    rcfg.anomaly.grace = Duration::ZERO;
    let rollup = Rollup::with_pool(&cfg, rcfg, pool.clone(), "rollup");
    let now = chrono::Utc::now();
    for report in rollup.run_at(now, now).await {
        assert!(report.error.is_none(), "{report:?}");
    }
    // Trimming ran: some users viewed more products than their list keeps.
    let longest: i64 = sqlx::query_scalar(
        "SELECT max(n) FROM (SELECT count(DISTINCT coalesce(data->>'sku', subject)) AS n
                             FROM events WHERE type = 'product.viewed' AND user_id IS NOT NULL
                             GROUP BY tenant_id, user_id) v",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let kept: i64 = sqlx::query_scalar(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM recently_viewed
                             GROUP BY tenant_id, user_id) v",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(longest > 3 && kept == 3, "viewed {longest}, kept {kept}");
    let mut tables = Vec::new();
    for (table, sql) in FINGERPRINTS {
        let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
        tables.push((*table, rows));
    }
    pool.close().await;
    tables
}

/// The stream of [`run_stream`], the same on every call within a test run.
fn stream() -> &'static [String] {
    static STREAM: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    STREAM.get_or_init(|| {
        let now = chrono::Utc::now();
        let events = ferry_local::demo::generate_events(8_000, 7, now);
        let mut bodies: Vec<String> = events
            .chunks(37)
            .map(|c| serde_json::Value::Array(c.to_vec()).to_string())
            .collect();
        // Producer retries (the same events again), bad input beside good.
        let retried: Vec<String> = bodies.iter().step_by(9).cloned().collect();
        bodies.extend(retried);
        bodies.push("not json".into());
        let mut stranger = event("nobody", "x-1");
        stranger["type"] = json!("page.viewed");
        let mut bad = event("acme", "x-2");
        bad["specversion"] = json!("0.3");
        bodies.push(json!([stranger, bad, event("acme", "x-3")]).to_string());
        bodies
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citus_stores_rolls_up_and_derives_exactly_what_one_node_does() {
    let citus = crate::harness::fresh_db().await;
    let single = tokio::task::spawn_blocking(crate::harness::private_cluster)
        .await
        .unwrap()
        .unwrap();
    let admin = PgPool::connect(&single.url("postgres")).await.unwrap();
    sqlx::query("CREATE DATABASE compare")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let single_url = single.url("compare");
    let pool = PgPool::connect(&single_url).await.unwrap();
    let migrated = ferry_shared::db::migrate(&pool).await.unwrap();
    assert!(migrated.citus.is_none());
    pool.close().await;

    let on_citus = run_stream(&citus.url).await;
    let on_one = run_stream(&single_url).await;
    for ((table, a), (_, b)) in on_citus.iter().zip(&on_one) {
        eprintln!(
            "{table}: {} rows on Citus, {} on one node",
            a.len(),
            b.len()
        );
        let first_difference = a.iter().zip(b).find(|(x, y)| x != y);
        assert!(
            a.len() == b.len() && first_difference.is_none(),
            "{table} differs: {} rows on Citus, {} on one node; first difference {first_difference:?}",
            a.len(),
            b.len()
        );
    }
    let rows = |t: &str| on_one.iter().find(|(n, _)| *n == t).unwrap().1.len();
    // The comparison means something only if every part of the pipeline produced rows.
    for t in [
        "events",
        "quarantine",
        "rollup_events",
        "rollup_products",
        "rollup_revenue",
        "products",
        "recently_viewed",
        "webhook_messages",
        "deliveries",
    ] {
        assert!(rows(t) > 0, "{t} is empty: nothing compared");
    }
}
