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
        let have = owned[w].len().min(quota[w]);
        for _ in have..quota[w] {
            let lane = free.next().expect("quotas add up to the lane count");
            next.insert(lane, (*w).to_owned());
        }
    }
    next
}

/// Each worker's lanes in `assignment`, in lane order.
pub fn by_worker(assignment: &Assignment) -> BTreeMap<&str, Vec<u32>> {
    let mut by: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (lane, w) in assignment {
        by.entry(w.as_str()).or_default().push(*lane);
    }
    by
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

/// Where a worker runs: its host and process. Workers of one process die together (a crash,
/// an OOM kill), and those of one host with it, so a lane's standby should run elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub host: String,
    pub pid: u32,
}

/// Each lane's standby: of the live workers after its owner in id order, the first on another
/// host, else the first in another process, else the next one. The standby consumes the lane
/// too; with single active consumer the broker hands it the lane the moment the owner's
/// connection dies, long before any heartbeat times out, unless the standby died with it.
/// A worker whose place is unknown counts as a place of its own. No standby with one worker.
pub fn standbys(
    assignment: &Assignment,
    workers: &[String],
    places: &BTreeMap<String, Place>,
) -> Assignment {
    let mut sorted: Vec<&String> = workers.iter().collect();
    sorted.sort();
    sorted.dedup();
    let n = sorted.len();
    if n < 2 {
        return Assignment::new();
    }
    let index: BTreeMap<&str, usize> = sorted
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i))
        .collect();
    let place = |i: usize| places.get(sorted[i].as_str());
    let hosts: BTreeSet<&str> = sorted
        .iter()
        .filter_map(|w| places.get(w.as_str()).map(|p| p.host.as_str()))
        .collect();
    // With every known place on one host, no other host is looked for.
    let other_hosts = hosts.len() > 1 || places.len() < n;
    let apart = |a: usize, b: usize, host: bool| match (place(a), place(b)) {
        (Some(x), Some(y)) => x.host != y.host || (!host && x.pid != y.pid),
        _ => true,
    };
    let first_apart =
        |i: usize, host: bool| (1..n).map(|k| (i + k) % n).find(|&j| apart(i, j, host));
    assignment
        .iter()
        .filter_map(|(lane, owner)| {
            let i = *index.get(owner.as_str())?;
            let j = other_hosts
                .then(|| first_apart(i, true))
                .flatten()
                .or_else(|| first_apart(i, false))
                .unwrap_or((i + 1) % n);
            Some((*lane, sorted[j].clone()))
        })
        .collect()
}

/// When owners die, their standbys (already consuming, possibly already running the lane)
/// inherit the lanes, so that failover does not move a lane twice.
pub fn promote_standbys(current: &Assignment, standby: &Assignment, live: &[String]) -> Assignment {
    let live: BTreeSet<&String> = live.iter().collect();
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
        let sb = standbys(&owners, &ws, &BTreeMap::new());
        assert_eq!(sb.len(), 6);
        assert!(sb.iter().all(|(l, s)| owners[l] != *s && ws.contains(s)));
        let live: Vec<String> = vec!["a".into(), "c".into()];
        let promoted = promote_standbys(&owners, &sb, &live);
        for (lane, owner) in &owners {
            if owner == "b" {
                assert_eq!(promoted[lane], sb[lane], "b's standby inherits lane {lane}");
            }
        }
        assert!(standbys(&owners, &ws[..1], &BTreeMap::new()).is_empty());
    }

    fn at(host: &str, pid: u32) -> Place {
        Place {
            host: host.into(),
            pid,
        }
    }

    proptest::proptest! {
        /// A standby runs on another host when there is one, else in another process when
        /// there is one; never on its owner.
        #[test]
        fn a_standby_runs_apart_from_its_owner_whenever_it_can(
            spots in proptest::collection::vec((0u8..3, 0u32..4, proptest::bool::ANY), 2..40),
            lanes in 1u32..64,
        ) {
            let ws: Vec<String> = (0..spots.len()).map(|i| format!("w{i:02}")).collect();
            let places: BTreeMap<String, Place> = ws
                .iter()
                .zip(&spots)
                .filter(|(_, (_, _, known))| *known)
                .map(|(w, (h, p, _))| (w.clone(), at(&format!("h{h}"), *p)))
                .collect();
            let owners = rebalance(&(0..lanes).collect(), &ws, &Assignment::new());
            let sb = standbys(&owners, &ws, &places);
            proptest::prop_assert_eq!(sb.len(), owners.len());
            for (lane, owner) in &owners {
                let standby = &sb[lane];
                proptest::prop_assert_ne!(standby, owner);
                let (Some(o), Some(s)) = (places.get(owner), places.get(standby)) else {
                    continue;
                };
                let other = |host: bool| {
                    ws.iter().any(|w| w != owner && places.get(w).is_none_or(|p| {
                        p.host != o.host || (!host && p.pid != o.pid)
                    }))
                };
                if other(true) {
                    proptest::prop_assert_ne!(&s.host, &o.host, "lane {} shares a host", lane);
                } else if other(false) {
                    proptest::prop_assert_ne!(s.pid, o.pid, "lane {} shares a process", lane);
                }
            }
        }
    }

    #[test]
    fn two_processes_on_one_host_stand_by_for_each_other() {
        let ws: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        // a and b in one process, c and d in another: ids alone would pair a with b.
        let places: BTreeMap<String, Place> = [("a", 1), ("b", 1), ("c", 2), ("d", 2)]
            .into_iter()
            .map(|(w, pid)| (w.to_string(), at("h", pid)))
            .collect();
        let owners = rebalance(&(0..8).collect(), &ws, &Assignment::new());
        let sb = standbys(&owners, &ws, &places);
        for (lane, owner) in &owners {
            assert_ne!(places[owner].pid, places[&sb[lane]].pid, "lane {lane}");
        }
    }
}
