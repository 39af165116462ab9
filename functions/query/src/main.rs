//! `query` binary: configuration and a lazily connecting pool at cold start, then the HTTP
//! adapter of the platform (Lambda through `lambda_http`, Azure's forwarded requests).

use ferry_shared::config::Env;
use ferry_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = ferry_runtime::config().await?;
    telemetry::init(cfg.log_format);
    let qcfg = ferry_query::QueryConfig::from_env(&Env::process())?;
    let query = ferry_query::Query::from_config(&cfg, qcfg)?;
    let function = query.function().to_owned();
    ferry_runtime::serve_http(&function, query.routes()).await?;
    Ok(())
}
