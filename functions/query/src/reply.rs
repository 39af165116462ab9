//! Building answers: JSON errors, caching headers, CORS, brotli and gzip.

use std::io::Write;

use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::error;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::StatusCode;
use warp::reply::Response;

use crate::api::Answer;
use crate::params::BadParam;

/// Answers smaller than this are sent uncompressed.
const COMPRESS_FROM_BYTES: usize = 1_024;
/// Seconds a client should wait before retrying while the database is unreachable.
const RETRY_AFTER_SECS: u32 = 5;

/// Why a request has no data answer.
#[derive(Debug)]
pub enum Problem {
    NotFound,
    Unauthorized,
    BadParam(BadParam),
    MethodNotAllowed,
    QueryTooLong,
    /// The database cannot be reached, or timed out: try again shortly.
    Unavailable,
    /// Anything else: a defect, logged.
    Internal,
}

impl From<BadParam> for Problem {
    fn from(b: BadParam) -> Self {
        Problem::BadParam(b)
    }
}

impl Problem {
    /// A database error as the client sees it: 503 when trying again shortly may help (the
    /// database unreachable, a statement or lock timeout, a serialization failure or deadlock),
    /// else 500, logged as the defect it is.
    pub fn from_db(e: ferry_shared::Error) -> Problem {
        let passing = match &e {
            ferry_shared::Error::Transient(sqlx::Error::Database(db)) => matches!(
                db.code().as_deref(),
                Some("57014" | "55P03" | "40001" | "40P01")
            ),
            other => other.is_unavailable(),
        };
        if passing {
            tracing::info!(error = %e, "database unavailable or busy; answered 503");
            Problem::Unavailable
        } else {
            error!(error = %e, "query failed");
            Problem::Internal
        }
    }

    /// The JSON error answer.
    pub fn response(&self) -> Response {
        let (status, code, message, parameter) = match self {
            Problem::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such resource".into(),
                None,
            ),
            Problem::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send an API key: Authorization: Bearer fy_live_…".into(),
                None,
            ),
            Problem::BadParam(b) => (
                StatusCode::BAD_REQUEST,
                "bad_parameter",
                b.problem.clone(),
                Some(b.parameter.clone()),
            ),
            Problem::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "only GET (and OPTIONS for CORS)".into(),
                None,
            ),
            Problem::QueryTooLong => (
                StatusCode::URI_TOO_LONG,
                "query_too_long",
                format!(
                    "the query string is longer than {} bytes",
                    crate::MAX_QUERY_BYTES
                ),
                None,
            ),
            Problem::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is not answering; retry shortly".into(),
                None,
            ),
            Problem::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the query failed; it is logged".into(),
                None,
            ),
        };
        let mut error = json!({"code": code, "message": message});
        if let Some(p) = parameter {
            error["parameter"] = json!(p);
        }
        let body = json!({ "error": error }).to_string();
        let mut r = Response::new(body.into());
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Problem::Unauthorized => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"ferry\""),
                );
            }
            Problem::MethodNotAllowed => {
                h.insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, OPTIONS"),
                );
            }
            Problem::Unavailable => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            _ => {}
        }
        r
    }
}

/// A 200 with the answer's JSON, its `ETag` and `Cache-Control`; 304 when the client holds
/// it already; brotli or gzip when the client takes it and the body is worth it.
pub fn json(answer: &Answer, request: &HeaderMap) -> Response {
    let body = answer.body.to_string();
    let tag = etag(body.as_bytes());
    let cache = if answer.max_age == 0 {
        "private, no-cache".to_owned()
    } else {
        format!("private, max-age={}", answer.max_age)
    };
    // The coding is chosen first: a 304 carries the tag its 200 would have carried.
    let mut coding = if body.len() >= COMPRESS_FROM_BYTES {
        preferred_coding(request)
    } else {
        Coding::Identity
    };
    let mut r = if matches_tag(request, &tag) {
        not_modified()
    } else {
        let mut r = match compressed(body.as_bytes(), coding, Effort::PerRequest) {
            Some(z) => encoded(z.into(), coding),
            None => {
                // Identity asked for, or compression failed (it cannot, into a Vec): the
                // identity tag goes with it.
                coding = Coding::Identity;
                Response::new(body.into())
            }
        };
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    set_etag(&mut r, &tag, coding);
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    h.insert(
        header::VARY,
        HeaderValue::from_static("Authorization, Accept-Encoding, Origin"),
    );
    r
}

/// A content coding of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Brotli,
}

impl Coding {
    /// The `Content-Encoding` token.
    fn token(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Brotli => Some("br"),
        }
    }

    /// What the coding adds to the identity form's `ETag` (one validator per coding).
    fn tag_suffix(self) -> &'static str {
        match self {
            Coding::Identity => "",
            Coding::Gzip => "-gz",
            Coding::Brotli => "-br",
        }
    }
}

/// Of brotli and gzip, the one with the higher `Accept-Encoding` q-value, brotli on a tie (it
/// is the smaller); `*` stands for a coding not named; absent or q=0 refuses it. Identity when
/// neither is accepted (a preference for identity over an accepted coding is not followed,
/// as RFC 9110 allows).
fn preferred_coding(request: &HeaderMap) -> Coding {
    let (mut gzip, mut br, mut any) = (None, None, None);
    for coding in request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let q = parts
            .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .map_or(1.0, |q| {
                // "nan" and "inf" parse as f32: anything but a finite weight refuses.
                q.trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| q.is_finite())
                    .map_or(0.0, |q| q.clamp(0.0, 1.0))
            });
        if name.eq_ignore_ascii_case("gzip") {
            gzip = Some(q);
        } else if name.eq_ignore_ascii_case("br") {
            br = Some(q);
        } else if name == "*" {
            any = Some(q);
        }
    }
    let gzip = gzip.or(any).unwrap_or(0.0);
    let br = br.or(any).unwrap_or(0.0);
    if br > 0.0 && br >= gzip {
        Coding::Brotli
    } else if gzip > 0.0 {
        Coding::Gzip
    } else {
        Coding::Identity
    }
}

/// How hard to compress: per request (answers), or once per process (the dashboard's files).
#[derive(Debug, Clone, Copy)]
enum Effort {
    PerRequest,
    Once,
}

/// Brotli's quality and window (log2 bytes), whatever the effort. Measured on a day of 5-minute
/// points (13,850 bytes, release build): quality 5 with the default 4 MiB window, 814 bytes in
/// 0.37 ms (gzip -1: 1,820 bytes in 0.04 ms); quality 11, 768 bytes in 39 ms; a window sized to
/// the body took 5 ms (brotli picks another matcher for small windows). The dashboard's script
/// (13,825 bytes): 4,600 bytes in 0.85 ms; quality 11 saves 9% more for 36-38 ms, which a cold
/// Lambda would pay on its first dashboard request.
const BROTLI_QUALITY: u32 = 5;
const BROTLI_WINDOW: u32 = 22;

/// `body` in `coding` (None for identity).
fn compressed(body: &[u8], coding: Coding, effort: Effort) -> Option<Vec<u8>> {
    match coding {
        Coding::Identity => None,
        Coding::Gzip => {
            let level = match effort {
                Effort::PerRequest => flate2::Compression::fast(),
                Effort::Once => flate2::Compression::best(),
            };
            let mut z = flate2::write::GzEncoder::new(Vec::new(), level);
            z.write_all(body).ok()?;
            z.finish().ok()
        }
        Coding::Brotli => {
            let mut z =
                brotli::CompressorWriter::new(Vec::new(), 4_096, BROTLI_QUALITY, BROTLI_WINDOW);
            z.write_all(body).ok()?;
            // Ends the stream: writing to a Vec cannot fail.
            Some(z.into_inner())
        }
    }
}

/// A response of `body` sent in `coding`, with its `Content-Encoding`.
fn encoded(body: warp::hyper::body::Bytes, coding: Coding) -> Response {
    let mut r = Response::new(body.into());
    if let Some(token) = coding.token() {
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static(token));
    }
    r
}

/// The dashboard's files, compiled in: no other server, no CDN, nothing fetched at runtime.
const DASHBOARD: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../dashboard/index.html"),
    ),
    (
        "/dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../dashboard/dashboard.js"),
    ),
    (
        "/dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../dashboard/dashboard.css"),
    ),
];

/// A dashboard file's `ETag` and its brotli and gzip forms: made at the first request for that
/// file, once per process, so neither an API request nor another file pays for them.
struct Forms {
    tag: String,
    gzip: Option<Vec<u8>>,
    brotli: Option<Vec<u8>>,
}

static FORMS: [std::sync::OnceLock<Forms>; DASHBOARD.len()] =
    [const { std::sync::OnceLock::new() }; DASHBOARD.len()];

/// The page may run only its own script and style, and talk only to this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// A file of the dashboard, if `path` names one: public (it holds no data; the page asks for
/// a key and reads the API with it), with an `ETag`, revalidated on every load.
pub fn dashboard_file(path: &str, request: &HeaderMap) -> Option<Response> {
    let index = DASHBOARD.iter().position(|(p, _, _)| *p == path)?;
    let (_, kind, text) = DASHBOARD[index];
    let forms = FORMS[index].get_or_init(|| Forms {
        tag: etag(text.as_bytes()),
        gzip: compressed(text.as_bytes(), Coding::Gzip, Effort::Once),
        brotli: compressed(text.as_bytes(), Coding::Brotli, Effort::Once),
    });
    // The client's coding, if this file has that form; else identity.
    let form = match preferred_coding(request) {
        Coding::Gzip => forms.gzip.as_deref().map(|z| (Coding::Gzip, z)),
        Coding::Brotli => forms.brotli.as_deref().map(|z| (Coding::Brotli, z)),
        Coding::Identity => None,
    };
    let coding = form.map_or(Coding::Identity, |(c, _)| c);
    let mut r = if matches_tag(request, &forms.tag) {
        not_modified()
    } else {
        match form {
            Some((c, z)) => encoded(warp::hyper::body::Bytes::from_static(z), c),
            None => Response::new(text.into()),
        }
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    set_etag(&mut r, &forms.tag, coding);
    Some(r)
}

/// An empty 304: the client holds this answer already.
fn not_modified() -> Response {
    let mut r = Response::new(warp::hyper::body::Bytes::new().into());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    r
}

fn etag(body: &[u8]) -> String {
    let hex: String = Sha256::digest(body)
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
}

fn matches_tag(request: &HeaderMap, tag: &str) -> bool {
    // A compressed form's tag is the identity form's with a suffix (one validator per
    // coding); each names the same content, so each is a match.
    let forms = [Coding::Identity, Coding::Gzip, Coding::Brotli]
        .map(|c| format!("{}{}\"", tag.trim_end_matches('"'), c.tag_suffix()));
    request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim() == "*"
                || v.split(',').any(|t| {
                    let t = t.trim().trim_start_matches("W/");
                    forms.iter().any(|f| f == t)
                })
        })
}

/// Sets the `ETag` of the form in `coding` (on a 304 too): `-gz` added for gzip, `-br` for
/// brotli.
fn set_etag(r: &mut Response, tag: &str, coding: Coding) {
    let tag = format!("{}{}\"", tag.trim_end_matches('"'), coding.tag_suffix());
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
}

/// The request's `Origin` when it is one the API answers (`*` configured: any).
pub fn allowed_origin(allowed: &[String], request: &HeaderMap) -> Option<String> {
    let origin = request.get(header::ORIGIN)?.to_str().ok()?;
    allowed
        .iter()
        .any(|a| a == "*" || a == origin)
        .then(|| origin.to_owned())
}

/// Adds the CORS headers for an allowed origin.
pub fn cors(response: &mut Response, origin: Option<&str>) {
    let Some(v) = origin.and_then(|o| HeaderValue::from_str(o).ok()) else {
        return;
    };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("ETag, Retry-After"),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Authorization, Accept-Encoding, Origin"),
    );
}

/// The answer to a CORS preflight: 204, with the methods and headers allowed when the origin
/// is; without them (so the browser refuses) when it is not.
pub fn preflight(origin: Option<&str>) -> Response {
    let mut r = Response::new(warp::hyper::body::Bytes::new().into());
    *r.status_mut() = StatusCode::NO_CONTENT;
    if origin.is_some() {
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, If-None-Match"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(600u32));
    }
    cors(&mut r, origin);
    r
}

/// A path's segments, percent-decoded; `None` when one is not UTF-8 or is empty inside the
/// path (`/v1//health`).
pub fn segments(path: &str) -> Option<Vec<String>> {
    let trimmed = path.trim_start_matches('/');
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Some(Vec::new());
    }
    trimmed
        .split('/')
        .map(|s| {
            let decoded = percent_encoding::percent_decode_str(s).decode_utf8().ok()?;
            let fine = !decoded.is_empty()
                && decoded.len() <= 256
                && !decoded.chars().any(char::is_control);
            fine.then(|| decoded.into_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn segments_are_decoded_and_checked() {
        assert_eq!(segments("/").unwrap(), Vec::<String>::new());
        assert_eq!(
            segments("/v1/tenants/acme/products/sku%2F1/").unwrap(),
            vec!["v1", "tenants", "acme", "products", "sku/1"]
        );
        assert!(segments("/v1//health").is_none());
        assert!(segments("/v1/%FF").is_none());
        assert!(segments("/v1/tenants/acme/products/a%00b").is_none());
    }

    #[test]
    fn the_coding_follows_the_clients_q_values() {
        let pick = |accept: Option<&'static str>| {
            let mut h = HeaderMap::new();
            if let Some(a) = accept {
                h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(a));
            }
            preferred_coding(&h)
        };
        assert_eq!(pick(None), Coding::Identity);
        assert_eq!(pick(Some("identity")), Coding::Identity);
        assert_eq!(pick(Some("gzip")), Coding::Gzip);
        assert_eq!(pick(Some("gzip, deflate, br, zstd")), Coding::Brotli);
        assert_eq!(pick(Some("br;q=0.5, gzip")), Coding::Gzip);
        assert_eq!(pick(Some("br, gzip;q=0.5")), Coding::Brotli);
        assert_eq!(pick(Some("BR")), Coding::Brotli);
        assert_eq!(pick(Some("gzip;q=0, identity")), Coding::Identity);
        assert_eq!(pick(Some("gzip;q=0.0, *")), Coding::Brotli);
        assert_eq!(pick(Some("br;q=0, *;q=0.1")), Coding::Gzip);
        assert_eq!(pick(Some("*")), Coding::Brotli);
        assert_eq!(pick(Some("*;q=0")), Coding::Identity);
        assert_eq!(pick(Some("br;q=nonsense")), Coding::Identity);
        assert_eq!(pick(Some("br, gzip;q=nan")), Coding::Brotli);
        assert_eq!(pick(Some("br;q=inf, gzip;q=0.5")), Coding::Gzip);
    }

    #[test]
    fn compressed_forms_decode_to_the_body_and_carry_their_own_etag() {
        let answer = Answer {
            body: json!({"points": (0..288).map(|i| json!({"t": i, "n": i * 7})).collect::<Vec<_>>()}),
            max_age: 60,
        };
        let plain = json(&answer, &HeaderMap::new());
        let tag = plain.headers()[header::ETAG].to_str().unwrap().to_owned();
        for (accept, token, suffix) in [("br", "br", "-br\""), ("gzip", "gzip", "-gz\"")] {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(accept));
            let r = json(&answer, &h);
            assert_eq!(r.headers()[header::CONTENT_ENCODING], token);
            let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
            assert_eq!(etag, format!("{}{suffix}", tag.trim_end_matches('"')));
            let zipped = compressed(
                answer.body.to_string().as_bytes(),
                if token == "br" {
                    Coding::Brotli
                } else {
                    Coding::Gzip
                },
                Effort::PerRequest,
            )
            .unwrap();
            let mut text = String::new();
            if token == "br" {
                brotli::Decompressor::new(&zipped[..], 4_096)
                    .read_to_string(&mut text)
                    .unwrap();
            } else {
                flate2::read::GzDecoder::new(&zipped[..])
                    .read_to_string(&mut text)
                    .unwrap();
            }
            assert_eq!(text, answer.body.to_string());
            assert!(
                zipped.len() < text.len() / 2,
                "{token}: {} bytes",
                zipped.len()
            );
            // Any of the three tags is the same content: 304, with the tag the 200 carries
            // for this request's coding.
            for held in [&etag, &tag] {
                let mut h = HeaderMap::new();
                h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(accept));
                h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(held).unwrap());
                let r = json(&answer, &h);
                assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
                assert_eq!(r.headers()[header::ETAG], etag.as_str());
            }
        }
        // Small answers are not worth it.
        let small = Answer {
            body: json!({"a": 1}),
            max_age: 60,
        };
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br"));
        assert!(json(&small, &h)
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_none());

        // The dashboard's script: brotli, its own tag, and the same tag on a 304.
        let js = dashboard_file("/dashboard.js", &h).unwrap();
        assert_eq!(js.headers()[header::CONTENT_ENCODING], "br");
        let js_tag = js.headers()[header::ETAG].clone();
        assert!(js_tag.to_str().unwrap().ends_with("-br\""));
        h.insert(header::IF_NONE_MATCH, js_tag.clone());
        let again = dashboard_file("/dashboard.js", &h).unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], js_tag);
        assert!(dashboard_file("/nothing.js", &h).is_none());
    }

    #[test]
    fn etag_matches_turn_into_304() {
        let answer = Answer {
            body: json!({"a": 1}),
            max_age: 60,
        };
        let first = json(&answer, &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(json(&answer, &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            first.headers()[header::CACHE_CONTROL],
            HeaderValue::from_static("private, max-age=60")
        );
    }
}
