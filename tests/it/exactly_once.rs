//! The acceptance test of the exactly-once protocol: 200,000 money transactions that sum to
//! zero go through the real ingest handler and the local queue with producer retries, lost
//! acknowledgements, injected crashes at every crash point and a PostgreSQL crash-restart
//! mid-run. At the end there are exactly 200,000 rows, the sum is zero, and the ledger agrees
//! with the events table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{config, count, fresh_db, private_cluster};
use ferry_ingest::Ingest;
use ferry_local::postgres::LocalPostgres;
use ferry_local::queue::{drain, LocalQueue};
use ferry_shared::faults::CrashPoint;
use ferry_shared::{Loader, LoaderConfig, QueueBatch, QueueHandler, QueueOutcome};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const TRANSACTIONS: usize = 200_000;
const CRASH_RATE: f64 = 0.03;
const LOST_ACK_RATE: f64 = 0.05;

/// Reports some successfully processed messages as failed, as if the acknowledgement was lost
/// in transit (the message comes back after the visibility timeout).
struct LossyAcks {
    ingest: Ingest,
    lost: AtomicU64,
    rng: Mutex<SmallRng>,
}

impl QueueHandler for LossyAcks {
    async fn handle(&self, batch: QueueBatch) -> QueueOutcome {
        let mut outcome = self.ingest.handle(batch.clone()).await;
        let mut rng = self.rng.lock().unwrap();
        for m in &batch.messages {
            if !outcome.failed.contains(&m.id) && rng.random_bool(LOST_ACK_RATE) {
                outcome.failed.push(m.id.clone());
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        outcome
    }
}

/// The server the test crashes (immediate shutdown, recovery on start) once a third is through.
enum Server {
    Private(LocalPostgres),
    /// A shell command that restarts a Citus worker immediately (from scripts/test-citus.sh).
    CitusWorker(String),
}

impl Server {
    fn crash_and_restart(self) {
        match self {
            Server::Private(pg) => {
                pg.stop("immediate").expect("stop PostgreSQL");
                std::thread::sleep(Duration::from_secs(1));
                pg.start().expect("start PostgreSQL");
            }
            Server::CitusWorker(command) => {
                let status = std::process::Command::new("sh")
                    .args(["-c", &command])
                    .status()
                    .expect("run the restart command");
                assert!(status.success(), "{command}: {status}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_transactions_sum_to_zero_under_faults() {
    // The server to crash: a private PostgreSQL, or — under scripts/test-citus.sh — a worker of
    // the Citus cluster, so that loads die between PREPARE and COMMIT PREPARED.
    let citus_restart = std::env::var("FERRY_TEST_CITUS_RESTART")
        .ok()
        .filter(|c| !c.is_empty());
    let cfg = config(&[
        ("FERRY_DB_CONNECT_TIMEOUT", "2s"),
        ("FERRY_DB_MAX_CONNECTIONS", "6"),
    ]);
    let (server, url) = match &citus_restart {
        Some(command) => {
            let db = fresh_db().await;
            (Server::CitusWorker(command.clone()), db.url)
        }
        None => {
            let pg = tokio::task::spawn_blocking(private_cluster)
                .await
                .unwrap()
                .expect("private PostgreSQL");
            let setup = sqlx::PgPool::connect(&pg.url("postgres")).await.unwrap();
            sqlx::query("CREATE DATABASE money")
                .execute(&setup)
                .await
                .unwrap();
            setup.close().await;
            let url = pg.url("money");
            (Server::Private(pg), url)
        }
    };
    let pool = ferry_shared::db::pool(&cfg.db, &url, "exactly-once").unwrap();
    ferry_shared::db::migrate(&pool).await.unwrap();
    for t in ["t1", "t2", "t3", "t4"] {
        ferry_shared::db::add_tenant(&pool, t, t).await.unwrap();
    }

    // 100,000 transfers, each a debit and a credit of the same amount, shuffled into messages.
    let mut rng = SmallRng::seed_from_u64(2026);
    let now = chrono::Utc::now();
    let mut events = Vec::with_capacity(TRANSACTIONS);
    for i in 0..TRANSACTIONS / 2 {
        let amount: i64 = rng.random_range(1..1_000_000);
        let tenant = format!("t{}", 1 + i % 4);
        let time = (now - chrono::Duration::seconds(rng.random_range(0..3 * 3600))).to_rfc3339();
        for (leg, signed) in [("debit", -amount), ("credit", amount)] {
            events.push(json!({
                "specversion": "1.0", "id": format!("tx-{i}-{leg}"), "source": "/payments/ledger",
                "type": "money.moved", "time": time, "tenantid": tenant,
                "data": {"amount": signed, "transfer": i}
            }));
        }
    }
    for i in (1..events.len()).rev() {
        events.swap(i, rng.random_range(0..=i));
    }
    let queue = Arc::new(LocalQueue::new(Duration::from_millis(1500), None));
    let mut messages = 0usize;
    let mut resent = 0usize;
    let mut rest = &events[..];
    while !rest.is_empty() {
        let n = rng.random_range(1..=60).min(rest.len());
        let body = json!(rest[..n]).to_string().into_bytes();
        rest = &rest[n..];
        // A producer retry: the same events again, as a new message.
        if rng.random_bool(0.1) {
            queue.send(body.clone());
            resent += 1;
        }
        queue.send(body);
        messages += 1;
    }

    let crashes: Arc<HashMap<CrashPoint, AtomicU64>> = Arc::new(
        [
            CrashPoint::AfterClaim,
            CrashPoint::AfterLoad,
            CrashPoint::AfterCommit,
        ]
        .into_iter()
        .map(|p| (p, AtomicU64::new(0)))
        .collect(),
    );
    let hook_counts = Arc::clone(&crashes);
    let hook_rng = Mutex::new(SmallRng::seed_from_u64(7));
    let loader = Loader::new(
        pool.clone(),
        LoaderConfig {
            partition_secs: 300,
            copy_threshold: cfg.copy_threshold,
            recently_viewed: 20,
            // Small, so that loads also write derived state before their commit, under crashes.
            derive_after: 40,
            // Short, so that loads go in both ways: without ON CONFLICT, and redone with it
            // after meeting the producer's retries.
            cautious_for: Duration::from_millis(200),
        },
    )
    .with_faults(Arc::new(move |point| {
        let crash = hook_rng.lock().unwrap().random_bool(CRASH_RATE);
        if crash {
            hook_counts[&point].fetch_add(1, Ordering::Relaxed);
        }
        crash
    }));
    let handler = Arc::new(LossyAcks {
        ingest: Ingest::new(loader, cfg.limits.clone(), "ingest"),
        lost: AtomicU64::new(0),
        rng: Mutex::new(SmallRng::seed_from_u64(11)),
    });

    // Crash the database (immediate shutdown, recovery on start) once a third is through.
    let restarted = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (queue, restarted) = (Arc::clone(&queue), Arc::clone(&restarted));
        let total = (messages + resent) as u64;
        tokio::spawn(async move {
            while queue.stats().acked < total / 3 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::task::spawn_blocking(move || server.crash_and_restart())
                .await
                .unwrap();
            restarted.store(true, Ordering::SeqCst);
        })
    };

    drain(Arc::clone(&queue), Arc::clone(&handler), 4, 10).await;
    chaos.await.unwrap();
    assert!(
        restarted.load(Ordering::SeqCst),
        "the database was restarted mid-run"
    );

    let stats = queue.stats();
    let sent = (messages + resent) as u64;
    let duplicate_deliveries = stats.redeliveries + resent as u64;
    eprintln!(
        "messages {messages} + {resent} producer retries; deliveries {} ({} redelivered); \
         lost acks {}; crashes {:?}",
        stats.deliveries,
        stats.redeliveries,
        handler.lost.load(Ordering::Relaxed),
        crashes
            .iter()
            .map(|(p, n)| (*p, n.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
    );
    assert!(
        duplicate_deliveries * 10 >= sent,
        "at least 10% duplicate deliveries"
    );
    for (point, n) in crashes.iter() {
        assert!(
            n.load(Ordering::Relaxed) > 0,
            "no crash injected at {point:?}"
        );
    }
    assert_eq!(stats.dead, 0);

    if citus_restart.is_some() {
        // Loads whose worker died after PREPARE were committed on the coordinator; Citus
        // commits their prepared halves on the worker when it recovers (its daemon does every
        // minute). Until then the rollup holds its window (tests/it/citus.rs).
        let recovered = count(&pool, "SELECT recover_prepared_transactions()::bigint").await;
        eprintln!("Citus: {recovered} prepared transaction(s) recovered after the worker restart");
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM events").await,
        TRANSACTIONS as i64
    );
    assert_eq!(
        count(
            &pool,
            "SELECT coalesce(sum((data->>'amount')::bigint), -1)::bigint FROM events"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(DISTINCT (data->>'transfer')) FROM events"
        )
        .await,
        (TRANSACTIONS / 2) as i64
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ingest_ledger").await,
        sent as i64,
        "one ledger row per message"
    );
    assert_eq!(
        count(&pool, "SELECT sum(events)::bigint FROM ingest_ledger").await,
        TRANSACTIONS as i64,
        "ledger counts agree with the events table"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM quarantine").await, 0);
}
