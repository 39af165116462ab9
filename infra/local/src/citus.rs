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
    // (host, port, group): the coordinator is group 0.
    let nodes: Vec<(String, i32, i32)> = sqlx::query_as(
        "SELECT nodename::text, nodeport, groupid FROM pg_dist_node
         WHERE noderole = 'primary' ORDER BY groupid",
    )
    .fetch_all(&admin)
    .await?;
    admin.close().await;
    let base = PgConnectOptions::from_str(admin_url)?;
    let at = |host: &str, port: i32, db: &str| {
        base.clone()
            .host(host)
            .port(u16::try_from(port).unwrap_or(5432))
            .database(db)
    };
    let admin_db = base.get_database().unwrap_or("postgres").to_owned();
    let (coordinator, workers): (Vec<_>, Vec<_>) = nodes.iter().partition(|n| n.2 == 0);
    for (host, port, _) in &workers {
        let w = PgPool::connect_with(at(host, *port, &admin_db)).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&w)
            .await?;
        w.close().await;
        let w = PgPool::connect_with(at(host, *port, name)).await?;
        sqlx::query("CREATE EXTENSION citus").execute(&w).await?;
        w.close().await;
    }
    let admin = PgPool::connect(admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    let db = PgPool::connect_with(base.clone().database(name)).await?;
    sqlx::query("CREATE EXTENSION citus").execute(&db).await?;
    if let Some((host, port, _)) = coordinator.first() {
        sqlx::query("SELECT citus_set_coordinator_host($1, $2)")
            .bind(host)
            .bind(port)
            .execute(&db)
            .await?;
    }
    for (host, port, _) in &workers {
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
    let workers: Vec<(String, i32)> = if is_citus(&admin).await? {
        sqlx::query_as(
            "SELECT nodename::text, nodeport FROM pg_dist_node
             WHERE noderole = 'primary' AND groupid <> 0 ORDER BY groupid",
        )
        .fetch_all(&admin)
        .await?
    } else {
        Vec::new()
    };
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(&drop).execute(&admin).await?;
    admin.close().await;
    let base = PgConnectOptions::from_str(admin_url)?;
    let admin_db = base.get_database().unwrap_or("postgres").to_owned();
    for (host, port) in workers {
        let w = PgPool::connect_with(
            base.clone()
                .host(&host)
                .port(u16::try_from(port).unwrap_or(5432))
                .database(&admin_db),
        )
        .await?;
        sqlx::query(&drop).execute(&w).await?;
        w.close().await;
    }
    Ok(())
}
