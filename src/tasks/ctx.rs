//! What a running task can see and do: its job and attempt, progress reports, cancellation,
//! and the pool that runs blocking work off the async runtime (`LANES_BLOCKING_THREADS`).

use super::TaskResult;
use crate::protocol::Progress;
use std::{sync::Arc, time::Duration};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a task stays frozen with its stopped worker before it is killed, by default.
/// The longest progress message kept, in bytes; a longer one is cut (at a character).
pub const MAX_PROGRESS_MESSAGE: usize = 4096;

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(2);

/// Runs blocking handlers on threads of their own, at most `threads` at once, so that they
/// never hold up the runtime that sends heartbeats and runs the async tasks.
#[derive(Clone, Debug)]
pub struct BlockingPool {
    permits: Arc<Semaphore>,
}

impl BlockingPool {
    pub fn new(threads: usize) -> BlockingPool {
        BlockingPool {
            permits: Arc::new(Semaphore::new(threads.max(1))),
        }
    }

    /// Runs `work` on a blocking thread once one of the pool's slots is free. The slot stays
    /// taken until `work` returns, even if the task was abandoned meanwhile (a thread cannot
    /// be stopped from outside; a handler should watch `Ctx::is_cancelled`).
    pub async fn run<F>(&self, work: F) -> TaskResult
    where
        F: FnOnce() -> TaskResult + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the blocking pool is closed")?;
        let joined = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            work()
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) if e.is_panic() => {
                Err(format!("task panicked: {}", super::panic_text(e)).into())
            }
            Err(e) => Err(format!("task aborted: {e}").into()),
        }
    }
}

/// What a running task can see and do.
#[derive(Clone)]
pub struct Ctx {
    job: Uuid,
    attempt: i32,
    progress: mpsc::UnboundedSender<(Uuid, Progress)>,
    cancel: CancellationToken,
    stop_grace: Duration,
    blocking: Option<BlockingPool>,
    timeout: Option<Duration>,
}

impl Ctx {
    pub fn new(
        job: Uuid,
        attempt: i32,
        progress: mpsc::UnboundedSender<(Uuid, Progress)>,
        cancel: CancellationToken,
    ) -> Self {
        Ctx {
            job,
            attempt,
            progress,
            cancel,
            stop_grace: DEFAULT_STOP_GRACE,
            blocking: None,
            timeout: None,
        }
    }

    /// How long the task may stay frozen with its stopped worker (SIGSTOP) before it is
    /// killed: past that the worker's lanes may already run elsewhere. The worker sets it to
    /// its `LANES_BROKER_SILENCE_MS`.
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// The pool blocking handlers run on (the worker's, sized by `LANES_BLOCKING_THREADS`).
    pub fn with_blocking_pool(mut self, pool: BlockingPool) -> Self {
        self.blocking = Some(pool);
        self
    }

    /// Runs blocking `work` on the worker's blocking pool (on a thread of its own without one).
    pub async fn run_blocking<F>(&self, work: F) -> TaskResult
    where
        F: FnOnce() -> TaskResult + Send + 'static,
    {
        match &self.blocking {
            Some(pool) => pool.run(work).await,
            None => BlockingPool::new(1).run(work).await,
        }
    }

    /// The bound on each attempt (`timeout_ms` of the submit), if any.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    pub fn stop_grace(&self) -> Duration {
        self.stop_grace
    }
    pub fn job_id(&self) -> Uuid {
        self.job
    }
    /// 1 for the first attempt.
    pub fn attempt(&self) -> i32 {
        self.attempt
    }
    /// Reports progress (0–100) with an optional message; it shows in the job's `progress`.
    pub fn progress(&self, percent: f32, message: Option<&str>) {
        let p = Progress {
            percent: percent.clamp(0.0, 100.0),
            message: message.map(|m| cut(m, MAX_PROGRESS_MESSAGE)),
        };
        let _ = self.progress.send((self.job, p));
    }
    /// Cancelled when the task should stop early (the worker is going away).
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }
    /// Whether the task should stop early; for blocking handlers, which cannot await.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn a_long_message_is_cut_at_a_character() {
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("abcdef", 3), "abc");
        // 'é' is two bytes: a cut inside it goes back to before it.
        assert_eq!(cut("aé", 2), "a");
    }
}
