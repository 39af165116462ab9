//! From a record to an event: CloudEvents pass through the shared validation; plain records
//! are mapped by their source rule into a CloudEvent first, then validated the same way, so a
//! file's events obey exactly the contract a queue message's do.

use chrono::{DateTime, Utc};
use ferry_shared::validate::validate_event;
use ferry_shared::{Event, Limits, RejectReason, Rejection};
use serde_json::{Map, Value};

use crate::read::Record;
use crate::rules::{Cond, Rule};

/// What became of one record.
#[derive(Debug)]
pub enum Mapped {
    Event(Box<Event>),
    Rejected(Rejection),
    /// Skipped by the drop rule with this index.
    Dropped(usize),
}

/// Maps the records of one object.
#[derive(Debug)]
pub struct Mapper<'r> {
    rule: &'r Rule,
    limits: Limits,
    now: DateTime<Utc>,
    /// The object key, for derived event ids.
    key: String,
}

impl<'r> Mapper<'r> {
    pub fn new(rule: &'r Rule, limits: Limits, now: DateTime<Utc>, key: &str) -> Mapper<'r> {
        Mapper {
            rule,
            limits,
            now,
            key: key.to_owned(),
        }
    }

    pub fn map(&self, number: u64, record: Record<'_>) -> Mapped {
        let position = i32::try_from(number).unwrap_or(i32::MAX);
        let reject = |reason, detail: String, raw: &[u8]| rejected(position, reason, detail, raw);
        match record {
            Record::Malformed { raw, detail } => reject(RejectReason::MalformedRecord, detail, raw),
            Record::Json { text, truncated } => {
                if truncated {
                    return reject(
                        RejectReason::Oversize,
                        format!(
                            "record is longer than {} bytes (kept the first {})",
                            self.limits.max_event_bytes,
                            text.len()
                        ),
                        text,
                    );
                }
                let Ok(text) = std::str::from_utf8(text) else {
                    return reject(RejectReason::Undecodable, "not valid UTF-8".into(), text);
                };
                self.json(position, number, text)
            }
            Record::Row { headers, row } => {
                let raw = csv_line(row);
                if row.len() != headers.len() {
                    return reject(
                        RejectReason::MalformedRecord,
                        format!("{} fields; the header has {}", row.len(), headers.len()),
                        &raw,
                    );
                }
                let mut fields = Vec::with_capacity(row.len());
                for (name, value) in headers.iter().zip(row.iter()) {
                    match (std::str::from_utf8(name), std::str::from_utf8(value)) {
                        (Ok(n), Ok(v)) => fields.push((n, v)),
                        _ => {
                            return reject(
                                RejectReason::Undecodable,
                                "a field is not valid UTF-8".into(),
                                &raw,
                            )
                        }
                    }
                }
                let get = |f: &str| {
                    fields
                        .iter()
                        .find(|(n, _)| *n == f)
                        .map(|(_, v)| Value::String((*v).to_owned()))
                };
                let data = Value::Object(
                    fields
                        .iter()
                        .filter(|(n, _)| {
                            self.rule
                                .data
                                .as_ref()
                                .is_none_or(|d| d.iter().any(|x| x == n))
                        })
                        .map(|(n, v)| ((*n).to_owned(), Value::String((*v).to_owned())))
                        .collect(),
                );
                self.fields(position, number, &get, data, &raw)
            }
        }
    }

    fn json(&self, position: i32, number: u64, text: &str) -> Mapped {
        let rule = self.rule;
        if !rule.maps_fields() && rule.set.is_empty() && rule.drops.is_empty() {
            // The common case: a CloudEvent, validated as it stands.
            return self.validate(text, position);
        }
        let mut object: Map<String, Value> = match serde_json::from_str(text) {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                let detail = "not a JSON object".to_owned();
                return rejected(position, RejectReason::InvalidJson, detail, text.as_bytes());
            }
            Err(e) => {
                let detail = format!("not a JSON object: {e}");
                return rejected(position, RejectReason::InvalidJson, detail, text.as_bytes());
            }
        };
        if rule.maps_fields() {
            let get = |f: &str| lookup(&object, f).cloned();
            let data = match &rule.data {
                None => Value::Object(object.clone()),
                Some(names) => Value::Object(
                    names
                        .iter()
                        .filter_map(|n| lookup(&object, n).map(|v| (n.clone(), v.clone())))
                        .collect(),
                ),
            };
            return self.fields(position, number, &get, data, text.as_bytes());
        }
        if let Some(i) = dropped(&rule.drops, |f| lookup(&object, f).cloned()) {
            return Mapped::Dropped(i);
        }
        for (attribute, value) in &rule.set {
            object
                .entry(attribute.clone())
                .or_insert_with(|| Value::String(value.clone()));
        }
        let completed = Value::Object(object).to_string();
        self.validate(&completed, position)
    }

    /// Builds a CloudEvent from a plain record.
    fn fields(
        &self,
        position: i32,
        number: u64,
        get: &dyn Fn(&str) -> Option<Value>,
        data: Value,
        raw: &[u8],
    ) -> Mapped {
        let rule = self.rule;
        if let Some(i) = dropped(&rule.drops, get) {
            return Mapped::Dropped(i);
        }
        let reject = |reason, detail: String| rejected(position, reason, detail, raw);
        let mut event = Map::new();
        event.insert("specversion".into(), "1.0".into());
        for (attribute, value) in &rule.set {
            event.insert(attribute.clone(), Value::String(value.clone()));
        }
        for (attribute, field) in &rule.fields {
            match get(field)
                .as_ref()
                .and_then(scalar)
                .filter(|v| !v.is_empty())
            {
                Some(value) => {
                    event.insert(attribute.clone(), Value::String(value));
                }
                None if rule.set_value(attribute).is_some() || attribute == "id" => {}
                None if matches!(attribute.as_str(), "time" | "tenantid" | "source" | "type") => {
                    return reject(
                        RejectReason::MissingField,
                        format!("field {field:?} (for {attribute}) is missing or empty"),
                    );
                }
                None => {}
            }
        }
        if let Some(Value::String(t)) = event.get("time") {
            match rule.time_format.to_rfc3339(t) {
                Ok(t) => {
                    event.insert("time".into(), Value::String(t));
                }
                Err(e) => return reject(RejectReason::InvalidTime, e),
            }
        }
        let classified = rule
            .classify
            .iter()
            .find(|c| matches_all(&c.when, get))
            .map(|c| c.ty.clone());
        match classified {
            Some(ty) => {
                event.insert("type".into(), Value::String(ty));
            }
            None if event.contains_key("type") => {}
            None => {
                return reject(
                    RejectReason::Unclassified,
                    format!("no type rule of source {:?} matches", rule.name),
                )
            }
        }
        event
            .entry("id")
            .or_insert_with(|| Value::String(format!("{}:{number}", self.key)));
        event.insert("datacontenttype".into(), "application/json".into());
        event.insert("data".into(), data);
        self.validate(&Value::Object(event).to_string(), position)
    }

    fn validate(&self, text: &str, position: i32) -> Mapped {
        match validate_event(text, position, &self.limits, self.now) {
            Ok(e) => Mapped::Event(Box::new(e)),
            Err(r) => Mapped::Rejected(r),
        }
    }
}

fn rejected(position: i32, reason: RejectReason, detail: String, raw: &[u8]) -> Mapped {
    Mapped::Rejected(Rejection {
        tenant_id: None,
        position: Some(position),
        reason,
        detail,
        raw: raw.to_vec(),
    })
}

/// A JSON scalar as text; objects and arrays are not attribute values.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `a.b.c` into nested objects.
fn lookup<'v>(object: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    if let Some(v) = object.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut current = object.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn matches_all(when: &[Cond], get: &dyn Fn(&str) -> Option<Value>) -> bool {
    when.iter().all(|c| {
        get(&c.field)
            .as_ref()
            .and_then(scalar)
            .is_some_and(|v| c.re.is_match(&v))
    })
}

fn dropped(drops: &[crate::rules::DropRule], get: impl Fn(&str) -> Option<Value>) -> Option<usize> {
    drops.iter().position(|d| matches_all(&d.when, &get))
}

/// A CSV row written back as one CSV line (the quarantine keeps this as the raw bytes).
fn csv_line(row: &csv::ByteRecord) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    if w.write_byte_record(row).is_err() {
        return row.as_slice().to_vec();
    }
    let mut line = w.into_inner().unwrap_or_default();
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    line
}
