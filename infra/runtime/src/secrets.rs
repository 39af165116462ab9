//! The functions' configuration at start-up, with the database URL (and, for fanout, the
//! webhook keyring: [`webhook_keys`]) taken from AWS Secrets Manager when it is not in the
//! environment.
//!
//! Lambda has no way to put a secret into a function's environment, and a URL with a
//! password in it must not be a plain environment value. So on Lambda the function gets
//! `FERRY_DATABASE_SECRET_ARN` and reads the secret once, at cold start, with
//! `GetSecretValue` signed by the function's role. On Azure the host resolves the Key Vault
//! reference in the `DATABASE_URL` app setting itself; nothing happens here.
//!
//! The secret's `SecretString` is either the whole URL (`postgres://…`) or a JSON object in
//! the format RDS uses (`username`, `password`, and `host`, `port`, `dbname` when RDS manages
//! the secret for rotation). An RDS master secret (`manage_master_user_password`) holds only
//! `username` and `password`; the rest comes from `FERRY_DATABASE_HOST`,
//! `FERRY_DATABASE_PORT` (5432) and `FERRY_DATABASE_NAME` (`postgres`), which are not secret.

use std::time::Duration;

use ferry_shared::config::{Config, ConfigError, Env};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use thiserror::Error;

use crate::aws::{credential_from_env, var, JsonApi};

/// Why a function could not start.
#[derive(Debug, Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The secret could not be read or used. Never holds the secret's value.
    #[error("{var}={arn}: {problem}")]
    Secret {
        var: &'static str,
        arn: String,
        problem: String,
    },
}

/// The configuration from the environment; without `DATABASE_URL`, the database URL is read
/// from the Secrets Manager secret named by `FERRY_DATABASE_SECRET_ARN`.
pub async fn config() -> Result<Config, StartupError> {
    let url = match (var("DATABASE_URL"), var("FERRY_DATABASE_SECRET_ARN")) {
        (None, Some(arn)) => {
            Some(
                database_url(&arn)
                    .await
                    .map_err(|problem| StartupError::Secret {
                        var: "FERRY_DATABASE_SECRET_ARN",
                        arn,
                        problem,
                    })?,
            )
        }
        _ => None,
    };
    let env = match url {
        Some(url) => Env::process().set("DATABASE_URL", url),
        None => Env::process(),
    };
    Ok(Config::from_env(&env)?)
}

/// The webhook keyring text for `FERRY_WEBHOOK_KEYS` when it is not in the environment: the
/// `SecretString` of the secret named by `FERRY_WEBHOOK_KEYS_SECRET_ARN` (Lambda). `None`
/// when neither is set, or the keyring is in the environment already (Azure resolves its Key
/// Vault reference into the app setting).
pub async fn webhook_keys() -> Result<Option<String>, StartupError> {
    match (
        var("FERRY_WEBHOOK_KEYS"),
        var("FERRY_WEBHOOK_KEYS_SECRET_ARN"),
    ) {
        (None, Some(arn)) => match secret_string(&arn).await {
            Ok(text) => Ok(Some(text)),
            Err(problem) => Err(StartupError::Secret {
                var: "FERRY_WEBHOOK_KEYS_SECRET_ARN",
                arn,
                problem,
            }),
        },
        _ => Ok(None),
    }
}

/// Reads the secret and turns it into a URL.
async fn database_url(arn: &str) -> Result<String, String> {
    url_from_secret(&secret_string(arn).await?, var)
}

/// The `SecretString` of a Secrets Manager secret, read with the function's credentials.
async fn secret_string(arn: &str) -> Result<String, String> {
    let credential = credential_from_env().ok_or(
        "AWS credentials are not set (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): \
         the function's role provides them on Lambda",
    )?;
    let region = region_of(arn)
        .or_else(|| var("AWS_REGION"))
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .ok_or("not a Secrets Manager ARN, and AWS_REGION is not set")?;
    // The AWS SDKs' own override variables, so an emulator or a VPC endpoint is set the same
    // way as for any other AWS client.
    let endpoint = var("AWS_ENDPOINT_URL_SECRETS_MANAGER")
        .or_else(|| var("AWS_ENDPOINT_URL"))
        .map(|e| format!("{}/", e.trim_end_matches('/')))
        .unwrap_or_else(|| format!("https://secretsmanager.{region}.amazonaws.com/"));
    let api = JsonApi {
        endpoint: &endpoint,
        service: "secretsmanager",
        region: &region,
        credential: &credential,
        json_version: "1.1",
        target_prefix: "secretsmanager",
        timeout: Duration::from_secs(5),
    };
    let payload = json!({ "SecretId": arn });
    let mut attempt = 0;
    let answer = loop {
        attempt += 1;
        match api.call("GetSecretValue", &payload).await {
            Ok(answer) => break answer,
            // An access or not-found error will not go away; a network blip may.
            Err(problem) if attempt < 3 && problem.transient() => {
                tracing::debug!(%problem, attempt, "GetSecretValue failed; trying again");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(problem) => return Err(problem.to_string()),
        }
    };
    answer
        .get("SecretString")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "the secret has no SecretString (a binary secret cannot be used)".into())
}

/// The URL a secret stands for: the secret itself when it is a URL, else built from the RDS
/// JSON format, with `get` giving the non-secret parts the JSON lacks.
fn url_from_secret(secret: &str, get: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let secret = secret.trim();
    if secret.starts_with("postgres://") || secret.starts_with("postgresql://") {
        return Ok(secret.to_owned());
    }
    // The message never quotes the secret: it names what is missing.
    let fields: serde_json::Map<String, Value> = serde_json::from_str(secret).map_err(|_| {
        "the secret is neither a postgres:// URL nor a JSON object (the RDS secret format)"
            .to_owned()
    })?;
    let text = |k: &str| match fields.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let username = text("username").ok_or("the secret's JSON has no \"username\"")?;
    let password = text("password").ok_or("the secret's JSON has no \"password\"")?;
    let host = text("host")
        .or_else(|| get("FERRY_DATABASE_HOST"))
        .ok_or("the secret's JSON has no \"host\" and FERRY_DATABASE_HOST is not set")?;
    let port = text("port")
        .or_else(|| get("FERRY_DATABASE_PORT"))
        .unwrap_or_else(|| "5432".into());
    if port.parse::<u16>().is_err() {
        return Err(format!("the database port {port:?} is not a port number"));
    }
    let dbname = text("dbname")
        .or_else(|| get("FERRY_DATABASE_NAME"))
        .unwrap_or_else(|| "postgres".into());
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let mut url = format!(
        "postgres://{}:{}@{host}:{port}/{}",
        encode(&username),
        encode(&password),
        encode(&dbname)
    );
    if let Some(mode) = get("FERRY_DATABASE_SSLMODE") {
        url.push_str(&format!("?sslmode={}", encode(&mode)));
    }
    Ok(url)
}

/// Everything but unreserved characters, percent-encoded (a password may hold `@`, `/`, `:`).
fn encode(s: &str) -> String {
    const SET: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(s, SET).to_string()
}

/// The region in `arn:aws:secretsmanager:{region}:{account}:secret:{name}`.
fn region_of(arn: &str) -> Option<String> {
    let mut parts = arn.split(':');
    let (Some("arn"), Some(_partition), Some("secretsmanager"), Some(region)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    (!region.is_empty()).then(|| region.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_url_secret_is_taken_as_it_is() {
        assert_eq!(
            url_from_secret(" postgres://u:p@db:5432/ferry\n", env(&[])).unwrap(),
            "postgres://u:p@db:5432/ferry"
        );
    }

    #[test]
    fn the_rds_format_is_assembled_and_encoded() {
        let secret = r#"{"engine":"postgres","username":"ferry","password":"p@ss/w:rd",
            "host":"db.example","port":5433,"dbname":"events"}"#;
        assert_eq!(
            url_from_secret(secret, env(&[])).unwrap(),
            "postgres://ferry:p%40ss%2Fw%3Ard@db.example:5433/events"
        );
    }

    #[test]
    fn an_rds_master_secret_takes_the_rest_from_the_environment() {
        let secret = r#"{"username":"postgres","password":"pw"}"#;
        let url = url_from_secret(
            secret,
            env(&[
                (
                    "FERRY_DATABASE_HOST",
                    "ferry.abc.eu-west-1.rds.amazonaws.com",
                ),
                ("FERRY_DATABASE_NAME", "ferry"),
                ("FERRY_DATABASE_SSLMODE", "require"),
            ]),
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://postgres:pw@ferry.abc.eu-west-1.rds.amazonaws.com:5432/ferry?sslmode=require"
        );
        let problem = url_from_secret(secret, env(&[])).unwrap_err();
        assert!(problem.contains("FERRY_DATABASE_HOST"), "{problem}");
    }

    #[test]
    fn errors_never_quote_the_secret() {
        for secret in [
            "hunter2-not-json",
            r#"{"password":"hunter2"}"#,
            r#"{"username":"u","password":"hunter2","host":"h","port":"x"}"#,
        ] {
            let problem = url_from_secret(secret, env(&[])).unwrap_err();
            assert!(!problem.contains("hunter2"), "{problem}");
        }
    }

    #[test]
    fn the_region_comes_from_the_arn() {
        assert_eq!(
            region_of("arn:aws:secretsmanager:eu-central-1:123456789012:secret:ferry-db-AbCdEf")
                .as_deref(),
            Some("eu-central-1")
        );
        assert_eq!(region_of("ferry-db"), None);
        assert_eq!(region_of("arn:aws:sqs:eu-central-1:1:q"), None);
    }
}
