//! Opening the store: the connections' options, creating the database when it is missing,
//! the pool (and how it treats connections a restart may have broken), and the migrations.
//! Apart from the statements, as it runs once at start.

use super::{sql::PLANNER, Result, Store, StoreError};
use crate::config::redact;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection,
};
use std::str::FromStr;

/// Connections idle longer than this are pinged before use.
pub const PING_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

impl Store {
    /// Connects, creating the database if it does not exist, and runs the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let opts = connect_options(url)?;
        create_database_if_missing(url, &opts).await?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // A ping before every statement would cost a round trip each; a connection idle
            // for a while (as across a database restart) is pinged, and a statement that
            // still meets a broken one is retried where that is safe (`retrying`).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact(url),
                source,
            })?;
        sqlx::migrate!().run(&pool).await?;
        Ok(Store { pool, fence: None })
    }
}

/// The options of the store's connections: the URL's, with the planner settings the batch
/// statements rely on (`sql::PLANNER`).
pub fn connect_options(url: &str) -> Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)
        .map_err(StoreError::BadUrl)?
        .options(PLANNER))
}

async fn create_database_if_missing(url: &str, opts: &PgConnectOptions) -> Result<()> {
    let Some(name) = opts.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let admin = opts.clone().database("postgres");
    let mut conn = admin
        .connect()
        .await
        .map_err(|source| StoreError::Connect {
            url: redact(url),
            source,
        })?;
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it at the same time: `duplicate_database`, or the
            // unique index of `pg_database` when both passed the check above together.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    conn.close().await?;
    Ok(())
}
