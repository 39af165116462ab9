//! Per-source rules (`config/sources.toml`): which objects a rule covers, what format to expect,
//! how records become events, which records to drop. The file is embedded at build time and can
//! be replaced at run time with `FERRY_SOURCES_FILE`.
//!
//! A rule without `[source.fields]` reads CloudEvents (NDJSON or a JSON array); `[source.set]`
//! then fills attributes a record lacks (a tracker that writes no `tenantid`, say). A rule with
//! `[source.fields]` maps plain records (CSV rows or JSON objects) attribute by attribute; its
//! `set` values are constants, and `[[source.classify]]` derives the type from field values.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use regex::Regex;
use serde::Deserialize;

use crate::format::Declared;

/// The repository's rules, compiled in.
pub const DEFAULT_RULES: &str = include_str!("../../../config/sources.toml");

/// A rules file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("sources file: {0}")]
pub struct RulesError(pub String);

/// How a mapped record's time field is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    Rfc3339,
    UnixSeconds,
    UnixMillis,
    /// A chrono `strftime` pattern; without an offset (`%z`) the time is taken as UTC.
    Pattern(String),
}

impl TimeFormat {
    /// Parses `value` into an RFC 3339 timestamp, or says why not.
    pub fn to_rfc3339(&self, value: &str) -> Result<String, String> {
        let value = value.trim();
        let t: DateTime<Utc> = match self {
            TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(value)
                .map_err(|e| format!("{value:?} is not RFC 3339: {e}"))?
                .with_timezone(&Utc),
            TimeFormat::UnixSeconds | TimeFormat::UnixMillis => {
                let n: i64 = value
                    .parse()
                    .map_err(|_| format!("{value:?} is not a whole number"))?;
                let t = if *self == TimeFormat::UnixSeconds {
                    DateTime::from_timestamp(n, 0)
                } else {
                    DateTime::from_timestamp_millis(n)
                };
                t.ok_or_else(|| format!("{value:?} is out of range"))?
            }
            TimeFormat::Pattern(p) => match DateTime::parse_from_str(value, p) {
                Ok(t) => t.with_timezone(&Utc),
                Err(_) => NaiveDateTime::parse_from_str(value, p)
                    .map_err(|e| format!("{value:?} does not match {p:?}: {e}"))?
                    .and_utc(),
            },
        };
        Ok(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

/// One condition: the field's value matches the regular expression.
#[derive(Debug, Clone)]
pub struct Cond {
    pub field: String,
    pub re: Regex,
}

/// A drop rule: records matching every condition are counted and skipped.
#[derive(Debug, Clone)]
pub struct DropRule {
    pub name: String,
    pub when: Vec<Cond>,
}

/// A classification rule: records matching every condition get `ty`.
#[derive(Debug, Clone)]
pub struct Classify {
    pub when: Vec<Cond>,
    pub ty: String,
}

/// One compiled `[[source]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub prefix: String,
    pub store: Option<String>,
    pub declared: Declared,
    /// Attribute → constant (fields mode) or default for a missing attribute (CloudEvents mode).
    pub set: Vec<(String, String)>,
    /// Attribute → field name (fields mode only).
    pub fields: Vec<(String, String)>,
    /// Fields copied into `data`; all of them when `None`.
    pub data: Option<Vec<String>>,
    pub time_format: TimeFormat,
    pub classify: Vec<Classify>,
    pub drops: Vec<DropRule>,
}

impl Rule {
    /// True when records are mapped field by field rather than read as CloudEvents.
    pub fn maps_fields(&self) -> bool {
        !self.fields.is_empty()
    }

    /// The constant or default for an attribute.
    pub fn set_value(&self, attribute: &str) -> Option<&str> {
        self.set
            .iter()
            .find(|(a, _)| a == attribute)
            .map(|(_, v)| v.as_str())
    }
}

/// All rules.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// The file named by `path`, or the compiled-in default.
    pub fn load(path: Option<&Path>) -> Result<Rules, RulesError> {
        match path {
            None => Rules::parse(DEFAULT_RULES),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| RulesError(format!("cannot read {}: {e}", p.display())))?;
                Rules::parse(&text)
            }
        }
    }

    /// Parses and checks a rules file.
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let file: RawFile = toml::from_str(text).map_err(|e| RulesError(e.to_string()))?;
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(file.source.len());
        for raw in file.source {
            if !names.insert(raw.name.clone()) {
                return Err(RulesError(format!("two sources are named {:?}", raw.name)));
            }
            rules.push(compile(raw)?);
        }
        Ok(Rules { rules })
    }

    /// The rule for an object: the longest matching prefix among rules for its store.
    pub fn rule_for(&self, store: &str, key: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|r| r.store.as_deref().is_none_or(|s| s == store))
            .filter(|r| key.starts_with(&r.prefix))
            .max_by_key(|r| (r.prefix.len(), r.store.is_some()))
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    source: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    prefix: String,
    #[serde(default)]
    store: Option<String>,
    #[serde(default)]
    format: Declared,
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
    #[serde(default)]
    data: Option<Vec<String>>,
    #[serde(default)]
    time_format: Option<String>,
    #[serde(default)]
    classify: Vec<RawClassify>,
    #[serde(default)]
    drop: Vec<RawDrop>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClassify {
    when: BTreeMap<String, String>,
    #[serde(rename = "type")]
    ty: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrop {
    name: String,
    when: BTreeMap<String, String>,
}

fn compile(mut raw: RawRule) -> Result<Rule, RulesError> {
    let name = std::mem::take(&mut raw.name);
    let err = |what: String| RulesError(format!("source {name:?}: {what}"));
    let conds = |when: BTreeMap<String, String>| -> Result<Vec<Cond>, RulesError> {
        if when.is_empty() {
            return Err(err("a `when` needs at least one field".into()));
        }
        when.into_iter()
            .map(|(field, pattern)| {
                Regex::new(&pattern)
                    .map(|re| Cond {
                        field: field.clone(),
                        re,
                    })
                    .map_err(|e| err(format!("pattern for {field:?}: {e}")))
            })
            .collect()
    };
    for attribute in raw.set.keys().chain(raw.fields.keys()) {
        let ok = !attribute.is_empty()
            && attribute
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok || attribute == "specversion" || attribute == "data" {
            return Err(err(format!(
                "{attribute:?} cannot be set (attribute names are lowercase letters and digits; \
                 specversion and data are ferry's)"
            )));
        }
    }
    let time_format = time_format(raw.time_format.as_deref()).map_err(err)?;
    check_shape(&raw, raw.classify.is_empty()).map_err(err)?;
    let classify = raw
        .classify
        .into_iter()
        .map(|c| {
            Ok(Classify {
                when: conds(c.when)?,
                ty: c.ty,
            })
        })
        .collect::<Result<Vec<_>, RulesError>>()?;
    let drops = raw
        .drop
        .into_iter()
        .map(|d| {
            Ok(DropRule {
                name: d.name,
                when: conds(d.when)?,
            })
        })
        .collect::<Result<Vec<_>, RulesError>>()?;
    Ok(Rule {
        prefix: raw.prefix,
        store: raw.store,
        declared: raw.format,
        set: raw.set.into_iter().collect(),
        fields: raw.fields.into_iter().collect(),
        data: raw.data,
        time_format,
        classify,
        drops,
        name,
    })
}

/// `time_format`: rfc3339 (the default), unix, unix_ms or a strftime pattern.
fn time_format(text: Option<&str>) -> Result<TimeFormat, String> {
    Ok(match text {
        None | Some("rfc3339") => TimeFormat::Rfc3339,
        Some("unix") => TimeFormat::UnixSeconds,
        Some("unix_ms") => TimeFormat::UnixMillis,
        Some(p) if p.contains('%') => TimeFormat::Pattern(p.to_owned()),
        Some(other) => {
            return Err(format!(
                "time_format {other:?}: expected rfc3339, unix, unix_ms or a strftime pattern"
            ))
        }
    })
}

/// What a rule must give: with `[fields]`, every required attribute (the time from a field);
/// without, CloudEvents as they are (no CSV, no classify, data or time_format).
fn check_shape(raw: &RawRule, classify_empty: bool) -> Result<(), String> {
    if !raw.fields.is_empty() {
        let has = |a: &str| raw.fields.contains_key(a) || raw.set.contains_key(a);
        for required in ["time", "tenantid", "source"] {
            if !has(required) {
                return Err(format!(
                    "maps fields but gives no {required:?} (in [fields] or [set])"
                ));
            }
        }
        if !has("type") && classify_empty {
            return Err("maps fields but gives no type ([fields], [set] or [[classify]])".into());
        }
        if raw.set.contains_key("time") {
            return Err("time must come from a field".into());
        }
    } else {
        if raw.format == Declared::Csv {
            return Err("CSV needs [fields]: which column feeds which attribute".into());
        }
        if !classify_empty || raw.data.is_some() || raw.time_format.is_some() {
            return Err("classify, data and time_format apply only to rules with [fields]".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_rules_compile() {
        let s = Rules::parse(DEFAULT_RULES).unwrap();
        assert!(!s.rules().is_empty());
    }

    #[test]
    fn longest_prefix_wins_and_store_narrows() {
        let s = Rules::parse(
            r#"
            [[source]]
            name = "all"
            prefix = ""
            [[source]]
            name = "tracker"
            prefix = "tracker/"
            [[source]]
            name = "tracker-s3"
            prefix = "tracker/"
            store = "s3://drop"
            "#,
        )
        .unwrap();
        assert_eq!(
            s.rule_for("file:///x", "tracker/a").unwrap().name,
            "tracker"
        );
        assert_eq!(
            s.rule_for("s3://drop", "tracker/a").unwrap().name,
            "tracker-s3"
        );
        assert_eq!(s.rule_for("s3://drop", "other").unwrap().name, "all");
        let none = Rules::parse("[[source]]\nname = \"t\"\nprefix = \"t/\"\n").unwrap();
        assert!(none.rule_for("s3://drop", "x/y").is_none());
    }

    #[test]
    fn incomplete_rules_are_refused_with_their_name() {
        for (text, needle) in [
            ("name='a'\nprefix=''\nformat='csv'", "CSV needs"),
            ("name='a'\nprefix=''\n[source.fields]\ntime='t'", "tenantid"),
            ("name='a'\nprefix=''\n[source.fields]\ntime='t'\n[source.set]\ntenantid='x'\nsource='s'", "type"),
            ("name='a'\nprefix=''\n[[source.drop]]\nname='d'\nwhen={path='('}", "pattern"),
            ("name='a'\nprefix=''\nformat='xml'", "xml"),
            ("name='a'\nprefix=''\n[source.set]\nTenant='x'", "Tenant"),
        ] {
            let e = Rules::parse(&format!("[[source]]\n{text}")).unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn time_formats() {
        let iso = TimeFormat::Rfc3339
            .to_rfc3339("2026-11-21T10:00:00+01:00")
            .unwrap();
        assert_eq!(iso, "2026-11-21T09:00:00Z");
        assert_eq!(
            TimeFormat::UnixMillis.to_rfc3339("1700000000123").unwrap(),
            "2023-11-14T22:13:20.123Z"
        );
        let p = TimeFormat::Pattern("%d/%m/%Y %H:%M:%S".into());
        assert_eq!(
            p.to_rfc3339("21/11/2026 10:00:00").unwrap(),
            "2026-11-21T10:00:00Z"
        );
        assert!(TimeFormat::UnixSeconds.to_rfc3339("soon").is_err());
    }
}
