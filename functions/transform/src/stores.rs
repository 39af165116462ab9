//! Object stores by URL, through the `object_store` crate: the same code reads local files, S3
//! and Azure Blob.
//!
//! | store URL | client | configured by |
//! |---|---|---|
//! | `s3://<bucket>` | `AmazonS3Builder::from_env` | `AWS_*` (region, credentials or the Lambda role, `AWS_ENDPOINT` + `AWS_ALLOW_HTTP` for an S3-compatible server) |
//! | `az://<account>/<container>` | `MicrosoftAzureBuilder::from_env` | `AZURE_*` (key, SAS, managed identity; `AZURE_STORAGE_USE_EMULATOR` for Azurite) |
//! | `file:///<dir>` | `LocalFileSystem` | the path |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::local::LocalFileSystem;
use object_store::{ClientConfigKey, ObjectStore, RetryConfig};

/// A store URL that names no usable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {0:?}: expected s3://<bucket>, az://<account>/<container> or file:///<dir>")]
    Unsupported(String),
    #[error("store {store:?}: {source}")]
    Build {
        store: String,
        source: object_store::Error,
    },
}

/// Store clients, built once per store and reused (connection pools, credentials).
#[derive(Debug)]
pub struct Stores {
    open: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    /// Time limit of one request, body included, and of its retries. object_store's 30 s
    /// default would cut the download of a large file that the loader reads slowly.
    timeout: Duration,
    /// Settings applied on top of the environment, by object_store key (`aws_endpoint`,
    /// `azure_storage_use_emulator`, …), plus `ferry_max_retries` (object_store's request
    /// retries, 10 by default); for tests and the local stack.
    options: Vec<(String, String)>,
}

impl Stores {
    /// Stores configured from the environment plus `options`.
    pub fn with_options(options: Vec<(String, String)>) -> Stores {
        Stores {
            open: Mutex::default(),
            timeout: DEFAULT_TIMEOUT,
            options,
        }
    }

    /// Sets the request time limit (see [`Stores`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Stores {
        self.timeout = timeout;
        self
    }

    /// The client for a store URL.
    pub fn get(&self, store: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = open.get(store) {
            return Ok(Arc::clone(s));
        }
        let built = build(store, &self.options, self.timeout)?;
        open.insert(store.to_owned(), Arc::clone(&built));
        Ok(built)
    }
}

impl Default for Stores {
    fn default() -> Self {
        Stores::with_options(Vec::new())
    }
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

fn build(
    store: &str,
    options: &[(String, String)],
    timeout: Duration,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let limit = format!("{}s", timeout.as_secs().max(1));
    let fail = |source| StoreError::Build {
        store: store.to_owned(),
        source,
    };
    if let Some(bucket) = store.strip_prefix("s3://").filter(|b| valid_name(b)) {
        let mut builder = AmazonS3Builder::from_env()
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), &limit);
        for (k, v) in options.iter().filter(|(k, _)| k.starts_with("aws_")) {
            let key = k.parse().map_err(fail)?;
            builder = builder.with_config(key, v);
        }
        let s3 = builder
            .with_bucket_name(bucket)
            .with_retry(retry(options, timeout))
            .build()
            .map_err(fail)?;
        return Ok(Arc::new(s3));
    }
    if let Some((account, container)) = store
        .strip_prefix("az://")
        .and_then(|r| r.split_once('/'))
        .filter(|(a, c)| valid_name(a) && valid_name(c))
    {
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_config(AzureConfigKey::Client(ClientConfigKey::Timeout), &limit);
        for (k, v) in options.iter().filter(|(k, _)| k.starts_with("azure_")) {
            let key = k.parse().map_err(fail)?;
            builder = builder.with_config(key, v);
        }
        let az = builder
            .with_account(account)
            .with_container_name(container)
            .with_retry(retry(options, timeout))
            .build()
            .map_err(fail)?;
        return Ok(Arc::new(az));
    }
    if let Some(dir) = store.strip_prefix("file://").filter(|d| d.starts_with('/')) {
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(fail)?;
        return Ok(Arc::new(fs));
    }
    Err(StoreError::Unsupported(store.to_owned()))
}

fn retry(options: &[(String, String)], timeout: Duration) -> RetryConfig {
    let mut retry = RetryConfig {
        retry_timeout: timeout,
        ..RetryConfig::default()
    };
    if let Some(n) = options
        .iter()
        .find(|(k, _)| k == "ferry_max_retries")
        .and_then(|(_, v)| v.parse().ok())
    {
        retry.max_retries = n;
    }
    retry
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('/')
}

/// Splits `<store>/<prefix>` as given to `ferry backfill`: `s3://bucket/a/b` →
/// (`s3://bucket`, `a/b`), `az://account/container/a` → (`az://account/container`, `a`).
/// Local paths are split by the caller, which knows its bucket directory.
pub fn split_store_url(url: &str) -> Result<(String, String), StoreError> {
    let unsupported = || StoreError::Unsupported(url.to_owned());
    let (scheme, rest, parts) = if let Some(r) = url.strip_prefix("s3://") {
        ("s3://", r, 1)
    } else if let Some(r) = url.strip_prefix("az://") {
        ("az://", r, 2)
    } else {
        return Err(unsupported());
    };
    let mut pieces = rest.splitn(parts + 1, '/');
    let mut store = String::from(scheme);
    for i in 0..parts {
        let p = pieces
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(unsupported)?;
        if i > 0 {
            store.push('/');
        }
        store.push_str(p);
    }
    Ok((store, pieces.next().unwrap_or_default().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_split_into_store_and_prefix() {
        assert_eq!(
            split_store_url("s3://drop/tracker/2026/").unwrap(),
            ("s3://drop".into(), "tracker/2026/".into())
        );
        assert_eq!(
            split_store_url("az://acct/incoming/dumps").unwrap(),
            ("az://acct/incoming".into(), "dumps".into())
        );
        assert_eq!(
            split_store_url("s3://drop").unwrap(),
            ("s3://drop".into(), String::new())
        );
        assert!(split_store_url("az://acct").is_err());
        assert!(split_store_url("gs://x").is_err());
    }

    #[test]
    fn unknown_schemes_are_refused() {
        let stores = Stores::default();
        assert!(matches!(
            stores.get("ftp://x"),
            Err(StoreError::Unsupported(_))
        ));
        assert!(stores.get("file://relative").is_err());
    }
}
