//! Leadership: exactly one server per prefix runs the control plane. It holds a lease in the
//! database (`store::lease`) with a deadline, renewed every fifth of it on a connection of its
//! own; a standby takes the lease once it has expired, or at once when that connection's
//! session is gone (the holder died), with a higher epoch. A holder that cannot renew in time steps
//! down before the lease can pass to another, and a holder that was stopped (SIGSTOP, a long
//! pause) finds its epoch gone when it wakes: its inserts fail on the epoch and the new
//! leader has closed its broker connections (`fence`).

use super::Active;
use crate::store::{Lease, LeaseConn, Store};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("another server took the lease (epoch {0} is over)")]
    Lost(i64),
    #[error("could not renew the lease for {0:?}; stepping down before it can expire")]
    Unrenewed(Duration),
    #[error("the lease's connection failed ({0}); stepping down, a standby may take over at once")]
    Broken(String),
}

/// The lease, held while this value lives and is renewed.
pub struct Leadership {
    conn: LeaseConn,
    lease: Lease,
    ttl: Duration,
    renewed: Instant,
}

impl Leadership {
    /// Waits until this server holds the lease of `prefix`, or shutdown (None). Meanwhile
    /// `active` says whether another server holds it (this one is a standby).
    pub async fn acquire(
        store: &Store,
        prefix: &str,
        holder: &str,
        ttl: Duration,
        active: &Active,
        shutdown: &CancellationToken,
    ) -> Option<Self> {
        let mut said = false;
        let mut conn: Option<LeaseConn> = None;
        loop {
            let taken = match conn.as_mut() {
                Some(c) => c.take(prefix, holder, ttl).await,
                None => match store.lease_conn().await {
                    Ok(c) => {
                        conn = Some(c);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match taken {
                Ok(Some(epoch)) => {
                    active.set_standby(false);
                    return Some(Leadership {
                        conn: conn.expect("the lease was taken on it"),
                        lease: Lease {
                            prefix: prefix.to_owned(),
                            epoch,
                        },
                        ttl,
                        renewed: Instant::now(),
                    });
                }
                Ok(None) => {
                    if !said {
                        info!("standby: another server is active; waiting to take over");
                        said = true;
                    }
                    active.set_standby(true);
                }
                Err(e) => {
                    warn!(error = %e, "cannot reach PostgreSQL for the leader lease");
                    conn = None;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// How often to call `renew`.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 5
    }

    /// Renews the lease. Fails when another server holds it; when the lease's connection
    /// fails (its session may be gone, and then a standby takes the lease at once); or when
    /// renewals have been slow for three fifths of its length (the database is stalled): the
    /// lease may pass to another server two fifths later, so this one stops acting first.
    pub async fn renew(&mut self) -> Result<(), LeaderError> {
        let every = self.renew_every();
        let renewal = self.conn.renew(&self.lease, self.ttl);
        match tokio::time::timeout(every, renewal).await {
            Ok(Ok(true)) => {
                self.renewed = Instant::now();
                return Ok(());
            }
            Ok(Ok(false)) => return Err(LeaderError::Lost(self.lease.epoch)),
            Ok(Err(e)) => return Err(LeaderError::Broken(e.to_string())),
            Err(_) => warn!("renewing the leader lease is taking long"),
        }
        let since = self.renewed.elapsed();
        if since > self.ttl * 3 / 5 {
            return Err(LeaderError::Unrenewed(since));
        }
        Ok(())
    }

    /// Gives the lease up, so a standby takes over at once. Bounded: a database that stays
    /// silent (a partition) would otherwise hold up this server's next steps; the lease then
    /// expires by itself.
    pub async fn release(mut self) {
        let every = self.renew_every();
        match tokio::time::timeout(every, self.conn.release(&self.lease)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "could not give the lease up; it expires by itself"),
            Err(_) => warn!("giving the lease up is taking long; it expires by itself"),
        }
    }
}
