//! What the transform targets share: the shipped rules file, and a reader over bytes that
//! maps every record as the transform function does.

use chrono::{TimeZone, Utc};
use ferry_shared::{Limits, RejectReason};
use ferry_transform::map::{Mapped, Mapper};
use ferry_transform::format::{Compression, Format};
use ferry_transform::read::{read_object, Flow, ObjectError, ReadLimits, Record, StoreReader};
use ferry_transform::rules::Rules;

/// What reading an object gave for one record: its bytes, and what mapping made of it.
#[derive(Debug, PartialEq)]
pub enum Got {
    Json(Vec<u8>, bool),
    Row(Vec<Vec<u8>>, usize),
    Malformed(Vec<u8>),
}

/// The outcome of mapping a record: an event id, a rejection reason, or a drop.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Event(String),
    Rejected(RejectReason),
    Dropped,
}

/// Parsed once per process: compiling the rules' regexes per input would make the fuzzer
/// measure regex compilation.
pub fn sources() -> &'static Rules {
    static SOURCES: std::sync::OnceLock<Rules> = std::sync::OnceLock::new();
    SOURCES.get_or_init(|| {
        Rules::parse(include_str!("../../config/sources.toml")).expect("the shipped rules parse")
    })
}

/// Reads `bytes` as the object `key` (its rule from the shipped file) and maps each record.
/// Record numbers must rise strictly; a CSV row of another width than the header must be a
/// `malformed_record`; a malformed record is never an event.
pub fn read(
    bytes: &[u8],
    key: &str,
    max_record_bytes: usize,
) -> (Result<(Compression, Format), ObjectError>, Vec<(u64, Got, Outcome)>) {
    let sources = sources();
    let rule = sources.rule_for("file:///bucket", key).expect("a rule covers the key");
    let now = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
    let mapper = Mapper::new(rule, Limits::default(), now, key);
    let (source, state) = StoreReader::new(bytes);
    let mut got = Vec::new();
    let mut last = 0;
    let result = read_object(
        source,
        &state,
        rule,
        ReadLimits { max_record_bytes },
        |n, record| {
            assert!(n > last, "record numbers rise: {last} then {n}");
            last = n;
            let seen = match &record {
                Record::Json { text, truncated } => {
                    assert!(text.len() <= max_record_bytes);
                    Got::Json(text.to_vec(), *truncated)
                }
                Record::Row { headers, row } => {
                    Got::Row(row.iter().map(<[u8]>::to_vec).collect(), headers.len())
                }
                Record::Malformed { raw, .. } => Got::Malformed(raw.to_vec()),
            };
            let outcome = match mapper.map(n, record) {
                Mapped::Event(e) => Outcome::Event(e.id.clone()),
                Mapped::Rejected(r) => {
                    assert_eq!(r.position, Some(i32::try_from(n).unwrap_or(i32::MAX)));
                    Outcome::Rejected(r.reason)
                }
                Mapped::Dropped(_) => Outcome::Dropped,
            };
            match (&seen, &outcome) {
                (Got::Row(fields, width), _) if fields.len() != *width => assert_eq!(
                    outcome,
                    Outcome::Rejected(RejectReason::MalformedRecord),
                    "a row of {} fields under a header of {width}",
                    fields.len()
                ),
                (Got::Malformed(_), Outcome::Event(_)) => panic!("a malformed record became an event"),
                _ => {}
            }
            got.push((n, seen, outcome));
            Flow::Continue
        },
    );
    (result, got)
}
