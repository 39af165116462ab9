//! Reading an object: compression from magic bytes, format from the first bytes of content,
//! and records one at a time, with every record bounded in size. Synchronous on purpose: it
//! runs on a blocking thread next to the async loader, so decompression and parsing use one
//! core while PostgreSQL uses the other.
//!
//! | magic | compression |      | first byte of content | format |
//! |---|---|---|---|---|
//! | `1f 8b` | gzip (multi-member) | | `[` | JSON array (CloudEvents batch) |
//! | `28 b5 2f fd` | zstd | | `{` | NDJSON |
//! | anything else | none | | other text | CSV with a header (rules that map fields) |

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::format::{Compression, Declared, Format};
use crate::rules::Rule;

/// Why an object as a whole cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The compressed stream is corrupt or truncated: quarantine the object.
    #[error("{0}")]
    Corrupt(String),
    /// Not a supported format: quarantine the object.
    #[error("{0}")]
    UnknownFormat(String),
    /// Reading from the store failed (network, throttling): retry the object.
    #[error("reading the object failed: {0}")]
    Store(String),
    /// The consumer stopped (its transaction failed); nothing to report from here.
    #[error("stopped")]
    Stopped,
}

/// One record as read from the file, before mapping. Every record comes with its number: the
/// line for NDJSON and CSV (the header is line 1), the element (from 1) for a JSON array.
#[derive(Debug)]
pub enum Record<'a> {
    /// A JSON text: an NDJSON line or an array element. `truncated` when it was longer than
    /// the limit (the bytes are the first `limit` of it).
    Json { text: &'a [u8], truncated: bool },
    /// A CSV row, its fields in header order.
    Row {
        headers: &'a csv::ByteRecord,
        row: &'a csv::ByteRecord,
    },
    /// A piece of input that is not a well-formed record (when it ends the reading of the
    /// file, its detail says so).
    Malformed { raw: &'a [u8], detail: String },
}

/// What the record callback tells the reader.
pub enum Flow {
    Continue,
    Stop,
}

/// Where the object's bytes come from: the wrapper notes whether an error came from the store
/// (so it is retried) rather than from decoding (so the object is quarantined), and keeps the
/// first bytes for the quarantine row of an unreadable object.
pub struct StoreReader<R> {
    inner: R,
    failed: Arc<AtomicBool>,
    head: Arc<Mutex<Vec<u8>>>,
}

/// Bytes of an unreadable object kept in its quarantine row.
pub const HEAD_BYTES: usize = 64 * 1024;

impl<R: Read> StoreReader<R> {
    pub fn new(inner: R) -> (StoreReader<R>, ReaderState) {
        let failed = Arc::new(AtomicBool::new(false));
        let head = Arc::new(Mutex::new(Vec::new()));
        let state = ReaderState {
            failed: Arc::clone(&failed),
            head: Arc::clone(&head),
        };
        (
            StoreReader {
                inner,
                failed,
                head,
            },
            state,
        )
    }
}

impl<R: Read> Read for StoreReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
                if head.len() < HEAD_BYTES {
                    let take = n.min(HEAD_BYTES - head.len());
                    head.extend_from_slice(&buf[..take]);
                }
                Ok(n)
            }
            Err(e) => {
                self.failed.store(true, Ordering::SeqCst);
                Err(e)
            }
        }
    }
}

/// What the caller keeps of a [`StoreReader`] after handing it to the reader.
#[derive(Debug, Clone)]
pub struct ReaderState {
    failed: Arc<AtomicBool>,
    head: Arc<Mutex<Vec<u8>>>,
}

impl ReaderState {
    /// The object's first bytes (at most [`HEAD_BYTES`]).
    pub fn head(&self) -> Vec<u8> {
        self.head.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

/// Settings of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Longest record kept; longer ones are cut here and rejected as oversize.
    pub max_record_bytes: usize,
}

const BUFFER: usize = 256 * 1024;

/// Reads every record of `input`, calling `each` for it. Returns the compression and format.
pub fn read_object<R: Read>(
    input: StoreReader<R>,
    state: &ReaderState,
    rule: &Rule,
    limits: ReadLimits,
    mut each: impl FnMut(u64, Record<'_>) -> Flow,
) -> Result<(Compression, Format), ObjectError> {
    let io_error = |e: io::Error, compression: Compression| {
        // Without compression every read error is the store's; with it, only the ones the
        // store itself reported.
        if state.failed() || compression == Compression::None {
            ObjectError::Store(e.to_string())
        } else {
            ObjectError::Corrupt(format!("{} stream is corrupt: {e}", compression.as_str()))
        }
    };
    let mut input = input;
    // One read may return fewer bytes than a magic number: read until there are enough.
    let magic =
        take_prefix(&mut input, 8, |b| b.len() >= 6).map_err(|e| io_error(e, Compression::None))?;
    let compression = if magic.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        if let Some(kind) = unsupported_archive(&magic) {
            // Read on a little, so the quarantine row keeps the object's first bytes.
            take_prefix(&mut input, HEAD_BYTES, |_| false)
                .map_err(|e| io_error(e, Compression::None))?;
            return Err(ObjectError::UnknownFormat(format!(
                "{kind} data is not supported (gzip, zstd or uncompressed only)"
            )));
        }
        Compression::None
    };
    let raw = BufReader::with_capacity(BUFFER, io::Cursor::new(magic).chain(input));
    let mut decoded: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(raw)
                .map_err(|e| io_error(e, Compression::Zstd))?,
        ),
        Compression::None => Box::new(raw),
    };
    // Enough content to see its first non-blank byte and judge whether it is text.
    let sample = take_prefix(&mut decoded, SAMPLE, |b| {
        b.len() >= 4096 && b.iter().any(|c| !c.is_ascii_whitespace())
    })
    .map_err(|e| io_error(e, compression))?;
    let format = detect(&sample, rule).map_err(ObjectError::UnknownFormat)?;
    let mut content = BufReader::with_capacity(BUFFER, io::Cursor::new(sample).chain(decoded));
    let result = match format {
        Format::Ndjson => ndjson(&mut content, limits, &mut each),
        Format::Json => json_array(&mut content, limits, &mut each),
        Format::Csv => csv_rows(&mut content, limits, &mut each),
    };
    match result {
        Ok(Flow::Continue) => Ok((compression, format)),
        Ok(Flow::Stop) => Err(ObjectError::Stopped),
        Err(e) => Err(io_error(e, compression)),
    }
}

fn unsupported_archive(magic: &[u8]) -> Option<&'static str> {
    const KINDS: &[(&[u8], &str)] = &[
        (b"PK\x03\x04", "zip"),
        (b"BZh", "bzip2"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
        (b"\x04\x22\x4d\x18", "lz4"),
        (b"PAR1", "parquet"),
        (b"7z\xbc\xaf", "7z"),
    ];
    KINDS
        .iter()
        .find(|(m, _)| magic.starts_with(m))
        .map(|(_, k)| *k)
}

/// Reads until `enough` holds for what was read, or the input ends, or `max` bytes; returns
/// those bytes (the caller puts them back in front of the rest).
fn take_prefix(
    r: &mut impl Read,
    max: usize,
    enough: impl Fn(&[u8]) -> bool,
) -> io::Result<Vec<u8>> {
    let mut taken = Vec::new();
    let mut piece = [0u8; 8192];
    while taken.len() < max && !enough(&taken) {
        let want = (max - taken.len()).min(piece.len());
        match r.read(&mut piece[..want]) {
            Ok(0) => break,
            Ok(n) => taken.extend_from_slice(&piece[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(taken)
}

const SAMPLE: usize = 64 * 1024;

/// Picks the format from the first bytes of content.
fn detect(sample: &[u8], rule: &Rule) -> Result<Format, String> {
    let sample = sample.strip_prefix(b"\xef\xbb\xbf").unwrap_or(sample);
    let first = sample.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let text_like = !sample.contains(&0)
        && match std::str::from_utf8(sample) {
            Ok(_) => true,
            // A character cut by the end of the sample is fine.
            Err(e) => e.error_len().is_none(),
        };
    let detected = match first {
        None => return Ok(rule.declared.format().unwrap_or(Format::Ndjson)),
        Some(b'[') => Format::Json,
        Some(b'{') => Format::Ndjson,
        Some(_) if text_like => Format::Csv,
        Some(_) => return Err("binary content: not NDJSON, a JSON array or CSV".into()),
    };
    match rule.declared {
        Declared::Auto if detected == Format::Csv && !rule.maps_fields() => Err(format!(
            "content is neither NDJSON nor a JSON array, and source {:?} maps no CSV fields",
            rule.name
        )),
        Declared::Auto => Ok(detected),
        declared if declared.format() == Some(detected) => Ok(detected),
        declared => Err(format!(
            "source {:?} expects {}, the content looks like {}",
            rule.name,
            declared.format().map_or("?", Format::as_str),
            detected.as_str()
        )),
    }
}

fn ndjson(
    content: &mut impl BufRead,
    limits: ReadLimits,
    each: &mut impl FnMut(u64, Record<'_>) -> Flow,
) -> io::Result<Flow> {
    let mut line = Vec::new();
    let mut number: u64 = 0;
    while let Some(truncated) = read_line(content, &mut line, limits.max_record_bytes)? {
        number += 1;
        let mut text = trim(&line);
        if number == 1 {
            text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
        }
        if text.is_empty() {
            continue;
        }
        if let Flow::Stop = each(number, Record::Json { text, truncated }) {
            return Ok(Flow::Stop);
        }
    }
    Ok(Flow::Continue)
}

/// Reads one `\n`-terminated line into `buf` (without the newline), keeping at most `max`
/// bytes. `None` at the end of input; `Some(true)` when the line was cut.
pub fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<bool>> {
    buf.clear();
    let mut truncated = false;
    let mut any = false;
    loop {
        let available = r.fill_buf()?;
        if available.is_empty() {
            return Ok(any.then_some(truncated));
        }
        any = true;
        let (piece, used, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if piece.len() > room {
            buf.extend_from_slice(&piece[..room]);
            truncated = true;
        } else {
            buf.extend_from_slice(piece);
        }
        r.consume(used);
        if done {
            return Ok(Some(truncated));
        }
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Splits a top-level JSON array into its elements without holding the array: a small scanner
/// tracks strings and nesting depth; each element is then parsed on its own.
fn json_array(
    content: &mut impl BufRead,
    limits: ReadLimits,
    each: &mut impl FnMut(u64, Record<'_>) -> Flow,
) -> io::Result<Flow> {
    if !skip_past_bracket(content)? {
        return Ok(Flow::Continue);
    }
    let mut element = Vec::new();
    let mut truncated = false;
    let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
    let mut closed = false;
    let mut count = 0u64;
    'scan: loop {
        let available = content.fill_buf()?;
        if available.is_empty() {
            break;
        }
        let mut start = 0;
        let mut i = 0;
        while i < available.len() {
            let b = available[i];
            i += 1;
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth = depth.saturating_add(1),
                b'}' | b']' if depth > 0 => depth -= 1,
                b',' | b']' if depth == 0 => {
                    append(
                        &mut element,
                        &available[start..i - 1],
                        &mut truncated,
                        limits,
                    );
                    start = i;
                    let last = b == b']';
                    if let Flow::Stop = element_done(&element, truncated, last, &mut count, each) {
                        return Ok(Flow::Stop);
                    }
                    element.clear();
                    truncated = false;
                    if last {
                        closed = true;
                        content.consume(i);
                        break 'scan;
                    }
                }
                _ => {}
            }
        }
        append(&mut element, &available[start..], &mut truncated, limits);
        let n = available.len();
        content.consume(n);
    }
    if !closed {
        let flow = each(
            count + 1,
            Record::Malformed {
                raw: trim(&element),
                detail: format!("the JSON array ends without `]` after {count} elements"),
            },
        );
        return Ok(flow);
    }
    after_array(content, count, limits, each)
}

/// Consumes the input up to and including the array's opening bracket (detection guarantees
/// it is the first non-space byte); false when the input ends first.
fn skip_past_bracket(content: &mut impl BufRead) -> io::Result<bool> {
    loop {
        let available = content.fill_buf()?;
        let Some(i) = available.iter().position(|b| *b == b'[') else {
            let n = available.len();
            content.consume(n);
            if n == 0 {
                return Ok(false);
            }
            continue;
        };
        content.consume(i + 1);
        return Ok(true);
    }
}

/// Hands one scanned element to `each` with its number. An empty element still takes its
/// number, so every record of the file has its own (found by fuzzing: `[, {` gave two element
/// 1s); only the nothing of `[]` is no element.
fn element_done(
    element: &[u8],
    truncated: bool,
    last: bool,
    count: &mut u64,
    each: &mut impl FnMut(u64, Record<'_>) -> Flow,
) -> Flow {
    let text = trim(element);
    if text.is_empty() {
        if last && *count == 0 {
            return Flow::Continue;
        }
        *count += 1;
        let detail = format!("element {count} is empty");
        return each(*count, Record::Malformed { raw: b"", detail });
    }
    *count += 1;
    each(*count, Record::Json { text, truncated })
}

/// Only whitespace may follow the closing bracket.
fn after_array(
    content: &mut impl BufRead,
    count: u64,
    limits: ReadLimits,
    each: &mut impl FnMut(u64, Record<'_>) -> Flow,
) -> io::Result<Flow> {
    let mut rest = Vec::new();
    while let Some(cut) = read_line(content, &mut rest, limits.max_record_bytes)? {
        if !trim(&rest).is_empty() {
            return Ok(each(
                count + 1,
                Record::Malformed {
                    raw: trim(&rest),
                    detail: format!(
                        "content after the closing `]`{}",
                        if cut { " (cut)" } else { "" }
                    ),
                },
            ));
        }
    }
    Ok(Flow::Continue)
}

fn append(element: &mut Vec<u8>, bytes: &[u8], truncated: &mut bool, limits: ReadLimits) {
    let room = limits.max_record_bytes.saturating_sub(element.len());
    if bytes.len() > room {
        element.extend_from_slice(&bytes[..room]);
        *truncated = true;
    } else {
        element.extend_from_slice(bytes);
    }
}

fn csv_rows(
    content: &mut impl BufRead,
    limits: ReadLimits,
    each: &mut impl FnMut(u64, Record<'_>) -> Flow,
) -> io::Result<Flow> {
    // The csv crate holds a whole record in memory; an unclosed quote would make the rest of
    // the file one record. The guard below it fails the read once a record grows past the
    // limit (plus the csv reader's own read-ahead).
    let boundary = Rc::new(Cell::new(0u64));
    let limit = limits.max_record_bytes as u64 + 64 * 1024;
    let guarded = Guard {
        inner: content,
        read: 0,
        boundary: Rc::clone(&boundary),
        limit,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(guarded);
    let too_long = |line: u64, each: &mut dyn FnMut(u64, Record<'_>) -> Flow| {
        let detail = format!(
            "a CSV record longer than {limit} bytes (an unclosed quote?); the rest of the \
             file is not read"
        );
        let raw = b"";
        each(line, Record::Malformed { raw, detail })
    };
    let headers = match reader.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) if is_too_long(&e) => return Ok(too_long(1, each)),
        Err(e) => return csv_error(e).map(|_| Flow::Continue),
    };
    let mut row = csv::ByteRecord::new();
    // Records are numbered by their line, but a lone CR ends a record without starting a line
    // (the csv crate counts `\n`): such a record takes the next number, so none shares one
    // (found by fuzzing).
    let mut last = 1u64;
    loop {
        boundary.set(reader.position().byte());
        match reader.read_byte_record(&mut row) {
            Ok(false) => return Ok(Flow::Continue),
            Ok(true) => {
                let line = row.position().map_or(0, |p| p.line()).max(last + 1);
                last = line;
                if let Flow::Stop = each(
                    line,
                    Record::Row {
                        headers: &headers,
                        row: &row,
                    },
                ) {
                    return Ok(Flow::Stop);
                }
            }
            Err(e) if is_too_long(&e) => return Ok(too_long(reader.position().line(), each)),
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line()).max(last + 1);
                last = line;
                let detail = csv_error(e)?;
                if let Flow::Stop = each(line, Record::Malformed { raw: b"", detail }) {
                    return Ok(Flow::Stop);
                }
            }
        }
    }
}

/// Marks the guard's refusal among I/O errors.
#[derive(Debug)]
struct RecordTooLong;

impl std::fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("record too long")
    }
}

impl std::error::Error for RecordTooLong {}

fn is_too_long(e: &csv::Error) -> bool {
    match e.kind() {
        csv::ErrorKind::Io(io) => io.get_ref().is_some_and(|x| x.is::<RecordTooLong>()),
        _ => false,
    }
}

/// Counts bytes handed to the csv reader and refuses to go `limit` past the last record.
struct Guard<R> {
    inner: R,
    read: u64,
    boundary: Rc<Cell<u64>>,
    limit: u64,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read.saturating_sub(self.boundary.get()) > self.limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, RecordTooLong));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// I/O errors pass through (store or decoder); anything else is a detail for the record.
fn csv_error(e: csv::Error) -> io::Result<String> {
    if e.is_io_error() {
        match e.into_kind() {
            csv::ErrorKind::Io(io) => Err(io),
            other => Ok(format!("{other:?}")),
        }
    } else {
        Ok(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Rules, DEFAULT_RULES};
    use std::io::Write;

    /// A reader that hands out one byte per read, like a slow network.
    struct OneByte(io::Cursor<Vec<u8>>);

    impl Read for OneByte {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }

    type Outcome = Result<(Compression, Format), ObjectError>;

    fn read_all(bytes: Vec<u8>, key: &str) -> (Outcome, Vec<(u64, String)>) {
        let sources = Rules::parse(DEFAULT_RULES).unwrap();
        let rule = sources.rule_for("file:///x", key).unwrap();
        let (source, state) = StoreReader::new(OneByte(io::Cursor::new(bytes)));
        let limits = ReadLimits {
            max_record_bytes: 1024,
        };
        let mut seen = Vec::new();
        let result = read_object(source, &state, rule, limits, |n, r| {
            let what = match r {
                Record::Json { text, .. } => String::from_utf8_lossy(text).into_owned(),
                Record::Row { row, .. } => format!("row of {}", row.len()),
                Record::Malformed { detail, .. } => format!("malformed: {detail}"),
            };
            seen.push((n, what));
            Flow::Continue
        });
        (result, seen)
    }

    #[test]
    fn csv_records_ended_by_a_lone_cr_take_the_next_numbers() {
        let csv = b"ts,tenant,method,path,status,user,session,request_id\n\
                    a,b,c,d,e,f,g,h\rA,B,C,D,E,F,G,H\r\rx,y\n1,2,3,4,5,6,7,8\n";
        let (_, seen) = read_all(csv.to_vec(), "access-logs/x.csv");
        let numbers: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [2, 3, 4, 5], "{seen:?}");
    }

    #[test]
    fn every_array_element_has_its_own_number_even_an_empty_one() {
        let (_, seen) = read_all(b"[, \"so>".to_vec(), "dumps/x");
        assert_eq!(
            seen,
            vec![
                (1, "malformed: element 1 is empty".into()),
                (
                    2,
                    "malformed: the JSON array ends without `]` after 1 elements".into()
                )
            ]
        );
        let (_, seen) = read_all(b"[{\"a\":1},,{\"b\":2},]".to_vec(), "dumps/x");
        let numbers: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [1, 2, 3, 4], "{seen:?}");
    }

    #[test]
    fn magic_bytes_and_format_survive_one_byte_reads() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"\n\n   \n[{\"a\":1},\n {\"b\":\"x]\\\"y\"}]\n")
            .unwrap();
        let (result, seen) = read_all(gz.finish().unwrap(), "dumps/x");
        assert_eq!(result.unwrap(), (Compression::Gzip, Format::Json));
        assert_eq!(
            seen,
            vec![(1, "{\"a\":1}".into()), (2, "{\"b\":\"x]\\\"y\"}".into())]
        );
    }

    #[test]
    fn a_byte_order_mark_does_not_spoil_the_first_line() {
        let (result, seen) = read_all(b"\xef\xbb\xbf{\"a\":1}\n{\"a\":2}\n".to_vec(), "tracker/x");
        assert_eq!(result.unwrap(), (Compression::None, Format::Ndjson));
        assert_eq!(seen[0], (1, "{\"a\":1}".into()));
    }

    #[test]
    fn an_unclosed_csv_quote_stops_the_file_instead_of_filling_memory() {
        let mut csv =
            b"ts,tenant,method,path,status,user,session,request_id\n1,2,3,4,5,6,7,8\n".to_vec();
        csv.extend_from_slice(b"1,acme,\"oops");
        csv.extend(std::iter::repeat_n(b'x', 300 * 1024));
        let (result, seen) = read_all(csv, "access-logs/x.csv");
        assert_eq!(result.unwrap(), (Compression::None, Format::Csv));
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0], (2, "row of 8".into()));
        assert!(seen[1].1.contains("unclosed quote"), "{seen:?}");
    }
}
