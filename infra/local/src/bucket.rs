//! Objects in the local stack: the bucket directory (the local stand-in for S3 or a blob
//! container), a watcher that turns new files in it into blob-created notifications, and
//! backfill, which runs every existing object under a prefix — in any store — through the same
//! transform handler. Both are exactly-once by the handler's ledger: running them again loads
//! nothing new.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ferry_shared::config::Env;
use ferry_shared::BlobCreated;
use ferry_transform::{ObjectReport, Outcome, Transform};
use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use tracing::warn;

/// The local bucket (`FERRY_BUCKET_DIR`, default `<state dir>/bucket`), created if missing.
pub fn bucket_dir() -> anyhow::Result<PathBuf> {
    let dir = match Env::process().get("FERRY_BUCKET_DIR") {
        Some(d) => PathBuf::from(d),
        None => crate::stack::state_dir()?.join("bucket"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(std::fs::canonicalize(&dir)?)
}

/// The store URL of a local directory.
pub fn file_store(dir: &std::path::Path) -> String {
    format!("file://{}", dir.display())
}

/// Totals over many objects.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub objects: u64,
    pub loaded_objects: u64,
    pub already_applied: u64,
    pub stale: u64,
    pub gone: u64,
    pub quarantined_objects: u64,
    pub failed: u64,
    pub records: u64,
    pub events_loaded: u64,
    pub duplicates: u64,
    pub quarantined_records: u64,
    pub dropped: u64,
}

impl Summary {
    pub fn add(&mut self, r: &ObjectReport) {
        self.objects += 1;
        match r.outcome {
            Outcome::Loaded => self.loaded_objects += 1,
            Outcome::AlreadyApplied => self.already_applied += 1,
            Outcome::Stale => self.stale += 1,
            Outcome::Gone => self.gone += 1,
            Outcome::Quarantined(_) => self.quarantined_objects += 1,
        }
        self.records += r.records;
        self.events_loaded += r.loaded;
        self.duplicates += r.duplicates;
        if !matches!(r.outcome, Outcome::Quarantined(_)) {
            self.quarantined_records += r.quarantined_total();
        }
        self.dropped += r.dropped.values().sum::<u64>();
    }
}

/// Lists the objects under `prefix` in `store` (sorted by key).
pub async fn list(
    transform: &Transform,
    store: &str,
    prefix: &str,
) -> anyhow::Result<Vec<BlobCreated>> {
    let client = transform.stores().get(store)?;
    let prefix = match prefix.trim_end_matches('/') {
        "" => None,
        p => Some(ObjectPath::parse(p).with_context(|| format!("prefix {p:?}"))?),
    };
    let mut objects: Vec<BlobCreated> = client
        .list(prefix.as_ref())
        .map_ok(|m| BlobCreated {
            store: store.to_owned(),
            key: m.location.to_string(),
            size: Some(m.size),
            etag: m.e_tag,
            version: m.version,
            sequencer: None,
        })
        .try_collect()
        .await
        .with_context(|| {
            format!(
                "list {store}/{}",
                prefix.map(|p| p.to_string()).unwrap_or_default()
            )
        })?;
    objects.retain(|b| !hidden(&b.key));
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(objects)
}

/// Files being written (`.name`, `*.tmp`, `*.part`) are not objects yet.
fn hidden(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part")
}

/// Runs every object under `prefix` through the handler, calling `progress` after each.
pub async fn backfill(
    transform: &Transform,
    store: &str,
    prefix: &str,
    mut progress: impl FnMut(usize, usize, &BlobCreated, &Result<ObjectReport, String>),
) -> anyhow::Result<Summary> {
    let objects = list(transform, store, prefix).await?;
    let mut summary = Summary::default();
    for (i, blob) in objects.iter().enumerate() {
        let result = transform.process(blob).await.map_err(|e| e.to_string());
        match &result {
            Ok(r) => summary.add(r),
            Err(_) => {
                summary.objects += 1;
                summary.failed += 1;
            }
        }
        progress(i + 1, objects.len(), blob, &result);
    }
    Ok(summary)
}

/// The local stand-in for bucket notifications: polls the directory and hands each new or
/// changed file to the handler once. A file whose handling failed transiently is retried on the
/// next scan, like a redelivered notification.
#[derive(Debug)]
pub struct Watcher {
    store: String,
    seen: HashSet<(String, Option<String>)>,
}

impl Watcher {
    pub fn new(dir: &std::path::Path) -> Watcher {
        Watcher {
            store: file_store(dir),
            seen: HashSet::new(),
        }
    }

    /// One scan: handles what is new since the last one and returns its reports.
    pub async fn scan(&mut self, transform: &Transform) -> anyhow::Result<Vec<ObjectReport>> {
        let mut reports = Vec::new();
        for blob in list(transform, &self.store, "").await? {
            let id = (blob.key.clone(), blob.etag.clone());
            if self.seen.contains(&id) {
                continue;
            }
            match transform.process(&blob).await {
                Ok(r) => {
                    self.seen.insert(id);
                    reports.push(r);
                }
                Err(e) => warn!(key = %blob.key, error = %e, "will retry on the next scan"),
            }
        }
        Ok(reports)
    }

    /// Scans every `interval` until `stop` resolves.
    pub async fn run(
        &mut self,
        transform: &Transform,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
        mut each: impl FnMut(&ObjectReport),
    ) -> anyhow::Result<()> {
        tokio::pin!(stop);
        loop {
            for r in self.scan(transform).await? {
                each(&r);
            }
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
