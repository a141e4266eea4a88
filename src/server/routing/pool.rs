//! The lane pool, kept by the Router: lanes `0..min` are always open; when every open lane is
//! busy and fewer than the pool's size are open, "the least-loaded lane" is a newly opened one
//! (the lowest free number; the caller declares it before publishing, see `take_opened`). A
//! lane above `min` that stays idle (no unfinished task, hence no reservation) for a cool-down
//! becomes `closable`; `close` refuses a lane that holds anything. Tasks only ever go to open
//! lanes.
//!
//! The pool's size follows the fleet (`set_size`: the live workers' slots, within `min..=max`),
//! so that more workers run more tasks at once. A smaller size only stops lanes above it from
//! taking new tasks of their own: the tasks they hold, and later ones on the resources they
//! hold, still go there in order, and the lanes close once idle.

use super::{Router, Target};
use std::time::{Duration, Instant};

impl<T> Router<T> {
    /// The upper bound of the pool (`max`).
    pub fn max_lanes(&self) -> u32 {
        self.load.len() as u32
    }

    /// The pool's size: lanes below it take new tasks.
    pub fn size(&self) -> u32 {
        self.limit
    }

    /// Sets the pool's size, within `min..=max` (and at least 1), and routes the tasks that
    /// waited for room and now have it.
    pub fn set_size(&mut self, size: u32) -> Vec<(T, Target)> {
        self.limit = size.clamp(self.min.max(1), self.max_lanes());
        self.wake(Default::default(), None)
    }

    /// Open lanes that take new tasks (numbered below the size).
    pub(super) fn usable(&self) -> impl Iterator<Item = u32> + '_ {
        self.open.range(..self.limit).copied()
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

    pub(super) fn least_loaded(&mut self) -> u32 {
        let best = self.usable().map(|l| (self.load[l as usize], l)).min();
        match best {
            Some((0, lane)) => lane,
            Some((_, lane)) if self.usable().count() >= self.limit as usize => lane,
            _ => {
                let lane = (0..self.limit)
                    .find(|l| !self.open.contains(l))
                    .expect("fewer lanes than the size are open");
                self.open(lane);
                lane
            }
        }
    }
}
