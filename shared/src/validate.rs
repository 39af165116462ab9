//! Strict CloudEvents 1.0 validation (structured JSON mode and JSON batch mode).
//!
//! ferry's contract on top of the spec: `time` is required (events are partitioned and
//! deduplicated on it, so it must be the producer's, not ours), the tenant travels in the
//! `tenantid` extension, and `userid` / `sessionid` extensions feed their own columns.
//! Validation never panics and never fails a whole batch for one bad event.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use crate::config::Limits;
use crate::event::{Event, RejectReason, Rejection};

/// The result of reading one message body: events and rejections, in input order.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<Event>,
    pub rejected: Vec<Rejection>,
}

/// Parses a message body holding one structured-mode CloudEvent (a JSON object) or a batch
/// (`application/cloudevents-batch+json`, a JSON array of them).
pub fn parse_body(body: &[u8], limits: &Limits, now: DateTime<Utc>) -> Parsed {
    let mut out = Parsed::default();
    let whole = |detail: String| Rejection {
        tenant_id: None,
        position: None,
        reason: RejectReason::InvalidJson,
        detail,
        raw: body.to_vec(),
    };
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => {
            out.rejected.push(whole(format!(
                "not valid UTF-8 at byte {}",
                e.valid_up_to()
            )));
            return out;
        }
    };
    match text.trim_start().as_bytes().first() {
        Some(b'[') => match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) => {
                out.events.reserve(items.len());
                for (i, raw) in items.into_iter().enumerate() {
                    let position = i32::try_from(i).unwrap_or(i32::MAX);
                    match validate_event(raw.get(), position, limits, now) {
                        Ok(ev) => out.events.push(ev),
                        Err(r) => out.rejected.push(r),
                    }
                }
            }
            Err(e) => out
                .rejected
                .push(whole(format!("batch is not a JSON array: {e}"))),
        },
        Some(b'{') => match serde_json::from_str::<&RawValue>(text) {
            Ok(raw) => match validate_event(raw.get(), 0, limits, now) {
                Ok(ev) => out.events.push(ev),
                Err(r) => out.rejected.push(r),
            },
            Err(e) => out.rejected.push(whole(format!("invalid JSON: {e}"))),
        },
        _ => out.rejected.push(whole(
            "expected a JSON object (one event) or array (batch)".into(),
        )),
    }
    out
}

/// Validates one event given as JSON text.
pub fn validate_event(
    raw: &str,
    position: i32,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Event, Rejection> {
    let reject = |tenant: Option<&str>, reason: RejectReason, detail: String| Rejection {
        tenant_id: tenant.map(str::to_owned),
        position: Some(position),
        reason,
        detail,
        raw: raw.as_bytes().to_vec(),
    };
    if raw.len() > limits.max_event_bytes {
        return Err(reject(
            None,
            RejectReason::Oversize,
            format!(
                "event is {} bytes; the limit is {}",
                raw.len(),
                limits.max_event_bytes
            ),
        ));
    }
    let attrs: BTreeMap<String, &RawValue> = match serde_json::from_str(raw) {
        Ok(m) => m,
        Err(e) => {
            // An object whose name holds an escape that no string can hold fails the parse; say
            // so. Anything that is not an object is invalid JSON for an event, whatever it holds.
            let object = raw.trim_start().starts_with('{');
            let (reason, detail) = match unstorable_escape(raw).filter(|_| object) {
                Some(found) => (RejectReason::UnsupportedData, found.to_string()),
                None => (RejectReason::InvalidJson, format!("not a JSON object: {e}")),
            };
            return Err(reject(None, reason, detail));
        }
    };
    // Best effort, so quarantine rows carry the tenant even when the event is bad.
    let tenant_hint = attrs
        .get("tenantid")
        .and_then(|v| as_str(v))
        .filter(|t| valid_tenant_id(t));
    let tenant_hint = tenant_hint.as_deref();
    let fail = |reason, detail: String| Err(reject(tenant_hint, reason, detail));
    // One reason for text that cannot be stored, wherever it is: an attribute, an extension
    // or `data`.
    if let Some(found) = unstorable_escape(raw) {
        return fail(RejectReason::UnsupportedData, found.to_string());
    }

    if let Some(name) = attrs
        .keys()
        .find(|k| *k != "data" && *k != "data_base64" && !valid_attribute_name(k))
    {
        return fail(
            RejectReason::InvalidAttributeName,
            format!("attribute name {name:?} must be lowercase ASCII letters and digits"),
        );
    }
    let attrs = Attrs(attrs);
    build(&attrs, raw, position, limits, now).or_else(|(reason, detail)| fail(reason, detail))
}

/// Why an event is refused, before the rejection is built around it.
type Problem = (RejectReason, String);

/// An event's attributes as read, by name.
struct Attrs<'a>(BTreeMap<String, &'a RawValue>);

impl Attrs<'_> {
    /// A string attribute that must be present and not empty.
    fn required(&self, name: &str) -> Result<String, Problem> {
        let missing = |what: &str| Err((RejectReason::MissingAttribute, format!("{name} {what}")));
        match self.0.get(name) {
            None => missing("is required"),
            Some(v) if v.get() == "null" => missing("is required"),
            Some(v) => match as_str(v) {
                None => Err((
                    RejectReason::InvalidAttributeValue,
                    format!("{name} must be a string"),
                )),
                Some(s) if s.is_empty() => missing("must not be empty"),
                Some(s) => Ok(s),
            },
        }
    }

    /// A string attribute that may be absent or null.
    fn optional(&self, name: &str) -> Result<Option<String>, Problem> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) if v.get() == "null" => Ok(None),
            Some(_) => self.required(name).map(Some),
        }
    }
}

/// The event the attributes describe, or the first problem with them.
fn build(
    attrs: &Attrs<'_>,
    raw: &str,
    position: i32,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Event, Problem> {
    let specversion = attrs.required("specversion")?;
    if specversion != "1.0" {
        return Err((
            RejectReason::WrongSpecversion,
            format!("specversion is {specversion:?}; only \"1.0\" is accepted"),
        ));
    }
    let id = bounded(attrs.required("id")?, "id")?;
    let source = bounded(attrs.required("source")?, "source")?;
    let ty = bounded(attrs.required("type")?, "type")?;
    let tenant_id = attrs.required("tenantid")?;
    if !valid_tenant_id(&tenant_id) {
        return Err((
            RejectReason::UnknownTenant,
            "tenantid is not a valid tenant id (lowercase letters, digits, - and _, \
             at most 63)"
                .into(),
        ));
    }
    let time = event_time(&attrs.required("time")?, limits, now)?;
    let (data, data_base64) = payload(attrs)?;
    let Extensions {
        user_id,
        session_id,
        others: extensions,
    } = extensions(attrs)?;
    Ok(Event {
        position,
        tenant_id,
        source,
        id,
        ty,
        subject: attrs.optional("subject")?,
        time,
        datacontenttype: attrs.optional("datacontenttype")?,
        dataschema: attrs.optional("dataschema")?,
        user_id,
        session_id,
        extensions,
        data,
        data_base64,
        raw: raw.into(),
    })
}

/// `time`: RFC 3339, not a leap second, inside the accepted window around `now`.
fn event_time(text: &str, limits: &Limits, now: DateTime<Utc>) -> Result<DateTime<Utc>, Problem> {
    let time = DateTime::parse_from_rfc3339(text)
        .map_err(|e| {
            (
                RejectReason::InvalidTime,
                format!("time {text:?} is not RFC 3339: {e}"),
            )
        })?
        .with_timezone(&Utc);
    if time.timestamp_subsec_nanos() >= 1_000_000_000 {
        // chrono keeps a leap second as :59 plus a second of nanoseconds, which would put
        // the row in a different partition than its slot; PostgreSQL has no leap seconds.
        return Err((
            RejectReason::InvalidTime,
            format!("time {text} is a leap second"),
        ));
    }
    let oldest = now - chrono::Duration::from_std(limits.max_event_age).unwrap_or_default();
    let newest = now + chrono::Duration::from_std(limits.max_future_skew).unwrap_or_default();
    if time < oldest || time > newest {
        return Err((
            RejectReason::TimeOutOfWindow,
            format!("time {text} is outside the accepted window [{oldest}, {newest}]"),
        ));
    }
    Ok(time)
}

/// `data` (as JSON text) or `data_base64` (checked base64), at most one of them.
fn payload(attrs: &Attrs<'_>) -> Result<(Option<Box<RawValue>>, Option<String>), Problem> {
    let data = attrs.0.get("data").filter(|v| v.get() != "null");
    let data_base64 = attrs.optional("data_base64")?;
    if data.is_some() && data_base64.is_some() {
        return Err((
            RejectReason::InvalidAttributeValue,
            "data and data_base64 must not both be present".into(),
        ));
    }
    if let Some(text) = &data_base64 {
        check_base64(text)?;
    }
    Ok((data.map(|d| (*d).to_owned()), data_base64))
}

/// An event's extension attributes.
struct Extensions {
    /// `userid` and `sessionid`, as text.
    user_id: Option<String>,
    session_id: Option<String>,
    /// The others, as one JSON object; `None` when there are none.
    others: Option<String>,
}

/// The extension attributes: every attribute that CloudEvents does not define.
fn extensions(attrs: &Attrs<'_>) -> Result<Extensions, Problem> {
    let mut user_id = None;
    let mut session_id = None;
    let mut extensions = serde_json::Map::new();
    for (name, value) in &attrs.0 {
        if matches!(
            name.as_str(),
            "specversion"
                | "id"
                | "source"
                | "type"
                | "time"
                | "subject"
                | "datacontenttype"
                | "dataschema"
                | "data"
                | "data_base64"
                | "tenantid"
        ) {
            continue;
        }
        // The text is valid JSON without unstorable escapes (checked before): what can still
        // fail is a number beyond a double's range, or nesting too deep.
        let v: serde_json::Value = serde_json::from_str(value.get()).map_err(|e| {
            (
                RejectReason::InvalidAttributeValue,
                format!("extension {name} cannot be read: {e}"),
            )
        })?;
        let text = match &v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => {
                return Err((
                    RejectReason::InvalidAttributeValue,
                    format!("extension {name} must be a string, number or boolean"),
                ))
            }
        };
        match name.as_str() {
            "userid" => user_id = Some(text),
            "sessionid" => session_id = Some(text),
            _ => {
                extensions.insert(name.clone(), v);
            }
        }
    }
    Ok(Extensions {
        user_id,
        session_id,
        others: (!extensions.is_empty()).then(|| serde_json::Value::Object(extensions).to_string()),
    })
}

/// CloudEvents attribute names: lowercase ASCII letters and digits.
/// Longest accepted `id`, `source` and `type`: together with the tenant and time they form the
/// events key, and a btree entry must stay under ~2.7 kB.
pub const MAX_KEY_ATTRIBUTE_BYTES: usize = 1024;

fn bounded(value: String, name: &str) -> Result<String, Problem> {
    if value.len() > MAX_KEY_ATTRIBUTE_BYTES {
        return Err((
            RejectReason::InvalidAttributeValue,
            format!(
                "{name} is {} bytes; at most {MAX_KEY_ATTRIBUTE_BYTES}",
                value.len()
            ),
        ));
    }
    Ok(value)
}

/// Tenant ids as the `tenants` table accepts them.
pub fn valid_tenant_id(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn as_str(v: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(v.get()).ok()
}

/// An escape in JSON text that no stored string can hold: `\u0000` (PostgreSQL text and jsonb
/// refuse NUL) or a UTF-16 surrogate that is not part of a pair (not a Unicode character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unstorable {
    /// Byte offset of the escape's backslash in the event's text.
    pub at: usize,
    /// The escaped code unit.
    pub unit: u16,
}

impl std::fmt::Display for Unstorable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.unit == 0 {
            write!(
                f,
                "the \\u0000 escape (NUL) at byte {}: it cannot be stored",
                self.at
            )
        } else {
            write!(
                f,
                "a lone UTF-16 surrogate escape \\u{:04x} at byte {}: it is not a character and \
                 cannot be stored",
                self.unit, self.at
            )
        }
    }
}

/// Finds the first [`Unstorable`] escape in JSON text. Outside strings JSON has no backslash,
/// so the scan needs no parser: each backslash starts an escape, and `\\` is skipped whole.
pub fn unstorable_escape(json: &str) -> Option<Unstorable> {
    let bytes = json.as_bytes();
    let unit_at = |i: usize| -> Option<u16> {
        let hex = bytes.get(i + 2..i + 6)?;
        u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let mut i = 0;
    while let Some(off) = bytes.get(i..)?.iter().position(|b| *b == b'\\') {
        let at = i + off;
        if bytes.get(at + 1) != Some(&b'u') {
            i = at + 2;
            continue;
        }
        let Some(unit) = unit_at(at) else {
            i = at + 2;
            continue;
        };
        match unit {
            0 | 0xDC00..=0xDFFF => return Some(Unstorable { at, unit }),
            0xD800..=0xDBFF => {
                let low = (bytes.get(at + 6..at + 8) == Some(b"\\u"))
                    .then(|| unit_at(at + 6))
                    .flatten();
                match low {
                    Some(0xDC00..=0xDFFF) => i = at + 12,
                    _ => return Some(Unstorable { at, unit }),
                }
            }
            _ => i = at + 6,
        }
    }
    None
}

/// `data_base64` must be base64 (RFC 4648, standard alphabet; padding optional), or partners
/// would receive bytes they cannot decode.
fn check_base64(text: &str) -> Result<(), Problem> {
    use base64::engine::{general_purpose, DecodePaddingMode, Engine};
    const ENGINE: general_purpose::GeneralPurpose = general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    ENGINE.decode(text).map(drop).map_err(|e| {
        (
            RejectReason::InvalidAttributeValue,
            format!("data_base64 is not base64 (RFC 4648): {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "specversion": "1.0", "id": "e-1", "source": "/web/shop", "type": "page.viewed",
            "time": "2026-11-21T11:59:00Z", "tenantid": "acme", "userid": "u1",
            "sessionid": 42, "campaign": "fall", "data": {"path": "/p/1"}
        })
    }

    fn reason_of(v: serde_json::Value) -> RejectReason {
        let raw = v.to_string();
        validate_event(&raw, 0, &Limits::default(), now())
            .unwrap_err()
            .reason
    }

    #[test]
    fn a_complete_event_is_accepted_with_its_columns() {
        let ev = validate_event(&good().to_string(), 0, &Limits::default(), now()).unwrap();
        assert_eq!(
            (ev.tenant_id.as_str(), ev.id.as_str(), ev.ty.as_str()),
            ("acme", "e-1", "page.viewed")
        );
        assert_eq!(ev.user_id.as_deref(), Some("u1"));
        assert_eq!(ev.session_id.as_deref(), Some("42"));
        assert_eq!(ev.extensions.as_deref(), Some(r#"{"campaign":"fall"}"#));
        assert_eq!(ev.data.unwrap().get(), r#"{"path":"/p/1"}"#);
    }

    #[test]
    fn each_attribute_problem_has_its_reason() {
        let with = |k: &str, v: serde_json::Value| {
            let mut e = good();
            e[k] = v;
            e
        };
        let without = |k: &str| {
            let mut e = good();
            e.as_object_mut().unwrap().remove(k);
            e
        };
        assert_eq!(reason_of(without("id")), RejectReason::MissingAttribute);
        assert_eq!(
            reason_of(with("source", "".into())),
            RejectReason::MissingAttribute
        );
        assert_eq!(
            reason_of(without("tenantid")),
            RejectReason::MissingAttribute
        );
        assert_eq!(
            reason_of(with("type", serde_json::Value::Null)),
            RejectReason::MissingAttribute
        );
        assert_eq!(
            reason_of(with("type", 7.into())),
            RejectReason::InvalidAttributeValue
        );
        assert_eq!(
            reason_of(with("specversion", "0.3".into())),
            RejectReason::WrongSpecversion
        );
        assert_eq!(
            reason_of(with("Bad-Name", "x".into())),
            RejectReason::InvalidAttributeName
        );
        assert_eq!(
            reason_of(with("time", "yesterday".into())),
            RejectReason::InvalidTime
        );
        assert_eq!(
            reason_of(with("time", "2025-01-01T00:00:00Z".into())),
            RejectReason::TimeOutOfWindow
        );
        assert_eq!(
            reason_of(with("time", "2026-11-21T13:00:00Z".into())),
            RejectReason::TimeOutOfWindow
        );
        assert_eq!(
            reason_of(with("nested", serde_json::json!({"a": 1}))),
            RejectReason::InvalidAttributeValue
        );
        assert_eq!(
            reason_of(with("data_base64", "AAEC".into())),
            RejectReason::InvalidAttributeValue
        );
        assert_eq!(
            reason_of(with("data", "a\u{0}b".into())),
            RejectReason::UnsupportedData
        );
        assert_eq!(
            reason_of(with("id", "x".repeat(1025).into())),
            RejectReason::InvalidAttributeValue
        );
        assert_eq!(
            reason_of(with("tenantid", "Not A Tenant".into())),
            RejectReason::UnknownTenant
        );
        assert_eq!(
            reason_of(with("time", "2026-11-21T11:04:60Z".into())),
            RejectReason::InvalidTime
        );
        assert_eq!(
            reason_of(with("subject", "a\u{0}b".into())),
            RejectReason::UnsupportedData
        );
    }

    #[test]
    fn an_escaped_backslash_before_an_escape_is_ordinary_text() {
        let at = |json: &str| unstorable_escape(json).map(|u| (u.at, u.unit));
        assert_eq!(at(r#""C:\\u0000""#), None);
        assert_eq!(at(r#""a\u0000""#), Some((2, 0)));
        assert_eq!(at(r#""\\\u0000""#), Some((3, 0)));
        assert_eq!(at(r#""\\ud800""#), None);
        assert_eq!(at(r#""\ud83d\ude00 ok""#), None, "a pair is one character");
        assert_eq!(at(r#""\uD83D\uDE00""#), None, "hex digits in either case");
        assert_eq!(at(r#""\ud800""#), Some((1, 0xd800)));
        assert_eq!(at(r#""\ud800\u0041""#), Some((1, 0xd800)));
        assert_eq!(at(r#""x\udc00""#), Some((2, 0xdc00)), "a low half alone");
        assert_eq!(
            at(r#""\ud800"#),
            Some((1, 0xd800)),
            "cut off after the high half"
        );
        assert_eq!(
            at(r#""\u12""#),
            None,
            "not an escape serde would accept either"
        );
    }

    /// The raw text of `good()` with one attribute's value replaced by JSON text.
    fn with_raw(name: &str, json_value: &str) -> String {
        let mut e = good();
        e[name] = serde_json::Value::String("@@@".into());
        e.to_string().replace("\"@@@\"", json_value)
    }

    fn raw_reason(raw: &str) -> Result<(), RejectReason> {
        validate_event(raw, 0, &Limits::default(), now())
            .map(drop)
            .map_err(|r| r.reason)
    }

    #[test]
    fn text_that_cannot_be_stored_has_one_reason_wherever_it_appears() {
        for escape in [r"\ud800", r"\udfff", r"\u0000"] {
            let text = format!("\"a{escape}b\"");
            for name in ["id", "source", "subject", "userid", "campaign", "data"] {
                assert_eq!(
                    raw_reason(&with_raw(name, &text)),
                    Err(RejectReason::UnsupportedData),
                    "{escape} in {name}"
                );
            }
            let nested = format!("{{\"deep\": [1, {text}]}}");
            assert_eq!(
                raw_reason(&with_raw("data", &nested)),
                Err(RejectReason::UnsupportedData)
            );
            let in_name = good()
                .to_string()
                .replacen('{', &format!("{{\"x{escape}\": 1, "), 1);
            assert_eq!(raw_reason(&in_name), Err(RejectReason::UnsupportedData));
        }
        let r = validate_event(
            &with_raw("campaign", r#""\ud800""#),
            0,
            &Limits::default(),
            now(),
        )
        .unwrap_err();
        assert_eq!(
            r.tenant_id.as_deref(),
            Some("acme"),
            "the tenant is still read"
        );
        assert!(r.detail.contains("surrogate"), "{}", r.detail);
        // A surrogate pair is a character like any other.
        assert_eq!(raw_reason(&with_raw("data", r#""\ud83d\ude00""#)), Ok(()));
        assert_eq!(raw_reason(&with_raw("userid", r#""\ud83d\ude00""#)), Ok(()));
    }

    #[test]
    fn numbers_beyond_a_double_are_refused_in_extensions_and_kept_in_data() {
        assert_eq!(
            raw_reason(&with_raw("campaign", "1e400")),
            Err(RejectReason::InvalidAttributeValue)
        );
        assert_eq!(
            raw_reason(&with_raw("sessionid", "-1e400")),
            Err(RejectReason::InvalidAttributeValue)
        );
        assert_eq!(raw_reason(&with_raw("data", r#"{"n": 1e400}"#)), Ok(()));
    }

    #[test]
    fn data_base64_must_be_base64() {
        let b64 = |v: &str| {
            let mut e = good();
            e.as_object_mut().unwrap().remove("data");
            e["data_base64"] = v.into();
            raw_reason(&e.to_string())
        };
        assert_eq!(b64("AAEC"), Ok(()));
        assert_eq!(b64("AAE="), Ok(()));
        assert_eq!(b64("AAE"), Ok(()), "padding is optional");
        assert_eq!(b64(""), Err(RejectReason::MissingAttribute));
        for bad in ["!!!not base64!!!", "AA EC", "AAEC\n", "AA-_", "A", "AAE=="] {
            assert_eq!(
                b64(bad),
                Err(RejectReason::InvalidAttributeValue),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn oversize_events_are_rejected_before_parsing() {
        let limits = Limits {
            max_event_bytes: 64,
            ..Limits::default()
        };
        let r = validate_event(&good().to_string(), 3, &limits, now()).unwrap_err();
        assert_eq!((r.reason, r.position), (RejectReason::Oversize, Some(3)));
    }

    #[test]
    fn a_batch_keeps_good_events_and_rejects_bad_ones_by_position() {
        let body = serde_json::json!([good(), {"specversion": "1.0"}, good()]).to_string();
        let p = parse_body(body.as_bytes(), &Limits::default(), now());
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].position, Some(1));
        assert_eq!(p.rejected[0].raw, br#"{"specversion":"1.0"}"#);
    }

    #[test]
    fn unreadable_bodies_are_rejected_whole() {
        for body in [&b"\xff\xfe{}"[..], b"{\"id\":", b"42", b"", b"[1,"] {
            let p = parse_body(body, &Limits::default(), now());
            assert!(p.events.is_empty());
            assert_eq!(p.rejected.len(), 1, "{body:?}");
            assert_eq!(p.rejected[0].reason, RejectReason::InvalidJson);
            assert_eq!(p.rejected[0].position, None);
            assert_eq!(p.rejected[0].raw, body);
        }
    }

    #[test]
    fn a_non_object_batch_element_is_invalid_json() {
        let p = parse_body(br#"[1, "x", ["\u0000"]]"#, &Limits::default(), now());
        assert_eq!(p.rejected.len(), 3);
        assert!(p
            .rejected
            .iter()
            .all(|r| r.reason == RejectReason::InvalidJson));
    }
}
