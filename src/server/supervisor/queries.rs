//! What the rest of the control plane asks the Supervisor: the registry for the API, who holds
//! which tasks for reconciliation and for the Callback's answers, and a worker's drain.

use super::{registry::WorkerView, Supervisor};
use crate::{
    broker::exclusive_queue_gone,
    protocol::Control,
    server::assignment::{Assignment, Place},
};
use actix::prelude::*;
use futures::future::join_all;
use lapin::Connection;
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    time::Duration,
};
use tracing::warn;
use uuid::Uuid;

/// Asks for the registry, for `GET /workers`.
#[derive(Message)]
#[rtype(result = "Vec<WorkerView>")]
pub struct ListWorkers;

/// Asks a worker to drain. Answers whether the worker is known.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct DrainWorker(pub String);

/// Asks which tasks the live workers hold (delivered, not yet acked), for reconciliation.
#[derive(Message)]
#[rtype(result = "std::collections::HashSet<Uuid>")]
pub struct GetHeld;

impl Handler<GetHeld> for Supervisor {
    type Result = MessageResult<GetHeld>;
    fn handle(&mut self, _: GetHeld, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.workers
                .values()
                .flat_map(|e| e.running.iter().copied())
                .collect(),
        )
    }
}

/// Asks who owns each lane, for `GET /queues`.
#[derive(Message)]
#[rtype(result = "Assignment")]
pub struct GetAssignment;

impl Handler<ListWorkers> for Supervisor {
    type Result = MessageResult<ListWorkers>;
    fn handle(&mut self, _: ListWorkers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.workers
                .iter()
                .map(|(id, e)| e.view(id, self.assigned_lanes(id), self.standby_lanes(id)))
                .collect(),
        )
    }
}

impl Handler<DrainWorker> for Supervisor {
    type Result = bool;
    fn handle(&mut self, msg: DrainWorker, _: &mut Context<Self>) -> bool {
        let Some(entry) = self.workers.get_mut(&msg.0) else {
            return false;
        };
        entry.draining = true;
        self.send_control(&msg.0, Control::Drain);
        self.rebalance();
        true
    }
}

impl Handler<GetAssignment> for Supervisor {
    type Result = MessageResult<GetAssignment>;
    fn handle(&mut self, _: GetAssignment, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.assignment.clone())
    }
}

/// Which of these (job, worker) pairs are runs going on now: the worker is alive and its
/// latest heartbeat lists the job among the tasks it holds. A worker that reconnected (same
/// id, new session) lists none of the tasks it abandoned. A worker killed a moment ago is still
/// in the registry until its heartbeat timeout, so before a run counts as going on the broker
/// is asked whether its worker's control queue still exists: a worker whose queue is gone is
/// dead at once (`Supervisor::connection_gone`).
#[derive(Message)]
#[rtype(result = "HashSet<Uuid>")]
pub struct HeldBy(pub Vec<(Uuid, String)>);

/// How long the broker may take to say whether a control queue exists; without an answer its
/// worker counts as alive (the asker asks again).
const CHECK_TIMEOUT: Duration = Duration::from_millis(250);

impl Handler<HeldBy> for Supervisor {
    type Result = ResponseActFuture<Self, HashSet<Uuid>>;
    fn handle(&mut self, msg: HeldBy, _: &mut Context<Self>) -> Self::Result {
        let runs: Vec<(Uuid, String)> = msg
            .0
            .into_iter()
            .filter(|(job, w)| self.may_run(job, w))
            .collect();
        let queues: BTreeMap<String, String> = runs
            .iter()
            .filter_map(|(_, w)| Some((w.clone(), self.workers.get(w)?.control.clone()?)))
            .collect();
        let checks = control_queues_gone(self.conn.clone(), queues);
        // Spawned, not waited for (a `ResponseActFuture`): heartbeats and sweeps go on
        // meanwhile, so the registry is read again once the broker has answered.
        Box::pin(checks.into_actor(self).map(move |checked, act, ctx| {
            let mut dead = HashSet::new();
            let mut places = BTreeSet::new();
            for (worker, queue, gone) in checked {
                let place = act.place_of(&worker);
                if gone && act.connection_gone(&worker, &queue) {
                    dead.insert(worker);
                    places.extend(place);
                }
            }
            act.check_places(places, ctx);
            runs.into_iter()
                .filter(|(job, w)| !dead.contains(w) && act.may_run(job, w))
                .map(|(job, _)| job)
                .collect::<HashSet<Uuid>>()
        }))
    }
}

impl Supervisor {
    /// Whether `worker` may be running `job` now, as far as the registry knows.
    fn may_run(&self, job: &Uuid, worker: &str) -> bool {
        match self.workers.get(worker) {
            Some(e) => e.running.contains(job),
            // Not heard from yet, by a Supervisor younger than the heartbeat timeout: it may
            // well be alive and running it, unless this Supervisor removed it as dead.
            None => self.born.elapsed() < self.timeout && !self.departed.contains(worker),
        }
    }

    /// Workers found dead at `places` usually did not die alone: a process of many workers
    /// (`lanes worker --workers`) dies whole. The others there are asked after at once, as
    /// the one found was, instead of at their heartbeat timeout; those whose connection is
    /// gone leave together, with one rebalance, so that the lanes they owned or stood by for
    /// (some of them both) get live workers now.
    fn check_places(&mut self, places: BTreeSet<Place>, ctx: &mut Context<Self>) {
        let suspects: Vec<(String, String)> = self
            .workers
            .iter()
            .filter(|(w, _)| self.place_of(w).is_some_and(|p| places.contains(&p)))
            .filter_map(|(w, e)| Some((w.clone(), e.control.clone()?)))
            .collect();
        if suspects.is_empty() {
            return;
        }
        let checks = control_queues_gone(self.conn.clone(), suspects);
        ctx.spawn(checks.into_actor(self).map(|checked, act, _| {
            let why = "its connection is gone, as its process's";
            let mut left = 0;
            for (worker, queue, gone) in checked {
                if gone && act.session_ended(&worker, &queue, why) {
                    left += 1;
                }
            }
            if left > 0 {
                act.rebalance();
            }
        }));
    }
}

/// Each `(worker, control queue)` with whether the broker has deleted the queue, all asked at
/// once (see `control_queue_gone`).
fn control_queues_gone(
    conn: std::sync::Arc<Connection>,
    queues: impl IntoIterator<Item = (String, String)>,
) -> impl std::future::Future<Output = Vec<(String, String, bool)>> {
    join_all(queues.into_iter().map(move |(worker, queue)| {
        let conn = conn.clone();
        async move {
            let gone = control_queue_gone(&conn, &queue).await;
            (worker, queue, gone)
        }
    }))
}

/// Whether the broker has deleted a worker's control queue, as it does when the worker's
/// connection closes. No answer, or not a clear one, counts as alive: waiting for a run that
/// ended costs the asker another question, taking a live run for dead runs the task twice.
async fn control_queue_gone(conn: &Connection, queue: &str) -> bool {
    match tokio::time::timeout(CHECK_TIMEOUT, exclusive_queue_gone(conn, queue)).await {
        Ok(Ok(gone)) => gone,
        Ok(Err(e)) => {
            warn!(%queue, error = %e, "could not check a worker's control queue");
            false
        }
        Err(_) => {
            warn!(%queue, timeout = ?CHECK_TIMEOUT, "no answer about a worker's control queue");
            false
        }
    }
}
