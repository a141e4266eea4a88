//! How a worker session ends, as named stages. Each stage implies the ones before it:
//!
//! 1. **draining**: take no new deliveries (SIGTERM, the server's `drain` order, or any later
//!    stage). Running tasks go on; lanes let go once their current task is settled.
//! 2. **abandoning**: stop running tasks too; their messages go back to the broker when their
//!    channels close (the grace period ran out, or the connection is lost).
//! 3. **lost**: the connection is broken; the session ends with an error and the worker
//!    reconnects under the same id.
//!
//! One value carries all three, so no part of the worker keeps a loose token of its own.

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The longest any one step of letting go (closing a channel or the connection, settling the
/// last acks) may take: a drain ends even if the broker stops answering.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Shutdown {
    draining: CancellationToken,
    abandoning: CancellationToken,
    lost: CancellationToken,
}

impl Shutdown {
    /// A session's stages; `requested` (the caller's shutdown) starts the drain.
    pub fn new(requested: &CancellationToken) -> Shutdown {
        Shutdown {
            draining: requested.child_token(),
            abandoning: CancellationToken::new(),
            lost: CancellationToken::new(),
        }
    }

    /// Stage 1: take no new tasks.
    pub fn drain(&self) {
        self.draining.cancel();
    }

    /// Stage 2: stop the running tasks as well.
    pub fn abandon(&self) {
        self.abandoning.cancel();
        self.drain();
    }

    /// Stage 3: the connection is gone.
    pub fn lose_connection(&self) {
        self.lost.cancel();
        self.abandon();
    }

    pub async fn draining(&self) {
        self.draining.cancelled().await
    }

    pub async fn abandoning(&self) {
        self.abandoning.cancelled().await
    }

    pub fn is_abandoning(&self) -> bool {
        self.abandoning.is_cancelled()
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// A token for one lane's loop: cancelled by the drain, or by itself when the lane is
    /// taken away.
    pub fn lane_stop(&self) -> CancellationToken {
        self.draining.child_token()
    }

    /// The token a task handler sees (`Ctx::cancelled`): cancelled when tasks are abandoned.
    pub fn task_cancel(&self) -> CancellationToken {
        self.abandoning.child_token()
    }
}

/// Runs a step of letting go, bounded by `CLOSE_TIMEOUT`; false (and a warning) if it took
/// longer and was given up.
pub async fn bounded<T>(what: &str, step: impl std::future::Future<Output = T>) -> bool {
    let done = tokio::time::timeout(CLOSE_TIMEOUT, step).await.is_ok();
    if !done {
        warn!(step = what, timeout = ?CLOSE_TIMEOUT, "gave up waiting for a shutdown step");
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_implies_the_ones_before() {
        let requested = CancellationToken::new();
        let s = Shutdown::new(&requested);
        let (lane, task) = (s.lane_stop(), s.task_cancel());
        assert!(!lane.is_cancelled() && !task.is_cancelled());
        s.lose_connection();
        assert!(lane.is_cancelled() && task.is_cancelled() && s.is_lost());

        let s = Shutdown::new(&requested);
        requested.cancel();
        assert!(s.lane_stop().is_cancelled());
        assert!(!s.is_abandoning() && !s.is_lost());
    }
}
