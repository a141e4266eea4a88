//! Reconciling lanes with the job table: a job the Router holds in a lane whose queue has no
//! ready message and that no worker holds has lost its message (someone purged or deleted the
//! queue) and would wait forever. A job is declared lost only when two checks in a row saw it
//! so, which rules out the moments between a delivery and the worker's next heartbeat.

use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Suspects of the previous check, per lane.
#[derive(Debug, Default)]
pub struct Suspects {
    by_lane: HashMap<u32, HashSet<Uuid>>,
}

impl Suspects {
    /// Records this check's suspects (jobs of empty lanes that no worker holds) and returns
    /// those that were suspects last time too. Lanes not checked now forget their suspects.
    pub fn confirm(&mut self, now: HashMap<u32, HashSet<Uuid>>) -> Vec<Uuid> {
        let mut lost = Vec::new();
        for (lane, ids) in &now {
            if let Some(before) = self.by_lane.get(lane) {
                lost.extend(ids.intersection(before).copied());
            }
        }
        self.by_lane = now;
        for set in self.by_lane.values_mut() {
            for id in &lost {
                set.remove(id);
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_twice_seen_suspects_are_lost() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut s = Suspects::default();
        assert!(s
            .confirm(HashMap::from([(1, HashSet::from([a, b]))]))
            .is_empty());
        let lost = s.confirm(HashMap::from([(1, HashSet::from([a]))]));
        assert_eq!(lost, vec![a], "b was picked up in between");
        assert!(
            s.confirm(HashMap::from([(1, HashSet::from([a]))]))
                .is_empty(),
            "reported once"
        );
        assert!(s.confirm(HashMap::new()).is_empty());
    }
}
