//! The leader lock: exactly one server per prefix runs the control plane. It is a Postgres
//! advisory lock held on a dedicated connection; standbys try again every half second.

use sqlx::{postgres::PgConnection, Connection};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The lock, held while this value lives (its connection holds it).
pub struct Leadership {
    conn: PgConnection,
}

impl Leadership {
    /// Waits until this server holds the leader lock, or shutdown (None).
    pub async fn acquire(url: &str, prefix: &str, shutdown: &CancellationToken) -> Option<Self> {
        let mut said = false;
        loop {
            match PgConnection::connect(url).await {
                Ok(mut conn) => {
                    // Postgres hashes the key, so every server build agrees on it (Rust's
                    // DefaultHasher may differ between compiler versions).
                    let got: Result<(bool,), _> = sqlx::query_as(
                        "SELECT pg_try_advisory_lock(hashtext('lanes-leader:' || $1))",
                    )
                    .bind(prefix)
                    .fetch_one(&mut conn)
                    .await;
                    match got {
                        Ok((true,)) => return Some(Leadership { conn }),
                        Ok((false,)) if !said => {
                            info!("standby: another server is active; waiting to take over");
                            said = true;
                        }
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "cannot take the leader lock"),
                    }
                    let _ = conn.close().await;
                }
                Err(e) => warn!(error = %e, "cannot reach PostgreSQL for the leader lock"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }

    /// Checks that the lock's connection is still alive (so the lock is still held).
    pub async fn check(&mut self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&mut self.conn)
            .await
            .map(drop)
    }

    /// Gives the lock up.
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}
