//! Derived state of newly stored events: the insert statements return the events that feed it
//! ([`Fresh`]), and [`derive`] writes products, recently viewed and the webhook outbox from
//! them in the load's own transaction (`ferry_derive`, migration 0010).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::Error;

/// The columns a statement returns about the events it stored that feed derived state: the
/// number stored, then one array per column of those events (NULL when there are none).
pub(super) type FreshRow = (
    i64,
    Option<Vec<String>>,
    Option<Vec<String>>,
    Option<Vec<String>>,
    Option<Vec<String>>,
    Option<Vec<Option<String>>>,
    Option<Vec<DateTime<Utc>>>,
    Option<Vec<Option<String>>>,
    Option<Vec<Option<String>>>,
    Option<Vec<Option<String>>>,
    Option<Vec<Option<String>>>,
    Option<Vec<Option<String>>>,
    Option<Vec<Option<String>>>,
    Option<Vec<Option<String>>>,
);

/// Newly stored events that feed derived state, gathered over a transaction's statements.
#[derive(Debug, Default, Clone)]
pub(super) struct Fresh {
    tenant_id: Vec<String>,
    source: Vec<String>,
    event_id: Vec<String>,
    ty: Vec<String>,
    subject: Vec<Option<String>>,
    time: Vec<DateTime<Utc>>,
    user_id: Vec<Option<String>>,
    session_id: Vec<Option<String>>,
    datacontenttype: Vec<Option<String>>,
    dataschema: Vec<Option<String>>,
    extensions: Vec<Option<String>>,
    data: Vec<Option<String>>,
    data_base64: Vec<Option<String>>,
}

impl Fresh {
    pub fn is_empty(&self) -> bool {
        self.event_id.is_empty()
    }

    /// Appends a statement's result; returns the number of events it stored.
    pub(super) fn absorb(&mut self, row: FreshRow) -> u64 {
        let (stored, t, s, i, ty, sub, tm, u, se, dct, ds, ext, d, db) = row;
        self.extend(Fresh {
            tenant_id: t.unwrap_or_default(),
            source: s.unwrap_or_default(),
            event_id: i.unwrap_or_default(),
            ty: ty.unwrap_or_default(),
            subject: sub.unwrap_or_default(),
            time: tm.unwrap_or_default(),
            user_id: u.unwrap_or_default(),
            session_id: se.unwrap_or_default(),
            datacontenttype: dct.unwrap_or_default(),
            dataschema: ds.unwrap_or_default(),
            extensions: ext.unwrap_or_default(),
            data: d.unwrap_or_default(),
            data_base64: db.unwrap_or_default(),
        });
        u64::try_from(stored).unwrap_or(0)
    }

    pub(super) fn extend(&mut self, other: Fresh) {
        self.tenant_id.extend(other.tenant_id);
        self.source.extend(other.source);
        self.event_id.extend(other.event_id);
        self.ty.extend(other.ty);
        self.subject.extend(other.subject);
        self.time.extend(other.time);
        self.user_id.extend(other.user_id);
        self.session_id.extend(other.session_id);
        self.datacontenttype.extend(other.datacontenttype);
        self.dataschema.extend(other.dataschema);
        self.extensions.extend(other.extensions);
        self.data.extend(other.data);
        self.data_base64.extend(other.data_base64);
    }
}

/// What [`derive`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Derived {
    /// Product rows created or replaced by a newer change.
    pub products: u64,
    /// (user, product) views recorded.
    pub views: u64,
    /// Webhook deliveries enqueued.
    pub deliveries: u64,
}

/// Writes the derived state of `fresh` (products, recently viewed, webhook outbox) inside the
/// caller's transaction, in one round trip (`ferry_derive`, migration 0010). Nothing to do
/// costs nothing.
pub(super) async fn derive(
    conn: &mut PgConnection,
    fresh: &Fresh,
    recently_viewed: u32,
) -> Result<Derived, Error> {
    if fresh.is_empty() {
        return Ok(Derived::default());
    }
    let (products, views, deliveries): (i32, i32, i32) = sqlx::query_as(
        "SELECT products, views, deliveries FROM ferry_derive(
             $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&fresh.tenant_id)
    .bind(&fresh.source)
    .bind(&fresh.event_id)
    .bind(&fresh.ty)
    .bind(&fresh.subject)
    .bind(&fresh.time)
    .bind(&fresh.user_id)
    .bind(&fresh.session_id)
    .bind(&fresh.datacontenttype)
    .bind(&fresh.dataschema)
    .bind(&fresh.extensions)
    .bind(&fresh.data)
    .bind(&fresh.data_base64)
    .bind(i32::try_from(recently_viewed).unwrap_or(i32::MAX))
    .fetch_one(&mut *conn)
    .await?;
    let n = |v: i32| u64::try_from(v).unwrap_or(0);
    Ok(Derived {
        products: n(products),
        views: n(views),
        deliveries: n(deliveries),
    })
}
