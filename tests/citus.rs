//! On a real Citus cluster only (`scripts/test-citus.sh` builds this target with the `citus`
//! feature and points `DATABASE_URL` at the coordinator): `ferry migrate` places every table as
//! `ferry_shared::placement` declares, a `seq` drawn on a worker is refused, and the rollup
//! holds its window while a committed load is still only prepared on a worker.

use std::time::Duration;

use ferry_rollup::{Rollup, RollupConfig, Step};
use ferry_shared::placement::{Placement, TABLES};
use ferry_shared::QueueBatch;
use ferry_tests::{config, count, event, ingest_db, message, TestDb};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};

fn batch(messages: &[(&str, String)]) -> QueueBatch {
    QueueBatch {
        messages: messages
            .iter()
            .map(|(id, body)| message(id, body.clone()))
            .collect(),
    }
}

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
    sqlx::query(
        "INSERT INTO pg_dist_transaction (groupid, gid) VALUES ($1, $2)",
    )
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
