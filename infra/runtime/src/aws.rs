//! The few AWS API calls the functions make themselves (an SQS nudge, the database secret at
//! start-up), in the AWS JSON protocol, SigV4-signed by `object_store`'s signer with the role
//! credentials Lambda puts in the environment. The AWS SDK would add a large build for two
//! calls.

use std::sync::OnceLock;
use std::time::Duration;

use object_store::aws::{AwsAuthorizer, AwsCredential};
use serde_json::Value;

/// A variable's value when it is set and not blank (read like every setting, through
/// [`ferry_shared::config::Env`]).
pub(crate) fn var(k: &str) -> Option<String> {
    ferry_shared::config::Env::process().get(k)
}

/// The role credentials Lambda provides (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`), or `None` when they are missing.
pub(crate) fn credential_from_env() -> Option<AwsCredential> {
    Some(AwsCredential {
        key_id: var("AWS_ACCESS_KEY_ID")?,
        secret_key: var("AWS_SECRET_ACCESS_KEY")?,
        token: var("AWS_SESSION_TOKEN"),
    })
}

/// A failed call: what went wrong, and the HTTP status when the service answered.
#[derive(Debug)]
pub(crate) struct CallError {
    pub status: Option<u16>,
    pub problem: String,
}

impl CallError {
    fn new(problem: String) -> CallError {
        CallError {
            status: None,
            problem,
        }
    }

    /// Whether trying again may help: no answer (network, time limit) or a server error.
    pub fn transient(&self) -> bool {
        self.status.is_none_or(|s| s >= 500)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problem)
    }
}

/// One AWS JSON API: where to send calls and how to sign them.
pub(crate) struct JsonApi<'a> {
    /// The service endpoint, e.g. `https://sqs.eu-west-1.amazonaws.com/`.
    pub endpoint: &'a str,
    /// The SigV4 service name (`sqs`, `secretsmanager`).
    pub service: &'a str,
    pub region: &'a str,
    pub credential: &'a AwsCredential,
    /// `1.0` (SQS) or `1.1` (Secrets Manager).
    pub json_version: &'a str,
    /// The prefix of `X-Amz-Target` (`AmazonSQS`, `secretsmanager`).
    pub target_prefix: &'a str,
    pub timeout: Duration,
}

impl JsonApi<'_> {
    /// POSTs `payload` to the endpoint with `X-Amz-Target: {prefix}.{action}`, signed.
    /// Returns the response document, or an error that names the action and quotes (a little
    /// of) what the service answered — never the request, which may carry a secret's name but
    /// the answer of a failed call carries no secret.
    pub async fn call(&self, action: &str, payload: &Value) -> Result<Value, CallError> {
        let body = payload.to_string();
        let mut request = http::Request::builder()
            .method("POST")
            .uri(self.endpoint)
            .header(
                "content-type",
                format!("application/x-amz-json-{}", self.json_version),
            )
            .header("x-amz-target", format!("{}.{action}", self.target_prefix))
            .body(object_store::client::HttpRequestBody::from(body.clone()))
            .map_err(|e| CallError::new(format!("cannot build the {action} request: {e}")))?;
        AwsAuthorizer::new(self.credential, self.service, self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| CallError::new(format!("cannot sign the {action} request: {e}")))?;
        let mut outgoing = client()
            .post(request.uri().to_string())
            .timeout(self.timeout)
            .body(body);
        for (name, value) in request.headers() {
            outgoing = outgoing.header(name, value);
        }
        let response = outgoing
            .send()
            .await
            .map_err(|e| CallError::new(format!("{action}: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let excerpt: String = text.chars().take(300).collect();
            return Err(CallError {
                status: Some(status.as_u16()),
                problem: format!("{action} answered {status}: {excerpt}"),
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// One HTTP client per process (connection reuse across invocations); each call sets its
/// own time limit.
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| reqwest::Client::builder().build().unwrap_or_default())
}
