//! The schema can be distributed on Citus exactly as the README's scale-out section says.
//!
//! No Citus package is reachable from this machine, so `create_distributed_table` itself cannot
//! run here. What can be checked is its precondition, against the migrated catalog: each table
//! the README distributes by `tenant_id` has that column in its primary key and in every unique
//! index (Citus refuses a table otherwise), and its foreign keys point only at reference tables
//! or at co-located tables through `tenant_id`. And every table holding a `tenant_id` is named
//! in that section, so the README cannot fall behind a new migration.

use std::collections::BTreeSet;

use ferry_tests::fresh_db;

/// The table names in the README's scale-out SQL: (distributed by tenant_id, reference, local).
fn readme_tables() -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("### Schema and scale-out")
        .nth(1)
        .expect("the README has a scale-out section");
    let sql = section
        .split("```sql")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the scale-out section has an SQL block");
    let quoted = |line: &str| line.split('\'').nth(1).map(str::to_owned);
    let mut distributed = BTreeSet::new();
    let mut reference = BTreeSet::new();
    let mut local = BTreeSet::new();
    for line in sql.lines() {
        if line.contains("create_distributed_table(") {
            assert!(
                line.contains("'tenant_id'"),
                "every table is distributed by tenant_id: {line}"
            );
            distributed.extend(quoted(line));
        } else if line.contains("create_reference_table(") {
            reference.extend(quoted(line));
        } else if let Some(comment) = line.trim().strip_prefix("-- local:") {
            local.extend(
                comment
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty()),
            );
        }
    }
    (distributed, reference, local)
}

#[tokio::test]
async fn every_distributed_table_keys_and_references_by_tenant() {
    let (distributed, reference, local) = readme_tables();
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

    // Every table with a tenant_id column (partitions aside) is placed by the README.
    let with_tenant: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
         ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(with_tenant.len() >= 10, "{with_tenant:?}");
    let unplaced: Vec<&String> = with_tenant
        .iter()
        .filter(|t| !distributed.contains(*t) && !reference.contains(*t) && !local.contains(*t))
        .collect();
    assert!(
        unplaced.is_empty(),
        "tables with tenant_id that the README's scale-out section does not place: {unplaced:?}"
    );
    // And the README names no table that does not exist.
    for t in distributed.iter().chain(&reference).chain(&local) {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(t)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(
            exists,
            "the README names {t}, which the migrations do not create"
        );
    }
}
