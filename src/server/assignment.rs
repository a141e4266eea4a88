//! Which worker owns which lane, as pure code.
//!
//! Every lane has exactly one owner among the live workers, lanes are spread evenly (owners'
//! counts differ by at most one), and a rebalance moves as few lanes as it can: a live owner
//! keeps its lanes up to its fair share, so joins and deaths disturb little.

use std::collections::{BTreeMap, BTreeSet};

/// Lane number → owning worker id.
pub type Assignment = BTreeMap<u32, String>;

/// Assigns the open `lanes` (any set of lane numbers) to `workers`, keeping as much of
/// `current` as fairness allows. With no workers, nothing is assigned.
pub fn rebalance(lanes: &BTreeSet<u32>, workers: &[String], current: &Assignment) -> Assignment {
    if workers.is_empty() {
        return Assignment::new();
    }
    let mut owned: BTreeMap<&str, Vec<u32>> =
        workers.iter().map(|w| (w.as_str(), Vec::new())).collect();
    for (lane, owner) in current {
        if !lanes.contains(lane) {
            continue;
        }
        if let Some(list) = owned.get_mut(owner.as_str()) {
            list.push(*lane);
        }
    }
    // Workers that already own most get the larger quotas, so fewer lanes move.
    let mut order: Vec<&str> = owned.keys().copied().collect();
    order.sort_by_key(|w| (std::cmp::Reverse(owned[w].len()), *w));
    let base = lanes.len() / workers.len();
    let extra = lanes.len() % workers.len();
    let quota: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, w)| (*w, base + usize::from(i < extra)))
        .collect();

    let mut next = Assignment::new();
    for (w, list) in &owned {
        for lane in list.iter().take(quota[w]) {
            next.insert(*lane, (*w).to_owned());
        }
    }
    let free: Vec<u32> = lanes
        .iter()
        .copied()
        .filter(|l| !next.contains_key(l))
        .collect();
    let mut free = free.into_iter();
    for w in &order {
        let have = next.values().filter(|o| o.as_str() == *w).count();
        for _ in have..quota[w] {
            let lane = free.next().expect("quotas add up to the lane count");
            next.insert(lane, (*w).to_owned());
        }
    }
    next
}

/// The lanes one worker owns.
pub fn lanes_of(assignment: &Assignment, worker: &str) -> Vec<u32> {
    assignment
        .iter()
        .filter(|(_, w)| w.as_str() == worker)
        .map(|(l, _)| *l)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(ids: &[u8]) -> Vec<String> {
        let mut v: Vec<String> = ids.iter().map(|i| format!("w{i}")).collect();
        v.sort();
        v.dedup();
        v
    }

    proptest! {
        #[test]
        fn every_lane_has_one_live_owner_and_shares_are_fair(
            lanes_before in prop::collection::btree_set(0u32..40, 1..40),
            lanes in prop::collection::btree_set(0u32..40, 1..40),
            before in prop::collection::vec(0u8..8, 0..8),
            after in prop::collection::vec(0u8..8, 0..8),
        ) {
            let (before, after) = (names(&before), names(&after));
            // The pool may grow or shrink between the two rebalances.
            let first = rebalance(&lanes_before, &before, &Assignment::new());
            let next = rebalance(&lanes, &after, &first);
            if after.is_empty() {
                prop_assert!(next.is_empty());
                return Ok(());
            }
            prop_assert!(next.keys().eq(lanes.iter()), "exactly the open lanes are assigned");
            let counts: Vec<usize> = after.iter().map(|w| lanes_of(&next, w).len()).collect();
            prop_assert!(next.values().all(|w| after.contains(w)));
            prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
            // Minimal movement: a surviving owner loses a lane only if it had more than its share.
            let fair = lanes.len().div_ceil(after.len());
            for (lane, owner) in &first {
                if lanes.contains(lane) && after.contains(owner) && next[lane] != *owner {
                    let kept = lanes_of(&first, owner).iter().filter(|l| lanes.contains(l)).count();
                    prop_assert!(kept > fair - 1);
                }
            }
            // Stable: rebalancing again changes nothing.
            prop_assert_eq!(rebalance(&lanes, &after, &next), next);
        }
    }

    #[test]
    fn a_joining_worker_takes_a_fair_share_from_the_others() {
        let two = names(&[1, 2]);
        let lanes: BTreeSet<u32> = (0..8).collect();
        let a = rebalance(&lanes, &two, &Assignment::new());
        let b = rebalance(&lanes, &names(&[1, 2, 3]), &a);
        let moved = a.iter().filter(|(l, w)| b[*l] != **w).count();
        assert_eq!(moved, 2);
        assert_eq!(lanes_of(&b, "w3").len(), 2);
    }
}

/// Each lane's standby: the live worker after its owner, in id order. The standby consumes
/// the lane too; with single active consumer the broker hands it the lane the moment the
/// owner's connection dies, long before any heartbeat times out. No standby with one worker.
pub fn standbys(assignment: &Assignment, workers: &[String]) -> Assignment {
    let mut sorted: Vec<&String> = workers.iter().collect();
    sorted.sort();
    if sorted.len() < 2 {
        return Assignment::new();
    }
    assignment
        .iter()
        .filter_map(|(lane, owner)| {
            let i = sorted.iter().position(|w| *w == owner)?;
            Some((*lane, sorted[(i + 1) % sorted.len()].clone()))
        })
        .collect()
}

/// When owners die, their standbys (already consuming, possibly already running the lane)
/// inherit the lanes, so that failover does not move a lane twice.
pub fn promote_standbys(current: &Assignment, standby: &Assignment, live: &[String]) -> Assignment {
    current
        .iter()
        .map(|(lane, owner)| {
            let heir = match standby.get(lane) {
                Some(s) if !live.contains(owner) && live.contains(s) => s.clone(),
                _ => owner.clone(),
            };
            (*lane, heir)
        })
        .collect()
}

#[cfg(test)]
mod standby_tests {
    use super::*;

    #[test]
    fn standbys_differ_from_owners_and_inherit_on_death() {
        let ws: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let owners = rebalance(&(0..6).collect(), &ws, &Assignment::new());
        let sb = standbys(&owners, &ws);
        assert_eq!(sb.len(), 6);
        assert!(sb.iter().all(|(l, s)| owners[l] != *s && ws.contains(s)));
        let live: Vec<String> = vec!["a".into(), "c".into()];
        let promoted = promote_standbys(&owners, &sb, &live);
        for (lane, owner) in &owners {
            if owner == "b" {
                assert_eq!(promoted[lane], sb[lane], "b's standby inherits lane {lane}");
            }
        }
        assert!(standbys(&owners, &ws[..1]).is_empty());
    }
}
