//! The leader lease in the `leases` table: taken by a standby once the holder's has expired,
//! or at once when the holder's session is gone (its process died and the database closed
//! its connection); the epoch goes up each time. The holder renews it on that one dedicated
//! connection and gives it up on shutdown. Time is the database's (`now()`), so every server
//! judges expiry by the same clock.

use super::Result;
use sqlx::PgConnection;
use std::time::Duration;

/// A control plane's claim: its writes fail once another epoch holds the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub prefix: String,
    pub epoch: i64,
}

/// The lease statements, on the holder's dedicated connection (its session is what a standby
/// checks for).
pub struct LeaseConn(pub PgConnection);

impl LeaseConn {
    /// Takes the lease of `prefix` for `ttl` if nobody holds it, it has expired, or its
    /// holder's session is gone; returns the new epoch, or None while another holds it.
    pub async fn take(&mut self, prefix: &str, holder: &str, ttl: Duration) -> Result<Option<i64>> {
        let epoch: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO leases (prefix, holder, epoch, expires_at, backend_pid)
             VALUES ($1, $2, 1, now() + $3 * interval '1 millisecond', pg_backend_pid())
             ON CONFLICT (prefix) DO UPDATE
                SET holder = EXCLUDED.holder, epoch = leases.epoch + 1,
                    expires_at = EXCLUDED.expires_at, backend_pid = EXCLUDED.backend_pid
                WHERE leases.expires_at < now()
                   OR NOT EXISTS (SELECT 1 FROM pg_stat_activity
                                  WHERE pid = leases.backend_pid)
             RETURNING epoch",
        )
        .bind(prefix)
        .bind(holder)
        .bind(ttl.as_millis() as f64)
        .fetch_optional(&mut self.0)
        .await?;
        Ok(epoch.map(|(e,)| e))
    }

    /// Extends the lease by `ttl`; false when `lease` no longer holds it.
    pub async fn renew(&mut self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let renewed = sqlx::query(
            "UPDATE leases SET expires_at = now() + $3 * interval '1 millisecond'
             WHERE prefix = $1 AND epoch = $2",
        )
        .bind(&lease.prefix)
        .bind(lease.epoch)
        .bind(ttl.as_millis() as f64)
        .execute(&mut self.0)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Lets the lease expire now, so a standby takes over at once.
    pub async fn release(&mut self, lease: &Lease) -> Result<()> {
        sqlx::query("UPDATE leases SET expires_at = now() WHERE prefix = $1 AND epoch = $2")
            .bind(&lease.prefix)
            .bind(lease.epoch)
            .execute(&mut self.0)
            .await?;
        Ok(())
    }
}
