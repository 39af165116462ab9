//! A loopback Lambda Runtime API (`/2018-06-01/runtime/invocation/next`, `…/response`,
//! `…/error`) for contract tests of the real function binaries in Lambda mode.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, Mutex};
use warp::Filter;

/// A loopback Lambda Runtime API: events in, function results out.
pub struct RuntimeApi {
    addr: SocketAddr,
    events: mpsc::Sender<(String, Value)>,
    results: mpsc::Receiver<(String, &'static str, Value)>,
    next_id: u32,
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let (event_tx, event_rx) = mpsc::channel::<(String, Value)>(16);
        let (result_tx, result_rx) = mpsc::channel(16);
        let event_rx = Arc::new(Mutex::new(event_rx));
        let next = warp::get()
            .and(warp::path!(
                "2018-06-01" / "runtime" / "invocation" / "next"
            ))
            .then(move || {
                let event_rx = Arc::clone(&event_rx);
                async move {
                    // Long poll, as the real API does, until the test queues an event.
                    let (id, payload) = event_rx.lock().await.recv().await.expect("test ended");
                    let deadline =
                        (chrono::Utc::now() + chrono::Duration::seconds(60)).timestamp_millis();
                    let reply = warp::reply::with_header(
                        warp::reply::json(&payload),
                        "Lambda-Runtime-Aws-Request-Id",
                        id,
                    );
                    let reply = warp::reply::with_header(
                        reply,
                        "Lambda-Runtime-Deadline-Ms",
                        deadline.to_string(),
                    );
                    warp::reply::with_header(
                        reply,
                        "Lambda-Runtime-Invoked-Function-Arn",
                        "arn:aws:lambda:eu-west-1:123456789012:function:ferry",
                    )
                }
            });
        // POST …/{id}/response and …/{id}/error: the function's result, recorded for the test.
        let result = warp::post()
            .and(warp::path!(
                "2018-06-01" / "runtime" / "invocation" / String / String
            ))
            .and(warp::body::json())
            .then(move |id: String, kind: String, body: Value| {
                let tx = result_tx.clone();
                async move {
                    let kind = if kind == "response" {
                        "response"
                    } else {
                        "error"
                    };
                    tx.send((id, kind, body)).await.ok();
                    warp::reply::with_status("", warp::http::StatusCode::ACCEPTED)
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(next.or(result)).incoming(listener).run());
        RuntimeApi {
            addr,
            events: event_tx,
            results: result_rx,
            next_id: 0,
        }
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", "ferry".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ]
    }

    /// Invokes the function with `payload`; returns which endpoint it answered on, and the body.
    pub async fn invoke(&mut self, payload: Value) -> (&'static str, Value) {
        self.next_id += 1;
        let id = format!("req-{}", self.next_id);
        self.events.send((id.clone(), payload)).await.unwrap();
        let (got, kind, body) = tokio::time::timeout(Duration::from_secs(60), self.results.recv())
            .await
            .expect("function answered in time")
            .expect("runtime api alive");
        assert_eq!(got, id);
        (kind, body)
    }
}
