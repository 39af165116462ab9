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
            return Err(reject(
                None,
                RejectReason::InvalidJson,
                format!("not a JSON object: {e}"),
            ))
        }
    };
    // Best effort, so quarantine rows carry the tenant even when the event is bad.
    let tenant_hint = attrs
        .get("tenantid")
        .and_then(|v| as_str(v))
        .filter(|t| valid_tenant_id(t));
    let tenant_hint = tenant_hint.as_deref();
    let fail = |reason, detail: String| Err(reject(tenant_hint, reason, detail));

    if let Some(name) = attrs
        .keys()
        .find(|k| *k != "data" && *k != "data_base64" && !valid_attribute_name(k))
    {
        return fail(
            RejectReason::InvalidAttributeName,
            format!("attribute name {name:?} must be lowercase ASCII letters and digits"),
        );
    }
    let required = |name: &str| -> Result<String, (RejectReason, String)> {
        match attrs.get(name) {
            None => Err((
                RejectReason::MissingAttribute,
                format!("{name} is required"),
            )),
            Some(v) if v.get() == "null" => Err((
                RejectReason::MissingAttribute,
                format!("{name} is required"),
            )),
            Some(v) => match as_str(v) {
                None => Err((
                    RejectReason::InvalidAttributeValue,
                    format!("{name} must be a string"),
                )),
                Some(s) if s.is_empty() => Err((
                    RejectReason::MissingAttribute,
                    format!("{name} must not be empty"),
                )),
                Some(s) if s.contains('\0') => Err((
                    RejectReason::InvalidAttributeValue,
                    format!("{name} contains a NUL character"),
                )),
                Some(s) => Ok(s),
            },
        }
    };
    let optional = |name: &str| -> Result<Option<String>, (RejectReason, String)> {
        match attrs.get(name) {
            None => Ok(None),
            Some(v) if v.get() == "null" => Ok(None),
            Some(_) => required(name).map(Some),
        }
    };
    let run = || -> Result<Event, (RejectReason, String)> {
        let specversion = required("specversion")?;
        if specversion != "1.0" {
            return Err((
                RejectReason::WrongSpecversion,
                format!("specversion is {specversion:?}; only \"1.0\" is accepted"),
            ));
        }
        let id = bounded(required("id")?, "id")?;
        let source = bounded(required("source")?, "source")?;
        let ty = bounded(required("type")?, "type")?;
        let tenant_id = required("tenantid")?;
        if !valid_tenant_id(&tenant_id) {
            return Err((
                RejectReason::UnknownTenant,
                "tenantid is not a valid tenant id (lowercase letters, digits, - and _, \
                 at most 63)"
                    .into(),
            ));
        }
        let time_text = required("time")?;
        let time = DateTime::parse_from_rfc3339(&time_text)
            .map_err(|e| {
                (
                    RejectReason::InvalidTime,
                    format!("time {time_text:?} is not RFC 3339: {e}"),
                )
            })?
            .with_timezone(&Utc);
        if time.timestamp_subsec_nanos() >= 1_000_000_000 {
            // chrono keeps a leap second as :59 plus a second of nanoseconds, which would put
            // the row in a different partition than its slot; PostgreSQL has no leap seconds.
            return Err((
                RejectReason::InvalidTime,
                format!("time {time_text} is a leap second"),
            ));
        }
        let oldest = now - chrono::Duration::from_std(limits.max_event_age).unwrap_or_default();
        let newest = now + chrono::Duration::from_std(limits.max_future_skew).unwrap_or_default();
        if time < oldest || time > newest {
            return Err((
                RejectReason::TimeOutOfWindow,
                format!("time {time_text} is outside the accepted window [{oldest}, {newest}]"),
            ));
        }
        let data = attrs.get("data").filter(|v| v.get() != "null");
        let data_base64 = optional("data_base64")?;
        if data.is_some() && data_base64.is_some() {
            return Err((
                RejectReason::InvalidAttributeValue,
                "data and data_base64 must not both be present".into(),
            ));
        }
        if let Some(d) = data {
            if has_nul_escape(d.get()) {
                return Err((
                    RejectReason::UnsupportedData,
                    "data contains the \\u0000 escape, which PostgreSQL jsonb cannot store".into(),
                ));
            }
        }
        let mut user_id = None;
        let mut session_id = None;
        let mut extensions = serde_json::Map::new();
        for (name, value) in &attrs {
            match name.as_str() {
                "specversion" | "id" | "source" | "type" | "time" | "subject"
                | "datacontenttype" | "dataschema" | "data" | "data_base64" | "tenantid" => {}
                _ => {
                    let v: serde_json::Value = serde_json::from_str(value.get())
                        .map_err(|e| (RejectReason::InvalidJson, e.to_string()))?;
                    let text = match &v {
                        serde_json::Value::Null => continue,
                        serde_json::Value::String(s) if s.contains('\0') => {
                            return Err((
                                RejectReason::InvalidAttributeValue,
                                format!("extension {name} contains a NUL character"),
                            ))
                        }
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
            }
        }
        Ok(Event {
            position,
            tenant_id,
            source,
            id,
            ty,
            subject: optional("subject")?,
            time,
            datacontenttype: optional("datacontenttype")?,
            dataschema: optional("dataschema")?,
            user_id,
            session_id,
            extensions: (!extensions.is_empty())
                .then(|| serde_json::Value::Object(extensions).to_string()),
            data: data.map(|d| (*d).to_owned()),
            data_base64,
            raw: raw.into(),
        })
    };
    run().or_else(|(reason, detail)| fail(reason, detail))
}

/// CloudEvents attribute names: lowercase ASCII letters and digits.
/// Longest accepted `id`, `source` and `type`: together with the tenant and time they form the
/// events key, and a btree entry must stay under ~2.7 kB.
pub const MAX_KEY_ATTRIBUTE_BYTES: usize = 1024;

fn bounded(value: String, name: &str) -> Result<String, (RejectReason, String)> {
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

/// True if JSON text contains a real `\u0000` escape (not an escaped backslash before `u0000`).
fn has_nul_escape(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut from = 0;
    while let Some(at) = json[from..].find("\\u0000") {
        let start = from + at;
        let backslashes = bytes[..=start]
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if backslashes % 2 == 1 {
            return true;
        }
        from = start + 1;
    }
    false
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
            RejectReason::InvalidAttributeValue
        );
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_ordinary_text() {
        assert!(!has_nul_escape(r#""C:\\u0000""#));
        assert!(has_nul_escape(r#""a\u0000""#));
        assert!(has_nul_escape(r#""\\\u0000""#));
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
        let p = parse_body(b"[1, \"x\"]", &Limits::default(), now());
        assert_eq!(p.rejected.len(), 2);
        assert!(p
            .rejected
            .iter()
            .all(|r| r.reason == RejectReason::InvalidJson));
    }
}
