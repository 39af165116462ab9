//! S3 (direct and via SQS), EventBridge and Event Grid notifications: any bytes give a
//! notice without a panic, and every blob named has a named store (bucket, or account and
//! container) and a non-empty key.
#![no_main]

use ferry_runtime::blob::{azure_blob_url, form_decode, read_notice, Notice};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Notice::Blobs(blobs) = read_notice(data) {
        assert!(!blobs.is_empty());
        for b in blobs {
            let name = b.store.split_once("://").map_or("", |(_, n)| n);
            assert!(!name.is_empty() && !name.ends_with('/'), "{b:?}");
            if let Some(bucket) = b.store.strip_prefix("s3://") {
                assert!(!bucket.contains('/'), "{b:?}");
            }
            assert!(!b.key.is_empty(), "{b:?}");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = form_decode(text);
        if let Ok((store, key)) = azure_blob_url(text) {
            assert!(store.starts_with("az://") && !key.is_empty(), "{store} {key}");
        }
    }
});
