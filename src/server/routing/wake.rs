//! Leaving the waiting line: after a finish or a cancel, the Router looks only at the tasks
//! the change may free (the first waiters of the resources it touched, and the tasks stalled
//! for room on the lane that lost a task), routes those that can go, and follows on to the
//! waiters behind each task it routed.

use super::{Router, Target};
use std::collections::BTreeSet;

impl<T> Router<T> {
    /// Routes what can go after a change: the `candidates` (first waiters of resources whose
    /// holders or line changed), the first waiters behind each task routed, and, while `freed`
    /// (a lane that lost a task) or any lane has room, the tasks stalled on it. In submit order
    /// within each round.
    pub(super) fn wake(
        &mut self,
        mut candidates: BTreeSet<u64>,
        freed: Option<u32>,
    ) -> Vec<(T, Target)> {
        let mut out = Vec::new();
        loop {
            while let Some(seq) = candidates.pop_first() {
                self.try_route(seq, &mut candidates, &mut out);
            }
            let on_freed = freed
                .filter(|l| self.has_room(*l))
                .and_then(|l| self.line.first_stalled(Some(l)));
            let on_any = self
                .pool
                .any_room()
                .then(|| self.line.first_stalled(None))
                .flatten();
            let Some(seq) = on_freed.into_iter().chain(on_any).min() else {
                break;
            };
            if !self.try_route(seq, &mut candidates, &mut out) {
                break;
            }
        }
        out
    }

    /// Routes the waiter at `seq` if it is first in line for all its resources and has a lane
    /// with room; otherwise notes whether it waits only for room. Adds the next waiters of its
    /// resources to `candidates` when it goes.
    pub(super) fn try_route(
        &mut self,
        seq: u64,
        candidates: &mut BTreeSet<u64>,
        out: &mut Vec<(T, Target)>,
    ) -> bool {
        if !self.line.is_head(seq) {
            return false;
        }
        let claims = &self.line.get(seq).expect("a head waits").claims;
        if self.held(claims).is_some() {
            self.line.unstall(seq);
            return false;
        }
        let lane = match self.joinable(claims) {
            None => {
                self.line.unstall(seq);
                return false;
            }
            Some(Some(l)) if self.has_room(l) => l,
            Some(Some(l)) => {
                self.line.stall(seq, Some(l));
                return false;
            }
            Some(None) => match self.roomy_lane() {
                Some(l) => l,
                None => {
                    self.line.stall(seq, None);
                    return false;
                }
            },
        };
        let p = self.line.remove(seq).expect("a head waits");
        candidates.extend(p.claims.iter().filter_map(|c| self.line.head(&c.name)));
        self.reserve(p.id, lane, p.claims, false);
        out.push((p.task, Target::Lane(lane)));
        true
    }

    pub(super) fn has_room(&self, lane: u32) -> bool {
        self.pool.has_room(lane)
    }

    /// The least-loaded lane if it has room.
    pub(super) fn roomy_lane(&mut self) -> Option<u32> {
        if !self.pool.any_room() {
            return None;
        }
        let lane = self.pool.least_loaded();
        debug_assert!(self.has_room(lane));
        Some(lane)
    }
}
