//! `rollup` binary: configuration and pool once at cold start, then the platform adapter for
//! timer ticks.

use ferry_rollup::{Rollup, RollupConfig};
use ferry_shared::config::Env;
use ferry_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = ferry_runtime::config().await?;
    telemetry::init(cfg.log_format);
    let rollup = Rollup::from_config(&cfg, RollupConfig::from_env(&Env::process())?)?
        .with_nudge(ferry_runtime::nudge::hook());
    let function = rollup.function().to_owned();
    ferry_runtime::serve_tick(&function, rollup).await?;
    Ok(())
}
