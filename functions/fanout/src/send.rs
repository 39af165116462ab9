//! One HTTP attempt: the signed request, and what the answer means for the delivery.
//!
//! | answer | verdict |
//! |---|---|
//! | 2xx | delivered |
//! | 410 Gone | the endpoint is disabled (the delivery waits for it to be enabled again) |
//! | 429, 503 with `Retry-After` | retry after that long (clamped) |
//! | 3xx | failure: redirects are never followed |
//! | any other status, timeout, connection error, refused address | retry on the schedule |

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER, USER_AGENT};
use reqwest::{Client, StatusCode};

use crate::guard::{refusal, Policy};
use crate::sign::{signature_header, Secret};

/// How many bytes of a response body the attempt log keeps.
pub const RESPONSE_EXCERPT: usize = 512;

/// What to do with the delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again: after the receiver's `Retry-After` when it gave one, else on the schedule.
    Retry {
        after: Option<Duration>,
    },
    /// The receiver answered 410 Gone: disable the endpoint.
    Gone,
    /// Not sent, held back by the endpoint's own rate limit: try again after this long. Spends
    /// no attempt and says nothing about the endpoint's health.
    Deferred {
        after: Duration,
    },
}

/// One attempt, as the attempt log records it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started: DateTime<Utc>,
    pub latency: Duration,
    pub status: Option<u16>,
    pub verdict: Verdict,
    pub error: Option<String>,
    pub response: Option<String>,
}

impl Attempt {
    /// An attempt that sent nothing (refused, no secret, rate-limited): retried after `after`,
    /// or on the schedule.
    pub fn unsent(started: DateTime<Utc>, error: String, after: Option<Duration>) -> Attempt {
        Attempt {
            started,
            latency: (Utc::now() - started).to_std().unwrap_or_default(),
            status: None,
            verdict: Verdict::Retry { after },
            error: Some(error),
            response: None,
        }
    }
}

impl Attempt {
    /// A send held back by the endpoint's rate limit (see [`Verdict::Deferred`]).
    pub fn deferred(started: DateTime<Utc>, after: Duration) -> Attempt {
        Attempt {
            verdict: Verdict::Deferred { after },
            ..Attempt::unsent(started, "not sent: the endpoint's rate limit".into(), None)
        }
    }
}

/// What is sent: the message's stable id, its exact body, and the endpoint's live secrets.
pub struct Outgoing<'a> {
    pub url: &'a str,
    pub message_id: &'a str,
    pub body: &'a str,
    pub secrets: &'a [Secret],
}

/// Sends one signed attempt. Never fails: every outcome is an [`Attempt`].
pub async fn attempt(
    client: &Client,
    policy: &Policy,
    out: &Outgoing<'_>,
    retry_after_max: Duration,
) -> Attempt {
    let started = Utc::now();
    let clock = Instant::now();
    let failed = |error: String| Attempt::unsent(started, error, None);
    // Checked again at send time: the URL may predate a stricter policy.
    let url = match policy.check_stored(out.url) {
        Ok(url) => url,
        Err(refused) => return failed(format!("refused: {refused}")),
    };
    let timestamp = started.timestamp();
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents+json"),
    );
    headers.insert(USER_AGENT, HeaderValue::from_static("ferry-webhooks/1"));
    let signed = [
        ("webhook-id", out.message_id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            signature_header(out.message_id, timestamp, out.body.as_bytes(), out.secrets),
        ),
    ];
    for (name, value) in signed {
        match HeaderValue::from_str(&value) {
            Ok(v) => {
                headers.insert(name, v);
            }
            Err(_) => return failed(format!("{name} is not a valid header value")),
        }
    }
    let sent = client
        .post(url)
        .headers(headers)
        .body(out.body.to_owned())
        .send()
        .await;
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => {
            let error = match refusal(&e) {
                Some(refused) => format!("refused: {refused}"),
                None => describe(&e),
            };
            return failed(error);
        }
    };
    let status = response.status();
    let retry_after = retry_after(response.headers(), Utc::now()).map(|d| d.min(retry_after_max));
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let excerpt = excerpt(&mut response).await;
    let latency = clock.elapsed();
    let (verdict, error) = if status.is_success() {
        (Verdict::Delivered, None)
    } else if status == StatusCode::GONE {
        (
            Verdict::Gone,
            Some("410 Gone: the receiver retired this endpoint".to_owned()),
        )
    } else if status.is_redirection() {
        (
            Verdict::Retry { after: None },
            Some(format!(
                "{status}: redirects are not followed (Location: {})",
                location.as_deref().unwrap_or("none")
            )),
        )
    } else if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        (
            Verdict::Retry { after: retry_after },
            Some(status.to_string()),
        )
    } else {
        (Verdict::Retry { after: None }, Some(status.to_string()))
    };
    Attempt {
        started,
        latency,
        status: Some(status.as_u16()),
        verdict,
        error,
        response: excerpt,
    }
}

/// The first [`RESPONSE_EXCERPT`] bytes of the body, without reading the rest.
async fn excerpt(response: &mut reqwest::Response) -> Option<String> {
    let mut kept = Vec::new();
    while kept.len() < RESPONSE_EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    kept.truncate(RESPONSE_EXCERPT);
    let text = String::from_utf8_lossy(&kept).into_owned();
    (!text.is_empty()).then_some(text)
}

/// A client error in words: timeouts and connection failures named, sources included.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `Retry-After` as a delay: seconds, or an HTTP date (RFC 9110 §10.2.3).
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(120)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 22 Nov 2026 10:01:30 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(90)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 22 Nov 2026 09:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }
}
