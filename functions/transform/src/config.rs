//! The transform function's own settings (the shared ones are in [`ferry_shared::config`]).

use std::path::PathBuf;
use std::time::Duration;

use ferry_shared::config::{ConfigError, Env};

/// Transform settings (from the environment, see docs/configuration.md).
#[derive(Debug, Clone)]
pub struct TransformConfig {
    /// Records per chunk handed from the reader to the loader (`FERRY_TRANSFORM_CHUNK`).
    pub chunk_records: usize,
    /// Statement timeout inside an object's transaction (`FERRY_TRANSFORM_TIMEOUT`); the merge
    /// of a large file is one statement.
    pub timeout: Duration,
    /// The rules file (`FERRY_SOURCES_FILE`); the compiled-in `config/sources.toml` when unset.
    pub rules_file: Option<PathBuf>,
}

impl TransformConfig {
    /// Reads the transform's settings.
    pub fn from_env(env: &Env) -> Result<TransformConfig, ConfigError> {
        Ok(TransformConfig {
            chunk_records: env.checked("FERRY_TRANSFORM_CHUNK", 10_000, |n| *n > 0)?,
            timeout: env.duration("FERRY_TRANSFORM_TIMEOUT", Duration::from_secs(600))?,
            rules_file: env.get("FERRY_SOURCES_FILE").map(PathBuf::from),
        })
    }
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            chunk_records: 10_000,
            timeout: Duration::from_secs(600),
            rules_file: None,
        }
    }
}
