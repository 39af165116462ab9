//! The Azure host's queue envelopes: any bytes are read or refused without a panic, and a
//! message reaches the handler byte for byte whichever way the host encoded it (plain string,
//! or the string JSON-quoted once more).
#![no_main]

use ferry_runtime::azure::{blob_trigger, decode_string, queue_message};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let _ = queue_message(data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = blob_trigger(&v);
        let _ = decode_string(&v);
    }
    let Ok(message) = std::str::from_utf8(data) else {
        return;
    };
    // A body that is itself one JSON string literal is the host's double encoding already:
    // both forms then decode to its content, which is the documented rule.
    if serde_json::from_str::<String>(message).is_ok() {
        return;
    }
    let plain = json!({"Data": {"message": message}, "Metadata": {"Id": "m-1", "DequeueCount": 1}});
    let quoted = json!({"Data": {"message": serde_json::to_string(message).unwrap()},
                        "Metadata": {"Id": "\"m-1\"", "DequeueCount": "1"}});
    for envelope in [plain, quoted] {
        let m = queue_message(envelope.to_string().as_bytes()).expect("a valid envelope");
        assert_eq!(m.body, message.as_bytes());
        assert_eq!((m.id.as_str(), m.delivery_count), ("m-1", 1));
    }
});
