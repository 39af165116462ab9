//! CloudEvent and batch validation (`parse_body`): every input is accounted for. A body that
//! is not JSON (or not an object or array) is one whole-message rejection holding the exact
//! bytes; otherwise every event of it is either accepted or rejected with exactly one reason
//! at its own position. No accepted event holds text that cannot be stored, a key attribute
//! over the bound, or `data_base64` that is not base64.
#![no_main]

use std::collections::BTreeSet;

use base64::Engine;
use chrono::{TimeZone, Utc};
use ferry_shared::validate::{parse_body, unstorable_escape, MAX_KEY_ATTRIBUTE_BYTES};
use ferry_shared::Limits;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let now = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
    let limits = Limits {
        max_event_bytes: 4096,
        ..Limits::default()
    };
    let parsed = parse_body(data, &limits, now);
    let whole: Vec<_> = parsed.rejected.iter().filter(|r| r.position.is_none()).collect();
    if !whole.is_empty() {
        assert_eq!(whole.len(), 1, "one whole-message rejection");
        assert!(parsed.events.is_empty() && parsed.rejected.len() == 1);
        assert_eq!(whole[0].raw, data, "the exact bytes are kept");
        return;
    }
    let text = std::str::from_utf8(data).expect("a body read per event is UTF-8");
    let expected = match text.trim_start().as_bytes().first() {
        Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(text)
            .expect("an array was read")
            .len(),
        _ => 1,
    };
    assert_eq!(parsed.events.len() + parsed.rejected.len(), expected);
    let mut positions = BTreeSet::new();
    for e in &parsed.events {
        assert!(positions.insert(e.position), "one outcome per position");
        assert!(unstorable_escape(&e.raw).is_none(), "accepted unstorable text");
        for attr in [&e.id, &e.source, &e.ty] {
            assert!(!attr.is_empty() && attr.len() <= MAX_KEY_ATTRIBUTE_BYTES);
        }
        assert!(e.raw.len() <= limits.max_event_bytes);
        if let Some(b64) = &e.data_base64 {
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            assert!(engine.decode(b64).is_ok(), "accepted data_base64 that is not base64");
        }
    }
    for r in &parsed.rejected {
        let p = r.position.expect("per-event rejections have a position");
        assert!(positions.insert(p), "one outcome per position");
        assert!(!r.detail.is_empty());
    }
});
