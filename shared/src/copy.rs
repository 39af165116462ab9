//! A writer for PostgreSQL's binary COPY format (`COPY … FROM STDIN (FORMAT binary)`).
//!
//! sqlx streams COPY data but leaves encoding to the caller; the format is small and fixed
//! (<https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>), so it is
//! written out here for the few types ferry loads. [`create_staging`] and [`copy_to_staging`]
//! put events into a per-connection staging table with it (the loader merges from there).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::Error;
use crate::event::Event;

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

/// Creates the connection's temporary staging table `ferry_staging` (the columns of an event
/// as text, `time` as timestamptz), if needed. For loads of many events: COPY is the fastest
/// way in, and a merge from staging deduplicates.
pub async fn create_staging(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SET LOCAL client_min_messages = warning")
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS ferry_staging (
             tenant_id text, source text, event_id text, type text, subject text,
             time timestamptz, user_id text, session_id text, datacontenttype text,
             dataschema text, extensions text, data text, data_base64 text)",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends events to the staging table with one binary COPY.
pub async fn copy_to_staging(conn: &mut PgConnection, events: &[&Event]) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    let bytes: usize = events.iter().map(|e| e.raw.len() + 64).sum();
    let mut copy = BinaryCopy::with_capacity(bytes);
    for e in events {
        copy.row(13);
        copy.text(Some(&e.tenant_id));
        copy.text(Some(&e.source));
        copy.text(Some(&e.id));
        copy.text(Some(&e.ty));
        copy.text(e.subject.as_deref());
        copy.timestamptz(e.time);
        copy.text(e.user_id.as_deref());
        copy.text(e.session_id.as_deref());
        copy.text(e.datacontenttype.as_deref());
        copy.text(e.dataschema.as_deref());
        copy.text(e.extensions.as_deref());
        copy.text(e.data.as_deref().map(|d| d.get()));
        copy.text(e.data_base64.as_deref());
    }
    let mut sink = conn
        .copy_in_raw("COPY ferry_staging FROM STDIN (FORMAT binary)")
        .await?;
    sink.send(copy.finish()).await?;
    sink.finish().await?;
    Ok(())
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
