//! New databases on a Citus cluster, for the tests and benchmarks that make their own.
//!
//! Citus 12.1 does not create a database on the workers when the coordinator does (its
//! propagation of `CREATE DATABASE` is off by default and cannot use a template). So when the
//! maintenance database given is a Citus coordinator's (it has the extension and knows its
//! workers), [`create_database`] creates the database on every worker and on the coordinator,
//! with the extension, and registers the same nodes in it. Anywhere else it is a plain
//! `CREATE DATABASE`.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool};

/// Whether the database `admin_url` points at has the citus extension.
pub async fn is_citus(admin: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
        .fetch_one(admin)
        .await
}

/// Creates database `name` (from `template` on a plain server; Citus ignores it, see the
/// module docs). On Citus the new database has the extension on every node and the
/// coordinator's node list; it is not migrated.
pub async fn create_database(
    admin_url: &str,
    name: &str,
    template: Option<&str>,
) -> Result<(), sqlx::Error> {
    let admin = PgPool::connect(admin_url).await?;
    let citus = is_citus(&admin).await?;
    if !citus {
        let from = template
            .map(|t| format!(" TEMPLATE {t}"))
            .unwrap_or_default();
        sqlx::query(&format!("CREATE DATABASE {name}{from}"))
            .execute(&admin)
            .await?;
        admin.close().await;
        return Ok(());
    }
    // Activating nodes in a new database updates the workers' shared catalogs (roles), and two
    // databases activated at once fail ("tuple concurrently updated"): one at a time.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let (coordinator, workers) = nodes(&admin).await?;
    let base = PgConnectOptions::from_str(admin_url)?;
    let admin_db = base.get_database().unwrap_or("postgres").to_owned();
    for (host, port) in &workers {
        on_node(
            &base,
            host,
            *port,
            &admin_db,
            &format!("CREATE DATABASE {name}"),
        )
        .await?;
        on_node(&base, host, *port, name, "CREATE EXTENSION citus").await?;
    }
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    let db = PgPool::connect_with(base.clone().database(name)).await?;
    sqlx::query("CREATE EXTENSION citus").execute(&db).await?;
    if let Some((host, port)) = coordinator {
        sqlx::query("SELECT citus_set_coordinator_host($1, $2)")
            .bind(host)
            .bind(port)
            .execute(&db)
            .await?;
    }
    for (host, port) in &workers {
        sqlx::query("SELECT citus_add_node($1, $2)")
            .bind(host)
            .bind(port)
            .execute(&db)
            .await?;
    }
    db.close().await;
    Ok(())
}

/// Drops database `name` (forcing its sessions off) on the server of `admin_url`, and on
/// every worker when that is a Citus coordinator. Missing databases are skipped.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let admin = PgPool::connect(admin_url).await?;
    let workers = if is_citus(&admin).await? {
        nodes(&admin).await?.1
    } else {
        Vec::new()
    };
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(&drop).execute(&admin).await?;
    admin.close().await;
    let base = PgConnectOptions::from_str(admin_url)?;
    let admin_db = base.get_database().unwrap_or("postgres").to_owned();
    for (host, port) in &workers {
        on_node(&base, host, *port, &admin_db, &drop).await?;
    }
    Ok(())
}

/// The coordinator and the workers `(host, port)` a coordinator's database knows.
async fn nodes(admin: &PgPool) -> Result<(Option<(String, i32)>, Vec<(String, i32)>), sqlx::Error> {
    let rows: Vec<(String, i32, i32)> = sqlx::query_as(
        "SELECT nodename::text, nodeport, groupid FROM pg_dist_node
         WHERE noderole = 'primary' ORDER BY groupid",
    )
    .fetch_all(admin)
    .await?;
    let coordinator = rows.iter().find(|n| n.2 == 0).map(|n| (n.0.clone(), n.1));
    let workers = rows
        .into_iter()
        .filter(|n| n.2 != 0)
        .map(|(host, port, _)| (host, port))
        .collect();
    Ok((coordinator, workers))
}

/// Runs one statement in database `db` of the node at `host:port`, with `base`'s credentials.
async fn on_node(
    base: &PgConnectOptions,
    host: &str,
    port: i32,
    db: &str,
    sql: &str,
) -> Result<(), sqlx::Error> {
    let options = base
        .clone()
        .host(host)
        .port(u16::try_from(port).unwrap_or(5432))
        .database(db);
    let pool = PgPool::connect_with(options).await?;
    sqlx::query(sql).execute(&pool).await?;
    pool.close().await;
    Ok(())
}
