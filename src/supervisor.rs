//! The Supervisor: the registry of live workers (one `WorkerActor` each, fed by heartbeats,
//! stopping when they stop) and the owner of the lane assignment.
//!
//! Assignment is level-triggered: every `assign` message carries a worker's complete lane set,
//! and every heartbeat reports the lanes the worker really consumes; any difference is corrected
//! by sending the set again. Single active consumer on the lanes makes the broker enforce one
//! consumer per lane even when assignment messages are lost or late.

use crate::{
    assignment::{lanes_of, promote_standbys, rebalance, standbys, Assignment},
    broker::{json_properties, Publisher, Topology},
    fence::Fence,
    protocol::{Control, WorkerInfo},
};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};
use tracing::{info, warn};
use uuid::Uuid;

/// A worker's heartbeat, online or offline message, as the Callback forwards it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum WorkerEvent {
    Online(WorkerInfo),
    Heartbeat {
        worker: String,
        lanes: Vec<String>,
        running: Vec<Uuid>,
    },
    Offline {
        worker: String,
    },
}

/// A worker is gone (timed out).
#[derive(Message)]
#[rtype(result = "()")]
struct Gone {
    worker: String,
}

/// Asks for the registry, for `GET /workers`.
#[derive(Message)]
#[rtype(result = "Vec<WorkerView>")]
pub struct ListWorkers;

/// Asks a worker to drain. Answers whether the worker is known.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct DrainWorker(pub String);

/// The open lanes changed (the pool grew or shrank): assign exactly these. The Dispatcher sends
/// it after declaring new lanes and after deleting closed ones.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SetLanes(pub BTreeSet<u32>);

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

/// What `GET /workers` shows about one worker.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WorkerView {
    pub id: String,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub concurrency: Option<usize>,
    pub version: Option<String>,
    pub lanes: Vec<String>,
    /// Lanes it owns.
    pub assigned: Vec<String>,
    /// Lanes it consumes as the standby (the broker makes it active if the owner dies).
    pub standby: Vec<String>,
    pub running: Vec<Uuid>,
    pub heartbeat_age_ms: u64,
    pub draining: bool,
    pub since: DateTime<Utc>,
}

struct Entry {
    info: Option<WorkerInfo>,
    actor: Addr<WorkerActor>,
    lanes: Vec<String>,
    running: Vec<Uuid>,
    last_seen: Instant,
    draining: bool,
    since: DateTime<Utc>,
}

pub struct Supervisor {
    topo: Topology,
    /// The open lanes.
    lanes: BTreeSet<u32>,
    timeout: Duration,
    publisher: Publisher,
    workers: BTreeMap<String, Entry>,
    assignment: Assignment,
    standby: Assignment,
    fence: Option<Fence>,
}

impl Supervisor {
    /// A Supervisor with no lanes yet: the Dispatcher sends the open ones (`SetLanes`) once it
    /// has declared them.
    pub fn new(topo: Topology, timeout: Duration, publisher: Publisher) -> Self {
        Supervisor {
            topo,
            lanes: BTreeSet::new(),
            timeout,
            publisher,
            workers: BTreeMap::new(),
            assignment: Assignment::new(),
            standby: Assignment::new(),
            fence: None,
        }
    }

    /// Closes the connections of workers that time out (see `fence`).
    pub fn with_fence(mut self, fence: Option<Fence>) -> Self {
        self.fence = fence;
        self
    }

    fn assigned_lanes(&self, worker: &str) -> Vec<String> {
        lanes_of(&self.assignment, worker)
            .into_iter()
            .map(|l| self.topo.lane(l))
            .collect()
    }

    fn standby_lanes(&self, worker: &str) -> Vec<String> {
        lanes_of(&self.standby, worker)
            .into_iter()
            .map(|l| self.topo.lane(l))
            .collect()
    }

    /// Every lane the worker should consume: those it owns and those it stands by for.
    fn consumed_lanes(&self, worker: &str) -> Vec<String> {
        let mut lanes = self.assigned_lanes(worker);
        lanes.extend(self.standby_lanes(worker));
        lanes.sort();
        lanes
    }

    fn rebalance(&mut self) {
        let live: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, e)| !e.draining)
            .map(|(id, _)| id.clone())
            .collect();
        let promoted = promote_standbys(&self.assignment, &self.standby, &live);
        let next = rebalance(&self.lanes, &live, &promoted);
        let next_standby = standbys(&next, &live);
        if next == self.assignment && next_standby == self.standby {
            return;
        }
        let workers: Vec<String> = self.workers.keys().cloned().collect();
        let before: Vec<Vec<String>> = workers.iter().map(|w| self.consumed_lanes(w)).collect();
        self.assignment = next;
        self.standby = next_standby;
        info!(workers = live.len(), "lanes rebalanced");
        metrics::gauge!("lanes_workers").set(live.len() as f64);
        for (w, before) in workers.iter().zip(before) {
            if before != self.consumed_lanes(w) {
                self.send_assignment(w);
            }
        }
    }

    fn send_assignment(&self, worker: &str) {
        self.send_control(worker, self.assign_message(worker, Vec::new()));
    }

    fn assign_message(&self, worker: &str, restart: Vec<String>) -> Control {
        Control::Assign {
            lanes: self.assigned_lanes(worker),
            standby: self.standby_lanes(worker),
            restart,
        }
    }

    fn send_control(&self, worker: &str, msg: Control) {
        let publisher = self.publisher.clone();
        let exchange = self.topo.control();
        let key = worker.to_owned();
        let body = serde_json::to_vec(&msg).expect("control messages serialize");
        actix::spawn(async move {
            if let Err(e) = publisher
                .publish(&exchange, &key, &body, json_properties())
                .await
            {
                warn!(worker = %key, error = %e, "control message not delivered");
            }
        });
    }

    fn seen(&mut self, worker: &str, ctx: &mut Context<Self>) -> &mut Entry {
        if !self.workers.contains_key(worker) {
            info!(%worker, "worker joined");
            let actor = WorkerActor {
                id: worker.to_owned(),
                supervisor: ctx.address(),
                timeout: self.timeout,
                last_seen: Instant::now(),
            }
            .start();
            self.workers.insert(
                worker.to_owned(),
                Entry {
                    info: None,
                    actor,
                    lanes: Vec::new(),
                    running: Vec::new(),
                    last_seen: Instant::now(),
                    draining: false,
                    since: Utc::now(),
                },
            );
        }
        let entry = self.workers.get_mut(worker).expect("just inserted");
        entry.last_seen = Instant::now();
        entry.actor.do_send(Beat);
        entry
    }

    fn remove(&mut self, worker: &str, why: &str) {
        if let Some(entry) = self.workers.remove(worker) {
            info!(%worker, reason = why, "worker left");
            entry.actor.do_send(StopWorker);
            self.rebalance();
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<WorkerEvent> for Supervisor {
    type Result = ();
    fn handle(&mut self, event: WorkerEvent, ctx: &mut Context<Self>) {
        match event {
            WorkerEvent::Online(info) => {
                let id = info.worker.clone();
                let entry = self.seen(&id, ctx);
                entry.info = Some(info);
                self.rebalance();
                self.send_assignment(&id);
            }
            WorkerEvent::Heartbeat {
                worker,
                mut lanes,
                running,
            } => {
                let known = self.workers.contains_key(&worker);
                let entry = self.seen(&worker, ctx);
                lanes.sort();
                entry.lanes = lanes;
                entry.running = running;
                if !known {
                    self.rebalance();
                }
                let want = self.consumed_lanes(&worker);
                if self.workers[&worker].lanes != want {
                    self.send_assignment(&worker);
                }
            }
            WorkerEvent::Offline { worker } => self.remove(&worker, "said goodbye"),
        }
    }
}

/// A lane holds ready tasks but the broker shows no consumer on it: its owner and standby
/// subscribe to it afresh.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resubscribe(pub u32);

impl Handler<Resubscribe> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: Resubscribe, _: &mut Context<Self>) {
        let lane = self.topo.lane(msg.0);
        for map in [&self.assignment, &self.standby] {
            if let Some(worker) = map.get(&msg.0) {
                warn!(%lane, %worker, "a lane with tasks has no consumer; resubscribing");
                self.send_control(worker, self.assign_message(worker, vec![lane.clone()]));
            }
        }
    }
}

impl Handler<SetLanes> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: SetLanes, _: &mut Context<Self>) {
        if msg.0 != self.lanes {
            info!(lanes = msg.0.len(), "the lane pool changed");
            self.lanes = msg.0;
            self.rebalance();
        }
    }
}

impl Handler<Gone> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: Gone, _: &mut Context<Self>) {
        self.remove(&msg.worker, "heartbeat timeout");
        if let Some(fence) = self.fence.clone() {
            actix::spawn(async move {
                if let Err(e) = fence.close_worker(&msg.worker).await {
                    warn!(worker = %msg.worker, error = %e, "could not fence a silent worker");
                }
            });
        }
    }
}

impl Handler<ListWorkers> for Supervisor {
    type Result = MessageResult<ListWorkers>;
    fn handle(&mut self, _: ListWorkers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.workers
                .iter()
                .map(|(id, e)| WorkerView {
                    id: id.clone(),
                    host: e.info.as_ref().map(|i| i.host.clone()),
                    pid: e.info.as_ref().map(|i| i.pid),
                    concurrency: e.info.as_ref().map(|i| i.concurrency),
                    version: e.info.as_ref().map(|i| i.version.clone()),
                    lanes: e.lanes.clone(),
                    assigned: self.assigned_lanes(id),
                    standby: self.standby_lanes(id),
                    running: e.running.clone(),
                    heartbeat_age_ms: e.last_seen.elapsed().as_millis() as u64,
                    draining: e.draining,
                    since: e.since,
                })
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

/// One live worker, as the server sees it: stops when its heartbeats stop.
struct WorkerActor {
    id: String,
    supervisor: Addr<Supervisor>,
    timeout: Duration,
    last_seen: Instant,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Beat;

#[derive(Message)]
#[rtype(result = "()")]
struct StopWorker;

impl Actor for WorkerActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.timeout / 4).max(Duration::from_millis(50));
        ctx.run_interval(every, |act, ctx| {
            if act.last_seen.elapsed() > act.timeout {
                act.supervisor.do_send(Gone {
                    worker: act.id.clone(),
                });
                ctx.stop();
            }
        });
    }
}

impl Handler<Beat> for WorkerActor {
    type Result = ();
    fn handle(&mut self, _: Beat, _: &mut Context<Self>) {
        self.last_seen = Instant::now();
    }
}

impl Handler<StopWorker> for WorkerActor {
    type Result = ();
    fn handle(&mut self, _: StopWorker, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Stops the Supervisor and its worker actors (the control plane is going away).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        for entry in self.workers.values() {
            entry.actor.do_send(StopWorker);
        }
        ctx.stop();
    }
}
