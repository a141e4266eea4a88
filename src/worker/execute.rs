//! Running one delivered task: ask the server first if it is a redelivery, run its attempts in
//! place with backoff (`backoff::task_retry`), and queue its final event. The task is acked
//! once that event is confirmed (`acks`); until then its `Hold` keeps it reported as held.

pub use super::delivered::Delivered;
use super::{
    acks::Finished,
    ask::Asks,
    cancels::Cancels,
    events::EventSink,
    redelivery::{Inquirer, Redelivery, Start},
    shutdown::Shutdown,
    tally::Tally,
};
use crate::{
    backoff,
    broker::delivery_count,
    protocol::{Event, LaneMessage, Progress},
    tasks::{panic_text, BlockingPool, Ctx, Permanent, Registry, TaskResult},
};
use chrono::Utc;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, info_span, warn, Instrument};
use uuid::Uuid;

/// Everything a task needs to run on this worker; shared by every lane and the default queue.
pub struct Runner {
    pub worker: String,
    pub registry: Arc<Registry>,
    pub events: EventSink,
    pub progress: mpsc::UnboundedSender<(Uuid, Progress)>,
    pub asks: Asks,
    pub shutdown: Shutdown,
    /// Bounds the tasks running at once over all lanes and the default queue.
    pub permits: Arc<Semaphore>,
    /// Where blocking handlers run (`Registry::register_blocking`).
    pub blocking: BlockingPool,
    /// The cancellations the server asked for.
    pub cancels: Cancels,
    /// The tasks whose attempts run in this session now, until their final event is confirmed.
    pub running: Tally<Uuid>,
    /// How long a task may stay frozen with this stopped worker (see `Ctx::with_stop_grace`).
    pub stop_grace: std::time::Duration,
    /// The tasks this session ran to their end (see `redelivery::EndedHere`).
    pub ended: super::redelivery::EndedHere,
}

/// How long a canceled handler may take to stop by itself before it is stopped.
const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// The largest result a task may return (as JSON): it travels in one event message and is
/// stored in one row. A larger one fails the job with the reason.
pub const MAX_RESULT_BYTES: usize = 2 << 20;

enum Outcome {
    Completed(serde_json::Value),
    Failed(String),
    /// Canceled by the server (`Control::Cancel`), before or while it ran.
    Canceled,
}

/// How a task's attempts here ended: with an outcome and the last attempt's number, or
/// abandoned (the worker let go of it).
enum Ran {
    Ended(Outcome, i32),
    Abandoned,
}

/// What became of a delivered task.
pub enum Executed {
    /// It ran to its end here: ack it once its final event is confirmed.
    Finished(Finished),
    /// It had ended already (a redelivery, acked), or its message did not parse
    /// (dead-lettered).
    Settled,
    /// The worker let go of it unfinished; the broker gives it to another when the channel
    /// closes.
    Abandoned,
}

/// How one attempt of a handler ended, as the runner saw it.
#[derive(Debug, Clone)]
enum AttemptEnd {
    Returned(serde_json::Value),
    Errored { error: String, permanent: bool },
    Panicked(String),
    Aborted(String),
    TimedOut { elapsed_ms: u128 },
}

/// What follows an attempt.
#[derive(Debug, PartialEq)]
enum Verdict {
    Complete(serde_json::Value),
    /// Failed for good: another attempt cannot mend it.
    Fail(String),
    /// Failed; another attempt follows.
    Retry(String),
    /// Failed, and it was the last attempt.
    GiveUp(String),
}

/// The verdict on an attempt that ended as `end`, with `attempts_left` after it.
fn verdict(end: AttemptEnd, attempts_left: i32) -> Verdict {
    let error = match end {
        AttemptEnd::Returned(value) => {
            let size = serde_json::to_vec(&value).map_or(0, |v| v.len());
            if size > MAX_RESULT_BYTES {
                return Verdict::Fail(format!(
                    "the task's result is {size} bytes, over the limit of \
                     {MAX_RESULT_BYTES}; keep large outputs elsewhere and return a reference"
                ));
            }
            return Verdict::Complete(value);
        }
        // Another attempt cannot mend it (args that do not parse, say).
        AttemptEnd::Errored {
            error,
            permanent: true,
        } => return Verdict::Fail(error),
        AttemptEnd::Errored { error, .. } => error,
        AttemptEnd::Panicked(text) => format!("task panicked: {text}"),
        AttemptEnd::Aborted(why) => format!("task aborted: {why}"),
        AttemptEnd::TimedOut { elapsed_ms } => format!("timed out after {elapsed_ms} ms"),
    };
    if attempts_left > 0 {
        Verdict::Retry(error)
    } else {
        Verdict::GiveUp(error)
    }
}

impl Runner {
    /// A slot in the pool; None once the worker drains.
    pub async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            biased;
            _ = self.shutdown.draining() => None,
            p = self.permits.clone().acquire_owned() => p.ok(),
        }
    }

    /// Puts tasks this worker hands back without having started them on record as such,
    /// before the broker has them back: their next holder then starts them as fresh ones.
    pub async fn hand_back(&self, jobs: Vec<Uuid>, lane: Option<String>) {
        if jobs.is_empty() && lane.is_none() {
            return;
        }
        let event = Event::HandedBack {
            worker: self.worker.clone(),
            jobs,
            lane,
        };
        if let Err(e) = self.events.emit_confirmed(event).await {
            warn!(error = %e, "tasks handed back unstarted are not on record as such");
        }
    }

    /// Runs one delivered task to its final event, retrying in place. `head`: no delivery of
    /// this subscription has got past the server's record yet (see `redelivery::Start`); the
    /// default queue, which has no order, passes true for each.
    pub async fn execute(
        &self,
        delivered: Delivered,
        permit: OwnedSemaphorePermit,
        head: &mut bool,
    ) -> Executed {
        let Delivered {
            delivery,
            task,
            early,
            ..
        } = delivered;
        let (msg, hold) = match task {
            Ok(task) => task,
            Err(e) => {
                warn!(error = %e, "dead-lettering a task message that does not parse");
                let _ = delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await;
                return Executed::Settled;
            }
        };
        let deliveries = delivery_count(&delivery.properties) as i32;
        let redelivered = deliveries > 0 || delivery.redelivered || msg.copy;
        let (prior, confirm_start) = if redelivered {
            let inquirer = Inquirer {
                asks: &self.asks,
                shutdown: &self.shutdown,
                worker: &self.worker,
                running: &self.running,
                ended: &self.ended,
            };
            match inquirer.ask_about(&msg, deliveries, early).await {
                Redelivery::Run {
                    prior,
                    on_record,
                    unstarted,
                } => {
                    let head = std::mem::take(head);
                    let start = Start::after(prior, on_record, unstarted, msg.copy, head);
                    if start.prior > prior {
                        info!(job = %msg.id, "its last holder stopped and may have been running it unrecorded; counting that attempt");
                    }
                    (start.prior, start.confirmed)
                }
                Redelivery::Abandoned => return Executed::Abandoned,
                Redelivery::Ended { state, waited } => {
                    // The run waited for was its previous holder's: none behind it started.
                    if waited {
                        *head = false;
                    }
                    info!(job = %msg.id, state = state.as_str(), "a redelivered task already ended; not running it again");
                    drop(permit);
                    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                        warn!(job = %msg.id, error = %e, "ack failed");
                    }
                    return Executed::Settled;
                }
            }
        } else {
            *head = false;
            (0, false)
        };
        // The mark lasts until the final event is confirmed: a copy redelivered meanwhile (its
        // channel closed as the run ended) waits for the record instead of running it again.
        let running = self.running.mark(msg.id);
        // A canceled task ends without running (a redelivery only once the server's answer
        // says no run of it goes on elsewhere).
        let outcome = if self.cancels.is_requested(&msg.id) {
            Ran::Ended(Outcome::Canceled, 0)
        } else {
            self.run_attempts(&msg, prior, confirm_start).await
        };
        // The pool bounds running tasks; waiting for the broker's confirm is not running.
        drop(permit);
        self.cancels.forget(&msg.id);
        let Ran::Ended(outcome, attempt) = outcome else {
            return Executed::Abandoned;
        };
        let (worker, job, at) = (self.worker.clone(), msg.id, Utc::now());
        let event = match outcome {
            Outcome::Completed(result) => Event::Completed {
                job,
                worker,
                result,
                attempt,
                at,
            },
            Outcome::Failed(error) => Event::Failed {
                job,
                worker,
                error,
                attempt,
                at,
            },
            Outcome::Canceled => {
                info!(%job, attempt, "task canceled");
                Event::Canceled {
                    job,
                    worker,
                    attempt,
                    at,
                }
            }
        };
        // The final event is queued behind everything the task published; the ack follows
        // the broker's confirm (see `acks`). Meanwhile the next task may start.
        Executed::Finished(Finished {
            hold,
            receipt: Box::pin({
                let (sent, ended) = (self.events.emit_final(event), self.ended.clone());
                async move {
                    let receipt = sent.await;
                    if receipt.is_ok() {
                        ended.note(job);
                    }
                    drop(running);
                    receipt
                }
            }),
            acker: delivery.acker,
        })
    }

    /// Runs the task's attempts in place, each judged by `verdict`. `prior` attempts already started elsewhere. With
    /// `confirm_start` (see `redelivery::Start`) the first attempt here, and every retry
    /// anyway, is on record (confirmed) before it runs: only a fresh first attempt can go
    /// unrecorded, which is what a redelivery counts on.
    async fn run_attempts(&self, msg: &LaneMessage, prior: i32, confirm_start: bool) -> Ran {
        let budget = msg.max_attempts - prior;
        if budget <= 0 {
            let why = format!(
                "gave up after {prior} attempts: the worker running this task stopped each time"
            );
            return Ran::Ended(Outcome::Failed(why), prior);
        }
        let mut delays = backoff::task_retry();
        let timeout = msg.timeout_ms.map(std::time::Duration::from_millis);
        let mut n = 0;
        loop {
            n += 1;
            let attempt = prior + n;
            if self.cancels.is_requested(&msg.id) {
                return Ran::Ended(Outcome::Canceled, attempt - 1);
            }
            let started = Event::Started {
                job: msg.id,
                worker: self.worker.clone(),
                attempt,
                at: Utc::now(),
            };
            if confirm_start || n > 1 {
                if let Err(e) = self.events.emit_confirmed(started).await {
                    warn!(job = %msg.id, error = %e, "start of an attempt not confirmed");
                }
            } else {
                self.events.emit(started);
            }
            let cancel = self.shutdown.task_cancel();
            let _registered = self.cancels.run(msg.id, cancel.clone());
            let ctx = Ctx::new(msg.id, attempt, self.progress.clone(), cancel.clone())
                .with_stop_grace(self.stop_grace)
                .with_blocking_pool(self.blocking.clone())
                .with_timeout(timeout);
            let Some(fut) = self.registry.call(&msg.task, ctx, msg.args.clone()) else {
                let why = format!(
                    "no handler for task `{}` on worker {}",
                    msg.task, self.worker
                );
                return Ran::Ended(Outcome::Failed(why), attempt);
            };
            // Everything the handler logs carries its job, task and attempt.
            let span = info_span!("task", job = %msg.id, task = %msg.task, attempt);
            let began = std::time::Instant::now();
            let mut handle = tokio::spawn(fut.instrument(span.clone()));
            let joined = tokio::select! {
                j = &mut handle => Some(j),
                _ = sleep_or_never(timeout) => None,
                _ = cancel.cancelled() => {
                    if self.cancels.is_requested(&msg.id) {
                        // Canceled by the server: a moment to stop by itself (a webhook tells
                        // its executor), then it is stopped.
                        if tokio::time::timeout(CANCEL_GRACE, &mut handle).await.is_err() {
                            stop(handle).await;
                        }
                        return Ran::Ended(Outcome::Canceled, attempt);
                    }
                    // Abandoned (connection lost or grace over): the broker gives the task to
                    // another worker, so it must stop here, not run beside its successor.
                    stop(handle).await;
                    return Ran::Abandoned;
                }
            };
            let elapsed = began.elapsed();
            let end = match joined {
                None => AttemptEnd::TimedOut {
                    elapsed_ms: elapsed.as_millis(),
                },
                Some(Ok(Ok(value))) => AttemptEnd::Returned(value),
                Some(Ok(Err(e))) => AttemptEnd::Errored {
                    permanent: e.downcast_ref::<Permanent>().is_some(),
                    error: e.to_string(),
                },
                Some(Err(e)) if e.is_panic() => AttemptEnd::Panicked(panic_text(e)),
                Some(Err(e)) => AttemptEnd::Aborted(e.to_string()),
            };
            let timed_out = matches!(end, AttemptEnd::TimedOut { .. });
            let kind = match &end {
                AttemptEnd::TimedOut { .. } => "timed_out",
                AttemptEnd::Returned(_) => "completed",
                _ => "failed",
            };
            super::metrics::attempt_ended(&msg.task, elapsed, kind);
            if timed_out {
                // Over its time: the handler is told (a blocking one sees `is_cancelled`) and
                // stopped; an `exec` program's process group is killed with it.
                cancel.cancel();
                stop(handle).await;
            }
            if self.cancels.is_requested(&msg.id) {
                // It ended, or timed out, as the cancel arrived.
                return Ran::Ended(Outcome::Canceled, attempt);
            }
            let what = if timed_out { "timed out" } else { "failed" };
            match verdict(end, budget - n) {
                Verdict::Complete(value) => {
                    span.in_scope(|| info!(?elapsed, "task completed"));
                    return Ran::Ended(Outcome::Completed(value), attempt);
                }
                Verdict::Fail(error) => {
                    span.in_scope(|| warn!(?elapsed, %error, permanent = true, "attempt {what}"));
                    return Ran::Ended(Outcome::Failed(error), attempt);
                }
                Verdict::Retry(error) => {
                    span.in_scope(|| warn!(?elapsed, %error, permanent = false, "attempt {what}"));
                    if !self.retry_after(msg, &mut delays).await {
                        return Ran::Abandoned;
                    }
                }
                Verdict::GiveUp(error) => {
                    span.in_scope(|| warn!(?elapsed, %error, permanent = false, "attempt {what}"));
                    if self.shutdown.is_abandoning() {
                        return Ran::Abandoned;
                    }
                    return Ran::Ended(Outcome::Failed(error), attempt);
                }
            }
        }
    }

    /// Waits before the next attempt; false when the task is abandoned.
    async fn retry_after(
        &self,
        msg: &LaneMessage,
        delays: &mut impl Iterator<Item = std::time::Duration>,
    ) -> bool {
        if self.shutdown.is_abandoning() {
            return false;
        }
        let delay = delays.next().unwrap_or(backoff::MAX_DELAY);
        debug!(job = %msg.id, ?delay, "retrying the task");
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.shutdown.abandoning() => false,
        }
    }
}

/// Stops a handler's task and waits until it has let go of what it held.
async fn stop(handle: tokio::task::JoinHandle<TaskResult>) {
    handle.abort();
    let _ = handle.await;
}

/// Sleeps for `limit`, or forever without one.
async fn sleep_or_never(limit: Option<std::time::Duration>) {
    match limit {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::{verdict, AttemptEnd, Verdict, MAX_RESULT_BYTES};
    use proptest::prelude::*;
    use serde_json::json;

    fn end() -> impl Strategy<Value = AttemptEnd> {
        prop_oneof![
            (0usize..4).prop_map(|n| AttemptEnd::Returned(json!("x".repeat(n)))),
            Just(AttemptEnd::Returned(json!("x".repeat(MAX_RESULT_BYTES)))),
            any::<bool>().prop_map(|permanent| AttemptEnd::Errored {
                error: "boom".into(),
                permanent
            }),
            Just(AttemptEnd::Panicked("oops".into())),
            Just(AttemptEnd::Aborted("gone".into())),
            (0u128..10_000).prop_map(|elapsed_ms| AttemptEnd::TimedOut { elapsed_ms }),
        ]
    }

    proptest! {
        /// A result within the limit completes; a permanent error or an oversized result fails
        /// at once; anything else is retried while attempts are left, then given up.
        #[test]
        fn an_attempt_is_retried_only_when_another_could_mend_it_and_one_is_left(
            end in end(),
            left in -1i32..4,
        ) {
            let oversized = matches!(&end, AttemptEnd::Returned(v) if v.as_str().is_some_and(|s| s.len() >= MAX_RESULT_BYTES));
            let returned = matches!(end, AttemptEnd::Returned(_));
            let permanent = matches!(end, AttemptEnd::Errored { permanent: true, .. });
            match verdict(end, left) {
                Verdict::Complete(_) => prop_assert!(returned && !oversized),
                Verdict::Fail(why) => {
                    prop_assert!(oversized || permanent);
                    prop_assert!(!why.is_empty());
                }
                Verdict::Retry(_) => prop_assert!(!returned && !permanent && left > 0),
                Verdict::GiveUp(_) => prop_assert!(!returned && !permanent && left <= 0),
            }
        }
    }

    #[test]
    fn a_failed_attempt_says_why() {
        let timed_out = verdict(AttemptEnd::TimedOut { elapsed_ms: 250 }, 1);
        assert_eq!(timed_out, Verdict::Retry("timed out after 250 ms".into()));
        let panicked = verdict(AttemptEnd::Panicked("oops".into()), 0);
        assert_eq!(panicked, Verdict::GiveUp("task panicked: oops".into()));
    }
}
