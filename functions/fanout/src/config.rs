//! The fanout function's settings (environment variables: docs/configuration.md).

use std::time::Duration;

use ferry_shared::config::{bad, ConfigError, Env};

use crate::guard::Policy;
use crate::keys::{self, Keyring};

/// Settings of the fanout function (environment variables: docs/configuration.md).
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    pub policy: Policy,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Delay before each retry: attempt `n + 1` follows attempt `n` after `schedule[n - 1]`
    /// (±20%); after the last, the delivery is marked failed.
    pub schedule: Vec<Duration>,
    /// Upper bound on a receiver's `Retry-After`.
    pub retry_after_max: Duration,
    /// An endpoint failing for this long without a success is disabled.
    pub disable_after: Duration,
    /// The longest wait between probes of a failing endpoint (its circuit is open: one request
    /// at a time, a quarter of how long it has been failing apart, from 1 s up to this).
    pub probe_max: Duration,
    /// Requests in flight per instance.
    pub concurrency: usize,
    /// Requests in flight per endpoint per instance.
    pub per_endpoint: usize,
    /// How long one invocation keeps draining.
    pub budget: Duration,
    /// How long an invocation waits for a retry that falls due soon, rather than leaving it
    /// to the next sweep.
    pub linger: Duration,
    /// The keys that seal signing secrets at rest (`FERRY_WEBHOOK_KEYS`, or the file named by
    /// `FERRY_WEBHOOK_KEYS_FILE`). Without them no endpoint can be added and no sealed secret
    /// opened.
    pub keys: Option<Keyring>,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            policy: Policy::default(),
            timeout: Duration::from_secs(15),
            schedule: DEFAULT_SCHEDULE
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            retry_after_max: Duration::from_secs(3600),
            disable_after: Duration::from_secs(5 * 86_400),
            probe_max: Duration::from_secs(30),
            concurrency: 64,
            per_endpoint: 8,
            budget: Duration::from_secs(50),
            linger: Duration::from_secs(10),
            keys: None,
        }
    }
}

/// `FERRY_WEBHOOK_KEYS` (the keyring text) or `FERRY_WEBHOOK_KEYS_FILE` (a file holding it).
/// The errors never repeat the value: it is key material.
fn keyring(env: &Env) -> Result<Option<Keyring>, ConfigError> {
    let keys = (
        env.get("FERRY_WEBHOOK_KEYS"),
        env.get("FERRY_WEBHOOK_KEYS_FILE"),
    );
    let (var, text) = match keys {
        (Some(text), _) => ("FERRY_WEBHOOK_KEYS", text),
        (None, Some(path)) => (
            "FERRY_WEBHOOK_KEYS_FILE",
            std::fs::read_to_string(path.trim())
                .map_err(|e| bad("FERRY_WEBHOOK_KEYS_FILE", &path, &e.to_string()))?,
        ),
        (None, None) => return Ok(None),
    };
    Keyring::parse(&text)
        .map(Some)
        .map_err(|e| bad(var, "(not shown)", &e.to_string()))
}

/// The shortest wait a receiver's `Retry-After` can ask for (`0` would burn the schedule).
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest retry delay a setting may ask for (a schedule step, `Retry-After`'s cap).
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 86_400);

/// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h: ten attempts over about 3.3 days.
pub const DEFAULT_SCHEDULE: [u64; 9] = [5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400];

impl FanoutConfig {
    /// Reads the fanout's settings.
    pub fn from_env(env: &Env) -> Result<FanoutConfig, ConfigError> {
        let get = |k: &str| env.get(k);
        let d = FanoutConfig::default();
        let allow_http = env.flag("FERRY_WEBHOOK_ALLOW_HTTP", false)?;
        let allow = match get("FERRY_WEBHOOK_ALLOW_NETS") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    n.parse().map_err(|_| {
                        bad(
                            "FERRY_WEBHOOK_ALLOW_NETS",
                            &v,
                            "expected networks like 127.0.0.0/8,::1/128",
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let schedule = match get("FERRY_WEBHOOK_RETRY_SCHEDULE") {
            None => d.schedule,
            Some(v) => v
                .split(',')
                .map(|s| humantime::parse_duration(s.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    bad(
                        "FERRY_WEBHOOK_RETRY_SCHEDULE",
                        &v,
                        &format!("expected durations like 5s,5m,30m ({e})"),
                    )
                })?,
        };
        let positive = |var: &'static str, default: usize| -> Result<usize, ConfigError> {
            let n = env.number(var, default)?;
            if n == 0 {
                return Err(bad(var, "0", "must be at least 1"));
            }
            Ok(n)
        };
        if let Some(step) = schedule
            .iter()
            .find(|s| **s > MAX_DELAY || **s < Duration::from_millis(1))
        {
            return Err(bad(
                "FERRY_WEBHOOK_RETRY_SCHEDULE",
                &humantime::format_duration(*step).to_string(),
                "each delay must be between 1ms and 30 days",
            ));
        }
        let retry_after_max = env.duration("FERRY_WEBHOOK_RETRY_AFTER_MAX", d.retry_after_max)?;
        if retry_after_max > MAX_DELAY {
            return Err(bad(
                "FERRY_WEBHOOK_RETRY_AFTER_MAX",
                &humantime::format_duration(retry_after_max).to_string(),
                "must be at most 30 days",
            ));
        }
        let disable_after = env.duration("FERRY_WEBHOOK_DISABLE_AFTER", d.disable_after)?;
        if disable_after > Duration::from_secs(365 * 86_400) {
            return Err(bad(
                "FERRY_WEBHOOK_DISABLE_AFTER",
                &humantime::format_duration(disable_after).to_string(),
                "must be at most 365 days",
            ));
        }
        let probe_max = env.duration("FERRY_WEBHOOK_PROBE_MAX", d.probe_max)?;
        if probe_max < Duration::from_secs(1) || probe_max > Duration::from_secs(3600) {
            return Err(bad(
                "FERRY_WEBHOOK_PROBE_MAX",
                &humantime::format_duration(probe_max).to_string(),
                "must be between 1s and 1h",
            ));
        }
        let timeout = env.duration("FERRY_WEBHOOK_TIMEOUT", d.timeout)?;
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(bad(
                "FERRY_WEBHOOK_TIMEOUT",
                &humantime::format_duration(timeout).to_string(),
                "must be between 1ms and 60s",
            ));
        }
        Ok(FanoutConfig {
            policy: Policy { allow_http, allow },
            timeout,
            schedule,
            retry_after_max,
            disable_after,
            probe_max,
            concurrency: positive("FERRY_FANOUT_CONCURRENCY", d.concurrency)?,
            per_endpoint: positive("FERRY_FANOUT_PER_ENDPOINT", d.per_endpoint)?,
            budget: env.duration("FERRY_FANOUT_BUDGET", d.budget)?,
            linger: env.duration("FERRY_FANOUT_LINGER", d.linger)?,
            keys: keyring(env)?,
        })
    }

    /// The keyring, or an error saying how to provide one.
    pub fn keys(&self) -> Result<&Keyring, keys::KeyError> {
        self.keys.as_ref().ok_or(keys::KeyError::Missing)
    }

    /// A claimed delivery stays leased for a whole attempt plus a margin: no other instance
    /// can claim it while this one may still be sending it.
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<FanoutConfig, ConfigError> {
        FanoutConfig::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn defaults_follow_the_suggested_schedule() {
        let c = from(&[]).unwrap();
        assert_eq!(c.schedule.len(), 9);
        assert_eq!(c.schedule[0], Duration::from_secs(5));
        assert_eq!(c.schedule[8], Duration::from_secs(86_400));
        assert_eq!(c.timeout, Duration::from_secs(15));
        assert!(!c.policy.allow_http && c.policy.allow.is_empty());
        assert!(c.lease() > c.timeout);
    }

    #[test]
    fn settings_are_read_and_bad_ones_named() {
        let c = from(&[
            ("FERRY_WEBHOOK_RETRY_SCHEDULE", "100ms, 1s"),
            ("FERRY_WEBHOOK_ALLOW_NETS", "127.0.0.0/8,::1/128"),
            ("FERRY_WEBHOOK_ALLOW_HTTP", "true"),
        ])
        .unwrap();
        assert_eq!(
            c.schedule,
            vec![Duration::from_millis(100), Duration::from_secs(1)]
        );
        assert_eq!(c.policy.allow.len(), 2);
        assert!(c.policy.allow_http);
        for (var, value) in [
            ("FERRY_WEBHOOK_RETRY_SCHEDULE", "5s,soon"),
            ("FERRY_WEBHOOK_ALLOW_NETS", "localhost"),
            ("FERRY_WEBHOOK_ALLOW_HTTP", "maybe"),
            ("FERRY_FANOUT_PER_ENDPOINT", "0"),
            ("FERRY_WEBHOOK_TIMEOUT", "5m"),
            ("FERRY_WEBHOOK_RETRY_SCHEDULE", "5s,1000000d"),
            ("FERRY_WEBHOOK_RETRY_SCHEDULE", "0s"),
            ("FERRY_WEBHOOK_RETRY_AFTER_MAX", "10000y"),
        ] {
            assert_eq!(from(&[(var, value)]).unwrap_err().var, var);
        }
    }
}
