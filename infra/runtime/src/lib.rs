//! Platform adapters. A function's `main` hands its handler to [`serve_queue`], [`serve_blob`],
//! [`serve_tick`], [`serve_queue_and_tick`] or (an HTTP router) [`serve_http`], which pick the platform from the environment at start-up:
//!
//! - `AWS_LAMBDA_RUNTIME_API` set → AWS Lambda ([`lambda`]);
//! - `FUNCTIONS_CUSTOMHANDLER_PORT` set → Azure Functions custom handler ([`azure`]);
//! - neither → the binary explains how to run it locally and exits.
//!
//! Adapters translate payloads and outcomes; they hold no business logic. After each
//! invocation they pass on a [`nudge`] for the fanout function when the invocation's loads
//! queued webhook deliveries (install [`nudge::hook`] on the handler's loads).

mod aws;
pub mod azure;
pub mod blob;
mod http;
mod lambda;
pub mod nudge;
pub mod secrets;
mod timer;

pub use http::serve_http;
pub use secrets::config;

use std::future::Future;
use std::sync::Arc;

use ferry_shared::config::Env;
use ferry_shared::{BlobHandler, QueueHandler, TickHandler};
use thiserror::Error;

/// Where this process is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platform {
    Lambda,
    Azure { port: u16 },
    Local,
}

/// Errors that stop an adapter.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("FUNCTIONS_CUSTOMHANDLER_PORT={0:?} is not a port number")]
    BadPort(String),
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("Lambda runtime stopped: {0}")]
    Lambda(String),
    #[error(
        "{function}: no platform detected (neither AWS_LAMBDA_RUNTIME_API nor \
         FUNCTIONS_CUSTOMHANDLER_PORT is set). To run ferry locally use the `ferry` command, \
         e.g. `scripts/run-local.sh` or `ferry demo`, which calls this function in-process."
    )]
    NoPlatform { function: String },
}

/// Detects the platform from the process environment.
pub fn detect() -> Result<Platform, RuntimeError> {
    detect_in(&Env::process())
}

fn detect_in(env: &Env) -> Result<Platform, RuntimeError> {
    if env.is_set("AWS_LAMBDA_RUNTIME_API") {
        return Ok(Platform::Lambda);
    }
    match env.get("FUNCTIONS_CUSTOMHANDLER_PORT") {
        Some(p) => p
            .trim()
            .parse()
            .map(|port| Platform::Azure { port })
            .map_err(|_| RuntimeError::BadPort(p)),
        None => Ok(Platform::Local),
    }
}

/// Serves a queue-triggered function on the detected platform until the platform stops it.
pub async fn serve_queue<H: QueueHandler>(function: &str, handler: H) -> Result<(), RuntimeError> {
    let handler = Arc::new(handler);
    let azure_handler = Arc::clone(&handler);
    serve(
        function,
        || lambda::run_queue(handler),
        |port| azure::run_queue(port, function, azure_handler),
    )
    .await
}

/// Serves a blob-created function on the detected platform until the platform stops it.
pub async fn serve_blob<H: BlobHandler>(function: &str, handler: H) -> Result<(), RuntimeError> {
    let handler = Arc::new(handler);
    let azure_handler = Arc::clone(&handler);
    serve(
        function,
        || lambda::run_blob(handler),
        |port| azure::run_blob(port, function, azure_handler),
    )
    .await
}

/// Serves a timer-triggered function on the detected platform until the platform stops it.
pub async fn serve_tick<H: TickHandler>(function: &str, handler: H) -> Result<(), RuntimeError> {
    let handler = Arc::new(handler);
    let azure_handler = Arc::clone(&handler);
    serve(
        function,
        || lambda::run_tick(handler),
        |port| azure::run_tick(port, function, azure_handler),
    )
    .await
}

/// Serves a function triggered both by a queue and by a timer (the fanout: nudges and the
/// sweep). On Lambda one handler takes either payload (an `SqsEvent`, or a scheduled event);
/// on Azure the queue binding calls `/{function}` and the timer `/{function}-timer`.
pub async fn serve_queue_and_tick<H: QueueHandler + TickHandler>(
    function: &str,
    handler: H,
) -> Result<(), RuntimeError> {
    let handler = Arc::new(handler);
    let azure_handler = Arc::clone(&handler);
    serve(
        function,
        || lambda::run_queue_and_tick(handler),
        |port| azure::run_queue_and_tick(port, function, azure_handler),
    )
    .await
}

/// Runs the adapter of the detected platform.
async fn serve<L, A>(
    function: &str,
    lambda: impl FnOnce() -> L,
    azure: impl FnOnce(u16) -> A,
) -> Result<(), RuntimeError>
where
    L: Future<Output = Result<(), RuntimeError>>,
    A: Future<Output = Result<(), RuntimeError>>,
{
    match detect()? {
        Platform::Lambda => lambda().await,
        Platform::Azure { port } => azure(port).await,
        Platform::Local => Err(RuntimeError::NoPlatform {
            function: function.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_follows_the_environment() {
        let env =
            |pairs: &'static [(&'static str, &'static str)]| Env::from_pairs(pairs.iter().copied());
        assert_eq!(
            detect_in(&env(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")])).unwrap(),
            Platform::Lambda
        );
        assert_eq!(
            detect_in(&env(&[("FUNCTIONS_CUSTOMHANDLER_PORT", "7071")])).unwrap(),
            Platform::Azure { port: 7071 }
        );
        assert_eq!(detect_in(&env(&[])).unwrap(), Platform::Local);
        assert!(matches!(
            detect_in(&env(&[("FUNCTIONS_CUSTOMHANDLER_PORT", "x")])),
            Err(RuntimeError::BadPort(_))
        ));
    }
}
