//! HTTP-triggered functions: one warp router, served as it is on every platform.
//!
//! - Lambda (Function URL or API Gateway HTTP API, payload 2.0): `lambda_http` turns each
//!   invocation into an `http::Request` for the router, turned into a tower `Service` by
//!   `warp::service`, and the router's response back into the proxy response.
//! - Azure custom handler with `enableForwardingHttpRequest: true`: the host forwards the
//!   original request (method, path, query, headers) to 127.0.0.1:`FUNCTIONS_CUSTOMHANDLER_PORT`
//!   and passes the answer back as it is, so the router simply listens there.

use tracing::info;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::{detect, Platform, RuntimeError};

/// Serves an HTTP router on the detected platform until the platform stops it.
pub async fn serve_http(
    function: &str,
    routes: BoxedFilter<(Response,)>,
) -> Result<(), RuntimeError> {
    match detect()? {
        Platform::Lambda => lambda_http::run(warp::service(routes))
            .await
            .map_err(|e| RuntimeError::Lambda(e.to_string())),
        Platform::Azure { port } => {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .map_err(|source| RuntimeError::Bind { port, source })?;
            info!(
                port,
                function, "azure custom handler listening (forwarded HTTP)"
            );
            warp::serve(routes).incoming(listener).run().await;
            Ok(())
        }
        Platform::Local => Err(RuntimeError::NoPlatform {
            function: function.to_owned(),
        }),
    }
}
