//! A partner's webhook receiver on loopback: answers from a script, records every request
//! (time, headers, body), and tracks how many requests for one `webhook-id` overlap.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warp::http::{HeaderMap, Response, StatusCode};
use warp::hyper::body::Bytes;
use warp::Filter;

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    /// The answer once the script is used up.
    default: Option<Reply>,
    log: Vec<Received>,
    open: HashMap<String, usize>,
    max_overlap: usize,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    /// Starts on a free loopback port.
    pub async fn start() -> Receiver {
        Receiver::start_on(0).await
    }

    /// Starts on a given loopback port (to bring a "down" receiver back on its address).
    pub async fn start_on(port: u16) -> Receiver {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::clone(&state);
        let route = warp::any()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(
                move |path: warp::path::FullPath, headers: HeaderMap, body: Bytes| {
                    let state = Arc::clone(&shared);
                    async move {
                        let id = headers
                            .get("webhook-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let reply = {
                            let mut s = state.lock().unwrap();
                            s.log.push(Received {
                                at: Instant::now(),
                                path: path.as_str().to_owned(),
                                headers,
                                body,
                            });
                            let open = s.open.entry(id.clone()).or_default();
                            *open += 1;
                            let open = *open;
                            s.max_overlap = s.max_overlap.max(open);
                            let default = s.default.clone().unwrap_or(Reply::status(200));
                            s.script.pop_front().unwrap_or(default)
                        };
                        tokio::time::sleep(reply.delay).await;
                        if let Some(n) = state.lock().unwrap().open.get_mut(&id) {
                            *n -= 1;
                        }
                        let mut response =
                            Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
                        for (k, v) in &reply.headers {
                            response = response.header(k.as_str(), v.as_str());
                        }
                        response.body(format!("answer {}", reply.status)).unwrap()
                    }
                },
            );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            warp::serve(route)
                .incoming(listener)
                .graceful(async {
                    rx.await.ok();
                })
                .run()
                .await;
        });
        Receiver {
            addr,
            state,
            stop: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers in this order, then with the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// The answer once the script is used up (200 unless set).
    pub fn default_reply(&self, reply: Reply) {
        self.state.lock().unwrap().default = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().log.clone()
    }

    /// The most requests for one `webhook-id` that were ever open at once.
    pub fn max_overlap(&self) -> usize {
        self.state.lock().unwrap().max_overlap
    }

    /// Stops listening (the port is then free for [`Receiver::start_on`]).
    pub async fn stop(mut self) -> u16 {
        if let Some(tx) = self.stop.take() {
            tx.send(()).ok();
        }
        // Let the server task drop its listener.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.addr.port()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            tx.send(()).ok();
        }
    }
}
