//! What the rest of the control plane asks the Supervisor: the registry for the API, who holds
//! which tasks for reconciliation and for the Callback's answers, and a worker's drain.

use super::{registry::WorkerView, Supervisor};
use crate::{protocol::Control, server::assignment::Assignment};
use actix::prelude::*;
use std::collections::HashSet;
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
/// id, new session) lists none of the tasks it abandoned.
#[derive(Message)]
#[rtype(result = "HashSet<Uuid>")]
pub struct HeldBy(pub Vec<(Uuid, String)>);

impl Handler<HeldBy> for Supervisor {
    type Result = MessageResult<HeldBy>;
    fn handle(&mut self, msg: HeldBy, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            msg.0
                .into_iter()
                .filter(|(job, w)| match self.workers.get(w) {
                    Some(e) => e.running.contains(job),
                    // Not heard from yet, by a Supervisor younger than the heartbeat timeout:
                    // it may well be alive and running it.
                    None => self.born.elapsed() < self.timeout,
                })
                .map(|(job, _)| job)
                .collect(),
        )
    }
}
