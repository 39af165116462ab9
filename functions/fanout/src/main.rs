//! `fanout` binary: configuration, pool and HTTP client once at cold start, then the platform
//! adapter for queue nudges and timer sweeps.

use ferry_fanout::{Fanout, FanoutConfig};
use ferry_shared::config::Env;
use ferry_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = ferry_runtime::config().await?;
    telemetry::init(cfg.log_format);
    // The keyring: from the environment, or (Lambda) the secret FERRY_WEBHOOK_KEYS_SECRET_ARN.
    let keys = ferry_runtime::secrets::webhook_keys().await?;
    let env = match keys {
        Some(text) => Env::process().set("FERRY_WEBHOOK_KEYS", text),
        None => Env::process(),
    };
    let fcfg = FanoutConfig::from_env(&env)?;
    if fcfg.keys.is_none() {
        tracing::warn!(
            "no webhook keyring (FERRY_WEBHOOK_KEYS or FERRY_WEBHOOK_KEYS_SECRET_ARN): sealed \
             signing secrets cannot be opened, so nothing can be sent"
        );
    }
    let fanout = Fanout::from_config(&cfg, fcfg)?;
    let function = fanout.function().to_owned();
    ferry_runtime::serve_queue_and_tick(&function, fanout).await?;
    Ok(())
}
