//! Logging: `tracing` with JSON output on the clouds and human output locally.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber for a function. Level from `RUST_LOG` (default `info`); logs
/// go to stderr so a command's own output on stdout stays clean. Safe to call more than once.
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Like [`init`], with another default filter when `RUST_LOG` is unset (the `ferry` command
/// prints its own progress and keeps per-invocation logs quiet).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // CloudWatch and Application Insights stamp time themselves.
        LogFormat::Json => builder.json().flatten_event(true).without_time().try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
}
