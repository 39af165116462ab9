//! Derived state of newly stored events. Every events insert keeps the stored events that feed
//! it in the session's temporary table `ferry_loaded` ([`keeping_loaded`]), and [`derive`]
//! writes products, recently viewed and the webhook outbox from there in the load's own
//! transaction (`ferry_derive_loaded`, migration 0011; one function per part since 0020): the
//! events never travel back to the client.

use sqlx::PgConnection;

use crate::error::Error;

/// How a load transaction starts, in one round trip (one simple query): `BEGIN`, notices off
/// for the transaction (so "already exists" costs nothing), and the session's temporary table
/// `ferry_loaded`, which [`keeping_loaded`] fills and [`derive`] reads, created the first time;
/// each commit empties it.
pub(super) const BEGIN: &str = "BEGIN;
     SET LOCAL client_min_messages = warning;
     CREATE TEMP TABLE IF NOT EXISTS ferry_loaded (
         tenant_id text, source text, event_id text, type text, subject text,
         time timestamptz, user_id text, session_id text, datacontenttype text,
         dataschema text, extensions jsonb, data jsonb, data_base64 text,
         role text, hooked boolean
     ) ON COMMIT DELETE ROWS";

/// Wraps an `INSERT INTO events …` (with or without `ON CONFLICT DO NOTHING`) so that it also
/// copies the stored events that feed derived state into `ferry_loaded`: product changes and
/// views (by `event_roles`), and every event of a tenant with an active endpoint. Duplicates
/// are not stored, so derived state sees each event once. The statement returns two counts: events
/// stored, events kept for [`derive`].
pub(super) fn keeping_loaded(insert: &str) -> String {
    keeping_loaded_from("", insert, "")
}

/// [`keeping_loaded`] with common table expressions before the insert (`ctes`, each followed
/// by a comma) and more columns after the two counts (`more`, starting with a comma).
pub(super) fn keeping_loaded_from(ctes: &str, insert: &str, more: &str) -> String {
    format!(
        "WITH {ctes}
         ins AS ({insert}
             RETURNING tenant_id, source, event_id, type, subject, time, user_id, session_id,
                       datacontenttype, dataschema, extensions, data, data_base64),
         kept AS (
             INSERT INTO ferry_loaded
             SELECT * FROM (
                 SELECT i.*, r.role,
                        i.tenant_id IN (SELECT tenant_id FROM endpoints
                                        WHERE status = 'active') AS hooked
                 FROM ins i LEFT JOIN event_roles r ON r.type = i.type) x
             WHERE role IN ('product_view', 'product_upsert', 'product_delete') OR hooked
             RETURNING 1)
         SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM kept){more}"
    )
}

/// What [`derive`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Derived {
    /// Product rows created or replaced by a newer change.
    pub products: u64,
    /// (user, product) views recorded or moved forward.
    pub views: u64,
    /// Webhook deliveries enqueued.
    pub deliveries: u64,
}

/// Writes the derived state of the events in `ferry_loaded` (products, recently viewed,
/// webhook outbox) inside the caller's transaction, in one round trip. With `more` (events
/// still to come in this transaction) it then empties the table; a commit does that anyway.
pub(super) async fn derive(
    conn: &mut PgConnection,
    recently_viewed: u32,
    more: bool,
) -> Result<Derived, Error> {
    let (products, views, deliveries): (i32, i32, i32) =
        sqlx::query_as("SELECT products, views, deliveries FROM ferry_derive_loaded($1)")
            .bind(i32::try_from(recently_viewed).unwrap_or(i32::MAX))
            .fetch_one(&mut *conn)
            .await?;
    if more {
        // TRUNCATE, not DELETE: deleted rows stay in the table until the transaction ends,
        // and every later scan of it would read them again.
        sqlx::query("TRUNCATE ferry_loaded")
            .execute(&mut *conn)
            .await?;
    }
    let n = |v: i32| u64::try_from(v).unwrap_or(0);
    Ok(Derived {
        products: n(products),
        views: n(views),
        deliveries: n(deliveries),
    })
}
