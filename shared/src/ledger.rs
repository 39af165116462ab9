//! The exactly-once ledger, `ingest_ledger`: one row per delivery unit ever applied (a queue
//! message, an object version, an unreadable notification), written in the same transaction as
//! everything the unit produced.
//!
//! - [`claim`] inserts the unit's row (`ON CONFLICT DO NOTHING`): a unit already there was
//!   applied before and must have no effect; a concurrent delivery of the same unit waits on
//!   the uncommitted row and then finds it.
//! - [`applied`] asks, outside any transaction, whether a unit is there already: a cheap way
//!   to skip work (the claim stays the decision).
//! - [`settle`] records what each claimed unit produced, before the commit.
//!
//! Unit keys are at most [`MAX_UNIT_KEY_BYTES`] (+ a hash) long: build them with
//! [`bounded_unit_key`].

use std::collections::HashSet;

use sqlx::{PgConnection, PgPool};

use crate::error::Error;

/// Longest ledger unit key stored as it is. The ledger's key is a btree entry, which must stay
/// under ~2.7 kB; a queue message id or an object key can be longer.
pub const MAX_UNIT_KEY_BYTES: usize = 512;

/// A ledger unit key that fits the ledger: `key` itself when it is at most
/// [`MAX_UNIT_KEY_BYTES`] long, else its first 200 bytes (cut at a character boundary), `…#`,
/// and the SHA-256 of the whole key in hex. Distinct keys stay distinct, a redelivery maps to
/// the same key, and a person can still tell where the unit came from.
pub fn bounded_unit_key(key: String) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    if key.len() <= MAX_UNIT_KEY_BYTES {
        return key;
    }
    let mut cut = 200;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + 4 + 64);
    out.push_str(&key[..cut]);
    out.push_str("…#");
    for b in Sha256::digest(key.as_bytes()) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Claims `units` for `function` inside the caller's transaction; returns the ones claimed
/// now. The others were applied before (or by a transaction that committed while we waited).
pub async fn claim(
    conn: &mut PgConnection,
    function: &str,
    units: &[&str],
) -> Result<HashSet<String>, Error> {
    Ok(sqlx::query_scalar(
        "INSERT INTO ingest_ledger (unit, function)
         SELECT u, $2 FROM unnest($1::text[]) AS u
         ON CONFLICT (unit) DO NOTHING RETURNING unit",
    )
    .bind(units)
    .bind(function)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect())
}

/// Claims one unit; false when it was applied before.
pub async fn claim_one(conn: &mut PgConnection, function: &str, unit: &str) -> Result<bool, Error> {
    Ok(!claim(conn, function, &[unit]).await?.is_empty())
}

/// Whether `unit` has been applied (committed) already.
pub async fn applied(pool: &PgPool, unit: &str) -> Result<bool, Error> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM ingest_ledger WHERE unit = $1")
        .bind(unit)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// What one claimed unit produced, for its ledger row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts<'a> {
    pub unit: &'a str,
    /// The function that claimed it.
    pub function: &'a str,
    /// Events stored by this unit.
    pub loaded: u64,
    /// Valid events that were already stored.
    pub duplicates: u64,
    /// Pieces of input quarantined.
    pub quarantined: u64,
}

/// Records the counts of claimed units (in the transaction that claimed them), in one statement.
///
/// Every unit must have been claimed in this transaction (its insert branch never runs then).
/// An upsert on the ledger's key, not an `UPDATE … FROM unnest(…)`: each row is found through
/// the primary key whatever the statistics say. (The join was planned as a sequential scan of
/// the whole ledger while a young ledger's statistics were stale: 4.6 ms per load at 2,350
/// units in, and growing with the table.)
pub async fn settle(conn: &mut PgConnection, counts: &[Counts<'_>]) -> Result<(), Error> {
    if counts.is_empty() {
        return Ok(());
    }
    let n = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
    // One row per unit (the last counts given, as an `UPDATE` would leave): an upsert that
    // meets one key twice fails.
    let mut seen = std::collections::HashSet::new();
    let counts: Vec<&Counts> = counts
        .iter()
        .rev()
        .filter(|c| seen.insert(c.unit))
        .collect();
    let units: Vec<&str> = counts.iter().map(|c| c.unit).collect();
    let functions: Vec<&str> = counts.iter().map(|c| c.function).collect();
    let loaded: Vec<i32> = counts.iter().map(|c| n(c.loaded)).collect();
    let dups: Vec<i32> = counts.iter().map(|c| n(c.duplicates)).collect();
    let quarantined: Vec<i32> = counts.iter().map(|c| n(c.quarantined)).collect();
    sqlx::query(
        "INSERT INTO ingest_ledger AS l (unit, function, events, duplicates, quarantined)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int4[], $5::int4[])
         ON CONFLICT (unit) DO UPDATE SET events = excluded.events,
             duplicates = excluded.duplicates, quarantined = excluded.quarantined",
    )
    .bind(units)
    .bind(functions)
    .bind(loaded)
    .bind(dups)
    .bind(quarantined)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_unit_key_is_bounded_stable_and_still_distinct() {
        let short = "queue:0f1e2d3c".to_owned();
        assert_eq!(bounded_unit_key(short.clone()), short);
        let long = format!("queue:{}", "é".repeat(5000));
        let a = bounded_unit_key(long.clone());
        assert!(a.len() <= MAX_UNIT_KEY_BYTES, "{}", a.len());
        assert!(a.starts_with("queue:éé"), "recognisable");
        assert_eq!(
            a,
            bounded_unit_key(long.clone()),
            "a redelivery maps to the same key"
        );
        let other = format!("{long}x");
        assert_ne!(a, bounded_unit_key(other), "distinct keys stay distinct");
        let edge = "q".repeat(MAX_UNIT_KEY_BYTES);
        assert_eq!(bounded_unit_key(edge.clone()), edge);
        assert_ne!(bounded_unit_key(format!("{edge}q")), format!("{edge}q"));
    }
}
