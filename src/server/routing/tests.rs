//! Property tests: random interleavings of submits, completions, cancellations, the passing of
//! time, pool shrinking, the pool's size changing, starts heard of and limits changed, checked against a model of lanes
//! that run their head task.
//!
//! Resource `a` is limited (a capacity of 1–3 slots, sometimes a rate), `b` has no limit (so
//! `slot:b` has one slot); claims are exclusive, shared or slot.

use super::*;
use proptest::prelude::*;
use std::collections::{HashSet, VecDeque};
use std::time::Duration;

const MIN: u32 = 1;
const MAX: u32 = 4;
const COOL_DOWN: Duration = Duration::from_millis(10);
const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
/// The limited resource.
const LIMITED: &str = "a";

#[derive(Debug, Clone)]
enum Op {
    Submit(Vec<(usize, Access)>),
    /// The start of a lane's head is heard of (the Callback's `started`).
    Report(usize),
    /// The capacity of `a` changes.
    Slots(u32),
    Finish(usize),
    Cancel(usize),
    /// Time passes (milliseconds).
    Advance(u8),
    /// The periodic sweep: close every lane the router calls closable.
    Sweep,
    /// Try to close an arbitrary lane.
    Close(u32),
    /// The pool's size changes (the fleet grew or shrank).
    Size(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0..NAMES.len(), access()), 0..4).prop_map(Op::Submit),
        3 => any::<usize>().prop_map(Op::Report),
        1 => (1u32..4).prop_map(Op::Slots),
        3 => any::<usize>().prop_map(Op::Finish),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => (0u8..8).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
        1 => (0..MAX + 1).prop_map(Op::Close),
        1 => (0..MAX + 2).prop_map(Op::Size),
    ]
}

fn access() -> impl Strategy<Value = Access> {
    prop_oneof![
        3 => Just(Access::Exclusive),
        1 => Just(Access::Shared),
        2 => Just(Access::Slot),
    ]
}

#[derive(Debug)]
struct Job {
    seq: usize,
    claims: Vec<Claim>,
    start: Option<usize>,
    /// Model time when it became its lane's head.
    start_ms: Option<u64>,
    /// Its start was reported to the router.
    reported: bool,
    end: Option<usize>,
}

impl Job {
    fn claims_on(&self, name: &str, access: Access) -> bool {
        self.claims
            .iter()
            .any(|c| c.name == name && c.access == access)
    }

    fn touches(&self, name: &str) -> bool {
        self.claims.iter().any(|c| c.name == name)
    }
}

/// Claims that may not run at once (slot holders may, up to the capacity).
fn conflict(a: &[Claim], b: &[Claim]) -> bool {
    a.iter().any(|x| {
        b.iter()
            .any(|y| x.name == y.name && !x.access.compatible(y.access))
    })
}

struct Model {
    router: Router<Uuid>,
    depth: Option<u32>,
    rebalance: Option<u32>,
    /// Tasks placed in a lane on a resource since the lane took it: (resource, lane) → count.
    tenure: HashMap<(String, usize), u32>,
    lanes: Vec<VecDeque<Uuid>>,
    jobs: HashMap<Uuid, Job>,
    clock: usize,
    start: Instant,
    /// Model time, in milliseconds since `start`.
    ms: u64,
    /// The last model time each lane held an unfinished task.
    last_busy: Vec<Option<u64>>,
    /// The limit of `a`.
    limit: Limit,
    /// Starts of `a` as the router counts them (reported, or ended unreported), model ms.
    counted: Vec<u64>,
}

impl Model {
    fn new(depth: Option<u32>, rebalance: Option<u32>, limit: Limit) -> Self {
        let mut router = Router::new(MIN, MAX)
            .with_depth(depth)
            .with_rebalance_after(rebalance);
        assert!(router
            .set_limits(HashMap::from([(LIMITED.to_owned(), limit)]))
            .is_empty());
        Model {
            router,
            limit,
            counted: Vec::new(),
            depth,
            rebalance,
            tenure: HashMap::new(),
            lanes: vec![VecDeque::new(); MAX as usize],
            jobs: HashMap::new(),
            clock: 0,
            start: Instant::now(),
            ms: 0,
            last_busy: vec![None; MAX as usize],
        }
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.ms)
    }

    fn sweep(&mut self) -> Vec<u32> {
        let now = self.now();
        let closable = self.router.closable(now, COOL_DOWN);
        for &l in &closable {
            assert!(l >= MIN, "lanes below min never close");
            assert!(
                self.lanes[l as usize].is_empty(),
                "closable lane holds tasks"
            );
            assert!(
                self.last_busy[l as usize]
                    .is_none_or(|t| self.ms - t >= COOL_DOWN.as_millis() as u64),
                "lane closable before its cool-down"
            );
            assert!(self.router.close(l), "a closable lane closes");
            assert!(!self.router.is_open(l));
        }
        closable
    }

    /// A lane's hold on a resource ends when no unfinished task in it claims the resource.
    fn end_tenures(&mut self) {
        let (lanes, jobs) = (&self.lanes, &self.jobs);
        self.tenure.retain(|(name, l), _| {
            lanes[*l]
                .iter()
                .any(|id| jobs[id].claims.iter().any(|c| &c.name == name))
        });
    }

    fn slots(&self, name: &str) -> u32 {
        match name == LIMITED {
            true => self.limit.slots,
            false => 1,
        }
    }

    fn place(&mut self, routed: Vec<(Uuid, Target)>) {
        self.end_tenures();
        for (id, target) in routed {
            let Target::Lane(l) = target else {
                panic!("a waiter cannot go to the default queue")
            };
            assert!(self.router.is_open(l), "a task went to a closed lane");
            // Admitted only within the capacity, and on a limited resource only once every
            // holder admitted before has started.
            for c in &self.jobs[&id].claims {
                let holders: Vec<&Job> = self
                    .unfinished_in_lanes()
                    .map(|(_, j)| j)
                    .filter(|j| j.touches(&c.name))
                    .collect();
                if c.access == Access::Slot {
                    let slot_holders = holders
                        .iter()
                        .filter(|j| j.claims_on(&c.name, Access::Slot))
                        .count();
                    assert!(
                        slot_holders < self.slots(&c.name) as usize,
                        "a slot holder admitted beyond the capacity of {}",
                        c.name
                    );
                }
                if c.name == LIMITED {
                    assert!(
                        holders.iter().all(|j| j.reported),
                        "a holder of a limited resource admitted before the one before it started"
                    );
                    assert!(
                        holders.is_empty() || self.compatible_with_all(&c.name, c.access),
                        "a holder of a limited resource joined a conflicting holder's lane"
                    );
                    if let Some(rate) = self.limit.rate {
                        let recent = self
                            .counted
                            .iter()
                            .filter(|t| **t + rate.per_ms > self.ms)
                            .count();
                        assert!(
                            recent < rate.starts as usize,
                            "admitted over the rate: {recent} starts in the window"
                        );
                    }
                }
            }
            for c in &self.jobs[&id].claims {
                *self.tenure.entry((c.name.clone(), l as usize)).or_default() += 1;
            }
            self.lanes[l as usize].push_back(id);
        }
    }

    fn apply(&mut self, op: &Op) {
        self.clock += 1;
        match op {
            Op::Submit(picks) => {
                let resources: Vec<String> = picks
                    .iter()
                    .map(|(i, access)| match access {
                        Access::Exclusive => NAMES[*i].to_owned(),
                        Access::Shared => format!("shared:{}", NAMES[*i]),
                        Access::Slot => format!("slot:{}", NAMES[*i]),
                    })
                    .collect();
                let id = Uuid::new_v4();
                let size = self.router.size();
                let before = self.router.loads();
                let decision = self.router.submit(id, &resources, id);
                if let Decision::Routed(_, Target::Lane(l)) = decision {
                    if !before.iter().any(|(lane, _)| *lane == l) {
                        let usable: Vec<_> = before.iter().filter(|(l, _)| *l < size).collect();
                        assert!(
                            usable.iter().all(|(_, load)| *load > 0),
                            "a lane opened although an open one was idle"
                        );
                        assert!(l < size, "a lane opened beyond the pool's size");
                        assert!(usable.len() < size as usize);
                        assert_eq!(
                            self.router.take_opened(),
                            vec![l],
                            "the opening is reported"
                        );
                    }
                }
                if resources.is_empty() {
                    assert_eq!(decision, Decision::Routed(id, Target::Default));
                    return;
                }
                self.jobs.insert(
                    id,
                    Job {
                        seq: self.clock,
                        claims: claims_of(&resources),
                        start: None,
                        start_ms: None,
                        reported: false,
                        end: None,
                    },
                );
                if let Decision::Routed(_, t) = decision {
                    self.place(vec![(id, t)]);
                }
            }
            Op::Finish(pick) => {
                let busy: Vec<usize> = (0..self.lanes.len())
                    .filter(|l| !self.lanes[*l].is_empty())
                    .collect();
                if busy.is_empty() {
                    return;
                }
                let lane = busy[pick % busy.len()];
                let id = self.lanes[lane].pop_front().unwrap();
                let job = self.jobs.get_mut(&id).unwrap();
                job.end = Some(self.clock);
                if !job.reported && job.touches(LIMITED) {
                    self.counted.push(self.ms);
                }
                let routed = self.router.finish(&id);
                self.place(routed);
            }
            Op::Report(pick) => {
                let heads: Vec<Uuid> = self
                    .lanes
                    .iter()
                    .filter_map(|q| q.front())
                    .filter(|id| !self.jobs[*id].reported)
                    .copied()
                    .collect();
                if heads.is_empty() {
                    return;
                }
                let id = heads[pick % heads.len()];
                let job = self.jobs.get_mut(&id).unwrap();
                job.reported = true;
                if job.touches(LIMITED) {
                    self.counted.push(self.ms);
                }
                let routed = self.router.started(&[id], self.ms);
                self.place(routed);
            }
            Op::Slots(n) => {
                self.limit.slots = *n;
                let limits = HashMap::from([(LIMITED.to_owned(), self.limit)]);
                let routed = self.router.set_limits(limits);
                self.place(routed);
            }
            Op::Cancel(pick) => {
                let waiting: Vec<Uuid> = self.router.waiting().collect();
                if waiting.is_empty() {
                    return;
                }
                let id = waiting[pick % waiting.len()];
                self.jobs.get_mut(&id).unwrap().end = Some(self.clock);
                let routed = self.router.finish(&id);
                self.place(routed);
            }
            Op::Advance(ms) => {
                self.ms += u64::from(*ms);
                let routed = self.router.tick(self.ms);
                self.place(routed);
            }
            Op::Sweep => {
                self.sweep();
            }
            Op::Size(n) => {
                let routed = self.router.set_size(*n);
                assert_eq!(self.router.size(), (*n).clamp(MIN, MAX), "within min..=max");
                self.place(routed);
            }
            Op::Close(l) => {
                let was_open = self.router.is_open(*l);
                let closed = self.router.close(*l);
                if closed {
                    assert!(was_open && *l >= MIN, "closed a lane that cannot close");
                    assert!(
                        self.lanes[*l as usize].is_empty(),
                        "closed a lane with tasks"
                    );
                } else {
                    assert!(
                        !was_open || *l < MIN || !self.lanes[*l as usize].is_empty(),
                        "refused to close an idle surplus lane"
                    );
                }
            }
        }
        self.router.take_opened();
        self.end_tenures();
        for (l, q) in self.lanes.iter().enumerate() {
            if !q.is_empty() {
                self.last_busy[l] = Some(self.ms);
            }
        }
        self.clock += 1;
        for lane in &self.lanes {
            if let Some(head) = lane.front() {
                let job = self.jobs.get_mut(head).unwrap();
                job.start.get_or_insert(self.clock);
                job.start_ms.get_or_insert(self.ms);
            }
        }
        self.check();
    }

    fn unfinished_in_lanes(&self) -> impl Iterator<Item = (usize, &Job)> {
        self.lanes
            .iter()
            .enumerate()
            .flat_map(move |(l, q)| q.iter().map(move |id| (l, &self.jobs[id])))
    }

    fn check(&self) {
        // The pool stays within its bounds, lanes with tasks stay open, and none holds more than
        // its depth.
        let open = self.router.open_lanes();
        assert!(open.len() <= MAX as usize);
        assert!(
            (0..MIN).all(|l| self.router.is_open(l)),
            "a lane below min closed"
        );
        for (l, q) in self.lanes.iter().enumerate() {
            assert!(
                q.is_empty() || self.router.is_open(l as u32),
                "tasks in a closed lane"
            );
            assert_eq!(
                self.router.pool.load(l as u32) as usize,
                q.len(),
                "the router's load matches the lane"
            );
            assert!(
                self.depth.is_none_or(|d| q.len() <= d as usize),
                "a lane holds more than its depth"
            );
        }
        // Running tasks (lane heads) never conflict.
        let heads: Vec<&Job> = self
            .lanes
            .iter()
            .filter_map(|q| q.front())
            .map(|id| &self.jobs[id])
            .collect();
        for (i, a) in heads.iter().enumerate() {
            for b in &heads[i + 1..] {
                assert!(
                    !conflict(&a.claims, &b.claims),
                    "conflicting tasks run at once"
                );
            }
        }
        // No reader or slot holder, and no holder of a limited resource, queues behind a holder
        // it conflicts with in a lane.
        for q in &self.lanes {
            let jobs: Vec<&Job> = q.iter().map(|id| &self.jobs[id]).collect();
            for (i, later) in jobs.iter().enumerate() {
                for c in later
                    .claims
                    .iter()
                    .filter(|c| c.access != Access::Exclusive || c.name == LIMITED)
                {
                    assert!(
                        !jobs[..i].iter().any(|w| w
                            .claims
                            .iter()
                            .any(|h| h.name == c.name && !h.access.compatible(c.access))),
                        "a reader or limited holder queued behind a conflicting one in its lane"
                    );
                }
            }
        }
        // An exclusive reservation is held by one lane only; slot holders stay within the
        // capacity (a lowered one may leave more until they end, never admit more).
        for name in NAMES {
            let holders: Vec<(usize, Access)> = self
                .unfinished_in_lanes()
                .flat_map(|(l, j)| {
                    j.claims
                        .iter()
                        .filter(|c| c.name == name)
                        .map(move |c| (l, c.access))
                })
                .collect();
            if holders.iter().any(|(_, a)| *a == Access::Exclusive) {
                assert!(
                    holders.iter().all(|(l, _)| *l == holders[0].0),
                    "exclusive resource in two lanes"
                );
            }
            if name == LIMITED {
                let unreported = self
                    .unfinished_in_lanes()
                    .filter(|(_, j)| j.touches(name) && !j.reported)
                    .count();
                assert!(
                    unreported <= 1,
                    "two holders of a limited resource unstarted"
                );
            }
        }
        // A waiting task waits only while it must.
        let mut ahead: Vec<&Claim> = Vec::new();
        for id in self.router.waiting() {
            let job = &self.jobs[&id];
            let behind = job
                .claims
                .iter()
                .any(|c| ahead.iter().any(|a| a.name == c.name));
            let lanes: HashSet<usize> = self
                .unfinished_in_lanes()
                .filter(|(_, j)| conflict(&j.claims, &job.claims))
                .map(|(l, _)| l)
                .collect();
            let full = |l: usize| {
                self.depth
                    .is_some_and(|d| self.lanes[l].len() >= d as usize)
            };
            let sealed = |l: usize| {
                job.claims.iter().any(|c| {
                    self.rebalance.is_some_and(|n| {
                        self.tenure
                            .get(&(c.name.clone(), l))
                            .is_some_and(|t| *t >= n)
                    })
                })
            };
            let no_room = match lanes.iter().next() {
                Some(&l) => lanes.len() == 1 && (full(l) || sealed(l)),
                None => (0..self.router.size() as usize)
                    .all(|l| self.router.is_open(l as u32) && full(l)),
            };
            // A reader or slot holder, or a holder of a limited resource, waits for those it
            // conflicts with to end.
            let waits_for_end = self.unfinished_in_lanes().any(|(_, j)| {
                job.claims.iter().any(|c| {
                    (c.access != Access::Exclusive || c.name == LIMITED)
                        && j.claims
                            .iter()
                            .any(|h| h.name == c.name && !h.access.compatible(c.access))
                })
            });
            let held = job.claims.iter().any(|c| self.held(c));
            assert!(
                behind || lanes.len() > 1 || no_room || waits_for_end || held,
                "task waits although it could be routed"
            );
            ahead.extend(job.claims.iter());
        }
    }

    /// Whether every unfinished holder of `name` may hold it beside a claim of `access`.
    fn compatible_with_all(&self, name: &str, access: Access) -> bool {
        self.unfinished_in_lanes().all(|(_, j)| {
            j.claims
                .iter()
                .all(|h| h.name != name || h.access.compatible(access))
        })
    }

    /// Whether a claim is held back by its resource's limit: its slots are full, a holder
    /// admitted before has not started, or its rate is used up.
    fn held(&self, c: &Claim) -> bool {
        let slot_holders = self
            .unfinished_in_lanes()
            .filter(|(_, j)| j.claims_on(&c.name, Access::Slot))
            .count();
        if c.access == Access::Slot && slot_holders >= self.slots(&c.name) as usize {
            return true;
        }
        if c.name != LIMITED {
            return false;
        }
        let unreported = self
            .unfinished_in_lanes()
            .any(|(_, j)| j.touches(&c.name) && !j.reported);
        let rated = self.limit.rate.is_some_and(|rate| {
            self.counted
                .iter()
                .filter(|t| **t + rate.per_ms > self.ms)
                .count()
                >= rate.starts as usize
        });
        unreported || rated
    }

    fn drain(&mut self) {
        for i in 0..10_000 {
            if self.lanes.iter().all(|q| q.is_empty()) && self.router.waiting().next().is_none() {
                break;
            }
            // Heads are heard of, end, and time passes (for the rate).
            self.apply(&Op::Report(0));
            self.apply(&Op::Finish(0));
            if i % 4 == 0 {
                self.apply(&Op::Advance(5));
            }
        }
        assert!(self.router.waiting().next().is_none(), "tasks left waiting");
        assert_eq!(self.router.reserved(), 0, "reservations left behind");
        assert_eq!(self.router.routed(), 0);
        assert!(self.router.loads().iter().all(|(_, l)| *l == 0));
        assert!(self.router.resources.is_empty());
        // Once idle for the cool-down, the pool shrinks back to `min`.
        self.sweep();
        self.ms += COOL_DOWN.as_millis() as u64;
        self.sweep();
        assert_eq!(self.router.open_lanes(), (0..MIN).collect::<Vec<_>>());
    }

    fn check_order(&self) {
        let jobs: Vec<&Job> = self.jobs.values().filter(|j| j.start.is_some()).collect();
        for a in &jobs {
            for b in &jobs {
                if a.seq < b.seq && conflict(&a.claims, &b.claims) {
                    assert!(
                        a.end.is_some_and(|end| end <= b.start.unwrap()),
                        "a later task on a resource started before an earlier one ended"
                    );
                }
                // Slot holders, and every holder of the limited resource, start in submit
                // order.
                let ordered = NAMES.iter().any(|n| {
                    (a.claims_on(n, Access::Slot) && b.claims_on(n, Access::Slot))
                        || (*n == LIMITED && a.touches(n) && b.touches(n))
                });
                if a.seq < b.seq && ordered {
                    assert!(
                        a.start.unwrap() < b.start.unwrap(),
                        "a later holder of a limited resource started first"
                    );
                }
            }
        }
        // No window of the rate's period holds more starts than it allows.
        if let Some(rate) = self.limit.rate {
            let mut starts: Vec<u64> = jobs
                .iter()
                .filter(|j| j.touches(LIMITED))
                .filter_map(|j| j.start_ms)
                .collect();
            starts.sort_unstable();
            for w in starts.windows(rate.starts as usize + 1) {
                assert!(
                    w[w.len() - 1] - w[0] >= rate.per_ms,
                    "{} starts within {} ms: {w:?}",
                    w.len(),
                    rate.per_ms
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn routing_keeps_order_and_exclusion_and_releases_everything(
        depth in prop_oneof![Just(None), (1u32..4).prop_map(Some)],
        rebalance in prop_oneof![Just(None), (1u32..4).prop_map(Some)],
        slots in 1u32..4,
        rate in prop_oneof![
            Just(None),
            (1u32..3, 1u64..20).prop_map(|(starts, per_ms)| Some(Rate { starts, per_ms })),
        ],
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut m = Model::new(depth, rebalance, Limit { slots, rate });
        for op in &ops {
            m.apply(op);
        }
        m.drain();
        m.check_order();
    }
}
