//! What the Callback sends back: answers to workers' questions about redelivered tasks, and
//! each ended job's outcome to the `reply_to` its submitter named.

use super::CallbackError;
use crate::server::supervisor::{HeldBy, Supervisor};
use crate::{
    broker::{json_properties, Outgoing, Publisher, Topology},
    protocol::Control,
    store::{Finished, JobState, Store},
};
use actix::Addr;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use tracing::warn;
use uuid::Uuid;

/// Tells workers what is recorded for the tasks redelivered to them, and whether a live worker
/// that holds the task runs it now (the broker hands a task back when a channel closes under a running task,
/// e.g. on its consumer timeout). A lost answer only makes the worker ask again or fall back to
/// the broker's delivery count, so these are not confirmed. `unstarted`: the jobs a live worker
/// handed back without starting them. Returns the jobs the answers say have ended (their
/// reservations can go, whoever ended them).
/// What live workers said they handed back unstarted: jobs by name, and lanes let go of with
/// nothing unsettled (consumed by the first question about an unfinished task of the lane).
pub struct HandedBack {
    pub jobs: HashSet<Uuid>,
    pub lanes: std::sync::Arc<std::sync::Mutex<HashSet<String>>>,
}

pub async fn answer(
    store: &Store,
    publisher: &Publisher,
    topo: &Topology,
    supervisor: &Addr<Supervisor>,
    asks: Vec<(Uuid, String)>,
    handed: HandedBack,
) -> Result<Vec<Uuid>, CallbackError> {
    let ids: Vec<Uuid> = asks.iter().map(|(id, _)| *id).collect();
    let rows = store.records(&ids).await?;
    let queues: HashMap<Uuid, Option<String>> = rows
        .iter()
        .map(|(id, state, _, _, queue)| (*id, queue.clone().filter(|_| !state.is_final())))
        .collect();
    let records: HashMap<Uuid, Recorded> = rows
        .into_iter()
        .map(|(id, state, attempts, worker, _)| (id, (state, attempts, worker)))
        .collect();
    let mut unstarted = handed.jobs;
    {
        // The first unfinished task of a lane let go of cleanly never ran at its last holder.
        let mut lanes = handed.lanes.lock().expect("clean lanes lock");
        for (job, _) in &asks {
            if let Some(Some(queue)) = queues.get(job) {
                if lanes.remove(queue) {
                    unstarted.insert(*job);
                }
            }
        }
    }
    let runs: Vec<(Uuid, String)> = records
        .iter()
        .filter(|(_, (state, _, _))| *state == JobState::Running)
        .filter_map(|(job, (_, _, worker))| Some((*job, worker.clone()?)))
        .collect();
    // A worker killed a moment ago is still in the registry until its heartbeats are missed;
    // the Supervisor asks the broker whether its control queue, exclusive to its connection,
    // is gone, and then counts it dead at once. (Not the management API: its list of
    // connections can miss one a few seconds old, and taking a run for dead while it goes on
    // would run it twice at once. `tests/broker_timeout.rs` caught that. A lane channel the
    // broker closed under a live worker leaves its connection, and so its control queue, in
    // place.) Without the Supervisor's answer (it stopped while the broker was asked: the
    // control plane is going away) every run counts as going on: the asker asks again, and
    // the next control plane answers.
    let going_on: HashSet<Uuid> = match runs.is_empty() {
        true => Default::default(),
        false => {
            let all = runs.iter().map(|(job, _)| *job).collect();
            supervisor.send(HeldBy(runs)).await.unwrap_or(all)
        }
    };
    let control = topo.control();
    let answers: Vec<Outgoing> = asks
        .iter()
        .map(|(job, worker)| {
            let (state, attempts, running_on) = match records.get(job) {
                Some((state, attempts, runner)) => {
                    let running_on = runner.as_ref().filter(|_| going_on.contains(job));
                    (Some(*state), *attempts, running_on.cloned())
                }
                None => (None, 0, None),
            };
            let body = serde_json::to_vec(&Control::Record {
                job: *job,
                state,
                attempts,
                running_on,
                unstarted: unstarted.contains(job),
            })
            .expect("control messages serialize");
            Outgoing {
                exchange: &control,
                routing_key: worker,
                body,
                props: json_properties(),
            }
        })
        .collect();
    publisher.send_all(&answers).await?;
    let ended = records
        .into_iter()
        .filter(|(_, (state, _, _))| state.is_final())
        .map(|(id, _)| id)
        .collect();
    Ok(ended)
}

/// A job's state, attempts started, and the worker of its latest attempt.
type Recorded = (JobState, i32, Option<String>);

/// Sends each ended job's outcome to its `reply_to`, when the submitter asked for one.
pub async fn reply(publisher: Publisher, finished: Vec<Finished>) {
    for f in finished {
        let Some(to) = f.reply_to else { continue };
        let body = json!({"id": f.id, "state": f.state, "result": f.result, "error": f.error});
        let mut props = json_properties();
        if let Some(c) = f.correlation_id {
            props = props.with_correlation_id(c.into());
        }
        let body = serde_json::to_vec(&body).expect("replies serialize");
        if let Err(e) = publisher.publish("", &to, &body, props).await {
            warn!(job = %f.id, reply_to = %to, error = %e, "could not deliver the reply");
        }
    }
}
