//! `ingest` binary: configuration and pool once at cold start, then the platform adapter.

use ferry_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = ferry_runtime::config().await?;
    telemetry::init(cfg.log_format);
    let ingest = ferry_ingest::Ingest::from_config(&cfg)?.with_nudge(ferry_runtime::nudge::hook());
    let function = ingest.function().to_owned();
    ferry_runtime::serve_queue(&function, ingest).await?;
    Ok(())
}
