//! The transform's own statements, on the `blob_objects` table it owns: one row per object
//! version it decided about, and the sequencer order of notifications for one key. (The
//! ledger and the events belong to [`ferry_shared::ledger`] and [`ferry_shared::load`].)

use ferry_shared::{BlobCreated, Error};
use sqlx::PgConnection;

use crate::report::{ObjectReport, Outcome};
use crate::rules::Rule;

/// Serialises, until the transaction ends, every notification of the same (store, key).
pub(crate) async fn lock_key(conn: &mut PgConnection, blob: &BlobCreated) -> Result<(), Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("{}\n{}", blob.store, blob.key))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Sequencers order events on one key when compared as strings after left-padding.
fn padded(sequencer: &str) -> String {
    format!("{sequencer:0>64}")
}

/// The highest sequencer already applied for the key, when it is newer than this one.
pub(crate) async fn newer_sequencer(
    conn: &mut PgConnection,
    blob: &BlobCreated,
) -> Result<Option<String>, Error> {
    let Some(seq) = blob.sequencer.as_deref() else {
        return Ok(None);
    };
    let newest: Option<String> =
        sqlx::query_scalar("SELECT max(sequencer) FROM blob_objects WHERE store = $1 AND key = $2")
            .bind(&blob.store)
            .bind(&blob.key)
            .fetch_one(&mut *conn)
            .await?;
    Ok(newest.filter(|n| *n > padded(seq)))
}

/// How an object was read, for its row: (format, compression).
pub(crate) type Shape<'a> = (&'a str, &'a str);

/// Writes (or rewrites) the object version's `blob_objects` row.
pub(crate) async fn record_object(
    conn: &mut PgConnection,
    blob: &BlobCreated,
    rule: Option<&Rule>,
    shape: Option<Shape<'_>>,
    report: &ObjectReport,
    detail: Option<&str>,
) -> Result<(), Error> {
    let outcome = match report.outcome {
        Outcome::Stale => "stale",
        Outcome::Quarantined(_) => "quarantined",
        _ => "loaded",
    };
    let content_id = blob
        .version
        .as_deref()
        .or(blob.etag.as_deref())
        .unwrap_or("unversioned");
    let dropped: u64 = report.dropped.values().sum();
    let dropped_by = serde_json::to_string(&report.dropped).unwrap_or_else(|_| "{}".into());
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO blob_objects (store, key, content_id, unit, sequencer, size, source_rule,
             format, compression, outcome, records, loaded, duplicates, quarantined, dropped,
             dropped_by, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::jsonb, $17)
         ON CONFLICT (store, key, content_id) DO UPDATE SET
             unit = EXCLUDED.unit, sequencer = EXCLUDED.sequencer, outcome = EXCLUDED.outcome,
             records = EXCLUDED.records, loaded = EXCLUDED.loaded,
             duplicates = EXCLUDED.duplicates, quarantined = EXCLUDED.quarantined,
             dropped = EXCLUDED.dropped, dropped_by = EXCLUDED.dropped_by,
             detail = EXCLUDED.detail, applied_at = now()",
    )
    .bind(&blob.store)
    .bind(&blob.key)
    .bind(content_id)
    .bind(&report.unit)
    .bind(blob.sequencer.as_deref().map(padded))
    .bind(blob.size.map(n))
    .bind(rule.map(|r| r.name.as_str()))
    .bind(shape.map(|s| s.0))
    .bind(shape.map(|s| s.1))
    .bind(outcome)
    .bind(n(report.records))
    .bind(n(report.loaded))
    .bind(n(report.duplicates))
    .bind(n(report.quarantined_total()))
    .bind(n(dropped))
    .bind(dropped_by)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
