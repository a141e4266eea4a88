//! The traffic cop's rules, as pure code: which lane a task goes to, or whether it must wait.
//!
//! A lane runs its tasks one at a time, in order. So "resource `r` is reserved by lane A" means
//! every unfinished task holding `r` sits in lane A, and a new task on `r` can join A's line and
//! still run after them. The rules (DESIGN.md):
//! - no resources: the shared `default` queue;
//! - conflicting holders all in one lane: that lane;
//! - no conflicting holders: the least-loaded lane;
//! - conflicting holders in several lanes, or an earlier task on one of its resources is
//!   waiting: wait, in submit order, until that changes.
//!
//! Shared resources (`shared:r`) conflict only with exclusive holders of `r`; exclusive ones
//! conflict with every holder. A reader never joins a writer's lane: it waits until the writer
//! ends, so the readers that waited for it run together in different lanes. Slot holders
//! (`slot:r`) are readers of their own kind, up to the resource's capacity, admitted one at a
//! time (`gate`). Nothing here does I/O, so it is tested exhaustively below.
//!
//! A lane may be bounded to `depth` unfinished tasks: a task whose lane is full waits too (and
//! holds back the later tasks on its resources), so that lanes stay short and a resource whose
//! earlier tasks are done can go to whichever lane is free then, instead of queueing behind a
//! long lane it was pulled into by a multi-resource task.
//!
//! The Router owns the tasks that wait (their payload `T`, e.g. the task to publish), so the
//! waiting line (`line`) has one owner: a task leaves it only routed, with its payload.
//!
//! Its parts: the reservations (here), the lane pool (`pool`), the waiting line (`line`) and
//! the resources' limits (`gate`), each with its own state.

use crate::broker::Topology;
use crate::protocol::{resource_kind, Access};
use gate::Gates;
use line::Line;
use pool::Pool;
use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};
use uuid::Uuid;

mod blockers;
mod gate;
mod line;
mod pool;
mod views;
mod wake;

pub use views::{LaneView, ResourceView};

pub use blockers::{Blocked, Blocker};
pub use gate::{Held, Limit, Rate};

/// Where a routed task goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Default,
    Lane(u32),
}

impl Target {
    /// The queue of this target in a deployment.
    pub fn queue(self, topo: &Topology) -> String {
        match self {
            Target::Default => topo.default_queue(),
            Target::Lane(n) => topo.lane(n),
        }
    }
}

/// The outcome of submitting a task: routed now (its payload back, with where it goes), or
/// kept in the waiting line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<T> {
    Routed(T, Target),
    Waiting,
}

/// A task's claim on one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claim {
    name: String,
    access: Access,
}

#[derive(Debug, Default)]
struct Holder {
    lane: u32,
    exclusive: u32,
    shared: u32,
    slot: u32,
    /// Tasks routed to this lane on this resource since the lane took it.
    admitted: u32,
}

#[derive(Debug, Default)]
struct Resource {
    holders: Vec<Holder>,
}

#[derive(Debug)]
struct Routed {
    lane: u32,
    claims: Vec<Claim>,
}

/// The reservation table, the lane pool and the waiting line.
#[derive(Debug)]
pub struct Router<T> {
    pool: Pool,
    resources: HashMap<String, Resource>,
    routed: HashMap<Uuid, Routed>,
    /// Tasks of one resource a lane takes in a row before the next waits for them to finish
    /// (and then goes to the least-loaded lane).
    rebalance_after: u32,
    line: Line<T>,
    gates: Gates,
}

fn claims_of(resources: &[String]) -> Vec<Claim> {
    let mut claims: Vec<Claim> = Vec::with_capacity(resources.len());
    for r in resources {
        let (name, access) = resource_kind(r);
        match claims.iter_mut().find(|c| c.name == name) {
            // Two kinds of claim on one resource: it holds it alone.
            Some(c) if c.access != access => c.access = Access::Exclusive,
            Some(_) => {}
            None => claims.push(Claim {
                name: name.to_owned(),
                access,
            }),
        }
    }
    claims
}

impl<T> Router<T> {
    /// A router whose pool holds between `min` and `max` lanes (numbered from 0); lanes
    /// `0..min` start open.
    pub fn new(min: u32, max: u32) -> Self {
        Router {
            pool: Pool::new(min, max),
            resources: HashMap::new(),
            routed: HashMap::new(),
            rebalance_after: u32::MAX,
            line: Line::default(),
            gates: Gates::default(),
        }
    }

    /// Bounds each lane to `depth` unfinished tasks (at least 1; `None`: unbounded). Tasks
    /// restored after a restart may exceed it; new ones wait until the lane has room.
    pub fn with_depth(mut self, depth: Option<u32>) -> Self {
        self.pool.set_depth(depth);
        self
    }

    /// After `n` tasks of a resource went to its lane in a row, the next waits until they are
    /// done and then goes to the least-loaded lane (`None`: never; at least 1). This lets a
    /// resource move off a lane that multi-resource tasks made long.
    pub fn with_rebalance_after(mut self, n: Option<u32>) -> Self {
        self.rebalance_after = n.map_or(u32::MAX, |n| n.max(1));
        self
    }

    /// Tasks waiting to be routed, in submit order.
    #[cfg(test)]
    pub fn waiting(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.line.iter().map(|p| p.id)
    }

    /// Number of resources currently reserved by some lane.
    pub fn reserved(&self) -> usize {
        self.resources
            .values()
            .filter(|r| !r.holders.is_empty())
            .count()
    }

    /// Number of unfinished tasks with resources that are routed to a lane.
    pub fn routed(&self) -> usize {
        self.routed.len()
    }

    /// Whether `id` is an unfinished task routed to a lane.
    #[cfg(test)]
    pub fn is_routed(&self, id: &Uuid) -> bool {
        self.routed.contains_key(id)
    }

    /// Whether `id` is routed to a lane or waiting.
    pub fn is_waiting(&self, id: &Uuid) -> bool {
        self.line.place_of(id).is_some()
    }

    /// The payload of a task in the waiting line.
    #[cfg(test)]
    pub fn waiting_task(&self, id: &Uuid) -> Option<&T> {
        let seq = self.line.place_of(id)?;
        self.line.get(seq).map(|p| &p.task)
    }

    /// The payload of a task in the waiting line, to change (to lighten it, say).
    pub fn waiting_task_mut(&mut self, id: &Uuid) -> Option<&mut T> {
        self.line.task_mut(id)
    }

    pub fn knows(&self, id: &Uuid) -> bool {
        self.routed.contains_key(id) || self.is_waiting(id)
    }

    /// Number of tasks in the waiting line.
    pub fn waiting_len(&self) -> usize {
        self.line.len()
    }

    /// The unfinished jobs routed to `lane`.
    pub fn lane_jobs(&self, lane: u32) -> Vec<Uuid> {
        self.routed
            .iter()
            .filter(|(_, r)| r.lane == lane)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Routes a newly submitted task, or puts it (and its payload) in the waiting line.
    pub fn submit(&mut self, id: Uuid, resources: &[String], task: T) -> Decision<T> {
        if resources.is_empty() {
            return Decision::Routed(task, Target::Default);
        }
        let claims = claims_of(resources);
        let blocked = claims.iter().any(|c| self.line.has_waiters(&c.name));
        if !blocked && self.held(&claims).is_none() {
            if let Some(lane) = self.placement(&claims) {
                self.reserve(id, lane, claims, false);
                return Decision::Routed(task, Target::Lane(lane));
            }
        }
        let seq = self.line.push(id, claims, task);
        // First in line for all its resources: it waits only for room (or for holders in
        // several lanes, which `try_route` tells apart).
        let mut out = Vec::new();
        let routed = self.try_route(seq, &mut BTreeSet::new(), &mut out);
        debug_assert!(!routed, "a task that could be placed was placed");
        Decision::Waiting
    }

    /// The upper bound of the pool (`max`).
    pub fn max_lanes(&self) -> u32 {
        self.pool.max()
    }

    /// The pool's size: lanes below it take new tasks.
    pub fn size(&self) -> u32 {
        self.pool.size()
    }

    /// Sets the pool's size (see `pool`), and routes the tasks that waited for room and now
    /// have it.
    pub fn set_size(&mut self, size: u32) -> Vec<(T, Target)> {
        self.pool.set_size(size);
        self.wake(BTreeSet::new(), None)
    }

    /// The open lanes, in order.
    pub fn open_lanes(&self) -> Vec<u32> {
        self.pool.open_lanes().collect()
    }

    pub fn is_open(&self, lane: u32) -> bool {
        self.pool.is_open(lane)
    }

    /// Unfinished tasks routed to each open lane: (lane, load).
    pub fn loads(&self) -> Vec<(u32, u32)> {
        self.pool
            .open_lanes()
            .map(|l| (l, self.pool.load(l)))
            .collect()
    }

    /// The lanes opened since the last call: the caller must declare them before it publishes
    /// to them (and tell whoever assigns lanes to workers).
    pub fn take_opened(&mut self) -> Vec<u32> {
        self.pool.take_opened()
    }

    /// Opens `lane` (restart recovery, or a close the broker refused). False if it is out of
    /// range; true if it is open afterwards.
    pub fn open(&mut self, lane: u32) -> bool {
        self.pool.open(lane)
    }

    /// Surplus lanes idle for at least `cool_down` (see `pool`); call it periodically.
    pub fn closable(&mut self, now: Instant, cool_down: Duration) -> Vec<u32> {
        self.pool.closable(now, cool_down)
    }

    /// Closes a surplus lane. Refuses (false) a lane below `min`, one that is not open, or one
    /// that holds an unfinished task or a reservation.
    pub fn close(&mut self, lane: u32) -> bool {
        let held = self
            .resources
            .values()
            .any(|r| r.holders.iter().any(|h| h.lane == lane));
        !held && self.pool.close(lane)
    }

    /// Puts a task that is already in `lane` back into the table (server restart), opening
    /// the lane; `started`: it is recorded running.
    pub fn restore(&mut self, id: Uuid, resources: &[String], lane: u32, started: bool) {
        if resources.is_empty() || lane >= self.max_lanes() || self.routed.contains_key(&id) {
            return;
        }
        self.open(lane);
        self.reserve(id, lane, claims_of(resources), started);
    }

    /// Replaces the resources' limits (capacity and rate; see `gate`), and routes the waiters
    /// a change lets go.
    pub fn set_limits(&mut self, limits: HashMap<String, Limit>) -> Vec<(T, Target)> {
        let changed = self.gates.set(limits);
        let candidates = changed.iter().filter_map(|n| self.line.head(n)).collect();
        self.wake(candidates, None)
    }

    /// Starts a limited resource counted before a restart (ms since the Unix epoch).
    pub fn restore_starts(&mut self, name: &str, starts: &[u64]) {
        for &at in starts {
            self.gates.record_start(name, at);
        }
    }

    /// The time (ms since the Unix epoch): a rate-limited waiter whose window opened goes.
    pub fn tick(&mut self, now_ms: u64) -> Vec<(T, Target)> {
        self.gates.advance(now_ms);
        let candidates: BTreeSet<u64> = self
            .gates
            .rated()
            .filter_map(|n| self.line.head(n))
            .collect();
        if candidates.is_empty() {
            return Vec::new();
        }
        self.wake(candidates, None)
    }

    /// These jobs started (at `now_ms`): on a limited resource, the next holder may be
    /// admitted, and the start counts toward its rate. Call before their ends.
    pub fn started(&mut self, ids: &[Uuid], now_ms: u64) -> Vec<(T, Target)> {
        self.gates.advance(now_ms);
        let mut candidates = BTreeSet::new();
        for id in ids {
            let Some(routed) = self.routed.get(id) else {
                continue;
            };
            for c in &routed.claims {
                if self.gates.is_limited(&c.name) {
                    self.gates.left_unstarted(&c.name, id);
                    self.gates.record_start(&c.name, now_ms);
                    candidates.extend(self.line.head(&c.name));
                }
            }
        }
        if candidates.is_empty() {
            return Vec::new();
        }
        self.wake(candidates, None)
    }

    /// Jobs waiting on limited resources whose first waiter the limit holds back: for slots
    /// (or for the holder before it to start), and for the rate.
    pub fn limited_waiting(&self) -> (usize, usize) {
        let (mut slots, mut rate) = (0, 0);
        for name in self.gates.limited() {
            let Some(head) = self.line.head(name) else {
                continue;
            };
            let waiters = self.line.waiters_of(name).count();
            match self.line.get(head).and_then(|p| self.held(&p.claims)) {
                Some((_, Held::Rate { .. })) => rate += waiters,
                Some(_) => slots += waiters,
                None => {}
            }
        }
        (slots, rate)
    }

    /// Why a limited resource does not admit a task with these claims now, if it does not.
    /// (`Held::Slots` names no holders here; `blockers` does.)
    fn held(&self, claims: &[Claim]) -> Option<(String, Held)> {
        for c in claims {
            let limit = self.gates.limit(&c.name);
            if c.access == Access::Slot {
                let slots = limit.map_or(1, |l| l.slots);
                let held: u32 = self
                    .resources
                    .get(&c.name)
                    .map_or(0, |r| r.holders.iter().map(|h| h.slot).sum());
                if held >= slots {
                    let by = Vec::new();
                    return Some((c.name.clone(), Held::Slots { slots, by }));
                }
            }
            if limit.is_none() {
                continue;
            }
            if let Some(job) = self.gates.unstarted(&c.name) {
                return Some((c.name.clone(), Held::Starting(job)));
            }
            if let Some(until_ms) = self.gates.rate_until(&c.name) {
                return Some((c.name.clone(), Held::Rate { until_ms }));
            }
        }
        None
    }

    /// A task ended for good (or left the waiting line: canceled, recorded before): releases
    /// what it held and routes the waiters that now can go, in submit order, with their
    /// payloads. Unknown ids (default-queue tasks, duplicates) are ignored.
    pub fn finish(&mut self, id: &Uuid) -> Vec<(T, Target)> {
        let Some(done) = self.routed.remove(id) else {
            return self.cancel_waiting(id);
        };
        self.pool.remove(done.lane);
        let mut candidates = BTreeSet::new();
        for c in &done.claims {
            // Ended before its start was heard of: counted as a start now, to be safe.
            if self.gates.left_unstarted(&c.name, id) {
                let now = self.gates.now();
                self.gates.record_start(&c.name, now);
            }
            let res = self
                .resources
                .get_mut(&c.name)
                .expect("held resource exists");
            let pos = res
                .holders
                .iter()
                .position(|h| h.lane == done.lane)
                .expect("holder exists");
            let h = &mut res.holders[pos];
            match c.access {
                Access::Exclusive => h.exclusive -= 1,
                Access::Shared => h.shared -= 1,
                Access::Slot => h.slot -= 1,
            }
            if h.exclusive == 0 && h.shared == 0 && h.slot == 0 {
                res.holders.swap_remove(pos);
            }
            if res.holders.is_empty() {
                self.resources.remove(&c.name);
            }
            candidates.extend(self.line.head(&c.name));
        }
        self.wake(candidates, Some(done.lane))
    }

    fn cancel_waiting(&mut self, id: &Uuid) -> Vec<(T, Target)> {
        let Some(pending) = self.line.place_of(id).and_then(|seq| self.line.remove(seq)) else {
            return Vec::new();
        };
        let candidates = pending
            .claims
            .iter()
            .filter_map(|c| self.line.head(&c.name))
            .collect();
        self.wake(candidates, None)
    }

    /// The lane with room a task with these claims may join, ignoring the waiting line
    /// (opening a lane if it needs a fresh one and all open lanes are busy).
    fn placement(&mut self, claims: &[Claim]) -> Option<u32> {
        match self.joinable(claims)? {
            Some(lane) => self.has_room(lane).then_some(lane),
            None => self.roomy_lane(),
        }
    }

    /// `None`: conflicting holders in several lanes. `Some(Some(l))`: the conflicting holders
    /// are all in lane `l`. `Some(None)`: nothing conflicts, any lane will do.
    fn joinable(&self, claims: &[Claim]) -> Option<Option<u32>> {
        let mut lane: Option<u32> = None;
        for c in claims {
            let Some(res) = self.resources.get(&c.name) else {
                continue;
            };
            for h in &res.holders {
                let compatible = match c.access {
                    Access::Exclusive => false,
                    Access::Shared => h.exclusive == 0 && h.slot == 0,
                    Access::Slot => h.exclusive == 0 && h.shared == 0,
                };
                if compatible {
                    continue;
                }
                // A reader waits for a writer to end rather than queue behind it in its lane:
                // then the readers waiting for it go together, each to the least-loaded lane.
                // So do slot holders, and every holder of a limited resource, which is
                // admitted only when it can start.
                if c.access != Access::Exclusive || self.gates.is_limited(&c.name) {
                    return None;
                }
                if h.admitted >= self.rebalance_after {
                    return None;
                }
                match lane {
                    None => lane = Some(h.lane),
                    Some(l) if l == h.lane => {}
                    Some(_) => return None,
                }
            }
        }
        Some(lane)
    }

    /// Records a task in `lane`; `started`: it has started (only a restored one may have).
    fn reserve(&mut self, id: Uuid, lane: u32, claims: Vec<Claim>, started: bool) {
        self.pool.add(lane);
        for c in &claims {
            if !started && self.gates.is_limited(&c.name) {
                self.gates.admitted(&c.name, id);
            }
            let res = self.resources.entry(c.name.clone()).or_default();
            let pos = match res.holders.iter().position(|h| h.lane == lane) {
                Some(pos) => pos,
                None => {
                    res.holders.push(Holder {
                        lane,
                        ..Holder::default()
                    });
                    res.holders.len() - 1
                }
            };
            let h = &mut res.holders[pos];
            h.admitted += 1;
            match c.access {
                Access::Exclusive => h.exclusive += 1,
                Access::Shared => h.shared += 1,
                Access::Slot => h.slot += 1,
            }
        }
        self.routed.insert(id, Routed { lane, claims });
    }
}

#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;
