//! The Supervisor: the registry of live workers and the owner of the lane assignment.
//!
//! It alone decides liveness: each worker's entry records when it was last heard from, and one
//! sweep timer removes the workers silent for longer than the timeout, rebalances their lanes
//! and fences them (closes their broker connections, see `fence`), so a hung worker cannot keep
//! consuming. Keeping the last heartbeat in one place means there is nothing to keep in step;
//! the decision itself is the pure `registry::expired`.
//!
//! Assignment is level-triggered: every `assign` message carries a worker's complete lane set,
//! and every heartbeat reports the lanes the worker really consumes; any difference is corrected
//! by sending the set again. Single active consumer on the lanes makes the broker enforce one
//! consumer per lane even when assignment messages are lost or late.
//!
//! One death is noticed sooner than the timeout: when an answer would have a redelivered task
//! wait for a worker's run, the broker is asked whether that worker's control queue (exclusive
//! to its connection) still exists (`HeldBy`). Gone, the worker is dead at once.

mod cancels;
mod queries;
mod registry;

pub use cancels::{CancelJobs, JobsSettled};
pub use queries::{DrainWorker, GetAssignment, GetHeld, HeldBy, ListWorkers};
pub use registry::WorkerView;

use super::stall::WriteClock;
use crate::{
    broker::{json_properties, Publisher, Topology},
    protocol::{Control, WorkerInfo},
    server::{
        assignment::{
            by_worker, lanes_of, promote_standbys, rebalance, standbys, Assignment, Place,
        },
        fence::Fence,
    },
};
use actix::prelude::*;
use lapin::Connection;
use registry::{expired, judge, Entry, Judgement};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;
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
        /// The control queue of the session that sent it.
        control: Option<String>,
        /// Tasks it runs at once.
        slots: Option<usize>,
    },
    Offline {
        worker: String,
    },
}

/// The open lanes changed (the pool grew or shrank): assign exactly these. The Dispatcher sends
/// it after declaring new lanes and after deleting closed ones.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SetLanes(pub BTreeSet<u32>);

/// How many times a silent worker's connections are looked for, a second apart.
const FENCE_TRIES: usize = 8;

pub struct Supervisor {
    topo: Topology,
    /// The open lanes.
    lanes: BTreeSet<u32>,
    timeout: Duration,
    publisher: Publisher,
    /// For asking the broker whether a worker's control queue still exists.
    conn: Arc<Connection>,
    workers: BTreeMap<String, Entry>,
    assignment: Assignment,
    standby: Assignment,
    fence: Option<Fence>,
    /// The Callback's writes: no worker is judged dead while they stall.
    writes: WriteClock,
    /// The last sweep held its judgement.
    holding: bool,
    /// Canceled jobs that have not ended (see `cancels`).
    cancels: BTreeSet<Uuid>,
    /// When this Supervisor started: until a heartbeat timeout has passed, a worker it has
    /// not heard from yet may still be alive.
    born: Instant,
    /// Workers removed while this Supervisor was younger than the timeout: known dead, unlike
    /// the workers it has not heard from yet.
    departed: BTreeSet<String>,
    /// The live workers' slots (draining ones aside), for the Dispatcher's lane pool.
    slots: watch::Sender<u32>,
}

impl Supervisor {
    /// A Supervisor with no lanes yet: the Dispatcher sends the open ones (`SetLanes`) once it
    /// has declared them.
    pub fn new(
        topo: Topology,
        timeout: Duration,
        publisher: Publisher,
        conn: Arc<Connection>,
        writes: WriteClock,
    ) -> Self {
        Supervisor {
            topo,
            lanes: BTreeSet::new(),
            timeout,
            publisher,
            conn,
            workers: BTreeMap::new(),
            assignment: Assignment::new(),
            standby: Assignment::new(),
            fence: None,
            writes,
            holding: false,
            cancels: BTreeSet::new(),
            born: Instant::now(),
            departed: BTreeSet::new(),
            slots: watch::Sender::new(0),
        }
    }

    /// The live workers' slots, as they change (0 until a worker is heard of).
    pub fn slots(&self) -> watch::Receiver<u32> {
        self.slots.subscribe()
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
        let slots: usize = live.iter().map(|w| self.workers[w].slots()).sum();
        self.slots
            .send_if_modified(|s| std::mem::replace(s, slots as u32) != slots as u32);
        let promoted = promote_standbys(&self.assignment, &self.standby, &live);
        let next = rebalance(&self.lanes, &live, &promoted);
        let places: BTreeMap<String, Place> = live
            .iter()
            .filter_map(|w| Some((w.clone(), self.place_of(w)?)))
            .collect();
        let next_standby = standbys(&next, &live, &places);
        if next == self.assignment && next_standby == self.standby {
            return;
        }
        // Roles count, not only the set: an owner that becomes the standby of a lane must let
        // go of it, or it stays the broker's active consumer in front of the new owner.
        let changed: Vec<String> = {
            let (owned, stood) = (by_worker(&self.assignment), by_worker(&self.standby));
            let (owns, stands) = (by_worker(&next), by_worker(&next_standby));
            self.workers
                .keys()
                .filter(|w| roles(&owned, &stood, w) != roles(&owns, &stands, w))
                .cloned()
                .collect()
        };
        self.assignment = next;
        self.standby = next_standby;
        info!(workers = live.len(), "lanes rebalanced");
        metrics::gauge!("lanes_workers").set(live.len() as f64);
        for w in &changed {
            self.send_assignment(w);
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

    /// Records that the worker was heard from now, registering it if it is new.
    fn seen(&mut self, worker: &str) -> &mut Entry {
        let now = Instant::now();
        let entry = self.workers.entry(worker.to_owned()).or_insert_with(|| {
            info!(%worker, "worker joined");
            Entry::joined(now)
        });
        entry.last_seen = now;
        entry
    }

    fn remove(&mut self, worker: &str, why: &str) {
        if self.forget(worker, why) {
            self.rebalance();
        }
    }

    /// Where a live worker runs, if it said so when it came online.
    fn place_of(&self, worker: &str) -> Option<Place> {
        let info = self.workers.get(worker)?.info.as_ref()?;
        Some(Place {
            host: info.host.clone(),
            pid: info.pid,
        })
    }

    /// Takes a worker out of the registry, without a rebalance; true if it was in it.
    fn forget(&mut self, worker: &str, why: &str) -> bool {
        if self.workers.remove(worker).is_none() {
            return false;
        }
        info!(%worker, reason = why, "worker left");
        if self.born.elapsed() < self.timeout {
            self.departed.insert(worker.to_owned());
        } else {
            self.departed.clear();
        }
        true
    }

    /// The broker has deleted `queue`, a worker's control queue: the connection of the session
    /// that declared it is closed (SIGKILL, a crash), so that session runs nothing any more.
    /// If it is the session the registry knows, the worker is dead now rather than at its
    /// heartbeat timeout: its lanes move and the tasks it held are free. True if removed. Not
    /// fenced: its connection is gone already, and the fence (by connection name) would close
    /// the next session of the same id.
    fn connection_gone(&mut self, worker: &str, queue: &str) -> bool {
        let removed = self.session_ended(worker, queue, "its connection is gone");
        if removed {
            self.rebalance();
        }
        removed
    }

    /// Forgets `worker` (without a rebalance) if `queue`, now deleted, is the control queue of
    /// the session the registry knows; true if it did.
    fn session_ended(&mut self, worker: &str, queue: &str, why: &str) -> bool {
        let current = self.workers.get(worker).and_then(|e| e.control.as_deref()) == Some(queue);
        current && self.forget(worker, why)
    }

    /// Removes and fences every worker silent for longer than the timeout.
    fn sweep(&mut self, now: Instant) {
        let was_holding = self.holding;
        let judgement = judge(self.writes.stalled_for(), was_holding, self.timeout / 4);
        self.holding = judgement == Judgement::Hold;
        match judgement {
            Judgement::Hold if !was_holding => {
                warn!("job-state writes are stalled; no worker is judged by its silence meanwhile")
            }
            Judgement::Hold => {}
            Judgement::Restart => {
                info!("job-state writes flow again; every worker gets a fresh heartbeat timeout");
                for entry in self.workers.values_mut() {
                    entry.last_seen = now;
                }
            }
            Judgement::Judge => {
                for worker in expired(&self.workers, now, self.timeout) {
                    metrics::counter!("lanes_workers_timed_out_total").increment(1);
                    self.remove(&worker, "heartbeat timeout");
                    self.fence_worker(worker);
                }
            }
        }
        // How close the fleet runs to its timeout: well above the heartbeat interval, the
        // control plane or the broker falls behind the fleet's heartbeats.
        let longest = self
            .workers
            .values()
            .map(|e| now.saturating_duration_since(e.last_seen))
            .max()
            .unwrap_or_default();
        metrics::gauge!("lanes_workers_longest_silence_seconds").set(longest.as_secs_f64());
    }

    /// Closes the broker connections of a worker declared dead, if fencing is configured.
    fn fence_worker(&self, worker: String) {
        if let Some(fence) = self.fence.clone() {
            actix::spawn(async move {
                // The management API lists a new connection only after its first statistics
                // (every 5 s by default): a worker that went silent soon after connecting is
                // looked for again, a bounded number of times.
                for _ in 0..FENCE_TRIES {
                    match fence.close_worker(&worker).await {
                        Ok(0) => tokio::time::sleep(Duration::from_secs(1)).await,
                        Ok(_) => return,
                        Err(e) => {
                            warn!(%worker, error = %e, "could not fence a silent worker");
                            return;
                        }
                    }
                }
            });
        }
    }
}

/// A worker's lanes as owner and as standby, in `by_worker` maps.
fn roles<'a>(
    owned: &'a BTreeMap<&str, Vec<u32>>,
    stood: &'a BTreeMap<&str, Vec<u32>>,
    worker: &str,
) -> (&'a [u32], &'a [u32]) {
    let of = |m: &'a BTreeMap<&str, Vec<u32>>| m.get(worker).map_or(&[][..], Vec::as_slice);
    (of(owned), of(stood))
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    /// Starts the liveness sweep: a worker is noticed dead within a quarter of the timeout
    /// (but no more often than every 50 ms) after its timeout passes.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.timeout / 4).max(Duration::from_millis(50));
        ctx.run_interval(every, |act, _| act.sweep(Instant::now()));
    }
}

impl Handler<WorkerEvent> for Supervisor {
    type Result = ();
    fn handle(&mut self, event: WorkerEvent, _: &mut Context<Self>) {
        match event {
            WorkerEvent::Online(info) => {
                let id = info.worker.clone();
                let entry = self.seen(&id);
                entry.info = Some(info);
                // A new session (the worker reconnected): the control queue on record is the
                // last session's, gone with it; this one's heartbeats will name its own.
                entry.control = None;
                // Before its lanes: it must know what to skip before it is handed anything.
                self.send_cancels(&id);
                self.rebalance();
                self.send_assignment(&id);
            }
            WorkerEvent::Heartbeat {
                worker,
                mut lanes,
                running,
                control,
                slots,
            } => {
                let known = self.workers.contains_key(&worker);
                // Only a queue under the worker's own name: its absence must mean that this
                // worker's connection is gone.
                let own = self.topo.worker_control(&format!("{worker}."));
                let control = control.filter(|q| q.starts_with(&own));
                let entry = self.seen(&worker);
                lanes.sort();
                entry.lanes = lanes;
                entry.running = running;
                entry.control = control;
                entry.slots = slots.or(entry.slots);
                if !known {
                    // Registered by a heartbeat (this control plane is new): it has not heard
                    // of the open cancels.
                    self.send_cancels(&worker);
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

/// Stops the Supervisor, and with it the liveness sweep (the control plane is going away).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
