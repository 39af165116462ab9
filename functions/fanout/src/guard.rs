//! SSRF guard: webhooks go only to public addresses, and to the address that was checked.
//!
//! - [`Policy::check_url`] refuses a URL before anything is sent: scheme (HTTPS only unless
//!   `FERRY_WEBHOOK_ALLOW_HTTP`), credentials in the URL, and IP-literal hosts in a refused
//!   class.
//! - [`GuardedResolver`] is the HTTP client's DNS resolver. It resolves the host, drops every
//!   refused address and hands the client only the checked ones, so the connection goes to an
//!   address that passed (no second lookup that a rebinding DNS server could answer
//!   differently). When nothing is left, the request fails with [`Refused`].
//!
//! Refused classes: unspecified, loopback, private (RFC 1918, IPv6 site-local), link-local,
//! shared/CGNAT (100.64/10), multicast, broadcast and reserved ranges, unique-local IPv6,
//! IPv4-mapped IPv6, and cloud metadata addresses (169.254.169.254, AWS's fd00:ec2::254, Azure's
//! 168.63.129.16, Alibaba's 100.100.100.200). NAT64 and 6to4 addresses are judged by the IPv4
//! address they carry. [`Policy::allow`] lists networks exempted on purpose: loopback for the
//! tests and the local demo (`FERRY_WEBHOOK_ALLOW_NETS=127.0.0.0/8`), never in production.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use thiserror::Error;

/// Why an address may not receive webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    SharedCgnat,
    Multicast,
    Broadcast,
    Reserved,
    UniqueLocal,
    Ipv4Mapped,
    Metadata,
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Class::Unspecified => "an unspecified address",
            Class::Loopback => "a loopback address",
            Class::Private => "a private address",
            Class::LinkLocal => "a link-local address",
            Class::SharedCgnat => "a shared (CGNAT) address",
            Class::Multicast => "a multicast address",
            Class::Broadcast => "the broadcast address",
            Class::Reserved => "a reserved or documentation address",
            Class::UniqueLocal => "a unique-local IPv6 address",
            Class::Ipv4Mapped => "an IPv4-mapped IPv6 address",
            Class::Metadata => "a cloud metadata address",
        })
    }
}

/// A refused destination, with the reason.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Refused {
    #[error("not a valid URL: {0}")]
    Url(String),
    #[error("the URL is {0} bytes long; at most {MAX_URL_BYTES} are accepted")]
    TooLong(usize),
    #[error(
        "the URL contains {0}; type it without (percent-encode a space as %20), so every \
         tool reads the same host"
    )]
    Ambiguous(&'static str),
    #[error("scheme {0:?} refused: webhooks go over https (FERRY_WEBHOOK_ALLOW_HTTP allows http)")]
    Scheme(String),
    #[error("URLs with credentials are refused; sign requests instead")]
    Credentials,
    #[error("the URL has no host")]
    NoHost,
    #[error("{host} is {class} ({addr}), refused")]
    Address {
        host: String,
        addr: IpAddr,
        class: Class,
    },
    #[error("{host} resolves only to refused addresses: {addr} is {class}")]
    Resolved {
        host: String,
        addr: IpAddr,
        class: Class,
    },
    #[error("{host} could not be resolved: {error}")]
    Unresolvable { host: String, error: String },
}

fn parse(url: &str) -> Result<Url, Refused> {
    Url::parse(url).map_err(|e| Refused::Url(format!("{url:?}: {e}")))
}

/// Longest endpoint URL accepted (what browsers and most servers handle).
pub const MAX_URL_BYTES: usize = 2048;

/// The class of an address that may not receive webhooks, or `None` for a public address.
pub fn classify(ip: IpAddr) -> Option<Class> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Class> {
    const METADATA: [Ipv4Addr; 4] = [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(168, 63, 129, 16),
        Ipv4Addr::new(100, 100, 100, 200),
        Ipv4Addr::new(192, 0, 0, 192),
    ];
    let [a, b, c, _] = ip.octets();
    Some(if METADATA.contains(&ip) {
        Class::Metadata
    } else if a == 0 {
        Class::Unspecified
    } else if a == 127 {
        Class::Loopback
    } else if a == 10 || (a == 172 && (b & 0xf0) == 16) || (a == 192 && b == 168) {
        Class::Private
    } else if a == 169 && b == 254 {
        Class::LinkLocal
    } else if a == 100 && (b & 0xc0) == 64 {
        Class::SharedCgnat
    } else if (224..240).contains(&a) {
        Class::Multicast
    } else if ip == Ipv4Addr::BROADCAST {
        Class::Broadcast
    } else if a >= 240
        || (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 192 && b == 88 && c == 99)
        || (a == 198 && (b & 0xfe) == 18)
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
    {
        Class::Reserved
    } else {
        return None;
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Class> {
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(Class::Metadata);
    }
    // IPv4-mapped ::ffff:a.b.c.d, and the SIIT IPv4-translated form ::ffff:0:a.b.c.d.
    if ip.to_ipv4_mapped().is_some() || (s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0) {
        return Some(Class::Ipv4Mapped);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    Some(if ip.is_unspecified() {
        Class::Unspecified
    } else if ip.is_loopback() {
        Class::Loopback
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Class::LinkLocal
    } else if (s[0] & 0xffc0) == 0xfec0 {
        Class::Private
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Class::UniqueLocal
    } else if (s[0] & 0xff00) == 0xff00 {
        Class::Multicast
    } else if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        // NAT64 well-known prefix 64:ff9b::/96: the IPv4 address in the last 32 bits decides.
        return classify_v4(embedded(s[6], s[7]));
    } else if s[0] == 0x0064 && s[1] == 0xff9b {
        // The local-use 64:ff9b:1::/48 and the rest of 64:ff9b::/32: the embedded address's
        // position depends on the translator's prefix length; refuse.
        Class::Reserved
    } else if s[0] == 0x2002 {
        // 6to4 carries its IPv4 address in bits 16–47.
        return classify_v4(embedded(s[1], s[2]));
    } else if s[..6] == [0; 6]
        || (s[0] == 0x2001 && s[1] == 0)
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x0100 && s[1..4] == [0; 3])
    {
        // IPv4-compatible (deprecated), Teredo, documentation, discard-only.
        Class::Reserved
    } else {
        return None;
    })
}

/// Where webhooks may go.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Allow `http://` URLs (HTTPS only by default).
    pub allow_http: bool,
    /// Networks exempted from the refused classes, e.g. `127.0.0.0/8` for local receivers.
    pub allow: Vec<IpNet>,
}

impl Policy {
    /// Whether `ip` may receive webhooks; the refused class otherwise.
    pub fn admits(&self, ip: IpAddr) -> Result<(), Class> {
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        classify(ip).map_or(Ok(()), Err)
    }

    /// Checks what can be checked without DNS: scheme, credentials, IP-literal hosts.
    pub fn check_url(&self, url: &str) -> Result<Url, Refused> {
        if url.len() > MAX_URL_BYTES {
            return Err(Refused::TooLong(url.len()));
        }
        // The URL standard reads `\` as `/` and drops tabs and newlines, other parsers do
        // not: `https://a.example\@b.example/` names a different host to each. Only text
        // that every parser reads alike is accepted.
        if let Some(what) = url.chars().find_map(|c| match c {
            '\\' => Some("a backslash"),
            c if c.is_whitespace() => Some("whitespace"),
            c if c.is_control() => Some("a control character"),
            _ => None,
        }) {
            return Err(Refused::Ambiguous(what));
        }
        self.check_parsed(parse(url)?)
    }

    /// The send-time check of a stored URL: judged as parsed, so a URL stored by an earlier
    /// release (which may hold a space the parser encodes) is judged by the host the parser
    /// reads, which is the host the request goes to.
    pub fn check_stored(&self, url: &str) -> Result<Url, Refused> {
        self.check_parsed(parse(url)?)
    }

    /// The checks of [`Policy::check_url`] that hold for a URL as parsed.
    fn check_parsed(&self, parsed: Url) -> Result<Url, Refused> {
        // Percent-encoding can lengthen a URL: the bound holds for the form that is stored and
        // checked again at send time (found by fuzzing).
        if parsed.as_str().len() > MAX_URL_BYTES {
            return Err(Refused::TooLong(parsed.as_str().len()));
        }
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(Refused::Scheme(other.to_owned())),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Refused::Credentials);
        }
        let literal = match parsed.host() {
            None => return Err(Refused::NoHost),
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
        };
        if let Some(addr) = literal {
            self.admits(addr).map_err(|class| Refused::Address {
                host: addr.to_string(),
                addr,
                class,
            })?;
        }
        Ok(parsed)
    }

    /// Checks a URL as `ferry endpoint add` does: the URL, then every address its host
    /// resolves to now (one refused address refuses the endpoint). Returns the URL as parsed,
    /// whose serialisation is what is stored.
    pub async fn check_endpoint(&self, lookup: &dyn Lookup, url: &str) -> Result<Url, Refused> {
        let parsed = self.check_url(url)?;
        if let Some(url::Host::Domain(host)) = parsed.host() {
            let addrs = lookup
                .lookup(host)
                .await
                .map_err(|e| Refused::Unresolvable {
                    host: host.to_owned(),
                    error: e.to_string(),
                })?;
            for addr in addrs {
                self.admits(addr).map_err(|class| Refused::Address {
                    host: host.to_owned(),
                    addr,
                    class,
                })?;
            }
        }
        Ok(parsed)
    }
}

type Lookup_<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Name resolution, replaceable in tests (a DNS answer that changes between checks).
pub trait Lookup: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str) -> Lookup_<'a>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> Lookup_<'a> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// The HTTP client's resolver: resolves through `lookup`, keeps only admitted addresses.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<Policy>,
    lookup: Arc<dyn Lookup>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<Policy>, lookup: Arc<dyn Lookup>) -> GuardedResolver {
        GuardedResolver { policy, lookup }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = this
                .lookup
                .lookup(&host)
                .await
                .map_err(|e| Refused::Unresolvable {
                    host: host.clone(),
                    error: e.to_string(),
                })?;
            let mut first_refusal = None;
            let admitted: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|addr| match this.policy.admits(*addr) {
                    Ok(()) => true,
                    Err(class) => {
                        first_refusal.get_or_insert((*addr, class));
                        false
                    }
                })
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if admitted.is_empty() {
                let error = match first_refusal {
                    Some((addr, class)) => Refused::Resolved { host, addr, class },
                    None => Refused::Unresolvable {
                        host,
                        error: "no addresses".into(),
                    },
                };
                return Err(error.into());
            }
            Ok(Box::new(admitted.into_iter()) as Addrs)
        })
    }
}

/// The [`Refused`] behind an HTTP client error, if the guard caused it.
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<Class> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn every_refused_class_is_recognised() {
        for (addr, expected) in [
            ("0.0.0.0", Class::Unspecified),
            ("127.0.0.1", Class::Loopback),
            ("127.255.0.9", Class::Loopback),
            ("10.1.2.3", Class::Private),
            ("172.16.0.1", Class::Private),
            ("172.31.255.255", Class::Private),
            ("192.168.1.1", Class::Private),
            ("169.254.10.10", Class::LinkLocal),
            ("169.254.169.254", Class::Metadata),
            ("168.63.129.16", Class::Metadata),
            ("100.100.100.200", Class::Metadata),
            ("100.64.0.1", Class::SharedCgnat),
            ("100.127.255.254", Class::SharedCgnat),
            ("224.0.0.1", Class::Multicast),
            ("239.255.255.250", Class::Multicast),
            ("255.255.255.255", Class::Broadcast),
            ("240.0.0.1", Class::Reserved),
            ("192.0.2.10", Class::Reserved),
            ("198.18.0.1", Class::Reserved),
            ("203.0.113.5", Class::Reserved),
            ("::", Class::Unspecified),
            ("::1", Class::Loopback),
            ("fe80::1", Class::LinkLocal),
            ("fec0::1", Class::Private),
            ("fc00::1", Class::UniqueLocal),
            ("fd12:3456::1", Class::UniqueLocal),
            ("fd00:ec2::254", Class::Metadata),
            ("ff02::1", Class::Multicast),
            ("::ffff:8.8.8.8", Class::Ipv4Mapped),
            ("::ffff:127.0.0.1", Class::Ipv4Mapped),
            ("::ffff:0:10.0.0.1", Class::Ipv4Mapped),
            ("::ffff:0:8.8.8.8", Class::Ipv4Mapped),
            ("64:ff9b::a9fe:a9fe", Class::Metadata),
            ("64:ff9b::7f00:1", Class::Loopback),
            ("64:ff9b:1:a9fe:a9:fe00:808:808", Class::Reserved),
            ("2002:c0a8:0101::1", Class::Private),
            ("::127.0.0.1", Class::Reserved),
            ("2001:db8::1", Class::Reserved),
            ("2001:0:4136:e378::1", Class::Reserved),
        ] {
            assert_eq!(class(addr), Some(expected), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert_eq!(class(addr), None, "{addr}");
        }
    }

    #[test]
    fn urls_that_parsers_read_differently_or_too_long_are_refused() {
        let strict = Policy::default();
        for (url, what) in [
            ("https://93.184.215.14\\@127.0.0.1/", "a backslash"),
            ("https://partner.example\\hook", "a backslash"),
            ("https://partner.example/a hook", "whitespace"),
            ("https://partner.example/\thook", "whitespace"),
            (" https://partner.example/", "whitespace"),
            ("https://partner.example/\u{a0}", "whitespace"),
            ("https://partner.example/\u{7f}", "a control character"),
            ("https://partner.example/\u{0}", "a control character"),
        ] {
            assert_eq!(
                strict.check_url(url),
                Err(Refused::Ambiguous(what)),
                "{url:?}"
            );
        }
        let long = format!("https://partner.example/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(strict.check_url(&long), Err(Refused::TooLong(long.len())));
        let fits = format!("https://partner.example/{}", "a".repeat(MAX_URL_BYTES - 24));
        assert_eq!(fits.len(), MAX_URL_BYTES);
        assert!(strict.check_url(&fits).is_ok());
        // Under the bound as typed, over it once percent-encoded: refused, or it would be
        // stored and then refused at every send.
        let grows = format!("https://partner.example/{}", "é".repeat(1000));
        assert!(grows.len() <= MAX_URL_BYTES);
        assert!(matches!(strict.check_url(&grows), Err(Refused::TooLong(n)) if n > MAX_URL_BYTES));
    }

    #[test]
    fn a_url_is_kept_in_its_normalised_form() {
        let strict = Policy::default();
        let url = strict
            .check_url("HTTPS://Partner.EXAMPLE:443/a/./b/../hooks?x=%7e&y=é")
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://partner.example/a/hooks?x=%7e&y=%C3%A9"
        );
    }

    #[test]
    fn urls_are_checked_before_any_lookup() {
        let strict = Policy::default();
        assert!(strict.check_url("https://partner.example/hook").is_ok());
        assert_eq!(
            strict.check_url("http://partner.example/hook"),
            Err(Refused::Scheme("http".into()))
        );
        assert_eq!(
            strict.check_url("https://user:pw@partner.example/"),
            Err(Refused::Credentials)
        );
        // Hex and short IPv4 forms are normalised by the URL parser before the check.
        for url in [
            "https://127.0.0.1/",
            "https://0x7f.1/",
            "https://[::1]/",
            "https://[::ffff:169.254.169.254]/",
        ] {
            assert!(
                matches!(strict.check_url(url), Err(Refused::Address { .. })),
                "{url}"
            );
        }
        let local = Policy {
            allow_http: true,
            allow: vec!["127.0.0.0/8".parse().unwrap()],
        };
        assert!(local.check_url("http://127.0.0.1:8080/").is_ok());
        assert!(local.check_url("http://[::1]/").is_err());
        let e = strict
            .check_url("https://169.254.169.254/latest")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "169.254.169.254 is a cloud metadata address (169.254.169.254), refused"
        );
    }
}
