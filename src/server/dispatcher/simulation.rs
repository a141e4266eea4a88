//! A deterministic simulation of the control plane's message handling, in which each seed
//! chooses the interleaving: the Dispatcher's real decisions (`plan::plan`, `plan::settle`,
//! `plan::release` over the real `Router`), the order its I/O steps finish in, the lanes as
//! the broker keeps them (FIFO, prefetched deliveries handed back to the head), workers that
//! run one task per lane, and a Callback that releases ends as its batches arrive, before
//! they are written.
//!
//! The seed picks batch boundaries, when each I/O step finishes against everything else, ends
//! arriving before the insert of a later batch settles, wakes larger than a chunk, lane
//! handovers (drained or killed owners: the running task comes back too and runs again),
//! the fleet growing and shrinking (the lane pool's size) and clients that publish a message
//! twice. Every start is checked against the contract: no task
//! starts before an earlier conflicting task on any of its resources started (the execution
//! log's oracle), and conflicting runs never overlap.
//!
//! `Discipline::NewestFirst` replays how plain `ctx.wait` ran steps decided in one poll round
//! (newest first); the simulation finds the overtaking it caused, which is how we know it can
//! see that class of race. The Dispatcher runs `Discipline::InOrder` (`in_order`).

use super::plan::{self, Incoming, Plan};
use crate::{
    broker::Topology,
    protocol::TaskSpec,
    server::routing::{Router, Target},
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::{HashMap, HashSet, VecDeque};
use uuid::Uuid;

/// The order a Dispatcher finishes the I/O steps it decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Discipline {
    /// One after another, as decided.
    InOrder,
    /// Steps decided in one poll round (a mailbox message, then a stream item), newest first.
    NewestFirst,
}

/// A woken chunk, smaller than the real one so that wakes span several.
const CHUNK: usize = 3;

/// One I/O step of the Dispatcher.
enum Step {
    /// A batch's insert; its settle and its sends follow when it finishes.
    Insert(Plan),
    /// Woken jobs: their lanes recorded, then sent.
    Send(Vec<(TaskSpec, Target)>),
}

/// A task of the simulated traffic.
struct Task {
    id: Uuid,
    body: Vec<u8>,
    /// (resource, shared).
    claims: Vec<(String, bool)>,
}

#[derive(Default)]
struct Lane {
    /// What the broker holds, head first.
    queue: VecDeque<Uuid>,
    /// Delivered to the owner, not yet started, in order.
    held: VecDeque<Uuid>,
    running: Option<Uuid>,
}

/// What went wrong in a run.
#[derive(Debug, PartialEq)]
pub enum Broken {
    /// `later` started before `earlier`, which conflicts with it on `resource`.
    Overtaken {
        resource: String,
        earlier: usize,
        later: usize,
    },
    /// `job` started while `other` held `resource` in a conflicting way.
    Overlap {
        resource: String,
        job: usize,
        other: usize,
    },
    /// Jobs that never completed.
    Stranded(usize),
}

struct Sim {
    rng: StdRng,
    discipline: Discipline,
    topo: Topology,
    tasks: Vec<Task>,
    index: HashMap<Uuid, usize>,
    /// Published, not yet taken by the Dispatcher (a client may publish one again).
    submit: VecDeque<usize>,
    next_publish: usize,
    router: Router<TaskSpec>,
    /// Jobs recorded in the table.
    table: HashSet<Uuid>,
    steps: VecDeque<Step>,
    /// Ends the Callback told the Dispatcher about, not yet handled.
    mailbox: VecDeque<Vec<Uuid>>,
    lanes: HashMap<u32, Lane>,
    prefetch: usize,
    /// Ends reported by workers, not yet taken by the Callback.
    events: VecDeque<Uuid>,
    started: Vec<bool>,
    completed: Vec<bool>,
    /// Per resource: who holds it now (job, shared).
    holding: HashMap<String, Vec<(usize, bool)>>,
    /// Per resource: its holders in submit order (job, shared).
    order: HashMap<String, Vec<(usize, bool)>>,
    broken: Vec<Broken>,
}

impl Sim {
    fn new(seed: u64, discipline: Discipline) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let (n, resources) = (rng.random_range(10..60), rng.random_range(2..7));
        let max_lanes = rng.random_range(1..5);
        let mut tasks = Vec::new();
        let mut order: HashMap<String, Vec<(usize, bool)>> = HashMap::new();
        for i in 0..n {
            let mut claims: Vec<(String, bool)> = Vec::new();
            for _ in 0..rng.random_range(1..=3) {
                let name = format!("r{}", rng.random_range(0..resources));
                if claims.iter().all(|(c, _)| *c != name) {
                    claims.push((name, rng.random_bool(0.15)));
                }
            }
            let resources: Vec<String> = claims
                .iter()
                .map(|(r, shared)| match shared {
                    true => format!("shared:{r}"),
                    false => r.clone(),
                })
                .collect();
            for (r, shared) in &claims {
                order.entry(r.clone()).or_default().push((i, *shared));
            }
            let body = serde_json::to_vec(&serde_json::json!({
                "task": "noop", "resources": resources,
            }))
            .expect("JSON");
            tasks.push(Task {
                id: Uuid::from_u128(i as u128 + 1),
                body,
                claims,
            });
        }
        Sim {
            index: tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect(),
            started: vec![false; n],
            completed: vec![false; n],
            prefetch: rng.random_range(1..4),
            rng,
            discipline,
            topo: Topology::new("sim"),
            tasks,
            submit: VecDeque::new(),
            next_publish: 0,
            router: Router::new(1, max_lanes),
            table: HashSet::new(),
            steps: VecDeque::new(),
            mailbox: VecDeque::new(),
            lanes: HashMap::new(),
            events: VecDeque::new(),
            holding: HashMap::new(),
            order,
            broken: Vec::new(),
        }
    }

    /// Runs until nothing can happen any more (bounded); what broke.
    fn run(mut self) -> Vec<Broken> {
        for _ in 0..100_000 {
            let mut moves: Vec<fn(&mut Sim) -> bool> = Vec::new();
            if self.next_publish < self.tasks.len() || self.rng.random_bool(0.02) {
                moves.push(Sim::publish);
            }
            if self.steps.is_empty() && (!self.submit.is_empty() || !self.mailbox.is_empty()) {
                moves.push(Sim::dispatcher_round);
            }
            if self.rng.random_bool(0.03) {
                moves.push(Sim::resize);
            }
            if !self.steps.is_empty() {
                moves.push(Sim::finish_step);
            }
            if !self.events.is_empty() {
                moves.push(Sim::callback);
            }
            if self
                .lanes
                .values()
                .any(|l| !l.queue.is_empty() || !l.held.is_empty() || l.running.is_some())
            {
                moves.extend([Sim::deliver, Sim::start, Sim::finish, Sim::finish]);
                if self.rng.random_bool(0.05) {
                    moves.push(Sim::hand_over);
                }
            }
            if moves.is_empty() {
                break;
            }
            let pick = self.rng.random_range(0..moves.len());
            moves[pick](&mut self);
        }
        let stranded = self.completed.iter().filter(|c| !**c).count();
        if stranded > 0 {
            self.broken.push(Broken::Stranded(stranded));
        }
        self.broken
    }

    /// A client publishes the next task, or (rarely) one it published before, again.
    fn publish(&mut self) -> bool {
        if self.next_publish > 0 && self.rng.random_bool(0.05) {
            let again = self.rng.random_range(0..self.next_publish);
            self.submit.push_back(again);
            return true;
        }
        if self.next_publish < self.tasks.len() {
            self.submit.push_back(self.next_publish);
            self.next_publish += 1;
        }
        true
    }

    /// One poll round of the Dispatcher: perhaps a mailbox message, then perhaps a batch of
    /// submits (actix handles a stream item in the same round even after a handler waited).
    fn dispatcher_round(&mut self) -> bool {
        let mut round: Vec<Vec<Step>> = Vec::new();
        let take_mail = !self.mailbox.is_empty() && self.rng.random_bool(0.7);
        if take_mail {
            let ended = self.mailbox.pop_front().expect("mail");
            let woken = plan::release(&mut self.router, &ended);
            round.push(
                woken
                    .chunks(CHUNK)
                    .map(|c| Step::Send(c.to_vec()))
                    .collect(),
            );
        }
        if !self.submit.is_empty() && (!take_mail || self.rng.random_bool(0.6)) {
            let n = self.rng.random_range(1..=self.submit.len().min(8));
            let batch: Vec<usize> = self.submit.drain(..n).collect();
            let ids: Vec<String> = batch
                .iter()
                .map(|&i| self.tasks[i].id.to_string())
                .collect();
            let incoming: Vec<Incoming> = batch
                .iter()
                .zip(&ids)
                .map(|(&i, id)| Incoming {
                    message_id: Some(id),
                    reply_to: None,
                    correlation_id: None,
                    body: &self.tasks[i].body,
                    idless: None,
                    submitted_by: None,
                })
                .collect();
            let plan = plan::plan(
                &incoming,
                &mut self.router,
                &self.topo,
                1 << 20,
                chrono::Utc::now(),
                |_| true,
            );
            round.push(vec![Step::Insert(plan)]);
        }
        if self.discipline == Discipline::NewestFirst {
            round.reverse();
        }
        self.steps.extend(round.into_iter().flatten());
        true
    }

    /// The fleet changed: the Dispatcher gives the Router its new size (`follow_fleet`), and
    /// sends what that let go after the steps decided before.
    fn resize(&mut self) -> bool {
        let size = self.rng.random_range(0..=self.router.max_lanes() + 1);
        let woken = self.router.set_size(size);
        self.steps
            .extend(woken.chunks(CHUNK).map(|c| Step::Send(c.to_vec())));
        true
    }

    /// The Dispatcher's oldest step (`InOrder`) finishes: its messages reach their lanes.
    fn finish_step(&mut self) -> bool {
        let sent = match self.steps.pop_front().expect("a step") {
            Step::Insert(mut plan) => {
                let inserted: Vec<Uuid> = plan
                    .accepted
                    .iter()
                    .filter(|id| self.table.insert(**id))
                    .copied()
                    .collect();
                let settled = plan::settle(&mut plan, &inserted, &[], &mut self.router);
                let mut sent = settled.routed;
                sent.extend(settled.woken);
                sent
            }
            Step::Send(woken) => woken,
        };
        for (spec, target) in sent {
            let Target::Lane(n) = target else {
                unreachable!("every simulated task has resources")
            };
            self.lanes.entry(n).or_default().queue.push_back(spec.id);
        }
        true
    }

    /// The Callback takes some ends and releases them before it writes them.
    fn callback(&mut self) -> bool {
        let n = self.rng.random_range(1..=self.events.len());
        let ends: Vec<Uuid> = self.events.drain(..n).collect();
        self.mailbox.push_back(ends);
        true
    }

    fn some_lane(&mut self, pick: impl Fn(&Lane) -> bool) -> Option<u32> {
        let mut lanes: Vec<u32> = self
            .lanes
            .iter()
            .filter(|(_, l)| pick(l))
            .map(|(n, _)| *n)
            .collect();
        lanes.sort_unstable();
        (!lanes.is_empty()).then(|| lanes[self.rng.random_range(0..lanes.len())])
    }

    /// The broker hands a lane's owner its next message, up to the prefetch.
    fn deliver(&mut self) -> bool {
        let prefetch = self.prefetch;
        let Some(n) = self.some_lane(|l| {
            !l.queue.is_empty() && l.held.len() + usize::from(l.running.is_some()) < prefetch
        }) else {
            return false;
        };
        let lane = self.lanes.get_mut(&n).expect("lane");
        let id = lane.queue.pop_front().expect("message");
        lane.held.push_back(id);
        true
    }

    /// A lane's owner starts its next held task.
    fn start(&mut self) -> bool {
        let Some(n) = self.some_lane(|l| l.running.is_none() && !l.held.is_empty()) else {
            return false;
        };
        let lane = self.lanes.get_mut(&n).expect("lane");
        let id = lane.held.pop_front().expect("held");
        lane.running = Some(id);
        let job = self.index[&id];
        if self.completed[job] {
            // A copy of a job that ended: the worker's question finds it ended and acks it.
            self.lanes.get_mut(&n).expect("lane").running = None;
            return true;
        }
        self.check_start(job);
        true
    }

    /// The contract at a start: nothing conflicting runs, every earlier conflicting task
    /// started already.
    fn check_start(&mut self, job: usize) {
        for (r, shared) in self.tasks[job].claims.clone() {
            let holders = self.holding.entry(r.clone()).or_default();
            let conflicting = holders.iter().find(|(_, s)| !(*s && shared)).copied();
            holders.push((job, shared));
            if let Some((other, _)) = conflicting {
                self.broken.push(Broken::Overlap {
                    resource: r.clone(),
                    job,
                    other,
                });
            }
            if self.started[job] {
                continue;
            }
            for &(earlier, earlier_shared) in &self.order[&r] {
                if earlier == job {
                    break;
                }
                let ordered = !(shared && earlier_shared);
                if ordered && !self.started[earlier] {
                    self.broken.push(Broken::Overtaken {
                        resource: r.clone(),
                        earlier,
                        later: job,
                    });
                }
            }
        }
        self.started[job] = true;
    }

    fn stop_running(&mut self, job: usize) {
        for (r, _) in &self.tasks[job].claims {
            if let Some(holders) = self.holding.get_mut(r) {
                holders.retain(|(j, _)| *j != job);
            }
        }
    }

    /// A running task ends; its worker reports it.
    fn finish(&mut self) -> bool {
        let Some(n) = self.some_lane(|l| l.running.is_some()) else {
            return false;
        };
        let id = self
            .lanes
            .get_mut(&n)
            .expect("lane")
            .running
            .take()
            .expect("run");
        let job = self.index[&id];
        self.stop_running(job);
        self.completed[job] = true;
        self.events.push_back(id);
        true
    }

    /// A lane moves to another worker. Drained, its owner finishes the running task first;
    /// killed, the running task dies with it (its locks with its process) and comes back too,
    /// to run again. Either way what was held goes back to the head of the lane, in order.
    fn hand_over(&mut self) -> bool {
        let Some(n) = self.some_lane(|l| l.running.is_some() || !l.held.is_empty()) else {
            return false;
        };
        let killed = self.rng.random_bool(0.5);
        let running = self.lanes[&n].running;
        if let Some(id) = running {
            let job = self.index[&id];
            self.stop_running(job);
            if !killed {
                self.completed[job] = true;
                self.events.push_back(id);
            }
        }
        let lane = self.lanes.get_mut(&n).expect("lane");
        lane.running = None;
        let mut back: VecDeque<Uuid> = running.filter(|_| killed).into_iter().collect();
        back.extend(lane.held.drain(..));
        for id in back.into_iter().rev() {
            lane.queue.push_front(id);
        }
        true
    }
}

/// Runs `seeds` seeds; the first that broke the contract, with what broke.
pub fn first_broken(
    seeds: std::ops::Range<u64>,
    discipline: Discipline,
) -> Option<(u64, Vec<Broken>)> {
    seeds
        .map(|seed| (seed, Sim::new(seed, discipline).run()))
        .find(|(_, broken)| !broken.is_empty())
}

#[test]
fn the_dispatcher_keeps_submit_order_under_every_interleaving() {
    assert_eq!(first_broken(0..5_000, Discipline::InOrder), None);
}

#[test]
fn the_simulation_finds_the_overtaking_that_newest_first_waits_caused() {
    let found = first_broken(0..5_000, Discipline::NewestFirst);
    let (seed, broken) = found.expect("steps finished newest first overtake");
    assert!(
        broken.iter().any(|b| matches!(b, Broken::Overtaken { .. })),
        "seed {seed}: {broken:?}"
    );
}
