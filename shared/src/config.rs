//! Typed configuration, read once from the environment at start-up.
//!
//! Every variable ferry reads is read in [`Config::from_lookup`] and documented in the README.
//! Tests build a [`Config`] with it instead of touching the process environment.

use std::time::Duration;

use thiserror::Error;

/// Database settings. `Debug` leaves out the URL, which may carry a password.
#[derive(Clone)]
pub struct DbConfig {
    /// `None` means "not configured": the local stack starts a private server.
    pub url: Option<String>,
    pub max_connections: u32,
    pub connect_timeout: Duration,
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// What the validator accepts.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_event_age: Duration,
    pub max_future_skew: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 256 * 1024,
            max_event_age: Duration::from_secs(30 * 86_400),
            max_future_skew: Duration::from_secs(300),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// The whole configuration of a ferry process.
#[derive(Debug, Clone)]
pub struct Config {
    pub db: DbConfig,
    pub limits: Limits,
    /// FERRY_PARTITION_INTERVAL when set: the width of `events` partitions that `ferry migrate`
    /// records for a new database (which then rules: see [`Config::partition_secs`]).
    pub partition_interval: Option<Duration>,
    /// Shards per distributed table when `ferry migrate` distributes a new database on Citus.
    pub citus_shard_count: u32,
    pub copy_threshold: usize,
    /// Products kept per user in `recently_viewed`.
    pub recently_viewed: u32,
    pub function_name: Option<String>,
    pub log_format: LogFormat,
}

/// A variable that is set but cannot be used.
#[derive(Debug, Error)]
#[error("{var}={value:?}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub problem: String,
}

impl Config {
    /// Width of the `events` partition slots this process asks for, in seconds: the database's
    /// recorded width rules when it has one (`ferry_ensure_event_partitions` creates the
    /// partitions of that width covering each slot), so any width here finds a partition.
    pub fn partition_secs(&self) -> i64 {
        self.partition_interval.map_or(300, |d| d.as_secs() as i64)
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get`, which returns a variable's value if set.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let on_cloud = get("AWS_LAMBDA_RUNTIME_API").is_some()
            || get("FUNCTIONS_CUSTOMHANDLER_PORT").is_some();
        let log_format = match get("FERRY_LOG_FORMAT").as_deref() {
            None if on_cloud => LogFormat::Json,
            None => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => return Err(bad("FERRY_LOG_FORMAT", other, "expected json or text")),
        };
        let limits = Limits {
            max_event_bytes: number(&get, "FERRY_MAX_EVENT_BYTES", 256 * 1024)?,
            max_event_age: duration(
                &get,
                "FERRY_MAX_EVENT_AGE",
                Duration::from_secs(30 * 86_400),
            )?,
            max_future_skew: duration(&get, "FERRY_MAX_FUTURE_SKEW", Duration::from_secs(300))?,
        };
        let partition_interval = match get("FERRY_PARTITION_INTERVAL") {
            None => None,
            Some(_) => Some(duration(
                &get,
                "FERRY_PARTITION_INTERVAL",
                Duration::from_secs(300),
            )?),
        };
        if let Some(width) = partition_interval {
            let v = humantime::format_duration(width).to_string();
            if width < Duration::from_secs(60) || width.as_secs() % 60 != 0 {
                return Err(bad(
                    "FERRY_PARTITION_INTERVAL",
                    &v,
                    "must be whole minutes, at least 1m",
                ));
            }
            if 86_400 % width.as_secs() != 0 {
                return Err(bad(
                    "FERRY_PARTITION_INTERVAL",
                    &v,
                    "must divide a day evenly",
                ));
            }
        }
        let citus_shard_count = match number(
            &get,
            "FERRY_CITUS_SHARD_COUNT",
            crate::placement::DEFAULT_SHARD_COUNT,
        )? {
            n @ 1..=1024 => n,
            n => {
                return Err(bad(
                    "FERRY_CITUS_SHARD_COUNT",
                    &n.to_string(),
                    "must be between 1 and 1024",
                ))
            }
        };
        Ok(Config {
            db: DbConfig {
                url: get("DATABASE_URL"),
                max_connections: number(&get, "FERRY_DB_MAX_CONNECTIONS", 4)?,
                connect_timeout: duration(
                    &get,
                    "FERRY_DB_CONNECT_TIMEOUT",
                    Duration::from_secs(5),
                )?,
                lock_timeout: duration(&get, "FERRY_DB_LOCK_TIMEOUT", Duration::from_secs(5))?,
                statement_timeout: duration(
                    &get,
                    "FERRY_DB_STATEMENT_TIMEOUT",
                    Duration::from_secs(60),
                )?,
            },
            limits,
            partition_interval,
            citus_shard_count,
            copy_threshold: number(&get, "FERRY_COPY_THRESHOLD", 5000)?,
            recently_viewed: match number(&get, "FERRY_RECENTLY_VIEWED", 20_u32)? {
                n @ 1..=1000 => n,
                n => {
                    return Err(bad(
                        "FERRY_RECENTLY_VIEWED",
                        &n.to_string(),
                        "must be between 1 and 1000",
                    ))
                }
            },
            function_name: get("FERRY_FUNCTION_NAME"),
            log_format,
        })
    }

    /// The database URL, or an error naming the variable to set.
    pub fn database_url(&self) -> Result<&str, ConfigError> {
        self.db.url.as_deref().ok_or_else(|| ConfigError {
            var: "DATABASE_URL",
            value: String::new(),
            problem: "not set; functions need a PostgreSQL URL (locally, `ferry` starts one)"
                .into(),
        })
    }
}

/// A configuration error naming `var` (for the function-specific settings too).
pub fn bad(var: &'static str, value: &str, problem: &str) -> ConfigError {
    ConfigError {
        var,
        value: value.to_owned(),
        problem: problem.to_owned(),
    }
}

/// Reads `var` as a number, or `default` when unset.
pub fn number<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| bad(var, &v, "expected a number")),
    }
}

/// Reads `var` as a duration (`30s`, `5m`, `2h`, `7d`), or `default` when unset.
pub fn duration(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(v) = get(var) else {
        return Ok(default);
    };
    humantime::parse_duration(v.trim()).map_err(|e| {
        bad(
            var,
            &v,
            &format!("expected a duration like 30s, 5m, 2h, 7d ({e})"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = from(&[]).unwrap();
        assert_eq!(c.limits.max_event_bytes, 262_144);
        assert_eq!(c.partition_interval, None);
        assert_eq!(c.partition_secs(), 300);
        assert_eq!(c.citus_shard_count, 32);
        assert_eq!(c.db.url, None);
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.database_url().is_err());
    }

    #[test]
    fn debug_output_hides_the_database_url() {
        let c = from(&[("DATABASE_URL", "postgres://u:hunter2@db/x")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn cloud_environment_switches_logs_to_json() {
        let c = from(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")]).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = from(&[("FERRY_MAX_EVENT_BYTES", "lots")]).unwrap_err();
        assert_eq!(e.var, "FERRY_MAX_EVENT_BYTES");
        let e = from(&[("FERRY_PARTITION_INTERVAL", "7m")]).unwrap_err();
        assert!(e.to_string().contains("divide a day"), "{e}");
        let e = from(&[("FERRY_DB_LOCK_TIMEOUT", "soon")]).unwrap_err();
        assert_eq!(e.var, "FERRY_DB_LOCK_TIMEOUT");
    }
}
