//! The statements that write a load: events by `INSERT … SELECT FROM unnest(…)` (small
//! units), binary COPY into the staging table and one merge (large ones), or one by one under
//! savepoints (isolating an event the database refuses), each with or without
//! `ON CONFLICT DO NOTHING` ([`OnStored`]); quarantine rows; the tenant check.
//! Every events insert keeps the stored events that feed derived state in `ferry_loaded`
//! ([`super::derive`]) and returns [`Stored`].

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use super::derive::{keeping_loaded, keeping_loaded_from};
use crate::error::Error;
use crate::event::{Event, RejectReason, Rejection};

/// What an events insert stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stored {
    /// Events inserted (not duplicates).
    pub events: u64,
    /// Of those, events kept in `ferry_loaded` for derived state.
    pub kept: u64,
}

impl Stored {
    fn from_row((events, kept): (i64, i64)) -> Stored {
        Stored {
            events: u64::try_from(events).unwrap_or(0),
            kept: u64::try_from(kept).unwrap_or(0),
        }
    }

    fn add(&mut self, other: Stored) {
        self.events += other.events;
        self.kept += other.kept;
    }
}

const EVENT_COLUMNS: &str = "tenant_id, source, event_id, type, subject, time, received_at, \
     user_id, session_id, datacontenttype, dataschema, extensions, data, data_base64";

/// How an events insert treats a key that is stored already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnStored {
    /// `ON CONFLICT DO NOTHING`: the stored copy stays, the new one is counted as a duplicate.
    Skip,
    /// No `ON CONFLICT` clause: a stored copy fails the statement with 23505, which comes back
    /// as [`Error::Conflict`]. Cheaper when nothing is stored yet, the usual case: no
    /// speculative insertion, a quarter to a third of the insert in `psql` tests. The events
    /// must be distinct by key.
    Fail,
}

impl OnStored {
    fn clause(self) -> &'static str {
        match self {
            OnStored::Skip => "ON CONFLICT DO NOTHING",
            OnStored::Fail => "",
        }
    }

    /// Maps a unique violation of an insert under [`OnStored::Fail`] to [`Error::Conflict`].
    fn check(self, e: sqlx::Error) -> Error {
        let unique =
            matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"));
        if self == OnStored::Fail && unique {
            Error::Conflict(e)
        } else {
            e.into()
        }
    }
}

/// Small loads: one `INSERT … SELECT FROM unnest(…)` with every column as an array parameter,
/// for the events of one unit or of several. `events` pairs each event with the index of its
/// unit; besides the counts it returns, for every event stored, the index of its unit (the
/// smallest, when two units hold the same event), so each unit gets its own counts from one
/// statement. Under [`OnStored::Fail`] (events distinct by key) every event given is stored
/// or the statement fails, so the units are the ones given and the statement does not look
/// them up: that join was 8% of the insert (3.7 of 45 ms for 1,000 events, `auto_explain`).
pub(super) async fn insert_unnest(
    conn: &mut PgConnection,
    events: &[(i32, &Event)],
    received_at: DateTime<Utc>,
    on_stored: OnStored,
) -> Result<(Stored, Vec<i32>), Error> {
    fn col<'e, T: ?Sized>(
        events: &[(i32, &'e Event)],
        f: impl Fn(&'e Event) -> &'e T,
    ) -> Vec<&'e T> {
        events.iter().map(|(_, e)| f(e)).collect()
    }
    fn opt<'e>(
        events: &[(i32, &'e Event)],
        f: impl Fn(&'e Event) -> Option<&'e str>,
    ) -> Vec<Option<&'e str>> {
        events.iter().map(|(_, e)| f(e)).collect()
    }
    // `src` is read twice under `Skip` (by the insert, and to find the unit of each stored
    // row), so it is materialized; the insert reads it in the order given (key order).
    let units_stored = match on_stored {
        OnStored::Fail => "",
        OnStored::Skip => {
            ", (SELECT coalesce(array_agg(unit), '{}') FROM (
               SELECT min(src.unit) AS unit FROM ins
               JOIN src ON src.t = ins.tenant_id AND src.s = ins.source
                       AND src.i = ins.event_id AND src.tm = ins.time
               GROUP BY ins.tenant_id, ins.source, ins.event_id, ins.time) stored)"
        }
    };
    let sql = keeping_loaded_from(
        "src AS MATERIALIZED (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::timestamptz[], $7::text[], $8::text[], $9::text[],
                                  $10::text[], $11::text[], $12::text[], $13::text[],
                                  $15::int4[])
                 AS x(t, s, i, ty, sub, tm, u, se, dct, ds, ext, d, db, unit)),",
        &format!(
            "INSERT INTO events ({EVENT_COLUMNS})
             SELECT t, s, i, ty, sub, tm, $14, u, se, dct, ds, ext::jsonb, d::jsonb, db
             FROM src
             {}",
            on_stored.clause()
        ),
        units_stored,
    );
    let times: Vec<DateTime<Utc>> = events.iter().map(|(_, e)| e.time).collect();
    let units: Vec<i32> = events.iter().map(|(u, _)| *u).collect();
    let query = sqlx::query(&sql)
        .bind(col(events, |e| e.tenant_id.as_str()))
        .bind(col(events, |e| e.source.as_str()))
        .bind(col(events, |e| e.id.as_str()))
        .bind(col(events, |e| e.ty.as_str()))
        .bind(opt(events, |e| e.subject.as_deref()))
        .bind(times)
        .bind(opt(events, |e| e.user_id.as_deref()))
        .bind(opt(events, |e| e.session_id.as_deref()))
        .bind(opt(events, |e| e.datacontenttype.as_deref()))
        .bind(opt(events, |e| e.dataschema.as_deref()))
        .bind(opt(events, |e| e.extensions.as_deref()))
        .bind(opt(events, |e| e.data.as_deref().map(|d| d.get())))
        .bind(opt(events, |e| e.data_base64.as_deref()))
        .bind(received_at)
        .bind(&units);
    let row = query
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| on_stored.check(e))?;
    let stored = Stored::from_row((row.try_get(0)?, row.try_get(1)?));
    let units = match on_stored {
        OnStored::Fail => units,
        OnStored::Skip => row.try_get(2)?,
    };
    Ok((stored, units))
}

/// Moves the staging rows into `events` (deduplicated) and empties the staging table.
pub(super) async fn merge_staging(
    conn: &mut PgConnection,
    received_at: DateTime<Utc>,
    on_stored: OnStored,
) -> Result<Stored, Error> {
    let sql = keeping_loaded(&format!(
        "INSERT INTO events ({EVENT_COLUMNS})
         SELECT tenant_id, source, event_id, type, subject, time, $1, user_id, session_id,
                datacontenttype, dataschema, extensions::jsonb, data::jsonb, data_base64
         FROM ferry_staging
         {}",
        on_stored.clause()
    ));
    let row: (i64, i64) = sqlx::query_as(&sql)
        .bind(received_at)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| on_stored.check(e))?;
    sqlx::query("TRUNCATE ferry_staging")
        .execute(&mut *conn)
        .await?;
    Ok(Stored::from_row(row))
}

/// Inserts events one by one under savepoints (inside a transaction); events the database
/// refuses for good come back as `database_rejected` rejections.
pub(super) async fn insert_each(
    tx: &mut PgConnection,
    events: &[&Event],
    received_at: DateTime<Utc>,
) -> Result<(Stored, Vec<Rejection>), Error> {
    let mut stored = Stored::default();
    let mut refused = Vec::new();
    for e in events {
        sqlx::query("SAVEPOINT ferry_event")
            .execute(&mut *tx)
            .await?;
        // A refused event's row in `ferry_loaded` goes with the savepoint.
        match insert_unnest(tx, &[(0, *e)], received_at, OnStored::Skip).await {
            Ok((one, _)) => {
                stored.add(one);
                sqlx::query("RELEASE SAVEPOINT ferry_event")
                    .execute(&mut *tx)
                    .await?;
            }
            Err(Error::Permanent(err)) => {
                sqlx::query("ROLLBACK TO SAVEPOINT ferry_event")
                    .execute(&mut *tx)
                    .await?;
                refused.push(Rejection {
                    tenant_id: Some(e.tenant_id.clone()),
                    position: Some(e.position),
                    reason: RejectReason::DatabaseRejected,
                    detail: err.to_string(),
                    raw: e.raw.as_bytes().to_vec(),
                });
            }
            Err(other) => return Err(other),
        }
    }
    Ok((stored, refused))
}

/// Which of `wanted` (sorted, distinct) are registered, active tenants. Locks their rows
/// `FOR SHARE` until the transaction ends, so a tenant cannot be suspended mid-load.
pub(super) async fn active_tenant_ids(
    conn: &mut PgConnection,
    wanted: &[&str],
) -> Result<HashSet<String>, Error> {
    if wanted.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT tenant_id FROM tenants WHERE tenant_id = ANY($1) AND status = 'active'
         ORDER BY tenant_id FOR SHARE",
    )
    .bind(wanted)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect())
}

/// The rejection of an event whose tenant is unknown or not active.
pub(super) fn unknown_tenant(e: &Event) -> Rejection {
    Rejection {
        tenant_id: Some(e.tenant_id.clone()),
        position: Some(e.position),
        reason: RejectReason::UnknownTenant,
        detail: format!("tenant {:?} is not registered or not active", e.tenant_id),
        raw: e.raw.as_bytes().to_vec(),
    }
}

/// Writes quarantine rows: `(unit, rejection)` pairs.
pub(super) async fn insert_quarantine(
    conn: &mut PgConnection,
    rows: &[(&str, Rejection)],
    received_at: DateTime<Utc>,
) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = rows
        .iter()
        .map(|(_, r)| r.tenant_id.as_deref().unwrap_or(""))
        .collect();
    let units: Vec<&str> = rows.iter().map(|(u, _)| *u).collect();
    let positions: Vec<Option<i32>> = rows.iter().map(|(_, r)| r.position).collect();
    let reasons: Vec<&str> = rows.iter().map(|(_, r)| r.reason.as_str()).collect();
    let details: Vec<&str> = rows.iter().map(|(_, r)| r.detail.as_str()).collect();
    let raws: Vec<&[u8]> = rows.iter().map(|(_, r)| r.raw.as_slice()).collect();
    sqlx::query(
        "INSERT INTO quarantine (tenant_id, unit, position, reason, detail, raw, received_at)
         SELECT t, u, p, r, d, b, $7
         FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::bytea[])
              AS x(t, u, p, r, d, b)",
    )
    .bind(tenants)
    .bind(units)
    .bind(positions)
    .bind(reasons)
    .bind(details)
    .bind(raws)
    .bind(received_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
