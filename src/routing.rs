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
//! The router also keeps the lane pool: lanes `0..min` are always open; when every open lane is
//! busy and fewer than `max` are open, "the least-loaded lane" is a newly opened one (the lowest
//! free number; the caller declares it before publishing, see `take_opened`). A lane above `min`
//! that stays idle (no unfinished task, hence no reservation) for a cool-down becomes
//! `closable`; `close` refuses a lane that holds anything. Tasks only ever go to open lanes.

use crate::protocol::resource_kind;
use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};
use uuid::Uuid;

/// Where a routed task goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Default,
    Lane(u32),
}

/// The outcome of submitting a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Routed(Target),
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
pub struct Router {
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

impl Router {
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
        }
    }

    /// The upper bound of the pool (`max`).
    pub fn max_lanes(&self) -> u32 {
        self.load.len() as u32
    }

    /// The open lanes, in order.
    pub fn open_lanes(&self) -> Vec<u32> {
        self.open.iter().copied().collect()
    }

    pub fn is_open(&self, lane: u32) -> bool {
        self.open.contains(&lane)
    }

    /// Unfinished tasks routed to each open lane: (lane, load).
    pub fn loads(&self) -> Vec<(u32, u32)> {
        self.open
            .iter()
            .map(|l| (*l, self.load[*l as usize]))
            .collect()
    }

    /// The lanes opened since the last call: the caller must declare them before it publishes
    /// to them (and tell whoever assigns lanes to workers).
    pub fn take_opened(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.opened)
    }

    /// Opens `lane` (restart recovery, or a close the broker refused). False if it is out of
    /// range; true if it is open afterwards.
    pub fn open(&mut self, lane: u32) -> bool {
        if lane >= self.max_lanes() {
            return false;
        }
        if self.open.insert(lane) {
            self.opened.push(lane);
            self.idle_since.remove(&lane);
        }
        true
    }

    /// Surplus lanes (numbered `min` and up) that have been idle for at least `cool_down`.
    /// A lane counts as idle from the first call that sees it without unfinished tasks, so
    /// call this periodically; a task routed to the lane resets the clock.
    pub fn closable(&mut self, now: Instant, cool_down: Duration) -> Vec<u32> {
        let mut out = Vec::new();
        for &lane in self.open.range(self.min..) {
            if self.load[lane as usize] > 0 {
                self.idle_since.remove(&lane);
                continue;
            }
            let since = *self.idle_since.entry(lane).or_insert(now);
            if now.saturating_duration_since(since) >= cool_down {
                out.push(lane);
            }
        }
        out
    }

    /// Closes a surplus lane. Refuses (false) a lane below `min`, one that is not open, or one
    /// that holds an unfinished task or a reservation.
    pub fn close(&mut self, lane: u32) -> bool {
        if lane < self.min || !self.open.contains(&lane) || self.load[lane as usize] > 0 {
            return false;
        }
        let held = self
            .resources
            .values()
            .any(|r| r.holders.iter().any(|h| h.lane == lane));
        if held {
            return false;
        }
        self.open.remove(&lane);
        self.idle_since.remove(&lane);
        self.opened.retain(|l| *l != lane);
        true
    }

    /// Tasks waiting to be routed, in submit order.
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
    pub fn is_routed(&self, id: &Uuid) -> bool {
        self.routed.contains_key(id)
    }

    /// The unfinished jobs routed to `lane`.
    pub fn lane_jobs(&self, lane: u32) -> Vec<Uuid> {
        self.routed
            .iter()
            .filter(|(_, r)| r.lane == lane)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Routes a newly submitted task, or puts it in the waiting line.
    pub fn submit(&mut self, id: Uuid, resources: &[String]) -> Decision {
        if resources.is_empty() {
            return Decision::Routed(Target::Default);
        }
        let claims = claims_of(resources);
        let blocked = claims
            .iter()
            .any(|c| self.resources.get(&c.name).is_some_and(|r| r.waiters > 0));
        if !blocked {
            if let Some(lane) = self.placement(&claims) {
                self.reserve(id, lane, claims);
                return Decision::Routed(Target::Lane(lane));
            }
        }
        for c in &claims {
            self.resources.entry(c.name.clone()).or_default().waiters += 1;
        }
        self.waiting.push_back(Pending { id, claims });
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

    /// A task ended for good: releases what it held and routes the waiters that now can go,
    /// in submit order. Unknown ids (default-queue tasks, duplicates) are ignored.
    pub fn finish(&mut self, id: &Uuid) -> Vec<(Uuid, Target)> {
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

    fn cancel_waiting(&mut self, id: &Uuid) -> Vec<(Uuid, Target)> {
        let Some(pos) = self.waiting.iter().position(|p| p.id == *id) else {
            return Vec::new();
        };
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

    fn route_waiters(&mut self) -> Vec<(Uuid, Target)> {
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
                    out.push((p.id, Target::Lane(lane)));
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

    fn least_loaded(&mut self) -> u32 {
        let best = self.open.iter().map(|l| (self.load[*l as usize], *l)).min();
        match best {
            Some((0, lane)) => lane,
            Some((_, lane)) if self.open.len() >= self.load.len() => lane,
            _ => {
                let lane = (0..self.max_lanes())
                    .find(|l| !self.open.contains(l))
                    .expect("fewer than max lanes are open");
                self.open(lane);
                lane
            }
        }
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
mod tests;
