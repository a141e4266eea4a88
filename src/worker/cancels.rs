//! The cancellations the server asked for (`Control::Cancel`), one owner for the set both the
//! control loop and the running tasks touch. A canceled task that has not started is skipped
//! when it is delivered; a running one has its attempt's token cancelled, so its handler sees
//! `ctx.cancelled()` and an `exec` program is killed. Either way the job ends `canceled`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Clone, Default)]
pub struct Cancels {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    requested: HashSet<Uuid>,
    /// The token of each running attempt.
    running: HashMap<Uuid, CancellationToken>,
}

impl Cancels {
    /// The server canceled these jobs.
    pub fn request(&self, jobs: &[Uuid]) {
        let mut inner = self.inner.lock().expect("cancels lock");
        for job in jobs {
            inner.requested.insert(*job);
            if let Some(token) = inner.running.get(job) {
                token.cancel();
            }
        }
    }

    pub fn is_requested(&self, job: &Uuid) -> bool {
        self.inner
            .lock()
            .expect("cancels lock")
            .requested
            .contains(job)
    }

    /// Registers a running attempt's token until the guard is dropped; cancels it at once if
    /// the job was canceled already.
    pub fn run(&self, job: Uuid, token: CancellationToken) -> Running {
        let mut inner = self.inner.lock().expect("cancels lock");
        if inner.requested.contains(&job) {
            token.cancel();
        }
        inner.running.insert(job, token);
        Running {
            job,
            cancels: self.clone(),
        }
    }

    /// The job's delivery here is settled: its request, if any, is no longer needed.
    pub fn forget(&self, job: &Uuid) {
        self.inner
            .lock()
            .expect("cancels lock")
            .requested
            .remove(job);
    }
}

/// A running attempt, registered until dropped.
pub struct Running {
    job: Uuid,
    cancels: Cancels,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut inner = self.cancels.inner.lock().expect("cancels lock");
        inner.running.remove(&self.job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_reaches_a_running_attempt_and_one_that_starts_later() {
        let cancels = Cancels::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let running = CancellationToken::new();
        let guard = cancels.run(a, running.clone());
        cancels.request(&[a, b]);
        assert!(running.is_cancelled());
        drop(guard);
        let later = CancellationToken::new();
        let _guard = cancels.run(b, later.clone());
        assert!(later.is_cancelled(), "canceled before it started");
        cancels.forget(&b);
        assert!(!cancels.is_requested(&b));
    }
}
