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
//! conflict with every holder. Nothing here does I/O, so it is tested exhaustively below.
//!
//! The Router owns the tasks that wait (their payload `T`, e.g. the task to publish), so the
//! waiting line has one owner: a task leaves it only routed, with its payload.
//!
//! It also keeps the lane pool (`pool`).

use crate::broker::Topology;
use crate::protocol::resource_kind;
use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    time::Instant,
};
use uuid::Uuid;

mod blockers;
mod pool;
mod views;

pub use views::{LaneView, ResourceView};

pub use blockers::Blocked;

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
    shared: bool,
}

#[derive(Debug, Default)]
struct Holder {
    lane: u32,
    exclusive: u32,
    shared: u32,
}

#[derive(Debug, Default)]
struct Resource {
    holders: Vec<Holder>,
    waiters: u32,
}

#[derive(Debug)]
struct Routed {
    lane: u32,
    claims: Vec<Claim>,
}

#[derive(Debug)]
struct Pending {
    id: Uuid,
    claims: Vec<Claim>,
}

/// The reservation table and the waiting line.
#[derive(Debug)]
pub struct Router<T> {
    /// Unfinished tasks per lane, for every lane number below `max`.
    load: Vec<u32>,
    /// Lanes `0..min` never close.
    min: u32,
    open: BTreeSet<u32>,
    /// Lanes opened since the last `take_opened`.
    opened: Vec<u32>,
    /// When each open lane was first seen idle by `closable` (cleared when it gets a task).
    idle_since: HashMap<u32, Instant>,
    resources: HashMap<String, Resource>,
    routed: HashMap<Uuid, Routed>,
    waiting: VecDeque<Pending>,
    /// The payloads of the waiting tasks.
    parked: HashMap<Uuid, T>,
}

fn claims_of(resources: &[String]) -> Vec<Claim> {
    let mut claims: Vec<Claim> = Vec::with_capacity(resources.len());
    for r in resources {
        let (name, shared) = resource_kind(r);
        match claims.iter_mut().find(|c| c.name == name) {
            Some(c) => c.shared &= shared,
            None => claims.push(Claim {
                name: name.to_owned(),
                shared,
            }),
        }
    }
    claims
}

impl<T> Router<T> {
    /// A router whose pool holds between `min` and `max` lanes (numbered from 0); lanes
    /// `0..min` start open.
    pub fn new(min: u32, max: u32) -> Self {
        assert!(max > 0, "a router needs at least one lane");
        let min = min.min(max);
        Router {
            load: vec![0; max as usize],
            min,
            open: (0..min).collect(),
            opened: Vec::new(),
            idle_since: HashMap::new(),
            resources: HashMap::new(),
            routed: HashMap::new(),
            waiting: VecDeque::new(),
            parked: HashMap::new(),
        }
    }

    /// Tasks waiting to be routed, in submit order.
    #[cfg(test)]
    pub fn waiting(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.waiting.iter().map(|p| p.id)
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
        self.parked.contains_key(id)
    }

    /// The payload of a task in the waiting line.
    #[cfg(test)]
    pub fn waiting_task(&self, id: &Uuid) -> Option<&T> {
        self.parked.get(id)
    }

    /// The payload of a task in the waiting line, to change (to lighten it, say).
    pub fn waiting_task_mut(&mut self, id: &Uuid) -> Option<&mut T> {
        self.parked.get_mut(id)
    }

    pub fn knows(&self, id: &Uuid) -> bool {
        self.routed.contains_key(id) || self.parked.contains_key(id)
    }

    /// Number of tasks in the waiting line.
    pub fn waiting_len(&self) -> usize {
        self.parked.len()
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
        let blocked = claims
            .iter()
            .any(|c| self.resources.get(&c.name).is_some_and(|r| r.waiters > 0));
        if !blocked {
            if let Some(lane) = self.placement(&claims) {
                self.reserve(id, lane, claims);
                return Decision::Routed(task, Target::Lane(lane));
            }
        }
        for c in &claims {
            self.resources.entry(c.name.clone()).or_default().waiters += 1;
        }
        self.waiting.push_back(Pending { id, claims });
        self.parked.insert(id, task);
        Decision::Waiting
    }

    /// Puts a task that is already in `lane` back into the table (server restart), opening
    /// the lane.
    pub fn restore(&mut self, id: Uuid, resources: &[String], lane: u32) {
        if resources.is_empty() || lane >= self.max_lanes() || self.routed.contains_key(&id) {
            return;
        }
        self.open(lane);
        self.reserve(id, lane, claims_of(resources));
    }

    /// A task ended for good (or left the waiting line: canceled, recorded before): releases
    /// what it held and routes the waiters that now can go, in submit order, with their
    /// payloads. Unknown ids (default-queue tasks, duplicates) are ignored.
    pub fn finish(&mut self, id: &Uuid) -> Vec<(T, Target)> {
        let Some(done) = self.routed.remove(id) else {
            return self.cancel_waiting(id);
        };
        self.load[done.lane as usize] -= 1;
        let mut wake = false;
        for c in &done.claims {
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
            if c.shared {
                h.shared -= 1;
            } else {
                h.exclusive -= 1;
            }
            if h.exclusive == 0 && h.shared == 0 {
                res.holders.swap_remove(pos);
            }
            wake |= res.waiters > 0;
            if res.holders.is_empty() && res.waiters == 0 {
                self.resources.remove(&c.name);
            }
        }
        if wake {
            self.route_waiters()
        } else {
            Vec::new()
        }
    }

    fn cancel_waiting(&mut self, id: &Uuid) -> Vec<(T, Target)> {
        if self.parked.remove(id).is_none() {
            return Vec::new();
        }
        let pos = self
            .waiting
            .iter()
            .position(|p| p.id == *id)
            .expect("a parked task waits");
        let pending = self.waiting.remove(pos).expect("position is valid");
        self.unwait(&pending.claims);
        self.route_waiters()
    }

    fn unwait(&mut self, claims: &[Claim]) {
        for c in claims {
            let res = self
                .resources
                .get_mut(&c.name)
                .expect("waited resource exists");
            res.waiters -= 1;
            if res.holders.is_empty() && res.waiters == 0 {
                self.resources.remove(&c.name);
            }
        }
    }

    fn route_waiters(&mut self) -> Vec<(T, Target)> {
        let mut out = Vec::new();
        let mut blocked: HashSet<String> = HashSet::new();
        let mut i = 0;
        while i < self.waiting.len() {
            let p = &self.waiting[i];
            let joinable = if p.claims.iter().any(|c| blocked.contains(&c.name)) {
                None
            } else {
                self.joinable(&p.claims)
            };
            let lane = joinable.map(|lane| lane.unwrap_or_else(|| self.least_loaded()));
            match lane {
                Some(lane) => {
                    let p = self.waiting.remove(i).expect("index is valid");
                    self.unwait(&p.claims);
                    self.reserve(p.id, lane, p.claims);
                    let task = self.parked.remove(&p.id).expect("a waiting task is parked");
                    out.push((task, Target::Lane(lane)));
                }
                None => {
                    let p = &self.waiting[i];
                    blocked.extend(p.claims.iter().map(|c| c.name.clone()));
                    i += 1;
                }
            }
        }
        out
    }

    /// The lane a task with these claims may join, ignoring the waiting line (opening a lane
    /// if it needs a fresh one and all open lanes are busy).
    fn placement(&mut self, claims: &[Claim]) -> Option<u32> {
        let lane = self.joinable(claims)?;
        Some(lane.unwrap_or_else(|| self.least_loaded()))
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
                if c.shared && h.exclusive == 0 {
                    continue;
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

    fn reserve(&mut self, id: Uuid, lane: u32, claims: Vec<Claim>) {
        debug_assert!(self.open.contains(&lane), "a task goes to an open lane");
        self.load[lane as usize] += 1;
        self.idle_since.remove(&lane);
        for c in &claims {
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
            if c.shared {
                res.holders[pos].shared += 1;
            } else {
                res.holders[pos].exclusive += 1;
            }
        }
        self.routed.insert(id, Routed { lane, claims });
    }
}

#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;
