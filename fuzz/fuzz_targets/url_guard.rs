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
            assert!(!refused_here(ip), "accepted {ip} in {candidate:?}");
        }
        assert!(url.username().is_empty() && url.password().is_none());
        let again = strict.check_url(url.as_str()).expect("the normalised form passes");
        assert_eq!(again.as_str(), url.as_str(), "normalisation is stable");
    }
});

/// An independent table of ranges that must never receive webhooks (written from RFC 6890 and
/// the clouds' metadata addresses, not from the guard's code).
fn refused_here(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            a == 0
                || a == 10
                || a == 127
                || (a == 169 && b == 254)
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 100 && (64..128).contains(&b))
                || a >= 224
                || (a == 168 && b == 63 && c == 129 && d == 16)
                || (a == 100 && b == 100 && c == 100 && d == 200)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xff00) == 0xff00
                || v6.to_ipv4_mapped().is_some_and(|v4| refused_here(IpAddr::V4(v4)))
        }
    }
}
