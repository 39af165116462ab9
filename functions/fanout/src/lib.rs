//! The fanout function: sends the webhook outbox to partner endpoints.
//!
//! Triggered by queue nudges (sent after a load commits deliveries; best effort) and by a
//! timer sweep (the safety net for lost nudges, and the clock for retries). Either trigger
//! drains: claim due deliveries under a lease, send them concurrently (at most
//! `FERRY_FANOUT_PER_ENDPOINT` at once per endpoint, one at a time to an endpoint whose
//! circuit is open because it is failing, and no faster than an endpoint's rate limit),
//! record every attempt, and repeat until nothing is due, or until the next retry is
//! further away than `FERRY_FANOUT_LINGER`, or the budget is spent.
//!
//! Each request is a structured CloudEvent signed as Standard Webhooks ([`sign`]), sent only
//! to addresses that pass the SSRF guard ([`guard`]). What an answer means is in [`send`];
//! what is written, in [`outbox`].

mod config;
pub mod endpoints;
pub mod guard;
pub mod keys;
pub mod outbox;
pub mod send;
pub mod sign;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use ferry_shared::config::Config;
use ferry_shared::error::Error;
use ferry_shared::trigger::{QueueBatch, QueueHandler, QueueOutcome, Retry, Tick, TickHandler};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

pub use crate::config::{FanoutConfig, DEFAULT_SCHEDULE, MAX_DELAY, MIN_RETRY_AFTER};
use crate::guard::{GuardedResolver, Lookup, SystemLookup};
use crate::keys::Keyring;
use crate::outbox::{Claimed, Done};
use crate::send::{Outgoing, Verdict};
use crate::sign::Secret;

/// Opens an endpoint's live signing secrets. Every one must open: signing with only some of
/// them could fail a receiver that already holds the newest. A secret stored in plain by a
/// release before encryption at rest is used as it is (until `ferry secrets rekey`).
fn open_secrets(
    keys: Option<&Keyring>,
    endpoint_id: i64,
    stored: &[outbox::StoredSecret],
) -> Result<Vec<Secret>, String> {
    let mut out = Vec::with_capacity(stored.len());
    for s in stored {
        let plain = match (&s.key_id, keys) {
            (None, _) => s.bytes.clone(),
            (Some(_), None) => return Err(keys::KeyError::Missing.to_string()),
            (Some(k), Some(keys)) => keys.open(endpoint_id, k, &s.bytes).map_err(|e| {
                error!(endpoint = endpoint_id, error = %e, "a signing secret cannot be opened");
                format!("signing secret: {e}")
            })?,
        };
        out.push(Secret::from_bytes(plain).map_err(|e| format!("signing secret: {e}"))?);
    }
    if out.is_empty() {
        return Err(format!(
            "endpoint {endpoint_id} has no active signing secret; issue one with \
             `ferry endpoint rotate-secret {endpoint_id}`"
        ));
    }
    Ok(out)
}

/// What one drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub attempts: u64,
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    /// Endpoints disabled (410, or failing for `disable_after`).
    pub disabled: u64,
    /// Attempts not recorded because their lease had run out and the row was re-claimed.
    pub lost_leases: u64,
    /// Claim statements run (each a round trip).
    pub claims: u64,
}

/// The fanout function.
pub struct Fanout {
    pool: PgPool,
    client: reqwest::Client,
    cfg: Arc<FanoutConfig>,
    name: String,
    /// When each rate-limited endpoint may next be sent to.
    pacing: Arc<Mutex<HashMap<i64, Instant>>>,
}

impl Fanout {
    /// From the environment: pool, settings and the guarded HTTP client.
    pub fn from_config(cfg: &Config, fcfg: FanoutConfig) -> anyhow::Result<Fanout> {
        let name = cfg.function_name.clone().unwrap_or_else(|| "fanout".into());
        let pool = ferry_shared::db::pool(&cfg.db, cfg.database_url()?, &name)?;
        Fanout::new(pool, fcfg, Arc::new(SystemLookup), &name)
    }

    /// With a given pool and resolver (tests replace DNS with a scripted lookup).
    pub fn new(
        pool: PgPool,
        cfg: FanoutConfig,
        lookup: Arc<dyn Lookup>,
        name: &str,
    ) -> anyhow::Result<Fanout> {
        let client = client(&cfg, lookup)?;
        Ok(Fanout {
            pool,
            client,
            cfg: Arc::new(cfg),
            name: name.to_owned(),
            pacing: Arc::default(),
        })
    }

    pub fn function(&self) -> &str {
        &self.name
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn config(&self) -> &FanoutConfig {
        &self.cfg
    }

    /// Sends one signed `ferry.endpoint.test` event to an endpoint now, whatever its status,
    /// through the same guard, client and signing as a delivery. Nothing is recorded: the
    /// endpoint's health and deliveries are untouched. Returns the endpoint's URL and the
    /// attempt.
    pub async fn send_test(
        &self,
        endpoint_id: i64,
    ) -> Result<(String, send::Attempt), endpoints::EndpointError> {
        let (tenant, url, secrets) = outbox::endpoint_for_test(&self.pool, endpoint_id)
            .await
            .map_err(|e| endpoints::EndpointError::Invalid(e.to_string()))?
            .ok_or(endpoints::EndpointError::NotFound(endpoint_id))?;
        let secrets = open_secrets(self.cfg.keys.as_ref(), endpoint_id, &secrets)
            .map_err(endpoints::EndpointError::Invalid)?;
        let now = Utc::now();
        let nonce: u64 = rand::random();
        let id = format!("test_{}_{nonce:016x}", now.timestamp_millis());
        let body = serde_json::json!({
            "specversion": "1.0",
            "id": id,
            "source": "ferry",
            "type": "ferry.endpoint.test",
            "time": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "tenantid": tenant,
            "datacontenttype": "application/json",
            "data": {
                "endpoint_id": endpoint_id,
                "note": "a test event sent by `ferry endpoint test`; verify its signature as for any webhook",
            },
        })
        .to_string();
        let message_id = format!("msg_{id}");
        let out = Outgoing {
            url: &url,
            message_id: &message_id,
            body: &body,
            secrets: &secrets,
        };
        let attempt = send::attempt(
            &self.client,
            &self.cfg.policy,
            &out,
            self.cfg.retry_after_max,
        )
        .await;
        Ok((url, attempt))
    }

    /// Sends what is due until nothing is, or the budget is spent.
    pub async fn drain(&self) -> Result<Report, Error> {
        let start = Instant::now();
        let mut report = Report::default();
        let mut sends = InFlight::default();
        let mut done: Vec<Done> = Vec::new();
        let drained = self
            .drain_until_done(start, &mut sends, &mut done, &mut report)
            .await;
        if let Err(e) = drained {
            // The database failed mid-drain: let the requests under way finish and try to
            // record every attempt made, so nothing sent goes unlogged or is sent again once
            // its lease runs out (if this flush fails too, the leases do run out).
            while let Some(joined) = sends.tasks.join_next().await {
                if let Ok((claimed, attempt)) = joined {
                    done.push(self.decide(&claimed, attempt));
                }
            }
            if let Err(again) = self.flush(&mut done, &mut report).await {
                error!(error = %again, "attempts made could not be recorded");
            }
            return Err(e);
        }
        if report.attempts > 0 {
            info!(
                attempts = report.attempts,
                delivered = report.delivered,
                retried = report.retried,
                failed = report.failed,
                disabled = report.disabled,
                claims = report.claims,
                elapsed_ms = start.elapsed().as_millis() as u64,
                "fanout drained"
            );
        }
        Ok(report)
    }

    /// The drain loop: claim while there is room, collect finished attempts, record them in
    /// batches; with nothing in flight, linger for what falls due soon.
    async fn drain_until_done(
        &self,
        start: Instant,
        sends: &mut InFlight,
        done: &mut Vec<Done>,
        report: &mut Report,
    ) -> Result<(), Error> {
        let mut oldest_done: Option<Instant> = None;
        // Nothing claimable right now; claim again once an attempt finishes.
        let mut idle = false;
        loop {
            let in_budget = start.elapsed() < self.cfg.budget;
            if in_budget && !idle {
                if let Some(claimed_none) = self.claim_more(sends, done).await? {
                    report.claims += 1;
                    idle = claimed_none;
                }
            }
            if sends.tasks.is_empty() {
                self.flush(done, report).await?;
                if !in_budget || !self.wait_for_due(start).await? {
                    return Ok(());
                }
                idle = false;
                continue;
            }
            // Wait for an attempt, flushing results at least every 25 ms, and waking when free
            // slots have waited long enough to be claimed (within the budget: after it, nothing
            // is claimed). While nothing is claimable (`idle`) it wakes about once a
            // millisecond once free slots have waited: waiting 25 ms then instead took 50
            // partners at 100 ms from 0.93 to 0.90 of the limit in three runs each (a
            // drain's first claims can find nothing yet).
            let flush_every = Duration::from_millis(25);
            let wait = if in_budget {
                sends.until_partial_claim().min(flush_every)
            } else {
                flush_every
            };
            if let Some(joined) = sends.next(wait).await {
                idle = false;
                match joined {
                    Ok((claimed, attempt)) => {
                        sends.observe(&attempt);
                        done.push(self.decide(&claimed, attempt));
                        oldest_done.get_or_insert_with(Instant::now);
                    }
                    Err(e) => error!(error = %e, "a send task failed; its lease will run out"),
                }
            }
            let due = oldest_done.is_some_and(|t| t.elapsed() >= Duration::from_millis(25));
            if done.len() >= 200 || due {
                self.flush(done, report).await?;
                oldest_done = None;
            }
        }
    }

    /// Claims due deliveries into the free send slots and starts them. Claims in batches: one
    /// claim per finished send would cost a round trip per delivery (the claim, not the
    /// sending, was the bottleneck at about 900/s). `None` when it did not try; else whether
    /// nothing was claimable.
    ///
    /// Fewer free slots than a batch are claimed too once the first of them has been free for
    /// a while ([`InFlight::partial_wait`]: a twentieth of a typical send, 2–20 ms): otherwise
    /// the slots below a batch would stay empty for good whenever sends do not finish in
    /// batches (a partner timing out, partners answering in a second: 49 of 64 slots in use,
    /// second after second), each batch refilling only what the previous one freed. A fixed
    /// 20 ms cost partners answering in 100 ms a tenth of their throughput once their sends
    /// stopped finishing together (beside a partner that fails: `bench-fanout.sh`).
    ///
    /// An endpoint with a failure not yet recorded gets nothing until it is: its circuit may be
    /// about to open, and a probe must wait for the failure before it.
    async fn claim_more(&self, sends: &mut InFlight, done: &[Done]) -> Result<Option<bool>, Error> {
        let free = self
            .cfg
            .concurrency
            .saturating_sub(sends.counted(self.cfg.concurrency));
        let batch = (self.cfg.concurrency / 4).max(1);
        let waited = sends.until_partial_claim().is_zero();
        // After a claim that found less than it had room for (the per-endpoint caps bind, or
        // little is due), claiming again for every slot freed would cost a round trip per
        // delivery: wait for half an endpoint's worth.
        let enough = if sends.short {
            sends.freed >= (self.cfg.per_endpoint / 2).max(1)
        } else {
            free >= batch
        };
        if free == 0 {
            // The slot freed went to the stuck sends carried above the concurrency.
            sends.free_since = None;
            return Ok(None);
        }
        if !enough && !sends.tasks.is_empty() && !waited {
            return Ok(None);
        }
        sends.free_since = None;
        sends.freed = 0;
        let mut busy = sends.busy();
        for d in done.iter().filter(|d| d.failed()) {
            busy.insert(d.endpoint_id, self.cfg.per_endpoint);
        }
        let claimed = outbox::claim(
            &self.pool,
            free,
            self.cfg.per_endpoint,
            &busy,
            self.cfg.lease(),
            self.cfg.probe_max,
        )
        .await?;
        let none = claimed.is_empty();
        sends.short = claimed.len() < free;
        for c in claimed {
            let endpoint = c.endpoint_id;
            // A rate-limited send may wait its turn before it is sent: never counted as stuck.
            let paced = c.rate_limit.is_some();
            sends.spawn(endpoint, paced, self.send(c));
        }
        Ok(Some(none))
    }

    /// With nothing in flight: waits for the next retry if it falls due within the linger
    /// time (and the budget). Returns whether there may be something to claim.
    async fn wait_for_due(&self, start: Instant) -> Result<bool, Error> {
        let Some(at) = outbox::next_due(&self.pool, self.cfg.probe_max).await? else {
            return Ok(false);
        };
        let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let left = self.cfg.budget.saturating_sub(start.elapsed());
        if wait > self.cfg.linger || wait >= left {
            return Ok(false);
        }
        // Due now but not claimable (a race with another instance): do not spin.
        tokio::time::sleep(wait.max(Duration::from_millis(20))).await;
        Ok(true)
    }

    /// One attempt for a claimed delivery, paced by the endpoint's rate limit.
    fn send(
        &self,
        claimed: Claimed,
    ) -> impl std::future::Future<Output = (Claimed, send::Attempt)> + Send + 'static {
        let client = self.client.clone();
        let cfg = Arc::clone(&self.cfg);
        let pacing = Arc::clone(&self.pacing);
        async move {
            if let Some(rate) = claimed.rate_limit.filter(|r| *r > 0) {
                let slot = {
                    let mut next = pacing.lock().unwrap_or_else(|p| p.into_inner());
                    let now = Instant::now();
                    let slot = next
                        .get(&claimed.endpoint_id)
                        .map_or(now, |t| (*t).max(now));
                    next.insert(
                        claimed.endpoint_id,
                        slot + Duration::from_secs_f64(1.0 / rate as f64),
                    );
                    slot
                };
                // Waiting that long would let the lease run out mid-request, and another
                // instance could claim and send it too: give it back for later instead.
                let lease_left = (claimed.lease - Utc::now()).to_std().unwrap_or_default();
                let wait = slot.saturating_duration_since(Instant::now());
                if wait + cfg.timeout + Duration::from_secs(1) > lease_left {
                    return (claimed, send::Attempt::deferred(Utc::now(), wait));
                }
                tokio::time::sleep_until(slot.into()).await;
            }
            let attempt =
                match open_secrets(cfg.keys.as_ref(), claimed.endpoint_id, &claimed.secrets) {
                    Err(problem) => send::Attempt::unsent(Utc::now(), problem, None),
                    Ok(secrets) => {
                        let out = Outgoing {
                            url: &claimed.url,
                            message_id: &claimed.message_id,
                            body: &claimed.body,
                            secrets: &secrets,
                        };
                        send::attempt(&client, &cfg.policy, &out, cfg.retry_after_max).await
                    }
                };
            (claimed, attempt)
        }
    }

    /// What an attempt means for its delivery.
    fn decide(&self, c: &Claimed, a: send::Attempt) -> Done {
        let mut number = c.attempts + 1;
        let finished = a.started + a.latency;
        let (status, next_at, outcome) = match &a.verdict {
            Verdict::Delivered => ("delivered", None, "delivered"),
            Verdict::Deferred { after } => {
                number = c.attempts;
                ("pending", Some(later(finished, *after)), "deferred")
            }
            // Parked until the endpoint is enabled again; then due at once.
            Verdict::Gone => ("pending", Some(finished), "gone"),
            Verdict::Retry { after } => match self.cfg.schedule.get(number as usize - 1) {
                None => ("failed", None, "failed"),
                Some(step) => {
                    // Honour Retry-After, but never hammer: at least MIN_RETRY_AFTER.
                    let delay = after.map_or_else(|| jitter(*step), |a| a.max(MIN_RETRY_AFTER));
                    ("pending", Some(later(finished, delay)), "retry")
                }
            },
        };
        if let Some(e) = &a.error {
            // A retry is the ordinary life of a webhook (a partner's 503, a deploy); only a
            // delivery that gives up, or an endpoint that is gone, needs someone to look.
            if matches!(outcome, "retry" | "deferred") {
                info!(
                    delivery = c.delivery_id,
                    endpoint = c.endpoint_id,
                    attempt = number,
                    error = %e,
                    next_at = ?next_at,
                    "webhook attempt failed; retry scheduled"
                );
            } else {
                warn!(
                    delivery = c.delivery_id,
                    endpoint = c.endpoint_id,
                    attempt = number,
                    error = %e,
                    outcome,
                    "webhook attempt failed"
                );
            }
        }
        Done {
            delivery_id: c.delivery_id,
            endpoint_id: c.endpoint_id,
            lease: c.lease,
            attempt: number,
            status,
            next_at,
            started: a.started,
            latency_ms: a.latency.as_millis().min(i32::MAX as u128) as i32,
            status_code: a.status.map(i32::from),
            outcome,
            error: a.error,
            response: a.response,
        }
    }

    async fn flush(&self, done: &mut Vec<Done>, report: &mut Report) -> Result<(), Error> {
        if done.is_empty() {
            return Ok(());
        }
        // Attempts and what they mean for their endpoints (a 410 disables it) commit together;
        // but the attempts must not be lost to a failed health update (a lock timeout on a
        // busy endpoint row, say): that part runs under a savepoint, and the sweep's next
        // flush for the endpoint catches up.
        let mut tx = outbox::begin_recording(&self.pool).await?;
        let recorded = outbox::record(&mut tx, done).await?;
        sqlx::query("SAVEPOINT health").execute(&mut *tx).await?;
        let disabled = match outbox::update_health(&mut tx, done, self.cfg.disable_after).await {
            Ok(disabled) => disabled,
            Err(e) => {
                warn!(error = %e, "endpoint health not updated; the attempts are recorded");
                sqlx::query("ROLLBACK TO SAVEPOINT health")
                    .execute(&mut *tx)
                    .await?;
                Vec::new()
            }
        };
        tx.commit().await?;
        report.attempts += done.len() as u64;
        report.lost_leases += (done.len() - recorded) as u64;
        for d in done.iter() {
            match d.outcome {
                "delivered" => report.delivered += 1,
                "failed" => report.failed += 1,
                _ => report.retried += 1,
            }
        }
        for d in &disabled {
            warn!(endpoint = d.endpoint_id, tenant = %d.tenant_id, reason = %d.reason,
                  "endpoint disabled");
        }
        report.disabled += disabled.len() as u64;
        done.clear();
        Ok(())
    }
}

/// `at + delay`, never overflowing: settings cap delays at [`MAX_DELAY`].
fn later(at: chrono::DateTime<Utc>, delay: Duration) -> chrono::DateTime<Utc> {
    let delay = chrono::TimeDelta::from_std(delay.min(MAX_DELAY)).unwrap_or(chrono::TimeDelta::MAX);
    at.checked_add_signed(delay).unwrap_or(at)
}

/// ±20% around `step`.
fn jitter(step: Duration) -> Duration {
    step.mul_f64(rand::random_range(0.8..=1.2))
}

/// The HTTP client: guarded resolver, no redirects, no proxies (a proxy would resolve the
/// host itself, past the guard), the request timeout, HTTPS unless the policy allows HTTP.
pub fn client(cfg: &FanoutConfig, lookup: Arc<dyn Lookup>) -> anyhow::Result<reqwest::Client> {
    let resolver = GuardedResolver::new(Arc::new(cfg.policy.clone()), lookup);
    Ok(reqwest::Client::builder()
        .dns_resolver(resolver)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(!cfg.policy.allow_http)
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?)
}

impl QueueHandler for Fanout {
    /// A nudge carries nothing but "look now": drain. If the database is unreachable the
    /// nudges are reported failed, so the queue delivers them again.
    async fn handle(&self, batch: QueueBatch) -> QueueOutcome {
        match self.drain().await {
            Ok(_) => QueueOutcome::default(),
            Err(e) => {
                error!(error = %e, "fanout drain failed");
                QueueOutcome {
                    failed: batch.messages.into_iter().map(|m| m.id).collect(),
                }
            }
        }
    }
}

impl TickHandler for Fanout {
    async fn tick(&self, _tick: Tick) -> Result<(), Retry> {
        self.drain().await.map(|_| ()).map_err(|e| {
            error!(error = %e, "fanout sweep failed");
            Retry(e.to_string())
        })
    }
}

/// The longest a free send slot waits for others to fill a batch before it is claimed alone;
/// also the wait before the typical send is known, and after a claim that found less than it
/// had room for.
const PARTIAL_CLAIM_AFTER: Duration = Duration::from_millis(20);

/// A send under way this long (and ten times a typical send) no longer counts against the
/// concurrency ([`InFlight::counted`]).
const STUCK_AFTER: Duration = Duration::from_secs(1);

/// The shortest such wait: about a claim's round trip and more, so that partners answering at
/// once are still claimed for in batches (a claim per delivery held the drain to about 900/s).
const PARTIAL_CLAIM_MIN: Duration = Duration::from_millis(2);

/// The sends under way, and how many per endpoint.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<(Claimed, send::Attempt)>,
    per_endpoint: HashMap<i64, usize>,
    /// Which endpoint each send task serves (so even a task that panicked frees its slot), and
    /// when it started (none for a send that may wait for its endpoint's rate limit).
    endpoint_of: HashMap<tokio::task::Id, (i64, Option<Instant>)>,
    /// When the first slot freed since the last claim was freed.
    free_since: Option<Instant>,
    /// Slots freed since the last claim.
    freed: usize,
    /// Whether the last claim found less than it had room for.
    short: bool,
    /// How long answered sends take, smoothed (timeouts and unsent attempts left out).
    typical: Option<Duration>,
}

impl InFlight {
    /// Endpoints with sends under way, and how many.
    fn busy(&self) -> HashMap<i64, usize> {
        self.per_endpoint
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    /// Sends under way that count against the concurrency: all of them, less the stuck ones
    /// (under way ten times as long as a typical send, and at least [`STUCK_AFTER`]), up to a
    /// quarter of the concurrency. A partner that never answers holds its requests until they
    /// time out (8 slots for 5 s, then a probe now and then); without this, the other partners
    /// lost those slots for as long (`bench-fanout.sh`, with the partial-claim wait of
    /// [`InFlight::partial_wait`] already: 504–560 healthy deliveries a second against 576–640
    /// alone, until the circuit opened). A send to a rate-limited endpoint is never stuck: it
    /// may be waiting its turn. `typical` is over every partner, so beside fast partners a
    /// healthy one answering in over a second is counted as stuck too.
    fn counted(&self, concurrency: usize) -> usize {
        let n = self.tasks.len();
        let Some(typical) = self.typical else {
            return n;
        };
        let after = typical.saturating_mul(10).max(STUCK_AFTER);
        let stuck = self
            .endpoint_of
            .values()
            .filter(|(_, started)| started.is_some_and(|t| t.elapsed() >= after))
            .count();
        n.saturating_sub(stuck.min(concurrency / 4))
    }

    /// Notes how long an attempt took, if the partner answered.
    fn observe(&mut self, attempt: &send::Attempt) {
        if attempt.status.is_some() {
            self.typical = Some(match self.typical {
                Some(t) => t.mul_f64(0.9) + attempt.latency.mul_f64(0.1),
                None => attempt.latency,
            });
        }
    }

    /// How long free slots wait for a batch before they are claimed anyway: a twentieth of a
    /// typical send (an idle slot costs a send's worth of throughput in proportion), between
    /// [`PARTIAL_CLAIM_MIN`] and [`PARTIAL_CLAIM_AFTER`]; the latter after a short claim, whose
    /// rule is to wait for freed slots ([`Fanout::claim_more`]).
    fn partial_wait(&self) -> Duration {
        match self.typical {
            Some(t) if !self.short => (t / 20).clamp(PARTIAL_CLAIM_MIN, PARTIAL_CLAIM_AFTER),
            _ => PARTIAL_CLAIM_AFTER,
        }
    }

    /// How long until the free slots may be claimed short of a batch (zero: now; the longest
    /// wait when no slot was freed since the last claim).
    fn until_partial_claim(&self) -> Duration {
        match self.free_since {
            Some(t) => self.partial_wait().saturating_sub(t.elapsed()),
            None => PARTIAL_CLAIM_AFTER,
        }
    }

    fn spawn(
        &mut self,
        endpoint: i64,
        paced: bool,
        send: impl std::future::Future<Output = (Claimed, send::Attempt)> + Send + 'static,
    ) {
        *self.per_endpoint.entry(endpoint).or_default() += 1;
        let task = self.tasks.spawn(send);
        let started = (!paced).then(Instant::now);
        self.endpoint_of.insert(task.id(), (endpoint, started));
    }

    /// The next finished send, waiting at most `wait`; its endpoint's slot is freed.
    async fn next(
        &mut self,
        wait: Duration,
    ) -> Option<Result<(Claimed, send::Attempt), tokio::task::JoinError>> {
        let joined = tokio::time::timeout(wait, self.tasks.join_next_with_id())
            .await
            .ok()??;
        let task = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        self.free_since.get_or_insert_with(Instant::now);
        self.freed += 1;
        if let Some((endpoint, _)) = self.endpoint_of.remove(&task) {
            if let Some(n) = self.per_endpoint.get_mut(&endpoint) {
                *n = n.saturating_sub(1);
            }
        }
        Some(joined.map(|(_, result)| result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_attempt_time_never_overflows() {
        let at = Utc::now();
        assert_eq!(
            later(at, Duration::from_secs(90)),
            at + chrono::TimeDelta::seconds(90)
        );
        assert_eq!(
            later(at, Duration::MAX),
            at + chrono::TimeDelta::from_std(MAX_DELAY).unwrap()
        );
        assert_eq!(
            later(chrono::DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)),
            chrono::DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn free_slots_wait_a_twentieth_of_a_typical_send_within_bounds() {
        let answered = |ms| send::Attempt {
            started: Utc::now(),
            latency: Duration::from_millis(ms),
            status: Some(200),
            verdict: Verdict::Delivered,
            error: None,
            response: None,
        };
        let mut sends = InFlight::default();
        assert_eq!(sends.partial_wait(), PARTIAL_CLAIM_AFTER);
        sends.observe(&answered(100));
        assert_eq!(sends.partial_wait(), Duration::from_millis(5));
        // A timeout is not a typical send.
        let timed_out = send::Attempt {
            status: None,
            latency: Duration::from_secs(5),
            ..answered(0)
        };
        sends.observe(&timed_out);
        assert_eq!(sends.partial_wait(), Duration::from_millis(5));
        for _ in 0..100 {
            sends.observe(&answered(1));
        }
        assert_eq!(sends.partial_wait(), PARTIAL_CLAIM_MIN);
        for _ in 0..100 {
            sends.observe(&answered(1_000));
        }
        assert_eq!(sends.partial_wait(), PARTIAL_CLAIM_AFTER);
        sends.typical = Some(Duration::from_millis(100));
        sends.free_since = Some(Instant::now() - Duration::from_millis(10));
        assert!(sends.until_partial_claim().is_zero());
        // After a short claim, 20 ms.
        sends.short = true;
        assert_eq!(sends.partial_wait(), PARTIAL_CLAIM_AFTER);
        assert!(sends.until_partial_claim() > Duration::from_millis(5));
    }

    #[tokio::test]
    async fn stuck_sends_stop_counting_up_to_a_quarter_of_the_concurrency() {
        let never = std::future::pending::<(Claimed, send::Attempt)>;
        let mut sends = InFlight::default();
        for endpoint in 0..20 {
            sends.spawn(endpoint, endpoint >= 18, never());
        }
        // Before a typical send is known, nothing is stuck.
        assert_eq!(sends.counted(64), 20);
        sends.typical = Some(Duration::from_millis(100));
        assert_eq!(sends.counted(64), 20);
        // Under way for 2 s: stuck (10 x 100 ms, at least 1 s), except the paced ones.
        let long_ago = Instant::now() - Duration::from_secs(2);
        for (_, started) in sends.endpoint_of.values_mut() {
            if let Some(t) = started {
                *t = long_ago;
            }
        }
        assert_eq!(sends.counted(64), 4, "18 stuck, at most 16 discounted");
        assert_eq!(sends.counted(8), 18, "at most 2 of 8");
        // Against a typical send of 300 ms, 2 s is not ten of them.
        sends.typical = Some(Duration::from_millis(300));
        assert_eq!(sends.counted(64), 20);
        sends.tasks.abort_all();
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..1000 {
            let j = jitter(Duration::from_secs(100));
            assert!(j >= Duration::from_secs(80) && j <= Duration::from_secs(120));
        }
    }
}
