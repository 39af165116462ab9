//! Typed configuration, read once at start-up through one reader, [`Env`].
//!
//! Every function's settings are read the same way: `XConfig::from_env(&Env)`, with the shared
//! ones in [`Config::from_env`]. An [`Env`] is the process environment ([`Env::process`]) or a
//! list of pairs ([`Env::from_pairs`]), so every reader is tested without touching the process
//! environment, and a value found elsewhere (a secret read at start-up) is layered on top with
//! [`Env::set`]. Every `FERRY_*` variable is documented in `docs/configuration.md`; a test
//! (`documented_variables_are_the_ones_read`) fails when the two disagree.

use std::collections::HashMap;
use std::sync::Arc;
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

/// Where configuration is read from: the process environment or given pairs, plus values set
/// on top. A variable set to blanks counts as unset.
#[derive(Clone)]
pub struct Env {
    process: bool,
    vars: Arc<HashMap<String, String>>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may be secrets.
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Env")
            .field("process", &self.process)
            .field("set", &names)
            .finish()
    }
}

impl Env {
    /// The process environment.
    pub fn process() -> Env {
        Env {
            process: true,
            vars: Arc::default(),
        }
    }

    /// Only these pairs (tests, benchmarks).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            process: false,
            vars: Arc::new(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        }
    }

    /// This environment with `var` set to `value` (over what the environment holds).
    pub fn set(mut self, var: &str, value: impl Into<String>) -> Env {
        Arc::make_mut(&mut self.vars).insert(var.to_owned(), value.into());
        self
    }

    /// The value of `var`, when it is set and not blank.
    pub fn get(&self, var: &str) -> Option<String> {
        let value = match self.vars.get(var) {
            Some(v) => Some(v.clone()),
            None if self.process => std::env::var(var).ok(),
            None => None,
        };
        value.filter(|v| !v.trim().is_empty())
    }

    /// Whether `var` is set (and not blank).
    pub fn is_set(&self, var: &str) -> bool {
        self.get(var).is_some()
    }

    /// `var` as a number, or `default` when unset.
    pub fn number<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| bad(var, &v, "expected a number")),
        }
    }

    /// `var` as a number that must also pass `ok`, or `default` when unset.
    pub fn checked<T: std::str::FromStr + std::fmt::Display>(
        &self,
        var: &'static str,
        default: T,
        ok: impl Fn(&T) -> bool,
    ) -> Result<T, ConfigError> {
        let n = self.number(var, default)?;
        if ok(&n) {
            Ok(n)
        } else {
            Err(bad(var, &n.to_string(), "out of range"))
        }
    }

    /// `var` as a duration (`30s`, `5m`, `2h`, `7d`), or `default` when unset.
    pub fn duration(&self, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let Some(v) = self.get(var) else {
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

    /// `var` as `true`/`false` (or `1`/`0`), or `default` when unset.
    pub fn flag(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).as_deref().map(str::trim) {
            None => Ok(default),
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(v) => Err(bad(var, v, "expected true or false")),
        }
    }
}

impl Config {
    /// Width of the `events` partition slots this process asks for, in seconds: the database's
    /// recorded width rules when it has one (`ferry_ensure_event_partitions` creates the
    /// partitions of that width covering each slot), so any width here finds a partition.
    /// Five minutes with nothing set: `ferry migrate` records an hour for a new database
    /// ([`crate::db::ONE_SERVER_PARTITION_SECS`]), and a database migrated before it recorded
    /// anything keeps the 5-minute partitions it has.
    pub fn partition_secs(&self) -> i64 {
        self.partition_interval.map_or(300, |d| d.as_secs() as i64)
    }

    /// Reads the shared settings.
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        let get = |k: &str| env.get(k);
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
            max_event_bytes: env.number("FERRY_MAX_EVENT_BYTES", 256 * 1024)?,
            max_event_age: env.duration("FERRY_MAX_EVENT_AGE", Duration::from_secs(30 * 86_400))?,
            max_future_skew: env.duration("FERRY_MAX_FUTURE_SKEW", Duration::from_secs(300))?,
        };
        let partition_interval = match get("FERRY_PARTITION_INTERVAL") {
            None => None,
            Some(_) => Some(env.duration("FERRY_PARTITION_INTERVAL", Duration::from_secs(300))?),
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
        let citus_shard_count = match env.number(
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
                max_connections: env.number("FERRY_DB_MAX_CONNECTIONS", 4)?,
                connect_timeout: env
                    .duration("FERRY_DB_CONNECT_TIMEOUT", Duration::from_secs(5))?,
                lock_timeout: env.duration("FERRY_DB_LOCK_TIMEOUT", Duration::from_secs(5))?,
                statement_timeout: env
                    .duration("FERRY_DB_STATEMENT_TIMEOUT", Duration::from_secs(60))?,
            },
            limits,
            partition_interval,
            citus_shard_count,
            copy_threshold: env.number("FERRY_COPY_THRESHOLD", 5000)?,
            recently_viewed: match env.number("FERRY_RECENTLY_VIEWED", 20_u32)? {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_env(&Env::from_pairs(pairs.iter().copied()))
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
