//! What to do with a redelivered task: the server's record decides (`ask`). It may have ended
//! already (ack it), be running on a live worker (wait for that run), or be free to run, with
//! the attempts it started before.

use super::{
    ask::{Asks, Record},
    delivered::Early,
    shutdown::Shutdown,
    tally::Tally,
};
use crate::{protocol::LaneMessage, store::JobState};
use std::time::Duration;
use tracing::info;
use uuid::Uuid;

/// How soon a redelivered task whose attempt runs elsewhere asks again: every 100 ms for the
/// first two seconds (a worker killed a moment ago is taken for dead once the broker has
/// deleted its control queue, which may come just after the first question; a question costs
/// the server one lookup), then once a second while a live worker's run goes on.
const RECHECK_SOON: Duration = Duration::from_millis(100);
const SOON_FOR: u32 = 20;
const RECHECK: Duration = Duration::from_secs(1);

/// What the server's record says to do with a redelivered task.
pub(super) enum Redelivery {
    /// It ended already: ack it, do not run it.
    Ended(JobState),
    /// Run it; `prior` attempts started before (`on_record`: as the server's record says).
    Run { prior: i32, on_record: bool },
    /// The worker is letting go of its tasks.
    Abandoned,
}

/// What asking about a redelivered task needs of the worker.
pub(super) struct Inquirer<'a> {
    pub asks: &'a Asks,
    pub shutdown: &'a Shutdown,
    /// This worker's id, as the server's record names the worker of a run.
    pub worker: &'a str,
    /// The tasks whose attempts run in this session now.
    pub running: &'a Tally<Uuid>,
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
                }) if state.is_final() => return Redelivery::Ended(state),
                Some(Record {
                    running_on: Some(runner),
                    ..
                }) if runner != self.worker || self.running.contains(&msg.id) => {
                    if !waiting {
                        info!(job = %msg.id, %runner, "a redelivered task is running on a live worker; waiting for it to end");
                        waiting = true;
                    }
                    let recheck = match rechecks < SOON_FOR {
                        true => RECHECK_SOON,
                        false => RECHECK,
                    };
                    rechecks += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(recheck) => {}
                        _ = self.shutdown.abandoning() => return Redelivery::Abandoned,
                    }
                }
                Some(Record { attempts, .. }) => {
                    return Redelivery::Run {
                        prior: attempts,
                        on_record: true,
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
                    }
                }
            }
        }
    }
}
