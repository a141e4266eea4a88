//! Retention: finished jobs older than `LANES_RETENTION` are deleted, a thousand at a time with
//! a pause between batches, oldest first. The batches walk the `seq` index from the oldest row
//! and skip rows another statement has locked, so nothing on the hot path waits for them (the
//! hot path never touches a finished job anyway). The record of dead letters goes with them.
//! Only the active control plane prunes.

use crate::store::Store;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Rows deleted by one statement.
const BATCH: i64 = 1000;
/// The pause between two batches, so that other statements interleave.
const PAUSE: Duration = Duration::from_millis(50);

/// Prunes now and then every `every`, until `stop`.
pub async fn run(store: Store, keep: Duration, every: Duration, stop: CancellationToken) {
    loop {
        let mut pruned = 0u64;
        loop {
            match store.prune_finished(keep, BATCH).await {
                Ok(n) => {
                    pruned += n;
                    metrics::counter!("lanes_jobs_pruned_total").increment(n);
                    if n < BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "could not prune finished jobs; trying again later");
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PAUSE) => {}
                _ = stop.cancelled() => return,
            }
        }
        if pruned > 0 {
            info!(pruned, older_than = ?keep, "pruned finished jobs");
        }
        // The record of dead letters is kept as long (a small table: one statement).
        if let Err(e) = store.prune_dead(keep).await {
            warn!(error = %e, "could not prune the record of dead letters");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}
