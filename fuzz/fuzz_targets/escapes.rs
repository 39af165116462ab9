//! The unstorable-escape scan agrees with serde_json: for any JSON string literal, the scan
//! finds something whenever serde_json fails to decode it (a lone surrogate), never a
//! surrogate when serde_json decodes it, and `\u0000` exactly when the decoded text holds a
//! NUL.
#![no_main]

use ferry_shared::validate::unstorable_escape;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Any text becomes the inside of a string literal; only literals JSON accepts count.
    let literal = format!("\"{text}\"");
    let Ok(raw) = serde_json::from_str::<&RawValue>(&literal) else {
        return;
    };
    let found = unstorable_escape(raw.get());
    match serde_json::from_str::<String>(raw.get()) {
        // The scan reports the first unstorable escape, which may be a NUL before the
        // surrogate that serde_json refuses: it must find something.
        Err(_) => assert!(
            found.is_some(),
            "serde_json refused {literal:?}, the scan found nothing"
        ),
        Ok(s) => {
            assert!(
                found.is_none_or(|u| u.unit == 0),
                "the scan found a surrogate in {literal:?}"
            );
            assert_eq!(s.contains('\0'), found.is_some(), "{literal:?}");
        }
    }
});
