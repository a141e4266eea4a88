//! The lane pool, one of the Router's parts: which lanes are open, how many unfinished tasks
//! each holds, and how many may be open for work that may go anywhere.
//!
//! Lanes `0..min` are always open; when every open lane is busy and fewer than the pool's size
//! are open, "the least-loaded lane" is a newly opened one (the lowest free number; the caller
//! declares it before publishing, see `take_opened`). A lane above `min` that stays idle (no
//! unfinished task) for a cool-down becomes `closable`; `close` refuses a lane that holds a task
//! (the Router also refuses one that holds a reservation). Tasks only ever go to open lanes. A
//! lane may be bounded to `depth` unfinished tasks (`has_room`).
//!
//! The pool's size follows the fleet (`set_size`: the live workers' slots, within `min..=max`),
//! so that more workers run more tasks at once. A smaller size only stops lanes above it from
//! taking new tasks of their own: the tasks they hold, and later ones on the resources they
//! hold, still go there in order, and the lanes close once idle.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

#[derive(Debug)]
pub(super) struct Pool {
    /// Unfinished tasks per lane, for every lane number below `max`.
    load: Vec<u32>,
    /// Lanes `0..min` never close.
    min: u32,
    /// Tasks without conflicting holders only go to lanes numbered below this.
    size: u32,
    /// Unfinished tasks a lane may hold before the next one waits instead.
    depth: u32,
    open: BTreeSet<u32>,
    /// Lanes opened since the last `take_opened`.
    opened: Vec<u32>,
    /// When each open lane was first seen idle by `closable` (cleared when it gets a task).
    idle_since: HashMap<u32, Instant>,
}

impl Pool {
    /// Between `min` and `max` lanes (numbered from 0); lanes `0..min` start open, and the size
    /// is `max` until told otherwise.
    pub(super) fn new(min: u32, max: u32) -> Pool {
        assert!(max > 0, "a pool needs at least one lane");
        let min = min.min(max);
        Pool {
            load: vec![0; max as usize],
            min,
            size: max,
            depth: u32::MAX,
            open: (0..min).collect(),
            opened: Vec::new(),
            idle_since: HashMap::new(),
        }
    }

    /// Bounds each lane to `depth` unfinished tasks (at least 1; `None`: unbounded).
    pub(super) fn set_depth(&mut self, depth: Option<u32>) {
        self.depth = depth.map_or(u32::MAX, |d| d.max(1));
    }

    /// The upper bound (`max`).
    pub(super) fn max(&self) -> u32 {
        self.load.len() as u32
    }

    pub(super) fn size(&self) -> u32 {
        self.size
    }

    /// Sets the size, within `min..=max` (and at least 1).
    pub(super) fn set_size(&mut self, size: u32) {
        self.size = size.clamp(self.min.max(1), self.max());
    }

    pub(super) fn open_lanes(&self) -> impl Iterator<Item = u32> + '_ {
        self.open.iter().copied()
    }

    pub(super) fn is_open(&self, lane: u32) -> bool {
        self.open.contains(&lane)
    }

    pub(super) fn load(&self, lane: u32) -> u32 {
        self.load[lane as usize]
    }

    /// The lanes opened since the last call.
    pub(super) fn take_opened(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.opened)
    }

    /// Opens `lane`. False if it is out of range; true if it is open afterwards.
    pub(super) fn open(&mut self, lane: u32) -> bool {
        if lane >= self.max() {
            return false;
        }
        if self.open.insert(lane) {
            self.opened.push(lane);
            self.idle_since.remove(&lane);
        }
        true
    }

    /// A task went to `lane` (open).
    pub(super) fn add(&mut self, lane: u32) {
        debug_assert!(self.open.contains(&lane), "a task goes to an open lane");
        self.load[lane as usize] += 1;
        self.idle_since.remove(&lane);
    }

    /// A task in `lane` ended.
    pub(super) fn remove(&mut self, lane: u32) {
        self.load[lane as usize] -= 1;
    }

    /// Surplus lanes (numbered `min` and up) that have been idle for at least `cool_down`.
    /// A lane counts as idle from the first call that sees it without unfinished tasks, so
    /// call this periodically; a task routed to the lane resets the clock.
    pub(super) fn closable(&mut self, now: Instant, cool_down: Duration) -> Vec<u32> {
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
    /// that holds an unfinished task.
    pub(super) fn close(&mut self, lane: u32) -> bool {
        if lane < self.min || !self.open.contains(&lane) || self.load[lane as usize] > 0 {
            return false;
        }
        self.open.remove(&lane);
        self.idle_since.remove(&lane);
        self.opened.retain(|l| *l != lane);
        true
    }

    pub(super) fn has_room(&self, lane: u32) -> bool {
        self.load[lane as usize] < self.depth
    }

    /// Open lanes that take new tasks (numbered below the size).
    fn usable(&self) -> impl Iterator<Item = u32> + '_ {
        self.open.range(..self.size).copied()
    }

    /// Whether every lane below the size is open. Counted from the other end: lanes above the
    /// size are rarely open, and this runs for every task routed.
    fn all_usable_open(&self) -> bool {
        self.open.len() - self.open.range(self.size..).count() >= self.size as usize
    }

    /// Whether some lane has room for a task that may go anywhere (an open one, or one the
    /// pool may open).
    pub(super) fn any_room(&self) -> bool {
        !self.all_usable_open() || self.usable().any(|l| self.has_room(l))
    }

    /// The least-loaded usable lane, or a newly opened one when every usable lane is busy and
    /// the size allows another.
    pub(super) fn least_loaded(&mut self) -> u32 {
        let best = self.usable().map(|l| (self.load[l as usize], l)).min();
        match best {
            Some((0, lane)) => lane,
            Some((_, lane)) if self.all_usable_open() => lane,
            _ => {
                let lane = (0..self.size)
                    .find(|l| !self.open.contains(l))
                    .expect("fewer lanes than the size are open");
                self.open(lane);
                lane
            }
        }
    }
}
