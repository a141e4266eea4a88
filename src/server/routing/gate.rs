//! Resources with limits: a capacity (how many `slot:` holders at once) and a rate (how many
//! starts per period). A limited resource admits its holders one at a time, in line order:
//! the next is routed only once the one before it has started (the Callback says so), so
//! starts on it keep submit order even though its holders run in different lanes, and its
//! rate is counted from real starts, never from routing. Holders go where nothing they
//! conflict with is routed (like readers), so an admitted holder waits for nothing but its
//! lane.
//!
//! A resource without a limit has one slot and no rate: `slot:r` then behaves as `r`.

pub use crate::limit::{Limit, Rate};
use std::collections::{HashMap, HashSet, VecDeque};
use uuid::Uuid;

/// Why a limited resource does not admit a waiter yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// The holder admitted before it has not started yet.
    Starting(Uuid),
    /// Every slot is held, by these jobs.
    Slots { slots: u32, by: Vec<Uuid> },
    /// The rate allows the next start at this time (ms since the Unix epoch).
    Rate { until_ms: u64 },
}

/// The limits and what they count: admitted holders not started yet, and recent starts.
#[derive(Debug, Default)]
pub(super) struct Gates {
    limits: HashMap<String, Limit>,
    unstarted: HashMap<String, HashSet<Uuid>>,
    /// The last starts of each rate-limited resource (ms), oldest first, at most `starts`.
    starts: HashMap<String, VecDeque<u64>>,
    /// The latest time the Router was told (ms since the Unix epoch).
    now: u64,
}

impl Gates {
    pub fn limit(&self, name: &str) -> Option<&Limit> {
        if self.limits.is_empty() {
            return None;
        }
        self.limits.get(name)
    }

    pub fn is_limited(&self, name: &str) -> bool {
        self.limit(name).is_some()
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    /// Time only moves forward: a stale clock counts more starts in a window, never fewer.
    pub fn advance(&mut self, now_ms: u64) {
        self.now = self.now.max(now_ms);
    }

    /// Replaces the limits; the names whose limit changed.
    pub fn set(&mut self, limits: HashMap<String, Limit>) -> Vec<String> {
        let mut changed: Vec<String> = limits
            .iter()
            .filter(|(name, l)| self.limits.get(*name) != Some(l))
            .map(|(name, _)| name.clone())
            .collect();
        changed.extend(
            self.limits
                .keys()
                .filter(|name| !limits.contains_key(*name))
                .cloned(),
        );
        self.limits = limits;
        let limits = &self.limits;
        self.unstarted.retain(|name, _| limits.contains_key(name));
        self.starts
            .retain(|name, _| limits.get(name).is_some_and(|l| l.rate.is_some()));
        changed
    }

    /// A holder admitted (or restored) that has not started.
    pub fn admitted(&mut self, name: &str, job: Uuid) {
        self.unstarted
            .entry(name.to_owned())
            .or_default()
            .insert(job);
    }

    /// `job` started (or ended) on `name`; `started` counts toward the rate.
    pub fn left_unstarted(&mut self, name: &str, job: &Uuid) -> bool {
        let Some(set) = self.unstarted.get_mut(name) else {
            return false;
        };
        let was = set.remove(job);
        if set.is_empty() {
            self.unstarted.remove(name);
        }
        was
    }

    /// A start on `name` at `at` (ms), counted toward its rate.
    pub fn record_start(&mut self, name: &str, at: u64) {
        let Some(rate) = self.limit(name).and_then(|l| l.rate) else {
            return;
        };
        let starts = self.starts.entry(name.to_owned()).or_default();
        let pos = starts.partition_point(|t| *t <= at);
        starts.insert(pos, at);
        while starts.len() > rate.starts as usize {
            starts.pop_front();
        }
    }

    /// An admitted holder of `name` that has not started, if any.
    pub fn unstarted(&self, name: &str) -> Option<Uuid> {
        let set = self.unstarted.get(name)?;
        set.iter().min().copied()
    }

    /// When the rate of `name` next allows a start, if not now.
    pub fn rate_until(&self, name: &str) -> Option<u64> {
        let rate = self.limit(name)?.rate?;
        let starts = self.starts.get(name)?;
        if starts.len() < rate.starts as usize {
            return None;
        }
        // The oldest of the last `starts` starts leaves the window at `until`.
        let until = starts.front()? + rate.per_ms;
        (until > self.now).then_some(until)
    }

    pub fn limited(&self) -> impl Iterator<Item = &String> + '_ {
        self.limits.keys()
    }

    /// Limited resources with a rate: those a passing of time may open.
    pub fn rated(&self) -> impl Iterator<Item = &String> + '_ {
        self.limits
            .iter()
            .filter(|(_, l)| l.rate.is_some())
            .map(|(name, _)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rated(starts: u32, per_ms: u64) -> Gates {
        let mut g = Gates::default();
        g.set(HashMap::from([(
            "api".to_owned(),
            Limit {
                slots: 1,
                rate: Some(Rate { starts, per_ms }),
            },
        )]));
        g
    }

    #[test]
    fn a_rate_opens_when_the_oldest_counted_start_leaves_the_window() {
        let mut g = rated(2, 1000);
        g.advance(10);
        g.record_start("api", 10);
        assert_eq!(g.rate_until("api"), None);
        g.record_start("api", 400);
        assert_eq!(g.rate_until("api"), Some(1010));
        g.advance(1009);
        assert_eq!(g.rate_until("api"), Some(1010));
        g.advance(1010);
        assert_eq!(g.rate_until("api"), None);
        g.record_start("api", 1010);
        assert_eq!(g.rate_until("api"), Some(1400));
    }

    #[test]
    fn time_never_moves_back_and_a_removed_limit_forgets_its_counts() {
        let mut g = rated(1, 100);
        g.advance(50);
        g.advance(20);
        assert_eq!(g.now(), 50);
        g.record_start("api", 50);
        g.admitted("api", Uuid::from_u128(1));
        assert_eq!(g.set(HashMap::new()), vec!["api".to_owned()]);
        assert_eq!(g.unstarted("api"), None);
        assert_eq!(g.rate_until("api"), None);
        assert!(!g.is_limited("api"));
    }
}
