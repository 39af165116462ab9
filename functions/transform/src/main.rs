//! `transform` binary: configuration, pool and rules once at cold start, then the platform
//! adapter for blob-created notifications.

use ferry_shared::config::Env;
use ferry_shared::telemetry;
use ferry_transform::{Transform, TransformConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = ferry_runtime::config().await?;
    telemetry::init(cfg.log_format);
    let transform = Transform::from_config(&cfg, TransformConfig::from_env(&Env::process())?)?
        .with_nudge(ferry_runtime::nudge::hook());
    let function = transform.function().to_owned();
    ferry_runtime::serve_blob(&function, transform).await?;
    Ok(())
}
