//! The webhook URL guard: a URL it accepts is https, unambiguous (no backslash, whitespace or
//! control character), at most 2,048 bytes, never an IP literal in a refused class, and in its
//! normalised form (checking that form again gives the same URL).
#![no_main]

use std::net::IpAddr;

use ferry_fanout::guard::{classify, Policy, MAX_URL_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let strict = Policy::default();
    for candidate in [text.to_owned(), format!("https://{text}")] {
        let Ok(url) = strict.check_url(&candidate) else {
            continue;
        };
        assert!(candidate.len() <= MAX_URL_BYTES);
        assert_eq!(url.scheme(), "https");
        assert!(!candidate.chars().any(|c| c == '\\' || c.is_whitespace() || c.is_control()));
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
            None => panic!("accepted a URL without a host: {candidate:?}"),
        };
        if let Some(ip) = literal {
            assert_eq!(classify(ip), None, "accepted {ip} in {candidate:?}");
        }
        assert!(url.username().is_empty() && url.password().is_none());
        let again = strict.check_url(url.as_str()).expect("the normalised form passes");
        assert_eq!(again.as_str(), url.as_str(), "normalisation is stable");
    }
});
