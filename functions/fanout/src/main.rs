//! `fanout` binary: configuration, pool and HTTP client once at cold start, then the platform
//! adapter for queue nudges and timer sweeps.

use ferry_fanout::{Fanout, FanoutConfig};
use ferry_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = ferry_runtime::config().await?;
    telemetry::init(cfg.log_format);
    let fanout = Fanout::from_config(&cfg, FanoutConfig::from_env()?)?;
    let function = fanout.function().to_owned();
    ferry_runtime::serve_queue_and_tick(&function, fanout).await?;
    Ok(())
}
