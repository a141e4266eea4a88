//! "Why is this job not running?" — what the Router knows of what holds a job back: for a job
//! in the waiting line, the routed jobs whose claims conflict with its own and the earlier
//! waiters on its resources; for a routed job, the other jobs of its lane (which of them are
//! ahead is known from their records: a lane runs in submit order). A waiter that a limited
//! resource does not admit yet also says why (`Held`).

use super::{Held, Router};
use uuid::Uuid;

/// What holds a job back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// In the waiting line at `position` (0: first), held back by `by`, and by a limited
    /// resource (`held`: its name and why) when it is first in line for its resources.
    Waiting {
        position: usize,
        by: Vec<Blocker>,
        held: Option<(String, Held)>,
    },
    /// In `lane`, with the lane's other unfinished jobs, each with a resource it shares with
    /// this one, if any (the lane runs them one at a time either way).
    Routed {
        lane: u32,
        with: Vec<(Uuid, Option<String>)>,
    },
}

/// One job another waits for, and on which resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub job: Uuid,
    pub resource: String,
    /// Its lane if it is routed; None if it waits too.
    pub lane: Option<u32>,
}

impl<T> Router<T> {
    /// What holds `id` back; None if the Router does not hold it (ended, or in the default
    /// queue).
    pub fn blockers(&self, id: &Uuid) -> Option<Blocked> {
        if let Some(mine) = self.routed.get(id) {
            let mut with: Vec<(Uuid, Option<String>)> = self
                .routed
                .iter()
                .filter(|(other, r)| r.lane == mine.lane && *other != id)
                .map(|(other, r)| {
                    let common = r
                        .claims
                        .iter()
                        .find(|c| mine.claims.iter().any(|m| m.name == c.name));
                    (*other, common.map(|c| c.name.clone()))
                })
                .collect();
            with.sort();
            return Some(Blocked::Routed {
                lane: mine.lane,
                with,
            });
        }
        let seq = self.line.place_of(id)?;
        let position = self.line.ahead_of(seq).count();
        let me = self.line.get(seq)?;
        let mut by = Vec::new();
        let mut holders: Vec<(&Uuid, &super::Routed)> = self.routed.iter().collect();
        holders.sort_by_key(|(job, _)| **job);
        for (job, routed) in holders {
            for c in &me.claims {
                let conflicts = routed
                    .claims
                    .iter()
                    .any(|h| h.name == c.name && !h.access.compatible(c.access));
                if conflicts {
                    by.push(Blocker {
                        job: *job,
                        resource: c.name.clone(),
                        lane: Some(routed.lane),
                    });
                }
            }
        }
        for earlier in self.line.ahead_of(seq) {
            for c in &me.claims {
                if earlier.claims.iter().any(|e| e.name == c.name) {
                    by.push(Blocker {
                        job: earlier.id,
                        resource: c.name.clone(),
                        lane: None,
                    });
                }
            }
        }
        let held = match self.line.is_head(seq) {
            true => self.held(&me.claims).map(|(name, held)| {
                let held = match held {
                    Held::Slots { slots, .. } => Held::Slots {
                        slots,
                        by: self.slot_holders(&name),
                    },
                    other => other,
                };
                (name, held)
            }),
            false => None,
        };
        Some(Blocked::Waiting { position, by, held })
    }

    /// The jobs holding slots of `name`.
    fn slot_holders(&self, name: &str) -> Vec<Uuid> {
        let mut by: Vec<Uuid> = self
            .routed
            .iter()
            .filter(|(_, r)| {
                r.claims
                    .iter()
                    .any(|c| c.name == name && c.access == crate::protocol::Access::Slot)
            })
            .map(|(job, _)| *job)
            .collect();
        by.sort();
        by
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::routing::{Decision, Target};

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn res(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_waiting_job_names_the_holders_and_earlier_waiters_of_its_resources() {
        let mut r: Router<()> = Router::new(4, 4);
        r.submit(id(1), &res(&["a"]), ());
        r.submit(id(2), &res(&["b"]), ());
        let (la, lb) = match (r.blockers(&id(1)), r.blockers(&id(2))) {
            (Some(Blocked::Routed { lane: a, .. }), Some(Blocked::Routed { lane: b, .. })) => {
                (a, b)
            }
            other => panic!("{other:?}"),
        };
        assert_ne!(la, lb, "two idle resources go to two lanes");
        // A job on `a` alone joins `a`'s lane, behind job 1.
        assert_eq!(
            r.submit(id(5), &res(&["a"]), ()),
            Decision::Routed((), Target::Lane(la))
        );
        assert_eq!(
            r.blockers(&id(5)),
            Some(Blocked::Routed {
                lane: la,
                with: vec![(id(1), Some("a".into()))]
            })
        );
        // Holders of `a` and `b` in two lanes: it waits for all of them.
        assert_eq!(r.submit(id(3), &res(&["a", "b"]), ()), Decision::Waiting);
        // A shared reader of `b` waits behind the earlier waiter on `b`.
        assert_eq!(r.submit(id(4), &res(&["shared:b"]), ()), Decision::Waiting);
        let blocker = |job, resource: &str, lane| Blocker {
            job: id(job),
            resource: resource.into(),
            lane,
        };
        assert_eq!(
            r.blockers(&id(3)),
            Some(Blocked::Waiting {
                position: 0,
                by: vec![
                    blocker(1, "a", Some(la)),
                    blocker(2, "b", Some(lb)),
                    blocker(5, "a", Some(la))
                ],
                held: None,
            })
        );
        assert_eq!(
            r.blockers(&id(4)),
            Some(Blocked::Waiting {
                position: 1,
                by: vec![blocker(2, "b", Some(lb)), blocker(3, "b", None)],
                held: None,
            })
        );
        assert_eq!(r.blockers(&id(9)), None);
    }

    #[test]
    fn shared_holders_do_not_block_a_shared_waiter() {
        let mut r: Router<()> = Router::new(4, 4);
        r.submit(id(1), &res(&["shared:s"]), ());
        r.submit(id(2), &res(&["x"]), ());
        r.submit(id(3), &res(&["y"]), ());
        // `x` and `y` held in two lanes: it waits for them, not for the reader of `s`.
        assert_eq!(
            r.submit(id(4), &res(&["shared:s", "x", "y"]), ()),
            Decision::Waiting
        );
        let Some(Blocked::Waiting { by, .. }) = r.blockers(&id(4)) else {
            panic!()
        };
        let jobs: Vec<Uuid> = by.iter().map(|b| b.job).collect();
        assert_eq!(jobs, vec![id(2), id(3)], "{by:?}");
    }
}
