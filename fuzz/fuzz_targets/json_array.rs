//! The streaming JSON-array scanner yields the same elements as serde_json on valid arrays of
//! objects, each numbered from 1, and never a record that is not one whole element.
#![no_main]

#[path = "common.rs"]
mod common;

use common::Got;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let (result, got) = common::read(data, "dumps/a.json", 1 << 20);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text_no_bom = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Ok(elements) = serde_json::from_str::<Vec<&RawValue>>(text_no_bom) else {
        return;
    };
    if !text_no_bom.trim_start().starts_with('[')
        || !elements.iter().all(|e| e.get().starts_with('{'))
    {
        return;
    }
    result.expect("a valid array is read");
    // Compared as text: the element exactly as serde_json delimits it (a number beyond a
    // double is valid JSON that a `Value` cannot hold, so values would not do).
    let expected: Vec<&[u8]> = elements.iter().map(|e| e.get().as_bytes()).collect();
    let scanned: Vec<&[u8]> = got
        .iter()
        .enumerate()
        .map(|(i, (n, g, _))| {
            assert_eq!(*n, i as u64 + 1, "elements are numbered from 1");
            match g {
                Got::Json(t, false) => t.as_slice(),
                other => panic!("element {n}: {other:?} in a valid array"),
            }
        })
        .collect();
    assert_eq!(scanned, expected);
});
