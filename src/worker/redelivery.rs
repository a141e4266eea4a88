//! What to do with a redelivered task: the server's record decides (`ask`). It may have ended
//! already (ack it), be running on a live worker (wait for that run), or be free to run, with
//! the attempts it started before; [`Start`] says how its first attempt here starts.

use super::{
    ask::{Asks, Record},
    delivered::Early,
    shutdown::Shutdown,
    tally::Tally,
};
use crate::{protocol::LaneMessage, store::JobState};
use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};
use tracing::info;
use uuid::Uuid;

/// How soon a redelivered task whose attempt runs elsewhere asks again: every 30 ms for the
/// first 300 ms, then every 100 ms up to two seconds (a worker killed a moment ago is taken
/// for dead once the broker has deleted its control queue, which may come just after the first
/// question; a question costs the server one lookup), then once a second while a live
/// worker's run goes on.
fn recheck_after(asked: u32) -> Duration {
    match asked {
        0..10 => Duration::from_millis(30),
        10..27 => Duration::from_millis(100),
        _ => RECHECK,
    }
}

const RECHECK: Duration = Duration::from_secs(1);

/// What the server's record says to do with a redelivered task.
pub(super) enum Redelivery {
    /// It ended already: ack it, do not run it. `waited`: it ended in a run this worker waited
    /// for (its previous holder's, still going when it was handed back).
    Ended { state: JobState, waited: bool },
    /// Run it; `prior` attempts started before (`on_record`: as the server's record says;
    /// `unstarted`: its last holder, a live worker, handed it back without starting it).
    Run {
        prior: i32,
        on_record: bool,
        unstarted: bool,
    },
    /// The worker is letting go of its tasks.
    Abandoned,
}

/// What asking about a redelivered task needs of the worker.
pub(super) struct Inquirer<'a> {
    pub asks: &'a Asks,
    pub shutdown: &'a Shutdown,
    /// This worker's id, as the server's record names the worker of a run.
    pub worker: &'a str,
    /// The tasks whose attempts run in this session now, until their final event is confirmed.
    pub running: &'a Tally<Uuid>,
    /// The tasks this session ran to their end.
    pub ended: &'a EndedHere,
}

/// The tasks this session ran to their end and whose final event the broker confirmed (the
/// latest `ENDED_KEPT`). The server's record of such a task may still say it runs here (the
/// event is durable, its write may lag): a copy redelivered here waits for the record rather
/// than take the run for lost.
#[derive(Clone, Default)]
pub struct EndedHere(Arc<Mutex<(HashSet<Uuid>, VecDeque<Uuid>)>>);

/// How many ended tasks a session remembers.
const ENDED_KEPT: usize = 4096;

impl EndedHere {
    pub fn note(&self, job: Uuid) {
        let mut kept = self.0.lock().expect("ended lock");
        let (set, order) = &mut *kept;
        if set.insert(job) {
            order.push_back(job);
        }
        while order.len() > ENDED_KEPT {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }

    pub fn contains(&self, job: &Uuid) -> bool {
        self.0.lock().expect("ended lock").0.contains(job)
    }
}

impl Inquirer<'_> {
    /// Asks the server about a redelivered task until its answer settles what to do. While a
    /// live worker runs the task (this one included: the broker hands a running task back when
    /// its channel closes, on a consumer timeout say), it waits for that run to end.
    /// `early`: the answer to a question asked when the task arrived, used first (a `None`
    /// in it is asked again).
    pub(super) async fn ask_about(
        &self,
        msg: &LaneMessage,
        deliveries: i32,
        early: Option<Early>,
    ) -> Redelivery {
        let mut waiting = false;
        let mut rechecks = 0;
        let mut early = early;
        loop {
            let asked = async {
                match early.take() {
                    Some(early) => match early.answer().await {
                        Some(answer) => Some(answer),
                        None => self.asks.ask(msg.id).await,
                    },
                    None => self.asks.ask(msg.id).await,
                }
            };
            let answer = tokio::select! {
                answer = asked => answer,
                _ = self.shutdown.abandoning() => return Redelivery::Abandoned,
            };
            match answer {
                Some(Record {
                    state: Some(state), ..
                }) if state.is_final() => {
                    return Redelivery::Ended {
                        state,
                        waited: waiting,
                    }
                }
                Some(Record {
                    running_on: Some(runner),
                    ..
                }) if runner != self.worker
                    || self.running.contains(&msg.id)
                    || self.ended.contains(&msg.id) =>
                {
                    if !waiting {
                        info!(job = %msg.id, %runner, "a redelivered task is running on a live worker; waiting for it to end");
                        waiting = true;
                    }
                    let recheck = recheck_after(rechecks);
                    rechecks += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(recheck) => {}
                        _ = self.shutdown.abandoning() => return Redelivery::Abandoned,
                    }
                }
                Some(Record {
                    attempts,
                    unstarted,
                    ..
                }) => {
                    return Redelivery::Run {
                        prior: attempts,
                        on_record: true,
                        unstarted,
                    }
                }
                // A copy never runs on a guess: its first message may have run already (and
                // the delivery count of a copy says nothing). Nor does a task that was waiting
                // for a live run (no answer: the control plane may be failing over). Both ask
                // until the server answers.
                None if msg.copy || waiting => {}
                None => {
                    return Redelivery::Run {
                        prior: deliveries,
                        on_record: false,
                        unstarted: false,
                    }
                }
            }
        }
    }
}

/// How a redelivered task's first attempt here starts.
///
/// Only a fresh delivery's first attempt publishes `started` without waiting for its confirm
/// (a round trip per task would slow every lane); every other start is on record before it
/// runs. So a run can go unrecorded only as a first attempt whose worker died at once, and
/// only the task that worker was running then can have had one: in a lane, the first
/// redelivered task that has not ended (a lane runs its tasks in order, the ones behind were
/// prefetched); in the default queue (no order), any. Such a task (the `head`), with no
/// attempt on record, counts one as started, so that a task that kills its worker at once
/// runs exactly `max_attempts` times. A task a live worker handed back unstarted starts as a
/// fresh one does. A copy is never counted so: its own starts are always confirmed, and a run
/// of its first message is counted when that message comes back (ahead of it, in its lane).
#[derive(Debug, PartialEq)]
pub(super) struct Start {
    /// Attempts counted before this one.
    pub prior: i32,
    /// Its `started` must be on record (confirmed) before it runs.
    pub confirmed: bool,
}

impl Start {
    /// For `Redelivery::Run { prior, on_record, unstarted }` of a `copy` or not, at the `head`.
    pub(super) fn after(
        prior: i32,
        on_record: bool,
        unstarted: bool,
        copy: bool,
        head: bool,
    ) -> Start {
        if !on_record || copy || prior > 0 {
            // A guess from the delivery count, a copy, or a task that ran before.
            return Start {
                prior,
                confirmed: true,
            };
        }
        if unstarted {
            return Start {
                prior: 0,
                confirmed: false,
            };
        }
        // The head may have run once at its previous holder, unrecorded.
        Start {
            prior: i32::from(head),
            confirmed: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Start;

    fn start(prior: i32, confirmed: bool) -> Start {
        Start { prior, confirmed }
    }

    #[test]
    fn only_the_task_its_last_holder_may_have_been_running_counts_a_lost_start() {
        // The first task of a lane whose worker died, nothing on record: maybe it ran.
        assert_eq!(Start::after(0, true, false, false, true), start(1, true));
        // Behind it, prefetched: never started there, but not known to a live worker either.
        assert_eq!(Start::after(0, true, false, false, false), start(0, true));
        // Handed back unstarted by a live worker (it let go of the lane): as a fresh one.
        assert_eq!(Start::after(0, true, true, false, true), start(0, false));
        // Ran before, with its start on record: counted already.
        assert_eq!(Start::after(2, true, false, false, true), start(2, true));
        assert_eq!(Start::after(2, true, true, false, true), start(2, true));
        // A copy's starts are always confirmed; its first message's run counts where it comes back.
        assert_eq!(Start::after(0, true, false, true, true), start(0, true));
        // No answer: the delivery count stands in.
        assert_eq!(Start::after(3, false, false, false, true), start(3, true));
    }
}
