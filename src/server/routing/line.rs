//! The waiting line: the tasks that cannot be routed yet, with their payloads, in submit order
//! and indexed by resource. A task may leave only when it is the first waiter of every resource
//! it claims, so a finish needs to look at the first waiters of the resources it released, not
//! at the whole line. Tasks that could go but whose lane is full (the Router's depth bound) are
//! `stalled` on that lane, or on any lane, until one has room.

use super::Claim;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use uuid::Uuid;

/// A task in the waiting line.
#[derive(Debug)]
pub(super) struct Pending<T> {
    pub id: Uuid,
    pub claims: Vec<Claim>,
    pub task: T,
}

#[derive(Debug)]
pub(super) struct Line<T> {
    next: u64,
    /// By place in line (a counter that only grows).
    order: BTreeMap<u64, Pending<T>>,
    place: HashMap<Uuid, u64>,
    /// The waiters of each resource, by place in line.
    queues: HashMap<String, BTreeSet<u64>>,
    /// Waiters that can go except that their lane (`Some`) or every lane (`None`) is full.
    stalled: HashMap<u64, Option<u32>>,
    stalled_on: HashMap<Option<u32>, BTreeSet<u64>>,
}

impl<T> Default for Line<T> {
    fn default() -> Self {
        Line {
            next: 0,
            order: BTreeMap::new(),
            place: HashMap::new(),
            queues: HashMap::new(),
            stalled: HashMap::new(),
            stalled_on: HashMap::new(),
        }
    }
}

impl<T> Line<T> {
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Puts a task at the end of the line; returns its place.
    pub fn push(&mut self, id: Uuid, claims: Vec<Claim>, task: T) -> u64 {
        let seq = self.next;
        self.next += 1;
        for c in &claims {
            self.queues.entry(c.name.clone()).or_default().insert(seq);
        }
        self.place.insert(id, seq);
        self.order.insert(seq, Pending { id, claims, task });
        seq
    }

    pub fn has_waiters(&self, name: &str) -> bool {
        self.queues.contains_key(name)
    }

    /// The first waiter of a resource.
    pub fn head(&self, name: &str) -> Option<u64> {
        self.queues.get(name).and_then(|q| q.first().copied())
    }

    /// Whether the task at `seq` is the first waiter of every resource it claims.
    pub fn is_head(&self, seq: u64) -> bool {
        self.order
            .get(&seq)
            .is_some_and(|p| p.claims.iter().all(|c| self.head(&c.name) == Some(seq)))
    }

    pub fn get(&self, seq: u64) -> Option<&Pending<T>> {
        self.order.get(&seq)
    }

    pub fn place_of(&self, id: &Uuid) -> Option<u64> {
        self.place.get(id).copied()
    }

    pub fn task_mut(&mut self, id: &Uuid) -> Option<&mut T> {
        let seq = self.place.get(id)?;
        self.order.get_mut(seq).map(|p| &mut p.task)
    }

    /// Takes a task out of the line (routed or canceled).
    pub fn remove(&mut self, seq: u64) -> Option<Pending<T>> {
        let p = self.order.remove(&seq)?;
        self.place.remove(&p.id);
        for c in &p.claims {
            let queue = self.queues.get_mut(&c.name).expect("a waiter is queued");
            queue.remove(&seq);
            if queue.is_empty() {
                self.queues.remove(&c.name);
            }
        }
        self.unstall(seq);
        Some(p)
    }

    /// Records that the task at `seq` waits only for room in `on` (a lane, or any lane).
    pub fn stall(&mut self, seq: u64, on: Option<u32>) {
        if self.stalled.get(&seq) == Some(&on) {
            return;
        }
        self.unstall(seq);
        self.stalled.insert(seq, on);
        self.stalled_on.entry(on).or_default().insert(seq);
    }

    pub fn unstall(&mut self, seq: u64) {
        if let Some(on) = self.stalled.remove(&seq) {
            let set = self
                .stalled_on
                .get_mut(&on)
                .expect("stalled tasks are indexed");
            set.remove(&seq);
            if set.is_empty() {
                self.stalled_on.remove(&on);
            }
        }
    }

    /// The earliest task stalled on `on`.
    pub fn first_stalled(&self, on: Option<u32>) -> Option<u64> {
        self.stalled_on.get(&on).and_then(|s| s.first().copied())
    }

    /// The waiting tasks, in submit order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &Pending<T>> {
        self.order.values()
    }

    /// The tasks ahead of the one at `seq`, in submit order.
    pub fn ahead_of(&self, seq: u64) -> impl Iterator<Item = &Pending<T>> {
        self.order.range(..seq).map(|(_, p)| p)
    }

    /// The waiters of a resource, in submit order.
    pub fn waiters_of(&self, name: &str) -> impl Iterator<Item = Uuid> + '_ {
        self.queues
            .get(name)
            .into_iter()
            .flatten()
            .map(|seq| self.order[seq].id)
    }
}
