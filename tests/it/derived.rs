//! Derived state written by the shared loader in the events' own transaction, through the real
//! ingest handler and a real PostgreSQL: products (a late, older change never overwrites a
//! newer one), recently viewed (the last N distinct products per user, newest first), and the
//! webhook outbox (one message per subscribed event, one delivery per matching endpoint).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::harness::{config, count, ingest_db, message, TestDb};
use chrono::{DateTime, Duration, Utc};
use ferry_ingest::Ingest;
use ferry_shared::load::{Loader, LoaderConfig};
use ferry_shared::QueueBatch;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

async fn setup(overrides: &[(&str, &str)]) -> (TestDb, Ingest) {
    ingest_db(overrides).await
}

#[allow(clippy::too_many_arguments)]
fn ev(
    tenant: &str,
    id: &str,
    ty: &str,
    at: DateTime<Utc>,
    user: Option<&str>,
    data: Value,
) -> Value {
    let mut e = json!({
        "specversion": "1.0", "id": id, "source": "/shop", "type": ty,
        "time": at.to_rfc3339(), "tenantid": tenant, "data": data,
    });
    if let Some(u) = user {
        e["userid"] = json!(u);
    }
    e
}

/// Sends each event as its own queue message.
async fn send(ingest: &Ingest, events: &[Value]) {
    let batch = QueueBatch {
        messages: events
            .iter()
            .map(|e| message(&format!("m-{}", e["id"].as_str().unwrap()), e.to_string()))
            .collect(),
    };
    let report = ingest.process(&batch).await;
    assert!(report.failed.is_empty(), "{report:?}");
}

#[tokio::test]
async fn a_late_older_product_change_never_overwrites_a_newer_state() {
    let (db, ingest) = setup(&[]).await;
    let t0 = Utc::now() - Duration::minutes(30);
    let at = |m: i64| t0 + Duration::minutes(m);
    // The newest change (v3) arrives first, then the older ones, one at a time and in a batch.
    send(
        &ingest,
        &[ev(
            "acme",
            "p1-v3",
            "product.updated",
            at(3),
            None,
            json!({"sku": "p1", "price": 30}),
        )],
    )
    .await;
    send(
        &ingest,
        &[ev(
            "acme",
            "p1-v1",
            "product.created",
            at(1),
            None,
            json!({"sku": "p1", "price": 10}),
        )],
    )
    .await;
    send(
        &ingest,
        &[
            ev(
                "acme",
                "p1-v2",
                "product.updated",
                at(2),
                None,
                json!({"sku": "p1", "price": 20}),
            ),
            // Two changes of p2 in one batch: the newer wins inside the batch too.
            ev(
                "acme",
                "p2-v2",
                "product.updated",
                at(2),
                None,
                json!({"sku": "p2", "price": 7}),
            ),
            ev(
                "acme",
                "p2-v1",
                "product.created",
                at(1),
                None,
                json!({"sku": "p2", "price": 5}),
            ),
            // Same product id in another tenant: its own row.
            ev(
                "beta",
                "p1-b",
                "product.created",
                at(1),
                None,
                json!({"sku": "p1", "price": 99}),
            ),
        ],
    )
    .await;
    let price = |tenant: &'static str, sku: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (Option<Value>, bool, String)>(
                "SELECT state->'price', deleted, event_id FROM products
                 WHERE tenant_id = $1 AND product_id = $2",
            )
            .bind(tenant)
            .bind(sku)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        price("acme", "p1").await,
        (Some(json!(30)), false, "p1-v3".into())
    );
    assert_eq!(
        price("acme", "p2").await,
        (Some(json!(7)), false, "p2-v2".into())
    );
    assert_eq!(
        price("beta", "p1").await,
        (Some(json!(99)), false, "p1-b".into())
    );

    // A deletion wins over older updates, including one arriving after it.
    send(
        &ingest,
        &[ev(
            "acme",
            "p1-del",
            "product.deleted",
            at(4),
            None,
            json!({"sku": "p1"}),
        )],
    )
    .await;
    send(
        &ingest,
        &[ev(
            "acme",
            "p1-v2b",
            "product.updated",
            at(3) - Duration::seconds(1),
            None,
            json!({"sku": "p1", "price": 25}),
        )],
    )
    .await;
    assert_eq!(price("acme", "p1").await, (None, true, "p1-del".into()));
    // A newer change brings it back.
    send(
        &ingest,
        &[ev(
            "acme",
            "p1-v5",
            "product.updated",
            at(5),
            None,
            json!({"sku": "p1", "price": 50}),
        )],
    )
    .await;
    assert_eq!(
        price("acme", "p1").await,
        (Some(json!(50)), false, "p1-v5".into())
    );

    // A producer's resend of an old change is a duplicate event: nothing derived from it.
    send(
        &ingest,
        &[ev(
            "acme",
            "p1-v1",
            "product.created",
            at(1),
            None,
            json!({"sku": "p1", "price": 10}),
        )],
    )
    .await;
    assert_eq!(price("acme", "p1").await.2, "p1-v5");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM products").await, 3);
}

/// 4 users view 40 products 600 times in random order, in batches of varied size and from two
/// concurrent loaders; a read of a user's list then gives exactly the last N distinct products
/// they viewed (by event time), newest first.
#[tokio::test]
async fn recently_viewed_keeps_the_last_n_distinct_products_per_user_in_order() {
    let keep = 7;
    let (db, ingest) = setup(&[("FERRY_RECENTLY_VIEWED", "7")]).await;
    let ingest = Arc::new(ingest);
    let t0 = Utc::now() - Duration::hours(1);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    let users = ["u1", "u2", "u3", "u4"];
    let mut views = Vec::new();
    for k in 0..600_i64 {
        let user = users[rng.random_range(0..users.len())];
        let sku = format!("sku-{}", rng.random_range(0..40));
        // Distinct times; arrival order is shuffled below.
        let at = t0 + Duration::seconds(k * 3);
        views.push((user, sku, at, format!("v-{k}")));
    }
    let mut shuffled = views.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.random_range(0..=i));
    }
    let events: Vec<Value> = shuffled
        .iter()
        .map(|(u, sku, at, id)| {
            ev(
                "acme",
                id,
                "product.viewed",
                *at,
                Some(u),
                json!({"sku": sku}),
            )
        })
        .collect();
    let (left, right) = events.split_at(events.len() / 2);
    let run = |part: Vec<Value>| {
        let ingest = Arc::clone(&ingest);
        tokio::spawn(async move {
            let mut i = 0;
            let mut size = 1;
            while i < part.len() {
                let end = (i + size).min(part.len());
                send(&ingest, &part[i..end]).await;
                i = end;
                size = size % 9 + 1;
            }
        })
    };
    let (a, b) = (run(left.to_vec()), run(right.to_vec()));
    a.await.unwrap();
    b.await.unwrap();
    // Lists also hold older products between trims (migration 0020), and concurrent loads of
    // one user may each trim before seeing the other's rows; a product older than every other
    // view, new to each list, changes nothing a read of N shows.
    send(
        &ingest,
        &users
            .iter()
            .map(|u| {
                ev(
                    "acme",
                    &format!("last-{u}"),
                    "product.viewed",
                    t0 - Duration::hours(1),
                    Some(u),
                    json!({"sku": "sku-never-viewed"}),
                )
            })
            .collect::<Vec<_>>(),
    )
    .await;

    for user in users {
        // Expected: distinct products by their newest view, newest first, N of them.
        let mut newest: HashMap<&str, DateTime<Utc>> = HashMap::new();
        for (u, sku, at, _) in &views {
            if *u == user {
                let e = newest.entry(sku.as_str()).or_insert(*at);
                *e = (*e).max(*at);
            }
        }
        let mut want: Vec<(&str, DateTime<Utc>)> = newest.into_iter().collect();
        want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let want: Vec<String> = want.iter().take(keep).map(|(s, _)| s.to_string()).collect();
        // Read through the documented query, as the query API does (at most N).
        let got: Vec<String> =
            ferry_shared::queries::recently_viewed(&db.pool, "acme", user, keep as i64)
                .await
                .unwrap()
                .into_iter()
                .map(|v| v.product_id)
                .collect();
        assert_eq!(got, want, "{user}");
    }
}

/// A list is trimmed back to N when a product added to it is due (its `user product` hashes
/// to 0 modulo N / 2, migration 0020), and otherwise grows by its new products: one user views
/// 200 new products one load at a time with N = 20 (about one in ten is due).
#[tokio::test]
async fn a_list_is_trimmed_back_to_n_when_a_due_product_is_added_and_grows_otherwise() {
    let keep = 20_i64;
    let (db, ingest) = setup(&[("FERRY_RECENTLY_VIEWED", "20")]).await;
    let t0 = Utc::now() - Duration::hours(1);
    let (mut len, mut trims) = (0_i64, 0);
    for k in 0..200_i64 {
        let sku = format!("sku-{k}");
        let at = t0 + Duration::seconds(k);
        let view = ev(
            "acme",
            &format!("v-{k}"),
            "product.viewed",
            at,
            Some("u1"),
            json!({"sku": sku}),
        );
        send(&ingest, &[view]).await;
        let due: bool = sqlx::query_scalar("SELECT mod(hashtext($1), $2) = 0")
            .bind(format!("u1 {sku}"))
            .bind((keep / 2) as i32)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        len = if due { (len + 1).min(keep) } else { len + 1 };
        trims += usize::from(due && k >= keep);
        let stored = count(
            &db.pool,
            "SELECT count(*) FROM recently_viewed WHERE user_id = 'u1'",
        )
        .await;
        assert_eq!(stored, len, "after sku-{k} (due: {due})");
        // A read of N is the newest N whatever the list holds.
        let newest: Vec<String> =
            ferry_shared::queries::recently_viewed(&db.pool, "acme", "u1", keep)
                .await
                .unwrap()
                .into_iter()
                .map(|v| v.product_id)
                .collect();
        let want: Vec<String> = (0..=k)
            .rev()
            .take(keep as usize)
            .map(|i| format!("sku-{i}"))
            .collect();
        assert_eq!(newest, want, "after sku-{k}");
    }
    assert!(
        (8..=40).contains(&trims),
        "{trims} trims of 180 new products past N"
    );
}

/// A load trims a user's list while another load of the same user moves one of the rows it is
/// about to trim forward (a newer view of that product) and commits: the newer view stays. The
/// trim used to re-check only the key on the moved row and deleted the user's newest view.
#[tokio::test]
async fn a_trim_never_deletes_a_view_moved_forward_by_a_concurrent_load() {
    let (db, ingest) = setup(&[("FERRY_RECENTLY_VIEWED", "2")]).await;
    let t0 = Utc::now() - Duration::minutes(30);
    let at = |m: i64| t0 + Duration::minutes(m);
    let view = |id: &str, sku: &str, m: i64| {
        ev(
            "acme",
            id,
            "product.viewed",
            at(m),
            Some("u1"),
            json!({"sku": sku}),
        )
    };
    // A list one longer than kept, as two concurrent loads can leave it.
    for (sku, m) in [("sku-a", 3), ("sku-b", 2), ("sku-c", 1)] {
        sqlx::query(
            "INSERT INTO recently_viewed (tenant_id, user_id, product_id, viewed_at)
             VALUES ('acme', 'u1', $1, $2)",
        )
        .bind(sku)
        .bind(at(m))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    // Another load's newer view of sku-c, not committed yet: it holds the row.
    let mut other = db.pool.begin().await.unwrap();
    let other_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *other)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE recently_viewed SET viewed_at = $1 WHERE user_id = 'u1' AND product_id = 'sku-c'",
    )
    .bind(at(10))
    .execute(&mut *other)
    .await
    .unwrap();
    // This load views sku-d; its trim reads sku-b and sku-c as past the newest 2. On one
    // server it skips the row the other load holds (and deletes sku-b); on Citus it waits for
    // it, then finds it moved forward.
    let ingest = Arc::new(ingest);
    let trimming = {
        let ingest = Arc::clone(&ingest);
        let event = view("v-d", "sku-d", 5);
        tokio::spawn(async move { send(&ingest, &[event]).await })
    };
    // On Citus the trim waits on a worker, which the coordinator shows in citus_lock_waits.
    let citus = ferry_local::citus::is_citus(&db.pool).await.unwrap();
    let waiting = if citus {
        "SELECT count(*) FROM citus_lock_waits
         WHERE blocked_statement ~ 'ferry_derive_loaded|recently_viewed'"
            .to_owned()
    } else {
        format!(
            "SELECT count(*) FROM pg_stat_activity
             WHERE {other_pid} = ANY(pg_blocking_pids(pid)) AND datname = current_database()"
        )
    };
    if citus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while count(&db.pool, &waiting).await == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the trim never waited"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        other.commit().await.unwrap();
        trimming.await.unwrap();
    } else {
        tokio::time::timeout(std::time::Duration::from_secs(10), trimming)
            .await
            .expect("the load waited for the row another load holds")
            .unwrap();
        other.commit().await.unwrap();
    }
    let list = || async {
        ferry_shared::queries::recently_viewed(&db.pool, "acme", "u1", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.product_id)
            .collect::<Vec<String>>()
    };
    let got = list().await;
    assert_eq!(
        got[..2],
        ["sku-c", "sku-d"],
        "the newest two views first, the moved one kept"
    );
    // The list may hold one more until the user's next new product trims it.
    send(&ingest, &[view("v-e", "sku-e", 6)]).await;
    assert_eq!(list().await, ["sku-c", "sku-e"]);
}

#[tokio::test]
async fn a_change_older_than_the_stored_one_does_not_wait_for_a_load_holding_the_product() {
    let (db, ingest) = setup(&[]).await;
    let t0 = Utc::now() - Duration::minutes(30);
    let at = |m: i64| t0 + Duration::minutes(m);
    let change = |id: &str, m: i64, price: i64| {
        ev(
            "acme",
            id,
            "product.updated",
            at(m),
            None,
            json!({"sku": "p1", "price": price}),
        )
    };
    send(&ingest, &[change("p1-v5", 5, 50)]).await;
    // Another load holds p1's row, uncommitted (as its own upsert of p1 would).
    let mut other = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM products WHERE tenant_id = 'acme' AND product_id = 'p1' FOR UPDATE")
        .execute(&mut *other)
        .await
        .unwrap();
    // An older change cannot win: it is dropped without waiting for the row.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        send(&ingest, &[change("p1-v2", 2, 20)]),
    )
    .await
    .expect("a change older than the stored one waited for the row lock");
    other.commit().await.unwrap();
    // A newer one still wins, and the older one is stored as an event.
    send(&ingest, &[change("p1-v7", 7, 70)]).await;
    let price: i64 = sqlx::query_scalar(
        "SELECT (state->>'price')::bigint FROM products
         WHERE tenant_id = 'acme' AND product_id = 'p1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(price, 70);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM events WHERE event_id = 'p1-v2'"
        )
        .await,
        1
    );
}

/// `ferry_matches` (PL/pgSQL since 0014; an SQL function before): a pattern matches exactly, or
/// by prefix when it ends with `*`; NULL patterns, NULL elements and a NULL value never match,
/// and the answer is false, not NULL, so that `NOT ferry_matches(…)` stays a filter.
#[tokio::test]
async fn endpoint_patterns_match_exactly_or_by_prefix_and_never_on_null() {
    /// (patterns, value, matches)
    type Case<'a> = (Option<Vec<Option<&'a str>>>, Option<&'a str>, bool);
    let (db, _) = setup(&[]).await;
    let cases: [Case; 13] = [
        (
            Some(vec![Some("product.updated")]),
            Some("product.updated"),
            true,
        ),
        (
            Some(vec![Some("product.updated")]),
            Some("product.update"),
            false,
        ),
        (Some(vec![Some("product.*")]), Some("product.updated"), true),
        (
            Some(vec![Some("product.*")]),
            Some("productx.updated"),
            false,
        ),
        (Some(vec![Some("*")]), Some(""), true),
        (Some(vec![Some("a*b")]), Some("a-b"), false),
        (Some(vec![Some("a*b")]), Some("a*b"), true),
        (Some(vec![None, Some("pay*")]), Some("payment.failed"), true),
        (Some(vec![None]), Some("x"), false),
        (Some(vec![None]), None, false),
        (Some(vec![]), Some("x"), false),
        (None, Some("x"), false),
        (Some(vec![Some("*")]), None, false),
    ];
    for (patterns, value, want) in cases {
        let got: Option<bool> = sqlx::query_scalar("SELECT ferry_matches($1, $2)")
            .bind(&patterns)
            .bind(value)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(got, Some(want), "ferry_matches({patterns:?}, {value:?})");
    }
}

#[tokio::test]
async fn subscribed_events_get_one_message_and_one_delivery_per_matching_endpoint() {
    let (db, _) = setup(&[]).await;
    let endpoints = [
        // (tenant, url, types, subject, status)
        ("acme", "https://a.example/all", vec!["*"], None, "active"),
        (
            "acme",
            "https://a.example/products",
            vec!["product.*"],
            None,
            "active",
        ),
        (
            "acme",
            "https://a.example/exact",
            vec!["feedback.received"],
            None,
            "active",
        ),
        (
            "acme",
            "https://a.example/subject",
            vec!["product.*"],
            Some("sku-7*"),
            "active",
        ),
        ("acme", "https://a.example/off", vec!["*"], None, "disabled"),
        ("beta", "https://b.example/all", vec!["*"], None, "active"),
    ];
    for (tenant, url, types, subject, status) in &endpoints {
        sqlx::query(
            "INSERT INTO endpoints (tenant_id, url, event_types, subject, status)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant)
        .bind(url)
        .bind(types)
        .bind(subject)
        .bind(status)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let nudged = Arc::new(AtomicU64::new(0));
    let cfg = config(&[]);
    let seen = Arc::clone(&nudged);
    let loader = Loader::new(
        ferry_shared::db::pool(&cfg.db, &db.url, "ingest").unwrap(),
        LoaderConfig::from_config(&cfg),
    )
    .with_nudge(Arc::new(move |n| {
        seen.fetch_add(n, Ordering::SeqCst);
    }));
    let ingest = Ingest::new(loader, cfg.limits.clone(), "ingest");
    let at = Utc::now() - Duration::minutes(5);
    let mut upd = ev(
        "acme",
        "e1",
        "product.updated",
        at,
        None,
        json!({"sku": "sku-71", "n": null}),
    );
    upd["subject"] = json!("sku-71");
    upd["campaign"] = json!("fall");
    // The same type in the same load, outside the subject filter: endpoints are matched per
    // (tenant, type) of the load, subjects per event.
    let mut other = ev(
        "acme",
        "e6",
        "product.updated",
        at,
        None,
        json!({"sku": "sku-80"}),
    );
    other["subject"] = json!("sku-80");
    let events = [
        upd,
        other,
        ev(
            "acme",
            "e2",
            "product.viewed",
            at,
            Some("u1"),
            json!({"sku": "sku-1"}),
        ),
        ev(
            "acme",
            "e3",
            "feedback.received",
            at,
            None,
            json!({"stars": 5}),
        ),
        ev("acme", "e4", "productx.updated", at, None, json!({})),
        ev("beta", "e5", "page.viewed", at, None, json!({"path": "/"})),
    ];
    send(&ingest, &events).await;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT m.event_type, e.url, m.message_id FROM deliveries d
         JOIN webhook_messages m USING (message_id) JOIN endpoints e USING (endpoint_id)
         ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|(t, u, _)| (t.as_str(), u.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("feedback.received", "https://a.example/all"),
            ("feedback.received", "https://a.example/exact"),
            ("page.viewed", "https://b.example/all"),
            ("product.updated", "https://a.example/all"),
            ("product.updated", "https://a.example/all"),
            ("product.updated", "https://a.example/products"),
            ("product.updated", "https://a.example/products"),
            ("product.updated", "https://a.example/subject"),
            ("product.viewed", "https://a.example/all"),
            ("product.viewed", "https://a.example/products"),
            ("productx.updated", "https://a.example/all"),
        ]
    );
    assert_eq!(nudged.load(Ordering::SeqCst), 11);
    let subject_filtered: Vec<String> = sqlx::query_scalar(
        "SELECT m.subject FROM deliveries d JOIN webhook_messages m USING (message_id)
         JOIN endpoints e USING (endpoint_id) WHERE e.url = 'https://a.example/subject'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(subject_filtered, vec!["sku-71".to_owned()]);
    // One message per event, shared by its deliveries; ids carry no '.' (signed content).
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM webhook_messages").await,
        6
    );
    assert!(rows
        .iter()
        .all(|(_, _, id)| id.len() == 36 && id.starts_with("msg_") && !id.contains('.')));

    // The body is the event as a structured CloudEvent, data untouched (its null included).
    let body: String =
        sqlx::query_scalar("SELECT body FROM webhook_messages WHERE subject = 'sku-71'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["id"], "e1");
    assert_eq!(body["source"], "/shop");
    assert_eq!(body["type"], "product.updated");
    assert_eq!(body["subject"], "sku-71");
    assert_eq!(body["tenantid"], "acme");
    assert_eq!(body["campaign"], "fall");
    assert_eq!(body["data"], json!({"sku": "sku-71", "n": null}));
    let sent: DateTime<Utc> = body["time"].as_str().unwrap().parse().unwrap();
    assert_eq!(sent.timestamp_micros(), at.timestamp_micros());

    // A resend (new queue message, same events) is a duplicate: no new message or delivery.
    let batch = QueueBatch {
        messages: events
            .iter()
            .map(|e| {
                message(
                    &format!("again-{}", e["id"].as_str().unwrap()),
                    e.to_string(),
                )
            })
            .collect(),
    };
    ingest.process(&batch).await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM deliveries").await, 11);
    assert_eq!(nudged.load(Ordering::SeqCst), 11);
}

/// Derived state written part by part within one load (every few kept events, as a big file's
/// load does every 500,000) is the same as derived state written once at the commit: products,
/// recently viewed, webhook messages and deliveries, row for row.
#[tokio::test]
async fn derived_state_written_during_a_load_equals_derived_state_written_at_its_commit() {
    use ferry_shared::ledger::{self, Counts};
    let t0 = Utc::now() - Duration::minutes(50);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    let mut events = Vec::new();
    for k in 0..400_i64 {
        let at = t0 + Duration::seconds(rng.random_range(0..2_400));
        let sku = format!("sku-{}", rng.random_range(0..12));
        let user = format!("u{}", rng.random_range(0..5));
        let e = match k % 4 {
            0 => {
                let mut e = ev(
                    "acme",
                    &format!("c{k}"),
                    "product.updated",
                    at,
                    None,
                    json!({"sku": sku, "price_cents": k}),
                );
                e["subject"] = json!(sku);
                e
            }
            1 | 2 => ev(
                "acme",
                &format!("v{k}"),
                "product.viewed",
                at,
                Some(&user),
                json!({"sku": sku}),
            ),
            _ => ev(
                "beta",
                &format!("p{k}"),
                "page.viewed",
                at,
                Some(&user),
                json!({"path": "/"}),
            ),
        };
        events.push(e);
    }
    let body = serde_json::to_vec(&events).unwrap();
    let cfg = config(&[("FERRY_RECENTLY_VIEWED", "4")]);
    let parsed = ferry_shared::validate::parse_body(&body, &cfg.limits, Utc::now()).events;
    assert_eq!(parsed.len(), events.len());

    let mut fingerprints = Vec::new();
    for derive_after in [7, ferry_shared::load::DERIVE_AFTER] {
        let (db, _) = setup(&[]).await;
        for tenant in ["acme", "beta"] {
            sqlx::query(
                "INSERT INTO endpoints (tenant_id, url, event_types) VALUES ($1, $2, '{*}')",
            )
            .bind(tenant)
            .bind(format!("https://{tenant}.example/hook"))
            .execute(&db.pool)
            .await
            .unwrap();
        }
        let loader = Loader::new(
            db.pool.clone(),
            LoaderConfig {
                derive_after,
                ..LoaderConfig::from_config(&cfg)
            },
        );
        let mut load = loader.begin(false).await.unwrap().chunked();
        assert!(ledger::claim_one(load.conn(), "test", "unit")
            .await
            .unwrap());
        let mut loaded = 0;
        for chunk in parsed.chunks(37) {
            loaded += load.add("unit", chunk, Vec::new()).await.unwrap().loaded;
        }
        let counts = Counts {
            unit: "unit",
            function: "test",
            loaded,
            duplicates: 0,
            quarantined: 0,
        };
        let deliveries = load.commit(&[counts]).await.unwrap();
        assert_eq!(loaded, 400);
        assert_eq!(deliveries, 400, "every event matches its tenant's endpoint");
        let mut tables = Vec::new();
        for sql in [
            "SELECT concat_ws('|', tenant_id, product_id, state, deleted, changed_at, event_id)
             FROM products ORDER BY 1",
            // What a read of 4 shows: older products a list holds between trims depend on
            // when the trims ran (here, on how often the load derived).
            "SELECT concat_ws('|', tenant_id, user_id, product_id, viewed_at)
             FROM (SELECT *, row_number() OVER (PARTITION BY tenant_id, user_id
                                                ORDER BY viewed_at DESC, product_id) AS n
                   FROM recently_viewed) r
             WHERE n <= 4 ORDER BY 1",
            "SELECT concat_ws('|', message_id, tenant_id, event_type, body)
             FROM webhook_messages ORDER BY 1",
            "SELECT concat_ws('|', message_id, endpoint_id) FROM deliveries ORDER BY 1",
        ] {
            let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(&db.pool).await.unwrap();
            assert!(!rows.is_empty(), "{sql}: nothing to compare");
            tables.push(rows);
        }
        fingerprints.push(tables);
    }
    assert_eq!(fingerprints[0], fingerprints[1]);
}

/// Sequential scans of `products`, `recently_viewed`, `webhook_messages` and `deliveries` so
/// far, as the server's statistics show them once the connection's own are flushed (`pool`
/// holds one connection).
async fn whole_reads(pool: &sqlx::PgPool) -> i64 {
    // Flushed when the connection next waits for a statement, outside a transaction.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    count(
        pool,
        "SELECT sum(seq_scan)::bigint FROM pg_stat_user_tables
         WHERE relname IN ('products', 'recently_viewed', 'webhook_messages', 'deliveries')",
    )
    .await
}

/// A load finds the products, lists and webhook rows it writes by their keys, never by reading
/// a table whole, however small the tables were when its statements were planned: PostgreSQL
/// may switch to a statement's generic plan for the connection after five runs, and one
/// planned while the tables were a few pages long (a fresh deployment) went on reading them
/// whole as they grew (migration 0019). Here the tables stay a few pages long, where any plan
/// the planner were free to choose would scan them. Ten loads on one connection, each growing
/// every list past its length, changing a product and queueing webhooks.
#[tokio::test]
async fn loads_read_derived_state_by_key_however_small_the_tables_were_when_planned() {
    use ferry_shared::load::Unit;
    let (db, _) = setup(&[]).await;
    sqlx::query("INSERT INTO endpoints (tenant_id, url, event_types) VALUES ('acme', $1, '{*}')")
        .bind("https://acme.example/hook")
        .execute(&db.pool)
        .await
        .unwrap();
    let cfg = config(&[
        ("FERRY_RECENTLY_VIEWED", "2"),
        ("FERRY_DB_MAX_CONNECTIONS", "1"),
    ]);
    let pool = ferry_shared::db::pool(&cfg.db, &db.url, "ingest").unwrap();
    let loader = Loader::new(pool.clone(), LoaderConfig::from_config(&cfg));
    let at = Utc::now() - Duration::minutes(20);
    let before = whole_reads(&pool).await;
    for round in 0..10 {
        let mut events = Vec::new();
        for (k, user) in ["u1", "u2", "u3"].iter().enumerate() {
            for n in 0..3 {
                events.push(ev(
                    "acme",
                    &format!("v{round}-{k}-{n}"),
                    "product.viewed",
                    at + Duration::seconds(round * 10 + n),
                    Some(user),
                    json!({"sku": format!("sku-{round}-{n}")}),
                ));
            }
        }
        let mut change = ev(
            "acme",
            &format!("c{round}"),
            "product.updated",
            at + Duration::seconds(round * 10),
            None,
            json!({"sku": format!("sku-{}", round % 3), "price_cents": round}),
        );
        change["subject"] = json!(format!("sku-{}", round % 3));
        events.push(change);
        let body = serde_json::to_vec(&events).unwrap();
        let unit = Unit {
            key: format!("unit-{round}"),
            parsed: ferry_shared::validate::parse_body(&body, &cfg.limits, Utc::now()),
        };
        let reports = loader.load("test", &[unit]).await.unwrap();
        assert_eq!(reports[0].loaded, 10);
    }
    let after = whole_reads(&pool).await;
    assert_eq!(
        after - before,
        0,
        "derived tables read whole during the loads"
    );
    // The loads did their work: every list cut to the newest 2, every product changed, one
    // delivery an event.
    let lists: Vec<String> = sqlx::query_scalar(
        "SELECT user_id || ':' || string_agg(product_id, ',' ORDER BY viewed_at DESC)
         FROM recently_viewed GROUP BY user_id ORDER BY user_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        lists,
        [
            "u1:sku-9-2,sku-9-1",
            "u2:sku-9-2,sku-9-1",
            "u3:sku-9-2,sku-9-1"
        ]
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM products").await, 3);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM deliveries").await,
        100
    );
}
