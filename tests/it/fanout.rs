//! Webhook fan-out against real HTTP receivers on loopback: events are ingested through the
//! real loader (which writes the outbox), the fanout drains it, and the receiver records what
//! arrived. Signatures are checked with the independent `standardwebhooks` crate.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::receiver::{Receiver, Reply};
use crate::harness::{count, event, ingest_db, message, TestDb};
use ferry_fanout::endpoints::{self, EndpointError, NewEndpoint};
use ferry_fanout::guard::{Class, Lookup, Refused, SystemLookup};
use ferry_fanout::sign::Secret;
use ferry_fanout::{outbox, Fanout, FanoutConfig};
use ferry_ingest::Ingest;
use ferry_shared::{QueueBatch, QueueHandler};
use sqlx::PgPool;
use standardwebhooks::{Webhook, WebhookError};

/// Fanout settings for loopback receivers: http and 127.0.0.0/8 allowed, short timeouts.
fn settings(extra: &[(&str, &str)]) -> FanoutConfig {
    let mut pairs: BTreeMap<&str, &str> = [
        ("FERRY_WEBHOOK_ALLOW_HTTP", "true"),
        ("FERRY_WEBHOOK_ALLOW_NETS", "127.0.0.0/8"),
        ("FERRY_WEBHOOK_TIMEOUT", "3s"),
        ("FERRY_WEBHOOK_RETRY_SCHEDULE", "1h"),
        ("FERRY_FANOUT_LINGER", "5s"),
        ("FERRY_FANOUT_BUDGET", "30s"),
        ("FERRY_WEBHOOK_KEYS", crate::harness::TEST_KEYS),
    ]
    .into_iter()
    .collect();
    pairs.extend(extra.iter().copied());
    FanoutConfig::from_env(&ferry_shared::config::Env::from_pairs(pairs)).unwrap()
}

fn fanout(db: &TestDb, cfg: FanoutConfig) -> Fanout {
    fanout_with(db, cfg, Arc::new(SystemLookup))
}

fn fanout_with(db: &TestDb, cfg: FanoutConfig, lookup: Arc<dyn Lookup>) -> Fanout {
    Fanout::new(db.pool.clone(), cfg, lookup, "fanout").unwrap()
}

async fn add(pool: &PgPool, url: &str, types: &[&str]) -> (i64, Secret) {
    endpoints::add(
        pool,
        &settings(&[]).policy,
        &crate::harness::test_keys(),
        &SystemLookup,
        &NewEndpoint {
            tenant_id: "acme".into(),
            url: url.into(),
            event_types: types.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Ingests `n` payment events for acme through the real loader; returns their ids.
async fn publish(ingest: &Ingest, prefix: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let messages = ids
        .iter()
        .map(|id| message(id, event("acme", id).to_string()))
        .collect();
    let outcome = ingest.handle(QueueBatch { messages }).await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    ids
}

/// (status code, outcome) of each attempt of the delivery of event `id`, in order.
async fn attempts(pool: &PgPool, id: &str) -> Vec<(Option<i32>, String)> {
    sqlx::query_as(
        "SELECT a.status_code, a.outcome FROM delivery_attempts a
         JOIN deliveries d USING (delivery_id)
         JOIN webhook_messages m USING (message_id)
         WHERE m.body::jsonb->>'id' = $1 ORDER BY a.attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn verify(secret: &Secret, r: &crate::harness::receiver::Received) -> Result<(), WebhookError> {
    Webhook::new(&secret.reveal())
        .unwrap()
        .verify(&r.body, &r.headers)
}

#[tokio::test]
async fn signatures_verify_independently_through_a_secret_rotation() {
    let (db, ingest) = ingest_db(&[]).await;
    let rx = Receiver::start().await;
    let (endpoint, first) = add(&db.pool, &rx.url("/hooks"), &["payment.*"]).await;
    let f = fanout(&db, settings(&[]));

    let ids = publish(&ingest, "sig", 1).await;
    assert_eq!(f.drain().await.unwrap().delivered, 1);
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.path, "/hooks");
    assert_eq!(r.header("content-type"), "application/cloudevents+json");
    assert!(r.header("webhook-id").starts_with("msg_"));
    let ce = r.json();
    assert_eq!(
        (
            ce["id"].as_str(),
            ce["type"].as_str(),
            ce["specversion"].as_str()
        ),
        (Some(ids[0].as_str()), Some("payment.captured"), Some("1.0"))
    );
    verify(&first, r).expect("ferry's signature verifies with standardwebhooks");

    // A tampered body, a stranger's secret, and timestamps outside the 5-minute tolerance fail.
    let mut tampered = r.clone();
    let mut body = r.body.to_vec();
    body[5] ^= 0x01;
    tampered.body = body.into();
    assert!(matches!(
        verify(&first, &tampered),
        Err(WebhookError::InvalidSignature)
    ));
    assert!(matches!(
        verify(&Secret::generate(), r),
        Err(WebhookError::InvalidSignature)
    ));
    let now = chrono::Utc::now().timestamp();
    for (ts, expected) in [
        (now - 600, "TimestampTooOldError"),
        (now + 600, "FutureTimestampError"),
    ] {
        // Correctly signed, but at a time outside the tolerance.
        let mut stale = r.clone();
        let id = r.header("webhook-id").to_owned();
        stale
            .headers
            .insert("webhook-timestamp", ts.to_string().parse().unwrap());
        stale.headers.insert(
            "webhook-signature",
            first.sign(&id, ts, &r.body).parse().unwrap(),
        );
        let e = verify(&first, &stale).unwrap_err();
        assert_eq!(format!("{e:?}"), expected);
    }

    // Rotation: the new secret signs at once, the old one keeps signing during the overlap.
    let second = endpoints::rotate_secret(
        &db.pool,
        &crate::harness::test_keys(),
        endpoint,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert_ne!(second, first);
    publish(&ingest, "rotating", 1).await;
    f.drain().await.unwrap();
    let r = rx.received().pop().unwrap();
    assert_eq!(r.header("webhook-signature").split(' ').count(), 2);
    verify(&first, &r).expect("the old secret still verifies during the overlap");
    verify(&second, &r).expect("the new secret verifies");

    // Rotating with no overlap retires every older secret at once.
    let third = endpoints::rotate_secret(
        &db.pool,
        &crate::harness::test_keys(),
        endpoint,
        Duration::ZERO,
    )
    .await
    .unwrap();
    publish(&ingest, "rotated", 1).await;
    f.drain().await.unwrap();
    let r = rx.received().pop().unwrap();
    assert_eq!(r.header("webhook-signature").split(' ').count(), 1);
    verify(&third, &r).expect("the newest secret verifies");
    for old in [&first, &second] {
        assert!(matches!(
            verify(old, &r),
            Err(WebhookError::InvalidSignature)
        ));
    }
}

#[tokio::test]
async fn events_that_share_an_id_at_different_times_are_two_webhooks_and_a_resend_is_none() {
    let (db, ingest) = ingest_db(&[]).await;
    let rx = Receiver::start().await;
    let (_, secret) = add(&db.pool, &rx.url("/hooks"), &["product.*"]).await;
    let t0 = chrono::Utc::now() - chrono::Duration::minutes(10);
    let change = |minutes: i64, price: i64| {
        serde_json::json!({
            "specversion": "1.0", "id": "change-1", "source": "/catalog",
            "type": "product.updated", "tenantid": "acme",
            "time": (t0 + chrono::Duration::minutes(minutes)).to_rfc3339(),
            "data": {"sku": "p1", "price": price}
        })
    };
    // The producer reuses an event id for a later change; then it resends the first change.
    for (message_id, body) in [
        ("m-1", change(0, 10)),
        ("m-2", change(5, 20)),
        ("m-3", change(0, 10)),
    ] {
        let outcome = ingest
            .handle(QueueBatch {
                messages: vec![message(message_id, body.to_string())],
            })
            .await;
        assert!(outcome.failed.is_empty(), "{outcome:?}");
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 2);
    let price: i64 = sqlx::query_scalar(
        "SELECT (state->>'price')::bigint FROM products WHERE product_id = 'p1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(price, 20, "products shows the later change");

    let f = fanout(&db, settings(&[]));
    assert_eq!(f.drain().await.unwrap().delivered, 2);
    let got = rx.received();
    let mut seen: Vec<(String, i64)> = got
        .iter()
        .map(|r| {
            verify(&secret, r).unwrap();
            (
                r.header("webhook-id").to_owned(),
                r.json()["data"]["price"].as_i64().unwrap(),
            )
        })
        .collect();
    seen.sort_by_key(|(_, price)| *price);
    assert_eq!(seen.len(), 2, "one webhook per stored event: {seen:?}");
    assert_ne!(
        seen[0].0, seen[1].0,
        "each stored event has its own webhook-id"
    );
    assert_eq!((seen[0].1, seen[1].1), (10, 20));
    // Events, products and the outbox agree: as many messages as stored events.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM webhook_messages").await,
        2
    );
}

#[tokio::test]
async fn a_partner_receives_the_event_with_every_attribute_the_producer_sent() {
    let (db, ingest) = ingest_db(&[]).await;
    let rx = Receiver::start().await;
    add(&db.pool, &rx.url("/hooks"), &["page.viewed"]).await;
    let sent = serde_json::json!({
        "specversion": "1.0", "id": "v-1", "source": "/web", "type": "page.viewed",
        // PostgreSQL keeps microseconds; a finer time arrives cut to them.
        "time": chrono::SubsecRound::trunc_subsecs(chrono::Utc::now() - chrono::Duration::minutes(1), 6)
            .to_rfc3339(),
        "tenantid": "acme", "subject": "/p/1", "datacontenttype": "application/json",
        "dataschema": "https://example.com/schemas/view", "userid": "u-7", "sessionid": "s-9",
        "campaign": "fall", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "data": {"path": "/p/1", "ms": 120}
    });
    let outcome = ingest
        .handle(QueueBatch {
            messages: vec![message("m-1", sent.to_string())],
        })
        .await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    let f = fanout(&db, settings(&[]));
    assert_eq!(f.drain().await.unwrap().delivered, 1);
    let got = rx.received();
    let mut delivered = got[0].json();
    let mut expected = sent.clone();
    // `time` is normalised to RFC 3339 in UTC; compare it as an instant.
    let at = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).unwrap()
    };
    assert_eq!(at(&delivered), at(&sent));
    delivered.as_object_mut().unwrap().remove("time");
    expected.as_object_mut().unwrap().remove("time");
    assert_eq!(
        delivered, expected,
        "the partner receives the event as it was accepted"
    );
}

/// An acme endpoint for `payment.*` as a release before issue 14 stored it: the URL as typed,
/// the secret in plain (no key id).
async fn stored_by_an_earlier_release(pool: &PgPool, url: &str) -> (i64, Secret) {
    let secret = Secret::generate();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO endpoints (tenant_id, url, event_types) VALUES ('acme', $1, '{payment.*}')
         RETURNING endpoint_id",
    )
    .bind(url)
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO endpoint_secrets (endpoint_id, secret_id, secret) VALUES ($1, 1, $2)")
        .bind(id)
        .bind(secret.bytes())
        .execute(pool)
        .await
        .unwrap();
    (id, secret)
}

/// `pg_dump` of the endpoint_secrets table, as text.
async fn dump_secrets(db: &TestDb) -> String {
    let pg_dump = ferry_local::postgres::find_bin_dir()
        .unwrap()
        .join("pg_dump");
    let out = tokio::process::Command::new(pg_dump)
        .args(["--data-only", "--table=endpoint_secrets", &db.url])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// True if `dump` holds the secret in any form a reader could use: bytes as hex (bytea), its
/// `whsec_` text, or base64.
fn leaks(dump: &str, secret: &Secret) -> bool {
    use base64::Engine;
    let hex: String = secret.bytes().iter().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret.bytes());
    dump.contains(&hex) || dump.contains(&secret.reveal()) || dump.contains(&b64)
}

#[tokio::test]
async fn signing_secrets_are_sealed_at_rest_and_a_key_rotation_keeps_every_endpoint_verifiable() {
    use ferry_fanout::keys::Keyring;
    let (db, ingest) = ingest_db(&[]).await;
    let rx = Receiver::start().await;
    let old = Keyring::new_entry("k1");
    let new = Keyring::new_entry("k2");
    let with_keys = |ring: &str| settings(&[("FERRY_WEBHOOK_KEYS", ring)]);
    let keys = Keyring::parse(&old).unwrap();
    let (_, sealed_secret) = crate::harness::add_loopback_endpoint(
        &db.pool,
        &keys,
        "acme",
        &rx.url("/sealed"),
        &["payment.*"],
    )
    .await;
    // An endpoint whose secret a release before encryption at rest stored in plain.
    let (_, plain_secret) = stored_by_an_earlier_release(&db.pool, &rx.url("/plain")).await;
    let dump = dump_secrets(&db).await;
    assert!(
        !leaks(&dump, &sealed_secret),
        "a sealed secret is not in a dump"
    );
    assert!(
        leaks(&dump, &plain_secret),
        "the check finds a plain secret"
    );

    // Every endpoint verifies, whichever key each secret is under.
    let deliver_and_verify = |ring: String, prefix: &'static str| {
        let db = &db;
        let ingest = &ingest;
        let rx = &rx;
        let (sealed_secret, plain_secret) = (&sealed_secret, &plain_secret);
        async move {
            let before = rx.received().len();
            publish(ingest, prefix, 1).await;
            let report = fanout(db, with_keys(&ring)).drain().await.unwrap();
            assert_eq!(report.delivered, 2, "{prefix}: {report:?}");
            for r in &rx.received()[before..] {
                let secret = if r.path == "/sealed" {
                    sealed_secret
                } else {
                    plain_secret
                };
                verify(secret, r).expect("verifies with the endpoint's secret");
            }
        }
    };
    // 1. The new key joins last (every instance can open with it), then moves first.
    deliver_and_verify(format!("{old},{new}"), "ring-a").await;
    deliver_and_verify(format!("{new},{old}"), "ring-b").await;
    // 2. `ferry secrets rekey` seals everything under the new key, the plain secret included.
    let env = [("FERRY_WEBHOOK_KEYS", format!("{new},{old}"))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (ok, out, err) = ferry(&db, &env, &["secrets", "rekey"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("2 signing secrets sealed anew under key k2; 0 already under it"),
        "{out}"
    );
    let (ok, out, _) = ferry(&db, &env, &["secrets", "rekey"]).await;
    assert!(
        ok && out.contains("0 signing secrets sealed anew under key k2; 2 already"),
        "{out}"
    );
    let dump = dump_secrets(&db).await;
    assert!(
        !leaks(&dump, &sealed_secret) && !leaks(&dump, &plain_secret),
        "no secret in a dump"
    );
    // 3. The old key leaves the keyring: nothing needs it any more.
    deliver_and_verify(new.clone(), "ring-c").await;

    // A keyring without the key a secret is under: nothing is sent, the reason is recorded,
    // and rekey refuses to pretend.
    let before = rx.received().len();
    publish(&ingest, "wrong", 1).await;
    let report = fanout(&db, with_keys(&old)).drain().await.unwrap();
    assert_eq!((report.delivered, rx.received().len()), (0, before));
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM deliveries WHERE status = 'pending' LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        error.contains("key \"k2\", which is not in the keyring"),
        "{error}"
    );
    let env = [("FERRY_WEBHOOK_KEYS", old.as_str())];
    let (ok, out, err) = ferry(&db, &env, &["secrets", "rekey"]).await;
    assert!(!ok && out.contains("not in the keyring"), "{out}");
    assert!(err.contains("2 secrets could not be opened"), "{err}");
    // Without any keyring, adding an endpoint says what to do, and stores nothing.
    let (ok, _, err) = ferry(
        &db,
        &[("FERRY_WEBHOOK_KEYS", "")],
        &[
            "endpoint",
            "add",
            "--tenant",
            "acme",
            "--url",
            "https://93.184.215.14/",
            "--type",
            "*",
        ],
    )
    .await;
    assert!(!ok && err.contains("ferry secrets new-key"), "{err}");
    assert!(
        !err.contains(new.split_once(':').unwrap().1),
        "no key material in errors"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM endpoints").await, 2);
}

#[tokio::test]
async fn a_url_stored_by_an_earlier_release_with_a_raw_space_is_still_sent_to() {
    let (db, ingest) = ingest_db(&[]).await;
    let rx = Receiver::start().await;
    // As a release before URL normalisation stored it; its secret in plain, as then.
    let (_, secret) = stored_by_an_earlier_release(&db.pool, &rx.url("/old hooks")).await;
    publish(&ingest, "legacy", 1).await;
    assert_eq!(
        fanout(&db, settings(&[])).drain().await.unwrap().delivered,
        1
    );
    let got = rx.received();
    assert_eq!(
        got[0].path, "/old%20hooks",
        "sent to the host and path the parser reads"
    );
    verify(&secret, &got[0]).unwrap();
}

#[tokio::test]
async fn retries_after_500_and_waits_as_told_by_retry_after_on_429() {
    let (db, ingest) = ingest_db(&[]).await;
    let rx = Receiver::start().await;
    add(&db.pool, &rx.url("/"), &["payment.captured"]).await;
    rx.script([
        Reply::status(500),
        Reply::status(429).header("retry-after", "2"),
        Reply::status(200),
    ]);
    let f = fanout(
        &db,
        settings(&[("FERRY_WEBHOOK_RETRY_SCHEDULE", "300ms,300ms,300ms")]),
    );
    let ids = publish(&ingest, "retry", 1).await;
    let report = f.drain().await.unwrap();
    assert_eq!((report.attempts, report.delivered), (3, 1));

    let got = rx.received();
    assert_eq!(got.len(), 3);
    let webhook_id = got[0].header("webhook-id");
    assert!(got.iter().all(|r| r.header("webhook-id") == webhook_id));
    assert!(got.iter().all(|r| r.body == got[0].body));
    // After the 500: the schedule's 300 ms (±20%). After the 429: its Retry-After, 2 s.
    let after_500 = got[1].at - got[0].at;
    let after_429 = got[2].at - got[1].at;
    assert!(
        after_500 >= Duration::from_millis(240) && after_500 < Duration::from_millis(1500),
        "{after_500:?}"
    );
    assert!(after_429 >= Duration::from_millis(1950), "{after_429:?}");
    assert_eq!(
        attempts(&db.pool, &ids[0]).await,
        vec![
            (Some(500), "retry".into()),
            (Some(429), "retry".into()),
            (Some(200), "delivered".into())
        ]
    );
    let (status, n): (String, i32) = sqlx::query_as("SELECT status, attempts FROM deliveries")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((status.as_str(), n), ("delivered", 3));
}

#[tokio::test]
async fn redirects_are_failures_and_never_followed() {
    let (db, ingest) = ingest_db(&[]).await;
    let elsewhere = Receiver::start().await;
    let rx = Receiver::start().await;
    rx.default_reply(Reply::status(307).header("location", &elsewhere.url("/stolen")));
    add(&db.pool, &rx.url("/"), &["payment.*"]).await;
    let ids = publish(&ingest, "redirect", 1).await;
    let report = fanout(&db, settings(&[])).drain().await.unwrap();
    assert_eq!(
        (report.attempts, report.delivered, report.retried),
        (1, 0, 1)
    );
    assert_eq!(rx.received().len(), 1);
    assert!(elsewhere.received().is_empty(), "the redirect was followed");
    let (status, error): (String, String) =
        sqlx::query_as("SELECT status, last_error FROM deliveries")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "pending");
    assert!(
        error.contains("redirects are not followed") && error.contains("/stolen"),
        "{error}"
    );
    assert_eq!(
        attempts(&db.pool, &ids[0]).await,
        vec![(Some(307), "retry".into())]
    );
}

#[tokio::test]
async fn gone_disables_the_endpoint_announces_it_and_enabling_resumes() {
    let (db, ingest) = ingest_db(&[]).await;
    let ops = Receiver::start().await;
    let partner = Receiver::start().await;
    partner.default_reply(Reply::status(410));
    let (ops_id, ops_secret) = add(&db.pool, &ops.url("/ops"), &["endpoint.*"]).await;
    let (partner_id, _) = add(&db.pool, &partner.url("/p"), &["payment.*"]).await;
    publish(&ingest, "gone", 2).await;
    let f = fanout(&db, settings(&[]));
    let report = f.drain().await.unwrap();
    assert_eq!(report.disabled, 1);

    let (status, reason): (String, String) =
        sqlx::query_as("SELECT status, disabled_reason FROM endpoints WHERE endpoint_id = $1")
            .bind(partner_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "disabled");
    assert!(reason.contains("410"), "{reason}");
    // The disabled endpoint's deliveries wait (nothing more is sent to it).
    let sent_before = partner.received().len();
    assert!((1..=2).contains(&sent_before), "{sent_before}");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM deliveries WHERE status = 'pending'"
        )
        .await,
        2
    );
    // The operations endpoint heard about it, signed like any webhook.
    let heard = ops.received();
    assert_eq!(heard.len(), 1);
    verify(&ops_secret, &heard[0]).unwrap();
    let ce = heard[0].json();
    assert_eq!(ce["type"], "endpoint.disabled");
    assert_eq!(ce["data"]["endpoint_id"], partner_id);
    assert_ne!(partner_id, ops_id);

    // Enabled again (the partner is back): both deliveries go out, with their original ids.
    partner.default_reply(Reply::status(204));
    assert_eq!(endpoints::enable(&db.pool, partner_id).await.unwrap(), 0);
    let report = f.drain().await.unwrap();
    assert_eq!(report.delivered, 2);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
        )
        .await,
        3
    );
    let first_ids: Vec<String> = partner.received()[..sent_before]
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    let later: Vec<String> = partner.received()[sent_before..]
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert!(first_ids.iter().all(|id| later.contains(id)));
}

#[tokio::test]
async fn a_receiver_down_for_a_while_is_probed_one_request_at_a_time_and_gets_every_delivery_once_back(
) {
    let (db, ingest) = ingest_db(&[]).await;
    let rx = Receiver::start().await;
    let url = rx.url("/down");
    let port = rx.stop().await;
    let (endpoint, secret) = add(&db.pool, &url, &["payment.*"]).await;
    let ids = publish(&ingest, "down", 20).await;
    // Retries 2 s (±20%) apart: long enough that a drain on a busy machine never meets its own
    // retries (200 ms once let a slow drain make 32 attempts instead of 20).
    let f = fanout(
        &db,
        settings(&[
            ("FERRY_WEBHOOK_RETRY_SCHEDULE", "2s,2s,2s,2s,2s,2s"),
            ("FERRY_FANOUT_LINGER", "0s"),
        ]),
    );
    // Down: connections are refused. The first failures do not open the circuit.
    let report = f.drain().await.unwrap();
    assert_eq!((report.attempts, report.delivered), (20, 0));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Still down 2.5 s later: failures spanning more than a second open it.
    let report = f.drain().await.unwrap();
    assert!(report.attempts >= 1 && report.delivered == 0, "{report:?}");
    let (span, error): (f64, String) = sqlx::query_as(
        "SELECT extract(epoch FROM last_failure_at - failing_since)::float8,
                (SELECT last_error FROM deliveries WHERE attempts > 0 LIMIT 1)
         FROM endpoints WHERE endpoint_id = $1",
    )
    .bind(endpoint)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(span >= 1.0, "failing for {span} s");
    assert!(error.contains("connection failed"), "{error}");
    // Open: nothing is sent before the next probe (a second after the last failure at least),
    // however many deliveries are due.
    sqlx::query("UPDATE deliveries SET next_attempt_at = now() WHERE status = 'pending'")
        .execute(&db.pool)
        .await
        .unwrap();
    let report = f.drain().await.unwrap();
    assert_eq!(report.attempts, 0, "{report:?}");

    // Back, still starting up: 500 to the first two requests, then 200. Probes go one at a
    // time, a second or more apart, until one succeeds and closes the circuit; then the rest
    // go at the full per-endpoint concurrency.
    let rx = Receiver::start_on(port).await;
    rx.script((0..2).map(|_| Reply::status(500)));
    let f = fanout(
        &db,
        settings(&[(
            "FERRY_WEBHOOK_RETRY_SCHEDULE",
            "200ms,200ms,200ms,200ms,200ms,200ms",
        )]),
    );
    let report = f.drain().await.unwrap();
    assert_eq!(report.delivered, 20, "{report:?}");

    let received = rx.received();
    assert_eq!(
        received.len(),
        22,
        "two refused probes, then each delivery once"
    );
    for pair in received[..3].windows(2) {
        let apart = pair[1].at - pair[0].at;
        assert!(
            apart >= Duration::from_millis(900),
            "probes {apart:?} apart"
        );
    }
    let rest = received[21].at - received[2].at;
    assert!(
        rest < Duration::from_secs(3),
        "the closed circuit took {rest:?} for the rest"
    );
    let mut by_id: HashMap<String, Vec<crate::harness::receiver::Received>> = HashMap::new();
    for r in received {
        verify(&secret, &r).unwrap();
        by_id
            .entry(r.header("webhook-id").to_owned())
            .or_default()
            .push(r);
    }
    assert_eq!(by_id.len(), 20, "one webhook-id per event");
    for requests in by_id.values() {
        assert!(requests.iter().all(|r| r.body == requests[0].body));
    }
    let delivered_ids: Vec<String> = by_id
        .values()
        .map(|r| r[0].json()["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        assert!(delivered_ids.contains(id), "{id} never arrived");
    }
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
        )
        .await,
        20
    );
}

#[tokio::test]
async fn two_instances_never_send_one_delivery_concurrently() {
    let (db, ingest) = ingest_db(&[]).await;
    let rx = Receiver::start().await;
    rx.default_reply(Reply::status(200).after(Duration::from_millis(20)));
    // Every fourth request fails first, so retries interleave with fresh deliveries.
    rx.script((0..60).map(|i| {
        Reply::status(if i % 4 == 0 { 500 } else { 200 }).after(Duration::from_millis(20))
    }));
    add(&db.pool, &rx.url("/a"), &["payment.*"]).await;
    publish(&ingest, "race", 240).await;
    let cfg = settings(&[
        ("FERRY_WEBHOOK_RETRY_SCHEDULE", "100ms,100ms,100ms"),
        ("FERRY_FANOUT_PER_ENDPOINT", "6"),
    ]);
    let pool2 = PgPool::connect(&db.url).await.unwrap();
    let one = fanout(&db, cfg.clone());
    let two = Fanout::new(pool2, cfg, Arc::new(SystemLookup), "fanout-2").unwrap();
    let (a, b) = tokio::join!(one.drain(), two.drain());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.attempts > 0 && b.attempts > 0, "both worked: {a:?} {b:?}");
    assert_eq!(a.delivered + b.delivered, 240);
    assert_eq!(a.lost_leases + b.lost_leases, 0);
    assert_eq!(
        rx.max_overlap(),
        1,
        "a delivery was sent twice at the same time"
    );
    let got = rx.received();
    assert_eq!(got.len() as u64, a.attempts + b.attempts);
    assert_eq!(got.len(), 240 + 15);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM delivery_attempts").await,
        got.len() as i64
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
        )
        .await,
        240
    );
}

#[tokio::test]
async fn an_endpoint_failing_past_the_limit_is_disabled_and_a_spent_delivery_replayed() {
    let (db, ingest) = ingest_db(&[]).await;
    let ops = Receiver::start().await;
    let rx = Receiver::start().await;
    rx.default_reply(Reply::status(500));
    add(&db.pool, &ops.url("/ops"), &["endpoint.disabled"]).await;
    let (id, _) = add(&db.pool, &rx.url("/x"), &["payment.*"]).await;
    // Exhaust the schedule first: 3 attempts, then failed.
    let ids = publish(&ingest, "spent", 1).await;
    let f = fanout(
        &db,
        settings(&[("FERRY_WEBHOOK_RETRY_SCHEDULE", "50ms,50ms")]),
    );
    let report = f.drain().await.unwrap();
    assert_eq!((report.attempts, report.failed), (3, 1));
    assert_eq!(
        attempts(&db.pool, &ids[0]).await,
        vec![
            (Some(500), "retry".into()),
            (Some(500), "retry".into()),
            (Some(500), "failed".into())
        ]
    );
    // Replay: the failed delivery starts over and now arrives.
    rx.default_reply(Reply::status(200));
    let replayed = endpoints::replay(
        &db.pool,
        id,
        chrono::Utc::now() - chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!((replayed.requeued, replayed.added), (1, 0));
    assert_eq!(f.drain().await.unwrap().delivered, 1);
    // The attempt log keeps the first three and numbers the replayed attempt fourth.
    assert_eq!(
        attempts(&db.pool, &ids[0]).await,
        vec![
            (Some(500), "retry".into()),
            (Some(500), "retry".into()),
            (Some(500), "failed".into()),
            (Some(200), "delivered".into())
        ]
    );

    // Failing continuously for longer than FERRY_WEBHOOK_DISABLE_AFTER disables it.
    rx.default_reply(Reply::status(503));
    publish(&ingest, "failing", 1).await;
    let f = fanout(
        &db,
        settings(&[
            (
                "FERRY_WEBHOOK_RETRY_SCHEDULE",
                "300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms",
            ),
            ("FERRY_WEBHOOK_DISABLE_AFTER", "1s"),
        ]),
    );
    let report = f.drain().await.unwrap();
    assert_eq!(report.disabled, 1);
    assert!((4..=8).contains(&report.attempts), "{report:?}");
    let (status, reason): (String, String) =
        sqlx::query_as("SELECT status, disabled_reason FROM endpoints WHERE endpoint_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "disabled");
    assert!(reason.starts_with("failing continuously since"), "{reason}");
    let heard = ops.received();
    assert_eq!(heard.len(), 1);
    assert_eq!(heard[0].json()["data"]["endpoint_id"], id);
}

/// DNS answers set by the test.
#[derive(Default)]
struct ScriptedDns(Mutex<HashMap<String, Vec<IpAddr>>>);

impl ScriptedDns {
    fn answer(&self, host: &str, addrs: &[&str]) {
        self.0.lock().unwrap().insert(
            host.into(),
            addrs.iter().map(|a| a.parse().unwrap()).collect(),
        );
    }
}

impl Lookup for ScriptedDns {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'a>,
    > {
        let answer = self.0.lock().unwrap().get(host).cloned();
        Box::pin(async move {
            answer.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "NXDOMAIN"))
        })
    }
}

#[tokio::test]
async fn refused_addresses_are_refused_at_add_and_at_send_time_even_after_a_dns_change() {
    let (db, ingest) = ingest_db(&[]).await;
    let strict = FanoutConfig::default().policy;
    let dns = Arc::new(ScriptedDns::default());
    let cases = [
        ("lo.test", "127.0.0.1", Class::Loopback),
        ("ten.test", "10.1.2.3", Class::Private),
        ("home.test", "192.168.1.20", Class::Private),
        ("link.test", "169.254.3.4", Class::LinkLocal),
        ("meta.test", "169.254.169.254", Class::Metadata),
        ("azure.test", "168.63.129.16", Class::Metadata),
        ("cgnat.test", "100.64.0.7", Class::SharedCgnat),
        ("mcast.test", "239.1.1.1", Class::Multicast),
        ("ula.test", "fd12::1", Class::UniqueLocal),
        ("v6link.test", "fe80::1", Class::LinkLocal),
        ("mapped.test", "::ffff:10.0.0.1", Class::Ipv4Mapped),
        ("v6lo.test", "::1", Class::Loopback),
        ("imds6.test", "fd00:ec2::254", Class::Metadata),
    ];
    let new = |url: &str| NewEndpoint {
        tenant_id: "acme".into(),
        url: url.into(),
        event_types: vec!["*".into()],
        ..Default::default()
    };
    for (host, addr, class) in cases {
        dns.answer(host, &["93.184.216.34", addr]);
        let e = endpoints::add(
            &db.pool,
            &strict,
            &crate::harness::test_keys(),
            &*dns,
            &new(&format!("https://{host}/hook")),
        )
        .await
        .unwrap_err();
        match e {
            EndpointError::Refused(Refused::Address { class: c, .. }) => {
                assert_eq!(c, class, "{host}")
            }
            other => panic!("{host}: {other}"),
        }
        // The same address as a literal in the URL.
        let literal = if addr.contains(':') {
            format!("https://[{addr}]/hook")
        } else {
            format!("https://{addr}/hook")
        };
        let e = endpoints::add(
            &db.pool,
            &strict,
            &crate::harness::test_keys(),
            &*dns,
            &new(&literal),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains(&class.to_string()), "{literal}: {e}");
    }
    let e = endpoints::add(
        &db.pool,
        &strict,
        &crate::harness::test_keys(),
        &*dns,
        &new("http://partner.example/hook"),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("https"), "{e}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM endpoints").await, 0);

    // A host that answered with a public address when added, and with loopback later.
    let rx = Receiver::start().await;
    let http = FanoutConfig {
        policy: ferry_fanout::guard::Policy {
            allow_http: true,
            allow: vec![],
        },
        ..settings(&[
            ("FERRY_WEBHOOK_RETRY_SCHEDULE", "100ms"),
            ("FERRY_FANOUT_LINGER", "0s"),
        ])
    };
    dns.answer("rebind.test", &["93.184.216.34"]);
    let url = format!("http://rebind.test:{}/hook", rx.addr.port());
    endpoints::add(
        &db.pool,
        &http.policy,
        &crate::harness::test_keys(),
        &*dns,
        &new(&url),
    )
    .await
    .expect("a public address is accepted");
    // And one stored before the guard existed, pointing at the metadata service.
    sqlx::query("INSERT INTO endpoints (tenant_id, url, event_types) VALUES ('acme', 'http://169.254.169.254/latest/', '{*}')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO endpoint_secrets SELECT endpoint_id, 1, decode(repeat('ab', 32), 'hex')
         FROM endpoints WHERE url LIKE '%169.254%'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    dns.answer("rebind.test", &["127.0.0.1"]);
    publish(&ingest, "ssrf", 1).await;
    let report = fanout_with(&db, http.clone(), dns.clone())
        .drain()
        .await
        .unwrap();
    assert_eq!(report.delivered, 0);
    assert!(
        rx.received().is_empty(),
        "a refused address was connected to"
    );
    let errors: Vec<String> = sqlx::query_scalar(
        "SELECT a.error FROM delivery_attempts a JOIN deliveries USING (delivery_id)
         JOIN endpoints e USING (endpoint_id) ORDER BY e.url",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let errors = errors.join("\n");
    assert!(
        errors.contains(
            "refused: rebind.test resolves only to refused addresses: 127.0.0.1 is a loopback address"
        ),
        "{errors}"
    );
    // The metadata endpoint is refused before any connection.
    assert!(
        errors.contains("refused: 169.254.169.254 is a cloud metadata address"),
        "{errors}"
    );

    // The same endpoint with loopback allowed on purpose (as tests and the demo do) receives
    // it: the guard was the only thing in the way.
    let allowed = FanoutConfig {
        policy: ferry_fanout::guard::Policy {
            allow_http: true,
            allow: vec!["127.0.0.0/8".parse().unwrap()],
        },
        ..http
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let report = fanout_with(&db, allowed, dns.clone())
        .drain()
        .await
        .unwrap();
    assert_eq!(report.delivered, 1);
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].header("host").starts_with("rebind.test"));
}

/// The environment that lets `ferry` subscribe a receiver on loopback, as the demo does.
const LOOPBACK: [(&str, &str); 2] = [
    ("FERRY_WEBHOOK_ALLOW_HTTP", "true"),
    ("FERRY_WEBHOOK_ALLOW_NETS", "127.0.0.0/8"),
];

/// The signing secret `ferry endpoint add` printed (once).
fn printed_secret(out: &str) -> Secret {
    out.lines()
        .find_map(|l| l.strip_prefix("signing secret (shown once): "))
        .map(|s| Secret::parse(s).unwrap())
        .expect("the secret is printed")
}

/// Runs the real `ferry` command against the test database.
async fn ferry(db: &TestDb, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(crate::harness::bin("ferry"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env_remove("FERRY_WEBHOOK_ALLOW_HTTP")
        .env_remove("FERRY_WEBHOOK_ALLOW_NETS")
        .env("FERRY_WEBHOOK_KEYS", crate::harness::TEST_KEYS)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_fanout_and_endpoint_test_commands_send_signed_webhooks() {
    let (db, ingest) = ingest_db(&[]).await;
    let rx = Receiver::start().await;
    let local = LOOPBACK;
    let url = rx.url("/hooks");
    let (ok, out, err) = ferry(
        &db,
        &local,
        &[
            "endpoint",
            "add",
            "--tenant",
            "acme",
            "--url",
            &url,
            "--type",
            "payment.*",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let secret = printed_secret(&out);
    let id: i64 = sqlx::query_scalar("SELECT endpoint_id FROM endpoints")
        .fetch_one(&db.pool)
        .await
        .unwrap();

    // A test event: signed like any webhook, and nothing recorded.
    let (ok, out, err) = ferry(&db, &local, &["endpoint", "test", &id.to_string()]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("answered 200") && out.contains("accepted"),
        "{out}"
    );
    let got = rx.received();
    assert_eq!(got.len(), 1);
    verify(&secret, &got[0]).expect("the test event verifies");
    assert_eq!(got[0].json()["type"], "ferry.endpoint.test");
    assert_eq!(got[0].json()["tenantid"], "acme");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM deliveries").await, 0);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM delivery_attempts").await,
        0
    );
    // An answer other than 2xx is said, and the command fails.
    rx.script([Reply::status(503)]);
    let (ok, out, err) = ferry(&db, &local, &["endpoint", "test", &id.to_string()]).await;
    assert!(!ok && out.contains("answered 503"), "{out}");
    assert!(err.contains("not accepted"), "{err}");
    let (ok, _, err) = ferry(&db, &local, &["endpoint", "test", "999"]).await;
    assert!(!ok && err.contains("no endpoint 999"), "{err}");

    // `ferry fanout --once` sends what is due, says so, and exits.
    publish(&ingest, "cli", 3).await;
    let (ok, out, err) = ferry(&db, &local, &["fanout", "--once"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("3 attempts: 3 delivered") && out.contains("nothing pending"),
        "{out}"
    );
    let delivered: Vec<_> = rx
        .received()
        .into_iter()
        .filter(|r| r.json()["type"] == "payment.captured")
        .collect();
    assert_eq!(delivered.len(), 3);
    for r in &delivered {
        verify(&secret, r).unwrap();
    }
    let (ok, out, _) = ferry(&db, &local, &["fanout", "--once"]).await;
    assert!(ok && out.contains("0 attempts"), "{out}");
}

#[tokio::test]
async fn the_endpoint_and_replay_commands_manage_endpoints() {
    let (db, _ingest) = ingest_db(&[]).await;
    // Refused with the reason, and nothing stored.
    let (ok, _, err) = ferry(
        &db,
        &[],
        &[
            "endpoint",
            "add",
            "--tenant",
            "acme",
            "--url",
            "https://169.254.169.254/x",
            "--type",
            "*",
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("cloud metadata address"), "{err}");
    let (ok, _, err) = ferry(
        &db,
        &[],
        &[
            "endpoint",
            "add",
            "--tenant",
            "acme",
            "--url",
            "http://127.0.0.1:9/x",
            "--type",
            "*",
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("https"), "{err}");
    // A URL that other tools would read differently, and an unknown tenant: a sentence each.
    let add = |tenant: &'static str, url: &'static str| {
        [
            "endpoint", "add", "--tenant", tenant, "--url", url, "--type", "*",
        ]
    };
    let (ok, _, err) = ferry(&db, &[], &add("acme", "https://93.184.215.14\\@127.0.0.1/")).await;
    assert!(!ok);
    assert!(err.contains("contains a backslash"), "{err}");
    let (ok, _, err) = ferry(&db, &[], &add("nobody", "https://93.184.215.14/")).await;
    assert!(!ok);
    assert!(
        err.contains("no tenant \"nobody\"; register it first with `ferry tenant add nobody`"),
        "{err}"
    );
    assert!(!err.contains("foreign key"), "{err}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM endpoints").await, 0);

    // Loopback allowed on purpose, as in the local demo.
    let local = LOOPBACK;
    let (ok, out, err) = ferry(
        &db,
        &local,
        &[
            "endpoint",
            "add",
            "--tenant",
            "acme",
            "--url",
            "HTTP://127.0.0.1:9/y/../x",
            "--type",
            "product.*,anomaly.*",
            "--rate-limit",
            "5",
            "--description",
            "partner",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("added for acme: http://127.0.0.1:9/x\n"),
        "the URL is stored and shown normalised: {out}"
    );
    let secret = printed_secret(&out);
    let (id, types, stored): (i64, Vec<String>, Vec<u8>) = sqlx::query_as(
        "SELECT e.endpoint_id, e.event_types, s.secret FROM endpoints e JOIN endpoint_secrets s USING (endpoint_id)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(types, ["product.*", "anomaly.*"]);
    assert_ne!(stored, secret.bytes(), "stored sealed");
    assert_eq!(
        crate::harness::test_keys()
            .open(id, "test-1", &stored)
            .unwrap(),
        secret.bytes()
    );
    let id_text = id.to_string();

    let (ok, out, _) = ferry(&db, &[], &["endpoint", "list", "--tenant", "acme"]).await;
    assert!(
        ok && out.contains("http://127.0.0.1:9/x") && out.contains("rate=5/s"),
        "{out}"
    );

    let (ok, out, _) = ferry(&db, &[], &["endpoint", "rotate-secret", &id_text]).await;
    assert!(ok && out.contains("whsec_"), "{out}");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM endpoint_secrets WHERE expires_at IS NULL OR expires_at > now()"
        )
        .await,
        2
    );

    let (ok, _, _) = ferry(&db, &[], &["endpoint", "disable", &id_text]).await;
    assert!(ok);
    let (ok, out, _) = ferry(&db, &[], &["endpoint", "list"]).await;
    assert!(ok && out.contains("disabled"), "{out}");
    let (ok, out, _) = ferry(&db, &[], &["endpoint", "enable", &id_text]).await;
    assert!(ok && out.contains("enabled"), "{out}");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM endpoints WHERE status = 'active'"
        )
        .await,
        1
    );

    let (ok, out, err) = ferry(
        &db,
        &[],
        &["replay", "--endpoint", &id_text, "--since", "2h"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("0 failed deliveries queued again"), "{out}");
    let (ok, _, err) = ferry(&db, &[], &["replay", "--endpoint", "999", "--since", "2h"]).await;
    assert!(!ok && err.contains("no endpoint 999"), "{err}");
}

/// One attempt result for `outbox::update_health`, `secs` after `t0`.
fn result(endpoint: i64, t0: chrono::DateTime<chrono::Utc>, secs: i64, ok: bool) -> outbox::Done {
    outbox::Done {
        delivery_id: 0,
        endpoint_id: endpoint,
        lease: t0,
        attempt: 1,
        status: if ok { "delivered" } else { "pending" },
        next_at: None,
        started: t0 + chrono::Duration::seconds(secs),
        latency_ms: 0,
        status_code: Some(if ok { 200 } else { 500 }),
        outcome: if ok { "delivered" } else { "retry" },
        error: None,
        response: None,
    }
}

#[tokio::test]
async fn endpoint_health_survives_batches_recorded_out_of_order() {
    let (db, _) = ingest_db(&[]).await;
    let (endpoint, _) = add(&db.pool, "http://127.0.0.1:9/hooks", &["*"]).await;
    // Whole seconds: PostgreSQL keeps microseconds.
    let t0 = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() - 3600, 0).unwrap();
    let at = |s: i64| Some(t0 + chrono::Duration::seconds(s));
    let apply = |batch: Vec<outbox::Done>| {
        let pool = db.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            outbox::update_health(&mut tx, &batch, Duration::from_secs(86_400))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
                "SELECT failing_since FROM endpoints WHERE endpoint_id = $1",
            )
            .bind(endpoint)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // Instance A: failures at 10 s and 30 s.
    let a = vec![
        result(endpoint, t0, 10, false),
        result(endpoint, t0, 30, false),
    ];
    assert_eq!(apply(a).await, at(10));
    // Instance B's older batch, recorded later: a success at 20 s. The failure at 30 s is
    // newer, so the endpoint is still failing — since after 20 s (30 s is the first known).
    assert_eq!(apply(vec![result(endpoint, t0, 20, true)]).await, at(30));
    // A newer success clears it.
    assert_eq!(apply(vec![result(endpoint, t0, 40, true)]).await, None);
    // A failure older than that success, recorded late, does not set it again.
    assert_eq!(apply(vec![result(endpoint, t0, 35, false)]).await, None);
    // A newer failure does.
    assert_eq!(apply(vec![result(endpoint, t0, 50, false)]).await, at(50));
    // A batch with a success and a later failure: failing since that failure.
    let mixed = vec![
        result(endpoint, t0, 60, true),
        result(endpoint, t0, 70, false),
    ];
    assert_eq!(apply(mixed).await, at(70));
    // A request that timed out after 5 s: failing since it started, and it last failed when it
    // timed out, so one round of timeouts spans 5 s and opens the circuit.
    assert_eq!(apply(vec![result(endpoint, t0, 90, true)]).await, None);
    let mut timeout = result(endpoint, t0, 100, false);
    timeout.latency_ms = 5000;
    assert_eq!(apply(vec![timeout]).await, at(100));
    let last: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_failure_at FROM endpoints WHERE endpoint_id = $1")
            .bind(endpoint)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(last, at(105));
}

/// Recording attempts finds their deliveries by key, however small `deliveries` was when the
/// statement was planned ([`outbox::begin_recording`]): ten records on one connection, over
/// which PostgreSQL may switch to a generic plan after the fifth. A table of a few pages would
/// be scanned by any plan the planner were free to choose.
#[tokio::test]
async fn recording_attempts_reads_deliveries_by_key_however_small_the_table_was_when_planned() {
    let (db, ingest) = ingest_db(&[]).await;
    add(&db.pool, "http://127.0.0.1:9/hook", &["payment.*"]).await;
    publish(&ingest, "recorded", 40).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let minute = Duration::from_secs(60);
    for round in 0..10 {
        let claimed = outbox::claim(&pool, 4, 4, &HashMap::new(), minute, minute)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 4, "round {round}");
        let done: Vec<outbox::Done> = claimed
            .iter()
            .map(|c| outbox::Done {
                delivery_id: c.delivery_id,
                endpoint_id: c.endpoint_id,
                lease: c.lease,
                attempt: c.attempts + 1,
                status: "delivered",
                next_at: None,
                started: chrono::Utc::now(),
                latency_ms: 5,
                status_code: Some(200),
                outcome: "delivered",
                error: None,
                response: None,
            })
            .collect();
        let mut tx = outbox::begin_recording(&pool).await.unwrap();
        assert_eq!(outbox::record(&mut tx, &done).await.unwrap(), 4);
        let whole: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(seq_scan), 0)::bigint FROM pg_stat_xact_user_tables
             WHERE relname IN ('deliveries', 'delivery_attempts')",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(whole, 0, "round {round}: deliveries read whole");
        tx.commit().await.unwrap();
    }
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
        )
        .await,
        40
    );
}
