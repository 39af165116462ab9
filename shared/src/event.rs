//! The event model: a validated CloudEvents 1.0 event as ferry stores it, and the typed reasons
//! for which input is rejected.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

/// A validated CloudEvent. Built only by [`crate::validate`], so every instance satisfies
/// ferry's contract: CloudEvents 1.0 required attributes plus `time` and the `tenantid`
/// extension.
#[derive(Debug, Clone)]
pub struct Event {
    /// Index of the event in its unit (batch position, or line number for files).
    pub position: i32,
    pub tenant_id: String,
    pub source: String,
    pub id: String,
    pub ty: String,
    pub subject: Option<String>,
    pub time: DateTime<Utc>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    /// From the `userid` extension attribute.
    pub user_id: Option<String>,
    /// From the `sessionid` extension attribute.
    pub session_id: Option<String>,
    /// Other extension attributes, as a JSON object text; `None` when there are none.
    pub extensions: Option<String>,
    /// The `data` member exactly as the producer sent it (JSON text).
    pub data: Option<Box<RawValue>>,
    pub data_base64: Option<String>,
    /// The event exactly as received, kept so a late rejection (unknown tenant) can still
    /// quarantine the producer's bytes.
    pub raw: Box<str>,
}

impl Event {
    /// The events table's unique key: `(tenant, source, id, time)`. Loads insert in this order
    /// so concurrent loads of overlapping events cannot deadlock.
    pub fn key(&self) -> (&str, &str, &str, DateTime<Utc>) {
        (&self.tenant_id, &self.source, &self.id, self.time)
    }
}

/// Why input was rejected. Stored in `quarantine.reason` as [`RejectReason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Not UTF-8, not JSON, or not a JSON object / array of objects.
    InvalidJson,
    /// A required attribute is absent, null or empty.
    MissingAttribute,
    /// An attribute has the wrong JSON type or a value ferry cannot store.
    InvalidAttributeValue,
    /// `specversion` is not `"1.0"`.
    WrongSpecversion,
    /// An attribute name is not lowercase ASCII letters and digits.
    InvalidAttributeName,
    /// `time` is not an RFC 3339 timestamp.
    InvalidTime,
    /// The event is larger than `FERRY_MAX_EVENT_BYTES`.
    Oversize,
    /// `tenantid` names no known, active tenant.
    UnknownTenant,
    /// `time` is older than `FERRY_MAX_EVENT_AGE` or further ahead than `FERRY_MAX_FUTURE_SKEW`.
    TimeOutOfWindow,
    /// `data` holds something PostgreSQL's jsonb cannot store (the `\u0000` escape).
    UnsupportedData,
    /// The database refused the unit for a reason that retrying cannot fix.
    DatabaseRejected,
    /// A line, row or array element of a file that is not a well-formed record (a CSV row
    /// with the wrong number of fields, a JSON array whose structure breaks off).
    MalformedRecord,
    /// Bytes of a file record that are not UTF-8.
    Undecodable,
    /// A field that the file's source rule maps onto an attribute is absent or empty.
    MissingField,
    /// No type rule of the file's source matched the record, and the source has no default.
    Unclassified,
    /// Whole object: the gzip or zstd stream is corrupt or truncated.
    CorruptArchive,
    /// Whole object: the content is none of the supported formats (or not the one its source
    /// rule expects).
    UnknownFormat,
    /// Whole object: no `[[source]]` rule in the sources file covers the object's key.
    NoSourceRule,
    /// A blob-created notification that could not be read.
    InvalidNotification,
}

impl RejectReason {
    /// The stable name stored in the database and shown to producers.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::MissingAttribute => "missing_attribute",
            RejectReason::InvalidAttributeValue => "invalid_attribute_value",
            RejectReason::WrongSpecversion => "wrong_specversion",
            RejectReason::InvalidAttributeName => "invalid_attribute_name",
            RejectReason::InvalidTime => "invalid_time",
            RejectReason::Oversize => "oversize",
            RejectReason::UnknownTenant => "unknown_tenant",
            RejectReason::TimeOutOfWindow => "time_out_of_window",
            RejectReason::UnsupportedData => "unsupported_data",
            RejectReason::DatabaseRejected => "database_rejected",
            RejectReason::MalformedRecord => "malformed_record",
            RejectReason::Undecodable => "undecodable",
            RejectReason::MissingField => "missing_field",
            RejectReason::Unclassified => "unclassified",
            RejectReason::CorruptArchive => "corrupt_archive",
            RejectReason::UnknownFormat => "unknown_format",
            RejectReason::NoSourceRule => "no_source_rule",
            RejectReason::InvalidNotification => "invalid_notification",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One piece of rejected input, ready for the quarantine table.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The tenant, when it could be read from the input.
    pub tenant_id: Option<String>,
    /// Index of the event in a batch (0 for a single event); `None` when the whole unit was
    /// unreadable.
    pub position: Option<i32>,
    pub reason: RejectReason,
    pub detail: String,
    pub raw: Vec<u8>,
}
