//! The demo's webhook half: a partner receiver on loopback, subscribed to product changes and
//! anomalies, fed by the fanout function through the local queue.
//!
//! Every commit that queues deliveries sends a nudge to a local queue (as SQS or an Azure
//! output binding would); a consumer hands the nudges to the fanout's queue handler, which
//! drains the outbox. At the end the timer sweep runs until nothing is due, and the receiver's
//! view is printed: deliveries, retries, and how many signatures verified with the
//! `standardwebhooks` crate.
//!
//! The receiver listens on 127.0.0.1, which the SSRF guard refuses by default: the demo allows
//! exactly `127.0.0.1/32` (and `http://`) for its own fanout, as `FERRY_WEBHOOK_ALLOW_NETS` and
//! `FERRY_WEBHOOK_ALLOW_HTTP` would.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_fanout::endpoints::{self, NewEndpoint};
use ferry_fanout::guard::SystemLookup;
use ferry_fanout::{Fanout, FanoutConfig};
use ferry_shared::load::Nudge;
use ferry_shared::{Tick, TickHandler};
use sqlx::PgPool;

use crate::partner::{Behaviour, Partners};
use crate::queue::{consume, LocalQueue};

/// The tenant whose recently viewed list the demo prints.
pub const PARTNER_TENANT: &str = "acme";
/// What the partner subscribes to, for every demo tenant: product changes (not the
/// clickstream's `product.viewed`) and anomaly findings.
pub const PARTNER_TYPES: [&str; 4] = [
    "product.created",
    "product.updated",
    "product.deleted",
    "anomaly.*",
];

/// A loader's nudge hook that sends each nudge to `queue`, as SQS or an Azure output binding
/// would carry it to the fanout.
pub fn nudge_into(queue: Arc<LocalQueue>) -> Nudge {
    Arc::new(move |deliveries| {
        queue.send(
            ferry_shared::trigger::nudge_message(deliveries)
                .to_string()
                .into_bytes(),
        );
    })
}

/// The running partner, its endpoint and the fanout feeding it.
pub struct WebhookDemo {
    partners: Partners,
    endpoints: Vec<i64>,
    fanout: Arc<Fanout>,
    nudges: Arc<LocalQueue>,
    stop: Arc<AtomicBool>,
    consumer: tokio::task::JoinHandle<()>,
}

impl WebhookDemo {
    /// Starts the receiver, subscribes it (a new endpoint with a new secret) and starts the
    /// fanout consumer of the local nudge queue.
    #[allow(clippy::print_stdout)]
    pub async fn start(pool: &PgPool, mut cfg: FanoutConfig) -> anyhow::Result<WebhookDemo> {
        cfg.policy.allow_http = true;
        cfg.policy.allow = vec!["127.0.0.1/32".parse()?];
        // One first attempt in ten is answered 503 with Retry-After: 1, to show retries.
        let partners = Partners::start(
            1,
            Behaviour {
                refuse_first_of_every: Some(10),
                ..Behaviour::default()
            },
        )
        .await?;
        // One endpoint per demo tenant, all at the same receiver, each with its own secret.
        let mut ids = Vec::new();
        let mut secrets = Vec::new();
        for tenant in crate::demo::TENANTS {
            let (id, secret) = endpoints::add(
                pool,
                &cfg.policy,
                cfg.keys()?,
                &SystemLookup,
                &NewEndpoint {
                    tenant_id: tenant.into(),
                    url: partners.url(0),
                    event_types: PARTNER_TYPES.iter().map(|t| t.to_string()).collect(),
                    description: "ferry demo partner".into(),
                    ..Default::default()
                },
            )
            .await?;
            ids.push(id);
            secrets.push(secret.reveal());
        }
        partners.verify_with(&secrets)?;
        // An earlier demo that stopped early left its endpoints pointing at a dead port.
        sqlx::query(
            "UPDATE endpoints SET status = 'disabled', updated_at = now(),
                 disabled_reason = 'the demo that created it has ended'
             WHERE description = 'ferry demo partner' AND status = 'active'
               AND NOT endpoint_id = ANY($1)",
        )
        .bind(&ids)
        .execute(pool)
        .await?;
        println!(
            "partner receiver on {} (endpoints {ids:?} for tenants {}; types {})",
            partners.url(0),
            crate::demo::TENANTS.join(", "),
            PARTNER_TYPES.join(", ")
        );
        let fanout = Arc::new(Fanout::new(
            pool.clone(),
            cfg,
            Arc::new(SystemLookup),
            "fanout",
        )?);
        let nudges = Arc::new(LocalQueue::new(Duration::from_secs(60), Some(5)));
        let stop = Arc::new(AtomicBool::new(false));
        let consumer = tokio::spawn(consume(
            Arc::clone(&nudges),
            Arc::clone(&fanout),
            1,
            10,
            Some(Arc::clone(&stop)),
        ));
        Ok(WebhookDemo {
            partners,
            endpoints: ids,
            fanout,
            nudges,
            stop,
            consumer,
        })
    }

    /// The hook for the demo's loads: each commit that queued deliveries sends a nudge.
    pub fn nudge(&self) -> Nudge {
        nudge_into(Arc::clone(&self.nudges))
    }

    /// Waits for what is due (the timer sweep, as the platform would run it), prints the
    /// partner's view, and retires the demo endpoint (its URL dies with this process).
    #[allow(clippy::print_stdout)]
    pub async fn finish(self, pool: &PgPool) -> anyhow::Result<()> {
        let started = Instant::now();
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = self.consumer.await;
        // Sweep until no delivery of the endpoint is pending (retries fall due within seconds).
        loop {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM deliveries WHERE endpoint_id = ANY($1) AND status = 'pending'",
            )
            .bind(&self.endpoints)
            .fetch_one(pool)
            .await?;
            if pending == 0 || started.elapsed() > Duration::from_secs(60) {
                break;
            }
            let now = chrono::Utc::now();
            let _ = self
                .fanout
                .tick(Tick {
                    scheduled: now,
                    past_due: false,
                })
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let nudges = self.nudges.stats();
        let received = self.partners.received();
        let delivered: HashSet<&str> = received
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| r.webhook_id.as_str())
            .collect();
        let verified = received
            .iter()
            .filter(|r| matches!(r.verified, Some(Ok(()))))
            .count();
        let failures: Vec<&str> = received
            .iter()
            .filter_map(|r| match &r.verified {
                Some(Err(why)) => Some(why.as_str()),
                _ => None,
            })
            .collect();
        let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
        for r in received.iter().filter(|r| (200..300).contains(&r.status)) {
            *by_type.entry(r.event_type.as_str()).or_default() += 1;
        }
        let statuses: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) FROM deliveries WHERE endpoint_id = ANY($1)
             GROUP BY 1 ORDER BY 1",
        )
        .bind(&self.endpoints)
        .fetch_all(pool)
        .await?;
        println!("\npartner webhooks ({} tenants)", self.endpoints.len());
        println!(
            "  nudges sent / handled     {:>6} / {}",
            nudges.sent, nudges.acked
        );
        println!("  requests received         {:>10}", received.len());
        println!("  messages delivered        {:>10}", delivered.len());
        println!(
            "  answered 503, then retried{:>10}",
            received.iter().filter(|r| r.status == 503).count()
        );
        println!(
            "  signatures verified       {:>10} of {} (standardwebhooks)",
            verified,
            received.len()
        );
        if let Some(first) = failures.first() {
            println!(
                "  VERIFICATION FAILED       {:>10} (first: {first})",
                failures.len()
            );
        }
        for (ty, n) in &by_type {
            println!("    {ty:<24}{n:>10}");
        }
        let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{s} {n}")).collect();
        println!("  outbox for the endpoints: {}", statuses.join(", "));
        for id in &self.endpoints {
            endpoints::disable(pool, *id, "the demo that created it has ended").await?;
        }
        anyhow::ensure!(
            failures.is_empty(),
            "{} webhook signatures failed verification",
            failures.len()
        );
        Ok(())
    }
}

/// Prints the recently viewed list of the tenant's most active viewer: its newest `keep`
/// (`FERRY_RECENTLY_VIEWED`) products, as the query API reads it.
#[allow(clippy::print_stdout)]
pub async fn print_recently_viewed(pool: &PgPool, tenant: &str, keep: u32) -> anyhow::Result<()> {
    let user: Option<String> = sqlx::query_scalar(
        "SELECT user_id FROM recently_viewed WHERE tenant_id = $1
         GROUP BY user_id ORDER BY count(*) DESC, max(viewed_at) DESC LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    let Some(user) = user else {
        println!("\nrecently viewed ({tenant}): no product views yet");
        return Ok(());
    };
    let list = ferry_shared::queries::recently_viewed(pool, tenant, &user, i64::from(keep)).await?;
    println!(
        "\nrecently viewed by {user} ({tenant}), newest first, {} products:",
        list.len()
    );
    for ferry_shared::queries::Viewed {
        product_id: product,
        viewed_at: at,
    } in list
    {
        let price: Option<i64> = sqlx::query_scalar(
            "SELECT (state->>'price_cents')::bigint FROM products
             WHERE tenant_id = $1 AND product_id = $2 AND NOT deleted",
        )
        .bind(tenant)
        .bind(&product)
        .fetch_optional(pool)
        .await?
        .flatten();
        let price = price
            .map(|p| format!("  EUR {:.2}", p as f64 / 100.0))
            .unwrap_or_default();
        println!("  {}  {product}{price}", at.format("%H:%M:%S"));
    }
    Ok(())
}
