//! What an object is made of: its compression (found from magic bytes), its format (found
//! from the first bytes of content, or declared by its rule), and what a rule may declare.
//! Shared by the reader ([`crate::read`]) and the rules ([`crate::rules`]).

use serde::Deserialize;

/// How the object is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// The content's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Json,
    Csv,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }
}

/// The format a rule declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Declared {
    #[default]
    Auto,
    Ndjson,
    Json,
    Csv,
}

impl Declared {
    pub fn format(self) -> Option<Format> {
        match self {
            Declared::Auto => None,
            Declared::Ndjson => Some(Format::Ndjson),
            Declared::Json => Some(Format::Json),
            Declared::Csv => Some(Format::Csv),
        }
    }
}
