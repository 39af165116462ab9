//! Partner webhook receivers on loopback, for the demo and the fanout benchmark.
//!
//! Each receiver is a real HTTP server on `127.0.0.1`. It records every request it gets
//! (which receiver, `webhook-id`, the CloudEvent's id and type, when) and, once given the
//! endpoint's secrets, verifies the Standard Webhooks signature with the independent
//! `standardwebhooks` crate, as a partner would. It can also answer the first attempt of some
//! messages with `503 Retry-After: 1`, so the demo shows retries; and, for the benchmark, take
//! its time over every answer, answer every request with 500, or never answer at all.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::Deserialize;
use standardwebhooks::Webhook;
use warp::http::{HeaderMap, StatusCode};
use warp::hyper::body::Bytes;
use warp::Filter;

/// One request as a receiver saw it (when it arrived; a delayed answer goes later).
#[derive(Debug, Clone)]
pub struct Received {
    pub receiver: usize,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub at: Instant,
    /// `None` without secrets to check against; `Some(Err)` holds why verification failed.
    pub verified: Option<Result<(), String>>,
    /// The status answered.
    pub status: u16,
}

/// How receivers answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// Answer the first attempt of every `n`th message with 503 and `Retry-After: 1`.
    pub refuse_first_of_every: Option<u64>,
    /// Wait this long before answering (a partner's processing time).
    pub delay: std::time::Duration,
    /// Answer every request with `500 Internal Server Error`.
    pub fail: bool,
    /// Never answer: hold every request open until the client gives up.
    pub hang: bool,
}

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Received>>,
    secrets: RwLock<Vec<Webhook>>,
    seen: Mutex<HashSet<String>>,
}

/// A set of receivers and what they received.
pub struct Partners {
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: String,
    #[serde(default, rename = "type")]
    kind: String,
}

impl Partners {
    /// Starts `n` receivers, each on its own loopback port.
    pub async fn start(n: usize, behaviour: Behaviour) -> anyhow::Result<Partners> {
        Partners::start_each(vec![behaviour; n]).await
    }

    /// Starts one receiver per behaviour, each on its own loopback port.
    pub async fn start_each(behaviours: Vec<Behaviour>) -> anyhow::Result<Partners> {
        let shared = Arc::new(Shared::default());
        let n = behaviours.len();
        let mut addrs = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for (receiver, behaviour) in behaviours.into_iter().enumerate() {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
            addrs.push(listener.local_addr()?);
            let shared = Arc::clone(&shared);
            let route = warp::post()
                .and(warp::header::headers_cloned())
                .and(warp::body::bytes())
                .then(move |headers: HeaderMap, body: Bytes| {
                    let shared = Arc::clone(&shared);
                    async move {
                        let status = shared.receive(receiver, &headers, &body, behaviour);
                        if behaviour.hang {
                            std::future::pending::<()>().await;
                        }
                        if !behaviour.delay.is_zero() {
                            tokio::time::sleep(behaviour.delay).await;
                        }
                        let reply = warp::reply::with_status("", status);
                        warp::reply::with_header(reply, "retry-after", "1")
                    }
                });
            tasks.push(tokio::spawn(warp::serve(route).incoming(listener).run()));
        }
        Ok(Partners {
            addrs,
            shared,
            tasks,
        })
    }

    /// The URL of receiver `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}/hooks", self.addrs[i])
    }

    /// Verifies what arrives from now on against these secrets (`whsec_…`); any one matching
    /// signature passes, as during a rotation.
    pub fn verify_with(&self, secrets: &[String]) -> anyhow::Result<()> {
        let hooks = secrets
            .iter()
            .map(|s| Webhook::new(s).map_err(|e| anyhow::anyhow!("bad secret: {e:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        *self
            .shared
            .secrets
            .write()
            .unwrap_or_else(|p| p.into_inner()) = hooks;
        Ok(())
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many of the requests so far match `f` (without copying the log).
    pub fn count_by(&self, f: impl Fn(&Received) -> bool) -> usize {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| f(r))
            .count()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

impl Drop for Partners {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Shared {
    fn receive(
        &self,
        receiver: usize,
        headers: &HeaderMap,
        body: &[u8],
        behaviour: Behaviour,
    ) -> StatusCode {
        let at = Instant::now();
        let webhook_id = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let envelope: Envelope = serde_json::from_slice(body).unwrap_or(Envelope {
            id: String::new(),
            kind: String::new(),
        });
        let verified = {
            let hooks = self.secrets.read().unwrap_or_else(|p| p.into_inner());
            if hooks.is_empty() {
                None
            } else {
                let mut result = Err("no secret matched".to_owned());
                for h in hooks.iter() {
                    match h.verify(body, headers) {
                        Ok(()) => {
                            result = Ok(());
                            break;
                        }
                        Err(e) => result = Err(format!("{e:?}")),
                    }
                }
                Some(result)
            }
        };
        let first_attempt = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(webhook_id.clone());
        let refuse = behaviour
            .refuse_first_of_every
            .is_some_and(|n| first_attempt && n > 0 && fingerprint(&webhook_id) % n == 0);
        let status = match (&verified, refuse) {
            (Some(Err(_)), _) => StatusCode::UNAUTHORIZED,
            (_, true) => StatusCode::SERVICE_UNAVAILABLE,
            _ if behaviour.fail => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::NO_CONTENT,
        };
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Received {
                receiver,
                webhook_id,
                event_id: envelope.id,
                event_type: envelope.kind,
                at,
                verified,
                status: status.as_u16(),
            });
        status
    }
}

/// A stable number from a message id (FNV-1a), to pick which messages to refuse once.
fn fingerprint(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
