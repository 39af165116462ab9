//! Timer payloads, read into [`Tick`]:
//!
//! | shape | where it comes from |
//! |---|---|
//! | `detail-type: "Scheduled Event"`, `source: "aws.events"`, `detail: {}` | an EventBridge rule |
//! | `source: "aws.scheduler"`, `detail: "{}"` (a string) | EventBridge Scheduler's default input |
//! | `Data.<name> = {"Schedule", "ScheduleStatus", "IsPastDue"}` | the Azure `timerTrigger` envelope |
//!
//! Anything with an RFC 3339 `time` is accepted on AWS (a Scheduler target may carry a custom
//! input); without one, the tick is "now".

use chrono::{DateTime, Utc};
use ferry_shared::Tick;
use serde_json::Value;

/// Reads an AWS scheduled payload (EventBridge rule or Scheduler).
pub fn aws_tick(payload: &Value, now: DateTime<Utc>) -> Tick {
    let scheduled = payload
        .get("time")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(now, |t| t.with_timezone(&Utc));
    Tick {
        scheduled,
        past_due: false,
    }
}

/// Reads an Azure `timerTrigger` invocation envelope.
pub fn azure_tick(envelope: &Value, now: DateTime<Utc>) -> Result<Tick, String> {
    let data = envelope
        .get("Data")
        .and_then(Value::as_object)
        .ok_or("no Data object")?;
    let timer = data
        .values()
        .find_map(|v| match v {
            Value::Object(_) => Some(v.clone()),
            // The host may quote what it serialises: accept a JSON string holding the object.
            Value::String(s) => serde_json::from_str::<Value>(s)
                .ok()
                .filter(Value::is_object),
            _ => None,
        })
        .ok_or("Data holds no timer object")?;
    let past_due = match timer.get("IsPastDue") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.trim().trim_matches('"').eq_ignore_ascii_case("true"),
        _ => false,
    };
    let scheduled = envelope
        .pointer("/Metadata/sys/UtcNow")
        .and_then(Value::as_str)
        .map(|s| s.trim_matches('"'))
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(now, |t| t.with_timezone(&Utc));
    Ok(Tick {
        scheduled,
        past_due,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn eventbridge_rule_and_scheduler_payloads_give_their_time() {
        let now = at("2026-11-21T12:00:30Z");
        let rule = json!({"version": "0", "id": "x", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "1", "time": "2026-11-21T12:00:00Z",
            "region": "eu-west-1", "resources": ["arn:aws:events:eu-west-1:1:rule/r"],
            "detail": {}});
        assert_eq!(aws_tick(&rule, now).scheduled, at("2026-11-21T12:00:00Z"));
        // Scheduler: `detail` is a string, which typed EventBridge structs refuse.
        let scheduler = json!({"version": "0", "id": "y", "detail-type": "Scheduled Event",
            "source": "aws.scheduler", "account": "1", "time": "2026-11-21T12:01:00Z",
            "region": "eu-west-1", "resources": ["arn:aws:scheduler:eu-west-1:1:schedule/default/s"],
            "detail": "{}"});
        assert_eq!(
            aws_tick(&scheduler, now).scheduled,
            at("2026-11-21T12:01:00Z")
        );
        assert_eq!(aws_tick(&json!({}), now).scheduled, now);
    }

    #[test]
    fn azure_timer_envelopes_in_both_encodings() {
        let now = at("2026-11-21T12:00:30Z");
        let timer = json!({"Schedule": {"AdjustForDST": true},
            "ScheduleStatus": {"Last": "2026-11-21T11:59:00Z", "Next": "2026-11-21T12:01:00Z",
                               "LastUpdated": "2026-11-21T11:59:00Z"},
            "IsPastDue": true});
        let plain = json!({"Data": {"tick": timer},
            "Metadata": {"sys": {"MethodName": "rollup", "UtcNow": "2026-11-21T12:00:00.5Z"}}});
        let t = azure_tick(&plain, now).unwrap();
        assert_eq!(
            (t.scheduled, t.past_due),
            (at("2026-11-21T12:00:00.5Z"), true)
        );
        let quoted = json!({"Data": {"tick": timer.to_string()}, "Metadata": {}});
        let t = azure_tick(&quoted, now).unwrap();
        assert_eq!((t.scheduled, t.past_due), (now, true));
        let first = json!({"Data": {"tick": {"Schedule": {}, "ScheduleStatus": null,
                                              "IsPastDue": false}}});
        assert!(!azure_tick(&first, now).unwrap().past_due);
        assert!(azure_tick(&json!({"Data": {"tick": 1}}), now).is_err());
        assert!(azure_tick(&json!({}), now).is_err());
    }
}
