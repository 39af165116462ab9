//! The schema can be placed on Citus as `ferry_shared::placement::TABLES` declares.
//!
//! CI has no Citus (scripts/test-citus.sh runs the suites on a real cluster, and
//! tests/it/citus.rs checks the placement itself there). What is checked here, against the
//! migrated catalog, is what `create_distributed_table` and friends need and what keeps the
//! coordinator's tables plain: each distributed table has `tenant_id` in its primary key and in
//! every unique index, its foreign keys point only at reference tables or at co-located tables
//! through `tenant_id`; no coordinator table references a reference table (that would make it
//! a Citus local table); and every table of the schema is placed, so the declaration cannot
//! fall behind a new migration.

use std::collections::BTreeSet;

use crate::harness::fresh_db;
use ferry_shared::placement::{Placement, TABLES};

/// The declared tables: (distributed by tenant_id, reference, on the coordinator).
fn declared() -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let of = |want: Placement| {
        TABLES
            .iter()
            .filter(|(_, p)| *p == want)
            .map(|(t, _)| t.to_string())
            .collect::<BTreeSet<_>>()
    };
    (
        of(Placement::Tenant),
        of(Placement::Reference),
        of(Placement::Coordinator),
    )
}

#[tokio::test]
async fn every_distributed_table_keys_and_references_by_tenant() {
    let (distributed, reference, local) = declared();
    assert!(distributed.contains("events") && distributed.contains("rollup_events"));
    let db = fresh_db().await;

    // Unique indexes (the primary key included) of each distributed table that lack tenant_id.
    let unique_without_tenant: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text
         FROM pg_index x
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = 'public' AND x.indisunique AND t.relname = ANY($1)
           AND NOT EXISTS (
               SELECT 1 FROM unnest(x.indkey) AS k(attnum)
               JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
               WHERE a.attname = 'tenant_id')
         ORDER BY 1, 2",
    )
    .bind(distributed.iter().cloned().collect::<Vec<_>>())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        unique_without_tenant.is_empty(),
        "unique indexes without tenant_id: {unique_without_tenant:?}"
    );

    // Every distributed table has a primary key (Citus needs one for upserts) on the parent:
    // partitions inherit it.
    let no_pk: Vec<String> = sqlx::query_scalar(
        "SELECT t FROM unnest($1::text[]) AS t
         WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c
                           WHERE c.conrelid = t::regclass AND c.contype = 'p')",
    )
    .bind(distributed.iter().cloned().collect::<Vec<_>>())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(no_pk.is_empty(), "no primary key: {no_pk:?}");

    // Foreign keys of distributed tables: to a reference table, or to a distributed table
    // through tenant_id on both sides.
    let fks: Vec<(String, String, Vec<String>, Vec<String>)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text,
                ARRAY(SELECT a.attname::text FROM unnest(c.conkey) k
                      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k),
                ARRAY(SELECT a.attname::text FROM unnest(c.confkey) k
                      JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k)
         FROM pg_constraint c
         WHERE c.contype = 'f' AND c.conrelid::regclass::text = ANY($1) AND c.conparentid = 0",
    )
    .bind(distributed.iter().cloned().collect::<Vec<_>>())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (table, target, from, to) in &fks {
        let ok = reference.contains(target)
            || (distributed.contains(target)
                && from
                    .iter()
                    .zip(to)
                    .any(|(f, t)| f == "tenant_id" && t == "tenant_id"));
        assert!(
            ok,
            "{table} → {target} ({from:?} → {to:?}): a distributed table may reference only \
             reference tables or co-located tables through tenant_id"
        );
    }

    // Coordinator tables: no foreign key to a reference table (Citus would turn the table
    // into a Citus local table) or to a distributed one (not allowed).
    let local_fks: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text
         FROM pg_constraint c
         WHERE c.contype = 'f' AND c.conrelid::regclass::text = ANY($1)
           AND NOT c.confrelid::regclass::text = ANY($1)",
    )
    .bind(local.iter().cloned().collect::<Vec<_>>())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        local_fks.is_empty(),
        "coordinator tables may reference only coordinator tables: {local_fks:?}"
    );

    // Every table of the schema (partitions and sqlx's bookkeeping aside) is declared once.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND c.relname <> '_sqlx_migrations'
         ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(tables.len() >= 20, "{tables:?}");
    let unplaced: Vec<&String> = tables
        .iter()
        .filter(|t| !distributed.contains(*t) && !reference.contains(*t) && !local.contains(*t))
        .collect();
    assert!(
        unplaced.is_empty(),
        "tables that ferry_shared::placement::TABLES does not place: {unplaced:?}"
    );
    assert_eq!(
        distributed.len() + reference.len() + local.len(),
        TABLES.len(),
        "a table is declared twice"
    );
    // And the declaration names no table that does not exist.
    for t in distributed.iter().chain(&reference).chain(&local) {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(t)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(
            exists,
            "placement declares {t}, which the migrations do not create"
        );
    }
}
