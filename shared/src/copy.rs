//! A writer for PostgreSQL's binary COPY format (`COPY … FROM STDIN (FORMAT binary)`).
//!
//! sqlx streams COPY data but leaves encoding to the caller; the format is small and fixed
//! (<https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>), so it is
//! written out here for the few types ferry loads.

use chrono::{DateTime, Utc};

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Builds one binary COPY payload, row by row.
#[derive(Debug)]
pub struct BinaryCopy {
    buf: Vec<u8>,
}

impl BinaryCopy {
    /// Starts a payload with the COPY header.
    pub fn with_capacity(bytes: usize) -> BinaryCopy {
        let mut buf = Vec::with_capacity(bytes + 19);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        BinaryCopy { buf }
    }

    /// Starts a row of `columns` fields.
    pub fn row(&mut self, columns: i16) {
        self.buf.extend_from_slice(&columns.to_be_bytes());
    }

    /// A `text` field (or NULL).
    pub fn text(&mut self, value: Option<&str>) {
        match value {
            Some(v) => self.field(v.as_bytes()),
            None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    /// A `timestamptz` field.
    pub fn timestamptz(&mut self, value: DateTime<Utc>) {
        let micros = value.timestamp_micros() - PG_EPOCH_OFFSET_MICROS;
        self.field(&micros.to_be_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        let len = i32::try_from(bytes.len()).expect("COPY field over 2 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }

    /// Ends the payload and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_header_rows_nulls_and_trailer() {
        let mut c = BinaryCopy::with_capacity(0);
        c.row(2);
        c.text(Some("ab"));
        c.text(None);
        let bytes = c.finish();
        let mut want = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        want.extend_from_slice(&[
            0, 2, 0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn timestamps_count_from_the_postgres_epoch() {
        let mut c = BinaryCopy::with_capacity(0);
        c.timestamptz(DateTime::from_timestamp(946_684_801, 0).unwrap());
        let bytes = c.finish();
        assert_eq!(
            &bytes[19..31],
            &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]
        );
    }
}
