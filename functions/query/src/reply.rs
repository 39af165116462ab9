//! Building answers: JSON errors, caching headers, CORS, gzip.

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
const GZIP_FROM_BYTES: usize = 1_024;
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
/// it already; gzip when the client takes it and the body is worth it.
pub fn json(answer: &Answer, request: &HeaderMap) -> Response {
    let body = answer.body.to_string();
    let tag = etag(body.as_bytes());
    let cache = if answer.max_age == 0 {
        "private, no-cache".to_owned()
    } else {
        format!("private, max-age={}", answer.max_age)
    };
    let mut r = if matches_tag(request, &tag) {
        not_modified()
    } else {
        let mut r = body_maybe_gzipped(body.into_bytes(), request);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    set_etag(&mut r, &tag);
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

fn accepts_gzip(request: &HeaderMap) -> bool {
    // The q-value of gzip, else of `*`; absent: not accepted. q=0 (0.0, 0.000) refuses.
    let (mut gzip, mut any) = (None, None);
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
            .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
        if name.eq_ignore_ascii_case("gzip") {
            gzip = Some(q);
        } else if name == "*" {
            any = Some(q);
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

fn gzipped(body: &[u8]) -> Option<Vec<u8>> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(body).ok()?;
    z.finish().ok()
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

/// A dashboard file with its `ETag` and gzip form, computed once per process rather than on
/// every request.
struct StaticFile {
    path: &'static str,
    kind: &'static str,
    text: &'static str,
    tag: String,
    gzipped: Option<Vec<u8>>,
}

static FILES: std::sync::LazyLock<Vec<StaticFile>> = std::sync::LazyLock::new(|| {
    DASHBOARD
        .iter()
        .map(|(path, kind, text)| StaticFile {
            path,
            kind,
            text,
            tag: etag(text.as_bytes()),
            gzipped: gzipped(text.as_bytes()),
        })
        .collect()
});

/// The page may run only its own script and style, and talk only to this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// A file of the dashboard, if `path` names one: public (it holds no data; the page asks for
/// a key and reads the API with it), with an `ETag`, revalidated on every load.
pub fn dashboard_file(path: &str, request: &HeaderMap) -> Option<Response> {
    let file = FILES.iter().find(|f| f.path == path)?;
    let mut r = if matches_tag(request, &file.tag) {
        not_modified()
    } else {
        match file.gzipped.as_ref().filter(|_| accepts_gzip(request)) {
            Some(z) => {
                let mut r = Response::new(z.clone().into());
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            None => Response::new(file.text.into()),
        }
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(file.kind));
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
    set_etag(&mut r, &file.tag);
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
    // The gzip form's tag is the identity form's with `-gz` (one validator per coding);
    // either names the same content, so either is a match.
    let gz = format!("{}-gz\"", tag.trim_end_matches('"'));
    request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim() == "*"
                || v.split(',').any(|t| {
                    let t = t.trim().trim_start_matches("W/");
                    t == tag || t == gz
                })
        })
}

/// Sets the `ETag` for the body's coding: `-gz` added for the gzip form.
fn set_etag(r: &mut Response, tag: &str) {
    let tag = if r.headers().contains_key(header::CONTENT_ENCODING) {
        format!("{}-gz\"", tag.trim_end_matches('"'))
    } else {
        tag.to_owned()
    };
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
}

/// `body`, gzipped when the client takes gzip and the body is worth it.
fn body_maybe_gzipped(body: Vec<u8>, request: &HeaderMap) -> Response {
    let zipped = (body.len() >= GZIP_FROM_BYTES && accepts_gzip(request))
        .then(|| gzipped(&body))
        .flatten();
    match zipped {
        Some(z) => {
            let mut r = Response::new(z.into());
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        None => Response::new(body.into()),
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
    fn gzip_only_when_accepted() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.5"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, identity"),
        );
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0.0, *"),
        );
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("*"));
        assert!(accepts_gzip(&h));
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
